"""Tuning with worker processes that share one study."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from _tune_helpers import sqlite_url, tiny_settings

from aideploy import tune
from aideploy.errors import AideployError, ConfigError

# --- worker processes -------------------------------------------------------------------


def test_two_workers_share_one_study_without_lost_or_duplicate_trials(tmp_path, mlp_splits, capsys):
    """Two workers run exactly the trials asked for, both contribute, and tune on the data given to run()."""
    import dataclasses

    url = sqlite_url(tmp_path)
    small = dataclasses.replace(mlp_splits, x_train=mlp_splits.x_train[:1000], y_train=mlp_splits.y_train[:1000])
    settings = tiny_settings(sampler="grid", num_trials=4, pruner="none")
    result = tune.run(settings, storage=url, study_name="w", workers=2, splits=small)
    trials = optuna.load_study(study_name="w", storage=url).trials
    assert sorted(trial.number for trial in trials) == [0, 1, 2, 3]
    assert {trial.state.name for trial in trials} == {"COMPLETE"}
    assert len({tuple(sorted(trial.params.items())) for trial in trials}) == 4
    assert result.n_trials == 4 and result.n_new_trials == 4
    assert {trial.user_attrs["train_images"] for trial in trials} == {1000}  # the given data, not the default
    assert {trial.user_attrs["worker"] for trial in trials} == {0, 1}  # both workers ran trials
    output = capsys.readouterr().out
    assert f"Starting 2 workers with {tune.worker_thread_count(2)} TensorFlow thread(s) each" in output
    assert output.count("[worker ") >= 4  # each trial's line, relayed from its worker
    # A second run with random search and the default data adds to the same study through both workers.
    more = tune.run(tiny_settings(num_trials=3), storage=url, study_name="w", workers=2, progress=False)
    assert sorted(trial.number for trial in more.study.trials) == list(range(7))
    assert {trial.user_attrs["train_images"] for trial in more.study.trials[4:]} == {len(mlp_splits.x_train)}


def test_failure_summary_quotes_the_exception_not_the_stack():
    traceback = ["trial 0 ...", "Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
                 "    main()", "ValueError: bad value", "  detail", "", "second line of the message"]
    assert tune.workers.failure_summary(traceback) == "ValueError: bad value | second line of the message"
    plain = [f"line {number}" for number in range(30)] + ["error: disk full"]
    assert tune.workers.failure_summary(plain, max_lines=2) == "line 29 | error: disk full"
    assert tune.workers.failure_summary([]) == ""


def test_worker_count_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="workers"):
        tune.run(tiny_settings(), storage=sqlite_url(tmp_path), workers=0)
    assert not (tmp_path / "studies.db").exists()
    assert tune.worker_thread_count(1) >= tune.worker_thread_count(2) >= 1
    assert np.isclose(tune.worker_thread_count(10**6), 1)


def test_a_failing_worker_surfaces_its_output(tmp_path, mlp_splits):
    """A worker that crashes (here: labels outside the 10 classes) puts its traceback in the parent's error."""
    import dataclasses

    broken = dataclasses.replace(mlp_splits, y_train=np.full_like(mlp_splits.y_train, 50))
    url = sqlite_url(tmp_path)
    with pytest.raises(AideployError) as raised:
        tune.run(tiny_settings(num_trials=2), storage=url, study_name="f", workers=2, splits=broken, progress=False)
    message = str(raised.value)
    assert "tuning worker" in message and "failed with exit status 1" in message
    # The exception and TensorFlow's own words, from the worker's traceback (without its stack frames).
    assert "InvalidArgumentError" in message and "50 is not in [0, 10)" in message
    assert 'File "' not in message
    # The new study had no complete trial, so it is gone again.
    assert "f" not in optuna.study.get_all_study_names(url)
