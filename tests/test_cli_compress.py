"""Tests of ``aideploy prune``, ``cluster``, ``quantize``, ``compare``: results; bad input exits 2, writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aideploy import artifacts, cli, cli_compress, quantize
from aideploy.errors import ModelInputError


def _last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(
    ("argv", "checks"),
    [
        (["prune", "--sparsity", "0.8", "--epochs", "1"], {"method": "prune"}),
        (["prune", "--structure", "2:4", "--schedule", "constant", "--epochs", "1"], {"method": "prune-2:4"}),
        (["cluster", "--clusters", "8", "--epochs", "1"], {"method": "cluster"}),
        (["quantize", "--method", "int8", "--calibration-size", "100"], {"method": "int8"}),
        (["quantize", "--method", "ort-static", "--calibration-method", "entropy", "--calibration-size", "64"],
         {"method": "ort-static"}),
    ],
)  # fmt: skip
def test_commands_print_progress_and_a_json_line_with_path_accuracy_and_sizes(argv, checks, trained_mlp, tmp_path,
                                                                              capsys):  # fmt: skip
    command = [argv[0], trained_mlp["model_path"], *argv[1:], "--fast", "--out", str(tmp_path)]
    status, out, err = _run(command, capsys)
    assert status == 0, err
    result = _last_json_line(out)
    assert {key: result[key] for key in checks} == checks
    assert artifacts.verify(result["path"])["sha256"] == artifacts.sha256_of(result["path"])
    assert 0 < result["gzip_bytes"] < result["size_bytes"] == artifacts.read_manifest(result["path"])["size_bytes"]
    assert result["test_accuracy"] >= trained_mlp["test_accuracy"] - 0.10
    assert "Test accuracy" in out.splitlines()[-2] and out.splitlines()[0].split()[0] in ("Pruning", "Clustering",
                                                                                         "Quantizing")  # fmt: skip
    if checks["method"] == "prune":
        assert result["sparsity"] == pytest.approx(0.8, abs=0.01)
    if checks["method"] == "ort-static":
        assert artifacts.read_manifest(result["path"])["params"]["quantization"]["calibration_method"] == "entropy"


def test_compare_prints_the_table_and_writes_csv_json_and_plot(trained_mlp, mlp_exports, tmp_path, capsys):
    models = [trained_mlp["model_path"], str(mlp_exports["onnx"].path), str(mlp_exports["tflite"].path)]
    status, out, err = _run(["compare", *models, "--baseline", str(mlp_exports["tflite"].path), "--rounds", "1",
                             "--fast", "--out", str(tmp_path)], capsys)  # fmt: skip
    assert status == 0, err
    result = _last_json_line(out)
    assert [row["variant"] for row in result["rows"]] == ["mlp.tflite", "mlp.keras", "mlp.onnx"]
    assert result["rows"][0]["size_ratio"] == 1 and result["baseline"] == "mlp.tflite"
    # The same float32 model in three runtimes: the same accuracy.
    assert {row["test_accuracy"] for row in result["rows"]} == {result["rows"][0]["test_accuracy"]}
    for kind in ("csv", "json", "png"):
        assert (tmp_path / f"comparison.{kind}").is_file() and result[kind] == str(tmp_path / f"comparison.{kind}")
    assert f"CPU: {result['cpu_model']}" in out and "mlp.onnx" in out


def test_method_lists_match_the_module():
    assert cli_compress.QUANTIZE_METHODS == quantize.METHODS
    assert set(cli_compress.CALIBRATION_METHODS) == set(quantize.CALIBRATION_METHODS)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["prune", "MODEL", "--sparsity", "1.5"], "--sparsity must be strictly between 0 and 1"),
        (["prune", "MODEL", "--sparsity", "0"], "--sparsity must be strictly between 0 and 1"),
        (["prune", "MODEL"], "say how much to prune"),
        (["prune", "MODEL", "--sparsity", "0.5", "--schedule", "cubic"], "unknown pruning schedule 'cubic'"),
        (["cluster", "MODEL", "--clusters", "1"], "--clusters must be at least 2"),
        (["quantize", "MODEL", "--method", "int4"], "unknown quantization method 'int4': use one of dynamic"),
        (["quantize", "MODEL", "--method", "ort-static", "--calibration-size", "0"], "empty calibration set"),
        (["quantize", "MODEL", "--method", "ort-static", "--calibration-method", "median"],
         "unknown calibration method 'median'"),
        (["quantize", "MISSING", "--method", "int8"], "does not exist"),
        (["compare", "MODEL", "MISSING"], "does not exist"),
        (["compare", "MODEL", "--num-threads", "0"], "--num-threads must be at least 1"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_paragraph_and_writes_nothing(argv, message, trained_mlp, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = [{"MODEL": trained_mlp["model_path"], "MISSING": str(tmp_path / "missing.keras")}.get(a, a) for a in argv]
    status, out, err = _run([*argv, "--out", str(out_dir)], capsys)
    assert status == cli.EXIT_EXPECTED_ERROR
    assert message in " ".join(err.split()), err
    assert err.startswith(f"aideploy {argv[0]}: error:") and err.count("error:") == 1 and "\n\n" not in err
    assert "Traceback" not in err and "{" not in out
    assert list(out_dir.iterdir()) == []


def test_a_model_qat_cannot_handle_names_the_layer_and_writes_nothing(tmp_path, capsys):
    from aideploy.backend import keras

    inputs = keras.Input((784,), name="input")
    hidden = keras.layers.Dense(16, activation="relu", name="dense_1")(inputs)
    hidden = keras.layers.LayerNormalization(name="norm")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="probabilities")(hidden))
    model.save(tmp_path / "odd.keras")
    out_dir = tmp_path / "out"
    status, _, err = _run(["quantize", str(tmp_path / "odd.keras"), "--method", "qat", "--fast",
                           "--out", str(out_dir)], capsys)  # fmt: skip
    assert status == cli.EXIT_EXPECTED_ERROR
    assert "layer(s) 'norm' (LayerNormalization) cannot be quantized" in " ".join(err.split()), err
    assert list(out_dir.iterdir()) == []


def test_a_failed_onnx_runtime_quantization_leaves_no_float_export_or_temporary_file(
    trained_mlp, mlp_splits, tmp_path, monkeypatch
):
    from onnxruntime import quantization

    def broken(*args, **kwargs):
        raise RuntimeError("calibration failed half-way")

    monkeypatch.setattr(quantization, "quantize_static", broken)
    with pytest.raises(RuntimeError, match="half-way"):
        quantize.quantize(trained_mlp["model_path"], "ort-static", tmp_path, splits=mlp_splits, calibration_size=32)
    assert list(tmp_path.iterdir()) == []


def test_a_float_export_that_was_there_before_is_kept_when_quantization_fails(
    trained_mlp, mlp_splits, tmp_path, monkeypatch
):
    from onnxruntime import quantization

    quantize.quantize(trained_mlp["model_path"], "ort-dynamic", tmp_path, splits=mlp_splits)
    before = sorted(path.name for path in tmp_path.iterdir())
    monkeypatch.setattr(quantization, "quantize_static", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        quantize.quantize(trained_mlp["model_path"], "ort-static", tmp_path, splits=mlp_splits, calibration_size=32)
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    artifacts.verify(tmp_path / "mlp.onnx")


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        (lambda x: x[:20].reshape(20, 28, 28), r"expected input of shape \(N, 784\)"),
        (lambda x: (x[:20] * 255).astype(np.uint8), "scale the pixels"),
        (lambda x: x[:0], "calibration set is empty"),
    ],
)
def test_onnx_runtime_calibration_of_the_wrong_shape_dtype_or_size_is_refused(
    calibration, message, mlp_exports, mlp_splits, tmp_path
):
    with pytest.raises(ModelInputError, match=message):
        quantize.ort_quantize(mlp_exports["onnx"].path, tmp_path / "q.onnx", "ort-static",
                              calibration=calibration(mlp_splits.x_train))  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_quantize_refuses_data_of_another_model_kind_before_writing(trained_mlp, cnn_splits, tmp_path):
    with pytest.raises(ModelInputError, match=r"shape \(N, 784\)"):
        quantize.quantize(trained_mlp["model_path"], "ort-static", tmp_path, splits=cnn_splits)
    assert list(tmp_path.iterdir()) == []
