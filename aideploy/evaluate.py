"""Stage 02, evaluation: accuracy, per-class precision / recall / F1, confusion matrix, plots.

Notebook: ``notebooks/02_training.ipynb``.

Metrics come from scikit-learn (well tested, and what readers already know);
this module only shapes them into one report and draws the plots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aideploy.data import IMAGE_SHAPE


@dataclass(frozen=True)
class Report:
    """Evaluation of predictions against true labels.

    Attributes:
        accuracy: Share of correct top-1 predictions.
        per_class: One dict a class: ``name``, ``precision``, ``recall``, ``f1``, ``support``.
        confusion: Confusion matrix, rows = true class, columns = predicted class.
        class_names: Names of the classes.
    """

    accuracy: float
    per_class: list[dict[str, Any]]
    confusion: np.ndarray
    class_names: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        return {
            "accuracy": self.accuracy,
            "per_class": self.per_class,
            "confusion_matrix": self.confusion.tolist(),
            "class_names": list(self.class_names),
        }

    def table(self) -> str:
        """The per-class metrics as a fixed-width text table."""
        width = max(len(name) for name in self.class_names)
        lines = [f"{'class':<{width}}  precision  recall     f1  support"]
        for row in self.per_class:
            lines.append(
                f"{row['name']:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  "
                f"{row['f1']:5.3f}  {row['support']:7d}"
            )
        lines.append(f"{'accuracy':<{width}}  {self.accuracy:9.4f}")
        return "\n".join(lines)


def report(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> Report:
    """Compute accuracy, per-class precision / recall / F1 and the confusion matrix.

    Introduced in ``02_training.ipynb``.

    Args:
        y_true: True class indices, shape (N,).
        y_pred: Predicted class indices, shape (N,).
        class_names: Names of the classes, index = label.

    Returns:
        The :class:`Report`.

    Raises:
        ValueError: The arrays differ in length or are empty.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError(
            f"need as many predictions as labels (and at least one): got "
            f"{len(y_pred)} predictions for {len(y_true)} labels."
        )
    labels = np.arange(len(class_names))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    per_class = [
        {
            "name": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    ]
    return Report(
        accuracy=float(np.mean(y_true == y_pred)),
        per_class=per_class,
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        class_names=tuple(class_names),
    )


def evaluate_model(model: Any, x: np.ndarray, y: np.ndarray, class_names: Sequence[str]) -> tuple[Report, np.ndarray]:
    """Predict with a tf-keras model and build its :class:`Report`.

    Returns:
        ``(report, predicted_classes)``.

    Raises:
        ModelInputError: ``x`` does not fit the model's input.
    """
    from aideploy import models

    probabilities = models.predict_probabilities(model, x)
    predictions = probabilities.argmax(axis=1)
    return report(y, predictions, class_names), predictions


def plot_history(history: Mapping[str, Sequence[float]], *, title: str | None = None):
    """Training curves: loss and accuracy per epoch, training and validation.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + metric)
            if values:
                axis.plot(np.arange(1, len(values) + 1), values, marker="o", label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_confusion_matrix(result: Report, *, normalize: bool = True, title: str | None = None):
    """Heat map of the confusion matrix (rows normalised to recall by default).

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    matrix = result.confusion.astype(float)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(7, 6))
    image = axis.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(result.class_names))
    axis.set_xticks(ticks, result.class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, result.class_names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    threshold = matrix.max() / 2
    for row in ticks:
        for column in ticks:
            value = matrix[row, column]
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            axis.text(column, row, text, ha="center", va="center", fontsize=7,
                      color="white" if value > threshold else "black")
    figure.colorbar(image, ax=axis, fraction=0.046)
    axis.set_title(title or f"Confusion matrix (accuracy {result.accuracy:.3f})")
    figure.tight_layout()
    return figure


def plot_misclassified(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    *,
    num_images: int = 16,
):
    """A grid of misclassified images titled "true -> predicted".

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    wrong = np.flatnonzero(np.asarray(y_true) != np.asarray(y_pred))[:num_images]
    columns = 4
    rows = max(1, int(np.ceil(len(wrong) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows))
    for axis in np.atleast_1d(axes).ravel():
        axis.axis("off")
    for axis, index in zip(np.atleast_1d(axes).ravel(), wrong):
        axis.imshow(np.asarray(images[index]).reshape(IMAGE_SHAPE), cmap="gray_r")
        axis.set_title(
            f"{class_names[int(y_true[index])]}\n-> {class_names[int(y_pred[index])]}",
            fontsize=8,
            color="firebrick",
        )
    figure.suptitle(f"Misclassified test images (first {len(wrong)}): true -> predicted")
    figure.tight_layout()
    return figure
