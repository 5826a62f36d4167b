"""Tests of aideploy.convert: every format round-trips and agrees with tf-keras."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aideploy import artifacts, convert, runtime
from aideploy.errors import ArtifactError, ConfigError

MAX_ABS_DIFF = 1e-4
MIN_TOP1_AGREEMENT = 0.999


@pytest.fixture(scope="module")
def mlp_exports(trained_mlp, tmp_path_factory):
    return convert.export_all(trained_mlp["model_path"], tmp_path_factory.mktemp("mlp-exports"))


@pytest.fixture(scope="module")
def cnn_exports(trained_cnn, tmp_path_factory):
    return convert.export_all(trained_cnn["model_path"], tmp_path_factory.mktemp("cnn-exports"))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_every_format_agrees_with_keras_on_the_whole_test_set(kind, request):
    summary = request.getfixturevalue(f"trained_{kind}")
    exports = request.getfixturevalue(f"{kind}_exports")
    splits = request.getfixturevalue(f"{kind}_splits")

    report = runtime.parity_report(
        summary["model_path"], [e.path for e in exports.values()], splits.x_test, splits.y_test
    )

    assert report.num_examples == len(splits.y_test) == 2000
    assert sorted(row.runtime for row in report.rows) == ["onnxruntime", "saved_model", "tflite"]
    for row in report.rows:
        assert row.max_abs_diff <= MAX_ABS_DIFF, row
        assert row.top1_agreement >= MIN_TOP1_AGREEMENT, row
        assert row.accuracy == pytest.approx(report.reference_accuracy, abs=1e-3)
    assert report.passed()
    # The reference accuracy is the trained model's own test accuracy.
    assert report.reference_accuracy == pytest.approx(summary["test_accuracy"], abs=1e-6)


def test_exports_are_named_after_the_source_model(mlp_exports):
    names = {fmt: export.path.name for fmt, export in mlp_exports.items()}
    assert names == {"onnx": "mlp.onnx", "tflite": "mlp.tflite", "saved_model": "mlp_saved_model"}
    assert mlp_exports["saved_model"].path.is_dir()
    assert (mlp_exports["saved_model"].path / "saved_model.pb").is_file()


@pytest.mark.parametrize("fmt", convert.FORMATS)
def test_manifest_records_source_format_and_signature(fmt, mlp_exports, trained_mlp):
    export = mlp_exports[fmt]
    manifest = artifacts.verify(export.path)  # also checks the export's SHA-256

    assert manifest["sha256"] == export.sha256 == artifacts.sha256_of(export.path)
    assert manifest["format"] == fmt
    assert manifest["inputs"]["source_model"]["sha256"] == artifacts.sha256_of(trained_mlp["model_path"])
    assert manifest["signature"] == {
        "inputs": [{"name": "input", "shape": [None, 784], "dtype": "float32"}],
        "outputs": [{"name": "probabilities", "shape": [None, 10], "dtype": "float32"}],
    }
    assert "tensorflow" in manifest["converter_versions"]
    if fmt == "onnx":
        assert manifest["opset"] == convert.DEFAULT_OPSET
        assert "tf2onnx" in manifest["converter_versions"]


def test_onnx_graph_is_checked_named_and_has_a_dynamic_batch(mlp_exports):
    import onnx
    import onnxruntime

    model = onnx.load(str(mlp_exports["onnx"].path))
    onnx.checker.check_model(model, full_check=True)
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == "input"
    assert graph_output.name == "probabilities"
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim[1:]] == [784]
    opsets = {entry.domain: entry.version for entry in model.opset_import}
    assert opsets[""] == convert.DEFAULT_OPSET

    # A plain InferenceSession runs it at any batch size.
    session = onnxruntime.InferenceSession(str(mlp_exports["onnx"].path), providers=["CPUExecutionProvider"])
    for batch_size in (1, 5):
        (probabilities,) = session.run(["probabilities"], {"input": np.zeros((batch_size, 784), np.float32)})
        assert probabilities.shape == (batch_size, 10)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_onnx_opset_is_chosen_and_recorded(trained_mlp, tmp_path):
    import onnx

    export = convert.export(trained_mlp["model_path"], "onnx", tmp_path, opset=15)
    model = onnx.load(str(export.path))
    assert {entry.domain: entry.version for entry in model.opset_import}[""] == 15
    assert artifacts.read_manifest(export.path)["params"]["opset"] == 15


def test_in_memory_model_records_a_weights_fingerprint(trained_mlp, tmp_path):
    from aideploy import train

    model = train.load_model(trained_mlp["model_path"])
    export = convert.export(model, "tflite", tmp_path)
    source = artifacts.read_manifest(export.path)["inputs"]["source_model"]
    assert export.path.name == "mlp.tflite"
    assert source["path"] is None
    assert len(source["weights_sha256"]) == 64


def test_pruned_and_quantization_aware_models_export(trained_mlp, mlp_splits, tmp_path):
    """Models wrapped by tensorflow-model-optimization convert through the same routes."""
    import tensorflow_model_optimization as tfmot

    from aideploy import train

    sparsity = tfmot.sparsity.keras
    schedule = sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = sparsity.prune_low_magnitude(train.load_model(trained_mlp["model_path"]), pruning_schedule=schedule)
    pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    pruned.fit(
        mlp_splits.x_train[:256], mlp_splits.y_train[:256], epochs=1, verbose=0,
        callbacks=[sparsity.UpdatePruningStep()],
    )  # fmt: skip
    stripped = sparsity.strip_pruning(pruned)
    exports = convert.export_all(stripped, tmp_path, formats=("onnx", "tflite"), name="pruned")
    report = runtime.parity_report(
        stripped, [e.path for e in exports.values()], mlp_splits.x_test, mlp_splits.y_test
    )
    assert report.passed(max_abs_diff=MAX_ABS_DIFF, min_top1_agreement=MIN_TOP1_AGREEMENT), report.table()
    kernel = stripped.get_layer("dense_1").kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01)

    quantization_aware = tfmot.quantization.keras.quantize_model(train.load_model(trained_mlp["model_path"]))
    # Before any training step the fake-quant ranges are unset and tf2onnx
    # cannot convert them: the checker catches it and the error says why.
    with pytest.raises(ArtifactError, match="invalid ONNX graph.*quantization-aware"):
        convert.export(quantization_aware, "onnx", tmp_path, name="untrained-qat")
    assert not (tmp_path / "untrained-qat.onnx").exists()
    quantization_aware.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    quantization_aware.fit(mlp_splits.x_train[:256], mlp_splits.y_train[:256], epochs=1, verbose=0)
    exports = convert.export_all(quantization_aware, tmp_path, formats=("onnx", "tflite"), name="qat")
    report = runtime.parity_report(
        quantization_aware, [e.path for e in exports.values()], mlp_splits.x_test, mlp_splits.y_test
    )
    # Fake-quantized activations round to different sides of a quantization
    # step in TensorFlow and in ONNX's QuantizeLinear now and then, so QAT
    # models agree on the class but not to 1e-4 in the probabilities.
    for row in report.rows:
        assert row.top1_agreement >= 0.98, report.table()
        assert row.max_abs_diff <= 0.1, report.table()


def test_unknown_format_is_a_config_error(trained_mlp, tmp_path):
    with pytest.raises(ConfigError, match="unknown export format 'torchscript'.*onnx"):
        convert.export(trained_mlp["model_path"], "torchscript", tmp_path)


def test_unsupported_opset_is_a_config_error(trained_mlp, tmp_path):
    with pytest.raises(ConfigError, match="opset 7 is not supported"):
        convert.export(trained_mlp["model_path"], "onnx", tmp_path, opset=7)


def test_missing_model_file_says_how_to_get_one(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist.*aideploy train"):
        convert.export(tmp_path / "missing.keras", "onnx", tmp_path)
    assert not list(tmp_path.iterdir())


def test_unreadable_model_file_is_an_artifact_error(tmp_path):
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"this is not a zip archive")
    with pytest.raises(ArtifactError, match="cannot load .*broken.keras"):
        convert.export(broken, "onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_model_file_changed_after_training_is_refused(trained_mlp, tmp_path):
    import shutil

    copy = tmp_path / "mlp.keras"
    shutil.copy(trained_mlp["model_path"], copy)
    manifest = json.loads(artifacts.manifest_path(trained_mlp["model_path"]).read_text())
    manifest["sha256"] = "0" * 64
    artifacts.manifest_path(copy).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        convert.export(copy, "onnx", tmp_path / "out")


def test_non_keras_path_is_refused(tmp_path):
    other = tmp_path / "model.pt"
    other.write_bytes(b"\0")
    with pytest.raises(ArtifactError, match="not a Keras model file"):
        convert.export(other, "onnx", tmp_path)


def test_onnx_summary_lists_inputs_outputs_and_nodes(mlp_exports, tmp_path):
    summary = convert.onnx_summary(mlp_exports["onnx"].path)
    assert summary["inputs"] == [{"name": "input", "shape": ["batch", 784], "dtype": "float32"}]
    assert summary["outputs"] == [{"name": "probabilities", "shape": ["batch", 10], "dtype": "float32"}]
    assert summary["opsets"]["ai.onnx"] == convert.DEFAULT_OPSET
    assert summary["node_counts"] == {"Add": 3, "MatMul": 3, "Relu": 2, "Softmax": 1}
    # 784*64 + 64 + 64*64 + 64 + 64*10 + 10 weights of the 784-64-64-10 MLP
    assert summary["num_parameters"] == 55050
    (tmp_path / "broken.onnx").write_bytes(b"\xff\xff not protobuf")
    with pytest.raises(ArtifactError, match="cannot read .*broken.onnx"):
        convert.onnx_summary(tmp_path / "broken.onnx")
