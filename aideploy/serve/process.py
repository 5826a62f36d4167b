"""Run the server as a child process: for notebooks, tests and benchmarks.

Notebook: ``notebooks/07_serving.ipynb``.

:func:`running_server` starts ``aideploy serve`` on a free loopback port,
waits until ``/v2/health/ready`` answers 200, yields the base URL, and on
exit sends SIGTERM (the graceful shutdown) and waits for the process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from aideploy.errors import AideployError, ModelNotReadyError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it).

    Introduced in ``07_serving.ipynb``.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(
    repo: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    max_batch_size: int | None = None,
    max_queue_delay_ms: float | None = None,
    workers: int = 1,
    runtime: str | None = None,
    startup_timeout: float = 120.0,
    stop_timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> Iterator[str]:
    """Start ``aideploy serve REPO`` in a child process; yield its base URL once it is ready.

    The child runs with this interpreter and this process's environment. Its
    output goes to a log file; if it dies or does not get ready in time, the
    error says why and quotes the log's end. Introduced in ``07_serving.ipynb``.

    Args:
        repo: The model repository folder.
        host: The interface (loopback by default).
        port: The port (default: a free one).
        max_batch_size: ``--max-batch-size`` (default: each model's config).
        max_queue_delay_ms: ``--max-queue-delay-ms``.
        workers: ``--workers`` (server processes on the port; each answers once its models loaded).
        runtime: ``--runtime`` (``onnxruntime`` or ``tflite``; default: ONNX Runtime).
        startup_timeout: Seconds to wait for readiness.
        stop_timeout: Seconds to wait after SIGTERM before killing it.
        extra_args: More ``aideploy serve`` options, e.g. ``["--log-db", path]``.

    Yields:
        The base URL, e.g. ``http://127.0.0.1:50123``.

    Raises:
        ModelNotReadyError: The server exited or did not get ready in time.
    """
    port = port if port is not None else free_port(host)
    command = [sys.executable, "-m", "aideploy.cli", "serve", os.fspath(repo), "--host", host, "--port", str(port)]
    if max_batch_size is not None:
        command += ["--max-batch-size", str(max_batch_size)]
    if max_queue_delay_ms is not None:
        command += ["--max-queue-delay-ms", str(max_queue_delay_ms)]
    if workers != 1:
        command += ["--workers", str(workers)]
    if runtime is not None:
        command += ["--runtime", runtime]
    command += list(extra_args)
    url = f"http://{host}:{port}"
    with tempfile.TemporaryDirectory(prefix="aideploy-serve-") as folder:
        log_path = Path(folder) / "server.log"
        with open(log_path, "wb") as log:
            child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _wait_ready(child, url, startup_timeout, log_path)
            yield url
        finally:
            _stop(child, stop_timeout)


def _wait_ready(child: subprocess.Popen, url: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise ModelNotReadyError(
                f"the server exited with status {child.returncode} before it was ready:\n{_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet, or still loading (503)
        time.sleep(0.05)
    raise ModelNotReadyError(f"the server at {url} was not ready after {timeout} s:\n{_tail(log_path)}")


def _stop(child: subprocess.Popen, timeout: float) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise AideployError(f"the server did not stop within {timeout} s of SIGTERM and was killed.") from None


def _tail(path: Path, num_chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-num_chars:]
    except OSError:
        return "(no log)"
