"""Tests of aideploy.runtime (one predictor interface over every runtime) and aideploy.bench."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from aideploy import bench, runtime
from aideploy.errors import ArtifactError, ConfigError, ModelInputError


@pytest.fixture(scope="module")
def mlp_predictors(trained_mlp, mlp_exports):
    paths = [trained_mlp["model_path"], *(e.path for e in mlp_exports.values())]
    return {p.runtime: p for p in (runtime.load(path) for path in paths)}


def test_load_picks_the_runtime_from_the_path(mlp_predictors):
    assert set(mlp_predictors) == set(runtime.RUNTIMES)
    assert isinstance(mlp_predictors["onnxruntime"], runtime.OnnxPredictor)
    assert isinstance(mlp_predictors["tflite"], runtime.TFLitePredictor)
    assert isinstance(mlp_predictors["saved_model"], runtime.SavedModelPredictor)
    assert isinstance(mlp_predictors["keras"], runtime.KerasPredictor)


@pytest.mark.parametrize("name", runtime.RUNTIMES)
def test_every_predictor_reports_the_same_metadata(name, mlp_predictors):
    predictor = mlp_predictors[name]
    assert predictor.input.shape == (None, 784)
    assert predictor.input.dtype == predictor.output.dtype == "float32"
    assert predictor.output.shape == (None, 10)
    metadata = json.loads(json.dumps(predictor.metadata()))
    assert metadata["runtime"] == name
    if name != "keras":
        # The exports carry the names chosen in aideploy.convert.
        assert (predictor.input.name, predictor.output.name) == ("input", "probabilities")


@pytest.mark.parametrize("name", runtime.RUNTIMES)
def test_every_predictor_matches_keras_at_several_batch_sizes(name, mlp_predictors, mlp_splits):
    keras_model = mlp_predictors["keras"].model
    for batch_size in (1, 7, 1, 64):  # the TFLite interpreter resizes in both directions
        x = mlp_splits.x_test[:batch_size]
        output = mlp_predictors[name].predict(x)
        assert output.shape == (batch_size, 10)
        np.testing.assert_allclose(output, keras_model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("name", runtime.RUNTIMES)
@pytest.mark.parametrize(
    ("bad_input", "received", "hint"),
    [
        (np.zeros((2, 28, 28), np.uint8), r"got \(2, 28, 28\) uint8", "flatten the images"),
        (np.zeros((3, 784), np.float64), r"got \(3, 784\) float64", r"x.astype\(np.float32\)"),
        (np.zeros((3, 784), np.uint8), r"got \(3, 784\) uint8", "data.scale"),
        (np.zeros(784, np.float32), r"got \(784\) float32", r"x\[None\]"),
        ([[0.0] * 784], "got list", "np.asarray"),
    ],
)
def test_wrong_input_states_expected_and_received(name, bad_input, received, hint, mlp_predictors):
    with pytest.raises(ModelInputError, match=r"expected .*\(N, 784\) float32") as caught:
        mlp_predictors[name].predict(bad_input)
    message = str(caught.value)
    assert re.search(received, message), message
    assert re.search(hint, message), message
    assert isinstance(caught.value, ValueError)


def test_onnx_providers_follow_tensorrt_cuda_cpu_order(mlp_predictors):
    assert runtime.choose_providers(
        ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider", "AzureExecutionProvider"]
    ) == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert runtime.choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert runtime.choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    # What this machine installs, and what the session really uses, are reported.
    predictor = mlp_predictors["onnxruntime"]
    metadata = predictor.metadata()
    assert metadata["providers"] == predictor.session.get_providers()
    assert metadata["providers"][0] == runtime.choose_providers(metadata["available_providers"])[0]


def test_thread_count_is_settable_and_checked(mlp_exports):
    predictor = runtime.load(mlp_exports["onnx"].path, num_threads=1)
    assert predictor.session_options.intra_op_num_threads == 1
    assert predictor.metadata()["num_threads"] == 1
    tflite = runtime.load(mlp_exports["tflite"].path, num_threads=2)
    assert tflite.num_threads == 2
    with pytest.raises(ConfigError, match="num_threads must be a whole number of at least 1"):
        runtime.load(mlp_exports["onnx"].path, num_threads=0)


def test_onnx_and_tflite_predictors_run_without_tensorflow(mlp_exports, mlp_splits, tmp_path):
    x_path = tmp_path / "x.npy"
    np.save(x_path, mlp_splits.x_test[:16])
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        from aideploy import runtime
        x = np.load({str(x_path)!r})
        outputs = {{}}
        for path in ({str(mlp_exports["onnx"].path)!r}, {str(mlp_exports["tflite"].path)!r}):
            predictor = runtime.load(path)
            outputs[predictor.runtime] = predictor.predict(x).argmax(axis=1).tolist()
            predictor.predict(x[:1])  # the interpreter resizes and re-allocates
        print(json.dumps({{"tensorflow": "tensorflow" in sys.modules, "top1": outputs}}))
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["tensorflow"] is False
    assert "XNNPACK" not in completed.stderr, completed.stderr  # LiteRT's native INFO line is silenced
    assert result["top1"]["onnxruntime"] == result["top1"]["tflite"]
    assert len(result["top1"]["onnxruntime"]) == 16


def test_bad_paths_give_clear_errors(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        runtime.load(tmp_path / "missing.onnx")
    (tmp_path / "model.bin").write_bytes(b"\0")
    with pytest.raises(ArtifactError, match="cannot tell which runtime runs 'model.bin'"):
        runtime.load(tmp_path / "model.bin")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ArtifactError, match="without saved_model.pb"):
        runtime.load(tmp_path / "folder")
    with pytest.raises(ConfigError, match="unknown runtime 'torch'"):
        runtime.load(tmp_path / "model.bin", runtime="torch")


@pytest.mark.parametrize("suffix", [".onnx", ".tflite", ".keras"])
def test_unreadable_model_files_are_artifact_errors(suffix, tmp_path):
    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(b"definitely not a model")
    with pytest.raises(ArtifactError, match=r"cannot load .*broken"):
        runtime.load(broken)


def test_find_models_expands_folders(mlp_exports, tmp_path):
    folder = mlp_exports["onnx"].path.parent
    found = runtime.find_models([folder])
    assert [p.name for p in found] == ["mlp.onnx", "mlp.tflite", "mlp_saved_model"]
    assert runtime.find_models([mlp_exports["onnx"].path]) == [mlp_exports["onnx"].path]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="holds no model"):
        runtime.find_models([tmp_path / "empty"])


def test_parity_report_checks_lengths_and_formats(trained_mlp, mlp_exports, mlp_splits):
    with pytest.raises(ModelInputError, match="as many labels as inputs"):
        runtime.parity_report(trained_mlp["model_path"], [], mlp_splits.x_test[:5], mlp_splits.y_test[:4])
    report = runtime.parity_report(
        trained_mlp["model_path"], [mlp_exports["onnx"].path], mlp_splits.x_test[:300], mlp_splits.y_test[:300]
    )
    assert "onnxruntime" in report.table() and "300 test images" in report.table()
    assert json.loads(json.dumps(report.to_dict()))["rows"][0]["runtime"] == "onnxruntime"
    assert not report.passed(max_abs_diff=-1.0)


def test_benchmark_gives_every_runtime_its_own_process_and_the_same_threads(trained_mlp, mlp_exports, tmp_path):
    settings = bench.BenchmarkSettings(
        batch_sizes=(1, 8), latency_calls=20, latency_max_seconds=0.2, throughput_seconds=0.01,
        num_rounds=1, warmup_calls=2, num_threads=2,
    )  # fmt: skip
    sources = [trained_mlp["model_path"], mlp_exports["onnx"].path, mlp_exports["tflite"].path]
    result = bench.benchmark(sources, settings)

    assert result.labels() == [
        bench.REFERENCE_PREDICT,
        "aideploy keras",
        "aideploy onnxruntime",
        bench.REFERENCE_RAW_ONNX,
        "aideploy tflite",
        bench.REFERENCE_NUMPY,
    ]
    assert len(result.rows) == 6 * 2
    for row in result.rows:
        assert row["throughput_per_s"] > 0
        if row["batch_size"] == 1:
            assert 0 < row["p50_us"] <= row["p99_us"]
    workers = result.settings["workers"]
    assert len({report["pid"] for report in workers.values()}) == 6  # one process a runtime
    # The thread count reached every runtime: TensorFlow's pools, ONNX Runtime's
    # session options, LiteRT's interpreter and every BLAS pool (threadpoolctl).
    for label in (bench.REFERENCE_PREDICT, "aideploy keras"):
        assert workers[label]["threads"]["tensorflow_intra_op"] == 2
        assert workers[label]["threads"]["tensorflow_inter_op"] == 2
    for label in ("aideploy onnxruntime", bench.REFERENCE_RAW_ONNX):
        assert workers[label]["threads"]["onnxruntime_intra_op"] == 2
    assert workers["aideploy tflite"]["threads"]["litert"] == 2
    for label, report in workers.items():
        assert report["threads"]["blas"] == [2], label
        assert all(pool["num_threads"] == 2 for pool in report["blas"]), label
    assert result.settings["thread_summary"].startswith("2 (")

    # GMAC/s is multiply-adds an example (784*64 + 64*64 + 64*10) times examples a second.
    assert result.settings["macs_per_example"] == 54_912
    assert result.settings["numpy_reference_layers"] == [[1, 784, 64], [1, 64, 64], [1, 64, 10]]
    for row in result.rows:
        assert row["gmac_per_s"] == pytest.approx(row["throughput_per_s"] * 54_912 / 1e9, rel=1e-9)
    cpu = result.settings["cpu_model"]
    assert cpu and cpu == bench.cpu_model()
    table = result.table()
    for text in (f"CPU: {cpu}", "threads per runtime: 2", "GMAC/s @8", "b1 cost/raw ORT", "b1 cost/numpy",
                 "@8 /numpy", "aideploy tflite", "54,912 multiply-adds"):  # fmt: skip
        assert text in table, text
    onnx_cost = result.ratio("aideploy onnxruntime", bench.REFERENCE_RAW_ONNX, 1, measure="latency")
    assert (
        onnx_cost == result.get("aideploy onnxruntime", 1)["p50_us"] / result.get(bench.REFERENCE_RAW_ONNX, 1)["p50_us"]
    )

    paths = result.save(tmp_path / "results")
    assert sorted(paths) == ["csv", "json", "png"]
    assert paths["csv"].read_text().count("\n") == 1 + len(result.rows)
    saved = json.loads(paths["json"].read_text())
    assert saved["ratios"]["aideploy onnxruntime"]["batch1_cost_vs_raw_onnxruntime"] == pytest.approx(onnx_cost)
    assert paths["png"].stat().st_size > 10_000


def test_order_changes_the_order_the_runtimes_are_measured_in(mlp_exports):
    settings = bench.BenchmarkSettings(
        batch_sizes=(1,), latency_calls=20, latency_max_seconds=0.05, throughput_seconds=0.005,
        num_rounds=2, warmup_calls=1,
    )  # fmt: skip
    sources = [mlp_exports["onnx"].path, mlp_exports["tflite"].path]
    natural = ["aideploy onnxruntime", bench.REFERENCE_RAW_ONNX, "aideploy tflite", bench.REFERENCE_NUMPY]
    forward = bench.benchmark(sources, dataclasses.replace(settings, order="forward"))
    reverse = bench.benchmark(sources, dataclasses.replace(settings, order="reverse"))
    assert forward.settings["measured_sequence"] == natural * 2
    assert reverse.settings["measured_sequence"] == natural[::-1] * 2
    assert forward.labels() == reverse.labels() == natural  # the table keeps one order


def test_measurement_order_shuffles_each_round_afresh():
    labels = [f"runtime {index}" for index in range(6)]
    rounds = bench.measurement_order(labels, "shuffled", 8, seed=3)
    assert all(sorted(turn) == sorted(labels) for turn in rounds)
    assert len({tuple(turn) for turn in rounds}) > 1
    assert rounds == bench.measurement_order(labels, "shuffled", 8, seed=3)
    assert bench.measurement_order(labels, "reverse", 2) == [labels[::-1]] * 2
    with pytest.raises(ConfigError, match="unknown order 'backwards'"):
        bench.measurement_order(labels, "backwards", 1)


def test_numpy_reference_runs_with_openblas_pinning_unset_in_its_process_only(mlp_exports, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "524288")
    settings = bench.BenchmarkSettings(
        batch_sizes=(1,), latency_calls=10, latency_max_seconds=0.05, throughput_seconds=0.005,
        num_rounds=1, warmup_calls=1,
    )  # fmt: skip
    result = bench.benchmark([mlp_exports["onnx"].path], settings)
    workers = result.settings["workers"]
    assert workers[bench.REFERENCE_NUMPY]["environment"] == {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}
    assert workers["aideploy onnxruntime"]["environment"] == {
        "OPENBLAS_CORETYPE": "Haswell",
        "OPENBLAS_L2_SIZE": "524288",
    }
    assert "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset in its process only" in result.table()
    assert "OPENBLAS_CORETYPE=Haswell" in result.table()


def test_a_worker_that_cannot_load_its_model_is_an_artifact_error(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match=r"cannot benchmark aideploy onnxruntime: ArtifactError: cannot load"):
        bench.benchmark([broken], bench.BenchmarkSettings(num_rounds=1))


def test_numpy_reference_follows_convolutions(trained_cnn):
    settings = bench.BenchmarkSettings(
        batch_sizes=(2,), latency_calls=10, latency_max_seconds=0.1, throughput_seconds=0.01,
        num_rounds=1, warmup_calls=1,
    )  # fmt: skip
    result = bench.benchmark([trained_cnn["model_path"]], settings)
    # conv 3x3 1->32 at 28x28, conv 3x3 32->64 at 14x14, dense 3136->128, dense 128->10
    assert result.settings["numpy_reference_layers"] == [
        [784, 9, 32],
        [196, 288, 64],
        [1, 3136, 128],
        [1, 128, 10],
    ]
    assert (
        result.settings["macs_per_example"]
        == 4_241_152
        == bench.macs_per_example([[784, 9, 32], [196, 288, 64], [1, 3136, 128], [1, 128, 10]])
    )


def test_measure_latency_counts_calls_and_orders_percentiles():
    calls = []
    latency = bench.measure_latency(calls.append, np.zeros((1, 4), np.float32), num_calls=30, warmup_calls=5)
    assert len(calls) == 35 and latency.num_calls == 30
    assert 0 < latency.p50_us <= latency.p99_us
    with pytest.raises(ConfigError, match="at least 10 calls"):
        bench.measure_latency(calls.append, np.zeros(1), num_calls=5)


def test_benchmark_settings_are_checked():
    with pytest.raises(ConfigError, match="batch sizes"):
        bench.BenchmarkSettings(batch_sizes=(0,))
    with pytest.raises(ConfigError, match="num_threads"):
        bench.BenchmarkSettings(num_threads=0)
    with pytest.raises(ConfigError, match="unknown order 'sideways'"):
        bench.BenchmarkSettings(order="sideways")
    assert bench.BenchmarkSettings.for_mode(num_threads=2, order="reverse").order == "reverse"


def test_bench_command_prints_the_table_then_a_short_json_line(mlp_exports, tmp_path, capsys):
    from aideploy import cli

    folder = mlp_exports["onnx"].path.parent
    argv = ["bench", str(mlp_exports["onnx"].path), str(mlp_exports["tflite"].path), "--batch-sizes", "1", "4"]
    assert cli.main([*argv, "--fast", "--order", "reverse", "--out", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("CPU: ") and "threads per runtime: 1" in line for line in out)
    assert any("GMAC/s @4" in line for line in out)
    assert len(out[-1]) < 1500  # a short last line; the full results are in the file it names
    summary = json.loads(out[-1])
    assert summary["order"] == "reverse" and summary["num_threads"] == 1
    saved = json.loads(open(summary["files"]["json"]).read())
    assert saved["settings"]["order"] == "reverse"
    assert saved["settings"]["measured_sequence"][:4] == [
        bench.REFERENCE_NUMPY,
        "aideploy tflite",
        bench.REFERENCE_RAW_ONNX,
        "aideploy onnxruntime",
    ]
    assert str(folder) in summary["models"][0]
