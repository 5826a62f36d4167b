"""Metrics and plots of the evaluation stage."""

import matplotlib
import numpy as np
import pytest

from aideploy import evaluate

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
    with pytest.raises(ValueError, match="as many predictions as labels"):
        evaluate.report(np.array([0, 1]), np.array([0]), CLASSES)


def test_evaluate_model_matches_keras(trained_mlp, mlp_splits):
    from aideploy import train

    model = train.load_model(trained_mlp["model_path"])
    result, predictions = evaluate.evaluate_model(model, mlp_splits.x_test, mlp_splits.y_test, mlp_splits.class_names)
    _, keras_accuracy = model.evaluate(mlp_splits.x_test, mlp_splits.y_test, verbose=0)
    assert result.accuracy == pytest.approx(keras_accuracy, abs=1e-6)
    assert result.confusion.sum() == len(mlp_splits.y_test)
    assert predictions.shape == mlp_splits.y_test.shape


def test_plots():
    history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.5, 0.8], "val_accuracy": [0.4, 0.7]}
    figure = evaluate.plot_history(history)
    assert len(figure.axes) == 2 and len(figure.axes[0].lines) == 2
    result = evaluate.report(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1]), CLASSES)
    assert "accuracy 0.500" in evaluate.plot_confusion_matrix(result).axes[0].get_title()
    images = np.zeros((4, 784), np.float32)
    grid = evaluate.plot_misclassified(images, np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1]), CLASSES)
    assert sum(1 for axis in grid.axes if axis.images) == 2
