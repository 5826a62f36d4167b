"""Tests of the ``aideploy convert`` and ``aideploy bench`` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aideploy import artifacts, cli, convert


def _last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_convert_to_onnx_prints_a_path_that_plain_onnxruntime_loads(trained_mlp, mlp_splits, tmp_path):
    """The issue's check, through the installed console script in a fresh process."""
    import onnxruntime

    completed = subprocess.run(
        [sys.executable, "-m", "aideploy.cli", "convert", trained_mlp["model_path"], "--to", "onnx",
         "--out", str(tmp_path)],
        capture_output=True, text=True, check=True, env={**os.environ},
    )  # fmt: skip
    result = _last_json_line(completed.stdout)
    assert result["format"] == "onnx"
    assert result["sha256"] == artifacts.sha256_of(result["path"])
    session = onnxruntime.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"input": mlp_splits.x_test[:10]})
    assert probabilities.shape == (10, 10)
    assert completed.stderr.count("Traceback") == 0


@pytest.mark.parametrize("fmt", ["tflite", "saved_model"])
def test_convert_other_formats(fmt, trained_mlp, tmp_path, capsys):
    status = cli.main(["convert", trained_mlp["model_path"], "--to", fmt, "--out", str(tmp_path)])
    assert status == 0
    result = _last_json_line(capsys.readouterr().out)
    assert result["format"] == fmt
    assert result["sha256"] == artifacts.verify(result["path"])["sha256"]


def test_convert_formats_match_the_module():
    assert set(cli._export_formats()) == set(convert.FORMATS)


def test_convert_missing_model_exits_2_with_one_paragraph(tmp_path, capsys):
    status = cli.main(["convert", str(tmp_path / "nope.keras"), "--to", "onnx", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == cli.EXIT_EXPECTED_ERROR
    assert "aideploy convert: error: model file" in captured.err
    assert "does not exist" in captured.err
    assert "Traceback" not in captured.err


def test_convert_unknown_format_is_refused_by_the_parser(trained_mlp, tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["convert", trained_mlp["model_path"], "--to", "caffe", "--out", str(tmp_path)])
    assert caught.value.code == 2
    assert "invalid choice: 'caffe'" in capsys.readouterr().err


def test_bench_prints_a_table_and_json(trained_mlp, tmp_path, capsys):
    exported = convert.export(trained_mlp["model_path"], "onnx", tmp_path / "exports")
    tflite = convert.export(trained_mlp["model_path"], "tflite", tmp_path / "exports")
    argv = ["bench", str(tmp_path / "exports"), "--batch-sizes", "1", "4", "--fast"]

    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "raw InferenceSession.run" in out and "aideploy tflite" in out and "b1 cost/raw ORT" in out
    summary = _last_json_line(out)
    assert summary["models"] == [str(exported.path), str(tflite.path)]

    assert cli.main([*argv, "--json", "--out", str(tmp_path / "results")]) == 0
    result = _last_json_line(capsys.readouterr().out)
    assert {row["batch_size"] for row in result["rows"]} == {1, 4}
    assert np.isfinite([row["throughput_per_s"] for row in result["rows"]]).all()
    assert sorted(result["files"]) == ["csv", "json", "png"]


def test_bench_bad_path_exits_2(tmp_path, capsys):
    assert cli.main(["bench", str(tmp_path / "missing.onnx")]) == cli.EXIT_EXPECTED_ERROR
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["convert", "bench"])
def test_unwritable_out_folder_exits_2_before_any_work(command, trained_mlp, tmp_path, capsys):
    # A file where the folder should be: nothing can be created beneath it.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = {
        "convert": ["convert", trained_mlp["model_path"], "--to", "onnx", "--out", str(blocker / "out")],
        "bench": ["bench", trained_mlp["model_path"], "--fast", "--out", str(blocker / "out")],
    }[command]

    assert cli.main(argv) == cli.EXIT_EXPECTED_ERROR
    captured = capsys.readouterr()
    assert "cannot write to" in captured.err and "--out" in captured.err
    assert "Traceback" not in captured.err
    assert "Benchmarking" not in captured.err and "Exporting" not in captured.out
