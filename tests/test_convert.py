"""Tests of aideploy.convert: every format round-trips and agrees with tf-keras."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from aideploy import artifacts, convert, runtime
from aideploy.errors import ArtifactError, ConfigError

MAX_ABS_DIFF = 1e-4
MIN_TOP1_AGREEMENT = 0.999


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


def test_pruned_models_export_through_tf2onnx(trained_mlp, mlp_splits, tmp_path):
    """A pruned model (after strip_pruning) is a plain model: tf2onnx and TFLite as usual."""
    import onnx
    import tensorflow_model_optimization as tfmot

    from aideploy import qdq, train

    sparsity = tfmot.sparsity.keras
    schedule = sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = sparsity.prune_low_magnitude(train.load_model(trained_mlp["model_path"]), pruning_schedule=schedule)
    pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    pruned.fit(
        mlp_splits.x_train[:256], mlp_splits.y_train[:256], epochs=1, verbose=0,
        callbacks=[sparsity.UpdatePruningStep()],
    )  # fmt: skip
    stripped = sparsity.strip_pruning(pruned)
    assert not qdq.is_quantization_aware(stripped)
    exports = convert.export_all(stripped, tmp_path, formats=("onnx", "tflite"), name="pruned")
    report = runtime.parity_report(stripped, [e.path for e in exports.values()], mlp_splits.x_test, mlp_splits.y_test)
    assert report.passed(max_abs_diff=MAX_ABS_DIFF, min_top1_agreement=MIN_TOP1_AGREEMENT), report.table()
    kernel = stripped.get_layer("dense_1").kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01)
    assert artifacts.read_manifest(exports["onnx"].path)["params"]["converter"] == "tf2onnx.convert.from_function"
    node_types = {node.op_type for node in onnx.load(str(exports["onnx"].path)).graph.node}
    assert not node_types & {"QuantizeLinear", "DequantizeLinear"}


# --- quantization-aware models: a QDQ graph with TFLite's scales ---------------------

#: Top-1 agreement a QAT model's ONNX export must reach with tf-keras and with
#: its TFLite int8 conversion. Activations that sit on a rounding boundary
#: round to different sides in two runtimes now and then (summation order), so
#: probabilities differ by about one quantization step, not by 1e-4.
MIN_QAT_TOP1_AGREEMENT = 0.995
MAX_QAT_ABS_DIFF = 0.1


def _fine_tuned_quantization_aware(model_path, splits, num_images: int):
    """A tfmot QAT model made from a trained model and fine-tuned for one short epoch."""
    import tensorflow_model_optimization as tfmot

    from aideploy import train
    from aideploy.backend import keras

    keras.utils.set_random_seed(42)
    model = tfmot.quantization.keras.quantize_model(train.load_model(model_path))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(splits.x_train[:num_images], splits.y_train[:num_images], epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def qat_mlp(trained_mlp, mlp_splits):
    return _fine_tuned_quantization_aware(trained_mlp["model_path"], mlp_splits, 256)


@pytest.fixture(scope="module")
def qat_cnn(trained_cnn, cnn_splits):
    return _fine_tuned_quantization_aware(trained_cnn["model_path"], cnn_splits, 384)


def _tflite_int8(model):
    """The TFLite int8 model of a QAT model and a LiteRT interpreter on it (no delegate:
    XNNPACK would report per-tensor weight scales once per channel)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from aideploy.backend import native_stderr_silenced, tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # The converter warns that a QAT model's float input has no statistics: it quantizes it itself.
    with native_stderr_silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        flatbuffer = converter.convert()
    return Interpreter(
        model_content=flatbuffer,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )


def _run_tflite(interpreter, x):
    (input_details,) = interpreter.get_input_details()
    (output_details,) = interpreter.get_output_details()
    interpreter.resize_tensor_input(input_details["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_details["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(output_details["index"])


def test_untrained_quantization_aware_model_is_refused_and_leaves_no_file(trained_mlp, tmp_path):
    import tensorflow_model_optimization as tfmot

    from aideploy import qdq, train

    untrained = tfmot.quantization.keras.quantize_model(train.load_model(trained_mlp["model_path"]))
    assert qdq.is_quantization_aware(untrained)
    # The QuantizeLayer's input range starts at min = max = 0 and is set by the first training step.
    with pytest.raises(
        ArtifactError, match="quantization-aware model 'mlp'.*range of quantize_layer.*unset.*fine-tune"
    ):
        convert.export(untrained, "onnx", tmp_path, name="untrained-qat")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_quantization_aware_model_exports_a_qdq_graph_with_tflites_scales(kind, request, tmp_path):
    import onnx
    from onnx import numpy_helper

    model = request.getfixturevalue(f"qat_{kind}")
    splits = request.getfixturevalue(f"{kind}_splits")
    exports = convert.export_all(model, tmp_path, formats=("onnx", "tflite"), name=f"qat_{kind}")
    onnx_path = exports["onnx"].path

    # Agreement with tf-keras (the parity report) and with the TFLite int8 model.
    report = runtime.parity_report(model, [e.path for e in exports.values()], splits.x_test, splits.y_test)
    assert report.num_examples == 2000
    for row in report.rows:
        assert row.top1_agreement >= MIN_QAT_TOP1_AGREEMENT, report.table()
        assert row.max_abs_diff <= MAX_QAT_ABS_DIFF, report.table()
    interpreter = _tflite_int8(model)
    tflite_top1 = _run_tflite(interpreter, splits.x_test).argmax(axis=1)
    onnx_top1 = runtime.load(onnx_path).predict(splits.x_test).argmax(axis=1)
    assert np.mean(onnx_top1 == tflite_top1) >= MIN_QAT_TOP1_AGREEMENT

    # The graph is QDQ: named input/output, dynamic batch, int8 weights behind DequantizeLinear.
    graph = onnx.load(str(onnx_path)).graph
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producers = {node.output[0]: node for node in graph.node}
    assert [graph.input[0].name, graph.output[0].name] == ["input", "probabilities"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    node_types = [node.op_type for node in graph.node]
    assert node_types.count("QuantizeLinear") >= 4 and "DequantizeLinear" in node_types
    weighted = [node for node in graph.node if node.op_type in ("MatMul", "Conv")]
    assert len(weighted) == {"mlp": 3, "cnn": 4}[kind]
    for node in weighted:
        dequantize = producers[node.input[1]]
        assert dequantize.op_type == "DequantizeLinear"
        assert initializers[dequantize.input[0]].dtype == np.int8

    # Every weight's scale and int8 values equal the TFLite int8 model's.
    tflite_tensors = [d for d in interpreter.get_tensor_details() if d["dtype"] == np.int8]
    for node in weighted:
        dequantize = producers[node.input[1]]
        layer = dequantize.input[0].split("/")[0]
        onnx_weights = initializers[dequantize.input[0]]
        # TFLite stores Dense kernels as (units, inputs) and Conv2D kernels as OHWI; ONNX as (inputs, units) and OIHW.
        expected = onnx_weights.T if onnx_weights.ndim == 2 else onnx_weights.transpose(0, 2, 3, 1)
        (tflite_weights,) = [
            d for d in tflite_tensors if f"/{layer}/" in d["name"] and tuple(d["shape"]) == expected.shape
        ]
        tflite_scale = tflite_weights["quantization_parameters"]["scales"]
        onnx_scale = np.atleast_1d(initializers[dequantize.input[1]])
        assert onnx_scale.shape == tflite_scale.shape, layer
        np.testing.assert_allclose(onnx_scale, tflite_scale, rtol=1e-6, err_msg=layer)
        assert not np.any(initializers[dequantize.input[2]]), layer
        steps = np.abs(interpreter.get_tensor(tflite_weights["index"]).astype(int) - expected)
        assert steps.max() <= 1 and np.mean(steps) < 1e-4, layer  # a tie may round the other way

    # Every activation QuantizeLinear has the scale and zero point of a TFLite int8 tensor.
    tflite_activations = [
        (float(d["quantization_parameters"]["scales"][0]), int(d["quantization_parameters"]["zero_points"][0]))
        for d in tflite_tensors
        if len(d["quantization_parameters"]["scales"]) == 1
    ]
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            scale = float(initializers[node.input[1]])
            zero_point = int(initializers[node.input[2]])
            assert initializers[node.input[2]].dtype == np.int8
            assert any(
                abs(scale - other) <= 1e-6 * other and zero_point == other_zero_point
                for other, other_zero_point in tflite_activations
            ), (node.name, scale, zero_point, tflite_activations)

    params = artifacts.read_manifest(onnx_path)["params"]
    assert params["converter"] == "aideploy.qdq.to_onnx_model"
    assert params["quantization"]["format"] == "QDQ"
    assert "fake_quant_with_min_max_vars" in params["quantization"]["scales_origin"]
    assert len(params["quantization"]["activations"]) == node_types.count("QuantizeLinear")


def test_quantization_aware_export_runs_at_every_supported_opset(qat_mlp, mlp_splits, tmp_path):
    import onnx

    x = mlp_splits.x_test[:200]
    expected = qat_mlp.predict(x, verbose=0).argmax(axis=1)
    for opset in convert.SUPPORTED_OPSETS:
        export = convert.export(qat_mlp, "onnx", tmp_path, name=f"qat-{opset}", opset=opset)
        assert {e.domain: e.version for e in onnx.load(str(export.path)).opset_import}[""] == opset
        assert np.mean(runtime.load(export.path).predict(x).argmax(axis=1) == expected) >= 0.99, opset


def test_quantization_aware_model_with_branches_is_refused_with_the_working_route(mlp_splits, tmp_path):
    import tensorflow_model_optimization as tfmot

    from aideploy.backend import keras

    inputs = keras.Input(shape=(784,), name="input")
    left = keras.layers.Dense(8, activation="relu")(inputs)
    right = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Add()([left, right]))
    model = tfmot.quantization.keras.quantize_model(keras.Model(inputs, outputs, name="branches"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(mlp_splits.x_train[:64], mlp_splits.y_train[:64], epochs=1, verbose=0)
    with pytest.raises(ConfigError, match="chain of layers only.*TFLiteConverter.*Optimize.DEFAULT"):
        convert.export(model, "onnx", tmp_path)
    assert not list(tmp_path.iterdir())


def test_fake_quant_parameters_follow_tensorflows_nudging():
    from aideploy import qdq
    from aideploy.backend import tf

    rng = np.random.default_rng(0)
    values = rng.normal(0, 3, 10_000).astype(np.float32)
    # An asymmetric range whose zero point is nudged, a range above zero and a symmetric narrow one.
    for minimum, maximum, narrow_range in ((-5.9521675, 6.04303, False), (0.5, 4.0, False), (-0.19, 0.19, True)):
        parameters = qdq.fake_quant_parameters(minimum, maximum, narrow_range=narrow_range)
        expected = tf.quantization.fake_quant_with_min_max_vars(
            values, minimum, maximum, num_bits=8, narrow_range=narrow_range
        ).numpy()
        quantized = qdq.quantize_weights(values, parameters)
        dequantized = (quantized.astype(np.float32) - parameters.zero_point) * parameters.scale
        np.testing.assert_allclose(dequantized, expected, atol=1e-6 * max(abs(minimum), abs(maximum)))
    with pytest.raises(ArtifactError, match="empty or non-finite"):
        qdq.fake_quant_parameters(0.0, 0.0)


def test_saved_model_holds_the_weights_but_no_optimizer_state(mlp_exports, trained_mlp, mlp_splits):
    from aideploy import train
    from aideploy.backend import tf

    path = mlp_exports["saved_model"].path
    names = [name for name, _ in tf.train.list_variables(str(path / "variables" / "variables"))]
    assert not [name for name in names if "OPTIMIZER_SLOT" in name or "optimizer" in name.lower()], names
    num_parameters = 55050
    data_bytes = sum(f.stat().st_size for f in (path / "variables").glob("variables.data-*"))
    # float32 parameters plus the checkpoint's object graph; Adam's two slots would triple it.
    assert num_parameters * 4 <= data_bytes <= num_parameters * 4 * 1.1
    model = train.load_model(trained_mlp["model_path"])
    x = mlp_splits.x_test[:500]
    np.testing.assert_array_equal(runtime.load(path).predict(x), model(x, training=False).numpy())


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
