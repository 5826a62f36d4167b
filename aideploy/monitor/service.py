"""The monitor a server runs: the prediction log, drift per window, rolling accuracy, alerts, metrics.

Notebook: ``notebooks/08_monitoring.ipynb``. Command: ``aideploy serve --log-db PATH``.

:class:`Monitor` owns a :class:`~aideploy.monitor.log.PredictionLog` and a
thread that, every ``interval`` seconds, looks for completed count windows
(``window_size`` rows of one model version, in log order), compares each with
the version's reference profile (:func:`~aideploy.monitor.drift.compare`),
stores the result in the ``windows`` table, updates the drift gauges, and
recomputes the rolling accuracy when new labels arrived. Crossing a threshold
records an alert (``alerts`` table, ``aideploy_alerts_total``). None of this
runs on the request path.

Prometheus metrics (labels ``model``, ``version``, and ``feature`` / ``kind`` where said):

- ``aideploy_prediction_log_rows_total``: rows committed to the log;
- ``aideploy_prediction_log_dropped_total``: rows dropped (queue full, failed write);
- ``aideploy_drift_psi`` (``feature``): the PSI of the latest window;
- ``aideploy_drift_detected`` (``feature``): 1 when the latest window flagged it;
- ``aideploy_rolling_accuracy``: accuracy over the latest labelled rows;
- ``aideploy_alerts_total`` (``kind``: ``drift`` or ``accuracy``).

Several server processes can share one log file: each claims a window by
inserting it (the first insert wins), so every window is computed once, but each
process's gauges show only the windows that process computed.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from typing import Any

import numpy as np

from aideploy.monitor import drift
from aideploy.monitor.log import PredictionLog, connect
from aideploy.monitor.profile import CONFIDENCE, FEATURES, PREDICTED, ReferenceProfile

logger = logging.getLogger("aideploy.monitor")

#: Everything a window compares, in the order the gauges and plots list them.
MEASURES = (*FEATURES, CONFIDENCE, PREDICTED)


class _Metrics:
    """The monitor's Prometheus metrics, in the server's registry."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge

        self.rows = Counter("aideploy_prediction_log_rows", "Rows committed to the prediction log.",
                            ("model", "version"), registry=registry)
        self.dropped = Counter("aideploy_prediction_log_dropped", "Rows the prediction log dropped (queue full "
                               "or a failed write).", ("model", "version"), registry=registry)
        self.psi = Gauge("aideploy_drift_psi", "Population stability index of the latest window.",
                         ("model", "version", "feature"), registry=registry)
        self.detected = Gauge("aideploy_drift_detected", "1 when the latest window flagged drift.",
                              ("model", "version", "feature"), registry=registry)
        self.accuracy = Gauge("aideploy_rolling_accuracy", "Accuracy over the latest labelled predictions.",
                              ("model", "version"), registry=registry)
        self.alerts = Counter("aideploy_alerts", "Alerts recorded.", ("model", "version", "kind"), registry=registry)


class Monitor:
    """The prediction log and its background analysis, for one server process.

    Introduced in ``08_monitoring.ipynb``.

    Args:
        path: The prediction log file.
        settings: Windows and thresholds (default: :class:`~aideploy.monitor.drift.DriftSettings`).
        registry: A ``prometheus_client`` registry to export the metrics in (optional).
        interval: Seconds between two looks for completed windows and new labels.
        **log_options: Passed to :class:`~aideploy.monitor.log.PredictionLog`
            (``max_queue``, ``max_rows``, ``store_inputs``, ``busy_timeout``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        settings: drift.DriftSettings | None = None,
        registry: Any = None,
        interval: float = 0.5,
        **log_options: Any,
    ) -> None:
        self.settings = settings or drift.DriftSettings()
        self.interval = interval
        self.metrics = _Metrics(registry) if registry is not None else None
        self.references: dict[tuple[str, str], ReferenceProfile | None] = {}
        self._accuracy_low: dict[tuple[str, str], bool] = {}
        self._last_label: dict[tuple[str, str], int] = {}
        self.log = PredictionLog(path, on_commit=self._on_commit, on_drop=self._on_drop, **log_options)
        self._connection = connect(path, busy_timeout=self.log.busy_timeout)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _on_commit(self, model: str, version: str, rows: int) -> None:
        if self.metrics is not None:
            self.metrics.rows.labels(model, version).inc(rows)

    def _on_drop(self, model: str, version: str, rows: int) -> None:
        if self.metrics is not None:
            self.metrics.dropped.labels(model, version).inc(rows)

    def add_model(self, model: str, version: str, reference: ReferenceProfile | None) -> None:
        """Watch a model version: drift against ``reference`` (none: log and accuracy only)."""
        key = (model, str(version))
        self.references[key] = reference
        if self.metrics is not None:  # the series exist (at 0) before the first row
            self.metrics.rows.labels(*key)
            self.metrics.dropped.labels(*key)
            for kind in ("drift", "accuracy"):
                self.metrics.alerts.labels(*key, kind)

    def record(self, model: str, version: str, request_id: str, x: np.ndarray, y: np.ndarray,
               latency_seconds: float) -> bool:
        """Queue an answered request for the log (see :meth:`PredictionLog.record`)."""
        return self.log.record(model, version, request_id, x, y, latency_seconds)

    # --- the background thread ------------------------------------------------------

    def start(self) -> None:
        """Start the analysis thread."""
        self._thread = threading.Thread(target=self._run, name="aideploy-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, run a last analysis, and stop."""
        self.log.flush()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.check()
        self.log.close()
        self._connection.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except sqlite3.Error:  # a busy or full disk: try again at the next look
                logger.exception("monitoring analysis failed")

    def check(self) -> list[dict[str, Any]]:
        """Analyse completed windows and new labels now (the thread calls this every ``interval``).

        Returns:
            The windows completed by this call.
        """
        with self._lock:
            done = []
            for key, reference in list(self.references.items()):
                if reference is not None:
                    done += self._windows(key, reference)
                self._accuracy(key, reference)
            return done

    def _windows(self, key: tuple[str, str], reference: ReferenceProfile) -> list[dict[str, Any]]:
        done = []
        size = self.settings.window_size
        while True:
            (last,) = self._connection.execute(
                "SELECT COALESCE(MAX(last_id), 0) FROM windows WHERE model = ? AND version = ?", key
            ).fetchone()
            rows = self._connection.execute(
                f"SELECT id, time, predicted, confidence, {', '.join(FEATURES)} FROM predictions "
                # By rowid from the last window on (no index on model: each index costs every insert).
                "WHERE id > ? AND model = ? AND version = ? ORDER BY id LIMIT ?",
                (last, *key, size),
            ).fetchall()
            if len(rows) < size:
                return done
            table = np.array(rows, dtype=np.float64)
            results = drift.compare(reference, table[:, 4:], table[:, 3], table[:, 2].astype(np.int64),
                                    self.settings)
            flagged = any(result["drift"] for result in results.values())
            with self._connection:
                inserted = self._connection.execute(
                    "INSERT OR IGNORE INTO windows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*key, int(table[0, 0]), int(table[-1, 0]), float(table[0, 1]), float(table[-1, 1]),
                     len(rows), int(flagged), json.dumps(results)),
                ).rowcount
            if not inserted:  # another process claimed this window
                continue
            window = {"model": key[0], "version": key[1], "first_id": int(table[0, 0]),
                      "last_id": int(table[-1, 0]), "drift": flagged, "results": results}
            self._publish(key, window)
            done.append(window)

    def _publish(self, key: tuple[str, str], window: dict[str, Any]) -> None:
        for feature, result in window["results"].items():
            if self.metrics is not None:
                self.metrics.psi.labels(*key, feature).set(result["psi"])
                self.metrics.detected.labels(*key, feature).set(int(result["drift"]))
            if result["drift"]:
                threshold = self.settings.psi_major if result["level"] == "major" else self.settings.psi_moderate
                self._alert(
                    key, "drift", feature, result["psi"], threshold,
                    f"{feature} drifted in window {window['first_id']}-{window['last_id']}: PSI {result['psi']:.3f} "
                    f"({result['level']}; moderate from {self.settings.psi_moderate}, major from "
                    f"{self.settings.psi_major}), p-value {result['p_value']:.2g}",
                )

    def _accuracy(self, key: tuple[str, str], reference: ReferenceProfile | None) -> None:
        (newest,) = self._connection.execute("SELECT COALESCE(MAX(id), 0) FROM labels").fetchone()
        if newest == self._last_label.get(key):
            return
        self._last_label[key] = newest
        accuracy, count = rolling_accuracy(self._connection, *key, self.settings.accuracy_window)
        if count < self.settings.min_labels:
            return
        if self.metrics is not None:
            self.metrics.accuracy.labels(*key).set(accuracy)
        threshold = self.settings.accuracy_threshold(reference)
        if threshold is None:
            return
        low = accuracy < threshold
        if low and not self._accuracy_low.get(key, False):  # alert on the crossing, not on every look
            self._alert(
                key, "accuracy", "rolling_accuracy", accuracy, threshold,
                f"rolling accuracy {accuracy:.3f} over the last {count} labelled predictions is "
                f"{threshold - accuracy:.3f} below the threshold {threshold:.3f}",
            )
        self._accuracy_low[key] = low

    def _alert(self, key: tuple[str, str], kind: str, subject: str, value: float, threshold: float,
               message: str) -> None:
        with self._connection:
            self._connection.execute(
                "INSERT INTO alerts (time, model, version, kind, subject, value, threshold, message) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), *key, kind, subject, float(value), float(threshold), message),
            )
        logger.warning("alert for %s version %s: %s", key[0], key[1], message)
        if self.metrics is not None:
            self.metrics.alerts.labels(*key, kind).inc()

    # --- reading back -----------------------------------------------------------------

    def alerts(self, model: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The latest alerts (newest last), for one model or all."""
        with self._lock:
            return read_alerts(self._connection, model, limit)

    def windows(self, model: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The latest completed windows (newest last), for one model or all."""
        with self._lock:
            return read_windows(self._connection, model, limit)


def rolling_accuracy(connection: sqlite3.Connection, model: str, version: str, num_rows: int) -> tuple[float, int]:
    """Accuracy over the latest ``num_rows`` labelled predictions of a model version.

    Introduced in ``08_monitoring.ipynb``.

    Returns:
        ``(accuracy, labelled_rows)``; the accuracy is NaN when no row is labelled.
    """
    rows = connection.execute(
        "SELECT p.predicted = l.label FROM labels l JOIN predictions p ON p.id = l.pred_id "
        "WHERE p.model = ? AND p.version = ? ORDER BY l.pred_id DESC LIMIT ?",
        (model, version, num_rows),
    ).fetchall()
    if not rows:
        return float("nan"), 0
    return float(np.mean([row[0] for row in rows])), len(rows)


def read_alerts(connection: sqlite3.Connection, model: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The latest alerts of a log (newest last). Introduced in ``08_monitoring.ipynb``."""
    where, parameters = ("WHERE model = ?", (model,)) if model is not None else ("", ())
    rows = connection.execute(
        f"SELECT id, time, model, version, kind, subject, value, threshold, message FROM alerts {where} "
        "ORDER BY id DESC LIMIT ?",
        (*parameters, limit),
    ).fetchall()
    names = ("id", "time", "model", "version", "kind", "subject", "value", "threshold", "message")
    return [dict(zip(names, row)) for row in reversed(rows)]


def read_windows(connection: sqlite3.Connection, model: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The latest completed windows of a log (newest last). Introduced in ``08_monitoring.ipynb``."""
    where, parameters = ("WHERE model = ?", (model,)) if model is not None else ("", ())
    rows = connection.execute(
        "SELECT model, version, first_id, last_id, start_time, end_time, num_rows, drift, results FROM windows "
        f"{where} ORDER BY end_time DESC, first_id DESC LIMIT ?",
        (*parameters, limit),
    ).fetchall()
    names = ("model", "version", "first_id", "last_id", "start_time", "end_time", "num_rows", "drift")
    return [
        {**dict(zip(names, row[:8])), "drift": bool(row[7]), "results": json.loads(row[8])} for row in reversed(rows)
    ]
