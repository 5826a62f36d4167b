"""The server with a prediction log: ids, delayed labels over HTTP, drift gauges, alerts, a killed server, the CLI."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from _serve_models import (
    build_image_model,
    expected,
    publish_tiny_repository,
    serving,
    v2_request,
    wait_until_ready,
)

from aideploy import registry
from aideploy.monitor import profile
from aideploy.serve.process import free_port

WINDOW = 200


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The tiny models, ``tiny`` version 1 with a reference profile of uniform inputs in [0, 1]."""
    root = tmp_path_factory.mktemp("monitor-serve")
    repo = publish_tiny_repository(root / "repo", root / "exports")
    x = np.random.default_rng(0).uniform(0, 1, (4000, 4)).astype(np.float32)
    profile.profile_version(repo, "tiny", x, version=1)
    return repo


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus's text format (``None`` when absent)."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))) == labels:
            return float(match.group(2))
    return None


def test_labels_drift_gauges_and_alerts_over_http(repo, tmp_path):
    async def scenario():
        async with serving(repo, log_db=str(tmp_path / "log.db"), monitor_window=WINDOW) as (client, server):
            rng = np.random.default_rng(1)
            # Two clean windows, then two brighter ones, sent 20 rows a request.
            batches = [rng.uniform(0, 1, (20, 4)) for _ in range(20)]
            batches += [np.clip(rng.uniform(0, 1, (20, 4)) + 0.4, 0, 1) for _ in range(20)]
            ids = []
            for x in batches:
                answer = await client.post("/v2/models/tiny/versions/1/infer", json=v2_request(x.astype(np.float32)))
                ids.append(answer.json()["id"])
            named = await client.post("/v2/models/tiny/versions/1/infer", json=v2_request(batches[0][:1], id="mine"))
            instances = {"instances": [[0.1, 0.2, 0.3, 0.4]]}
            predict = await client.post("/v1/models/tiny/versions/1:predict", json=instances)
            # The gauges are updated by the monitor's thread, not by these requests: wait for it.
            for _ in range(600):
                windows = (await client.get("/monitor/windows?model=tiny")).json()["windows"]
                if len(windows) == 4:
                    break
                await asyncio.sleep(0.05)
            labelled = [await client.post("/monitor/labels", json={"id": ids[i], "labels": [0] * 20}) for i in (0, 1)]
            single = await client.post("/monitor/labels", json={"id": "mine", "label": 2})
            tf_label = await client.post(
                "/monitor/labels", json={"id": predict.headers["Aideploy-Request-Id"], "label": 1}
            )
            bad = {
                "unknown": await client.post("/monitor/labels", json={"id": "nope", "label": 1}),
                "string label": await client.post("/monitor/labels", json={"id": "mine", "label": "cat"}),
                "too many": await client.post("/monitor/labels", json={"id": "mine", "labels": [1, 2]}),
                "no class": await client.post("/monitor/labels", json={"id": "mine", "label": 7}),
                "both": await client.post("/monitor/labels", json={"id": "mine", "label": 1, "labels": [1]}),
                "not json": await client.post("/monitor/labels", content=b"{"),
                "no id": await client.post("/monitor/labels", json={"label": 1}),
            }
            alerts = (await client.get("/monitor/alerts")).json()["alerts"]
            bad_limit = await client.get("/monitor/alerts?limit=zero")
            metrics = (await client.get("/metrics")).text
            first_class = int(expected(batches[0][:1]).argmax())
            return (ids, named, predict, windows, labelled, single, tf_label, bad, alerts, bad_limit, metrics,
                    first_class)

    (ids, named, predict, windows, labelled, single, tf_label, bad, alerts, bad_limit, metrics,
     first_class) = asyncio.run(scenario())
    assert len(set(ids)) == 40 and all(re.fullmatch(r"[0-9a-f]{22}", i) for i in ids)  # ids the server made
    assert ids == sorted(ids)
    assert named.json()["id"] == "mine" and predict.status_code == 200
    assert [w["drift"] for w in windows] == [False, False, True, True]
    assert [w["first_id"] for w in windows] == [1, 201, 401, 601]
    assert [a.status_code for a in labelled] == [200, 200] and labelled[0].json()["model"] == "tiny"
    assert single.json() == {"id": "mine", "model": "tiny", "version": "1", "labels": [2],
                             "correct": int(first_class == 2)}
    assert tf_label.status_code == 200 and tf_label.json()["model"] == "tiny"
    statuses = {name: answer.status_code for name, answer in bad.items()}
    assert statuses == {"unknown": 404, "string label": 400, "too many": 400, "no class": 400, "both": 400,
                        "not json": 400, "no id": 400}
    assert "no logged request has id 'nope'" in bad["unknown"].json()["error"]
    assert "one per row" in bad["too many"].json()["error"] and "0..2" in bad["no class"].json()["error"]
    assert bad_limit.status_code == 400
    assert {a["kind"] for a in alerts} == {"drift"} and "mean" in {a["subject"] for a in alerts}
    mean_alert = next(a for a in alerts if a["subject"] == "mean")
    assert mean_alert["value"] > mean_alert["threshold"] and "PSI" in mean_alert["message"]
    labels = {"model": "tiny", "version": "1"}
    assert metric(metrics, "aideploy_prediction_log_rows_total", **labels) == 802
    assert metric(metrics, "aideploy_prediction_log_dropped_total", **labels) == 0
    assert metric(metrics, "aideploy_drift_detected", **labels, feature="mean") == 1
    assert metric(metrics, "aideploy_drift_psi", **labels, feature="mean") > 0.25
    assert metric(metrics, "aideploy_alerts_total", **labels, kind="drift") == len(alerts)
    assert metric(metrics, "aideploy_alerts_total", **labels, kind="accuracy") == 0
    # The serving metrics are unchanged by the log.
    assert metric(metrics, "aideploy_requests_total", **labels, protocol="v2", outcome="success") == 41


def test_without_a_log_the_monitoring_routes_say_so(repo):
    async def scenario():
        async with serving(repo) as (client, server):
            assert server.monitor is None
            answer = await client.post("/v2/models/tiny/infer", json=v2_request(np.zeros((1, 4), np.float32)))
            labels = await client.post("/monitor/labels", json={"id": "x", "label": 1})
            return answer, labels

    answer, labels = asyncio.run(scenario())
    assert answer.status_code == 200 and "id" not in answer.json()
    assert labels.status_code == 404 and "--log-db" in labels.json()["error"]


def test_killing_the_server_loses_no_committed_row(repo, tmp_path):
    """SIGKILL mid-load: every row /metrics reported committed is in the file, and the file is sound."""
    db = tmp_path / "log.db"
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "aideploy.cli", "serve", str(repo), "--port", str(port), "--log-db", str(db)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    answered = []

    def load() -> None:
        body = v2_request(np.full((1, 4), 0.5, np.float32))
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                try:
                    answered.append(client.post("/v2/models/tiny/infer", json=body).status_code)
                except httpx.TransportError:
                    return

    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            wait_until_ready(client)
            workers = [threading.Thread(target=load) for _ in range(4)]
            for worker in workers:
                worker.start()
            acknowledged, deadline = 0.0, time.monotonic() + 120
            while acknowledged < 300 and time.monotonic() < deadline:  # several commits done, more in flight
                text = client.get("/metrics").text
                acknowledged = metric(text, "aideploy_prediction_log_rows_total", model="tiny", version="2") or 0.0
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        stop.set()
        if child.poll() is None:
            child.kill()
            child.wait()
    for worker in workers:
        worker.join(30)
    assert child.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (rows,) = connection.execute("SELECT COUNT(*) FROM predictions").fetchone()
    assert rows >= acknowledged >= 300
    assert rows <= answered.count(200) + 4  # nothing logged that was not answered (4 may be answered in flight)


def test_profile_and_report_commands(tmp_path, repo):
    from aideploy import cli

    image_repo = tmp_path / "images"
    registry.publish(build_image_model(tmp_path / "image.onnx"), image_repo, "image")
    assert cli.main(["monitor", "profile", "--repo", str(image_repo), "--name", "image"]) == 0
    reference = image_repo / "image" / "1" / profile.REFERENCE_NAME
    loaded = profile.load_profile(reference)
    assert loaded.model == "image" and loaded.version == 1 and loaded.num_samples >= 1000
    assert 0.0 <= loaded.accuracy <= 1.0

    # A log with one clean and one brighter window of Fashion-MNIST test images.
    from aideploy import data, runtime
    from aideploy.monitor import log

    splits = data.load_splits("mlp")
    predictor = runtime.load(image_repo / "image" / "1" / "model.onnx")
    prediction_log = log.PredictionLog(tmp_path / "log.db")
    x_clean = splits.x_test[:300]
    x_bright = np.clip(splits.x_test[300:600] * 0.5 + 0.5, 0, 1).astype(np.float32)
    for index, x in enumerate(np.concatenate([x_clean, x_bright]).reshape(60, 10, 784)):
        prediction_log.record("image", "1", f"r{index}", x, predictor.predict(x), 0.001)
    prediction_log.close()
    result = subprocess.run(
        [sys.executable, "-m", "aideploy.cli", "monitor", "report", "--db", str(tmp_path / "log.db"),
         "--reference", str(reference), "--out", str(tmp_path / "report"), "--window-size", "300"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    windows = summary["models"]["image:1"]["windows"]
    assert [w["drift"] for w in windows] == [False, True] and "mean" in windows[1]["drifted"]
    assert summary["rows"] == 600 and len(summary["plots"]) == 3
    assert all((tmp_path / "report" / name).is_file() for name in ("traffic.png", "summary.json"))
    missing = subprocess.run(
        [sys.executable, "-m", "aideploy.cli", "monitor", "report", "--db", str(tmp_path / "none.db"),
         "--out", str(tmp_path / "r2")],
        capture_output=True, text=True, timeout=300,
    )
    assert missing.returncode == 2 and "no prediction log" in missing.stderr
