"""Import TensorFlow and tf-keras once, quietly, with the Keras 2 API active.

Stage modules that need TensorFlow import it from here (``from aideploy.backend
import tf, keras``) rather than directly, for two reasons:

- :mod:`aideploy` (imported first, as the package) has already set
  ``TF_USE_LEGACY_KERAS=1``, so ``tf.keras`` is tf-keras.
- TensorFlow 2.21's native code logs through Abseil before Abseil's logging is
  initialised, which ignores ``TF_CPP_MIN_LOG_LEVEL`` and prints a screenful of
  "I0000 ... cudart_stub" lines on every import. Those lines go to the process's
  file descriptor 2, so they are silenced here by pointing that descriptor at
  ``/dev/null`` for the duration of the import only. Python errors raised by the
  import still propagate normally.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (C/C++ log lines only).

    Set ``AIDEPLOY_TF_VERBOSE=1`` to see TensorFlow's native logs again.
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


with native_stderr_silenced():
    import tensorflow as tf
    import tf_keras as keras

    # Creating the first tensor initialises the devices; on machines without a
    # GPU that logs a CUDA error, which is noise here.
    tf.constant(0)

tf.get_logger().setLevel("ERROR")

__all__ = ["keras", "native_stderr_silenced", "tf"]
