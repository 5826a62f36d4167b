"""Retraining candidates under one protocol over several seeds (``tune.compare_over_seeds``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aideploy import tune
from aideploy.errors import ConfigError

SMALL = {"num_layers": 1, "units": 16, "dropout": 0.0, "learning_rate": 3e-3, "batch_size": 256}
WIDER = {"num_layers": 1, "units": 32, "dropout": 0.0, "learning_rate": 3e-3, "batch_size": 256}


@pytest.fixture(scope="module")
def comparison(mlp_splits):
    # The same configuration twice: with the same seeds it must give the same numbers.
    return tune.compare_over_seeds(
        {"small": SMALL, "small again": SMALL, "wider": WIDER}, seeds=(3, 4), splits=mlp_splits, num_epochs=2,
        early_stopping_patience=None, progress=False,
    )


def test_every_candidate_runs_every_seed_under_one_protocol(comparison, mlp_splits):
    assert [(row["label"], row["seed"]) for row in comparison.rows] == [
        ("small", 3), ("small", 4), ("small again", 3), ("small again", 4), ("wider", 3), ("wider", 4),
    ]
    assert comparison.protocol == {
        "kind": "mlp", "max_epochs": 2, "early_stopping_patience": None, "train_images": 5400,
        "val_images": 600, "test_images": 2000, "seeds": [3, 4],
    }
    assert {row["epochs_run"] for row in comparison.rows} == {2}
    parameters = {row["label"]: row["parameters"] for row in comparison.rows}
    assert parameters == {"small": 784 * 16 + 16 + 16 * 10 + 10, "small again": 784 * 16 + 16 + 16 * 10 + 10,
                          "wider": 784 * 32 + 32 + 32 * 10 + 10}
    for row in comparison.rows:
        assert 0.5 < row["test_accuracy"] <= 1.0 and 0.5 < row["val_accuracy"] <= 1.0


def test_the_same_candidate_and_seed_give_the_same_result(comparison):
    assert np.array_equal(comparison.accuracies("small"), comparison.accuracies("small again"))
    # Different seeds give different models.
    assert comparison.accuracies("small")[0] != comparison.accuracies("small")[1]
    assert comparison.paired_difference("small again", "small") == (0.0, 0.0)


def test_summary_and_table_report_mean_and_sample_std(comparison):
    summary = {row["label"]: row for row in comparison.summary()}
    wider = comparison.accuracies("wider")
    assert summary["wider"]["n"] == 2
    assert summary["wider"]["test_accuracy_mean"] == pytest.approx(wider.mean())
    assert summary["wider"]["test_accuracy_std"] == pytest.approx(abs(wider[0] - wider[1]) / math.sqrt(2))
    mean, spread = comparison.paired_difference("wider", "small")
    assert mean == pytest.approx(wider.mean() - comparison.accuracies("small").mean())
    assert spread >= 0
    table = comparison.table()
    assert len(table.splitlines()) == 4
    assert f"{summary['wider']['test_accuracy_mean']:.4f} ± {summary['wider']['test_accuracy_std']:.4f}" in table
    figure = comparison.plot()
    assert len(figure.axes[0].collections) >= 3  # one set of dots per candidate


def test_early_stopping_defaults_to_the_training_protocol(mlp_splits):
    # Fast mode trains 2 epochs without early stopping (train.default_settings).
    result = tune.compare_over_seeds({"small": SMALL}, seeds=(1,), splits=mlp_splits, progress=False)
    assert result.protocol["max_epochs"] == 2 and result.protocol["early_stopping_patience"] is None
    assert math.isnan(result.summary()[0]["test_accuracy_std"])


@pytest.mark.parametrize(
    ("candidates", "seeds", "message"),
    [
        ({}, (0,), "at least one candidate"),
        ({"small": SMALL}, (), "distinct seeds"),
        ({"small": SMALL}, (1, 1), "distinct seeds"),
        ({"small": {"units": 16}}, (1,), "lack"),
    ],
)
def test_bad_comparisons_fail_before_training(candidates, seeds, message):
    with pytest.raises(ConfigError, match=message):
        tune.compare_over_seeds(candidates, seeds=seeds, progress=False)
