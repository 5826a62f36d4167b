"""The prediction log: one SQLite row per answered input row, written in the background.

Notebook: ``notebooks/08_monitoring.ipynb``. Command: ``aideploy serve --log-db PATH``.

The server hands each answered request to :meth:`PredictionLog.record`, which
only copies its rows into a bounded buffer (no disk, no lock held for long, no
wait): a request never waits for the log. Every 100 ms a sender thread takes what
is queued and hands it, as a few NumPy arrays, to a writer *process*, which
computes the input summary (:func:`~aideploy.monitor.profile.input_features`) for
all rows at once and inserts them in one transaction. The work is in another
process because of the GIL: done in a thread of the server, the summary and the
inserts took turns with the event loop and cost about a quarter of the server's
throughput (``benchmarks/monitoring.py``). When the queue is full the request is
still answered and its rows are counted as dropped: a gap in the log is always
counted, never silent.

The file is SQLite in WAL mode with ``synchronous=NORMAL``: a committed
transaction survives the server process being killed (not a power cut), and
readers (the report, a notebook) never block the writer. Several server
processes may write the same file: each waits for the write lock up to
``busy_timeout`` seconds. A retention limit deletes the oldest rows beyond
``max_rows``.

Tables: ``predictions`` (``id``, ``request_id``, ``row``, ``time``, ``model``,
``version``, ``latency_ms``, ``predicted``, ``confidence``, ``num_classes``, one
column per feature, ``input`` when raw inputs are kept), ``labels`` (``pred_id``,
``label``, ``time``: delayed labels), and ``windows`` and ``alerts`` (written by
:mod:`aideploy.monitor.service`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from aideploy.errors import AideployError, ModelInputError
from aideploy.monitor.profile import FEATURES, input_features

logger = logging.getLogger("aideploy.monitor")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    time REAL NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    predicted INTEGER NOT NULL,
    confidence REAL NOT NULL,
    num_classes INTEGER NOT NULL,
    {", ".join(f"{name} REAL NOT NULL" for name in FEATURES)},
    input BLOB
);
CREATE INDEX IF NOT EXISTS predictions_request ON predictions (request_id, row);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY,
    pred_id INTEGER NOT NULL UNIQUE,
    label INTEGER NOT NULL,
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS windows (
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL NOT NULL,
    num_rows INTEGER NOT NULL,
    drift INTEGER NOT NULL,
    results TEXT NOT NULL,
    PRIMARY KEY (model, version, first_id)
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    value REAL NOT NULL,
    threshold REAL NOT NULL,
    message TEXT NOT NULL
);
"""

_INSERT = (
    f"INSERT INTO predictions (request_id, row, time, model, version, latency_ms, predicted, confidence, "
    f"num_classes, {', '.join(FEATURES)}, input) VALUES ({', '.join('?' * (10 + len(FEATURES)))})"
)

#: Longest request id accepted (ids come from clients).
MAX_REQUEST_ID = 256


class UnknownRequestError(AideployError, LookupError):
    """A label names a request id the prediction log does not hold (HTTP 404)."""

    http_status = 404


def connect(path: str | os.PathLike, *, busy_timeout: float = 10.0, create: bool = True) -> sqlite3.Connection:
    """Open a prediction log (WAL mode, the tables created if missing).

    Introduced in ``08_monitoring.ipynb``.

    Args:
        path: The SQLite file.
        busy_timeout: Seconds to wait for another writer's lock.
        create: Create the file and tables if missing (else a missing file is an error).

    Returns:
        The connection.

    Raises:
        ArtifactError: ``create`` is false and the file does not exist.
    """
    from aideploy.errors import ArtifactError

    path = Path(path)
    if not create and not path.is_file():
        raise ArtifactError(f"no prediction log at {path}: serve with `aideploy serve REPO --log-db {path}` first.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=busy_timeout, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit
        # survives the process dying (the WAL is in the OS's cache), not a power cut.
        connection.execute("PRAGMA synchronous=NORMAL")
        if create:
            connection.executescript(_SCHEMA)
    except (OSError, sqlite3.Error) as error:
        raise ArtifactError(
            f"cannot open the prediction log {path} ({error}): choose a file in a folder you may write "
            "(--log-db PATH), or turn the log off with --no-log."
        ) from None
    return connection


class PredictionLog:
    """The background writer of a prediction log.

    Introduced in ``08_monitoring.ipynb``.

    Args:
        path: The SQLite file (created with its folder if missing).
        max_queue: Requests that may wait for the writer; more are dropped (and counted).
        max_rows: Retention: the newest rows kept (older ones are deleted every
            ``max_rows // 10`` rows, so the file holds at most about 10% more).
        store_inputs: Also keep each raw input row (float32 bytes); off by default.
        on_commit: Called from the sender thread with ``(model, version, rows)`` after each commit.
        on_drop: Called with ``(model, version, rows)`` for each dropped request.
        busy_timeout: Seconds to wait for another process's write lock.
        batch_seconds: How long requests gather before they go to the writer process as one transaction.

    Attributes:
        committed: Rows committed to the file so far.
        dropped: Rows dropped (queue full, or a failed write).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        max_queue: int = 10_000,
        max_rows: int = 1_000_000,
        store_inputs: bool = False,
        on_commit: Callable[[str, str, int], None] | None = None,
        on_drop: Callable[[str, str, int], None] | None = None,
        busy_timeout: float = 10.0,
        batch_seconds: float = 0.1,
    ) -> None:
        from aideploy.errors import ConfigError

        for name, value in (("max_queue", max_queue), ("max_rows", max_rows)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}.")
        self.path = Path(path)
        self.max_rows = max_rows
        self.store_inputs = store_inputs
        self.busy_timeout = busy_timeout
        self.batch_seconds = batch_seconds
        self.on_commit = on_commit
        self.on_drop = on_drop
        self.committed = 0
        self.dropped = 0
        self.max_queue = max_queue
        # The requests waiting for the sender, already in the form the writer process takes:
        # per input and output shape and dtype, the rows copied into preallocated blocks
        # and each request's (time, model, version, id, rows, latency). Copying a request's
        # arrays into a block costs the request path well under a microsecond; work done per
        # request in the sender thread costs the server more, because that thread takes
        # turns with the event loop for the GIL. ``_unfinished`` counts requests queued or
        # being written.
        self._lock = threading.Lock()
        self._written = threading.Condition(self._lock)
        self._groups: dict[tuple, _Rows] = {}
        self._queued = 0
        self._unfinished = 0
        self._arrived = threading.Event()  # set by the first request after a batch was taken
        self._stop = threading.Event()
        connect(self.path, busy_timeout=busy_timeout).close()  # a bad path fails here, clearly
        self._writer: Any = None
        self._pipe: Any = None
        self._start_writer()
        self._thread = threading.Thread(target=self._run, name="aideploy-prediction-log", daemon=True)
        self._thread.start()

    def _start_writer(self) -> None:
        # A child interpreter of its own (not multiprocessing, whose "spawn" re-runs the
        # main script: impossible for code read from stdin), in its own session so that a
        # Ctrl-C in the terminal reaches the server, which flushes the log, and not it.
        ours, theirs = socket.socketpair()
        arguments = json.dumps([theirs.fileno(), str(self.path), self.store_inputs, self.max_rows, self.busy_timeout])
        self._writer = subprocess.Popen(
            [sys.executable, "-c", "import sys; from aideploy.monitor.log import _writer_process; "
             "_writer_process(*__import__('json').loads(sys.argv[1]))", arguments],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        self._pipe = Connection(ours.detach())

    # --- the request path ---------------------------------------------------------

    def record(
        self, model: str, version: str, request_id: str, x: np.ndarray, y: np.ndarray, latency_seconds: float
    ) -> bool:
        """Queue one answered request for the log; never waits.

        The rows are copied, so the caller may reuse the arrays afterwards.

        Args:
            model: The model's name.
            version: The version that answered.
            request_id: The request's id (labels refer to it).
            x: Its input rows.
            y: The model's output, one row of probabilities per input row.
            latency_seconds: How long the request took up to the answer.

        Returns:
            Whether it was queued (``False``: dropped and counted).
        """
        x, y = np.asarray(x), np.asarray(y)
        key = (x.shape[1:], x.dtype, y.shape[1:], y.dtype)
        when = time.time()
        with self._lock:
            queued = self._queued < self.max_queue
            if queued:
                rows = self._groups.get(key)
                if rows is None:
                    rows = self._groups[key] = _Rows(key)
                rows.add(x, y, (when, model, version, request_id, len(x), latency_seconds))
                self._queued += 1
                self._unfinished += 1
                first = self._queued == 1
        if queued and first:
            self._arrived.set()
        if not queued:
            self._count_drop(model, version, len(x))
        return queued

    def _count_drop(self, model: str, version: str, rows: int) -> None:
        self.dropped += rows
        if self.on_drop is not None:
            self.on_drop(model, version, rows)

    # --- the sender thread --------------------------------------------------------

    def _run(self) -> None:
        while True:
            # Sleep until a request arrives (an idle server wakes this thread for nothing),
            # then let requests gather: a message and a transaction per request would cost
            # the server far more than one every 100 ms, and the log lags by no more.
            if not self._stop.is_set():
                self._arrived.wait(0.5)
            stopping = self._stop.wait(self.batch_seconds)
            with self._lock:
                self._arrived.clear()
                groups, self._groups = self._groups, {}
                count, self._queued = self._queued, 0
            if not count:
                if stopping:
                    return
                continue
            try:
                self._write(groups)
            except Exception:  # a full disk or a lock held too long must not end the thread
                logger.exception("could not write %d requests to the prediction log %s", count, self.path)
                for (model, version), rows in _rows_by_model(groups).items():
                    self._count_drop(model, version, rows)
            finally:
                with self._written:
                    self._unfinished -= count
                    self._written.notify_all()

    def _write(self, groups: dict[tuple, _Rows]) -> None:
        message = [rows.message() for rows in groups.values()]
        try:
            self._pipe.send(message)
            error = self._pipe.recv()  # None once committed, else what went wrong
        except (EOFError, OSError) as failure:  # the writer process died: start another one
            self._pipe.close()
            self._writer.wait(5)
            self._start_writer()
            raise RuntimeError(f"the prediction log's writer process ended ({failure!r}); started a new one") from None
        if error is not None:
            raise RuntimeError(error)
        counts = _rows_by_model(groups)
        self.committed += sum(counts.values())
        if self.on_commit is not None:
            for (model, version), rows in counts.items():
                self.on_commit(model, version, rows)

    # --- control --------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Requests queued or being written."""
        return self._unfinished

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is committed (or dropped).

        Returns:
            Whether the queue emptied within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._written:
            while self._unfinished:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._written.wait(min(remaining, 0.5))
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, stop the writer thread and close the file."""
        self.flush(timeout)
        self._stop.set()
        self._arrived.set()
        self._thread.join(timeout)
        try:
            self._pipe.send(None)  # the writer process closes its file and ends
        except OSError:
            pass
        try:
            self._writer.wait(timeout)
        except subprocess.TimeoutExpired:
            self._writer.kill()
            self._writer.wait()
        self._pipe.close()

    def submit_labels(self, request_id: str, labels: Any) -> dict[str, Any]:
        """Record the true label(s) of a logged request (see :func:`submit_labels`).

        Waits for the writer first when the request is not in the file yet (it
        may still be queued).
        """
        try:
            return submit_labels(self.path, request_id, labels, busy_timeout=self.busy_timeout)
        except UnknownRequestError:
            if not self.flush(5.0):
                raise
            return submit_labels(self.path, request_id, labels, busy_timeout=self.busy_timeout)


class _Rows:
    """The queued rows of one input and output shape: copied into blocks, with each request's details."""

    BLOCK = 256  # rows a block holds (a larger request gets a block of its own size)

    def __init__(self, key: tuple) -> None:
        # key: (input row shape, input dtype, output row shape, output dtype), as PredictionLog groups them
        self.x_shape, self.x_dtype, self.y_shape, self.y_dtype = key
        self.x_blocks: list[np.ndarray] = []
        self.y_blocks: list[np.ndarray] = []
        self.used: list[int] = []
        self.requests: list[tuple] = []

    def add(self, x: np.ndarray, y: np.ndarray, request: tuple) -> None:
        count = len(x)
        if not self.used or self.used[-1] + count > len(self.x_blocks[-1]):
            size = max(self.BLOCK, count)
            self.x_blocks.append(np.empty((size, *self.x_shape), self.x_dtype))
            self.y_blocks.append(np.empty((size, *self.y_shape), self.y_dtype))
            self.used.append(0)
        start = self.used[-1]
        self.x_blocks[-1][start : start + count] = x
        self.y_blocks[-1][start : start + count] = y
        self.used[-1] = start + count
        self.requests.append(request)

    def message(self) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
        """What the writer process takes: all rows' inputs, all outputs, each request's details."""
        x = np.concatenate([block[:used] for block, used in zip(self.x_blocks, self.used)])
        y = np.concatenate([block[:used] for block, used in zip(self.y_blocks, self.used)])
        return x, y, self.requests


def _rows_by_model(groups: dict[tuple, _Rows]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for rows in groups.values():
        for _, model, version, _, count, _ in rows.requests:
            counts[model, version] = counts.get((model, version), 0) + count
    return counts


def _writer_process(fd: int, path: str, store_inputs: bool, max_rows: int, busy_timeout: float) -> None:
    """The writer process: receive batches from :class:`PredictionLog`, insert each in one transaction, answer.

    Each answer is ``None`` once the batch is committed, or a message saying why it
    was not. Ends when told to (``None``) or when the server process is gone.
    """
    if hasattr(os, "nice"):  # background work: the server's requests come first for the CPU
        os.nice(10)
    pipe = Connection(fd)
    connection = connect(path, busy_timeout=busy_timeout)
    since_retention = 0
    try:
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):  # the server process ended
                return
            if message is None:
                return
            try:
                rows = _insert(connection, message, store_inputs)
                since_retention += rows
                # Retention runs every tenth of max_rows: the file holds at most about 10% more rows than that.
                if since_retention >= min(10_000, max(1, max_rows // 10)):
                    since_retention = 0
                    _apply_retention(connection, max_rows)
                answer = None
            except Exception as error:  # a full disk or a lock held too long: the server counts the drop
                answer = f"could not write to the prediction log {path}: {error!r}"
            try:
                pipe.send(answer)
            except OSError:
                return
    finally:
        connection.close()
        pipe.close()


def _insert(connection: sqlite3.Connection, groups: list[tuple], store_inputs: bool) -> int:
    """Insert the rows of one batch (see :meth:`PredictionLog._write`) in one transaction; the row count."""
    # Everything is computed for all rows of one input and output shape at once and
    # turned into Python values with tolist(): per-row NumPy calls would cost far more.
    records: list[tuple] = []
    for x, y, requests in groups:
        probabilities = y.reshape(len(x), -1)
        features = input_features(x).tolist()
        predicted = probabilities.argmax(axis=1).tolist()
        confidence = probabilities.max(axis=1).tolist()
        num_classes = probabilities.shape[1]
        raw = (
            [row.tobytes() for row in x.reshape(len(x), -1).astype(np.float32)]
            if store_inputs
            else [None] * len(x)
        )
        meta = [
            (request_id, row, when, model, version, latency * 1000.0)
            for when, model, version, request_id, count, latency in requests
            for row in range(count)
        ]
        records += [
            (*head, label, top, num_classes, *summary, blob)
            for head, label, top, summary, blob in zip(meta, predicted, confidence, features, raw)
        ]
    with connection:  # one transaction: committed when this block ends
        connection.executemany(_INSERT, records)
    return len(records)


def _apply_retention(connection: sqlite3.Connection, max_rows: int) -> None:
    with connection:
        (newest,) = connection.execute("SELECT COALESCE(MAX(id), 0) FROM predictions").fetchone()
        cutoff = newest - max_rows
        if cutoff > 0:
            connection.execute("DELETE FROM labels WHERE pred_id <= ?", (cutoff,))
            connection.execute("DELETE FROM predictions WHERE id <= ?", (cutoff,))


def _check_labels(request_id: Any, labels: Any) -> list[int]:
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID:
        raise ModelInputError(
            f'"id" must be the request id (a string of 1-{MAX_REQUEST_ID} characters) that the '
            f"inference answer carried, got {request_id!r}."
        )
    values = labels if isinstance(labels, list) else [labels]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ModelInputError(
            f"a label must be a class index (a whole number >= 0), or a list of them, one per input row; "
            f"got {labels!r}."
        )
    return values


def submit_labels(
    db: str | os.PathLike, request_id: str, labels: int | Sequence[int], *, busy_timeout: float = 10.0
) -> dict[str, Any]:
    """Record the true class of each input row of a logged request (a delayed label).

    A label sent again replaces the earlier one. Introduced in ``08_monitoring.ipynb``;
    the server's ``POST /monitor/labels`` calls it.

    Args:
        db: The prediction log file.
        request_id: The id the inference answer carried.
        labels: One class index per input row (a single int for a one-row request).

    Returns:
        ``id``, ``model``, ``version``, ``labels`` and ``correct`` (how many
        rows the model got right).

    Raises:
        ModelInputError: A malformed id or label, a label count that does not
            match the request's rows, or a class the model does not have.
        UnknownRequestError: The log holds no request with that id.
    """
    values = _check_labels(request_id, list(labels) if isinstance(labels, (tuple, np.ndarray)) else labels)
    connection = connect(db, busy_timeout=busy_timeout, create=False)
    try:
        rows = connection.execute(
            "SELECT id, row, model, version, predicted, num_classes FROM predictions WHERE request_id = ? "
            "ORDER BY row",
            (request_id,),
        ).fetchall()
        if not rows:
            raise UnknownRequestError(
                f"no logged request has id {request_id!r}: send the id the inference answer carried "
                "(it may have been dropped under overload or removed by the retention limit)."
            )
        if len(values) != len(rows):
            raise ModelInputError(
                f"request {request_id!r} had {len(rows)} input rows, got {len(values)} labels: send one per row."
            )
        num_classes = rows[0][5]
        if max(values) >= num_classes:
            raise ModelInputError(
                f"label {max(values)} is not a class of model {rows[0][2]!r}: use 0..{num_classes - 1}."
            )
        now = time.time()
        with connection:
            connection.executemany(
                # REPLACE gives a re-sent label a new id, so the monitor sees it as new.
                "INSERT OR REPLACE INTO labels (pred_id, label, time) VALUES (?, ?, ?)",
                [(row[0], label, now) for row, label in zip(rows, values)],
            )
    finally:
        connection.close()
    return {
        "id": request_id,
        "model": rows[0][2],
        "version": rows[0][3],
        "labels": values,
        "correct": sum(int(row[4] == label) for row, label in zip(rows, values)),
    }
