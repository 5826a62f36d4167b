"""Stage 05, the comparison: every pruned, clustered and quantized variant of one model, measured in one run.

Notebook: ``notebooks/05_quantization.ipynb`` (``04_pruning.ipynb`` shows the pruning rows).

Two steps, each a thin layer over the helpers of :mod:`aideploy.prune`,
:mod:`aideploy.quantize`, :mod:`aideploy.convert`, :mod:`aideploy.runtime` and
:mod:`aideploy.bench`:

- :func:`build_variants` writes every variant of one trained model into one
  folder, each with its manifest, and skips a variant whose file is already
  there and matches its manifest (so an interrupted run resumes);
- :func:`compare` measures every variant the same way: accuracy on the whole
  test set given and its change from the baseline in percentage points, the file
  size raw and gzip-compressed and their ratios to the baseline's, batch-1
  latency (p50, p99) and throughput at batch 256 in the variant's own runtime,
  through :func:`aideploy.bench.measure_latency`, every runtime with the same
  thread count. The result, a :class:`Comparison`, prints as a table, saves as
  CSV and JSON and plots accuracy against size and against latency with the
  Pareto front marked.

The variants (file names for a source ``mlp.keras``):

=============================  ==========================================================
``mlp.fp32.keras``             the baseline: the source's weights, no optimizer state
``mlp.onnx``                   ONNX float32 (tf2onnx)
``mlp.tflite``                 TFLite float32
``mlp.dynamic.tflite``         TFLite dynamic range (int8 weights, float activations)
``mlp.float16.tflite``         TFLite float16 weights
``mlp.int8.tflite``            TFLite full integer (int8 weights and activations)
``mlp.int16x8.tflite``         TFLite int16 activations, int8 weights
``mlp.ort-dynamic.onnx``       ONNX Runtime dynamic quantization
``mlp.ort-static.onnx``        ONNX Runtime static int8 (QDQ, MinMax calibration)
``mlp.prune80.tflite``         magnitude-pruned to 80% (one file a sparsity), float32
``mlp.prune24.tflite``         2:4 structured sparsity, float32
``mlp.cluster16.tflite``       16 clusters a kernel, float32
``mlp.prune80-int8.tflite``    the 80% pruned model after pruning-preserving QAT, int8
``mlp.qat.tflite``             quantization-aware training, TFLite int8
``mlp.qat.onnx``               the same QAT model as an ONNX QDQ graph
=============================  ==========================================================

Pruned variants fine-tune for :data:`PRUNE_EPOCHS` epochs, QAT and
pruning-preserving QAT for two, clustering for one (one each in fast mode).
Pruned and clustered models are compared as float32 TFLite files: the
``.keras`` files they are saved as (beside them, for provenance) carry a zip
container and the model's configuration, which would blur what the weights
alone compress to.

Latency is measured in this one process, variant after variant, over several
rounds in a fresh random order each round (:func:`aideploy.bench.measurement_order`),
so no variant gains from its place in the order. :func:`aideploy.bench.benchmark`
measures each runtime in a process of its own instead, which matters for small
models: once TensorFlow has run in a process, an ONNX Runtime call there costs up
to twice as much at batch 1. The comparison shares that handicap among all ONNX
variants alike; compare runtimes with ``aideploy bench``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aideploy import artifacts, bench, config
from aideploy.errors import ArtifactError, ConfigError

#: Fine-tuning epochs of the pruned variants in full mode. Measured on the MLP at
#: 80% sparsity (test accuracy against the dense model's 0.8830): 2 epochs lost
#: 2.19 points, 6 epochs 1.23, 10 epochs 0.37. The network needs the steps after
#: the ramp (the last 30%) to recover from the weights it lost.
PRUNE_EPOCHS = 10
#: Batch size of the throughput column.
THROUGHPUT_BATCH_SIZE = 256
#: Columns of :attr:`Comparison.rows`, in the order of the CSV file.
COLUMNS = (
    "variant",
    "method",
    "runtime",
    "path",
    "test_accuracy",
    "accuracy_change_pp",
    "size_bytes",
    "gzip_bytes",
    "size_ratio",
    "gzip_ratio",
    "p50_us",
    "p99_us",
    f"throughput_per_s_at_{THROUGHPUT_BATCH_SIZE}",
)
_THROUGHPUT = f"throughput_per_s_at_{THROUGHPUT_BATCH_SIZE}"


# --- the variants -------------------------------------------------------------------


def build_variants(
    source: Any,
    splits: Any = None,
    out_dir: str | os.PathLike | None = None,
    *,
    sparsities: Sequence[float] | None = None,
    num_clusters: int = 16,
    calibration_size: int | None = None,
    progress: bool | Callable[[str], None] = True,
) -> list[Path]:
    """Write every pruned, clustered and quantized variant of one trained model, each with its manifest.

    The list of variants is in the module docstring. Pruned + int8 is
    pruning-preserving quantization-aware training of the 80% pruned model
    (tfmot's ``Default8BitPrunePreserveQuantizeScheme``, then TFLite int8), so
    the zeros of pruning survive quantization and the savings compound. A
    variant whose file exists and matches its manifest (SHA-256) is kept as it
    is, so a second call resumes where an interrupted one stopped. Introduced
    in ``05_quantization.ipynb``.

    Args:
        source: A trained tf-keras model or the path of its ``.keras`` file.
        splits: Data for fine-tuning and calibration (default:
            :func:`aideploy.data.load_splits` for the model's kind).
        out_dir: Folder of the variants (default: ``<artifacts>/variants``).
        sparsities: Pruning targets, each in (0, 1) (default: 0.5 and 0.8 in
            fast mode, :data:`aideploy.prune.DEFAULT_SPARSITIES` otherwise).
            Pruned + int8 starts from 0.8, which is always built.
        num_clusters: Distinct values a kernel keeps in the clustered variant.
        calibration_size: Training images that calibrate the int8 variants
            (default: 200 in fast mode, 500 otherwise).
        progress: ``True`` prints a line a variant, ``False`` prints nothing, a
            callable receives each line.

    Returns:
        The variants' paths, the baseline first (the order of the module docstring).

    Raises:
        ConfigError: A sparsity outside (0, 1), fewer than 2 clusters or a bad
            calibration size (checked before any work).
        ArtifactError: The source model is missing or unreadable, or ``out_dir``
            cannot be written.
    """
    from aideploy import prune

    chosen = sparsities if sparsities is not None else config.fast_or_full((0.5, 0.8), prune.DEFAULT_SPARSITIES)
    targets = [prune.check_sparsity(value) for value in chosen]
    if 0.8 not in targets:
        targets.append(0.8)
    cluster_settings = prune.ClusterSettings(num_clusters=num_clusters)
    calibration_size = calibration_size or config.fast_or_full(200, 500)
    whole = isinstance(calibration_size, (int, np.integer)) and not isinstance(calibration_size, bool)
    if not whole or calibration_size < 1:
        raise ConfigError(f"calibration_size must be a whole number of at least 1, got {calibration_size!r}.")
    say = _progress_printer(progress)
    folder = artifacts.writable_dir(config.resolve_out_dir(out_dir, "variants"), option=None)

    from aideploy import convert, data, quantize
    from aideploy.backend import keras

    model, provenance = prune.load_source(source)
    splits = splits or data.load_splits(prune.model_kind(model))
    stem = Path(provenance["path"]).stem if provenance["path"] else model.name
    calibration = quantize.calibration_images(splits.x_train, calibration_size)
    epochs = config.fast_or_full(1, 2)
    prune_epochs = config.fast_or_full(1, PRUNE_EPOCHS)
    built: list[Path] = []

    def valid(path: Path, expected: Mapping[str, Any]) -> bool:
        return _is_valid(path, expected, provenance)

    def step(path: Path, make: Callable[[], Any], **expected: Any) -> None:
        started = time.perf_counter()
        if valid(path, expected):
            say(f"[{len(built) + 1}] {path.name}: kept (matches its manifest and settings)")
        else:
            make()
            say(f"[{len(built) + 1}] {path.name}: written in {time.perf_counter() - started:.1f} s")
        built.append(path)

    def save_baseline(path: Path) -> None:
        # The source's weights without its optimizer state, which would triple the file.
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        artifacts.save_artifact(
            path, lambda temporary: copy.save(temporary), kind="keras-model",
            produced_by="aideploy.compress.build_variants", inputs={"source_model": provenance},
            params={"compression": {"method": "fp32"}},
        )  # fmt: skip

    def tflite(keras_model: Any, path: Path, settings: Mapping[str, Any], **options: Any) -> None:
        convert.to_tflite(keras_model, path, source=provenance, **options,
                          extra_params={"compression": dict(settings)})  # fmt: skip

    pruned_models: dict[float, Any] = {}

    def pruned(target: float) -> Any:
        """The pruned model at ``target``, from its saved .keras file when there is a valid one."""
        if target not in pruned_models:
            keras_path = folder / f"{stem}.prune{round(target * 100)}.keras"
            if valid(keras_path, {"target_sparsity": target, "num_epochs": prune_epochs}):
                pruned_models[target] = prune.load_source(keras_path)[0]
            else:
                settings = prune.PruneSettings(target_sparsity=target, num_epochs=prune_epochs)
                result = prune.prune(model, splits, settings)
                metrics = {"test_accuracy": prune.accuracy(result.model, splits.x_test, splits.y_test)}
                prune.save(result, keras_path, source=provenance, metrics=metrics)
                pruned_models[target] = result.model
        return pruned_models[target]

    step(folder / f"{stem}.fp32.keras", lambda: save_baseline(folder / f"{stem}.fp32.keras"))
    float_onnx = folder / f"{stem}.onnx"
    step(float_onnx, lambda: convert.to_onnx(model, float_onnx, source=provenance))
    step(folder / f"{stem}.tflite", lambda: tflite(model, folder / f"{stem}.tflite", {"method": "fp32"}))
    for method in quantize.TFLITE_METHODS:
        path = folder / f"{stem}.{method}.tflite"
        size = calibration_size if method in ("int8", "int16x8") else 0
        step(path, lambda path=path, method=method: quantize.to_tflite(
            model, path, method, calibration=calibration, source=provenance),
            method=method, calibration_size=size)  # fmt: skip
    for method in quantize.ORT_METHODS:
        path = folder / f"{stem}.{method}.onnx"
        expected = {"calibration_size": calibration_size} if method == "ort-static" else {}
        step(path, lambda path=path, method=method: quantize.ort_quantize(
            float_onnx, path, method, calibration=calibration, source=provenance),
            method=method, **expected)  # fmt: skip
    for target in sorted(targets):
        path = folder / f"{stem}.prune{round(target * 100)}.tflite"
        settings = {"method": "prune", "target_sparsity": target, "num_epochs": prune_epochs}
        step(path, lambda path=path, target=target, settings=settings: tflite(pruned(target), path, settings),
             **settings)  # fmt: skip

    def two_four(path: Path, settings: dict[str, Any]) -> None:
        result = prune.prune(model, splits, prune.PruneSettings(structure="2:4", num_epochs=prune_epochs))
        tflite(result.model, path, settings)

    def clustered(path: Path, settings: dict[str, Any]) -> None:
        result = prune.cluster(model, splits, cluster_settings)
        tflite(result.model, path, settings)

    def pruned_int8(path: Path, settings: dict[str, Any]) -> None:
        qat = quantize.quantization_aware(pruned(0.8), splits, num_epochs=epochs, preserve_sparsity=True)
        tflite(qat.model, path, settings, optimizations=("DEFAULT",))

    def qat() -> None:
        # The path, when there is one, so that the QAT files record the source file's SHA-256.
        quantize.quantize(provenance["path"] or model, "qat", folder, splits=splits, num_epochs=epochs, name=stem)

    for path, make, settings in (
        (folder / f"{stem}.prune24.tflite", two_four,
         {"method": "prune-2:4", "target_sparsity": 0.5, "num_epochs": prune_epochs}),
        (folder / f"{stem}.cluster{num_clusters}.tflite", clustered,
         {"method": "cluster", "num_clusters": num_clusters, "num_epochs": cluster_settings.num_epochs}),
        (folder / f"{stem}.prune80-int8.tflite", pruned_int8,
         {"method": "prune-qat", "target_sparsity": 0.8, "prune_epochs": prune_epochs, "num_epochs": epochs}),
    ):  # fmt: skip
        step(path, lambda path=path, make=make, settings=settings: make(path, settings), **settings)
    qat_files = (folder / f"{stem}.qat.tflite", folder / f"{stem}.qat.onnx")
    # One QAT run writes both files; either one missing or changed rebuilds both.
    qat_done = valid(qat_files[0], {"method": "qat", "num_epochs": epochs}) and valid(qat_files[1], {})
    step(qat_files[0], (lambda: None) if qat_done else qat, method="qat", num_epochs=epochs)
    say(f"[{len(built) + 1}] {qat_files[1].name}: {'kept' if qat_done else 'written'} with {qat_files[0].name}")
    built.append(qat_files[1])
    return built


def _is_valid(path: Path, expected: Mapping[str, Any], source: Mapping[str, Any]) -> bool:
    """Whether ``path`` exists, matches its manifest, and was made from ``source`` with the ``expected`` settings.

    The source is compared by SHA-256 (of the file, or of the weights of an
    in-memory model); the settings are looked up in the manifest's
    ``compression``, ``quantization`` or ``settings`` parameters. A file made
    from another model or with other settings is rebuilt.
    """
    if not path.exists():
        return False
    try:
        manifest = artifacts.verify(path)
    except ArtifactError:
        return False
    recorded_source = manifest.get("inputs", {}).get("source_model") or {}
    if any(recorded_source.get(key) != source[key] for key in ("sha256", "weights_sha256") if source.get(key)):
        return False
    params = manifest.get("params", {})
    if not expected:
        return True
    recorded = [params.get(key) for key in ("compression", "quantization", "settings")]
    return any(isinstance(r, dict) and all(r.get(k) == v for k, v in expected.items()) for r in recorded)


def _progress_printer(progress: bool | Callable[[str], None]) -> Callable[[str], None]:
    if callable(progress):
        return progress
    if progress:
        return lambda line: print(line, flush=True)
    return lambda line: None


# --- the comparison -----------------------------------------------------------------


@dataclass
class Comparison:
    """Accuracy, size and speed of every variant of one model, measured in one run.

    Attributes:
        rows: One dict a variant with the keys of :data:`COLUMNS`
            (``accuracy_change_pp``: percentage points against the baseline;
            ``size_ratio`` / ``gzip_ratio``: the variant's bytes over the baseline's).
        settings: How it was measured: ``cpu_model``, ``num_threads``,
            ``latency_rounds``, ``order`` (the shuffled turns), ``baseline``,
            ``num_examples``, ``fast_mode``.
    """

    rows: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    def row(self, variant: str) -> dict[str, Any]:
        """The row of one variant (its file name, e.g. ``"mlp.int8.tflite"``).

        Raises:
            ConfigError: No such variant.
        """
        for row in self.rows:
            if row["variant"] == variant:
                return row
        raise ConfigError(f"no variant {variant!r} in the comparison: use one of {[r['variant'] for r in self.rows]}.")

    def ratio(self, variant: str, reference: str, column: str = "size_bytes") -> float:
        """``column`` of ``variant`` over that of ``reference``, e.g. an int8 file against its float32 file.

        Args:
            variant: The variant's name.
            reference: The reference's name.
            column: A numeric column (``size_bytes``, ``gzip_bytes``, ``p50_us``...).
        """
        return self.row(variant)[column] / self.row(reference)[column]

    def table(self) -> str:
        """The comparison as a fixed-width text table, the CPU and thread count above it.

        Returns:
            The table as text.
        """
        settings = self.settings
        width = max(len("variant"), *(len(row["variant"]) for row in self.rows))
        lines = [
            f"CPU: {settings.get('cpu_model', '?')}; {settings.get('num_threads')} thread(s) per runtime; "
            f"latency over {settings.get('latency_rounds')} rounds in shuffled order; "
            f"accuracy on {settings.get('num_examples')} test images; baseline {settings.get('baseline')}",
            f"{'variant':<{width}}  {'runtime':<11}  {'accuracy':>8}  {'change pp':>9}  {'size kB':>8}  "
            f"{'gzip kB':>8}  {'size x':>6}  {'gzip x':>6}  {'p50 us':>8}  {'p99 us':>8}  "
            f"{'/s @' + str(THROUGHPUT_BATCH_SIZE):>9}",
        ]
        for row in self.rows:
            lines.append(
                f"{row['variant']:<{width}}  {row['runtime']:<11}  {row['test_accuracy']:8.4f}  "
                f"{row['accuracy_change_pp']:+9.2f}  {row['size_bytes'] / 1000:8.1f}  {row['gzip_bytes'] / 1000:8.1f}  "
                f"{row['size_ratio']:6.3f}  {row['gzip_ratio']:6.3f}  {row['p50_us']:8.1f}  {row['p99_us']:8.1f}  "
                f"{row[_THROUGHPUT]:9,.0f}"
            )
        lines.append(
            "(change pp: accuracy minus the baseline's, in percentage points; size x / gzip x: bytes over the "
            "baseline's; latency at batch 1 in microseconds; throughput in images/s)"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Rows and settings as JSON-ready data."""
        return {"rows": self.rows, "settings": self.settings}

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the rows as CSV (atomically), columns as in :data:`COLUMNS`.

        Returns:
            The path written.
        """
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        return artifacts.write_bytes(path, buffer.getvalue().encode("utf-8"))

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write rows and settings as JSON (atomically).

        Returns:
            The path written.
        """
        return artifacts.write_json(path, self.to_dict())

    def plot(self, target: Any = None) -> Any:
        """Accuracy against gzip size and against batch-1 latency, the Pareto front of each marked.

        Args:
            target: A path to save a PNG to, two matplotlib axes to draw on, or
                ``None`` for a new figure.

        Returns:
            The matplotlib figure.
        """
        import matplotlib

        if isinstance(target, (str, os.PathLike)):
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        if target is None or isinstance(target, (str, os.PathLike)):
            figure, axes = plt.subplots(1, 2, figsize=(14, 6))
        else:
            axes = target
            figure = axes[0].figure
        accuracy = [row["test_accuracy"] for row in self.rows]
        for axis, column, label in (
            (axes[0], "gzip_bytes", "gzip-compressed file size (kB, log scale)"),
            (axes[1], "p50_us", "batch-1 latency p50 (microseconds, log scale)"),
        ):
            cost = [row[column] / (1000 if column == "gzip_bytes" else 1) for row in self.rows]
            front = pareto_front(list(zip(cost, accuracy, strict=True)))
            axis.scatter(cost, accuracy, color="tab:gray", s=30, label="variant")
            axis.plot([cost[i] for i in front], [accuracy[i] for i in front], "-o", color="tab:red",
                      label="Pareto front (nothing smaller or faster is as accurate)")  # fmt: skip
            for index, row in enumerate(self.rows):
                axis.annotate(_short_name(row["variant"]), (cost[index], accuracy[index]), fontsize=7,
                              xytext=(3, 3), textcoords="offset points")  # fmt: skip
            axis.set(xscale="log", xlabel=label, ylabel="test accuracy")
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(loc="lower right", fontsize="small")
        axes[0].set_title("Accuracy vs size (up and left is better)")
        axes[1].set_title(f"Accuracy vs latency, {self.settings.get('num_threads')} thread(s)")
        figure.tight_layout()
        if isinstance(target, (str, os.PathLike)):
            with artifacts.atomic_path(target) as temporary:
                figure.savefig(temporary, dpi=120, format=Path(target).suffix.lstrip(".") or "png")
            plt.close(figure)
        return figure

    def save(self, out_dir: str | os.PathLike, *, name: str = "comparison") -> dict[str, Path]:
        """Write ``<name>.csv``, ``<name>.json`` and ``<name>.png`` into ``out_dir``.

        Returns:
            ``{"csv": path, "json": path, "png": path}``.
        """
        folder = artifacts.writable_dir(out_dir, option=None)
        return {
            "csv": self.to_csv(folder / f"{name}.csv"),
            "json": self.to_json(folder / f"{name}.json"),
            "png": _saved_plot(self, folder / f"{name}.png"),
        }


def _saved_plot(comparison: Comparison, path: Path) -> Path:
    comparison.plot(path)
    return path


def _short_name(variant: str) -> str:
    # "mlp.prune80-int8.tflite" -> "prune80-int8.tflite": the model's stem is the same on every point.
    parts = variant.split(".")
    return ".".join(parts[1:]) if len(parts) > 2 else variant


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower cost and higher accuracy are better.

    A point is on the front when no other point has a cost at most its own and
    an accuracy at least its own, with one of the two strictly better. Introduced
    in ``05_quantization.ipynb``.

    Args:
        points: ``(cost, accuracy)`` pairs, e.g. (gzip bytes, test accuracy).

    Returns:
        The indices of the front, by increasing cost (equal points: the first).
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    best = -np.inf
    for index in order:
        if points[index][1] > best:
            front.append(index)
            best = points[index][1]
    return front


def compare(
    paths: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike],
    splits: Any = None,
    *,
    baseline: str | os.PathLike | None = None,
    num_threads: int = 1,
    latency_rounds: int | None = None,
    seed: int = 0,
    progress: bool | Callable[[str], None] = False,
) -> Comparison:
    """Measure accuracy, size and speed of every variant of one model the same way.

    For each variant: accuracy on the whole test set of ``splits`` and its change
    from the baseline's in percentage points; file size raw and gzip-compressed
    (level 9) and both over the baseline's; batch-1 latency p50 and p99 and
    throughput at batch 256 through :func:`aideploy.bench.measure_latency`, in
    the variant's own runtime (:func:`aideploy.runtime.load`) with
    ``num_threads`` threads. Latency is measured over ``latency_rounds`` rounds,
    every variant once a round, in a fresh random order each round; a variant's
    figure is the median over its rounds. Every variant takes the same float32
    images (quantized ones quantize inside their predictor). Introduced in
    ``05_quantization.ipynb``.

    Args:
        paths: Model files (``.keras``, ``.onnx``, ``.tflite``), e.g. from
            :func:`build_variants`, or ``{name: path}``. Without names a variant
            is named after its file.
        splits: Data whose ``x_test`` / ``y_test`` measure accuracy (default:
            :func:`aideploy.data.load_splits` for the models' input shape).
        baseline: The variant the changes and ratios refer to (default: the
            first); added as the first row when it is not among ``paths``.
        num_threads: Threads of every runtime.
        latency_rounds: Rounds of latency measurement (default: 2 in fast mode, 5 otherwise).
        seed: Seed of the shuffled order and of the latency input.
        progress: ``True`` prints a line a step, or a callable receives each line.

    Returns:
        The :class:`Comparison`.

    Raises:
        ConfigError: No variant, repeated names, a bad thread or round count.
        ArtifactError: A file is missing or cannot be loaded.
        ModelInputError: The test set does not fit a variant.
    """
    from aideploy import parity, prune, runtime

    named = _named_paths(paths, baseline)
    rounds = latency_rounds if latency_rounds is not None else config.fast_or_full(2, 5)
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ConfigError(f"latency_rounds must be a whole number of at least 1, got {latency_rounds!r}.")
    runtime.check_threads(num_threads)
    say = _progress_printer(progress)
    predictors = {name: runtime.load(path, num_threads=num_threads) for name, path in named.items()}
    if splits is None:
        from aideploy import data

        first = next(iter(predictors.values()))
        splits = data.load_splits("cnn" if len(first.input.shape) == 4 else "mlp")
    x_test, y_test = splits.x_test, np.asarray(splits.y_test).ravel()
    rows: dict[str, dict[str, Any]] = {}
    for name, predictor in predictors.items():
        say(f"accuracy and size: {name}")
        probabilities = parity.predict_in_batches(predictor, x_test, 1000)
        rows[name] = {
            "variant": name,
            "method": _method(named[name]),
            "runtime": predictor.runtime,
            "path": str(named[name]),
            "test_accuracy": float(np.mean(probabilities.argmax(axis=1) == y_test)),
            **(prune.file_sizes(named[name]) if Path(named[name]).is_file() else _folder_sizes(named[name])),
        }
    latency = _measure_speed(predictors, x_test, rounds, seed, say)
    base = rows[next(iter(named))]
    for name, row in rows.items():
        row["accuracy_change_pp"] = 100.0 * (row["test_accuracy"] - base["test_accuracy"])
        row["size_ratio"] = row["size_bytes"] / base["size_bytes"]
        row["gzip_ratio"] = row["gzip_bytes"] / base["gzip_bytes"]
        row.update(latency[name])
    ordered = [{column: rows[name][column] for column in COLUMNS} for name in named]
    settings = {
        "cpu_model": bench.cpu_model(),
        "cpu_count": os.cpu_count(),
        "num_threads": num_threads,
        "latency_rounds": rounds,
        "order": latency["__order__"],
        "baseline": next(iter(named)),
        "num_examples": len(x_test),
        "throughput_batch_size": THROUGHPUT_BATCH_SIZE,
        "fast_mode": config.fast_mode(),
    }
    return Comparison(rows=ordered, settings=settings)


def _named_paths(
    paths: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike], baseline: str | os.PathLike | None
) -> dict[str, Path]:
    """``{name: path}``, the baseline first."""
    if isinstance(paths, Mapping):
        named = {str(name): Path(path) for name, path in paths.items()}
    else:
        named = {}
        for path in paths:
            name = Path(path).name
            if name in named:
                raise ConfigError(
                    f"two variants are both named {name!r} ({named[name]} and {path}): pass {{name: path}} instead."
                )
            named[name] = Path(path)
    if not named:
        raise ConfigError("nothing to compare: pass at least one model file.")
    if baseline is not None:
        by_path = {path.resolve(): name for name, path in named.items()}
        key = str(baseline) if str(baseline) in named else by_path.get(Path(baseline).resolve())
        if key is None:
            key = Path(baseline).name
            if key in named:
                raise ConfigError(f"the baseline {baseline} and variant {named[key]} share the name {key!r}.")
            named = {key: Path(baseline), **named}
        else:
            named = {key: named[key], **{name: path for name, path in named.items() if name != key}}
    return named


def _folder_sizes(path: Path) -> dict[str, int]:
    """Sizes of a SavedModel folder: its files' bytes, and the sum of their gzip sizes."""
    from aideploy import prune

    files = [p for p in Path(path).rglob("*") if p.is_file()]
    sizes = [prune.file_sizes(p) for p in files]
    return {"size_bytes": sum(s["size_bytes"] for s in sizes), "gzip_bytes": sum(s["gzip_bytes"] for s in sizes)}


def _method(path: Path) -> str:
    """What made a variant, from its manifest: e.g. ``int8``, ``prune``, ``fp32``."""
    try:
        params = artifacts.read_manifest(path).get("params", {})
    except ArtifactError:
        return "?"
    for key in ("compression", "quantization"):
        if isinstance(params.get(key), dict) and params[key].get("method"):
            return str(params[key]["method"])
    if params.get("method"):
        return str(params["method"])
    return "fp32"


def _measure_speed(
    predictors: Mapping[str, Any], x_test: np.ndarray, rounds: int, seed: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Median over rounds of each predictor's batch-1 p50/p99 and batch-256 throughput."""
    from aideploy import parity

    generator = np.random.default_rng(seed)
    # The same images for every variant: real test images, not noise, so that
    # any data-dependent work (e.g. in a quantize step) sees what it will see.
    single = x_test[generator.integers(len(x_test), size=1)]
    chosen = generator.choice(len(x_test), size=THROUGHPUT_BATCH_SIZE, replace=len(x_test) < THROUGHPUT_BATCH_SIZE)
    batch = x_test[chosen]
    calls = config.fast_or_full(60, 400)
    max_seconds = config.fast_or_full(0.15, 1.0)
    batch_calls = config.fast_or_full(10, 40)
    inputs = {name: (parity.as_input(p, single), parity.as_input(p, batch)) for name, p in predictors.items()}
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in predictors}
    order = bench.measurement_order(list(predictors), "shuffled", rounds, seed)
    for round_index, turn in enumerate(order):
        say(f"latency round {round_index + 1}/{rounds}")
        for name in turn:
            call = predictors[name].predict
            one, many = inputs[name]
            first = bench.measure_latency(call, one, num_calls=calls, warmup_calls=10, max_seconds=max_seconds)
            batched = bench.measure_latency(call, many, num_calls=batch_calls, warmup_calls=2, max_seconds=max_seconds)
            samples[name].append((first.p50_us, first.p99_us, THROUGHPUT_BATCH_SIZE * 1e6 / batched.mean_us))
    result: dict[str, Any] = {
        name: {
            "p50_us": float(np.median([s[0] for s in values])),
            "p99_us": float(np.median([s[1] for s in values])),
            _THROUGHPUT: float(np.median([s[2] for s in values])),
        }
        for name, values in samples.items()
    }
    result["__order__"] = order
    return result


def headline(comparison: Comparison) -> list[dict[str, Any]]:
    """The rows a command prints in its final JSON line: name, accuracy, sizes, ratios, p50.

    Introduced in ``05_quantization.ipynb``.
    """
    keys = ("variant", "test_accuracy", "accuracy_change_pp", "size_bytes", "gzip_bytes", "size_ratio",
            "gzip_ratio", "p50_us")  # fmt: skip
    return [{key: round(row[key], 4) if isinstance(row[key], float) else row[key] for key in keys}
            for row in comparison.rows]  # fmt: skip


def load_json(path: str | os.PathLike) -> Comparison:
    """Read a comparison written by :meth:`Comparison.to_json`.

    Raises:
        ArtifactError: The file is missing or not a comparison.
    """
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        return Comparison(rows=payload["rows"], settings=payload.get("settings", {}))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ArtifactError(
            f"cannot read a comparison from {path} ({error}): write it with Comparison.to_json."
        ) from None
