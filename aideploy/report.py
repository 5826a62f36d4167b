"""The pipeline's comparison of variants and its report (Markdown and self-contained HTML).

Notebook: ``notebooks/00_overview.ipynb``. Command: ``aideploy pipeline``.

:func:`compare_variants` measures every deployable file the pipeline made
(accuracy on the whole test set, size raw and gzip, batch-1 latency and
throughput in its own runtime) and checks output parity of the float32 exports
against tf-keras. :func:`write_report` turns the stage manifests into
``report.md`` and ``report.html``; the HTML embeds its plots as base64 PNGs and
its style inline, so it opens offline, from a mail attachment as well as from disk.
"""

from __future__ import annotations

import base64
import csv
import html
import importlib.metadata
import io
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aideploy import artifacts

#: The distributions whose exact versions the report lists.
VERSIONED = (
    "aideploy", "tensorflow", "tf-keras", "tensorflow-model-optimization", "tf2onnx", "onnx", "onnxruntime",
    "ai-edge-litert", "optuna", "numpy", "matplotlib", "fastapi", "uvicorn",
)  # fmt: skip
BASELINE = "fp32 ONNX"
COLUMNS = ("variant", "runtime", "test_accuracy", "accuracy_change_pp", "size_bytes", "gzip_bytes", "size_ratio",
           "gzip_ratio", "p50_us", "p99_us", "throughput_per_s", "file")  # fmt: skip


def library_versions(names: Sequence[str] = VERSIONED) -> dict[str, str]:
    """Exact installed versions (``importlib.metadata``), plus Python's.

    Introduced in ``00_overview.ipynb``.

    Args:
        names: Distribution names.

    Returns:
        ``{name: version}``; ``"not installed"`` for a missing one.
    """
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def compare_variants(
    variants: Mapping[str, str | os.PathLike],
    source: str | os.PathLike,
    splits: Any,
    *,
    batch_sizes: Sequence[int] = (1, 256),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Accuracy, size, latency of every variant, and parity of the float32 exports.

    Latency and throughput come from :func:`aideploy.bench.benchmark`: each file in
    a process of its own, same thread count (1), turns in a shuffled order each
    round. Introduced in ``00_overview.ipynb``.

    Args:
        variants: ``{name: path}`` of ONNX and TFLite files; ``"fp32 ONNX"`` is the baseline.
        source: The tf-keras model (``.keras``) the variants came from: the parity reference.
        splits: The data; the whole test set is used.
        batch_sizes: Batch sizes of the benchmark (1 gives the latency).
        progress: Called with a line of text as the benchmark proceeds.

    Returns:
        ``rows`` (one dict a variant, see :data:`COLUMNS`), ``parity`` (rows and
        worst figures), ``benchmark`` (everything :func:`aideploy.bench.benchmark`
        measured), ``smallest_within_1pt`` and ``cpu``.

    Raises:
        ConfigError: No ``"fp32 ONNX"`` variant.
    """
    from aideploy import bench, bench_worker, parity, prune, quantize, runtime
    from aideploy.errors import ConfigError

    if BASELINE not in variants:
        raise ConfigError(f"the variants need a {BASELINE!r} baseline to compare against.")
    paths = {name: Path(path) for name, path in variants.items()}
    checked = parity.parity_report(
        source, [paths[BASELINE], paths["fp32 TFLite"]] if "fp32 TFLite" in paths else [paths[BASELINE]],
        splits.x_test, splits.y_test,
    )  # fmt: skip
    settings = bench.BenchmarkSettings.for_mode(batch_sizes=tuple(batch_sizes))
    measured = bench.benchmark(list(paths.values()), settings, progress=progress)
    labels = {Path(spec["source"]): label
              for label, spec in bench_worker.plan([(p, runtime.runtime_of(p)) for p in paths.values()])
              if spec["kind"] == "predictor"}  # fmt: skip
    largest = max(batch_sizes)
    rows = []
    for name, path in paths.items():
        latency = measured.get(labels[path], 1) or {}
        throughput = measured.get(labels[path], largest) or {}
        rows.append({
            "variant": name,
            "runtime": runtime.runtime_of(path),
            "test_accuracy": round(quantize.evaluate_file(path, splits.x_test, splits.y_test), 5),
            **prune.file_sizes(path),
            "p50_us": _round(latency.get("p50_us")),
            "p99_us": _round(latency.get("p99_us")),
            "throughput_per_s": _round(throughput.get("throughput_per_s")),
            "file": path.name,
        })  # fmt: skip
    base = next(row for row in rows if row["variant"] == BASELINE)
    for row in rows:
        row["accuracy_change_pp"] = round(100 * (row["test_accuracy"] - base["test_accuracy"]), 2)
        row["size_ratio"] = round(row["size_bytes"] / base["size_bytes"], 3)
        row["gzip_ratio"] = round(row["gzip_bytes"] / base["gzip_bytes"], 3)
    candidates = [row for row in rows if not row["variant"].startswith("fp32") and row["accuracy_change_pp"] >= -1.0]
    smallest = min(candidates, key=lambda row: row["gzip_bytes"], default=None)
    return {
        "rows": [{column: row.get(column) for column in COLUMNS} for row in rows],
        "parity": {
            **checked.to_dict(),
            "max_abs_diff": max(row.max_abs_diff for row in checked.rows),
            "min_top1_agreement": min(row.top1_agreement for row in checked.rows),
            "passed": checked.passed(),
        },
        "benchmark": measured.to_dict(),
        "throughput_batch_size": largest,
        "smallest_within_1pt": None if smallest is None else
        {key: smallest[key] for key in ("variant", "gzip_ratio", "size_ratio", "accuracy_change_pp")},
        "cpu": bench.cpu_model(),
        "num_test_images": len(splits.y_test),
    }  # fmt: skip


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def save_comparison(comparison: Mapping[str, Any], folder: str | os.PathLike) -> dict[str, Path]:
    """Write the comparison as CSV and JSON and its plots as PNG files into ``folder``.

    Introduced in ``00_overview.ipynb``.

    Returns:
        ``{"csv", "json", "tradeoffs", "runtimes"}`` paths.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from aideploy import bench

    folder = Path(folder)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(comparison["rows"])
    paths = {
        "csv": artifacts.write_bytes(folder / "comparison.csv", buffer.getvalue().encode()),
        "json": artifacts.write_json(folder / "comparison.json", comparison),
    }
    figure = plot_tradeoffs(comparison["rows"])
    paths["tradeoffs"] = _save_figure(figure, folder / "tradeoffs.png")
    plt.close(figure)
    measured = comparison["benchmark"]
    figure = bench.BenchmarkResult(rows=measured["rows"], settings=measured["settings"]).plot()
    paths["runtimes"] = _save_figure(figure, folder / "runtimes.png")
    plt.close(figure)
    return paths


def _save_figure(figure: Any, path: Path) -> Path:
    with artifacts.atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    return path


def plot_tradeoffs(rows: Sequence[Mapping[str, Any]]) -> Any:
    """Accuracy against gzip size and against batch-1 latency, the Pareto front joined by a line.

    Introduced in ``00_overview.ipynb``.

    Args:
        rows: The comparison's rows (``variant``, ``test_accuracy``, ``gzip_bytes``, ``p50_us``).

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    from aideploy import compress

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    panels = ((axes[0], "gzip_bytes", "gzip size (KiB)"), (axes[1], "p50_us", "batch-1 latency p50 (µs)"))
    for axis, key, label in panels:
        usable = [row for row in rows if row.get(key) is not None]
        scale = 1024 if key == "gzip_bytes" else 1
        points = [(row[key] / scale, 100 * row["test_accuracy"]) for row in usable]
        axis.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", zorder=3)
        for row, (x, y) in zip(usable, points):
            axis.annotate(row["variant"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = compress.pareto_front(points)
        axis.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", color="tab:orange",
                  label="Pareto front", zorder=2)  # fmt: skip
        axis.set(xlabel=label, ylabel="test accuracy (%)", xscale="log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(loc="lower right")
    axes[0].set_title("Accuracy vs size (up and left is better)")
    axes[1].set_title("Accuracy vs latency (up and left is better)")
    figure.tight_layout()
    return figure


# --- the report -------------------------------------------------------------------------
# Built once as a list of blocks, then rendered twice (Markdown, HTML), so the two never disagree.


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list[str], list[list[str]]]:
    return ("table", list(headers), [["" if cell is None else str(cell) for cell in row] for row in rows])


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in params.items())  # fmt: skip


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def report_blocks(
    out_dir: Path, records: Mapping[str, Mapping[str, Any]], settings: Any, reproduce: str, *, finished: str,
    display_dir: Path | None = None,
) -> list[tuple]:
    """The report's content as blocks, rendered by :func:`to_markdown` and :func:`to_html`.

    Blocks are ``("h1"|"h2"|"p"|"code", text)``, ``("table", headers, rows)`` and
    ``("img", path, alt)``.

    Introduced in ``00_overview.ipynb``.
    """
    evaluation = records["evaluation"]["result"]
    training, tuning = records["training"]["result"], records["tuning"]["result"]
    published = records["publishing"]["result"]
    mode = "fast" if settings.fast else "full"
    repository = (display_dir or out_dir) / "repository"
    blocks: list[tuple] = [
        ("h1", f"aideploy pipeline report: {settings.kind.upper()} ({mode} mode)"),
        ("p", f"Finished {finished}. CPU: {evaluation['cpu']}. "
              f"Test set: {evaluation['num_test_images']:,} images."),  # fmt: skip
        ("h2", "Training and tuning"),
        _table(
            ["model", "test accuracy", "details"],
            [
                ["baseline (training)", f"{training['test_accuracy']:.4f}",
                 f"{training['epochs_run']} epochs, {training['parameters']:,} parameters"],
                ["tuned (best of the study, retrained on train + validation)", f"{tuning['test_accuracy']:.4f}",
                 f"{tuning['n_trials']} TPE trials ({tuning['n_pruned']} pruned); "
                 f"best {_params(tuning['best_params'])}"],
            ],
        ),  # fmt: skip
        ("p", "Every variant below is made from the tuned model."),
        ("h2", "Variants: accuracy, size, latency"),
        _table(
            ["variant", "runtime", "test acc.", "Δ acc. (pp)", "size (KiB)", "gzip (KiB)", "gzip ratio",
             "p50 (µs)", "p99 (µs)", f"throughput @{evaluation['throughput_batch_size']} (/s)"],
            [[row["variant"], row["runtime"], f"{row['test_accuracy']:.4f}", f"{row['accuracy_change_pp']:+.2f}",
              f"{row['size_bytes'] / 1024:.1f}", f"{row['gzip_bytes'] / 1024:.1f}", f"{row['gzip_ratio']:.3f}",
              _fmt(row["p50_us"], ".1f"), _fmt(row["p99_us"], ".1f"), _fmt(row["throughput_per_s"], ",.0f")]
             for row in evaluation["rows"]],
        ),  # fmt: skip
        ("p", f"Ratios are against {BASELINE}. Latency: batch 1, one thread, each runtime in a process of its "
              "own (aideploy.bench.benchmark). Files: evaluation/comparison.csv and .json."),  # fmt: skip
        ("img", out_dir / "evaluation" / "tradeoffs.png", "accuracy against size and latency"),
        ("h2", "Parity with tf-keras"),
        _table(
            ["runtime", "file", "max |diff|", "top-1 agreement", "accuracy"],
            [[row["runtime"], Path(row["path"]).name if row["path"] else "", f"{row['max_abs_diff']:.2e}",
              f"{row['top1_agreement']:.4%}", f"{row['accuracy']:.4f}"] for row in evaluation["parity"]["rows"]],
        ),  # fmt: skip
        ("p", f"Reference (tf-keras) accuracy {evaluation['parity']['reference_accuracy']:.4f}; "
              f"within 1e-4 and 99.9% top-1 agreement: {'yes' if evaluation['parity']['passed'] else 'NO'}."),
        ("h2", "Runtime benchmark"),
        ("img", out_dir / "evaluation" / "runtimes.png", "throughput and batch-1 latency of each runtime"),
        ("h2", "Model repository"),
        ("p", f"Published {published['name']!r} version {published['version']} ({', '.join(published['files'])}) "
              f"into {repository} (Triton layout). Serve it with:"),  # fmt: skip
        ("code", f"aideploy serve {repository}"),
        ("h2", "Stages"),
        _table(["stage", "seconds (when it last ran)", "finished"],
               [[name, f"{record['seconds']:.1f}", record["finished_at"]]
                for name, record in records.items() if name in _STAGE_ORDER]),  # fmt: skip
        ("h2", "Versions"),
        _table(["library", "version"], sorted(library_versions().items())),
        ("h2", "Reproduce"),
        ("code", reproduce),
    ]  # fmt: skip
    return blocks


_STAGE_ORDER = (
    "data", "training", "tuning", "pruning", "quantization", "conversion", "evaluation", "publishing",
)


def to_markdown(blocks: Sequence[tuple], base: Path) -> str:
    """Render report blocks as Markdown; images are linked relative to ``base``."""
    parts = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            parts.append(f"# {block[1]}")
        elif kind == "h2":
            parts.append(f"## {block[1]}")
        elif kind == "p":
            parts.append(block[1])
        elif kind == "code":
            parts.append(f"```bash\n{block[1]}\n```")
        elif kind == "img":
            parts.append(f"![{block[2]}]({Path(block[1]).relative_to(base).as_posix()})")
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
            parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}"
    "pre{background:#f6f6f6;padding:0.8em;overflow-x:auto}img{max-width:100%}"
)


def to_html(blocks: Sequence[tuple]) -> str:
    """Render report blocks as one self-contained HTML page (inline style, images as base64)."""
    title = next((block[1] for block in blocks if block[0] == "h1"), "aideploy report")
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(block[1])}</code></pre>")
        elif kind == "img":
            encoded = base64.b64encode(Path(block[1]).read_bytes()).decode("ascii")
            body.append(f'<p><img alt="{html.escape(block[2])}" src="data:image/png;base64,{encoded}"></p>')
        elif kind == "table":
            head = "".join(f"<th>{html.escape(cell)}</th>" for cell in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(out_dir: str | os.PathLike, records: Mapping[str, Mapping[str, Any]], settings: Any,
                 *, reproduce: str, display_dir: str | os.PathLike | None = None) -> dict[str, Path]:  # fmt: skip
    """Write ``report.md`` and ``report.html`` (and ``summary.json``) into ``out_dir``.

    Introduced in ``00_overview.ipynb``.

    Args:
        out_dir: The pipeline's folder (the plots are in ``evaluation/`` below it).
        records: The stage manifests, by stage.
        settings: The :class:`aideploy.pipeline.PipelineSettings` of the run.
        reproduce: The command that reruns the pipeline.
        display_dir: ``out_dir`` as the report should name it (default: ``out_dir``).

    Returns:
        ``{"markdown", "html", "summary"}`` paths.
    """
    import datetime as _dt

    from aideploy import pipeline

    out_dir = Path(out_dir)
    display_dir = Path(display_dir) if display_dir is not None else out_dir
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    blocks = report_blocks(out_dir, records, settings, reproduce, finished=stamp, display_dir=display_dir)
    summary = {
        **pipeline.headline(records, display_dir),
        "reproduce": reproduce,
        "fast_mode": settings.fast,
        "stage_seconds": {name: record["seconds"] for name, record in records.items()},
        "tuning": records["tuning"]["result"],
        "versions": library_versions(),
        "rows": records["evaluation"]["result"]["rows"],
        "parity": {key: value for key, value in records["evaluation"]["result"]["parity"].items() if key != "rows"},
    }
    return {
        "markdown": artifacts.write_bytes(out_dir / "report.md", to_markdown(blocks, out_dir).encode("utf-8")),
        "html": artifacts.write_bytes(out_dir / "report.html", to_html(blocks).encode("utf-8")),
        "summary": artifacts.write_json(out_dir / "summary.json", summary),
    }
