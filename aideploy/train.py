"""Stage 02, training: fit a model with validation data and save it as an artifact.

Notebook: ``notebooks/02_training.ipynb``. Command: ``aideploy train``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from aideploy import artifacts, config, data, evaluate, models
from aideploy.backend import keras, native_stderr_silenced, tf
from aideploy.errors import ArtifactError, ConfigError


@dataclass(frozen=True)
class TrainSettings:
    """How to train: epochs, batch size, early stopping, seed.

    Attributes:
        num_epochs: Maximum number of passes over the training data.
        batch_size: Images per gradient step.
        early_stopping_patience: Stop after this many epochs without a better
            validation loss, and keep the best weights; ``None`` disables it.
        seed: Seed of weights, shuffling and dropout (default: the global seed).
        verbose: Keras progress output (0 silent, 1 progress bar, 2 one line an epoch).
    """

    num_epochs: int = 10
    batch_size: int = 32
    early_stopping_patience: int | None = None
    seed: int | None = None
    verbose: int = 1

    def __post_init__(self) -> None:
        if self.num_epochs < 1:
            raise ConfigError(f"num_epochs must be at least 1, got {self.num_epochs}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError(
                f"early_stopping_patience must be at least 1 or None, got {self.early_stopping_patience}."
            )


@dataclass
class TrainResult:
    """A trained model and its history (``history[metric]`` = one value an epoch).

    Attributes:
        model: The trained model. With early stopping it holds the weights of
            :attr:`best_epoch`, not of the last epoch run.
        history: One value an epoch for each metric (``loss``, ``val_accuracy``, ...).
        settings: How it was trained.
        seconds: Wall time of ``fit``.
        epochs_run: Epochs run (early stopping may end before ``num_epochs``).
        best_epoch: The epoch (from 1) whose weights the model holds: the one with
            the lowest validation loss when early stopping restored it, else the last.
    """

    model: keras.Model
    history: dict[str, list[float]]
    settings: TrainSettings
    seconds: float
    best_epoch: int | None = None
    epochs_run: int = field(init=False)

    def __post_init__(self) -> None:
        self.epochs_run = len(next(iter(self.history.values()), []))
        if self.best_epoch is None:
            self.best_epoch = self.epochs_run
            val_loss = self.history.get("val_loss") or []
            if self.settings.early_stopping_patience and val_loss:
                # EarlyStopping(restore_best_weights=True) restores the first epoch
                # with the lowest val_loss; argmin picks the first of ties too.
                self.best_epoch = int(np.argmin(val_loss)) + 1

    def epoch_metrics(self, epoch: int) -> dict[str, float]:
        """The history's values at ``epoch`` (counted from 1), e.g. ``{"val_accuracy": 0.89, ...}``.

        Raises:
            ConfigError: ``epoch`` is not one of the epochs run.
        """
        if not 1 <= epoch <= self.epochs_run:
            raise ConfigError(f"epoch must be between 1 and {self.epochs_run}, got {epoch}.")
        return {key: values[epoch - 1] for key, values in self.history.items()}

    def summary_metrics(self) -> dict[str, Any]:
        """Best (restored) and last epoch with their validation metrics, for the manifest.

        ``best_*`` describe the weights the model holds; ``last_*`` the final epoch
        run, kept for the record.
        """
        summary: dict[str, Any] = {"best_epoch": self.best_epoch, "last_epoch": self.epochs_run}
        if not self.epochs_run:
            return summary
        for label, epoch in (("best", self.best_epoch), ("last", self.epochs_run)):
            values = self.epoch_metrics(epoch)
            for metric in ("val_accuracy", "val_loss", "accuracy", "loss"):
                if metric in values:
                    name = metric.removeprefix("val_")
                    prefix = f"{label}_val_" if metric.startswith("val_") else f"{label}_train_"
                    summary[prefix + name] = values[metric]
        return summary


def set_seed(seed: int | None = None) -> int:
    """Seed Python, NumPy and TensorFlow and make TensorFlow's ops deterministic.

    With this, two CPU runs with the same seed give the same weights and metrics.

    Returns:
        The seed used.
    """
    seed = config.resolve_seed(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    return seed


def fit(
    model: keras.Model,
    splits: data.Splits,
    settings: TrainSettings = TrainSettings(),
    *,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """Train ``model`` on ``splits.x_train`` with ``splits.x_val`` as validation data.

    The seed is set before training, so build the model *after* :func:`set_seed`
    (as :func:`train` does) for repeatable initial weights too.

    Args:
        model: A compiled tf-keras model.
        splits: From :func:`aideploy.data.prepare`.
        settings: Epochs, batch size, early stopping, seed, verbosity.
        callbacks: Extra Keras callbacks (e.g. a tuning pruner).

    Returns:
        The :class:`TrainResult`.
    """
    models.check_input(model, splits.x_train[:1])
    all_callbacks = list(callbacks or [])
    early_stopping = None
    if settings.early_stopping_patience:
        # restore_best_weights also restores at the end of a run that used every
        # epoch, so the model always holds the best epoch's weights.
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=settings.early_stopping_patience,
            restore_best_weights=True,
        )
        all_callbacks.append(early_stopping)
    started = time.perf_counter()
    # tf.data logs a harmless native "NodeDef mentions attribute" error when fit
    # builds its input pipeline; keep it out of notebooks and terminals.
    with native_stderr_silenced():
        history = model.fit(
            splits.x_train,
            splits.y_train,
            validation_data=(splits.x_val, splits.y_val),
            epochs=settings.num_epochs,
            batch_size=settings.batch_size,
            callbacks=all_callbacks,
            verbose=settings.verbose,
        )
    seconds = time.perf_counter() - started
    return TrainResult(
        model=model,
        history={key: [float(v) for v in values] for key, values in history.history.items()},
        settings=settings,
        seconds=seconds,
        best_epoch=early_stopping.best_epoch + 1 if early_stopping and history.history else None,
    )


def train(
    kind: str,
    splits: data.Splits,
    settings: TrainSettings = TrainSettings(),
    **hyperparameters: Any,
) -> TrainResult:
    """Seed, build a model of ``kind`` with ``hyperparameters`` and :func:`fit` it.

    Introduced in ``02_training.ipynb``.

    Args:
        kind: ``"mlp"`` or ``"cnn"``.
        splits: Data prepared for that kind (:func:`aideploy.data.prepare`).
        settings: How to train.
        **hyperparameters: Passed to :func:`aideploy.models.build`.

    Returns:
        The :class:`TrainResult`.
    """
    set_seed(settings.seed)
    model = models.build(kind, **hyperparameters)
    return fit(model, splits, settings)


def default_settings(kind: str) -> TrainSettings:
    """Full-mode or fast-mode training settings for a model kind.

    Full mode trains long enough for the targets the notebooks report (the MLP at
    least 0.88 and the CNN at least 0.91 test accuracy), with early stopping on the
    validation loss; fast mode runs one or two epochs.
    """
    if config.fast_mode():
        return TrainSettings(num_epochs=2, batch_size=64, verbose=0)
    # One line an epoch (verbose=2): a per-step progress bar would fill a
    # notebook's saved output with thousands of lines.
    if kind == "cnn":
        return TrainSettings(num_epochs=15, batch_size=64, early_stopping_patience=3, verbose=2)
    return TrainSettings(num_epochs=40, batch_size=32, early_stopping_patience=5, verbose=2)


def save(
    result: TrainResult,
    path: str | os.PathLike,
    *,
    splits: data.Splits,
    metrics: dict[str, Any] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    produced_by: str = "aideploy.train.save",
) -> tuple[Path, Path]:
    """Save a trained model in the ``.keras`` format, atomically, with its manifest.

    Args:
        result: From :func:`train` or :func:`fit`.
        path: Target file; must end in ``.keras``.
        splits: The data it was trained on (its source and checksums are recorded).
        metrics: E.g. test accuracy from :mod:`aideploy.evaluate`.
        hyperparameters: The model's hyperparameters.
        produced_by: The function or command that trained it.

    Returns:
        ``(model_path, manifest_path)``.

    Raises:
        ConfigError: ``path`` does not end in ``.keras``.
        ArtifactError: The folder cannot be written to.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ConfigError(
            f"model files are saved in the .keras format: {path} must end in .keras "
            f"(e.g. {path.with_suffix('.keras').name})."
        )
    return artifacts.save_artifact(
        path,
        lambda temporary: result.model.save(temporary),
        kind="keras-model",
        produced_by=produced_by,
        inputs={"data": splits.source},
        params={
            "model": result.model.name,
            "hyperparameters": dict(hyperparameters or {}),
            "training": asdict(result.settings),
            "epochs_run": result.epochs_run,
            "parameters": models.count_parameters(result.model),
        },
        metrics={
            **(metrics or {}),
            **result.summary_metrics(),
            "training_seconds": round(result.seconds, 2),
        },
        extra={"versions": {"tensorflow": tf.__version__, "tf_keras": keras.__version__}},
    )


def load_model(path: str | os.PathLike) -> keras.Model:
    """Load a ``.keras`` model saved by :func:`save` (checked against its manifest if present).

    Pruned, clustered and quantization-aware models (``05_quantization.ipynb``)
    load too: their tfmot layers are known inside tfmot's custom-object scopes.

    Raises:
        ArtifactError: The file is missing, does not match its manifest or cannot
            be read as a tf-keras model.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file {path} does not exist: train one with `aideploy train`.")
    if artifacts.manifest_path(path).is_file():
        artifacts.verify(path)
    import tensorflow_model_optimization as tfmot

    try:
        with (
            tfmot.quantization.keras.quantize_scope(),
            tfmot.sparsity.keras.prune_scope(),
            tfmot.clustering.keras.cluster_scope(),
        ):
            return keras.models.load_model(path)
    except Exception as error:  # Keras raises many types for an unreadable file.
        raise ArtifactError(
            f"cannot load {path} as a tf-keras model ({type(error).__name__}: {error}). "
            "Check that the file is complete, or re-create it with `aideploy train`."
        ) from None


def train_and_save(
    kind: str,
    out_dir: str | os.PathLike | None = None,
    *,
    num_epochs: int | None = None,
    seed: int | None = None,
    source: str = "fashion-mnist",
    verbose: int = 1,
    **hyperparameters: Any,
) -> dict[str, Any]:
    """Load data, train a model, evaluate it on the test set and save it with its manifest.

    This is what ``aideploy train`` runs, and what later notebooks call when the
    model of notebook 02 is missing.

    Args:
        kind: ``"mlp"`` or ``"cnn"``.
        out_dir: Folder for ``<kind>.keras`` and its manifest (default: the
            artifacts folder).
        num_epochs: Override the mode's default number of epochs.
        seed: Seed (default: the global seed).
        source: Data source for :func:`aideploy.data.load`.
        verbose: Keras progress output.
        **hyperparameters: Passed to :func:`aideploy.models.build`.

    Returns:
        A summary: ``model``, ``test_accuracy``, ``model_path``, ``manifest_path``,
        ``epochs_run``, ``best_epoch``, ``parameters``, ``training_seconds``, ``seed``.

    Raises:
        ArtifactError: ``out_dir`` cannot be written to (checked before training).
        ConfigError: An invalid setting or hyperparameter.
        DataError: The data cannot be loaded.
    """
    # Check the cheap things first: a bad folder or seed should not cost a training run.
    out_dir = artifacts.writable_dir(config.resolve_out_dir(out_dir))
    seed = config.resolve_seed(seed)
    settings = replace(default_settings(kind), seed=seed, verbose=verbose)
    if num_epochs is not None:
        settings = replace(settings, num_epochs=num_epochs)
    splits = data.load_splits(kind, source=source, seed=seed)
    result = train(kind, splits, settings, **hyperparameters)
    test_report, _ = evaluate.evaluate_model(result.model, splits.x_test, splits.y_test, splits.class_names)
    model_path, manifest_file = save(
        result,
        out_dir / f"{kind}.keras",
        splits=splits,
        metrics={"test_accuracy": test_report.accuracy, "fast_mode": config.fast_mode()},
        hyperparameters=hyperparameters,
        produced_by="aideploy.train.train_and_save",
    )
    return {
        "model": kind,
        "test_accuracy": round(test_report.accuracy, 6),
        "model_path": str(model_path),
        "manifest_path": str(manifest_file),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "parameters": models.count_parameters(result.model),
        "training_seconds": round(result.seconds, 2),
        "seed": seed,
        "fast_mode": config.fast_mode(),
    }


def load_or_train(kind: str = "mlp", out_dir: str | os.PathLike | None = None) -> keras.Model:
    """Load ``<artifacts>/<kind>.keras``, training and saving it first if it is missing.

    Later notebooks call this, so each of them runs on its own.
    """
    out_dir = config.resolve_out_dir(out_dir)
    path = out_dir / f"{kind}.keras"
    if not path.is_file():
        train_and_save(kind, out_dir, verbose=0)
    return load_model(path)
