"""Tests of aideploy.qat_study: QAT against post-training int8, seed by seed, on the same float budget."""

from __future__ import annotations

import numpy as np
import pytest

from aideploy import data, qat_study
from aideploy.errors import ConfigError


def test_qat_vs_post_training_measures_both_int8_models_against_the_same_float_budget(cnn_splits):
    small = data.Splits(cnn_splits.x_train[:1200], cnn_splits.y_train[:1200], cnn_splits.x_val[:200],
                        cnn_splits.y_val[:200], cnn_splits.x_test[:500], cnn_splits.y_test[:500],
                        cnn_splits.class_names)  # fmt: skip
    study = qat_study.qat_vs_post_training(
        "cnn", seeds=(0, 1), splits=small, num_epochs=2, calibration_size=100,
        hyperparameters={"filters": (8, 16), "dense_units": 32}, progress=False,
    )  # fmt: skip

    assert [row["seed"] for row in study.rows] == [0, 1]
    for row in study.rows:
        # A tiny CNN on 1,200 images still learns well above chance (0.10); it reached 0.54-0.64.
        assert row["float_fine_tuned_accuracy"] > 0.3
        # Both int8 models stay close to the float model that had the same training.
        assert abs(row["post_training_change_pp"]) < 5 and abs(row["qat_change_pp"]) < 5, row
        expected = (row["qat_accuracy"] - row["float_fine_tuned_accuracy"]) * 100
        assert row["qat_change_pp"] == pytest.approx(expected, abs=1e-3)
        difference = (row["qat_accuracy"] - row["post_training_accuracy"]) * 100
        assert row["qat_minus_post_training_pp"] == pytest.approx(difference, abs=1e-3)
    summary = study.summary()
    changes = [row["post_training_change_pp"] for row in study.rows]
    assert summary["post_training_change_pp"]["mean"] == pytest.approx(np.mean(changes))
    assert summary["post_training_change_pp"]["std"] == pytest.approx(np.std(changes, ddof=1))
    assert study.protocol["test_images"] == 500 and study.protocol["fine_tune_epochs"] == 1
    assert "±" in study.table().splitlines()[-1]


@pytest.mark.parametrize(
    "arguments", [{"model_kind": "rnn"}, {"seeds": (1, 1)}, {"seeds": ()}, {"fine_tune_epochs": 0}]
)
def test_qat_study_rejects_bad_settings_before_training(arguments):
    with pytest.raises(ConfigError):
        qat_study.qat_vs_post_training(**{"model_kind": "cnn", **arguments}, splits=object(), progress=False)
