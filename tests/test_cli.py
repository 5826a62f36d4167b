"""The command line, run as a user runs it: a subprocess of the installed script, or
``cli.main`` in-process where TensorFlow would otherwise load once more."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def assert_one_paragraph(stderr: str, *fragments: str) -> None:
    """An expected error: one paragraph on stderr that names the problem, no traceback."""
    assert "Traceback" not in stderr
    text = stderr.strip()
    assert text.startswith("aideploy train: error: "), text
    assert "\n\n" not in text  # one paragraph
    flat = " ".join(text.split())
    for fragment in fragments:
        assert fragment in flat, (fragment, flat)


def test_help_lists_the_train_command():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "train" in result.stdout and "usage: aideploy" in result.stdout


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
    assert manifest["metrics"]["best_epoch"] == summary["best_epoch"] == 3  # no early stopping in 3 epochs
    assert "Epoch 3/3" in result.stdout  # progress is shown


@pytest.mark.parametrize("where", ["/proc/forbidden", "under-a-file"])
def test_unwritable_out_folder_exits_cleanly_before_training(tmp_path, where):
    if where == "under-a-file":
        (tmp_path / "a-file").write_text("")
        where = str(tmp_path / "a-file" / "out")
    result = run_cli("train", "--model", "mlp", "--epochs", "1", "--out", where, timeout=120)
    assert result.returncode == 2
    assert_one_paragraph(result.stderr, f"cannot write to {where}", "choose a writable folder with --out")
    assert "Epoch" not in result.stdout  # nothing was trained


def test_bad_seed_is_a_config_error_with_exit_2(tmp_path):
    result = run_cli("train", "--out", str(tmp_path), environment={"AIDEPLOY_SEED": "forty-two"}, timeout=120)
    assert result.returncode == 2
    assert_one_paragraph(result.stderr, "AIDEPLOY_SEED must be a whole number, got 'forty-two'")


def test_corrupted_data_exits_cleanly(tmp_path, data_dir_copy, monkeypatch, capsys):
    target = data_dir_copy / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    content = bytearray(target.read_bytes())
    content[len(content) // 2] ^= 0xFF
    target.write_bytes(bytes(content))
    monkeypatch.setenv("AIDEPLOY_DATA_DIR", str(data_dir_copy))
    status = cli.main(["train", "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "out")])
    assert status == 2
    assert_one_paragraph(capsys.readouterr().err, "train-images-idx3-ubyte.gz", "corrupted", "git checkout")
    assert not (tmp_path / "out" / "mlp.keras").exists()


def test_npz_with_unscaled_float_pixels_exits_cleanly(tmp_path, capsys):
    path = tmp_path / "floats.npz"
    images = np.full((20, 28, 28), 128.0)
    np.savez(path, x_train=images, y_train=np.arange(20) % 10, x_test=images, y_test=np.arange(20) % 10)
    status = cli.main(["train", "--data", str(path), "--out", str(tmp_path / "out")])
    assert status == 2
    assert_one_paragraph(capsys.readouterr().err, "float images must be scaled to [0, 1]", "Divide by 255")


def test_os_errors_on_paths_are_expected_errors_but_bugs_keep_their_traceback(tmp_path, monkeypatch, capsys):
    from aideploy import train

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "mlp.keras"))

    monkeypatch.setattr(train, "train_and_save", disk_full)
    assert cli.main(["train", "--out", str(tmp_path)]) == 2
    assert_one_paragraph(capsys.readouterr().err, "No space left on device", str(tmp_path / "mlp.keras"))

    def bug(*args, **kwargs):
        raise OSError("a socket error with no path: a bug, not a user's mistake")

    monkeypatch.setattr(train, "train_and_save", bug)
    with pytest.raises(OSError, match="no path"):
        cli.main(["train", "--out", str(tmp_path)])
    monkeypatch.setattr(train, "train_and_save", lambda *args, **kwargs: {}["missing"])
    with pytest.raises(KeyError):
        cli.main(["train", "--out", str(tmp_path)])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "--model", "rnn", "--out", "x"], "invalid choice: 'rnn'"),
        (["train", "--epochs", "0", "--out", "x"], "must be at least 1, got 0"),
        (["train"], "the following arguments are required: --out"),
    ],
)
def test_bad_arguments_are_usage_errors(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert "usage: aideploy" in stderr and message in stderr
