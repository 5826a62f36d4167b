"""Tests of aideploy.quantize: every variant loads, takes float images, agrees with the float model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aideploy import artifacts, convert, quantize, runtime, train
from aideploy.errors import ConfigError, ModelInputError

CALIBRATION_SIZE = 200
#: Post-training variants of the MLP: (method, keyword arguments, file name).
VARIANTS = {
    "dynamic": ("dynamic", {}),
    "float16": ("float16", {}),
    "int8": ("int8", {}),
    "int8-int8io": ("int8", {"io_dtype": "int8"}),
    "int8-uint8io": ("int8", {"io_dtype": "uint8"}),
    "int16x8": ("int16x8", {}),
    "ort-dynamic": ("ort-dynamic", {}),
    "ort-static": ("ort-static", {}),
    "ort-static-entropy": ("ort-static", {"calibration_method": "entropy", "per_channel": False}),
}
#: Full-integer variants must agree with the float model on this share of test images.
MIN_INT8_AGREEMENT = 0.97


@pytest.fixture(scope="module")
def mlp_variants(trained_mlp, mlp_splits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantized")
    return {
        key: quantize.quantize(trained_mlp["model_path"], method, folder, splits=mlp_splits,
                               calibration_size=CALIBRATION_SIZE, name=f"mlp-{key}", **options)  # fmt: skip
        for key, (method, options) in VARIANTS.items()
    }


@pytest.fixture(scope="module")
def float_outputs(trained_mlp, mlp_splits):
    return runtime.load(trained_mlp["model_path"]).predict(mlp_splits.x_test)


@pytest.fixture(scope="module")
def float_tflite_bytes(trained_mlp, tmp_path_factory):
    model = train.load_model(trained_mlp["model_path"])
    return convert.to_tflite(model, tmp_path_factory.mktemp("fp32") / "mlp.tflite").size_bytes


@pytest.mark.parametrize("key", list(VARIANTS))
def test_every_variant_takes_floats_and_agrees_with_the_float_model(key, mlp_variants, float_outputs, mlp_splits,
                                                                    trained_mlp):  # fmt: skip
    variant = mlp_variants[key]
    probabilities = quantize.predict_file(variant["path"], mlp_splits.x_test)

    assert probabilities.dtype == np.float32 and probabilities.shape == float_outputs.shape
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=0.03)
    agreement = np.mean(probabilities.argmax(axis=1) == float_outputs.argmax(axis=1))
    assert agreement >= MIN_INT8_AGREEMENT, (key, agreement)
    assert variant["test_accuracy"] == pytest.approx(trained_mlp["test_accuracy"], abs=0.02)
    assert 0 < variant["gzip_bytes"] < variant["size_bytes"]


@pytest.mark.parametrize(("key", "max_ratio"), [("int8", 0.30), ("int8-int8io", 0.30), ("dynamic", 0.30),
                                                ("float16", 0.55), ("int16x8", 0.32)])  # fmt: skip
def test_tflite_variants_shrink_the_float32_file(key, max_ratio, mlp_variants, float_tflite_bytes):
    assert mlp_variants[key]["size_bytes"] <= max_ratio * float_tflite_bytes


@pytest.mark.parametrize("key", ["ort-static", "ort-dynamic"])
def test_onnx_runtime_int8_is_under_a_third_of_the_float_onnx_file(key, mlp_variants):
    float_bytes = artifacts.read_manifest(mlp_variants[key]["float_onnx_path"])["size_bytes"]
    assert mlp_variants[key]["size_bytes"] <= 0.30 * float_bytes


@pytest.mark.parametrize(("key", "dtype", "zero_point"), [("int8-int8io", "int8", -128), ("int8-uint8io", "uint8", 0)])
def test_integer_input_models_record_scale_and_zero_point(key, dtype, zero_point, mlp_variants, mlp_splits):
    predictor = runtime.load(mlp_variants[key]["path"])
    assert predictor.input.dtype == "float32"
    assert predictor.input.quantized_dtype == dtype
    assert predictor.input.scale == pytest.approx(1 / 255, rel=0.02)  # pixels in [0, 1]
    assert predictor.input.zero_point == zero_point
    assert predictor.output.quantized_dtype == dtype
    same_model_float_io = quantize.predict_file(mlp_variants["int8"]["path"], mlp_splits.x_test)
    integer_io = predictor.predict(mlp_splits.x_test)
    assert np.mean(integer_io.argmax(axis=1) == same_model_float_io.argmax(axis=1)) >= 0.995
    with pytest.raises(ModelInputError, match="float32"):
        predictor.predict(mlp_splits.x_test[:2].astype(np.float64))


def test_manifests_record_method_settings_calibration_and_source(mlp_variants, trained_mlp):
    source_sha = artifacts.sha256_of(trained_mlp["model_path"])
    tflite = artifacts.verify(mlp_variants["int8-int8io"]["path"])
    assert tflite["params"]["quantization"] == {"method": "int8", "io_dtype": "int8",
                                                "calibration_size": CALIBRATION_SIZE}  # fmt: skip
    assert tflite["params"]["supported_ops"] == ["TFLITE_BUILTINS_INT8"]
    assert tflite["params"]["inference_input_type"] == "int8"
    assert tflite["inputs"]["source_model"]["sha256"] == source_sha
    ort = artifacts.verify(mlp_variants["ort-static-entropy"]["path"])
    assert ort["params"]["quantization"]["calibration_method"] == "entropy"
    assert ort["params"]["quantization"]["calibration_size"] == CALIBRATION_SIZE
    assert ort["params"]["quantization"]["per_channel"] is False
    assert ort["params"]["quantization"]["quant_format"] == "QDQ"
    assert ort["inputs"]["source_model"]["sha256"] == source_sha


def test_quantization_aware_training_exports_agreeing_tflite_and_onnx(trained_mlp, mlp_splits, tmp_path):
    small = dataclasses.replace(mlp_splits, x_train=mlp_splits.x_train[:2000], y_train=mlp_splits.y_train[:2000])
    result = quantize.quantize(trained_mlp["model_path"], "qat", tmp_path, splits=small, num_epochs=1)

    qat_keras = runtime.load(result["keras_path"]).predict(mlp_splits.x_test).argmax(axis=1)  # tfmot scope
    for path in (result["path"], result["onnx_path"]):
        top1 = quantize.predict_file(path, mlp_splits.x_test).argmax(axis=1)
        assert np.mean(top1 == qat_keras) >= MIN_INT8_AGREEMENT, path
    assert result["test_accuracy"] >= trained_mlp["test_accuracy"] - 0.03
    assert artifacts.read_manifest(result["path"])["params"]["quantization"]["method"] == "qat"


def test_cnn_int8_variants_agree_with_the_float_cnn(trained_cnn, cnn_splits, tmp_path):
    x_test = cnn_splits.x_test[:500]
    splits = dataclasses.replace(cnn_splits, x_test=x_test, y_test=cnn_splits.y_test[:500])
    expected = runtime.load(trained_cnn["model_path"]).predict(x_test).argmax(axis=1)
    for method in ("int8", "ort-static"):
        result = quantize.quantize(trained_cnn["model_path"], method, tmp_path, splits=splits, calibration_size=100)
        top1 = quantize.predict_file(result["path"], x_test).argmax(axis=1)
        assert np.mean(top1 == expected) >= MIN_INT8_AGREEMENT, method


def test_unknown_method_is_rejected_before_anything_is_written(trained_mlp, tmp_path):
    with pytest.raises(ConfigError, match="unknown quantization method 'int4': use one of dynamic"):
        quantize.quantize(trained_mlp["model_path"], "int4", tmp_path)
    with pytest.raises(ConfigError, match="unknown calibration method 'median'"):
        quantize.quantize(trained_mlp["model_path"], "ort-static", tmp_path, calibration_method="median")
    assert list(tmp_path.iterdir()) == []


def test_calibration_set_must_be_non_empty_float_images(mlp_splits):
    with pytest.raises(ConfigError, match="at least 1"):
        quantize.calibration_images(mlp_splits.x_train, 0)
    with pytest.raises(ModelInputError, match="empty"):
        quantize.calibration_images(mlp_splits.x_train[:0])
    with pytest.raises(ModelInputError, match="float pixels"):
        quantize.calibration_images((mlp_splits.x_train[:10] * 255).astype(np.uint8))
    drawn = quantize.calibration_images(mlp_splits.x_train, 50, seed=1)
    assert drawn.shape == (50, 784) and drawn.dtype == np.float32
    assert np.array_equal(drawn, quantize.calibration_images(mlp_splits.x_train, 50, seed=1))


def test_representative_data_of_the_wrong_shape_or_dtype_says_how_to_fix_it(trained_mlp, mlp_splits, tmp_path):
    model = train.load_model(trained_mlp["model_path"])
    images = mlp_splits.x_train[:20]
    with pytest.raises(ModelInputError, match=r"shaped \(N, 784\)"):
        quantize.to_tflite(model, tmp_path / "a.tflite", "int8", calibration=images.reshape(20, 28, 28))
    with pytest.raises(ModelInputError, match="float pixels"):
        quantize.to_tflite(model, tmp_path / "b.tflite", "int8", calibration=(images * 255).astype(np.uint8))
    with pytest.raises(ConfigError, match="calibrates activation ranges"):
        quantize.to_tflite(model, tmp_path / "c.tflite", "int8")
    with pytest.raises(ConfigError, match="needs method 'int8'"):
        quantize.to_tflite(model, tmp_path / "d.tflite", "dynamic", io_dtype="int8")
    with pytest.raises(ConfigError, match="unknown TFLite quantization method"):
        quantize.to_tflite(model, tmp_path / "e.tflite", "int4")
    assert list(tmp_path.iterdir()) == []


def test_pruning_preserving_qat_keeps_the_zeros_and_compounds_the_savings(trained_mlp, mlp_splits, tmp_path):
    from aideploy import prune

    small = dataclasses.replace(mlp_splits, x_train=mlp_splits.x_train[:3000], y_train=mlp_splits.y_train[:3000])
    base = train.load_model(trained_mlp["model_path"])
    pruned = prune.prune(base, small, prune.PruneSettings(target_sparsity=0.8, num_epochs=2)).model
    qat = quantize.quantization_aware(pruned, small, preserve_sparsity=True).model
    report = prune.weight_report(qat)
    assert len(report) == 3 and all(row["sparsity"] == pytest.approx(0.8, abs=0.01) for row in report)

    dense_float = prune.file_sizes(convert.to_tflite(base, tmp_path / "dense.tflite").path)
    compound = convert.to_tflite(qat, tmp_path / "pqat.tflite", optimizations=("DEFAULT",)).path
    onnx_path = convert.to_onnx(qat, tmp_path / "pqat.onnx").path
    assert prune.file_sizes(compound)["gzip_bytes"] <= 0.15 * dense_float["gzip_bytes"]
    qat_top1 = runtime.load(qat).predict(mlp_splits.x_test).argmax(axis=1)
    for path in (compound, onnx_path):
        top1 = quantize.predict_file(path, mlp_splits.x_test).argmax(axis=1)
        assert np.mean(top1 == qat_top1) >= MIN_INT8_AGREEMENT, path
    assert np.mean(qat_top1 == mlp_splits.y_test) >= trained_mlp["test_accuracy"] - 0.08
