"""aideploy.serve.tensor_json: request JSON through simdjson, long numeric arrays straight into NumPy."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from aideploy.errors import ModelInputError
from aideploy.serve.server import parse_json
from aideploy.serve.tensor_json import MIN_ARRAY, parse_tensor_json


def as_plain(value):
    """The parsed value with every NumPy array as the list orjson would have given."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {key: as_plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_plain(item) for item in value]
    return value


def test_a_long_float_array_becomes_float64_with_the_exact_values_orjson_reads():
    pixels = np.random.default_rng(0).random(784, dtype=np.float32)
    body = json.dumps({"id": "r1", "inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                               "data": pixels.tolist()}]}).encode()
    parsed = parse_tensor_json(body)
    data = parsed["inputs"][0]["data"]
    assert isinstance(data, np.ndarray) and data.dtype == np.float64 and data.shape == (784,)
    np.testing.assert_array_equal(data, np.asarray(orjson.loads(body)["inputs"][0]["data"]))
    np.testing.assert_array_equal(data.astype(np.float32), pixels)
    assert parsed["inputs"][0]["shape"] == [1, 784]  # short arrays stay lists
    assert as_plain(parsed) == orjson.loads(body)


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (list(range(MIN_ARRAY)), np.int64),
        ([0] + [0.5] * (MIN_ARRAY - 1), np.float64),  # whole numbers first, then floats
        ([-3] * MIN_ARRAY, np.int64),
        ([2**63 + 1] * MIN_ARRAY, np.uint64),
        ([1e300] * MIN_ARRAY, np.float64),
    ],
)
def test_numbers_keep_their_kind(values, dtype):
    parsed = parse_tensor_json(json.dumps({"data": values}).encode())
    assert parsed["data"].dtype == dtype
    assert parsed["data"].tolist() == values


@pytest.mark.parametrize(
    "values",
    [
        list(range(MIN_ARRAY - 1)),  # short
        [True] * MIN_ARRAY,  # booleans are not numbers here
        [1] * (MIN_ARRAY - 1) + [True],
        [1.0] * (MIN_ARRAY - 1) + [None],
        [1.0] * (MIN_ARRAY - 1) + ["1"],
        [1.0] * (MIN_ARRAY - 1) + [[1.0, 2.0]],  # not flat
        [1.0] * (MIN_ARRAY - 1) + [{"a": 1}],
        ["a"] * MIN_ARRAY,
    ],
)
def test_anything_but_a_long_flat_array_of_numbers_stays_as_orjson_reads_it(values):
    body = json.dumps({"data": values}).encode()
    parsed = parse_tensor_json(body)
    assert isinstance(parsed["data"], list)
    assert parsed == orjson.loads(body)


def test_nested_rows_become_a_list_of_arrays():
    rows = np.arange(3 * 40, dtype=np.float64).reshape(3, 40) / 7
    parsed = parse_tensor_json(json.dumps({"instances": rows.tolist()}).encode())
    assert isinstance(parsed["instances"], list) and len(parsed["instances"]) == 3
    np.testing.assert_array_equal(np.asarray(parsed["instances"]), rows)


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [1, 2',
        b'{"data": [NaN, 2]}',
        b'{"data": [1e999]}',
        b'{"data": [1]} trailing',
        b"\xff{}",
        b"",
        b"[1, 2, 3]",
        b'"text"',
        b"42",
    ],
)
def test_bad_bodies_get_exactly_the_orjson_parse_error(body):
    with pytest.raises(ModelInputError) as expected:
        parse_json(body)
    with pytest.raises(ModelInputError) as got:
        parse_tensor_json(body)
    assert str(got.value) == str(expected.value)


def test_integers_beyond_64_bits_fall_back_to_orjson():
    body = json.dumps({"data": [2**70] + [1] * MIN_ARRAY}).encode()
    assert as_plain(parse_tensor_json(body)) == orjson.loads(body)


def test_random_documents_read_like_orjson():
    rng = np.random.default_rng(1)
    for _ in range(50):
        size = int(rng.integers(0, 100))
        kind = rng.integers(0, 3)
        values = (rng.normal(size=size).tolist() if kind == 0 else rng.integers(-1000, 1000, size).tolist()
                  if kind == 1 else [bool(v) for v in rng.integers(0, 2, size)])
        document = {"id": str(size), "inputs": [{"name": "x", "shape": [size], "data": values,
                                                 "parameters": {"binary_data": False}}], "outputs": []}
        body = json.dumps(document).encode()
        assert as_plain(parse_tensor_json(body)) == orjson.loads(body)


def test_image_sized_json_requests_answer_exactly_what_binary_tensors_get(tmp_path):
    """784 numbers a row: the simdjson path through both protocols, flat, nested, whole numbers, bad values."""
    import asyncio

    from _serve_models import build_image_model, serving

    from aideploy import registry

    repo = tmp_path / "repo"
    registry.publish(build_image_model(tmp_path / "image.onnx"), repo, "fashion")
    x = np.random.default_rng(2).random((3, 784), dtype=np.float32)
    whole = np.arange(784, dtype=np.float32).reshape(1, 784) % 3  # sent as JSON integers

    def v2(rows, *, nested=False, data=None):
        values = data if data is not None else (rows.tolist() if nested else rows.ravel().tolist())
        return {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": values}]}

    async def scenario():
        async with serving(repo) as (client, _):
            header = orjson.dumps({"inputs": [{"name": "input", "shape": [3, 784], "datatype": "FP32",
                                               "parameters": {"binary_data_size": x.nbytes}}],
                                   "parameters": {"binary_data_output": True}})
            binary = await client.post("/v2/models/fashion/infer", content=header + x.astype("<f4").tobytes(),
                                       headers={"Inference-Header-Content-Length": str(len(header))})
            answers = {
                "v2 flat": await client.post("/v2/models/fashion/infer", json=v2(x)),
                "v2 nested": await client.post("/v2/models/fashion/infer", json=v2(x, nested=True)),
                "tfserving rows": await client.post("/v1/models/fashion:predict", json={"instances": x.tolist()}),
                "tfserving columns": await client.post("/v1/models/fashion:predict", json={"inputs": x.tolist()}),
            }
            integers = await client.post("/v2/models/fashion/infer",
                                         json=v2(whole, data=whole.astype(int).ravel().tolist()))
            as_floats = await client.post("/v2/models/fashion/infer", json=v2(whole))
            too_large = await client.post("/v2/models/fashion/infer", json=v2(x[:1], data=[1e39] * 784))
            short = await client.post("/v2/models/fashion/infer", json=v2(x[:1], data=[0.5] * 783))
            still_up = await client.post("/v2/models/fashion/infer", json=v2(x[:1]))
            return binary, answers, integers, as_floats, too_large, short, still_up

    binary, answers, integers, as_floats, too_large, short, still_up = asyncio.run(scenario())
    assert binary.status_code == 200
    length = int(binary.headers["Inference-Header-Content-Length"])
    expected = np.frombuffer(binary.content[length:], "<f4").reshape(3, 10)
    for what, answer in answers.items():
        assert answer.status_code == 200, (what, answer.text)
        body = answer.json()
        values = body["outputs"][0]["data"] if what.startswith("v2") else body.get("predictions", body.get("outputs"))
        np.testing.assert_array_equal(np.asarray(values, np.float32).reshape(3, 10), expected, err_msg=what)
    assert integers.status_code == 200 and integers.json()["outputs"] == as_floats.json()["outputs"]
    assert too_large.status_code == 400 and "infinite" in too_large.json()["error"]
    assert short.status_code == 400 and "783" in short.json()["error"]
    assert still_up.status_code == 200
