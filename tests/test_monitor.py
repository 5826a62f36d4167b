"""The monitor's parts without a server: features, reference profiles, drift statistics, the log, labels, alerts."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from aideploy.errors import ArtifactError, ConfigError, ModelInputError
from aideploy.monitor import drift, log, profile, report, service

NUM_CLASSES = 3


def softmax_answers(x: np.ndarray) -> np.ndarray:
    """A fixed 'model' on 4 features: its class follows the brightest of the first three."""
    logits = 8.0 * x[:, :NUM_CLASSES]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def reference_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (5000, 4)).astype(np.float32)
    probabilities = softmax_answers(x)
    return x, probabilities, profile.build_profile(x, probabilities, probabilities.argmax(axis=1), model="m", version=1)


def window_of(x: np.ndarray):
    probabilities = softmax_answers(x)
    return profile.input_features(x), probabilities.max(axis=1), probabilities.argmax(axis=1)


def test_input_features_known_values():
    pixels = np.array([[0, 255, 255, 100], [0, 0, 0, 0]], dtype=np.uint8)
    features = profile.input_features(pixels)
    mean = (0 + 1 + 1 + 100 / 255) / 4
    np.testing.assert_allclose(features[0], [mean, np.std([0, 1, 1, 100 / 255]), 0.5, 0.25, 0.25, 0, 0.5], atol=1e-6)
    np.testing.assert_allclose(features[1], [0, 0, 0, 1, 0, 0, 0], atol=1e-7)
    # Integer pixels and the same pixels scaled to [0, 1] summarise the same.
    np.testing.assert_allclose(profile.input_features(pixels.astype(np.float32) / 255), features, atol=1e-6)
    with pytest.raises(ModelInputError, match="numeric"):
        profile.input_features(np.array(["a"]))


def test_identical_data_gives_no_drift_and_a_shift_gives_drift(reference_data):
    x, probabilities, reference = reference_data
    rng = np.random.default_rng(1)
    same = rng.uniform(0, 1, (500, 4)).astype(np.float32)
    results = drift.compare(reference, *window_of(same))
    assert set(results) == set(service.MEASURES)
    assert not any(r["drift"] for r in results.values()), results
    assert max(r["psi"] for r in results.values()) < 0.1
    # The reference's own rows: PSI near zero (only the sample differs for KS).
    own = drift.compare(reference, *window_of(x[:2000]))
    assert max(r["psi"] for r in own.values()) < 0.02
    brighter = np.clip(same + 0.3, 0, 1)
    shifted = drift.compare(reference, *window_of(brighter))
    assert shifted["mean"]["drift"] and shifted["mean"]["level"] == "major"
    assert shifted["mean"]["psi"] > 1.0 and shifted["mean"]["p_value"] < 1e-10


def test_psi_matches_the_formula_and_the_class_mix_uses_chi_squared(reference_data):
    expected, actual = np.array([0.5, 0.3, 0.2]), np.array([0.3, 0.3, 0.4])
    by_hand = (0.3 - 0.5) * np.log(0.3 / 0.5) + (0.4 - 0.2) * np.log(0.4 / 0.2)
    assert drift.psi_of_proportions(expected, actual) == pytest.approx(by_hand, rel=1e-9)
    assert drift.psi_of_proportions(expected, expected) == 0.0
    _, _, reference = reference_data
    rng = np.random.default_rng(2)
    window = rng.uniform(0, 1, (600, 4)).astype(np.float32)
    features, confidences, _ = window_of(window)
    # Inputs unchanged, but the model now answers class 0 twice as often: only the class mix drifts.
    predicted = np.repeat([0, 0, 1, 2], 150)
    results = drift.compare(reference, features, confidences, predicted)
    assert results["predicted"]["drift"] and results["predicted"]["p_value"] < 1e-6
    assert not results["mean"]["drift"]


def test_drift_thresholds_are_configurable_and_checked(reference_data):
    _, _, reference = reference_data
    rng = np.random.default_rng(3)
    slightly = np.clip(rng.uniform(0, 1, (500, 4)) + 0.04, 0, 1).astype(np.float32)
    default = drift.compare(reference, *window_of(slightly))["mean"]
    strict_settings = drift.DriftSettings(psi_moderate=0.01, psi_major=0.02)
    strict = drift.compare(reference, *window_of(slightly), strict_settings)["mean"]
    assert default["psi"] == strict["psi"] and 0.02 < default["psi"] < 0.25
    assert strict["drift"] and strict["level"] == "major"
    with pytest.raises(ConfigError, match="psi_moderate <= psi_major"):
        drift.DriftSettings(psi_moderate=0.3, psi_major=0.2)
    with pytest.raises(ConfigError, match="window_size"):
        drift.DriftSettings(window_size=5)
    with pytest.raises(ModelInputError, match="expected features"):
        drift.compare(reference, np.zeros((3, 2)), np.zeros(3), np.zeros(3, int))


def test_profile_round_trips_and_detects_tampering(reference_data, tmp_path):
    _, _, reference = reference_data
    path = profile.save_profile(reference, tmp_path / profile.REFERENCE_NAME)
    loaded = profile.load_profile(path)
    assert loaded == reference and loaded.accuracy == 1.0 and loaded.version == 1
    assert sum(reference.class_proportions) == pytest.approx(1.0)
    path.write_text(path.read_text().replace('"version": 1', '"version": 2'))
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        profile.load_profile(path)
    with pytest.raises(ArtifactError, match="no reference profile"):
        profile.load_profile(tmp_path / "missing.json")


def test_log_under_concurrent_load_counts_every_row(tmp_path):
    """Writers from 8 threads against a queue of 20 that the writer does not drain at first: each row is
    either committed or counted as dropped, and what the log reports committed is in the file."""
    gate = threading.Event()
    prediction_log = log.PredictionLog(tmp_path / "log.db", max_queue=20)
    original = prediction_log._write

    def gated(items):
        gate.wait(30)
        original(items)

    prediction_log._write = gated
    x = np.full((1, 4), 0.5, np.float32)
    y = np.array([[0.2, 0.7, 0.1]], np.float32)
    accepted = []

    def client(index: int) -> None:
        accepted.extend(prediction_log.record("m", "1", f"r{index}-{i}", x, y, 0.001) for i in range(250))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gate.set()
    assert prediction_log.flush(30)
    prediction_log.close()
    assert prediction_log.committed + prediction_log.dropped == 2000
    # While the writer was held, at most its batch (the queue's 20 and the one it took first) and a full queue
    # could be accepted; everything else was dropped, and counted.
    assert 0 < prediction_log.committed <= 41
    assert sum(accepted) == prediction_log.committed
    with sqlite3.connect(tmp_path / "log.db") as connection:
        (rows,) = connection.execute("SELECT COUNT(*) FROM predictions").fetchone()
        predicted, confidence = connection.execute("SELECT predicted, confidence FROM predictions LIMIT 1").fetchone()
    assert rows == prediction_log.committed
    assert (predicted, confidence) == (1, pytest.approx(0.7))


def test_an_unusable_log_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ArtifactError, match="cannot open the prediction log .*--no-log"):
        log.PredictionLog(tmp_path / "file" / "log.db")
    (tmp_path / "garbage.db").write_bytes(b"this is not a SQLite file" * 100)
    with pytest.raises(ArtifactError, match="cannot open the prediction log"):
        log.PredictionLog(tmp_path / "garbage.db")


def test_retention_keeps_the_newest_rows(tmp_path):
    prediction_log = log.PredictionLog(tmp_path / "log.db", max_rows=30)
    x, y = np.zeros((1, 4), np.float32), np.array([[1.0, 0.0, 0.0]], np.float32)
    for index in range(100):
        prediction_log.record("m", "1", f"r{index}", x, y, 0.0)
        if index % 10 == 9:  # several commits, so retention runs between them
            prediction_log.flush()
    prediction_log.close()
    with sqlite3.connect(tmp_path / "log.db") as connection:
        ids = [row[0] for row in connection.execute("SELECT request_id FROM predictions ORDER BY id")]
    assert 30 <= len(ids) <= 32 and ids[-1] == "r99"  # retention runs every 3 rows here


def test_delayed_labels_join_the_right_rows_and_bad_labels_are_refused(tmp_path):
    prediction_log = log.PredictionLog(tmp_path / "log.db")
    x = np.zeros((2, 4), np.float32)
    y = np.array([[0.1, 0.8, 0.1], [0.6, 0.3, 0.1]], np.float32)  # predicts 1, then 0
    prediction_log.record("m", "1", "two-rows", x, y, 0.002)
    prediction_log.record("m", "2", "one-row", x[:1], y[1:], 0.002)
    # Not flushed: the label call waits for the writer when the id is not in the file yet.
    answer = prediction_log.submit_labels("two-rows", [1, 2])
    assert answer == {"id": "two-rows", "model": "m", "version": "1", "labels": [1, 2], "correct": 1}
    assert log.submit_labels(tmp_path / "log.db", "one-row", 0)["correct"] == 1
    assert log.submit_labels(tmp_path / "log.db", "one-row", 2)["correct"] == 0  # a label sent again replaces
    with sqlite3.connect(tmp_path / "log.db") as connection:
        assert service.rolling_accuracy(connection, "m", "1", 100) == (0.5, 2)
        assert service.rolling_accuracy(connection, "m", "2", 100) == (0.0, 1)
    with pytest.raises(log.UnknownRequestError, match="no logged request has id 'nope'") as error:
        prediction_log.submit_labels("nope", 1)
    assert error.value.http_status == 404
    for bad, message in ((1.5, "class index"), ([1], "had 2 input rows"), (True, "class index"), (-1, "class index"),
                         ([3, 0], "not a class of model 'm'")):
        with pytest.raises(ModelInputError, match=message):
            prediction_log.submit_labels("two-rows", bad)
    with pytest.raises(ModelInputError, match='"id" must be'):
        prediction_log.submit_labels("", 1)
    prediction_log.close()


def test_monitor_windows_accuracy_alerts_and_report(reference_data, tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    _, _, reference = reference_data
    registry = CollectorRegistry()
    settings = drift.DriftSettings(window_size=200, min_labels=20, accuracy_window=100)
    monitor = service.Monitor(tmp_path / "log.db", settings=settings, registry=registry)
    monitor.add_model("m", "1", reference)
    rng = np.random.default_rng(4)
    clean = rng.uniform(0, 1, (400, 4)).astype(np.float32)
    shifted = np.clip(rng.uniform(0, 1, (400, 4)) + 0.3, 0, 1).astype(np.float32)
    for index, x in enumerate(np.concatenate([clean, shifted]).reshape(80, 10, 4)):
        monitor.record("m", "1", f"r{index}", x, softmax_answers(x), 0.001)
    monitor.log.flush()
    windows = monitor.check()
    assert [w["drift"] for w in windows] == [False, False, True, True]
    assert windows[2]["results"]["mean"]["drift"]
    metrics = generate_latest(registry).decode()
    assert 'aideploy_prediction_log_rows_total{model="m",version="1"} 800.0' in metrics
    assert 'aideploy_drift_detected{feature="mean",model="m",version="1"} 1.0' in metrics
    drift_alerts = [a for a in monitor.alerts() if a["kind"] == "drift"]
    assert drift_alerts and {a["subject"] for a in drift_alerts} >= {"mean"}
    assert all(a["value"] >= a["threshold"] for a in drift_alerts)
    # Labels arrive late: right for the clean rows, wrong for the shifted ones.
    for index in range(40):
        x = np.concatenate([clean, shifted]).reshape(80, 10, 4)[index]
        log.submit_labels(tmp_path / "log.db", f"r{index}", softmax_answers(x).argmax(axis=1).tolist())
    monitor.check()
    assert "aideploy_rolling_accuracy{model=\"m\",version=\"1\"} 1.0" in generate_latest(registry).decode()
    for index in range(40, 80):
        log.submit_labels(tmp_path / "log.db", f"r{index}", [0] * 10 if index % 2 else [1] * 10)
    monitor.check()
    accuracy_alerts = [a for a in monitor.alerts() if a["kind"] == "accuracy"]
    assert len(accuracy_alerts) == 1  # on the crossing, not on every look
    assert accuracy_alerts[0]["threshold"] == pytest.approx(0.95)  # the reference's 1.0 minus the allowed 0.05
    assert accuracy_alerts[0]["value"] < 0.8
    assert 'aideploy_alerts_total{kind="accuracy",model="m",version="1"} 1.0' in generate_latest(registry).decode()
    monitor.stop()

    summary = report.write_report(tmp_path / "log.db", tmp_path / "report")
    entry = summary["models"]["m:1"]
    assert [w["drift"] for w in entry["windows"]] == [False, False, True, True]
    assert [w["accuracy"] for w in entry["windows"][:2]] == [1.0, 1.0] and entry["windows"][2]["accuracy"] < 0.9
    assert len(summary["plots"]) == 3
    recomputed = report.summarize(tmp_path / "log.db", reference, settings=drift.DriftSettings(window_size=400))
    assert [w["drift"] for w in recomputed["models"]["m:1"]["windows"]] == [False, True]
    by_time = report.summarize(tmp_path / "log.db", reference, window_seconds=3600)
    assert [w["num_rows"] for w in by_time["models"]["m:1"]["windows"]] == [800]


def test_monitor_imports_neither_tensorflow_nor_the_server(repo_root):
    code = textwrap.dedent(
        """
        import sys
        import aideploy.cli_monitor, aideploy.monitor, aideploy.monitor.report, aideploy.monitor.service
        assert "tensorflow" not in sys.modules, "tensorflow"
        assert not [name for name in sys.modules if name.startswith("aideploy.serve")], "the server"
        import aideploy.serve.monitoring
        assert "tensorflow" not in sys.modules, "tensorflow with the server"
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo_root, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


def test_two_processes_worth_of_monitors_share_one_log(reference_data, tmp_path):
    """Two monitors on one file (as two server workers would be): every row lands once and each
    window is analysed once, by whichever monitor claims it first."""
    _, _, reference = reference_data
    settings = drift.DriftSettings(window_size=100)
    monitors = [service.Monitor(tmp_path / "log.db", settings=settings) for _ in range(2)]
    for monitor in monitors:
        monitor.add_model("m", "1", reference)
    rng = np.random.default_rng(5)
    for index in range(400):
        x = rng.uniform(0, 1, (1, 4)).astype(np.float32)
        monitors[index % 2].record("m", "1", f"r{index}", x, softmax_answers(x), 0.001)
    for monitor in monitors:
        monitor.log.flush()
    claimed = [len(monitor.check()) for monitor in monitors]
    for monitor in monitors:
        monitor.stop()
    assert sum(claimed) == 4
    with sqlite3.connect(tmp_path / "log.db") as connection:
        (rows,) = connection.execute("SELECT COUNT(DISTINCT request_id) FROM predictions").fetchone()
        windows = connection.execute("SELECT first_id, last_id FROM windows ORDER BY first_id").fetchall()
    assert rows == 400 and windows == [(1, 100), (101, 200), (201, 300), (301, 400)]


def test_the_writer_process_ends_with_the_log_and_a_dead_one_is_replaced(tmp_path):
    """Rows of a batch the writer process could not take are counted as dropped; the next batch is written."""
    prediction_log = log.PredictionLog(tmp_path / "log.db")
    x, y = np.zeros((1, 4), np.float32), np.array([[0.1, 0.8, 0.1]], np.float32)
    prediction_log.record("m", "1", "before", x, y, 0.001)
    assert prediction_log.flush(30) and prediction_log.committed == 1
    first_writer = prediction_log._writer
    first_writer.kill()
    first_writer.wait(10)
    prediction_log.record("m", "1", "lost", x, y, 0.001)
    assert prediction_log.flush(30)
    assert (prediction_log.committed, prediction_log.dropped) == (1, 1)
    prediction_log.record("m", "1", "after", x, y, 0.001)
    assert prediction_log.flush(30)
    prediction_log.close()
    assert prediction_log._writer is not first_writer and prediction_log._writer.returncode == 0
    assert (prediction_log.committed, prediction_log.dropped) == (2, 1)
    with sqlite3.connect(tmp_path / "log.db") as connection:
        ids = [row[0] for row in connection.execute("SELECT request_id FROM predictions ORDER BY id")]
    assert ids == ["before", "after"]


def test_the_log_works_from_code_read_on_stdin(tmp_path):
    """The writer process is a fresh interpreter that does not re-run the main script (there is none here)."""
    code = f"""
import numpy as np
from aideploy.monitor.log import PredictionLog
prediction_log = PredictionLog({str(tmp_path / "log.db")!r})
for index in range(300):
    prediction_log.record("m", "1", f"r{{index}}", np.random.rand(2, 784).astype(np.float32),
                          np.full((2, 10), 0.1, np.float32), 0.001)
prediction_log.close()
print(prediction_log.committed, prediction_log.dropped)
"""
    done = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["600", "0"]
