"""Every malformed request gets a 4xx with a protocol-shaped error body, and the server keeps answering."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest
from _serve_models import publish_tiny_repository, serving, v2_request

X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
V2_URL = "/v2/models/tiny/versions/1/infer"
TF_URL = "/v1/models/tiny/versions/1:predict"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-validation")
    return publish_tiny_repository(root / "repo", root / "exports")


def tensor(**changes):
    entry = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}
    entry.update(changes)
    return {"inputs": [entry]}


def binary_request(values: bytes, shape, *, declared=None, header_length=None):
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": shape,
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(values) if declared is None else declared},
                }
            ]
        }
    )
    length = str(len(header)) if header_length is None else header_length
    return {"content": header + values, "headers": {"Inference-Header-Content-Length": length}}


V2_BAD = {
    "malformed JSON": {"content": b'{"inputs": [', "headers": {"Content-Type": "application/json"}},
    "NaN literal is not JSON": {"content": b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", '
                                b'"data": [NaN, 1, 2, 3]}]}'},
    "not an object": {"json": [1, 2, 3]},
    "no inputs": {"json": {"outputs": []}},
    "inputs not a list": {"json": {"inputs": {"name": "input"}}},
    "two inputs": {"json": {"inputs": tensor()["inputs"] * 2}},
    "wrong input name": {"json": tensor(name="pixels")},
    "wrong datatype": {"json": tensor(datatype="FP64")},
    "unknown datatype": {"json": tensor(datatype="FLOAT")},
    "shape not a list": {"json": tensor(shape="1,4")},
    "negative dimension": {"json": tensor(shape=[-1, 4])},
    "wrong rank": {"json": tensor(shape=[4])},
    "wrong feature count": {"json": tensor(shape=[1, 5], data=[1.0] * 5)},
    "shape and data length differ": {"json": tensor(shape=[2, 4])},
    "ragged data": {"json": tensor(data=[[1.0, 2.0], [3.0]])},
    "strings in data": {"json": tensor(data=["a", "b", "c", "d"])},
    "booleans in data": {"json": tensor(data=[True, False, True, False])},
    "null in data": {"json": tensor(data=[None, 1.0, 2.0, 3.0])},
    "no data": {"json": {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32"}]}},
    "overflows float32": {"json": tensor(data=[1e39, 1.0, 2.0, 3.0])},
    "zero rows": {"json": tensor(shape=[0, 4], data=[])},
    "id not a string": {"json": {**tensor(), "id": 7}},
    "parameters not an object": {"json": {**tensor(), "parameters": [1]}},
    "unknown output": {"json": {**tensor(), "outputs": [{"name": "logits"}]}},
    "binary NaN": binary_request(np.array([[np.nan, 1, 2, 3]], "<f4").tobytes(), [1, 4]),
    "binary infinity": binary_request(np.array([[np.inf, 1, 2, 3]], "<f4").tobytes(), [1, 4]),
    "binary size differs from shape": binary_request(np.zeros((1, 3), "<f4").tobytes(), [1, 4]),
    "binary size differs from bytes sent": binary_request(np.zeros((1, 4), "<f4").tobytes(), [1, 4], declared=8),
    "header length not a number": binary_request(np.zeros((1, 4), "<f4").tobytes(), [1, 4], header_length="x"),
    "header length past the body": binary_request(np.zeros((1, 4), "<f4").tobytes(), [1, 4], header_length="99999"),
    "bytes nobody declared": {
        "content": orjson.dumps(tensor()) + b"\0\0\0\0",
        "headers": {"Inference-Header-Content-Length": str(len(orjson.dumps(tensor())))},
    },
}

TF_BAD = {
    "malformed JSON": {"content": b"{instances: [1]}"},
    "neither instances nor inputs": {"json": {"examples": [[1, 2, 3, 4]]}},
    "both instances and inputs": {"json": {"instances": X.tolist(), "inputs": X.tolist()}},
    "empty instances": {"json": {"instances": []}},
    "instances not a list": {"json": {"instances": {"input": X.tolist()}}},
    "instance with a wrong key": {"json": {"instances": [{"pixels": [1, 2, 3, 4]}]}},
    "mixed instance forms": {"json": {"instances": [{"input": [1, 2, 3, 4]}, [1, 2, 3, 4]]}},
    "inputs with a wrong key": {"json": {"inputs": {"pixels": X.tolist()}}},
    "wrong signature": {"json": {"signature_name": "classify", "instances": X.tolist()}},
    "wrong feature count": {"json": {"instances": [[1, 2, 3]]}},
    "single instance without batch axis": {"json": {"inputs": [1, 2, 3, 4]}},
    "ragged instances": {"json": {"instances": [[1, 2, 3, 4], [1, 2]]}},
    "strings": {"json": {"instances": [["a", "b", "c", "d"]]}},
    "overflows float32": {"json": {"instances": [[1e39, 1, 2, 3]]}},
}


def post_all(repo, url, cases, **settings):
    async def scenario():
        async with serving(repo, **settings) as (client, _):
            answers = {name: await client.post(url, **request) for name, request in cases.items()}
            still_serving = await client.post(V2_URL, json=v2_request(X))
            return answers, still_serving

    return asyncio.run(scenario())


def test_bad_v2_requests_are_400_with_an_error_body(repo):
    answers, still_serving = post_all(repo, V2_URL, V2_BAD)
    for name, answer in answers.items():
        assert answer.status_code == 400, (name, answer.status_code, answer.text)
        body = answer.json()
        assert set(body) == {"error"} and len(body["error"]) > 10, (name, body)
    assert still_serving.status_code == 200


def test_bad_tfserving_requests_are_400_with_an_error_body(repo):
    answers, still_serving = post_all(repo, TF_URL, TF_BAD)
    for name, answer in answers.items():
        assert answer.status_code == 400, (name, answer.status_code, answer.text)
        assert set(answer.json()) == {"error"}, name
    assert still_serving.status_code == 200


def test_error_messages_say_what_was_wrong(repo):
    answers, _ = post_all(
        repo,
        V2_URL,
        {key: V2_BAD[key] for key in ("wrong datatype", "shape and data length differ", "binary NaN", "wrong rank")},
    )
    assert "FP32" in answers["wrong datatype"].json()["error"]
    assert "8 values" in answers["shape and data length differ"].json()["error"]
    assert "NaN" in answers["binary NaN"].json()["error"]
    assert "[-1, 4]" in answers["wrong rank"].json()["error"]


def test_uint8_input_refuses_floats_and_out_of_range_values(repo):
    cases = {
        "floats": {"json": v2_request(np.array([[0.5, 1, 2, 3]]), datatype="UINT8")},
        "too large": {"json": v2_request(np.array([[300, 1, 2, 3]]), datatype="UINT8")},
        "negative": {"json": v2_request(np.array([[-1, 1, 2, 3]]), datatype="UINT8")},
    }
    answers, _ = post_all(repo, "/v2/models/pixels/infer", cases)
    assert {name: answer.status_code for name, answer in answers.items()} == dict.fromkeys(cases, 400)
    assert "whole numbers" in answers["floats"].json()["error"]
    assert "range" in answers["too large"].json()["error"]


def test_body_over_the_limit_is_413(repo):
    big = np.zeros((100, 4), dtype=np.float32)  # about 2 KB of JSON, over a 1 KiB limit
    cases = {"v2": (V2_URL, {"json": v2_request(big)}), "tfserving": (TF_URL, {"json": {"instances": big.tolist()}})}

    async def scenario():
        async with serving(repo, max_body_bytes=1024) as (client, _):
            answers = {name: await client.post(url, **request) for name, (url, request) in cases.items()}
            small = await client.post(V2_URL, json=v2_request(X))
            return answers, small

    answers, small = asyncio.run(scenario())
    for answer in answers.values():
        assert answer.status_code == 413
        assert "limit of 1,024 bytes" in answer.json()["error"]
    assert small.status_code == 200


def test_unknown_model_infer_is_404(repo):
    cases = {"v2": ("/v2/models/nope/infer", v2_request(X)), "tf": ("/v1/models/nope:predict", {"instances": [[1]]}),
             "v2 version": ("/v2/models/tiny/versions/7/infer", v2_request(X))}

    async def scenario():
        async with serving(repo) as (client, _):
            return {name: await client.post(url, json=body) for name, (url, body) in cases.items()}

    answers = asyncio.run(scenario())
    for answer in answers.values():
        assert answer.status_code == 404 and "error" in answer.json()
