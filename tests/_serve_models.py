"""Tiny ONNX models with fixed weights for the serving tests (built with onnx.helper, no TensorFlow).

``softmax_model``: ``probabilities = softmax(input @ W + b)`` on ``(N, 4)`` float32,
so every answer is known exactly. ``uint8_model``: the same on uint8 pixels that
the graph itself scales by 1/255 (the model that carries its preprocessing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from aideploy import artifacts

WEIGHTS = np.array(
    [[1.0, -1.0, 0.5], [0.25, 2.0, -0.5], [-1.5, 0.75, 1.0], [0.5, 0.5, -2.0]], dtype=np.float32
)
BIAS = np.array([0.1, -0.2, 0.3], dtype=np.float32)
NUM_FEATURES, NUM_CLASSES = WEIGHTS.shape


def expected(x: np.ndarray) -> np.ndarray:
    """What the softmax model answers, computed with NumPy in float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.dtype.kind in "iu":
        x = x / 255.0
    logits = x @ WEIGHTS.astype(np.float64) + BIAS
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def build(path: Path, *, scale: float = 1.0, uint8: bool = False, with_manifest: bool = True) -> Path:
    """Write a tiny softmax model (and its manifest with a signature) to ``path``."""
    nodes, first = [], "input"
    if uint8:
        nodes += [
            helper.make_node("Cast", ["input"], ["as_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["as_float", "scale"], ["scaled"]),
        ]
        first = "scaled"
    nodes += [
        helper.make_node("MatMul", [first, "W"], ["logits0"]),
        helper.make_node("Add", ["logits0", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    initializers = [
        numpy_helper.from_array(WEIGHTS * np.float32(scale), "W"),
        numpy_helper.from_array(BIAS, "b"),
    ]
    if uint8:
        initializers.append(numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"))
    input_type = TensorProto.UINT8 if uint8 else TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", input_type, ["batch", NUM_FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not with_manifest:
        path.write_bytes(model.SerializeToString())
        return path
    signature = {
        "inputs": [{"name": "input", "shape": [None, NUM_FEATURES], "dtype": "uint8" if uint8 else "float32"}],
        "outputs": [{"name": "probabilities", "shape": [None, NUM_CLASSES], "dtype": "float32"}],
    }
    artifacts.save_artifact(
        path,
        lambda temporary: temporary.write_bytes(model.SerializeToString()),
        kind="onnx-model",
        produced_by="tests._serve_models.build",
        extra={"format": "onnx", "signature": signature},
    )
    return path
