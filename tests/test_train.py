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


def test_early_stopping_stops_and_restores(mlp_splits):
    # A learning rate this large makes the validation loss stop improving at once.
    result = train.train(
        "mlp", mlp_splits, train.TrainSettings(num_epochs=30, early_stopping_patience=1, verbose=0),
        learning_rate=0.5,
    )
    assert result.epochs_run < 30


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
    with pytest.raises(ValueError, match=".keras"):
        train.save(None, tmp_path / "model.h5", splits=None)


def test_load_or_train_trains_once(tmp_path):
    model = train.load_or_train("mlp", tmp_path)
    assert (tmp_path / "mlp.keras").is_file()
    modified = (tmp_path / "mlp.keras").stat().st_mtime_ns
    again = train.load_or_train("mlp", tmp_path)
    assert (tmp_path / "mlp.keras").stat().st_mtime_ns == modified
    assert again.count_params() == model.count_params()
