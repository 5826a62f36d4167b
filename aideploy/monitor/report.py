"""Read a prediction log back: windows, drift, accuracy, alerts, traffic; and plot them.

Notebook: ``notebooks/08_monitoring.ipynb``. Command: ``aideploy monitor report``.

:func:`summarize` answers "what happened" from the log file alone (the server's
drift windows) or, given a reference profile, recomputes drift over count or
time windows of the logged rows. The plotting functions take its result.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from aideploy.errors import ConfigError
from aideploy.monitor import drift
from aideploy.monitor.log import connect
from aideploy.monitor.profile import FEATURES, ReferenceProfile
from aideploy.monitor.service import MEASURES, read_alerts, read_windows


def _versions(connection: Any) -> list[tuple[str, str]]:
    return [tuple(row) for row in connection.execute("SELECT DISTINCT model, version FROM predictions ORDER BY 1, 2")]


def _window_accuracy(connection: Any, model: str, version: str, first_id: int, last_id: int) -> tuple[float, int]:
    rows = connection.execute(
        "SELECT p.predicted = l.label FROM labels l JOIN predictions p ON p.id = l.pred_id "
        "WHERE p.model = ? AND p.version = ? AND p.id BETWEEN ? AND ?",
        (model, version, first_id, last_id),
    ).fetchall()
    return (float(np.mean([r[0] for r in rows])), len(rows)) if rows else (float("nan"), 0)


def _recompute(
    connection: Any,
    model: str,
    version: str,
    reference: ReferenceProfile,
    settings: drift.DriftSettings,
    window_seconds: float | None,
) -> list[dict[str, Any]]:
    rows = connection.execute(
        f"SELECT id, time, predicted, confidence, {', '.join(FEATURES)} FROM predictions "
        "WHERE model = ? AND version = ? ORDER BY id",
        (model, version),
    ).fetchall()
    if not rows:
        return []
    table = np.array(rows, dtype=np.float64)
    if window_seconds is not None:
        bucket = np.floor((table[:, 1] - table[0, 1]) / window_seconds).astype(np.int64)
        splits = np.flatnonzero(np.diff(bucket)) + 1
        chunks = np.split(np.arange(len(table)), splits)
    else:
        size = settings.window_size
        chunks = [np.arange(start, start + size) for start in range(0, len(table) - size + 1, size)]
    windows = []
    for chunk in chunks:
        if len(chunk) < 20:  # too few rows for the tests (a short last time window)
            continue
        part = table[chunk]
        results = drift.compare(reference, part[:, 4:], part[:, 3], part[:, 2].astype(np.int64), settings)
        windows.append({
            "model": model, "version": version, "first_id": int(part[0, 0]), "last_id": int(part[-1, 0]),
            "start_time": float(part[0, 1]), "end_time": float(part[-1, 1]), "num_rows": len(part),
            "drift": any(r["drift"] for r in results.values()), "results": results,
        })
    return windows


def summarize(
    db: str | os.PathLike,
    reference: ReferenceProfile | None = None,
    *,
    settings: drift.DriftSettings | None = None,
    window_seconds: float | None = None,
) -> dict[str, Any]:
    """Summarise a prediction log: per model version, its windows, drift flags and accuracy.

    Introduced in ``08_monitoring.ipynb``; ``aideploy monitor report`` calls it.

    Args:
        db: The prediction log file.
        reference: A reference profile: drift is recomputed over windows of the log
            (default: the windows the server computed and stored).
        settings: Thresholds and the count window size (default: :class:`~aideploy.monitor.drift.DriftSettings`).
        window_seconds: Time windows of this many seconds instead of count windows
            (with ``reference`` only).

    Returns:
        ``rows``, ``labelled``, ``dropped_note``, ``settings`` and ``models``: for
        each ``"name:version"``, its ``windows`` (``first_id``, ``last_id``,
        ``start_time``, ``end_time``, ``num_rows``, ``drift``, ``drifted`` feature
        names, ``psi`` per measure, ``accuracy`` and ``labelled`` rows) and its ``alerts``.

    Raises:
        ArtifactError: The file does not exist.
        ConfigError: ``window_seconds`` without a reference, or not positive.
    """
    settings = settings or drift.DriftSettings()
    if window_seconds is not None and (reference is None or not window_seconds > 0):
        raise ConfigError("time windows need a reference profile (--reference) and a positive number of seconds.")
    connection = connect(db, create=False)
    try:
        (num_rows,) = connection.execute("SELECT COUNT(*) FROM predictions").fetchone()
        (labelled,) = connection.execute("SELECT COUNT(*) FROM labels").fetchone()
        models: dict[str, Any] = {}
        for model, version in _versions(connection):
            if reference is not None:
                windows = _recompute(connection, model, version, reference, settings, window_seconds)
            else:
                windows = [w for w in read_windows(connection, model, limit=1_000_000) if w["version"] == version]
            entries = []
            for window in windows:
                accuracy, count = _window_accuracy(connection, model, version, window["first_id"], window["last_id"])
                entries.append({
                    **{key: window[key] for key in ("first_id", "last_id", "start_time", "end_time", "num_rows")},
                    "drift": window["drift"],
                    "drifted": [name for name, r in window["results"].items() if r["drift"]],
                    "psi": {name: r["psi"] for name, r in window["results"].items()},
                    "p_value": {name: r["p_value"] for name, r in window["results"].items()},
                    "accuracy": None if count == 0 else round(accuracy, 4),
                    "labelled": count,
                })
            alerts = [a for a in read_alerts(connection, model, limit=100_000) if a["version"] == version]
            models[f"{model}:{version}"] = {"windows": entries, "alerts": alerts}
    finally:
        connection.close()
    return {
        "rows": int(num_rows),
        "labelled": int(labelled),
        "settings": drift.settings_dict(settings),
        "models": models,
    }


def traffic(db: str | os.PathLike, *, bucket_seconds: float = 1.0) -> dict[str, np.ndarray]:
    """Requests per second and latency percentiles over time, from the log.

    Introduced in ``08_monitoring.ipynb``.

    Args:
        db: The prediction log file.
        bucket_seconds: Width of one time bucket.

    Returns:
        ``seconds`` (bucket starts, from the first row), ``throughput`` (rows/s),
        ``p50_ms`` and ``p99_ms`` per bucket.
    """
    connection = connect(db, create=False)
    try:
        rows = np.array(connection.execute("SELECT time, latency_ms FROM predictions ORDER BY id").fetchall(),
                        dtype=np.float64).reshape(-1, 2)
    finally:
        connection.close()
    if len(rows) == 0:
        empty = np.zeros(0)
        return {"seconds": empty, "throughput": empty, "p50_ms": empty, "p99_ms": empty}
    bucket = np.floor((rows[:, 0] - rows[:, 0].min()) / bucket_seconds).astype(np.int64)
    starts = np.unique(bucket)
    p50 = np.array([np.percentile(rows[bucket == b, 1], 50) for b in starts])
    p99 = np.array([np.percentile(rows[bucket == b, 1], 99) for b in starts])
    counts = np.array([(bucket == b).sum() for b in starts])
    return {"seconds": starts * bucket_seconds, "throughput": counts / bucket_seconds, "p50_ms": p50, "p99_ms": p99}


def plot_traffic(db: str | os.PathLike, *, bucket_seconds: float = 1.0):
    """Throughput and latency (p50, p99) over time. Introduced in ``08_monitoring.ipynb``.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    data = traffic(db, bucket_seconds=bucket_seconds)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    top.plot(data["seconds"], data["throughput"], marker=".")
    top.set_ylabel("rows / s")
    top.set_title("Throughput and latency over time (from the prediction log)")
    bottom.plot(data["seconds"], data["p50_ms"], marker=".", label="p50")
    bottom.plot(data["seconds"], data["p99_ms"], marker=".", label="p99")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds since the first logged row")
    bottom.legend()
    figure.tight_layout()
    return figure


def plot_drift(summary: dict[str, Any], key: str, *, measures: tuple[str, ...] = MEASURES):
    """PSI per window and measure, with the moderate and major thresholds. Introduced in ``08_monitoring.ipynb``.

    Args:
        summary: What :func:`summarize` returned.
        key: ``"name:version"``.
        measures: Which features to draw.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    windows = summary["models"][key]["windows"]
    settings = summary["settings"]
    figure, axis = plt.subplots(figsize=(9, 4))
    index = np.arange(len(windows))
    for name in measures:
        axis.plot(index, [w["psi"][name] for w in windows], marker="o", label=name)
    moderate, major = settings["psi_moderate"], settings["psi_major"]
    axis.axhline(moderate, color="orange", linestyle="--", label=f"moderate ({moderate})")
    axis.axhline(major, color="red", linestyle="--", label=f"major ({major})")
    for i, window in enumerate(windows):
        if window["drift"]:
            axis.axvspan(i - 0.4, i + 0.4, color="red", alpha=0.08)
    axis.set_yscale("symlog", linthresh=0.1)
    axis.set_ylim(bottom=0)
    axis.set_xlabel("window (shaded: drift flagged)")
    axis.set_ylabel("PSI (symmetric log scale)")
    axis.set_title(f"Drift per window: {key}")
    axis.legend(fontsize=7, ncol=2, loc="upper left")
    figure.tight_layout()
    return figure


def plot_accuracy(summary: dict[str, Any], key: str, *, threshold: float | None = None):
    """Accuracy of the labelled rows per window, with the alerts' threshold. Introduced in ``08_monitoring.ipynb``.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    entry = summary["models"][key]
    windows = entry["windows"]
    figure, axis = plt.subplots(figsize=(9, 3.5))
    accuracy = [np.nan if w["accuracy"] is None else w["accuracy"] for w in windows]
    axis.plot(np.arange(len(windows)), accuracy, marker="o", label="accuracy of the labelled rows")
    if threshold is not None:
        axis.axhline(threshold, color="red", linestyle="--", label=f"alert below {threshold:.3f}")
    alerts = [a for a in entry["alerts"] if a["kind"] == "accuracy"]
    for alert in alerts:
        axis.annotate(f"alert: {alert['value']:.3f}", xy=(0.99, alert["value"]), xycoords=("axes fraction", "data"),
                      ha="right", color="red", fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_xlabel("window")
    axis.set_ylabel("accuracy")
    axis.set_title(f"Accuracy from delayed labels: {key}")
    axis.legend(loc="lower left")
    figure.tight_layout()
    return figure


def write_report(
    db: str | os.PathLike,
    out_dir: str | os.PathLike,
    reference: ReferenceProfile | None = None,
    *,
    settings: drift.DriftSettings | None = None,
    window_seconds: float | None = None,
) -> dict[str, Any]:
    """Summarise a log and write its plots (PNG) and ``summary.json`` into ``out_dir``.

    Introduced in ``08_monitoring.ipynb``; ``aideploy monitor report`` calls it.

    Returns:
        The summary, with ``plots`` (the files written) and ``summary_path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from aideploy import artifacts

    out_dir = artifacts.writable_dir(out_dir, option="--out")
    summary = summarize(db, reference, settings=settings, window_seconds=window_seconds)
    plots = []
    figures = [("traffic.png", plot_traffic(db))]
    threshold = (settings or drift.DriftSettings()).accuracy_threshold(reference)
    for key, entry in summary["models"].items():
        safe = key.replace(":", "_v")
        if entry["windows"]:
            figures.append((f"drift_{safe}.png", plot_drift(summary, key)))
            figures.append((f"accuracy_{safe}.png", plot_accuracy(summary, key, threshold=threshold)))
    for name, figure in figures:
        path = Path(out_dir) / name
        figure.savefig(path, dpi=100)
        plt.close(figure)
        plots.append(str(path))
    summary_path = artifacts.write_json(Path(out_dir) / "summary.json", summary)
    return {**summary, "plots": plots, "summary_path": str(summary_path)}

