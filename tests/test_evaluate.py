"""Metrics and plots of the evaluation stage."""

import matplotlib
import numpy as np
import pytest

from aideploy import evaluate
from aideploy.errors import ModelInputError

matplotlib.use("Agg")

CLASSES = ("a", "b", "c")


def test_report_numbers():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    result = evaluate.report(y_true, y_pred, CLASSES)
    assert result.accuracy == pytest.approx(4 / 6)
    by_name = {row["name"]: row for row in result.per_class}
    assert by_name["a"]["precision"] == pytest.approx(0.5)
    assert by_name["b"]["recall"] == pytest.approx(1.0)
    assert by_name["b"]["precision"] == pytest.approx(2 / 3)
    assert by_name["c"]["f1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert result.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert "accuracy" in result.table() and result.to_dict()["class_names"] == list(CLASSES)


def test_report_rejects_mismatched_lengths():
    with pytest.raises(ModelInputError, match="as many predictions as labels"):
        evaluate.report(np.array([0, 1]), np.array([0]), CLASSES)


def test_evaluate_model_matches_keras(trained_mlp, mlp_splits):
    from aideploy import train

    model = train.load_model(trained_mlp["model_path"])
    result, predictions = evaluate.evaluate_model(model, mlp_splits.x_test, mlp_splits.y_test, mlp_splits.class_names)
    _, keras_accuracy = model.evaluate(mlp_splits.x_test, mlp_splits.y_test, verbose=0)
    assert result.accuracy == pytest.approx(keras_accuracy, abs=1e-6)
    assert result.confusion.sum() == len(mlp_splits.y_test)
    assert predictions.shape == mlp_splits.y_test.shape


HISTORY = {"loss": [1.0, 0.5, 0.4], "val_loss": [1.1, 0.7, 0.8],
           "accuracy": [0.5, 0.8, 0.85], "val_accuracy": [0.4, 0.7, 0.69]}


def test_history_plot_marks_the_kept_epoch():
    figure = evaluate.plot_history(HISTORY, best_epoch=2, title="curves")
    loss_axis, accuracy_axis = figure.axes
    # training, validation, the kept epoch's line and its marker
    assert len(loss_axis.lines) == 4
    marker = accuracy_axis.lines[-1]
    assert marker.get_xdata().tolist() == [2] and marker.get_ydata().tolist() == [0.7]
    assert any(text.get_text() == "0.7000" for text in accuracy_axis.texts)
    # One legend for the figure, outside both plots (none inside an axis).
    assert loss_axis.get_legend() is None and accuracy_axis.get_legend() is None
    (legend,) = figure.legends
    assert "kept weights (epoch 2)" in [text.get_text() for text in legend.get_texts()]
    figure.canvas.draw()
    legend_box = legend.get_window_extent()
    for axis in figure.axes:
        assert not legend_box.overlaps(axis.get_window_extent())
    assert len(evaluate.plot_history(HISTORY).axes[0].lines) == 2  # nothing marked
    with pytest.raises(ModelInputError, match="best_epoch must be one of the 3 epochs"):
        evaluate.plot_history(HISTORY, best_epoch=4)


def test_confusion_matrix_hides_zero_cells_and_labels_its_colour_bar():
    result = evaluate.report(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1]), CLASSES)
    figure = evaluate.plot_confusion_matrix(result)
    axis, colorbar_axis = figure.axes
    assert "accuracy 0.500" in axis.get_title()
    # Four non-zero cells of nine carry a number; the zeros stay blank.
    assert sorted(text.get_text() for text in axis.texts) == ["0.50", "0.50", "1.00", "1.00"]
    assert colorbar_axis.get_ylabel() == "share of the true class (row)"
    counts = evaluate.plot_confusion_matrix(result, normalize=False)
    assert counts.axes[1].get_ylabel() == "images"
    assert sorted(text.get_text() for text in counts.axes[0].texts) == ["1", "1", "1", "1"]


def test_misclassified_grid_shows_a_chosen_class_with_probabilities():
    images = np.zeros((6, 784), np.float32)
    y_true = np.array([0, 1, 2, 2, 2, 1])
    y_pred = np.array([0, 2, 1, 0, 2, 0])
    probabilities = np.full((6, 3), 0.1)
    probabilities[np.arange(6), y_pred] = [0.8, 0.6, 0.55, 0.9, 0.8, 0.7]
    figure = evaluate.plot_misclassified(images, y_true, y_pred, CLASSES, probabilities=probabilities,
                                         true_class="c")
    titles = [axis.get_title() for axis in figure.axes if axis.images]
    # Only class "c" mistakes, the most confident first, with the predicted class's probability.
    assert titles == ["true: c\npred: a (90%)", "true: c\npred: b (55%)"]
    assert "c images the model got wrong (2 of 2 shown" in figure._suptitle.get_text()
    every = evaluate.plot_misclassified(images, y_true, y_pred, CLASSES)
    assert sum(1 for axis in every.axes if axis.images) == 4
    with pytest.raises(ModelInputError, match="unknown class 'd'"):
        evaluate.plot_misclassified(images, y_true, y_pred, CLASSES, true_class="d")
    with pytest.raises(ModelInputError, match="probabilities must have shape"):
        evaluate.plot_misclassified(images, y_true, y_pred, CLASSES, probabilities=probabilities[:, :2])
