"""Stage 06, benchmark: latency and throughput of every runtime, each timed in a process of its own.

Notebook: ``notebooks/06_conversion.ipynb``. Command: ``aideploy bench``; script:
``benchmarks/runtimes.py``.

:func:`benchmark` measures batch-1 latency (p50, p99) and throughput at several
batch sizes for each :mod:`aideploy.runtime` predictor of one model, next to
three references: ``model.predict`` of the tf-keras model, a raw
``onnxruntime.InferenceSession.run`` (what the predictor wraps) and a plain
NumPy chain of the model's matrix multiplications, which shows how close each
runtime gets to what the machine can do. Beside throughput it reports the
achieved multiply-adds per second (GMAC/s), the CPU model and the thread count.

Why one process a runtime. Timed one after another in one process, the
runtimes are not independent: once TensorFlow has run, its thread pools stay
in the process and an ONNX Runtime call measured next cost 2.09x raw
``InferenceSession.run`` at batch 1, against 1.03x in a process without
TensorFlow. And TensorFlow fixes its thread counts when it initialises, and
OpenBLAS reads ``OPENBLAS_CORETYPE`` when NumPy loads it, so equal thread
counts and an unpinned BLAS are only possible in fresh processes. So each
runtime (and each reference) lives in a worker process of its own
(:mod:`aideploy.bench_worker`) that loads only its runtime, with every thread
pool set to ``num_threads`` (ONNX Runtime intra-op threads, LiteRT
``num_threads``, TensorFlow intra- and inter-op threads, BLAS and OpenMP
through ``threadpoolctl``). Workers wait idle on a pipe while another one
measures, and they take turns over several rounds, in the ``order`` of the
settings: ``shuffled`` (default; a fresh random order each round, so slow
drifts of the machine do not favour whoever comes first), ``forward`` or
``reverse``; running the same benchmark in opposite orders shows that the
figures do not depend on it. The NumPy reference's process alone runs with
``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` unset, because they pin OpenBLAS
to older kernels on some machines; the result records what each process saw.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aideploy import artifacts, bench_worker, config
from aideploy.errors import ConfigError
from aideploy.runtime import check_threads

#: Batch sizes of the throughput benchmark.
DEFAULT_BATCH_SIZES = (1, 32, 256, 4096)
REFERENCE_PREDICT = bench_worker.LABEL_PREDICT
REFERENCE_RAW_ONNX = bench_worker.LABEL_RAW_ONNX
REFERENCE_NUMPY = "numpy matmul reference"
#: Orders in which the runtimes take their turns (see :func:`measurement_order`).
ORDERS = ("shuffled", "forward", "reverse")


@dataclass(frozen=True)
class BenchmarkSettings:
    """How long and how often to measure.

    Attributes:
        batch_sizes: Batch sizes of the throughput measurements.
        num_threads: Threads of every runtime and reference: ONNX Runtime
            intra-op, LiteRT, TensorFlow intra- and inter-op, BLAS (``None``:
            each library's default).
        latency_calls: Timed batch-1 calls a runtime, over all rounds.
        latency_max_seconds: Cap on the batch-1 latency time a runtime and round
            (``model.predict`` takes milliseconds a call).
        throughput_seconds: Time a runtime, batch size and round.
        num_rounds: Rounds; each round measures every runtime in turn, so slow
            drifts of the machine affect all of them alike.
        warmup_calls: Untimed calls when a worker starts (a quarter of them
            again before each turn).
        seed: Seed of the random inputs and of the shuffled order.
        order: ``"shuffled"``, ``"forward"`` or ``"reverse"`` (see :func:`measurement_order`).
    """

    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    num_threads: int | None = 1
    latency_calls: int = 2000
    latency_max_seconds: float = 2.0
    throughput_seconds: float = 0.5
    num_rounds: int = 3
    warmup_calls: int = 20
    seed: int = 0
    order: str = "shuffled"

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch sizes must be positive whole numbers, got {self.batch_sizes}.")
        if self.num_threads is not None:
            check_threads(self.num_threads)
        if self.latency_calls < 10 or self.num_rounds < 1:
            raise ConfigError("latency_calls must be at least 10 and num_rounds at least 1.")
        if self.order not in ORDERS:
            raise ConfigError(f"unknown order {self.order!r}: use one of {', '.join(ORDERS)}.")

    @classmethod
    def for_mode(cls, **overrides: Any) -> BenchmarkSettings:
        """Fast-mode settings (a few seconds) or full-mode settings (about a minute and a half for the MLP)."""
        base = cls(
            latency_calls=config.fast_or_full(200, 2500),
            latency_max_seconds=config.fast_or_full(0.3, 1.0),
            throughput_seconds=config.fast_or_full(0.05, 0.3),
            num_rounds=config.fast_or_full(2, 5),
            warmup_calls=config.fast_or_full(5, 20),
        )
        return cls(**{**asdict(base), **overrides})


@dataclass
class BenchmarkResult:
    """Latency and throughput of each runtime, side by side.

    Attributes:
        rows: One dict a runtime and batch size: ``runtime``, ``label``,
            ``batch_size``, ``throughput_per_s``, and for batch 1 ``p50_us``,
            ``p99_us``, ``mean_us``.
        settings: The measurement settings, thread counts, BLAS configuration,
            versions and machine.
    """

    rows: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    def labels(self) -> list[str]:
        """The runtimes measured, in order."""
        return list(dict.fromkeys(row["label"] for row in self.rows))

    def get(self, label: str, batch_size: int) -> dict[str, Any] | None:
        """The row of one runtime and batch size, or ``None``."""
        for row in self.rows:
            if row["label"] == label and row["batch_size"] == batch_size:
                return row
        return None

    def ratio(self, label: str, reference: str, batch_size: int, *, measure: str = "throughput") -> float | None:
        """``label`` against ``reference``: throughput ratio, or cost ratio of batch-1 p50 latency.

        Args:
            label: The runtime.
            reference: The reference runtime (e.g. :data:`REFERENCE_RAW_ONNX`).
            batch_size: Batch size of the comparison.
            measure: ``"throughput"`` (higher is better, ``label / reference``)
                or ``"latency"`` (batch 1 p50, ``label / reference``: a cost,
                lower is better).

        Returns:
            The ratio, or ``None`` when either was not measured.
        """
        row, base = self.get(label, batch_size), self.get(reference, batch_size)
        if row is None or base is None:
            return None
        if measure == "latency":
            if row.get("p50_us") is None or base.get("p50_us") is None:
                return None
            return row["p50_us"] / base["p50_us"]
        return row["throughput_per_s"] / base["throughput_per_s"]

    def table(self) -> str:
        """A text table: batch-1 latency, throughput and GMAC/s, the ratios, and what was measured how.

        Above the table: the CPU model, the thread count of every runtime, and
        how the runtimes took turns. Ratio columns: ``b1 cost/raw ORT`` and
        ``b1 cost/numpy`` divide the runtime's batch-1 p50 latency by raw
        ``InferenceSession.run``'s and the NumPy reference's (1.0 = as fast,
        lower is better); ``@B /raw ORT`` and ``@B /numpy`` divide the
        throughput at the largest batch size ``B`` by the reference's (higher
        is better); ``b1 x predict`` is how many times faster than
        ``model.predict`` a batch-1 call is. ``GMAC/s`` is the model's
        multiply-adds an example times examples a second.

        Returns:
            The table as text, with its header and legend lines.
        """
        batch_sizes = sorted({row["batch_size"] for row in self.rows})
        largest = batch_sizes[-1]
        width = max(len(label) for label in self.labels())
        columns = [
            (f"GMAC/s @{batch_sizes[0]}", lambda label: (self.get(label, batch_sizes[0]) or {}).get("gmac_per_s"), 2),
            (f"GMAC/s @{largest}", lambda label: (self.get(label, largest) or {}).get("gmac_per_s"), 2),
            ("b1 cost/raw ORT", lambda label: self.ratio(label, REFERENCE_RAW_ONNX, 1, measure="latency"), 2),
            ("b1 cost/numpy", lambda label: self.ratio(label, REFERENCE_NUMPY, 1, measure="latency"), 2),
            (f"@{largest} /raw ORT", lambda label: self.ratio(label, REFERENCE_RAW_ONNX, largest), 2),
            (f"@{largest} /numpy", lambda label: self.ratio(label, REFERENCE_NUMPY, largest), 2),
            ("b1 x predict", lambda label: _inverse(self.ratio(label, REFERENCE_PREDICT, 1, measure="latency")), 0),
        ]
        settings = self.settings
        cpus = settings.get("machine", {}).get("cpu_count", "?")
        lines = [
            f"CPU: {settings.get('cpu_model', '?')} ({cpus} logical CPUs); "
            f"threads per runtime: {settings.get('thread_summary', settings.get('num_threads'))}",
            f"each runtime in its own process; {settings.get('num_rounds')} rounds, order: "
            f"{settings.get('order')}; {settings.get('macs_per_example') or 0:,} multiply-adds an example",
        ]
        header = f"{'runtime':<{width}}  {'p50 us':>8}  {'p99 us':>8}"
        header += "".join(f"  {'/s @' + str(b):>10}" for b in batch_sizes)
        header += "".join(f"  {title:>{len(title)}}" for title, _, _ in columns)
        lines.append(header)
        for label in self.labels():
            first = self.get(label, 1) or {}
            line = f"{label:<{width}}  {_fmt(first.get('p50_us'), 8, 1)}  {_fmt(first.get('p99_us'), 8, 1)}"
            for batch_size in batch_sizes:
                row = self.get(label, batch_size)
                line += f"  {_fmt(row['throughput_per_s'] if row else None, 10, 0)}"
            line += "".join(f"  {_fmt(value(label), len(title), digits)}" for title, value, digits in columns)
            lines.append(line)
        lines.append(
            "(batch-1 latency in microseconds; throughput in examples/s; cost = p50 / the reference's p50, "
            "lower is better; @B = throughput / the reference's, higher is better)"
        )
        lines.append(f"NumPy reference: {settings.get('numpy_reference_note', 'not measured')}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Rows, ratios and settings as JSON-ready data."""
        return {"rows": self.rows, "ratios": self.ratios(), "settings": self.settings}

    def ratios(self, *, batch1_only: bool = False) -> dict[str, dict[str, float | None]]:
        """Each runtime's ratios against the references.

        Args:
            batch1_only: Only the batch-1 latency costs against raw ONNX
                Runtime and NumPy (the headline numbers).

        Returns:
            ``{label: {name: ratio}}``; a ratio is ``None`` where a reference was not measured.
        """
        largest = max(row["batch_size"] for row in self.rows)
        ratios = {}
        for label in self.labels():
            ratios[label] = {
                "batch1_cost_vs_raw_onnxruntime": self.ratio(label, REFERENCE_RAW_ONNX, 1, measure="latency"),
                "batch1_cost_vs_numpy": self.ratio(label, REFERENCE_NUMPY, 1, measure="latency"),
            }
            if not batch1_only:
                ratios[label].update({
                    "batch1_cost_vs_model_predict": self.ratio(label, REFERENCE_PREDICT, 1, measure="latency"),
                    f"throughput{largest}_vs_raw_onnxruntime": self.ratio(label, REFERENCE_RAW_ONNX, largest),
                    f"throughput{largest}_vs_numpy": self.ratio(label, REFERENCE_NUMPY, largest),
                })  # fmt: skip
        return ratios

    def plot(self, axes: Any = None) -> Any:
        """Throughput against batch size (log-log) and batch-1 latency (p50 with p99).

        Args:
            axes: Two matplotlib axes (default: a new figure).

        Returns:
            The matplotlib figure.
        """
        import matplotlib.pyplot as plt

        if axes is None:
            figure, axes = plt.subplots(1, 2, figsize=(13, 5))
        else:
            figure = axes[0].figure
        throughput_axis, latency_axis = axes
        for label in self.labels():
            rows = sorted((row for row in self.rows if row["label"] == label), key=lambda row: row["batch_size"])
            style = "--" if label == REFERENCE_NUMPY else "-"
            throughput_axis.plot(
                [row["batch_size"] for row in rows],
                [row["throughput_per_s"] for row in rows],
                style,
                marker="o",
                label=label,
            )
        throughput_axis.set(xscale="log", yscale="log", xlabel="batch size", ylabel="examples / s")
        throughput_axis.set_title("Throughput (higher is better)")
        throughput_axis.grid(True, which="both", alpha=0.3)
        measured = [(label, self.get(label, 1)) for label in self.labels()]
        measured = [(label, row) for label, row in measured if row and row.get("p50_us") is not None]
        names = [label for label, _ in measured]
        p50 = np.array([row["p50_us"] for _, row in measured])
        p99 = np.array([row["p99_us"] for _, row in measured])
        latency_axis.barh(names, p50, xerr=[np.zeros_like(p50), p99 - p50], color="tab:blue", alpha=0.8)
        latency_axis.set(xscale="log", xlabel="microseconds (bar: p50, whisker: p99)")
        latency_axis.set_title("Batch-1 latency (lower is better)")
        latency_axis.invert_yaxis()
        # The legend goes under both plots, where it covers no line or bar.
        handles, names = throughput_axis.get_legend_handles_labels()
        figure.legend(handles, names, loc="lower center", ncol=4, fontsize="small", frameon=False)
        figure.tight_layout(rect=(0, 0.12, 1, 1))
        return figure

    def save(self, out_dir: str | os.PathLike, *, name: str = "runtimes") -> dict[str, Path]:
        """Write ``<name>.csv``, ``<name>.json`` and ``<name>.png`` into ``out_dir`` (atomically).

        Args:
            out_dir: Target folder (created if needed).
            name: Base name of the files.

        Returns:
            ``{"csv": path, "json": path, "png": path}``.
        """
        out_dir = Path(out_dir)
        columns = [
            "label",
            "runtime",
            "batch_size",
            "throughput_per_s",
            "p50_us",
            "p99_us",
            "mean_us",
            "calls",
        ]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        paths = {
            "csv": artifacts.write_bytes(out_dir / f"{name}.csv", buffer.getvalue().encode()),
            "json": artifacts.write_json(out_dir / f"{name}.json", self.to_dict()),
        }
        import matplotlib.pyplot as plt

        figure = self.plot()
        with artifacts.atomic_path(out_dir / f"{name}.png") as temporary:
            figure.savefig(temporary, dpi=120)
        plt.close(figure)
        paths["png"] = out_dir / f"{name}.png"
        return paths


def _inverse(value: float | None) -> float | None:
    return None if value is None or value == 0 else 1.0 / value


def _fmt(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width},.{digits}f}"


def benchmark(
    sources: Sequence[Any],
    settings: BenchmarkSettings | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Measure batch-1 latency and throughput of several runtimes, each in its own process.

    Every runtime gets the same random inputs (uniform in [0, 1), the model's
    input shape, the same seed), untimed warm-up calls, and the same thread
    count (see the module docstring). Beside the predictors it measures three
    references when it can: ``model.predict`` of a tf-keras model among
    ``sources``, a plain ``onnxruntime.InferenceSession.run`` on an ONNX file
    among ``sources`` (same session options and providers as the predictor),
    and a NumPy chain of the matrix multiplications the model's layers do
    (convolutions as their im2col-sized products). Introduced in
    ``06_conversion.ipynb``; ``aideploy bench`` and ``benchmarks/runtimes.py``
    call it.

    Args:
        sources: Model paths, tf-keras models or predictors (all of one model,
            in different formats).
        settings: How long to measure (default: :meth:`BenchmarkSettings.for_mode`).
        progress: Called with a line of text as each runtime is measured.

    Returns:
        The :class:`BenchmarkResult`.

    Raises:
        ArtifactError: A source cannot be loaded (the worker's message is included).
        ConfigError: No source, or the sources disagree on the input shape.
    """
    settings = settings or BenchmarkSettings.for_mode()
    say = progress or (lambda line: None)
    if not sources:
        raise ConfigError("nothing to benchmark: pass at least one model.")
    with tempfile.TemporaryDirectory(prefix="aideploy-bench-") as scratch:
        entries = bench_worker.plan(
            [bench_worker.source_path(source, Path(scratch), index) for index, source in enumerate(sources)]
        )
        workers: dict[str, bench_worker.WorkerProcess] = {}
        try:
            say(f"starting {len(entries)} worker processes")
            for label, spec in entries:
                workers[label] = bench_worker.WorkerProcess(
                    label, {**spec, **bench_worker.settings_of(settings)}, scratch
                )
            for worker in workers.values():
                worker.wait_ready()
            shapes = {tuple(w.ready["input_shape"]) for w in workers.values()}
            if len(shapes) != 1:
                raise ConfigError(
                    f"the models take different input shapes {sorted(shapes)}: benchmark one model at a time."
                )
            input_shape = next(iter(shapes))
            layers = next((w.ready["layers"] for w in workers.values() if w.ready.get("layers")), None)
            onnx_path = next((spec["source"] for _, spec in entries if spec["runtime"] == "onnxruntime"), None)
            if layers is None and onnx_path is not None:
                layers = bench_worker.onnx_layers(onnx_path)
            if layers:
                dtype = next(iter(workers.values())).ready["dtype"]
                spec = {"kind": "numpy", "runtime": "numpy", "source": None, "layers": layers,
                        "input_shape": list(input_shape), "dtype": dtype}  # fmt: skip
                workers[REFERENCE_NUMPY] = bench_worker.WorkerProcess(
                    REFERENCE_NUMPY, {**spec, **bench_worker.settings_of(settings)}, scratch, numpy_reference=True
                )
                workers[REFERENCE_NUMPY].wait_ready()
            labels = list(workers)
            schedule = measurement_order(labels, settings.order, settings.num_rounds, settings.seed)
            samples: dict[str, list[float]] = {label: [] for label in labels}
            sequence: list[str] = []  # the order the workers really measured in
            totals = {(label, b): [0, 0.0] for label in labels for b in settings.batch_sizes}
            per_round_calls = max(1, settings.latency_calls // settings.num_rounds)
            command = {"cmd": "measure", "latency_calls": per_round_calls,
                       "latency_max_seconds": settings.latency_max_seconds,
                       "throughput_seconds": settings.throughput_seconds,
                       "batch_sizes": list(settings.batch_sizes),
                       "rewarm_calls": max(1, settings.warmup_calls // 4)}  # fmt: skip
            for round_index, order in enumerate(schedule):
                for label in order:
                    say(f"round {round_index + 1}/{settings.num_rounds}: {label}")
                    measured = workers[label].measure(command)
                    sequence.append(label)
                    samples[label].extend(measured["latency_s"])
                    for batch_size in settings.batch_sizes:
                        count, seconds = measured["throughput"][str(batch_size)]
                        totals[(label, batch_size)][0] += count
                        totals[(label, batch_size)][1] += seconds
        finally:
            for worker in workers.values():
                worker.stop()
    macs = macs_per_example(layers or [])
    runtimes = {label: spec["runtime"] for label, spec in entries}
    runtimes[REFERENCE_NUMPY] = "numpy"
    rows = []
    for label in labels:
        latencies = np.array(samples[label]) * 1e6
        for batch_size in settings.batch_sizes:
            count, seconds = totals[(label, batch_size)]
            per_second = batch_size * count / seconds
            row: dict[str, Any] = {
                "label": label,
                "runtime": runtimes[label],
                "batch_size": batch_size,
                "throughput_per_s": per_second,
                "gmac_per_s": per_second * macs / 1e9 if macs else None,
                "calls": int(count),
                "p50_us": None,
                "p99_us": None,
                "mean_us": None,
            }
            if batch_size == 1:
                row.update(
                    p50_us=float(np.percentile(latencies, 50)),
                    p99_us=float(np.percentile(latencies, 99)),
                    mean_us=float(latencies.mean()),
                    latency_calls=len(latencies),
                )
            rows.append(row)
    described = _environment(settings, workers, layers or [], macs)
    described["schedule"] = schedule
    described["measured_sequence"] = sequence
    return BenchmarkResult(rows=rows, settings=described)


def measurement_order(labels: Sequence[str], order: str, num_rounds: int, seed: int = 0) -> list[list[str]]:
    """The order in which the runtimes take their turns, round by round.

    Introduced in ``06_conversion.ipynb``.

    Args:
        labels: The runtimes, in their natural order (references first and last).
        order: ``"forward"`` (that order every round), ``"reverse"`` (the
            opposite order every round) or ``"shuffled"`` (a fresh random
            order each round, from ``seed``).
        num_rounds: Rounds.
        seed: Seed of the shuffles.

    Returns:
        One list of labels a round.

    Raises:
        ConfigError: ``order`` is not one of :data:`ORDERS`.
    """
    if order not in ORDERS:
        raise ConfigError(f"unknown order {order!r}: use one of {', '.join(ORDERS)}.")
    generator = random.Random(seed)
    rounds = []
    for _ in range(num_rounds):
        turn = list(labels) if order != "reverse" else list(reversed(labels))
        if order == "shuffled":
            generator.shuffle(turn)
        rounds.append(turn)
    return rounds


def macs_per_example(layers: Sequence[Sequence[int]]) -> int:
    """Multiply-adds a model does for one example, from its matrix products.

    Introduced in ``06_conversion.ipynb``.

    Args:
        layers: ``(rows per example, inner size, outputs)`` a product (Dense:
            ``(1, k, n)``; Conv2D: ``(output positions, kh * kw * c_in, c_out)``).

    Returns:
        The sum of ``rows * inner * outputs`` (the MLP's is 54,912).
    """
    return int(sum(rows * inner * outputs for rows, inner, outputs in layers))


def cpu_model() -> str:
    """The CPU's model name, from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere).

    Introduced in ``06_conversion.ipynb`` (the benchmark prints it).

    Returns:
        For example ``"AMD EPYC"``; ``"unknown"`` when nothing says.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@dataclass(frozen=True)
class Latency:
    """Latency of repeated calls on one input.

    Attributes:
        p50_us: Median, in microseconds.
        p99_us: 99th percentile, in microseconds.
        mean_us: Mean, in microseconds.
        num_calls: Timed calls.
    """

    p50_us: float
    p99_us: float
    mean_us: float
    num_calls: int


def measure_latency(
    call: Callable[[np.ndarray], Any],
    x: np.ndarray,
    *,
    num_calls: int = 200,
    warmup_calls: int = 10,
    max_seconds: float = 2.0,
) -> Latency:
    """Time ``call(x)`` repeatedly: the one latency-measuring function of aideploy.

    The benchmark (:func:`benchmark`) and the latency objective of tuning
    (``aideploy.tune``) both measure through it. Introduced in
    ``06_conversion.ipynb``.

    Args:
        call: What to time, e.g. ``predictor.predict``.
        x: The input it is called with (batch 1 for a latency).
        num_calls: Timed calls at most.
        warmup_calls: Untimed calls first (tracing, caches, thread pools).
        max_seconds: Stop early once this much time has passed (after 10 calls).

    Returns:
        The :class:`Latency`.

    Raises:
        ConfigError: ``num_calls`` is below 10 or ``warmup_calls`` is negative.
    """
    if num_calls < 10 or warmup_calls < 0:
        raise ConfigError(
            f"measure at least 10 calls with 0 or more warm-up calls, got {num_calls} and {warmup_calls}."
        )
    for _ in range(warmup_calls):
        call(x)
    microseconds = np.array(bench_worker.latency_samples(call, x, num_calls, max_seconds)) * 1e6
    return Latency(
        p50_us=float(np.percentile(microseconds, 50)),
        p99_us=float(np.percentile(microseconds, 99)),
        mean_us=float(microseconds.mean()),
        num_calls=len(microseconds),
    )


def blas_info() -> dict[str, Any]:
    """NumPy's BLAS library and thread count (threadpoolctl if installed, else ``numpy.show_config``).

    Introduced in ``06_conversion.ipynb`` (the benchmark records it).

    Returns:
        ``{"summary": str, "details": ...}``; ``OPENBLAS_CORETYPE`` and the other
        ``OPENBLAS_*`` / ``OMP_NUM_THREADS`` variables are included because they
        change NumPy's speed.
    """
    environment = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "MKL_"))}
    try:
        import threadpoolctl

        pools = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
        details: Any = pools
        summary = ", ".join(
            f"{p.get('internal_api')} {p.get('version')} {p.get('architecture', '')} "
            f"{p.get('num_threads')} threads".replace("  ", " ")
            for p in pools
        )
    except ImportError:
        config_info = np.show_config(mode="dicts")
        details = config_info.get("Build Dependencies", {}).get("blas", {})
        summary = f"{details.get('name', '?')} {details.get('version', '')}"
    if "OPENBLAS_CORETYPE" in environment:
        summary += f" (OPENBLAS_CORETYPE={environment['OPENBLAS_CORETYPE']})"
    return {"summary": summary, "details": details, "environment": environment}


def _environment(
    settings: BenchmarkSettings,
    workers: dict[str, bench_worker.WorkerProcess],
    layers: list[list[int]],
    macs: int,
) -> dict[str, Any]:
    """Settings, what each worker reported (threads, BLAS, environment), versions and machine."""
    from importlib import metadata

    reports = {
        label: {key: worker.ready.get(key) for key in ("pid", "threads", "environment", "blas", "metadata")}
        for label, worker in workers.items()
    }
    named = {"onnxruntime_intra_op": "ONNX Runtime", "litert": "LiteRT", "tensorflow_intra_op": "TensorFlow intra-op",
             "tensorflow_inter_op": "inter-op", "blas": "BLAS"}  # fmt: skip
    seen: dict[str, set] = {}
    for report in reports.values():
        for key, value in report["threads"].items():
            if key in named:
                seen.setdefault(named[key], set()).update(value if isinstance(value, list) else [value])
    thread_summary = (
        f"{settings.num_threads if settings.num_threads is not None else 'defaults'} ("
        + ", ".join(f"{name} {'/'.join(str(v) for v in sorted(values, key=str))}" for name, values in seen.items())
        + ")"
    )
    pinned = {name: value for name, value in os.environ.items() if name in bench_worker.OPENBLAS_PINNING}
    numpy_report = reports.get(REFERENCE_NUMPY)
    note = "not measured"
    if numpy_report is not None:
        unset = all(value is None for value in numpy_report["environment"].values())
        blas = ", ".join(
            f"{pool['internal_api']} {pool['version']} {pool['architecture']} {pool['num_threads']} thread(s)"
            for pool in numpy_report["blas"] if pool.get("user_api") == "blas"
        )  # fmt: skip
        note = (
            f"{' and '.join(bench_worker.OPENBLAS_PINNING)} {'unset' if unset else 'SET'} in its process only "
            f"(this process: {', '.join(f'{k}={v}' for k, v in pinned.items()) or 'neither set'}); BLAS: {blas}"
        )
    versions = {}
    for package in ("numpy", "onnxruntime", "ai-edge-litert", "tensorflow", "tf-keras"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        **asdict(settings),
        "cpu_model": cpu_model(),
        "macs_per_example": macs,
        "numpy_reference_layers": [list(layer) for layer in layers],
        "thread_summary": thread_summary,
        "threads_reported": {name: sorted(values, key=str) for name, values in seen.items()},
        "numpy_reference_note": note,
        "blas_summary": note if numpy_report is not None else blas_info()["summary"],
        "environment": pinned,
        "workers": reports,
        "versions": versions,
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "fast_mode": config.fast_mode(),
    }
