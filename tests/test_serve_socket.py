"""The server over a real socket (``aideploy serve`` in a child process), and the serving path without TensorFlow."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import httpx
import numpy as np
import orjson
import pytest
from _serve_models import expected, publish_tiny_repository, v2_request, wait_until_ready

from aideploy.errors import ModelNotReadyError
from aideploy.serve import running_server
from aideploy.serve.process import free_port

X = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, -1.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-socket")
    return publish_tiny_repository(root / "repo", root / "exports")


def test_every_protocol_over_a_real_socket_and_a_clean_stop(repo):
    with running_server(repo, max_queue_delay_ms=0.5) as url:
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/v2/health/live").json() == {"live": True}
            assert client.get("/v2/health/ready").json() == {"ready": True}
            assert client.get("/v2/models/tiny").json()["versions"] == ["1", "2"]
            as_json = client.post("/v2/models/tiny/versions/1/infer", json=v2_request(X, id="s"))
            header = orjson.dumps(
                {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                             "parameters": {"binary_data_size": X.nbytes}}],
                 "parameters": {"binary_data_output": True}}
            )
            binary = client.post(
                "/v2/models/tiny/versions/1/infer",
                content=header + X.tobytes(),
                headers={"Inference-Header-Content-Length": str(len(header))},
            )
            predict = client.post("/v1/models/tiny/versions/1:predict", json={"instances": X.tolist()})
            bad = client.post("/v1/models/tiny:predict", content=b"{")
            metadata = client.get("/v1/models/tiny/metadata")
            metrics = client.get("/metrics").text
        port = int(url.rsplit(":", 1)[1])
    json_values = np.array(as_json.json()["outputs"][0]["data"], np.float32).reshape(2, 3)
    np.testing.assert_allclose(json_values, expected(X), atol=1e-6)
    length = int(binary.headers["Inference-Header-Content-Length"])
    np.testing.assert_array_equal(np.frombuffer(binary.content[length:], "<f4").reshape(2, 3), json_values)
    np.testing.assert_array_equal(np.array(predict.json()["predictions"], np.float32), json_values)
    assert bad.status_code == 400 and "error" in bad.json()
    assert metadata.json()["model_spec"]["version"] == "2"
    assert 'aideploy_requests_total{model="tiny",outcome="success",protocol="v2",version="1"} 2.0' in metrics
    client_error = 'model="tiny",outcome="client_error",protocol="tfserving",version="2"'
    assert f"aideploy_requests_total{{{client_error}}} 1.0" in metrics
    # Stopped: nothing listens on the port any more.
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_running_server_reports_why_the_server_did_not_start(tmp_path):
    with pytest.raises(ModelNotReadyError, match="exited with status 2"):
        with running_server(tmp_path / "no-such-repo", startup_timeout=60):
            pass


def test_two_workers_answer_correctly_and_metrics_count_every_process(repo):
    rng = np.random.default_rng(3)
    inputs = [rng.random((1, 4), dtype=np.float32) for _ in range(40)]

    def send(x: np.ndarray) -> np.ndarray:
        # A connection of its own per request, so the kernel spreads them over both workers.
        answer = httpx.post(f"{url}/v2/models/tiny/versions/1/infer", json=v2_request(x), timeout=30)
        assert answer.status_code == 200, answer.text
        return np.asarray(answer.json()["outputs"][0]["data"]).reshape(1, -1)

    with running_server(repo, workers=2) as url:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            outputs = list(pool.map(send, inputs))
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
    for x, y in zip(inputs, outputs):
        np.testing.assert_allclose(y, expected(x), atol=1e-6)
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("aideploy_requests_total{") and 'model="tiny"' in line
    )
    assert counted == len(inputs)
    batches = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith("aideploy_batch_size_sum{"))
    assert batches == len(inputs)  # every row ran in some worker's batch, none twice


def test_serving_never_imports_tensorflow(repo):
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from fastapi.testclient import TestClient
        from aideploy import cli, registry, serve
        cli.build_parser()
        with TestClient(serve.create_app({str(repo)!r})) as client:
            for _ in range(600):  # the models load in the background
                if client.get("/v2/health/ready").status_code == 200:
                    break
                time.sleep(0.05)
            answer = client.post("/v2/models/tiny/infer", json={json.dumps(v2_request(X[:1]))})
            predict = client.post("/v1/models/tiny:predict", json={{"instances": [[1, 2, 3, 4]]}})
        loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "tf_keras", "keras"))
        print(json.dumps({{"status": [answer.status_code, predict.status_code], "loaded": loaded}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"status": [200, 200], "loaded": []}


def test_publish_and_serve_work_with_tensorflow_missing(repo, tmp_path):
    # A serving install (`pip install 'aideploy[serve]'`) has no TensorFlow: make its
    # imports fail as they would there, then publish an ONNX export and serve it.
    from _serve_models import build

    onnx_path = build(tmp_path / "exports" / "m.onnx")
    script = textwrap.dedent(
        f"""
        import contextlib, io, json, sys, time
        for name in ("tensorflow", "tf_keras", "tensorflow_model_optimization", "tf2onnx", "keras"):
            sys.modules[name] = None  # import raises ModuleNotFoundError, as when not installed
        from fastapi.testclient import TestClient
        from aideploy import cli, serve
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            published = cli.main(["publish", {str(onnx_path)!r}, "--repo", {str(tmp_path / "repo")!r}, "--name", "m"])
        try:
            from aideploy import backend  # what training needs
            training = "imported"
        except Exception as error:
            training = type(error).__name__ + ": " + str(error)
        with TestClient(serve.create_app({str(tmp_path / "repo")!r})) as client:
            for _ in range(600):
                if client.get("/v2/health/ready").status_code == 200:
                    break
                time.sleep(0.05)
            answer = client.post("/v2/models/m/infer", json={json.dumps(v2_request(X[:1]))})
        print(json.dumps({{"published": published, "last": out.getvalue().splitlines()[-1],
                          "training": training, "status": answer.status_code,
                          "outputs": answer.json()["outputs"][0]["data"]}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["published"] == 0 and json.loads(report["last"])["version"] == 1
    assert report["training"].startswith("ConfigError") and "aideploy[train]" in report["training"]
    assert report["status"] == 200
    np.testing.assert_allclose(report["outputs"], expected(X[:1]).ravel(), atol=1e-6)


def test_serve_command_stops_on_sigterm_with_a_json_line(repo):
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "aideploy.cli", "serve", str(repo), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as client:
            wait_until_ready(client)
            for _ in range(3):
                assert client.post("/v2/models/tiny/infer", json=v2_request(X)).status_code == 200
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"url": f"http://127.0.0.1:{port}", "models": {"pixels": [1], "tiny": [1, 2]}, "requests": 3}
