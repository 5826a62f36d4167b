"""Training, saving with a manifest, repeatability."""

import json

import numpy as np
import pytest

from aideploy import artifacts, train
from aideploy.backend import keras
from aideploy.errors import ArtifactError, ConfigError


def test_training_learns(mlp_splits):
    result = train.train("mlp", mlp_splits, train.TrainSettings(num_epochs=2, verbose=0))
    assert result.epochs_run == 2
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert result.history["loss"][1] < result.history["loss"][0]
    # Ten classes: chance is 0.1; two epochs on 5,400 images reach well above 0.6.
    assert result.history["val_accuracy"][-1] > 0.6


def test_early_stopping_restores_the_best_epoch_and_the_manifest_records_it(mlp_splits, tmp_path):
    # A learning rate this large makes the validation loss stop improving at once.
    result = train.train(
        "mlp", mlp_splits, train.TrainSettings(num_epochs=30, early_stopping_patience=1, verbose=0),
        learning_rate=0.5,
    )
    assert result.epochs_run < 30
    # Patience 1: training stops one epoch after the best one.
    assert result.best_epoch == result.epochs_run - 1
    assert result.best_epoch == int(np.argmin(result.history["val_loss"])) + 1
    # The model holds the best epoch's weights: it scores that epoch's validation loss.
    val_loss, val_accuracy = result.model.evaluate(mlp_splits.x_val, mlp_splits.y_val, verbose=0)
    best = result.best_epoch - 1
    assert val_loss == pytest.approx(result.history["val_loss"][best], rel=1e-4)
    assert val_accuracy == pytest.approx(result.history["val_accuracy"][best], abs=1e-6)

    _, manifest_file = train.save(result, tmp_path / "mlp.keras", splits=mlp_splits)
    metrics = json.loads(manifest_file.read_text())["metrics"]
    assert metrics["best_epoch"] == result.best_epoch and metrics["last_epoch"] == result.epochs_run
    assert metrics["best_val_accuracy"] == pytest.approx(result.history["val_accuracy"][best])
    assert metrics["best_val_loss"] == pytest.approx(result.history["val_loss"][best])
    assert metrics["last_val_accuracy"] == pytest.approx(result.history["val_accuracy"][-1])
    assert metrics["last_val_loss"] == pytest.approx(result.history["val_loss"][-1])
    assert metrics["best_val_loss"] < metrics["last_val_loss"]
    assert "final_val_accuracy" not in metrics


def test_without_early_stopping_the_last_epoch_is_kept(mlp_splits):
    history = {"loss": [0.5, 0.4, 0.6], "val_loss": [0.5, 0.3, 0.4]}
    kept = train.TrainResult(model=None, history=history, settings=train.TrainSettings(num_epochs=3), seconds=1.0)
    assert kept.best_epoch == 3 and kept.summary_metrics()["best_val_loss"] == 0.4
    stopped = train.TrainResult(
        model=None, history=history, seconds=1.0,
        settings=train.TrainSettings(num_epochs=9, early_stopping_patience=1),
    )
    assert stopped.best_epoch == 2
    assert stopped.summary_metrics() == {
        "best_epoch": 2, "last_epoch": 3, "best_val_loss": 0.3, "best_train_loss": 0.4,
        "last_val_loss": 0.4, "last_train_loss": 0.6,
    }
    with pytest.raises(ConfigError, match="epoch must be between 1 and 3"):
        stopped.epoch_metrics(4)


def test_same_seed_same_result(tmp_path):
    first = train.train_and_save("mlp", tmp_path / "a", num_epochs=2, seed=5, verbose=0)
    second = train.train_and_save("mlp", tmp_path / "b", num_epochs=2, seed=5, verbose=0)
    assert first["test_accuracy"] == second["test_accuracy"]
    weights_a = train.load_model(first["model_path"]).get_weights()
    weights_b = train.load_model(second["model_path"]).get_weights()
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)


def test_saved_model_loads_and_matches_manifest(trained_mlp):
    model = keras.models.load_model(trained_mlp["model_path"])
    manifest = json.loads(open(trained_mlp["manifest_path"]).read())
    assert manifest["sha256"] == artifacts.sha256_of(trained_mlp["model_path"])
    assert manifest["kind"] == "keras-model"
    assert manifest["metrics"]["test_accuracy"] == pytest.approx(trained_mlp["test_accuracy"], abs=1e-6)
    assert manifest["inputs"]["data"]["checksums"]["t10k-images-idx3-ubyte.gz"].startswith("cc1d090a")
    assert manifest["params"]["parameters"] == 55050
    assert model.count_params() == 55050


def test_load_model_rejects_a_tampered_file(tmp_path, trained_mlp):
    import shutil

    copy = tmp_path / "mlp.keras"
    shutil.copy(trained_mlp["model_path"], copy)
    shutil.copy(trained_mlp["manifest_path"], artifacts.manifest_path(copy))
    with open(copy, "ab") as handle:
        handle.write(b"extra")
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        train.load_model(copy)
    with pytest.raises(ArtifactError, match="does not exist"):
        train.load_model(tmp_path / "missing.keras")


def test_bad_settings_and_paths(trained_mlp, tmp_path):
    with pytest.raises(ConfigError, match="num_epochs"):
        train.TrainSettings(num_epochs=0)
    with pytest.raises(ConfigError, match="batch_size"):
        train.TrainSettings(batch_size=0)
    with pytest.raises(ConfigError, match=r"must end in .keras \(e.g. model.keras\)"):
        train.save(None, tmp_path / "model.h5", splits=None)


def test_unwritable_output_folder_fails_before_training(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")

    def no_training(*args, **kwargs):
        raise AssertionError("training started although the folder cannot be written")

    monkeypatch.setattr(train, "train", no_training)
    with pytest.raises(ArtifactError, match=r"cannot write to .*file/out .*choose a writable folder with --out"):
        train.train_and_save("mlp", blocker / "out", num_epochs=1, verbose=0)


def test_load_or_train_trains_once(tmp_path):
    model = train.load_or_train("mlp", tmp_path)
    assert (tmp_path / "mlp.keras").is_file()
    modified = (tmp_path / "mlp.keras").stat().st_mtime_ns
    again = train.load_or_train("mlp", tmp_path)
    assert (tmp_path / "mlp.keras").stat().st_mtime_ns == modified
    assert again.count_params() == model.count_params()
