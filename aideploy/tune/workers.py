"""Worker processes that share one study (no TensorFlow in the parent).

Introduced in ``03_tuning.ipynb``. Workers are started with ``python -m
aideploy.tune --worker SPEC`` (subprocesses, not fork: TensorFlow is not
fork-safe). Each gets its share of the machine's threads through
``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS``, which TensorFlow reads
when it starts: once TensorFlow has run an op, ``tf.config.threading`` can no
longer change them. Data given to :func:`aideploy.tune.run` travels to the
workers as an ``.npz`` file in the run's scratch folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aideploy import data
from aideploy.errors import AideployError
from aideploy.tune.settings import TuneSettings
from aideploy.tune.storage import _open_study, open_storage


def _claim_trial(path: Path) -> bool:
    """Take one trial from the shared counter file (under an exclusive lock)."""
    with open(path, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        remaining = int(handle.read().strip() or 0)
        if remaining <= 0:
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(str(remaining - 1))
        return True


def worker_thread_count(workers: int) -> int:
    """TensorFlow threads per worker: the machine's cores split evenly (at least 1).

    Introduced in ``03_tuning.ipynb``.

    Args:
        workers: Number of local worker processes.

    Returns:
        Threads per worker.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def save_splits(splits: data.Splits, path: str | os.PathLike) -> Path:
    """Write splits to an ``.npz`` file that :func:`load_splits_file` reads back.

    Worker processes get the data a caller handed to :func:`aideploy.tune.run`
    this way, rather than reloading the default data set.

    Introduced in ``03_tuning.ipynb``.

    Args:
        splits: The data.
        path: Target ``.npz`` file.

    Returns:
        The path written.
    """
    path = Path(path)
    arrays = {name: getattr(splits, name) for name in _ARRAYS}
    np.savez(
        path,
        **arrays,
        class_names=np.array(splits.class_names, dtype=str),
        source=np.array(json.dumps(splits.source, default=str)),
    )
    return path


def load_splits_file(path: str | os.PathLike) -> data.Splits:
    """Read splits written by :func:`save_splits`.

    Args:
        path: The ``.npz`` file.

    Returns:
        The :class:`aideploy.data.Splits`.
    """
    with np.load(path, allow_pickle=False) as saved:
        return data.Splits(
            **{name: saved[name] for name in _ARRAYS},
            class_names=tuple(str(name) for name in saved["class_names"]),
            source=json.loads(str(saved["source"])),
        )


_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
#: At most this many lines of a failed worker's output are quoted in the error the parent raises.
FAILURE_TAIL_LINES = 8
#: How long a worker waits for the others to be ready before it starts anyway.
START_TIMEOUT_SECONDS = 600


def run_workers(
    study_name: str,
    storage_url: str,
    settings: TuneSettings,
    workers: int,
    *,
    run_id: str,
    progress: bool,
    splits: data.Splits | None = None,
) -> None:
    """Start ``workers`` processes on one study and wait for all of them.

    The workers draw trials from one shared counter, so together they run exactly
    ``settings.num_trials`` trials. Each loads its data and opens the study, then
    waits until every worker is ready, so that a slow start does not leave one
    worker with all the trials.

    Introduced in ``03_tuning.ipynb`` (through :func:`aideploy.tune.run`).

    Args:
        study_name: The study (it exists already).
        storage_url: Its storage URL.
        settings: The run's settings.
        workers: Number of processes.
        run_id: Recorded on each trial.
        progress: Relay the workers' progress lines, prefixed ``[worker I]``.
        splits: Data to tune on (default: each worker loads :func:`aideploy.data.load_splits`).

    Raises:
        AideployError: A worker failed; the message quotes the end of its output.
    """
    threads = worker_thread_count(workers)
    with tempfile.TemporaryDirectory(prefix="aideploy-tune-") as scratch:
        claims = Path(scratch) / "remaining"
        claims.write_text(str(settings.num_trials))
        splits_path = save_splits(splits, Path(scratch) / "splits.npz") if splits is not None else None
        spec = Path(scratch) / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "study_name": study_name,
                    "storage": storage_url,
                    "settings": settings.to_dict(),
                    "run_id": run_id,
                    "claims": str(claims),
                    "splits": str(splits_path) if splits_path else None,
                    "ready_folder": scratch,
                    "workers": workers,
                    "progress": progress,
                }
            )
        )
        environment = {
            **os.environ,
            # TensorFlow reads these when it starts, before any op runs.
            "TF_NUM_INTRAOP_THREADS": str(threads),
            "TF_NUM_INTEROP_THREADS": str(threads),
            "OMP_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1",
        }
        if progress:
            print(f"Starting {workers} workers with {threads} TensorFlow thread(s) each...", flush=True)
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "aideploy.tune", "--worker", str(spec), "--index", str(index)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=environment,
            )
            for index in range(workers)
        ]
        try:
            tails = _relay_output(processes, show=progress)
        finally:
            _stop(processes)
    failed = [(index, process.returncode) for index, process in enumerate(processes) if process.returncode]
    if failed:
        # The first worker to fail is the cause; the others were stopped because of it.
        index, code = min(failed, key=lambda item: (item[1] < 0, item[0]))
        raise AideployError(
            f"tuning worker {index} failed with exit status {code}; it reported: "
            f"{failure_summary(tails[index]) or '(no output)'}. The study keeps its complete trials; "
            "fix the cause and run the command again to resume it."
        )


def failure_summary(lines: Sequence[str], *, max_lines: int = FAILURE_TAIL_LINES) -> str:
    """The telling lines of a failed process's output, joined by a vertical bar (" | ").

    After a Python traceback these are its unindented lines (the exception and its
    message; the stack frames are left out); otherwise the last ``max_lines`` lines.

    Args:
        lines: The output, one line an entry.
        max_lines: At most this many lines are quoted.

    Returns:
        The summary (empty for no output).
    """
    starts = [index for index, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:
        chosen = [line for line in lines[starts[-1] + 1 :] if line.strip() and not line[0].isspace()]
    else:
        chosen = [line for line in lines if line.strip()]
    return " | ".join(line.strip()[:300] for line in chosen[-max_lines:])


def _stop(processes: list[subprocess.Popen]) -> None:
    """Terminate the processes still running and wait for them."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)


def _relay_output(processes: list[subprocess.Popen], *, show: bool) -> list[list[str]]:
    """Print the workers' lines as they come (prefixed); keep each one's tail.

    When a worker exits with an error the others are stopped: with one worker
    gone, the rest would wait for it at the start or run its trials without cause.
    """
    lines: queue.Queue[tuple[int, str | None]] = queue.Queue()

    def read(index: int, process: subprocess.Popen) -> None:
        for line in process.stdout:
            lines.put((index, line.rstrip("\n")))
        lines.put((index, None))

    readers = [
        threading.Thread(target=read, args=(index, process), daemon=True) for index, process in enumerate(processes)
    ]
    for reader in readers:
        reader.start()
    tails: list[list[str]] = [[] for _ in processes]
    open_streams = len(processes)
    while open_streams:
        index, line = lines.get()
        if line is None:
            open_streams -= 1
            if processes[index].wait() != 0:
                _stop(processes)
            continue
        tails[index] = (tails[index] + [line])[-200:]
        if show:
            print(f"[worker {index}] {line}", flush=True)
    for process in processes:
        process.wait()
    return tails


def _wait_for_all(folder: Path, index: int, workers: int) -> None:
    """Mark this worker ready and wait (a while at most) until all are."""
    (folder / f"ready-{index}").touch()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while len(list(folder.glob("ready-*"))) < workers and time.monotonic() < deadline:
        time.sleep(0.05)


def worker_main(arguments: Sequence[str]) -> int:
    """Entry point of a worker process: ``python -m aideploy.tune --worker SPEC --index I``.

    Args:
        arguments: The command-line arguments.

    Returns:
        The exit status: 0, or 2 for an expected error (printed on standard error).
    """
    import argparse

    from aideploy.tune.study import _optimize

    parser = argparse.ArgumentParser(prog="python -m aideploy.tune", description="An aideploy tuning worker.")
    parser.add_argument("--worker", required=True, help="path of the JSON spec written by tune.run")
    parser.add_argument("--index", type=int, default=0, help="this worker's index")
    options = parser.parse_args(arguments)
    try:
        spec = json.loads(Path(options.worker).read_text())
        settings = TuneSettings.from_dict(spec["settings"])
        storage = open_storage(spec["storage"])
        study, _ = _open_study(storage, spec["study_name"], settings, sampler_offset=1 + options.index)
        if spec.get("splits"):
            splits = load_splits_file(spec["splits"])
        else:
            splits = data.load_splits(settings.kind, seed=settings.resolved_seed())
        _wait_for_all(Path(spec["ready_folder"]), options.index, int(spec["workers"]))
        claims = Path(spec["claims"])
        _optimize(
            study,
            settings,
            splits,
            None,
            run_id=spec["run_id"],
            progress=spec["progress"],
            claim=lambda: _claim_trial(claims),
            worker=options.index,
        )
    except AideployError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    return 0
