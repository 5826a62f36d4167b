"""The README's two commands exist and work."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _pipeline_run import fast_run_twice


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


def _resumable_demo_folder(tmp_path_factory, tmp_path: Path) -> Path:
    """A copy of the session's finished fast-mode pipeline run (see _pipeline_run.py)."""
    out_dir, first, _ = fast_run_twice(tmp_path_factory.mktemp("pipeline"))
    assert first.returncode == 0, first.stderr[-3000:]
    copy = tmp_path / "artifacts" / "demo"
    shutil.copytree(out_dir, copy)
    return copy


def test_make_demo_runs_the_pipeline(repo_root, tmp_path, tmp_path_factory):
    """`make demo` runs `aideploy pipeline --fast` and prints a short summary, how to serve and the notebooks.

    It starts from a copy of the session's finished run, so the pipeline resumes
    (test_pipeline.py runs it from scratch, twice); what this checks is the
    target itself: the command, the summary instead of JSON, the hints, the exit status.
    """
    up_to_date = subprocess.run(["make", "-q", "venv"], cwd=repo_root).returncode == 0
    if not up_to_date:
        pytest.skip("the .venv of `make` is not installed here; `make test` installs it first")
    demo = _resumable_demo_folder(tmp_path_factory, tmp_path)
    result = subprocess.run(
        ["make", "--no-print-directory", "demo", f"DEMO_OUT={demo}"],
        cwd=repo_root, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert not any(line.startswith("{") for line in lines), "the JSON line belongs in the log, not on screen"
    assert sum("up to date, skipped" in line for line in lines) == 9
    assert any(line.startswith("Model 'mlp': baseline test accuracy") for line in lines)
    assert f"aideploy serve {demo}/repository" in result.stdout
    assert lines[-1].endswith("jupyter lab notebooks/")
    logged = json.loads((demo / "pipeline.log").read_text().strip().splitlines()[-1])
    assert logged["report"] == str(demo / "report.md")


def test_make_demo_fails_when_the_pipeline_fails(repo_root, tmp_path):
    """The summary filter must not hide a failure: make's exit status is the pipeline's."""
    up_to_date = subprocess.run(["make", "-q", "venv"], cwd=repo_root).returncode == 0
    if not up_to_date:
        pytest.skip("the .venv of `make` is not installed here; `make test` installs it first")
    # The pipeline prints its first line, then finds no data: grep alone would exit 0.
    env = {**os.environ, "AIDEPLOY_DATA_DIR": str(tmp_path / "no-data")}
    result = subprocess.run(["make", "--no-print-directory", "demo", f"DEMO_OUT={tmp_path / 'demo'}"],
                            cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert "Running the pipeline" in result.stdout
    assert "SHA256SUMS" in result.stderr
    assert result.returncode != 0


def runnable_snippets(readme: str) -> list[tuple[str, str]]:
    """The README's code blocks marked ``<!-- runnable -->`` on the line before: ``(language, code)``."""
    return re.findall(r"<!-- runnable -->\n```(bash|python)\n(.*?)```", readme, re.S)


def test_readme_marks_shell_and_python_snippets_runnable(repo_root):
    languages = [language for language, _ in runnable_snippets((repo_root / "README.md").read_text())]
    assert "bash" in languages and "python" in languages


def test_readme_runnable_snippets_run(repo_root, tmp_path, tmp_path_factory):
    """Each runnable snippet runs, in order, from a folder laid out like a clone after `make demo` (fast mode)."""
    _resumable_demo_folder(tmp_path_factory, tmp_path)
    # `.venv/bin/...` in the snippets is this interpreter's environment.
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {**os.environ, "AIDEPLOY_FAST": "1",
           "PYTHONPATH": os.pathsep.join([str(repo_root), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    snippets = runnable_snippets((repo_root / "README.md").read_text())
    for language, code in snippets:
        command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{language} snippet failed:\n{code}\n{result.stderr[-3000:]}"
        assert result.stdout.strip(), f"{language} snippet printed nothing:\n{code}"


def test_readme_results_are_the_committed_full_run(repo_root):
    """The README's results table holds the figures of the committed full pipeline run."""
    summary = json.loads((repo_root / "benchmarks/pipeline-full/summary.json").read_text())
    assert summary["fast_mode"] is False
    results = (repo_root / "README.md").read_text().split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = {cells[0]: cells for cells in (
        [cell.strip() for cell in line.strip("|").split("|")] for line in results.splitlines() if line.startswith("| ")
    )}  # fmt: skip
    for row in summary["rows"]:
        cells = rows[row["variant"]]
        assert float(cells[1]) == pytest.approx(row["test_accuracy"], abs=5e-5)
        assert float(cells[2]) == pytest.approx(row["accuracy_change_pp"], abs=0.0051)
        assert float(cells[4].rstrip("x")) == pytest.approx(row["gzip_ratio"], abs=0.0051)
    assert f"{summary['tuned_test_accuracy']:.4f}" in results
