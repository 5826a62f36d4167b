"""Stage 04, pruning and clustering: fewer distinct weights, smaller compressed files.

Notebook: ``notebooks/04_pruning.ipynb``.

Three techniques from tensorflow-model-optimization (tfmot), each applied to a
trained tf-keras model and followed by a short fine-tuning through
:func:`aideploy.train.fit`:

- magnitude pruning to a target sparsity (``prune_low_magnitude`` with a
  polynomial-decay or constant schedule, ``UpdatePruningStep`` during fine-tuning,
  ``strip_pruning`` afterwards);
- structured 2:4 sparsity (``sparsity_m_by_n=(2, 4)``: in every group of four
  consecutive weights two are zero, the pattern sparse tensor cores accelerate);
- weight clustering (``cluster_weights`` with k centroids, ``strip_clustering``).

None of them makes the stored tensors smaller: a zero takes as many bytes as any
float. What shrinks is the *compressed* file, because long runs of zeros (or few
distinct values) compress well; so :func:`file_sizes` reports sizes raw and
gzip-compressed. Every result is saved through :func:`aideploy.artifacts.save_artifact`
with a manifest that records the method, its settings and the source model's SHA-256.
"""

from __future__ import annotations

import gzip
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from aideploy import artifacts, config, data, models, train
from aideploy.backend import keras, tf
from aideploy.errors import ArtifactError, ConfigError

#: Pruning schedules :class:`PruneSettings` accepts.
SCHEDULES = ("polynomial", "constant")
#: Structured sparsity patterns (m zeros in every n consecutive weights).
STRUCTURES = {"2:4": (2, 4)}
#: Centroid initialisations tfmot's clustering offers.
CENTROID_INITS = ("kmeans_plus_plus", "linear", "density_based", "random")
#: The sparsities of the sweep in ``04_pruning.ipynb``.
DEFAULT_SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)


def _check_training(num_epochs: int, batch_size: int, learning_rate: float) -> None:
    if num_epochs < 1:
        raise ConfigError(f"num_epochs must be at least 1, got {num_epochs}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
    if not learning_rate > 0:
        raise ConfigError(f"learning_rate must be positive, got {learning_rate}.")



@dataclass(frozen=True)
class PruneSettings:
    """How to prune and fine-tune.

    Attributes:
        target_sparsity: Share of each kernel's weights set to zero, in (0, 1).
            Ignored for a structured pattern (2:4 is 50% by construction).
        schedule: ``"polynomial"`` ramps the sparsity from ``initial_sparsity`` to
            the target over the first ``ramp_fraction`` of the fine-tuning steps
            (the network adapts as weights go); ``"constant"`` prunes to the target
            at once and keeps pruning every ``frequency`` steps.
        structure: ``"2:4"`` for structured sparsity, or ``None``.
        initial_sparsity: Where the polynomial schedule starts.
        ramp_fraction: Share of the fine-tuning steps over which the polynomial
            schedule reaches the target; the rest fine-tunes at the target.
        num_epochs: Fine-tuning epochs.
        batch_size: Images a step.
        learning_rate: Adam's learning rate while fine-tuning.
        seed: Seed of the fine-tuning (default: the global seed).
    """

    target_sparsity: float = 0.8
    schedule: str = "polynomial"
    structure: str | None = None
    initial_sparsity: float = 0.0
    ramp_fraction: float = 0.7
    num_epochs: int = 2
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int | None = None

    def __post_init__(self) -> None:
        check_sparsity(self.target_sparsity)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown pruning schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}.")
        if self.structure is not None and self.structure not in STRUCTURES:
            raise ConfigError(
                f"unknown sparsity structure {self.structure!r}: use {', '.join(STRUCTURES)} or None (unstructured)."
            )
        if not 0.0 <= self.initial_sparsity < self.target_sparsity:
            raise ConfigError(
                f"initial_sparsity must be in [0, target_sparsity={self.target_sparsity}), got {self.initial_sparsity}."
            )
        if not 0.0 < self.ramp_fraction <= 1.0:
            raise ConfigError(f"ramp_fraction must be in (0, 1], got {self.ramp_fraction}.")
        _check_training(self.num_epochs, self.batch_size, self.learning_rate)


@dataclass(frozen=True)
class ClusterSettings:
    """How to cluster weights and fine-tune.

    Attributes:
        num_clusters: Distinct values each kernel keeps (at least 2).
        centroid_init: How the centroids start (see :data:`CENTROID_INITS`).
        num_epochs: Fine-tuning epochs (the centroids are trained, not the weights).
        batch_size: Images a step.
        learning_rate: Adam's learning rate while fine-tuning.
        seed: Seed of the fine-tuning (default: the global seed).
    """

    num_clusters: int = 16
    centroid_init: str = "kmeans_plus_plus"
    num_epochs: int = 1
    batch_size: int = 128
    learning_rate: float = 1e-4
    seed: int | None = None

    def __post_init__(self) -> None:
        whole = isinstance(self.num_clusters, (int, np.integer)) and not isinstance(self.num_clusters, bool)
        if not whole or self.num_clusters < 2:
            raise ConfigError(f"num_clusters must be a whole number of at least 2, got {self.num_clusters!r}.")
        if self.centroid_init not in CENTROID_INITS:
            raise ConfigError(
                f"unknown centroid_init {self.centroid_init!r}: use one of {', '.join(CENTROID_INITS)}."
            )
        _check_training(self.num_epochs, self.batch_size, self.learning_rate)


@dataclass
class OptimizeResult:
    """A pruned or clustered model (wrappers stripped) and how it was made.

    Attributes:
        model: The stripped tf-keras model, compiled, ready to evaluate or export.
        method: ``"prune"``, ``"prune-2:4"`` or ``"cluster"``.
        settings: The settings used, as a dict (what the manifest records).
        history: Fine-tuning history (``history[metric]`` = one value an epoch).
        seconds: Fine-tuning time.
    """

    model: keras.Model
    method: str
    settings: dict[str, Any]
    history: dict[str, list[float]]
    seconds: float


def check_sparsity(target_sparsity: float) -> float:
    """Validate a target sparsity: a number strictly between 0 and 1.

    Args:
        target_sparsity: E.g. ``0.8`` for 80% zeros.

    Returns:
        It, as a float.

    Raises:
        ConfigError: It is not a number in (0, 1).
    """
    if isinstance(target_sparsity, bool) or not isinstance(target_sparsity, (int, float, np.floating, np.integer)):
        raise ConfigError(f"target sparsity must be a number in (0, 1), got {target_sparsity!r}.")
    if not 0.0 < float(target_sparsity) < 1.0:
        raise ConfigError(
            f"target sparsity must be strictly between 0 and 1 (e.g. 0.8 for 80% zeros), got {target_sparsity}."
        )
    return float(target_sparsity)


def prune(model: keras.Model, splits: data.Splits, settings: PruneSettings = PruneSettings()) -> OptimizeResult:
    """Prune a trained model by weight magnitude, fine-tune it and strip the pruning wrappers.

    The few lines of tfmot it wraps::

        schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=end)
        pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
        pruned.compile(...); pruned.fit(..., callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        final = tfmot.sparsity.keras.strip_pruning(pruned)

    Every Dense and Conv2D kernel is pruned (biases are not). The source model
    is not changed. Introduced in ``04_pruning.ipynb``.

    Args:
        model: A trained tf-keras model.
        splits: Data for fine-tuning (training and validation images).
        settings: Sparsity, schedule or structure, fine-tuning.

    Returns:
        The :class:`OptimizeResult` with the stripped model.

    Raises:
        ConfigError: Invalid settings.
        ModelInputError: The data does not fit the model.
    """
    import tensorflow_model_optimization as tfmot

    sparsity = tfmot.sparsity.keras
    models.check_input(model, splits.x_train[:1])
    train.set_seed(settings.seed)
    steps_per_epoch = math.ceil(len(splits.x_train) / settings.batch_size)
    total_steps = steps_per_epoch * settings.num_epochs
    # Masks are recomputed every `frequency` steps; about ten updates over the
    # ramp (at most one each 100 steps, tfmot's default) let the network adapt.
    ramp_steps = max(1, int(total_steps * settings.ramp_fraction))
    frequency = max(1, min(100, ramp_steps // 10))
    # PolynomialDecay reaches the target only on a step that is a multiple of
    # `frequency`, so end on one.
    end_step = max(frequency, ramp_steps - ramp_steps % frequency)
    if settings.structure is not None:
        # The m-by-n mask is computed once, at step 1; the schedule only says when.
        schedule = sparsity.ConstantSparsity(0.5, begin_step=0, frequency=frequency)
        wrapped = sparsity.prune_low_magnitude(
            _copy(model), pruning_schedule=schedule, sparsity_m_by_n=STRUCTURES[settings.structure]
        )
        method = f"prune-{settings.structure}"
    else:
        if settings.schedule == "polynomial":
            schedule = sparsity.PolynomialDecay(
                initial_sparsity=settings.initial_sparsity,
                final_sparsity=settings.target_sparsity,
                begin_step=0,
                end_step=end_step,
                frequency=frequency,
            )
        else:
            schedule = sparsity.ConstantSparsity(settings.target_sparsity, begin_step=0, frequency=frequency)
        wrapped = sparsity.prune_low_magnitude(_copy(model), pruning_schedule=schedule)
        method = "prune"
    result = _fine_tune(wrapped, splits, settings, [sparsity.UpdatePruningStep()])
    stripped = models.compile_model(sparsity.strip_pruning(wrapped), settings.learning_rate)
    recorded = asdict(settings)
    recorded.update(frequency=frequency, end_step=end_step if settings.schedule == "polynomial" else None)
    if settings.structure is not None:
        recorded.update(target_sparsity=0.5, schedule="m_by_n")
    return OptimizeResult(stripped, method, recorded, result.history, result.seconds)


def cluster(model: keras.Model, splits: data.Splits, settings: ClusterSettings = ClusterSettings()) -> OptimizeResult:
    """Cluster each kernel's weights into k shared values, fine-tune, strip the wrappers.

    The few lines of tfmot it wraps::

        clustered = tfmot.clustering.keras.cluster_weights(
            model, number_of_clusters=16, cluster_centroids_init=CentroidInitialization.KMEANS_PLUS_PLUS)
        clustered.compile(...); clustered.fit(...)
        final = tfmot.clustering.keras.strip_clustering(clustered)

    Introduced in ``04_pruning.ipynb``.

    Args:
        model: A trained tf-keras model.
        splits: Data for fine-tuning.
        settings: Number of clusters, centroid initialisation, fine-tuning.

    Returns:
        The :class:`OptimizeResult` with the stripped model.

    Raises:
        ConfigError: Invalid settings.
        ModelInputError: The data does not fit the model.
    """
    import tensorflow_model_optimization as tfmot

    clustering = tfmot.clustering.keras
    models.check_input(model, splits.x_train[:1])
    train.set_seed(settings.seed)
    init = getattr(tfmot.clustering.keras.CentroidInitialization, settings.centroid_init.upper())
    wrapped = clustering.cluster_weights(
        _copy(model), number_of_clusters=int(settings.num_clusters), cluster_centroids_init=init
    )
    result = _fine_tune(wrapped, splits, settings, [])
    stripped = models.compile_model(clustering.strip_clustering(wrapped), settings.learning_rate)
    return OptimizeResult(stripped, "cluster", asdict(settings), result.history, result.seconds)


def weight_report(model: keras.Model) -> list[dict[str, Any]]:
    """Per-layer sparsity and number of distinct values of every kernel.

    Introduced in ``04_pruning.ipynb``.

    Args:
        model: A tf-keras model (stripped or not; only ``kernel`` weights count).

    Returns:
        One dict a kernel: ``layer``, ``weight``, ``shape``, ``num_weights``,
        ``num_zeros``, ``sparsity`` (share of exact zeros) and ``num_unique``.
    """
    rows = []
    for layer in model.layers:
        for weight in layer.weights:
            # "dense_1/kernel:0", not a pruning mask or a quantizer's kernel_min / kernel_max.
            if not weight.name.split("/")[-1].startswith("kernel:"):
                continue
            values = weight.numpy()
            rows.append(
                {
                    "layer": layer.name,
                    "weight": weight.name,
                    "shape": list(values.shape),
                    "num_weights": int(values.size),
                    "num_zeros": int(np.sum(values == 0)),
                    "sparsity": float(np.mean(values == 0)),
                    "num_unique": int(np.unique(values).size),
                }
            )
    return rows


def overall_sparsity(model: keras.Model) -> float:
    """Share of zeros over all kernels of a model (see :func:`weight_report`)."""
    rows = weight_report(model)
    return sum(r["num_zeros"] for r in rows) / max(1, sum(r["num_weights"] for r in rows))


def file_sizes(path: str | os.PathLike) -> dict[str, int]:
    """A file's size on disk and gzip-compressed (level 9).

    Introduced in ``04_pruning.ipynb``: a pruned model is as large as the dense
    one until it is compressed, because a zero takes four bytes like any float.

    Args:
        path: A model file.

    Returns:
        ``{"size_bytes": ..., "gzip_bytes": ...}``.

    Raises:
        ArtifactError: The file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"cannot measure {path}: it is not a file.")
    content = path.read_bytes()
    return {"size_bytes": len(content), "gzip_bytes": len(gzip.compress(content, compresslevel=9, mtime=0))}


def model_sizes(model: keras.Model) -> dict[str, int]:
    """Sizes, raw and gzipped, of a model saved as ``.keras`` (no optimizer state) and as float32 TFLite.

    The optimizer's slots would triple a ``.keras`` file and hide what pruning
    did, so the model is saved without them. Introduced in ``04_pruning.ipynb``.

    Args:
        model: A tf-keras model (strip pruning or clustering wrappers first).

    Returns:
        ``keras_bytes``, ``keras_gzip_bytes``, ``tflite_bytes``, ``tflite_gzip_bytes``.
    """
    from aideploy import convert

    with tempfile.TemporaryDirectory(prefix="aideploy-sizes-") as folder:
        keras_path = Path(folder) / "model.keras"
        _copy(model).save(keras_path)
        tflite_path = convert.to_tflite(model, Path(folder) / "model.tflite").path
        keras_sizes, tflite_sizes = file_sizes(keras_path), file_sizes(tflite_path)
    return {
        "keras_bytes": keras_sizes["size_bytes"],
        "keras_gzip_bytes": keras_sizes["gzip_bytes"],
        "tflite_bytes": tflite_sizes["size_bytes"],
        "tflite_gzip_bytes": tflite_sizes["gzip_bytes"],
    }


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a tf-keras model on ``(x, y)``."""
    return float(np.mean(models.predict_probabilities(model, x).argmax(axis=1) == np.asarray(y).ravel()))


def sweep(
    model: keras.Model,
    splits: data.Splits,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    settings: PruneSettings = PruneSettings(),
) -> list[dict[str, Any]]:
    """Prune the same model to each sparsity and measure accuracy and sizes.

    Each sparsity starts again from ``model``. Introduced in ``04_pruning.ipynb``.

    Args:
        model: A trained tf-keras model.
        splits: Data for fine-tuning and the test set for accuracy.
        sparsities: Target sparsities, each in (0, 1).
        settings: Everything but the target sparsity.

    Returns:
        One dict a sparsity (plus a first row for the unpruned model, ``target_sparsity``
        0): ``target_sparsity``, ``sparsity`` (measured), ``test_accuracy``, the sizes
        of :func:`model_sizes` and ``fine_tune_seconds``.

    Raises:
        ConfigError: A sparsity outside (0, 1) (checked before any work).
    """
    targets = [check_sparsity(value) for value in sparsities]
    rows = [
        {
            "target_sparsity": 0.0,
            "sparsity": overall_sparsity(model),
            "test_accuracy": accuracy(model, splits.x_test, splits.y_test),
            **model_sizes(model),
            "fine_tune_seconds": 0.0,
        }
    ]
    for target in targets:
        result = prune(model, splits, replace(settings, target_sparsity=target, initial_sparsity=0.0))
        rows.append(
            {
                "target_sparsity": target,
                "sparsity": overall_sparsity(result.model),
                "test_accuracy": accuracy(result.model, splits.x_test, splits.y_test),
                **model_sizes(result.model),
                "fine_tune_seconds": round(result.seconds, 2),
            }
        )
    return rows


def load_source(model: keras.Model | str | os.PathLike) -> tuple[keras.Model, dict[str, Any]]:
    """A tf-keras model and what a manifest records about where it came from.

    Args:
        model: A tf-keras model or the path of a ``.keras`` file.

    Returns:
        ``(model, source)``; ``source`` has ``path`` and ``sha256`` for a file,
        ``weights_sha256`` (a fingerprint of the weights) for an in-memory model.

    Raises:
        ArtifactError: The file is missing or unreadable.
        ConfigError: ``model`` is neither a model nor a path.
    """
    if isinstance(model, keras.Model):
        from aideploy import convert

        return model, {"path": None, "sha256": None, "weights_sha256": convert.weights_sha256(model)}
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigError(f"expected a tf-keras model or the path of a .keras file, got {type(model).__name__}.")
    path = Path(model)
    return train.load_model(path), {"path": str(path.resolve()), "sha256": artifacts.sha256_of(path)}


def save(
    result: OptimizeResult,
    path: str | os.PathLike,
    *,
    source: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Save a pruned or clustered model as ``.keras`` (no optimizer state) with its manifest.

    The manifest records the method, its settings, the source model's SHA-256,
    the measured sparsity and distinct values per kernel, and ``metrics``.
    Introduced in ``04_pruning.ipynb``.

    Args:
        result: From :func:`prune` or :func:`cluster`.
        path: Target file ending in ``.keras``.
        source: The source model's provenance (from :func:`load_source`).
        metrics: E.g. ``test_accuracy`` and sizes.

    Returns:
        ``(model_path, manifest_path)``.

    Raises:
        ConfigError: ``path`` does not end in ``.keras``.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ConfigError(f"pruned and clustered models are saved as .keras files: {path} must end in .keras.")
    import tensorflow_model_optimization as tfmot

    return artifacts.save_artifact(
        path,
        lambda temporary: _copy(result.model).save(temporary),
        kind="keras-model",
        produced_by=f"aideploy.prune.{'cluster' if result.method == 'cluster' else 'prune'}",
        inputs={"source_model": source},
        params={"method": result.method, "settings": result.settings, "weights": weight_report(result.model)},
        metrics={**(metrics or {}), "fine_tune_seconds": round(result.seconds, 2)},
        extra={
            "versions": {
                "tensorflow": tf.__version__,
                "tf_keras": keras.__version__,
                "tensorflow_model_optimization": tfmot.__version__,
            }
        },
    )


def prune_and_save(
    model: keras.Model | str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    settings: PruneSettings | ClusterSettings = PruneSettings(),
    splits: data.Splits | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Prune (or cluster) a model, evaluate it on the test set and save it with its manifest.

    What ``aideploy prune`` and ``aideploy cluster`` run. Introduced in ``04_pruning.ipynb``.

    Args:
        model: A tf-keras model or the path of a ``.keras`` file.
        out_dir: Folder of the result (default: ``<artifacts>/optimized``).
        settings: :class:`PruneSettings` to prune, :class:`ClusterSettings` to cluster.
        splits: Data (default: :func:`aideploy.data.load_splits` for the model's kind).
        name: File stem (default: ``<source>-<method>``, e.g. ``mlp-prune80``).

    Returns:
        ``path``, ``manifest_path``, ``method``, ``test_accuracy``, ``sparsity``,
        ``size_bytes`` and ``gzip_bytes`` (of the saved ``.keras`` file), and the
        float32 TFLite sizes of :func:`model_sizes`.

    Raises:
        ConfigError: Invalid settings.
        ArtifactError: The source model is missing or unreadable.
    """
    keras_model, source = load_source(model)
    splits = splits or data.load_splits(model_kind(keras_model))
    if isinstance(settings, ClusterSettings):
        result = cluster(keras_model, splits, settings)
        tag = f"cluster{settings.num_clusters}"
    else:
        result = prune(keras_model, splits, settings)
        tag = "prune24" if settings.structure else f"prune{round(settings.target_sparsity * 100)}"
    stem = name or f"{Path(source['path']).stem if source['path'] else keras_model.name}-{tag}"
    test_accuracy = accuracy(result.model, splits.x_test, splits.y_test)
    sizes = model_sizes(result.model)
    metrics = {"test_accuracy": test_accuracy, "sparsity": overall_sparsity(result.model), **sizes}
    target = config.resolve_out_dir(out_dir, "optimized") / f"{stem}.keras"
    path, manifest = save(result, target, source=source, metrics=metrics)
    return {
        "path": str(path),
        "manifest_path": str(manifest),
        "method": result.method,
        **metrics,
        **file_sizes(path),
    }


def model_kind(model: keras.Model) -> str:
    """``"cnn"`` for image-shaped input (N, 28, 28, 1), else ``"mlp"``."""
    return "cnn" if len(model.input_shape) == 4 else "mlp"


# --- helpers ----------------------------------------------------------------------


def _copy(model: keras.Model) -> keras.Model:
    """An uncompiled copy of a model with the same weights and no shared layers.

    tfmot's wrappers (pruning, clustering) wrap the *given* model's layer objects,
    so fine-tuning the wrapped model would change the source model's weights too.
    The copy is also what :func:`save` writes: the .keras format always writes a
    compiled model's optimizer state, which inference does not need.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy



def _fine_tune(wrapped: keras.Model, splits: data.Splits, settings: Any, callbacks: list[Any]) -> train.TrainResult:
    models.compile_model(wrapped, settings.learning_rate)
    training = train.TrainSettings(
        num_epochs=settings.num_epochs, batch_size=settings.batch_size, seed=settings.seed, verbose=0
    )
    return train.fit(wrapped, splits, training, callbacks=callbacks)
