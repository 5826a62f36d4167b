"""Serving with LiteRT (``--runtime tflite``): a float and a full-integer ``.tflite`` beside the ONNX model."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from _serve_models import BIAS, NUM_FEATURES, WEIGHTS, build, expected, serving, v2_request

from aideploy import registry, runtime
from aideploy.serve.litert import ServingLiteRT

# Full-integer int8 keeps about two decimal digits of the probabilities.
INT8_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """``tiny`` (float32 .tflite) and ``tiny8`` (int8 in, int8 out) beside the same ONNX model."""
    from aideploy import convert, quantize
    from aideploy.backend import keras

    root = tmp_path_factory.mktemp("serve-litert")
    inputs = keras.Input((NUM_FEATURES,), name="input")
    outputs = keras.layers.Dense(len(BIAS), activation="softmax", name="probabilities")(inputs)
    model = keras.Model(inputs, outputs, name="tiny")
    model.layers[-1].set_weights([WEIGHTS, BIAS])
    float_export = convert.export(model, "tflite", root / "exports", name="tiny")
    calibration = np.random.default_rng(0).uniform(-2, 5, (64, NUM_FEATURES)).astype(np.float32)
    int8_export = quantize.to_tflite(model, root / "exports" / "tiny_int8.tflite", "int8",
                                     calibration=calibration, io_dtype="int8")
    onnx_path = build(root / "exports" / "tiny.onnx")
    repo = root / "repo"
    registry.publish(onnx_path, repo, "tiny", tflite=float_export.path, max_batch_size=8)
    registry.publish(onnx_path, repo, "tiny8", tflite=int8_export.path, max_batch_size=8)
    return repo


def _rows(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 5, (count, NUM_FEATURES)).astype(np.float32)


@pytest.mark.parametrize("name", ["tiny", "tiny8"])
def test_tflite_runtime_answers_equal_the_predictor_under_concurrency(repo, name):
    reference = runtime.load(repo / name / "1" / registry.TFLITE_NAME)
    requests = [_rows(seed, 1 + seed % 3) for seed in range(48)]

    async def scenario() -> tuple[list[np.ndarray], list[int], str]:
        async with serving(repo, runtime="tflite") as (client, server):
            answers = await asyncio.gather(
                *(client.post(f"/v2/models/{name}/infer", json=v2_request(x)) for x in requests)
            )
            assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
            outputs = [np.asarray(a.json()["outputs"][0]["data"]).reshape(len(x), -1)
                       for a, x in zip(answers, requests)]
            predictor = server.lookup(name).predictor
            return outputs, predictor.allocated_sizes, predictor.runtime

    outputs, allocated, runtime_name = asyncio.run(scenario())
    assert runtime_name == "tflite"
    for x, y in zip(requests, outputs):
        np.testing.assert_allclose(y, reference.predict(x), atol=1e-6)  # each caller gets its own rows
        np.testing.assert_allclose(y, expected(x), atol=1e-5 if name == "tiny" else INT8_TOLERANCE)
    assert set(allocated) <= {1, 2, 4, 8}  # batch sizes fall into buckets, never one shape per size


def test_serving_litert_allocates_each_bucket_once_and_is_thread_safe(repo):
    served = ServingLiteRT(repo / "tiny8" / "1" / registry.TFLITE_NAME, max_batch_size=8)
    reference = runtime.load(repo / "tiny8" / "1" / registry.TFLITE_NAME)
    assert served.buckets == (1, 2, 4, 8) and served.input.quantized_dtype == "int8"
    buckets = {}
    for rows in (1, 3, 2, 7, 5, 8, 3, 1, 20):  # 20 > the largest batch: slices of 8
        x = _rows(rows, rows)
        np.testing.assert_allclose(served.predict(x), reference.predict(x), atol=1e-6)
        buckets = {size: id(served._predictors[size].interpreter) for size in served.allocated_sizes}
    assert served.allocated_sizes == [1, 2, 4, 8]
    again = served.predict(_rows(0, 6))
    assert {size: id(served._predictors[size].interpreter) for size in served.allocated_sizes} == buckets
    assert again.shape == (6, len(BIAS))

    inputs = [_rows(100 + i, 1 + i % 8) for i in range(64)]
    results: list[np.ndarray | None] = [None] * len(inputs)
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        start.wait()
        for index in range(worker, len(inputs), 8):
            results[index] = served.predict(inputs[index])

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for x, y in zip(inputs, results):
        np.testing.assert_allclose(y, reference.predict(x), atol=1e-6)
