"""``aideploy tune``, run as a user runs it: a subprocess of the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest

from aideploy import artifacts


def run_tune(*arguments: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m aideploy.cli tune --fast ARGUMENTS``."""
    return subprocess.run(
        [sys.executable, "-m", "aideploy.cli", "tune", "--fast", *arguments],
        capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
    )


def last_json_line(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_tune_then_resume_the_same_study(tmp_path):
    """The issue's acceptance commands: 4 trials, then 2 more on the same storage."""
    storage = f"sqlite:///{tmp_path}/s.db"
    common = ("--model", "mlp", "--sampler", "random", "--storage", storage, "--study", "s", "--out", str(tmp_path))
    first = run_tune(*common, "--trials", "4")
    assert first.returncode == 0, first.stderr
    summary = last_json_line(first.stdout)
    assert summary["n_trials"] == 4 and summary["n_new_trials"] == 4
    assert 0.0 < summary["best_value"] <= 1.0
    assert set(summary["best_params"]) == {"num_layers", "units", "dropout", "learning_rate", "batch_size"}
    assert "trial   3" in first.stdout  # one progress line a trial
    manifest = artifacts.verify(summary["model_path"])
    assert manifest["metrics"]["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)

    second = run_tune(*common, "--trials", "2")
    assert second.returncode == 0, second.stderr
    resumed = last_json_line(second.stdout)
    assert resumed["n_trials"] == 6 and resumed["n_new_trials"] == 2
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert sorted(trial.number for trial in trials) == list(range(6))
    assert resumed["best_value"] >= summary["best_value"]


def test_two_workers_run_exactly_the_trials_asked_for(tmp_path):
    # One process through the command line is covered by the resume test above; the
    # library's worker tests cover the rest (given data, failures, PostgreSQL).
    storage = f"sqlite:///{tmp_path}/w.db"
    result = run_tune(
        "--sampler", "grid", "--trials", "4", "--epochs", "1", "--storage", storage,
        "--study", "w2", "--workers", "2", "--out", str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert last_json_line(result.stdout)["n_trials"] == 4
    trials = optuna.load_study(study_name="w2", storage=storage).trials
    assert sorted(trial.number for trial in trials) == [0, 1, 2, 3]
    assert len({tuple(sorted(trial.params.items())) for trial in trials}) == 4
    assert {trial.user_attrs["worker"] for trial in trials} == {0, 1}


def test_two_objectives_report_a_pareto_front(tmp_path):
    result = run_tune("--sampler", "tpe", "--trials", "3", "--epochs", "1", "--objectives", "accuracy,params",
                      "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    summary = last_json_line(result.stdout)
    assert summary["objectives"] == ["accuracy", "params"]
    assert len(summary["best_value"]) == 2 and summary["pareto_front"]
    assert (tmp_path / "tuning.db").is_file()  # the default storage lies in --out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--sampler", "bayes", "--trials", "2"), "unknown sampler 'bayes'"),
        (("--trials", "0"), "at least 1"),
        (("--trials", "2", "--objectives", "latency"), "not supported"),
        (("--trials", "2", "--storage", "sqlite:////no/such/folder/s.db"), "does not exist"),
        (("--trials", "2", "--storage", "nosuchdb://host/db"), "cannot open the storage"),
        (("--trials", "2", "--space", "SPACE"), "invalid search space"),
        (("--trials", "2", "--workers", "0"), "workers must be at least 1"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, arguments, message):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"units": [64], "dropout": {"low": 0.5, "high": 0.1}}))
    out = tmp_path / "out"
    out.mkdir()
    result = run_tune(*[str(space) if value == "SPACE" else value for value in arguments], "--out", str(out))
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert list(out.iterdir()) == []  # no study, no model


VALID_SPACE = {"num_layers": [1], "units": [16, 32], "dropout": [0.0], "learning_rate": [1e-3], "batch_size": [128]}


@pytest.mark.parametrize(
    ("arguments", "space", "message"),
    [
        (("--sampler", "nosuch"), None, "unknown sampler 'nosuch': use one of grid, random, tpe."),
        (("--sampler", "grid"), {**VALID_SPACE, "dropout": {"low": 0.0, "high": 1.0, "grid_points": 3}},
         "dropout must be a number in [0, 1), but the space allows 1.0"),
        (("--sampler", "random"), {**VALID_SPACE, "learning_rate": {"low": 0.0, "high": 0.01}},
         "learning_rate must be a number > 0, but the space allows 0.0"),
        (("--sampler", "grid"), {**VALID_SPACE, "units": []}, "'units' has an empty list of choices"),
        (("--sampler", "grid"), {**VALID_SPACE, "batch_size": {"low": 256, "high": 32, "integer": True}},
         "batch_size: low (256) must not be above high (32)"),
    ],
)
def test_bad_settings_exit_2_with_one_paragraph_before_tensorflow_loads(tmp_path, arguments, space, message):
    check_fails_before_tensorflow(tmp_path, arguments, space, message, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_folder_exits_2_before_tensorflow_loads(tmp_path):
    check_fails_before_tensorflow(tmp_path, ("--sampler", "random"), None, "cannot create the output folder",
                                  out="/proc/forbidden")


def check_fails_before_tensorflow(tmp_path, arguments, space, message, *, out) -> None:
    """What the command checks up front fails in a second, as one paragraph, without loading TensorFlow."""
    extra = []
    if space is not None:
        (tmp_path / "space.json").write_text(json.dumps(space))
        extra = ["--space", str(tmp_path / "space.json")]
    argv = ["tune", *arguments, "--trials", "2", *extra, "--out", str(out)]
    program = (
        "import sys; from aideploy import cli; "
        f"status = cli.main({argv!r}); print(status, 'tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ))
    assert result.stdout.strip().splitlines()[-1] == "2 False"  # exit status 2, TensorFlow never imported
    error = result.stderr.strip()
    assert error.startswith("aideploy tune: error: ") and "\n\n" not in error and "Traceback" not in error
    assert message in " ".join(error.split())
