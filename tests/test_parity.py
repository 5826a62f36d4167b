"""Tests of aideploy.parity with tiny fixed-weight ONNX models: variants whose input dtypes differ, tolerances."""

from __future__ import annotations

import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aideploy import compress, parity, runtime
from aideploy.errors import ModelInputError

WEIGHTS = np.array([[1.0, -1.0, 0.5], [0.25, 2.0, -0.5], [-1.5, 0.75, 1.0], [0.5, 0.5, -2.0]], dtype=np.float32)


def _softmax_model(path, input_type: int):
    """``softmax(x @ W)`` taking ``input_type`` (cast to float32 inside)."""
    nodes = [
        helper.make_node("Cast", ["input"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["as_float", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", input_type, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(WEIGHTS, "W")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


@pytest.fixture()
def tiny(tmp_path):
    # Multiples of 1/64 are exact in float16, float32 and float64: any difference is a bug.
    x = (np.random.default_rng(0).integers(0, 64, size=(300, 4)) / 64).astype(np.float32)
    y = (x @ WEIGHTS).argmax(axis=1)
    return {
        "x": x,
        "y": y,
        "float32": _softmax_model(tmp_path / "float32.onnx", TensorProto.FLOAT),
        "float16": _softmax_model(tmp_path / "float16.onnx", TensorProto.FLOAT16),
        "float64": _softmax_model(tmp_path / "float64.onnx", TensorProto.DOUBLE),
    }


def test_parity_feeds_each_variant_its_own_input_dtype(tiny):
    report = parity.parity_report(tiny["float32"], [tiny["float16"], tiny["float64"]], tiny["x"], tiny["y"])
    assert [row.max_abs_diff for row in report.rows] == [0.0, 0.0]
    assert [row.top1_agreement for row in report.rows] == [1.0, 1.0]
    assert report.reference_accuracy == 1.0 and report.passed()
    predictor = runtime.load(tiny["float16"])
    assert parity.as_input(predictor, tiny["x"]).dtype == np.float16
    # Integers are not silently cast: the predictor says how to fix them.
    with pytest.raises(ModelInputError, match="scale the pixels"):
        parity.predict_in_batches(predictor, (tiny["x"] * 64).astype(np.uint8))


def test_compare_measures_variants_whose_input_dtypes_differ(tiny):
    splits = types.SimpleNamespace(x_test=tiny["x"], y_test=tiny["y"])
    comparison = compress.compare([tiny["float32"], tiny["float16"], tiny["float64"]], splits, latency_rounds=1)
    assert [row["test_accuracy"] for row in comparison.rows] == [1.0, 1.0, 1.0]
    assert all(row["p50_us"] > 0 and row["throughput_per_s_at_256"] > 0 for row in comparison.rows)


def test_tolerances_decide_what_passes():
    quantized = parity.QUANTIZED
    assert quantized.check(max_abs_diff=0.2, top1_agreement=0.98, accuracy_change=-0.004)
    assert not quantized.check(max_abs_diff=0.2, top1_agreement=0.96, accuracy_change=0.0)
    assert not quantized.check(max_abs_diff=0.0, top1_agreement=0.99, accuracy_change=-0.011)
    assert quantized.check(max_abs_diff=0.0, top1_agreement=0.99, accuracy_change=+0.05)  # a gain passes
    assert not parity.FLOAT32.check(max_abs_diff=2e-4, top1_agreement=1.0, accuracy_change=0.0)


def test_runtime_still_exports_the_parity_names():
    assert runtime.parity_report is parity.parity_report and runtime.ParityReport is parity.ParityReport
    with pytest.raises(AttributeError):
        runtime.no_such_name  # noqa: B018
