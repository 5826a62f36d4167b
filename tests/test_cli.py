"""The command line, run as a user runs it: a subprocess of the installed script."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aideploy import artifacts, cli


def run_cli(*arguments: str, environment: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m aideploy.cli ARGUMENTS`` with the given extra environment."""
    env = {**os.environ, **(environment or {})}
    return subprocess.run(
        [sys.executable, "-m", "aideploy.cli", *arguments],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def last_json_line(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_help_lists_the_train_command():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "train" in result.stdout
    assert cli.build_parser().prog == "aideploy"


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("aideploy")
    assert script.exists(), "the package must be installed with its console script (pip install -e .)"


def test_train_three_epochs_full_data(tmp_path):
    """The issue's acceptance command, on the full 60k images."""
    import tf_keras

    result = run_cli("train", "--model", "mlp", "--epochs", "3", "--out", str(tmp_path),
                     environment={"AIDEPLOY_FAST": "0"})
    assert result.returncode == 0, result.stderr
    summary = last_json_line(result.stdout)
    assert summary["test_accuracy"] >= 0.84
    assert summary["epochs_run"] == 3 and summary["fast_mode"] is False
    model = tf_keras.models.load_model(summary["model_path"])
    assert model.count_params() == 55050
    manifest = json.loads(Path(summary["manifest_path"]).read_text())
    assert manifest["sha256"] == artifacts.sha256_of(summary["model_path"])
    assert "Epoch 3/3" in result.stdout  # progress is shown


def test_corrupted_data_exits_cleanly(tmp_path, repo_root):
    data_copy = tmp_path / "data"
    shutil.copytree(repo_root / "data", data_copy)
    target = data_copy / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    content = bytearray(target.read_bytes())
    content[len(content) // 2] ^= 0xFF
    target.write_bytes(bytes(content))
    result = run_cli("train", "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "out"),
                     environment={"AIDEPLOY_DATA_DIR": str(data_copy)})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "train-images-idx3-ubyte.gz" in result.stderr and "corrupted" in result.stderr
    assert "git checkout" in result.stderr
    assert result.stderr.strip().count("\n\n") == 0  # one paragraph
    assert not (tmp_path / "out" / "mlp.keras").exists()


@pytest.mark.parametrize(
    "arguments",
    [["train", "--model", "rnn", "--out", "x"], ["train", "--epochs", "0", "--out", "x"], ["train"]],
)
def test_bad_arguments_are_usage_errors(arguments):
    result = run_cli(*arguments)
    assert result.returncode == 2
    assert "usage: aideploy" in result.stderr
