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
from aideploy.errors import ModelInputError


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
        ModelInputError: The arrays differ in length or are empty.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ModelInputError(
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

    Introduced in ``02_training.ipynb``.

    Args:
        model: A tf-keras classifier.
        x: Inputs shaped for the model (see :func:`aideploy.data.preprocess`).
        y: True class indices.
        class_names: Names of the classes.

    Returns:
        ``(report, predicted_classes)``.

    Raises:
        ModelInputError: ``x`` does not fit the model's input.
    """
    from aideploy import models

    probabilities = models.predict_probabilities(model, x)
    predictions = probabilities.argmax(axis=1)
    return report(y, predictions, class_names), predictions


def plot_history(
    history: Mapping[str, Sequence[float]],
    *,
    best_epoch: int | None = None,
    title: str | None = None,
):
    """Training curves: loss and accuracy per epoch, training and validation.

    Introduced in ``02_training.ipynb``. The legend sits below the plots, where it
    covers no curve.

    Args:
        history: ``{"loss": [...], "val_loss": [...], "accuracy": [...], ...}``,
            one value an epoch (e.g. ``TrainResult.history``).
        best_epoch: The epoch (from 1) whose weights the model keeps (e.g.
            ``TrainResult.best_epoch`` after early stopping): marked with a
            dashed line and its validation values.
        title: Title above the plots.

    Returns:
        The matplotlib figure.

    Raises:
        ModelInputError: ``best_epoch`` is outside the epochs in ``history``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    num_epochs = max((len(values) for values in history.values()), default=0)
    if best_epoch is not None and not 1 <= best_epoch <= num_epochs:
        raise ModelInputError(
            f"best_epoch must be one of the {num_epochs} epochs in the history, got {best_epoch}."
        )
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, label in (("", "training"), ("val_", "validation")):
            values = history.get(prefix + metric)
            if values:
                axis.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        if best_epoch is not None:
            axis.axvline(best_epoch, color="0.4", linestyle="--", linewidth=1,
                         label=f"kept weights (epoch {best_epoch})")
            validation = history.get("val_" + metric)
            if validation:
                value = validation[best_epoch - 1]
                axis.plot([best_epoch], [value], marker="*", markersize=12, color="firebrick",
                          linestyle="none", label="validation at that epoch")
                axis.annotate(f"{value:.4f}", (best_epoch, value), textcoords="offset points",
                              xytext=(6, 6), fontsize=8, color="firebrick")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncol=len(handles), frameon=False)
    if title:
        figure.suptitle(title)
    return figure


def plot_confusion_matrix(result: Report, *, normalize: bool = True, title: str | None = None):
    """Heat map of the confusion matrix (rows normalised to recall by default).

    Introduced in ``02_training.ipynb``. Cells with no image stay blank so that
    the mistakes that do happen stand out; the colour bar says what it measures.

    Args:
        result: From :func:`report`.
        normalize: Show each row as shares of the true class (the diagonal is
            the recall); ``False`` shows image counts.
        title: Title (default: the accuracy).

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    counts = result.confusion
    matrix = counts.astype(float)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(7.5, 6.5), layout="constrained")
    # Masked (zero) cells are drawn in the axes' white background.
    image = axis.imshow(np.ma.masked_equal(matrix, 0.0), cmap="Blues", vmin=0,
                        vmax=max(float(matrix.max()), 1e-12))
    ticks = np.arange(len(result.class_names))
    axis.set_xticks(ticks, result.class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, result.class_names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    threshold = matrix.max() / 2
    for row in ticks:
        for column in ticks:
            if counts[row, column] == 0:
                continue
            value = matrix[row, column]
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            axis.text(column, row, text, ha="center", va="center", fontsize=7,
                      color="white" if value > threshold else "black")
    colorbar = figure.colorbar(image, ax=axis, fraction=0.046)
    colorbar.set_label("share of the true class (row)" if normalize else "images")
    axis.set_title(title or f"Confusion matrix (accuracy {result.accuracy:.3f})")
    return figure


def plot_misclassified(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    *,
    probabilities: np.ndarray | None = None,
    true_class: str | int | None = None,
    num_images: int = 16,
    columns: int = 4,
):
    """A grid of misclassified images, titled with the true and the predicted class.

    Introduced in ``02_training.ipynb``. With ``probabilities`` each title also
    gives the probability the model gave its (wrong) prediction; with
    ``true_class`` only images of that class are shown, e.g. ``true_class="Shirt"``
    to look at the class the confusion matrix points at. The most confident
    mistakes come first when probabilities are given.

    Args:
        images: Images, (N, 784), (N, 28, 28) or (N, 28, 28, 1).
        y_true: True class indices, (N,).
        y_pred: Predicted class indices, (N,).
        class_names: Names of the classes.
        probabilities: Predicted class probabilities, (N, classes), optional.
        true_class: A class name or index to restrict the grid to.
        num_images: At most this many images.
        columns: Images per row.

    Returns:
        The matplotlib figure.

    Raises:
        ModelInputError: Unknown ``true_class`` or arrays of different lengths.
    """
    import matplotlib.pyplot as plt

    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if not len(images) == len(y_true) == len(y_pred):
        raise ModelInputError(
            f"need one label and one prediction per image: got {len(images)} images, "
            f"{len(y_true)} labels and {len(y_pred)} predictions."
        )
    wrong = y_true != y_pred
    label = "Misclassified test images"
    if true_class is not None:
        index = _class_index(true_class, class_names)
        wrong &= y_true == index
        label = f"{class_names[index]} images the model got wrong"
    selected = np.flatnonzero(wrong)
    confidence = None
    if probabilities is not None:
        probabilities = np.asarray(probabilities)
        if probabilities.shape != (len(y_true), len(class_names)):
            raise ModelInputError(
                f"probabilities must have shape ({len(y_true)}, {len(class_names)}), "
                f"got {probabilities.shape}."
            )
        confidence = probabilities[np.arange(len(y_pred)), y_pred]
        # Confident mistakes are the instructive ones: show them first.
        selected = selected[np.argsort(-confidence[selected], kind="stable")]
    selected = selected[:num_images]
    rows = max(1, int(np.ceil(len(selected) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.5 * rows + 0.4),
                                layout="constrained", squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, index in zip(axes.ravel(), selected):
        axis.imshow(np.asarray(images[index]).reshape(IMAGE_SHAPE), cmap="gray_r")
        caption = f"true: {class_names[int(y_true[index])]}\npred: {class_names[int(y_pred[index])]}"
        if confidence is not None:
            caption += f" ({confidence[index]:.0%})"
        axis.set_title(caption, fontsize=8, color="firebrick")
    order = ", most confident first" if confidence is not None else ""
    figure.suptitle(f"{label} ({len(selected)} of {int(wrong.sum())} shown{order})")
    return figure


def _class_index(name_or_index: str | int, class_names: Sequence[str]) -> int:
    if isinstance(name_or_index, (int, np.integer)):
        if 0 <= int(name_or_index) < len(class_names):
            return int(name_or_index)
    elif name_or_index in class_names:
        return list(class_names).index(name_or_index)
    raise ModelInputError(
        f"unknown class {name_or_index!r}: use one of {', '.join(class_names)} or its index."
    )
