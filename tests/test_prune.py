"""Tests of aideploy.prune: sparsity really in the stripped weights, smaller gzip files, 2:4, clustering."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aideploy import artifacts, prune, runtime, train
from aideploy.errors import ConfigError

#: Fine-tuning images: enough for one short epoch of a few steps.
FINE_TUNE_SIZE = 3000


@pytest.fixture(scope="module")
def fine_tune_splits(mlp_splits):
    return dataclasses.replace(
        mlp_splits, x_train=mlp_splits.x_train[:FINE_TUNE_SIZE], y_train=mlp_splits.y_train[:FINE_TUNE_SIZE]
    )


@pytest.fixture(scope="module")
def base_model(trained_mlp):
    return train.load_model(trained_mlp["model_path"])


@pytest.fixture(scope="module")
def base_sizes(base_model):
    return prune.model_sizes(base_model)


@pytest.fixture(scope="module")
def pruned80(trained_mlp, fine_tune_splits, tmp_path_factory):
    settings = prune.PruneSettings(target_sparsity=0.8, num_epochs=2)
    return prune.prune_and_save(
        trained_mlp["model_path"], tmp_path_factory.mktemp("pruned"), settings=settings, splits=fine_tune_splits
    )


def test_pruning_reaches_the_target_sparsity_in_every_saved_kernel(pruned80, base_model):
    reloaded = train.load_model(pruned80["path"])
    report = prune.weight_report(reloaded)

    assert [row["layer"] for row in report] == ["dense_1", "dense_2", "probabilities"]
    for row in report:
        assert row["sparsity"] == pytest.approx(0.8, abs=0.01), row
    assert prune.overall_sparsity(base_model) < 0.01  # the source model was left dense
    assert pruned80["sparsity"] == pytest.approx(0.8, abs=0.01)


def test_pruned_model_is_smaller_only_once_compressed(pruned80, base_sizes, trained_mlp):
    assert pruned80["tflite_bytes"] == pytest.approx(base_sizes["tflite_bytes"], rel=0.01)
    assert pruned80["tflite_gzip_bytes"] < 0.5 * pruned80["tflite_bytes"]
    assert pruned80["tflite_gzip_bytes"] <= 0.45 * base_sizes["tflite_gzip_bytes"]
    assert pruned80["keras_gzip_bytes"] <= 0.45 * base_sizes["keras_gzip_bytes"]
    assert pruned80["gzip_bytes"] < pruned80["size_bytes"]  # the saved .keras file itself
    assert pruned80["test_accuracy"] >= trained_mlp["test_accuracy"] - 0.10


def test_pruned_model_runs_through_the_runtime_loader(pruned80, mlp_splits):
    predictor = runtime.load(pruned80["path"])
    probabilities = predictor.predict(mlp_splits.x_test[:500])
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    accuracy = np.mean(probabilities.argmax(axis=1) == mlp_splits.y_test[:500])
    assert accuracy == pytest.approx(pruned80["test_accuracy"], abs=0.06)


def test_manifest_records_method_settings_and_source(pruned80, trained_mlp):
    manifest = artifacts.verify(pruned80["path"])
    assert manifest["params"]["method"] == "prune"
    assert manifest["params"]["settings"]["target_sparsity"] == 0.8
    assert manifest["params"]["settings"]["schedule"] == "polynomial"
    assert manifest["inputs"]["source_model"]["sha256"] == artifacts.sha256_of(trained_mlp["model_path"])
    assert manifest["metrics"]["test_accuracy"] == pytest.approx(pruned80["test_accuracy"])


def test_two_four_structure_zeroes_two_of_every_four_weights(base_model, fine_tune_splits):
    result = prune.prune(base_model, fine_tune_splits, prune.PruneSettings(structure="2:4", num_epochs=1))
    assert result.method == "prune-2:4"
    for layer in ("dense_1", "dense_2", "probabilities"):
        kernel = result.model.get_layer(layer).kernel.numpy()
        # tfmot groups four consecutive inputs of each output unit.
        groups = kernel.T.reshape(-1, 4)
        assert np.all((groups == 0).sum(axis=1) >= 2), layer
        assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01)


def test_constant_schedule_prunes_to_the_target(base_model, fine_tune_splits):
    result = prune.prune(base_model, fine_tune_splits, prune.PruneSettings(0.6, schedule="constant", num_epochs=1))
    for row in prune.weight_report(result.model):
        assert row["sparsity"] == pytest.approx(0.6, abs=0.01), row


def test_clustering_leaves_at_most_k_values_per_kernel(base_model, fine_tune_splits, mlp_splits):
    result = prune.cluster(base_model, fine_tune_splits, prune.ClusterSettings(num_clusters=8))
    for row in prune.weight_report(result.model):
        assert 2 <= row["num_unique"] <= 8, row
    base_accuracy = prune.accuracy(base_model, mlp_splits.x_test, mlp_splits.y_test)
    assert prune.accuracy(result.model, mlp_splits.x_test, mlp_splits.y_test) >= base_accuracy - 0.08
    clustered = prune.model_sizes(result.model)
    assert clustered["tflite_gzip_bytes"] < 0.5 * prune.model_sizes(base_model)["tflite_gzip_bytes"]


def test_sweep_measures_each_sparsity(base_model, fine_tune_splits):
    rows = prune.sweep(base_model, fine_tune_splits, [0.5, 0.9], prune.PruneSettings(num_epochs=1))
    assert [row["target_sparsity"] for row in rows] == [0.0, 0.5, 0.9]
    assert [row["sparsity"] for row in rows] == pytest.approx([0.0, 0.5, 0.9], abs=0.01)
    gzip_sizes = [row["tflite_gzip_bytes"] for row in rows]
    assert gzip_sizes[0] > gzip_sizes[1] > gzip_sizes[2]
    assert all(0.0 <= row["test_accuracy"] <= 1.0 for row in rows)


@pytest.mark.parametrize("value", [0, 0.0, 1, 1.0, 1.5, -0.2, "0.5", None, True])
def test_sparsity_outside_the_open_interval_is_rejected(value):
    with pytest.raises(ConfigError, match="sparsity"):
        prune.PruneSettings(target_sparsity=value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: prune.PruneSettings(schedule="cubic"), "unknown pruning schedule 'cubic'"),
        (lambda: prune.PruneSettings(structure="1:4"), "unknown sparsity structure '1:4'"),
        (lambda: prune.PruneSettings(num_epochs=0), "num_epochs"),
        (lambda: prune.ClusterSettings(num_clusters=1), "num_clusters must be a whole number of at least 2"),
        (lambda: prune.ClusterSettings(centroid_init="best"), "unknown centroid_init 'best'"),
    ],
)
def test_bad_settings_say_what_is_wrong(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_sweep_checks_every_sparsity_before_any_work(base_model, fine_tune_splits):
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        prune.sweep(base_model, fine_tune_splits, [0.5, 1.2])


def test_file_sizes_of_a_missing_file_is_an_artifact_error(tmp_path):
    from aideploy.errors import ArtifactError

    with pytest.raises(ArtifactError, match="not a file"):
        prune.file_sizes(tmp_path / "missing.tflite")
