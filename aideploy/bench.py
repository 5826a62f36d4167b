"""Stage 06, benchmark: latency and throughput of every runtime, side by side in one process.

Notebook: ``notebooks/06_conversion.ipynb``. Command: ``aideploy bench``; script:
``benchmarks/runtimes.py``.

:func:`benchmark` measures batch-1 latency (p50, p99) and throughput at several
batch sizes for each :mod:`aideploy.runtime` predictor of one model, on the same
inputs and thread settings, next to three references: ``model.predict`` of the
tf-keras model, a raw ``onnxruntime.InferenceSession.run`` (what the predictor
wraps) and a plain NumPy chain of the model's matrix multiplications, which
shows how close each runtime gets to what the machine can do.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aideploy import artifacts, config
from aideploy.errors import ConfigError
from aideploy.runtime import (
    KerasPredictor,
    OnnxPredictor,
    Predictor,
    SavedModelPredictor,
    check_threads,
    load,
)

#: Batch sizes of the throughput benchmark.
DEFAULT_BATCH_SIZES = (1, 32, 256, 4096)
REFERENCE_PREDICT = "keras model.predict"
REFERENCE_RAW_ONNX = "raw InferenceSession.run"
REFERENCE_NUMPY = "numpy matmul reference"


@dataclass(frozen=True)
class BenchmarkSettings:
    """How long and how often to measure.

    Attributes:
        batch_sizes: Batch sizes of the throughput measurements.
        num_threads: Threads given to ONNX Runtime and LiteRT (``None``: their defaults).
        latency_calls: Timed batch-1 calls a runtime, over all rounds.
        latency_max_seconds: Cap on the batch-1 latency time a runtime and round
            (``model.predict`` takes milliseconds a call).
        throughput_seconds: Time a runtime, batch size and round.
        num_rounds: Rounds; each round measures every runtime in turn, so slow
            drifts of the machine affect all of them alike.
        warmup_calls: Untimed calls before each measurement.
        seed: Seed of the random inputs.
    """

    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    num_threads: int | None = 1
    latency_calls: int = 2000
    latency_max_seconds: float = 2.0
    throughput_seconds: float = 0.5
    num_rounds: int = 3
    warmup_calls: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch sizes must be positive whole numbers, got {self.batch_sizes}.")
        if self.num_threads is not None:
            check_threads(self.num_threads)
        if self.latency_calls < 10 or self.num_rounds < 1:
            raise ConfigError("latency_calls must be at least 10 and num_rounds at least 1.")

    @classmethod
    def for_mode(cls, **overrides: Any) -> BenchmarkSettings:
        """Fast-mode settings (a few seconds) or full-mode settings (about a minute for the MLP)."""
        base = cls(
            latency_calls=config.fast_or_full(200, 2000),
            latency_max_seconds=config.fast_or_full(0.3, 2.0),
            throughput_seconds=config.fast_or_full(0.05, 0.5),
            num_rounds=config.fast_or_full(2, 3),
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

    def ratio(
        self, label: str, reference: str, batch_size: int, *, measure: str = "throughput"
    ) -> float | None:
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
        """A text table: batch-1 latency, throughput at each batch size, and the ratios.

        Ratio columns: ``b1 speed-up/predict`` is ``model.predict``'s batch-1 p50
        latency divided by the runtime's (how many times faster); ``b1 cost/raw
        ORT`` is the runtime's batch-1 p50 latency divided by raw
        ``InferenceSession.run``'s (1.0 = no overhead); ``@B /predict``, ``@B /raw
        ORT`` and ``@B /numpy`` divide the throughput at the largest batch size
        ``B`` by that reference's.

        Returns:
            The table as text, with a legend line.
        """
        batch_sizes = sorted({row["batch_size"] for row in self.rows})
        largest = batch_sizes[-1]
        width = max(len(label) for label in self.labels())
        columns = [
            (
                "b1 speed-up/predict",
                lambda label: _inverse(self.ratio(label, REFERENCE_PREDICT, 1, measure="latency")),
                0,
            ),
            ("b1 cost/raw ORT", lambda label: self.ratio(label, REFERENCE_RAW_ONNX, 1, measure="latency"), 2),
            (f"@{largest} /predict", lambda label: self.ratio(label, REFERENCE_PREDICT, largest), 1),
            (f"@{largest} /raw ORT", lambda label: self.ratio(label, REFERENCE_RAW_ONNX, largest), 2),
            (f"@{largest} /numpy", lambda label: self.ratio(label, REFERENCE_NUMPY, largest), 2),
        ]
        header = f"{'runtime':<{width}}  {'p50 us':>8}  {'p99 us':>8}"
        header += "".join(f"  {'/s @' + str(b):>10}" for b in batch_sizes)
        header += "".join(f"  {title:>{len(title)}}" for title, _, _ in columns)
        lines = [header]
        for label in self.labels():
            first = self.get(label, 1) or {}
            line = f"{label:<{width}}  {_fmt(first.get('p50_us'), 8, 1)}  {_fmt(first.get('p99_us'), 8, 1)}"
            for batch_size in batch_sizes:
                row = self.get(label, batch_size)
                line += f"  {_fmt(row['throughput_per_s'] if row else None, 10, 0)}"
            line += "".join(f"  {_fmt(value(label), len(title), digits)}" for title, value, digits in columns)
            lines.append(line)
        threads = self.settings.get("num_threads")
        lines.append(
            f"(batch-1 latency in microseconds; throughput in examples/s; runtime threads: "
            f"{threads if threads is not None else 'defaults'}; "
            f"BLAS: {self.settings.get('blas_summary', '?')})"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Rows, ratios and settings as JSON-ready data."""
        largest = max(row["batch_size"] for row in self.rows)
        ratios = {
            label: {
                "batch1_cost_vs_model_predict": self.ratio(label, REFERENCE_PREDICT, 1, measure="latency"),
                "batch1_cost_vs_raw_onnxruntime": self.ratio(label, REFERENCE_RAW_ONNX, 1, measure="latency"),
                f"throughput{largest}_vs_model_predict": self.ratio(label, REFERENCE_PREDICT, largest),
                f"throughput{largest}_vs_raw_onnxruntime": self.ratio(label, REFERENCE_RAW_ONNX, largest),
                f"throughput{largest}_vs_numpy": self.ratio(label, REFERENCE_NUMPY, largest),
            }
            for label in self.labels()
        }
        return {"rows": self.rows, "ratios": ratios, "settings": self.settings}

    def plot(self, axes: Any = None) -> Any:
        """Throughput against batch size (log-log) and batch-1 latency (p50 with p99).

        Args:
            axes: Two matplotlib axes (default: a new figure).

        Returns:
            The matplotlib figure.
        """
        import matplotlib.pyplot as plt

        if axes is None:
            figure, axes = plt.subplots(1, 2, figsize=(13, 4.5))
        else:
            figure = axes[0].figure
        throughput_axis, latency_axis = axes
        for label in self.labels():
            rows = sorted(
                (row for row in self.rows if row["label"] == label), key=lambda row: row["batch_size"]
            )
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
        throughput_axis.legend(fontsize="small")
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
        figure.tight_layout()
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
    """Measure batch-1 latency and throughput of several runtimes in one process.

    Every runtime gets the same random inputs (uniform in [0, 1), the model's
    input shape), untimed warm-up calls, and the same thread setting. Beside
    the predictors it measures three references when it can: ``model.predict``
    of a tf-keras model among ``sources``, a plain
    ``onnxruntime.InferenceSession.run`` on an ONNX file among ``sources`` (same
    session options and providers as the predictor), and a NumPy chain of the
    matrix multiplications the model's layers do (convolutions as their
    im2col-sized products), which shows how close a runtime gets to the machine.
    Introduced in ``06_conversion.ipynb``; ``aideploy bench`` and
    ``benchmarks/runtimes.py`` call it.

    Args:
        sources: Model paths, tf-keras models or predictors (all of one model,
            in different formats).
        settings: How long to measure (default: :meth:`BenchmarkSettings.for_mode`).
        progress: Called with a line of text as each runtime is measured.

    Returns:
        The :class:`BenchmarkResult`.

    Raises:
        ArtifactError: A source cannot be loaded.
        ConfigError: The sources disagree on the input shape.
    """
    settings = settings or BenchmarkSettings.for_mode()
    say = progress or (lambda line: None)
    predictors = [load(source, num_threads=settings.num_threads) for source in sources]
    if not predictors:
        raise ConfigError("nothing to benchmark: pass at least one model.")
    trailing = {tuple(p.input.shape[1:]) for p in predictors}
    if len(trailing) != 1:
        raise ConfigError(
            f"the models take different input shapes {sorted(trailing)}: benchmark one model at a time."
        )
    input_shape = next(iter(trailing))
    dtype = np.dtype(predictors[0].input.dtype)
    generator = np.random.default_rng(settings.seed)
    inputs = {
        batch_size: generator.random((batch_size, *input_shape), dtype=np.float64).astype(dtype)
        for batch_size in sorted(set(settings.batch_sizes) | {1})
    }

    calls: list[tuple[str, str, Callable[[np.ndarray], Any]]] = []
    keras_predictor = next((p for p in predictors if isinstance(p, KerasPredictor)), None)
    onnx_predictor = next((p for p in predictors if isinstance(p, OnnxPredictor)), None)
    if keras_predictor is not None:
        model = keras_predictor.model
        calls.append((REFERENCE_PREDICT, "keras", lambda x: model.predict(x, batch_size=len(x), verbose=0)))
    for predictor in predictors:
        label = f"aideploy {predictor.runtime}"
        if any(existing == label for existing, _, _ in calls):
            label = f"{label} ({predictor.path.name if predictor.path else len(calls)})"
        calls.append((label, predictor.runtime, predictor.predict))
        if predictor is onnx_predictor:
            calls.append((REFERENCE_RAW_ONNX, "onnxruntime", _raw_onnx_call(onnx_predictor)))
    layers = _reference_layers(keras_predictor, onnx_predictor)
    if layers:
        calls.append((REFERENCE_NUMPY, "numpy", _numpy_reference_call(layers, input_shape, settings.seed)))

    for _label, _, call in calls:
        for batch_size in inputs:
            for _ in range(settings.warmup_calls if batch_size == 1 else 2):
                call(inputs[batch_size])

    samples: dict[str, list[float]] = {label: [] for label, _, _ in calls}
    totals: dict[tuple[str, int], list[float]] = {
        (label, batch_size): [0, 0.0] for label, _, _ in calls for batch_size in settings.batch_sizes
    }
    per_round_calls = max(1, settings.latency_calls // settings.num_rounds)
    for round_index in range(settings.num_rounds):
        for label, _, call in calls:
            say(f"round {round_index + 1}/{settings.num_rounds}: {label}")
            samples[label].extend(
                _latency_samples(call, inputs[1], per_round_calls, settings.latency_max_seconds)
            )
            for batch_size in settings.batch_sizes:
                count, seconds = _throughput(call, inputs[batch_size], settings.throughput_seconds)
                totals[(label, batch_size)][0] += count
                totals[(label, batch_size)][1] += seconds

    rows = []
    for label, runtime_name, _ in calls:
        latencies = np.array(samples[label]) * 1e6
        for batch_size in settings.batch_sizes:
            count, seconds = totals[(label, batch_size)]
            row: dict[str, Any] = {
                "label": label,
                "runtime": runtime_name,
                "batch_size": batch_size,
                "throughput_per_s": batch_size * count / seconds,
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
    return BenchmarkResult(rows=rows, settings=_environment(settings, predictors, layers))


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
    microseconds = np.array(_latency_samples(call, x, num_calls, max_seconds)) * 1e6
    return Latency(
        p50_us=float(np.percentile(microseconds, 50)),
        p99_us=float(np.percentile(microseconds, 99)),
        mean_us=float(microseconds.mean()),
        num_calls=len(microseconds),
    )


def _latency_samples(
    call: Callable[[np.ndarray], Any], x: np.ndarray, calls: int, max_seconds: float
) -> list[float]:
    timer = time.perf_counter
    samples = []
    deadline = timer() + max_seconds
    for _ in range(calls):
        started = timer()
        call(x)
        finished = timer()
        samples.append(finished - started)
        if finished > deadline and len(samples) >= 10:
            break
    return samples


def _throughput(call: Callable[[np.ndarray], Any], x: np.ndarray, seconds: float) -> tuple[int, float]:
    timer = time.perf_counter
    count = 0
    started = timer()
    elapsed = 0.0
    while count < 3 or elapsed < seconds:
        call(x)
        count += 1
        elapsed = timer() - started
    return count, elapsed


def _raw_onnx_call(predictor: OnnxPredictor) -> Callable[[np.ndarray], Any]:
    """A plain session on the same file, options and providers: what a hand-written server would call."""
    import onnxruntime

    session = onnxruntime.InferenceSession(
        os.fspath(predictor.path), predictor.session_options, providers=predictor.providers
    )
    input_name = session.get_inputs()[0].name
    output_names = [session.get_outputs()[0].name]
    return lambda x: session.run(output_names, {input_name: x})


def _reference_layers(
    keras_predictor: KerasPredictor | None, onnx_predictor: OnnxPredictor | None
) -> list[tuple[int, int, int]]:
    """The model's matrix products as ``(rows per example, inner size, outputs)``.

    A Dense layer ``k -> n`` is one ``(1, k, n)`` product; a Conv2D layer is an
    im2col product with one row per output position and ``kh * kw * c_in``
    inner size. Read from the tf-keras model when there is one, otherwise from
    the ONNX graph's MatMul / Gemm weights (dense models).
    """
    layers: list[tuple[int, int, int]] = []
    if keras_predictor is not None:
        for layer in keras_predictor.model.layers:
            inner = getattr(layer, "layer", layer)  # pruning / QAT wrappers
            kind = type(inner).__name__
            if kind == "Dense":
                layers.append((1, int(inner.kernel.shape[0]), int(inner.kernel.shape[1])))
            elif kind == "Conv2D":
                kernel_h, kernel_w, channels_in, channels_out = (int(d) for d in inner.kernel.shape)
                _, out_h, out_w, _ = layer.output_shape
                layers.append((int(out_h) * int(out_w), kernel_h * kernel_w * channels_in, channels_out))
        return layers
    if onnx_predictor is not None:
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(os.fspath(onnx_predictor.path)).graph
        weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in graph.node:
            if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in weights:
                weight = weights[node.input[1]]
                if weight.ndim == 2:
                    layers.append((1, int(weight.shape[0]), int(weight.shape[1])))
            elif node.op_type == "Conv":
                return []  # spatial sizes would need shape inference: no reference
    return layers


def _numpy_reference_call(
    layers: list[tuple[int, int, int]], input_shape: tuple[int, ...], seed: int
) -> Callable[[np.ndarray], Any]:
    """``relu(a @ w)`` for each product, chained where the shapes chain; weights are random.

    The values do not matter for speed; the shapes do. Operand arrays for each
    batch size are built on the first call, outside the timed loop's steady state.
    """
    generator = np.random.default_rng(seed)
    weights = [generator.random((inner, outputs), dtype=np.float32) for _, inner, outputs in layers]
    operands: dict[int, list[np.ndarray]] = {}

    def call(x: np.ndarray) -> np.ndarray:
        batch_size = x.shape[0]
        if batch_size not in operands:
            operands[batch_size] = [
                generator.random((batch_size * rows, inner), dtype=np.float32) for rows, inner, _ in layers
            ]
        hidden = x.reshape(batch_size, -1) if layers and layers[0][0] == 1 else None
        for (rows, inner, _), weight, operand in zip(layers, weights, operands[batch_size], strict=True):
            source = hidden if hidden is not None and hidden.shape == (batch_size * rows, inner) else operand
            hidden = source @ weight
            np.maximum(hidden, 0, out=hidden)
        return hidden

    return call


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
    settings: BenchmarkSettings, predictors: list[Predictor], layers: list[tuple[int, int, int]]
) -> dict[str, Any]:
    import onnxruntime

    blas = blas_info()
    described: dict[str, Any] = {
        **asdict(settings),
        "blas_summary": blas["summary"],
        "blas": blas,
        "numpy_reference_layers": [list(layer) for layer in layers],
        "predictors": [p.metadata() for p in predictors],
        "versions": {"numpy": np.__version__, "onnxruntime": onnxruntime.__version__},
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "fast_mode": config.fast_mode(),
    }
    if any(isinstance(p, (KerasPredictor, SavedModelPredictor)) for p in predictors):
        from aideploy.backend import tf

        described["versions"]["tensorflow"] = tf.__version__
        described["tensorflow_threads"] = {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        }
    return described
