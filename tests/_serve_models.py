"""Tiny ONNX models with fixed weights for the serving tests (built with onnx.helper, no TensorFlow).

``softmax_model``: ``probabilities = softmax(input @ W + b)`` on ``(N, 4)`` float32,
so every answer is known exactly. ``uint8_model``: the same on uint8 pixels that
the graph itself scales by 1/255 (the model that carries its preprocessing).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
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
    x = np.asarray(x)
    x = x / 255.0 if x.dtype.kind in "iu" else x.astype(np.float64)
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


def publish_tiny_repository(repo: Path, exports: Path) -> Path:
    """A repository with ``tiny`` versions 1 (weights W) and 2 (weights 2W) and ``pixels`` (uint8 in)."""
    from aideploy import registry

    registry.publish(build(exports / "tiny_v1.onnx"), repo, "tiny")
    registry.publish(build(exports / "tiny_v2.onnx", scale=2.0), repo, "tiny")
    registry.publish(build(exports / "pixels.onnx", uint8=True), repo, "pixels")
    return repo


@contextlib.asynccontextmanager
async def serving(repo: Path, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The app in-process: started, loaded, with an ASGI client; stopped afterwards."""
    from aideploy.serve import ServerSettings, create_app

    app = create_app(repo, ServerSettings(**settings))
    server = app.state.server
    await server.start()
    await server.wait_ready(60)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, server
    finally:
        await server.stop()


def v2_request(x: np.ndarray, *, datatype: str = "FP32", **extra: Any) -> dict[str, Any]:
    """A V2 JSON inference request for the tiny models."""
    return {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}],
        **extra,
    }


class Gate:
    """Wraps a batcher's predict so that calls block until ``release``: requests pile up meanwhile.

    With one-row requests, ``blocked_rows + batcher.pending`` counts the
    requests that have reached the batcher, so a test can wait for all of
    them before it releases the gate (no timing involved).
    """

    def __init__(self, batcher: Any, *, fail_after_release: Exception | None = None) -> None:
        self.batcher = batcher
        self.predict = batcher.predict
        self.release = threading.Event()
        self.blocked_rows = 0
        self.batch_sizes: list[int] = []
        self.fail_after_release = fail_after_release
        batcher.predict = self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(x))
        if not self.release.is_set():
            self.blocked_rows += len(x)
            self.release.wait(60)
        elif self.fail_after_release is not None:
            raise self.fail_after_release
        return self.predict(x)

    async def wait_for(self, num_requests: int, timeout: float = 60.0) -> None:
        """Wait until ``num_requests`` one-row requests are blocked or queued."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.blocked_rows + self.batcher.pending < num_requests:
            if loop.time() > deadline:
                arrived = self.blocked_rows + self.batcher.pending
                raise TimeoutError(f"only {arrived} of {num_requests} requests arrived")
            await asyncio.sleep(0.005)


def build_image_model(path: Path) -> Path:
    """A 784-in, 10-class softmax whose logits are ``c * mean(pixels)`` for class ``c``.

    An all-white image (pixels 1.0) scores class 9 highest; an all-black one
    gives every class 0.1.
    """
    weights = np.tile(np.arange(10, dtype=np.float32) / 784, (784, 1))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "image",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 784])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    artifacts.save_artifact(
        path,
        lambda temporary: temporary.write_bytes(model.SerializeToString()),
        kind="onnx-model",
        produced_by="tests._serve_models.build_image_model",
        extra={"format": "onnx"},
    )
    return path


def wait_until_ready(client: httpx.Client, attempts: int = 2400) -> None:
    """Poll ``/v2/health/ready`` of a server just started (about two minutes on a slow machine)."""
    for _ in range(attempts):
        try:
            if client.get("/v2/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{client.base_url} not ready after {attempts * 0.05:.0f} s")
