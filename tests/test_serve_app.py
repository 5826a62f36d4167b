"""The server in-process (ASGI client): every route of both protocols, exact answers, errors, readiness."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import orjson
import pytest
from _serve_models import Gate, expected, publish_tiny_repository, serving, v2_request

from aideploy import runtime
from aideploy.serve import ModelServer, create_app

X = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -0.25, 0.0, 2.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-app")
    return publish_tiny_repository(root / "repo", root / "exports")


def run(coroutine):
    return asyncio.run(coroutine)


def predictor_output(repo, name, version, x):
    return runtime.load(repo / name / str(version) / "model.onnx").predict(x)


# --- health and metadata ----------------------------------------------------------------


def test_v2_server_routes(repo):
    async def scenario():
        async with serving(repo) as (client, _):
            return [await client.get(path) for path in ("/v2", "/v2/health/live", "/v2/health/ready")]

    metadata, live, ready = run(scenario())
    assert metadata.status_code == 200
    assert metadata.json()["name"] == "aideploy"
    assert "binary_tensor_data" in metadata.json()["extensions"]
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_v2_model_metadata_and_readiness(repo):
    async def scenario():
        async with serving(repo) as (client, _):
            paths = (
                "/v2/models/tiny",
                "/v2/models/tiny/versions/1",
                "/v2/models/tiny/ready",
                "/v2/models/tiny/versions/1/ready",
                "/v2/models/pixels",
            )
            return [await client.get(path) for path in paths]

    tiny, tiny_v1, ready, ready_v1, pixels = run(scenario())
    assert tiny.json() == {
        "name": "tiny",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
    }
    assert tiny_v1.status_code == 200 and tiny_v1.json()["inputs"] == tiny.json()["inputs"]
    assert ready.json() == {"name": "tiny", "ready": True} and ready_v1.status_code == 200
    assert pixels.json()["inputs"][0]["datatype"] == "UINT8"


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/tiny/versions/9",
        "/v2/models/tiny/versions/0/ready",
        "/v2/models/tiny/versions/x",
        "/v1/models/nope",
        "/v1/models/tiny/versions/9",
        "/v1/models/tiny/versions/9/metadata",
        "/v1/models/..%2F..%2Fetc",
    ],
)
def test_unknown_models_and_versions_are_404_with_an_error_body(repo, path):
    async def scenario():
        async with serving(repo) as (client, _):
            return await client.get(path)

    answer = run(scenario())
    assert answer.status_code == 404
    assert set(answer.json()) == {"error"} and answer.json()["error"]


def test_unknown_route_and_wrong_method_answer_in_protocol_form(repo):
    async def scenario():
        async with serving(repo) as (client, _):
            return await client.get("/v3/whatever"), await client.get("/v2/models/tiny/infer")

    unknown, wrong_method = run(scenario())
    assert unknown.status_code == 404 and "error" in unknown.json()
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


# --- V2 inference -------------------------------------------------------------------


def test_v2_json_infer_is_exactly_the_predictor_output(repo):
    async def scenario():
        async with serving(repo) as (client, _):
            flat = await client.post("/v2/models/tiny/versions/1/infer", json=v2_request(X, id="req-7"))
            nested_body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": X.tolist()}]}
            nested = await client.post("/v2/models/tiny/versions/1/infer", json=nested_body)
            latest = await client.post("/v2/models/tiny/infer", json=v2_request(X))
            return flat, nested, latest

    flat, nested, latest = run(scenario())
    body = flat.json()
    assert flat.status_code == 200
    assert (body["model_name"], body["model_version"], body["id"]) == ("tiny", "1", "req-7")
    (output,) = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("probabilities", "FP32", [2, 3])
    answer = np.array(output["data"], dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(answer, predictor_output(repo, "tiny", 1, X))
    np.testing.assert_allclose(answer, expected(X), atol=1e-6)
    assert nested.json()["outputs"] == body["outputs"]
    # The newest version serves by default: version 2 has doubled weights.
    assert latest.json()["model_version"] == "2"
    latest_answer = np.array(latest.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(latest_answer, predictor_output(repo, "tiny", 2, X))
    assert np.abs(latest_answer - answer).max() > 0.01


def test_v2_binary_request_and_response_match_json(repo):
    header = orjson.dumps(
        {
            "id": "bin",
            "inputs": [
                {"name": "input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": X.nbytes}}
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    )

    async def scenario():
        async with serving(repo) as (client, _):
            binary = await client.post(
                "/v2/models/tiny/versions/1/infer",
                content=header + X.astype("<f4").tobytes(),
                headers={"Inference-Header-Content-Length": str(len(header))},
            )
            as_json = await client.post("/v2/models/tiny/versions/1/infer", json=v2_request(X))
            all_binary = await client.post(
                "/v2/models/tiny/versions/1/infer", json=v2_request(X, parameters={"binary_data_output": True})
            )
            return binary, as_json, all_binary

    binary, as_json, all_binary = run(scenario())
    assert binary.status_code == 200
    length = int(binary.headers["Inference-Header-Content-Length"])
    response_header = json.loads(binary.content[:length])
    (output,) = response_header["outputs"]
    assert output["parameters"] == {"binary_data_size": 2 * 3 * 4} and "data" not in output
    assert response_header["id"] == "bin" and output["shape"] == [2, 3]
    values = np.frombuffer(binary.content[length:], dtype="<f4").reshape(2, 3)
    np.testing.assert_array_equal(values, predictor_output(repo, "tiny", 1, X))
    np.testing.assert_array_equal(values, np.array(as_json.json()["outputs"][0]["data"], np.float32).reshape(2, 3))
    all_length = int(all_binary.headers["Inference-Header-Content-Length"])
    np.testing.assert_array_equal(np.frombuffer(all_binary.content[all_length:], "<f4").reshape(2, 3), values)


def test_v2_uint8_model_scales_inside_the_graph(repo):
    pixels = np.array([[0, 255, 128, 64]], dtype=np.uint8)

    async def scenario():
        async with serving(repo) as (client, _):
            return await client.post("/v2/models/pixels/infer", json=v2_request(pixels, datatype="UINT8"))

    answer = run(scenario())
    assert answer.status_code == 200
    values = np.array(answer.json()["outputs"][0]["data"], np.float32).reshape(1, 3)
    np.testing.assert_allclose(values, expected(pixels), atol=1e-6)


# --- TensorFlow Serving -----------------------------------------------------------------


def test_tfserving_predict_row_and_columnar(repo):
    async def scenario():
        async with serving(repo) as (client, _):
            rows = await client.post("/v1/models/tiny/versions/1:predict", json={"instances": X.tolist()})
            named = await client.post(
                "/v1/models/tiny/versions/1:predict", json={"instances": [{"input": row} for row in X.tolist()]}
            )
            columnar = await client.post("/v1/models/tiny/versions/1:predict", json={"inputs": X.tolist()})
            columnar_named = await client.post(
                "/v1/models/tiny:predict", json={"signature_name": "serving_default", "inputs": {"input": X.tolist()}}
            )
            return rows, named, columnar, columnar_named

    rows, named, columnar, columnar_named = run(scenario())
    reference = predictor_output(repo, "tiny", 1, X)
    np.testing.assert_array_equal(np.array(rows.json()["predictions"], np.float32), reference)
    assert named.json() == rows.json()
    np.testing.assert_array_equal(np.array(columnar.json()["outputs"], np.float32), reference)
    np.testing.assert_array_equal(
        np.array(columnar_named.json()["outputs"], np.float32), predictor_output(repo, "tiny", 2, X)
    )


def test_tfserving_status_and_metadata(repo):
    async def scenario():
        async with serving(repo) as (client, _):
            paths = ("/v1/models/tiny", "/v1/models/tiny/versions/1", "/v1/models/tiny/metadata",
                     "/v1/models/tiny/versions/1/metadata")
            return [await client.get(path) for path in paths]

    status, status_v1, metadata, metadata_v1 = run(scenario())
    assert [entry["version"] for entry in status.json()["model_version_status"]] == ["2", "1"]
    assert status_v1.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert metadata.json()["model_spec"] == {"name": "tiny", "signature_name": "", "version": "2"}
    signature = metadata.json()["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["input"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in signature["inputs"]["input"]["tensor_shape"]["dim"]] == ["-1", "4"]
    assert [d["size"] for d in signature["outputs"]["probabilities"]["tensor_shape"]["dim"]] == ["-1", "3"]
    assert metadata_v1.json()["model_spec"]["version"] == "1"


# --- readiness and shutdown -------------------------------------------------------------


def test_loading_model_answers_503_until_loaded(repo, monkeypatch):
    release = threading.Event()
    original = ModelServer._load_one

    def slow_load(self, name, version):
        release.wait(30)
        return original(self, name, version)

    monkeypatch.setattr(ModelServer, "_load_one", slow_load)

    async def scenario():
        import httpx

        app = create_app(repo)
        server = app.state.server
        await server.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            during = [
                await client.get("/v2/health/ready"),
                await client.get("/v2/models/tiny/ready"),
                await client.post("/v2/models/tiny/infer", json=v2_request(X)),
                await client.post("/v1/models/tiny:predict", json={"instances": X.tolist()}),
                await client.get("/v1/models/tiny/versions/1"),
                await client.get("/v2/health/live"),
            ]
            release.set()
            await server.wait_ready(60)
            after = [
                await client.get("/v2/health/ready"),
                await client.post("/v2/models/tiny/infer", json=v2_request(X)),
            ]
        await server.stop()
        return during, after

    during, after = run(scenario())
    ready, model_ready, infer, predict, status, live = during
    assert (ready.status_code, ready.json()) == (503, {"ready": False})
    assert model_ready.status_code == 503
    assert infer.status_code == 503 and "loading" in infer.json()["error"]
    assert predict.status_code == 503 and "error" in predict.json()
    assert status.json()["model_version_status"][0]["state"] == "LOADING"
    assert live.status_code == 200
    assert [answer.status_code for answer in after] == [200, 200]


def test_corrupted_model_is_unavailable_and_the_others_serve(tmp_path):
    repo = publish_tiny_repository(tmp_path / "repo", tmp_path / "exports")
    model_file = repo / "tiny" / "1" / "model.onnx"
    model_file.write_bytes(model_file.read_bytes() + b"\0")

    async def scenario():
        async with serving(repo) as (client, _):
            return (
                await client.get("/v2/health/ready"),
                await client.post("/v2/models/tiny/versions/1/infer", json=v2_request(X)),
                await client.post("/v2/models/tiny/versions/2/infer", json=v2_request(X)),
                await client.get("/v1/models/tiny/versions/1"),
            )

    ready, broken, healthy, status = run(scenario())
    assert ready.status_code == 503
    assert broken.status_code == 503 and "manifest" in broken.json()["error"]
    assert healthy.status_code == 200
    (entry,) = status.json()["model_version_status"]
    assert entry["state"] == "END" and entry["status"]["error_code"] == "UNKNOWN"


def test_shutdown_turns_readiness_false_first_and_finishes_queued_requests(repo):
    async def scenario():
        async with serving(repo, max_queue_delay_ms=0) as (client, server):
            gate = Gate(server.lookup("tiny", "1").batcher)
            tasks = [
                asyncio.ensure_future(client.post("/v2/models/tiny/versions/1/infer", json=v2_request(X[i : i + 1])))
                for i in range(2)
            ]
            await gate.wait_for(len(tasks))
            server.begin_shutdown()
            ready = await client.get("/v2/health/ready")
            stopping = asyncio.ensure_future(server.stop())
            await asyncio.sleep(0)
            gate.release.set()
            answers = await asyncio.gather(*tasks)
            await stopping
            after = await client.post("/v2/models/tiny/versions/1/infer", json=v2_request(X))
            return ready, answers, after

    ready, answers, after = run(scenario())
    assert ready.status_code == 503
    assert [answer.status_code for answer in answers] == [200, 200]
    np.testing.assert_allclose(
        [answer.json()["outputs"][0]["data"] for answer in answers], expected(X), atol=1e-6
    )
    assert after.status_code == 503


def test_a_worker_process_turns_readiness_false_before_uvicorn_handles_the_signal(repo, monkeypatch):
    """``--workers``: the factory wraps the exit handlers uvicorn installed, readiness first."""
    import dataclasses
    import json as json_module
    import signal

    from aideploy.serve import ServerSettings
    from aideploy.serve import app as app_module

    calls = []

    def uvicorn_handler(sig, frame):  # stands in for uvicorn's Server.handle_exit
        calls.append(sig)

    originals = {number: signal.signal(number, uvicorn_handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        monkeypatch.setenv(app_module._WORKER_CONFIG, json_module.dumps(
            {"repo": str(repo), "settings": dataclasses.asdict(ServerSettings())}))
        application = app_module._worker_app()
        server = application.state.server
        assert not server.stopping
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert server.stopping and not server.ready
        assert calls == [signal.SIGTERM]
    finally:
        for number, handler in originals.items():
            signal.signal(number, handler)
