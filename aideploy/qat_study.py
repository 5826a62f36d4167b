"""Stage 05, the CNN study: does quantization-aware training lose less accuracy than post-training int8?

Notebook: ``notebooks/05_quantization.ipynb``.

:func:`qat_vs_post_training` trains one float model a seed and, from that same
model, makes a post-training int8 TFLite file and a QAT int8 TFLite file with the
same fine-tuning budget, so the accuracy changes it reports are the
quantization's, not extra training's; :class:`QatStudy` holds the rows and
their mean ± standard deviation. The variants themselves are made by
:mod:`aideploy.quantize`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aideploy import config, convert, data, models, prune, train
from aideploy.backend import keras
from aideploy.errors import ConfigError
from aideploy.quantize import DEFAULT_CALIBRATION_SIZE, calibration_images, evaluate_file, quantization_aware, to_tflite


@dataclass
class QatStudy:
    """Post-training int8 against quantization-aware int8, seed by seed: what :func:`qat_vs_post_training` returns.

    Introduced in ``05_quantization.ipynb``.

    Attributes:
        rows: One dict a seed: ``seed``, ``float_accuracy`` (the trained float
            model), ``float_fine_tuned_accuracy`` (the float model after the same
            fine-tuning budget as QAT, the reference), ``post_training_accuracy``,
            ``qat_accuracy`` (the two int8 TFLite models), ``post_training_change_pp``
            and ``qat_change_pp`` (each minus the reference, in percentage points),
            ``qat_minus_post_training_pp``, and ``seconds``.
        protocol: What every seed shared: model kind, epochs, fine-tuning budget,
            learning rate, calibration size, training and test images.
    """

    rows: list[dict[str, Any]]
    protocol: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and sample standard deviation (``ddof=1``; NaN for one seed) of every measured column.

        Returns:
            ``{column: {"mean": ..., "std": ...}}`` for the accuracies and the changes.
        """
        columns = ("float_accuracy", "float_fine_tuned_accuracy", "post_training_accuracy", "qat_accuracy",
                   "post_training_change_pp", "qat_change_pp", "qat_minus_post_training_pp")  # fmt: skip
        summary = {}
        for column in columns:
            values = np.array([row[column] for row in self.rows], dtype=float)
            spread = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            summary[column] = {"mean": float(values.mean()), "std": spread}
        return summary

    def table(self) -> str:
        """Per-seed rows and the mean ± std line, as text (accuracies as fractions, changes in points)."""
        header = (f"{'seed':>6}  {'float':>7}  {'float+ft':>8}  {'PTQ int8':>8}  {'QAT int8':>8}  "
                  f"{'PTQ Δ pp':>13}  {'QAT Δ pp':>13}  {'QAT-PTQ pp':>13}")  # fmt: skip
        lines = [header]
        for row in self.rows:
            lines.append(
                f"{row['seed']:>6}  {row['float_accuracy']:>7.4f}  {row['float_fine_tuned_accuracy']:>8.4f}  "
                f"{row['post_training_accuracy']:>8.4f}  {row['qat_accuracy']:>8.4f}  "
                f"{row['post_training_change_pp']:>+13.2f}  {row['qat_change_pp']:>+13.2f}  "
                f"{row['qat_minus_post_training_pp']:>+13.2f}"
            )
        summary = self.summary()

        def cell(column: str, width: int, digits: int, sign: str = "") -> str:
            text = f"{summary[column]['mean']:{sign}.{digits}f}±{summary[column]['std']:.{digits}f}"
            return f"{text:>{width}}"

        lines.append(
            f"{'mean':>6}  {summary['float_accuracy']['mean']:>7.4f}  "
            f"{summary['float_fine_tuned_accuracy']['mean']:>8.4f}  {summary['post_training_accuracy']['mean']:>8.4f}  "
            f"{summary['qat_accuracy']['mean']:>8.4f}  {cell('post_training_change_pp', 13, 2, '+')}  "
            f"{cell('qat_change_pp', 13, 2, '+')}  {cell('qat_minus_post_training_pp', 13, 2, '+')}"
        )
        return "\n".join(lines)


def qat_vs_post_training(
    model_kind: str = "cnn",
    seeds: Sequence[int] = (0, 1, 2),
    *,
    splits: data.Splits | None = None,
    num_epochs: int | None = None,
    fine_tune_epochs: int = 1,
    batch_size: int = 128,
    learning_rate: float = 1e-4,
    calibration_size: int = DEFAULT_CALIBRATION_SIZE,
    hyperparameters: dict[str, Any] | None = None,
    progress: bool = True,
) -> QatStudy:
    """Does quantization-aware training lose less accuracy than post-training int8? Measured over seeds.

    For each seed, one float model is trained (``num_epochs``, no early stopping,
    so every seed gets the same budget); then, from that same model:

    - **reference**: a copy fine-tuned in float for ``fine_tune_epochs`` with
      Adam at ``learning_rate``;
    - **post-training int8**: that fine-tuned copy converted to a full-integer
      int8 TFLite model, calibrated on ``calibration_size`` training images
      (:func:`to_tflite`, method ``int8``, float input and output);
    - **QAT int8**: another copy made quantization-aware (:func:`quantization_aware`)
      and fine-tuned for the same ``fine_tune_epochs``, learning rate, batch size
      and data, then converted to int8 TFLite.

    So both int8 models had exactly the same training, and each is compared with
    the float model that had it too: the change is the quantization's, not extra
    training's. All accuracies are on ``splits.x_test`` (the whole test set in
    full mode). Introduced in ``05_quantization.ipynb``.

    Args:
        model_kind: ``"cnn"`` or ``"mlp"``.
        seeds: Seeds of weights, shuffling, dropout and the calibration draw; distinct.
        splits: Data (default: :func:`aideploy.data.load_splits` for ``model_kind``).
        num_epochs: Epochs of the float training (default 1 in fast mode, 3 otherwise).
        fine_tune_epochs: Fine-tuning epochs of both the float reference and QAT.
        batch_size: Images a fine-tuning step (the float training uses 64, as
            :func:`aideploy.train.default_settings`).
        learning_rate: Adam's learning rate while fine-tuning.
        calibration_size: Training images the post-training model is calibrated on.
        hyperparameters: Passed to :func:`aideploy.models.build` (e.g. a smaller CNN).
        progress: Print one line a seed.

    Returns:
        The :class:`QatStudy`.

    Raises:
        ConfigError: Unknown model kind, no seed or a duplicate, or invalid budgets.
    """
    if model_kind not in ("mlp", "cnn"):
        raise ConfigError(f"unknown model kind {model_kind!r}: use 'mlp' or 'cnn'.")
    seeds = [int(seed) for seed in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"give one or more distinct seeds, got {seeds}.")
    num_epochs = num_epochs if num_epochs is not None else config.fast_or_full(1, 3)
    if num_epochs < 1 or fine_tune_epochs < 1:
        raise ConfigError(
            f"num_epochs and fine_tune_epochs must be at least 1, got {num_epochs} and {fine_tune_epochs}."
        )
    splits = splits if splits is not None else data.load_splits(model_kind)
    rows = []
    with tempfile.TemporaryDirectory(prefix="aideploy-qat-study-") as folder:
        for seed in seeds:
            started = time.perf_counter()
            keras.backend.clear_session()
            train.set_seed(seed)
            model = models.build(model_kind, **(hyperparameters or {}))
            train.fit(model, splits, train.TrainSettings(num_epochs=num_epochs, batch_size=64, seed=seed, verbose=0))
            float_accuracy = prune.accuracy(model, splits.x_test, splits.y_test)

            reference = keras.models.clone_model(model)
            reference.set_weights(model.get_weights())
            models.compile_model(reference, learning_rate)
            fine_tuning = train.TrainSettings(num_epochs=fine_tune_epochs, batch_size=batch_size, seed=seed, verbose=0)
            train.fit(reference, splits, fine_tuning)
            reference_accuracy = prune.accuracy(reference, splits.x_test, splits.y_test)
            calibration = calibration_images(splits.x_train, calibration_size, seed=seed)
            post_training = to_tflite(reference, Path(folder) / f"ptq-{seed}.tflite", "int8", calibration=calibration)
            post_training_accuracy = evaluate_file(post_training.path, splits.x_test, splits.y_test)

            qat = quantization_aware(model, splits, num_epochs=fine_tune_epochs, batch_size=batch_size,
                                     learning_rate=learning_rate, seed=seed)  # fmt: skip
            qat_tflite = convert.to_tflite(qat.model, Path(folder) / f"qat-{seed}.tflite", optimizations=("DEFAULT",))
            qat_accuracy = evaluate_file(qat_tflite.path, splits.x_test, splits.y_test)
            row = {
                "seed": seed,
                "float_accuracy": round(float_accuracy, 6),
                "float_fine_tuned_accuracy": round(reference_accuracy, 6),
                "post_training_accuracy": round(post_training_accuracy, 6),
                "qat_accuracy": round(qat_accuracy, 6),
                "post_training_change_pp": round((post_training_accuracy - reference_accuracy) * 100, 4),
                "qat_change_pp": round((qat_accuracy - reference_accuracy) * 100, 4),
                "qat_minus_post_training_pp": round((qat_accuracy - post_training_accuracy) * 100, 4),
                "seconds": round(time.perf_counter() - started, 1),
            }
            rows.append(row)
            if progress:
                print(
                    f"seed {seed}: float {row['float_fine_tuned_accuracy']:.4f}, post-training int8 "
                    f"{row['post_training_accuracy']:.4f} ({row['post_training_change_pp']:+.2f} pp), QAT int8 "
                    f"{row['qat_accuracy']:.4f} ({row['qat_change_pp']:+.2f} pp), {row['seconds']:.0f} s",
                    flush=True,
                )
    protocol = {
        "model_kind": model_kind,
        "seeds": seeds,
        "num_epochs": num_epochs,
        "fine_tune_epochs": fine_tune_epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "calibration_size": calibration_size,
        "train_images": len(splits.x_train),
        "test_images": len(splits.x_test),
    }
    return QatStudy(rows=rows, protocol=protocol)
