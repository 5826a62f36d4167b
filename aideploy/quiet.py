"""Silence native log lines (C/C++ code writing to file descriptor 2) without importing TensorFlow.

TensorFlow's import and LiteRT's interpreter print lines such as "INFO: Created
TensorFlow Lite XNNPACK delegate for CPU." from native code, straight to the
process's file descriptor 2, where Python's ``sys.stderr`` redirection cannot
reach them. :func:`native_stderr_silenced` points that descriptor at
``/dev/null`` for the duration of a block. It lives in its own module, apart
from :mod:`aideploy.backend` (which imports TensorFlow), so that the ONNX
Runtime and LiteRT predictors can use it in processes that never load
TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (C/C++ log lines only).

    Python exceptions raised in the block propagate normally. Set
    ``AIDEPLOY_TF_VERBOSE=1`` to see the native logs again. Introduced in
    ``06_conversion.ipynb`` (loading a TFLite model prints nothing).

    Yields:
        Nothing; the block runs with file descriptor 2 silenced.
    """
    if os.environ.get("AIDEPLOY_TF_VERBOSE") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
