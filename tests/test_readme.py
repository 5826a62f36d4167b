"""The README's two commands exist and work."""

import json
import os
import re
import subprocess

import pytest


def _quickstart_commands(repo_root) -> list[str]:
    readme = (repo_root / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quickstart, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_quickstart_shows_demo_and_test(repo_root):
    assert _quickstart_commands(repo_root) == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command(repo_root):
    script = (repo_root / ".ci" / "run").read_text()
    assert "make test" in script


def test_makefile_targets_exist(repo_root):
    for target in ("demo", "test", "docs"):
        result = subprocess.run(["make", "-n", target], cwd=repo_root, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_make_demo_runs_end_to_end(repo_root, tmp_path):
    """`make demo` (in fast mode here) ends with the pipeline's JSON line."""
    up_to_date = subprocess.run(["make", "-q", "venv"], cwd=repo_root).returncode == 0
    if not up_to_date:
        pytest.skip("the .venv of `make` is not installed here; `make test` installs it first")
    result = subprocess.run(
        ["make", "--no-print-directory", "demo", f"DEMO_OUT={tmp_path}"],
        cwd=repo_root, capture_output=True, text=True, timeout=900,
        env={**os.environ, "AIDEPLOY_FAST": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "mlp.keras").is_file()
    for export in ("mlp.onnx", "mlp.tflite", "mlp_saved_model"):
        assert (tmp_path / export).exists(), export
    train_summary = next(
        json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"model": "mlp"')
    )
    assert train_summary["test_accuracy"] > 0.6
    # The benchmark's JSON line closes the output and covers the runtimes of the exports.
    last_line = result.stdout.strip().splitlines()[-1]
    assert isinstance(json.loads(last_line), dict)
    assert "onnxruntime" in last_line and "tflite" in last_line
