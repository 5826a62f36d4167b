"""Tuning with worker processes that share one study."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from _tune_helpers import sqlite_url, tiny_settings

from aideploy import tune
from aideploy.errors import ConfigError

# --- worker processes -------------------------------------------------------------------


def test_two_workers_share_one_study_without_lost_or_duplicate_trials(tmp_path, capsys):
    url = sqlite_url(tmp_path)
    settings = tiny_settings(sampler="grid", num_trials=4, pruner="none")
    result = tune.run(settings, storage=url, study_name="w", workers=2)
    trials = optuna.load_study(study_name="w", storage=url).trials
    assert sorted(trial.number for trial in trials) == [0, 1, 2, 3]
    assert {trial.state.name for trial in trials} == {"COMPLETE"}
    assert len({tuple(sorted(trial.params.items())) for trial in trials}) == 4
    assert result.n_trials == 4 and result.n_new_trials == 4
    output = capsys.readouterr().out
    assert "Starting 2 workers with 1 TensorFlow thread(s) each" in output
    assert output.count("[worker ") >= 4  # each trial's line, relayed from its worker
    # A second run with random search adds to the same study through both workers.
    more = tune.run(tiny_settings(num_trials=3), storage=url, study_name="w", workers=2, progress=False)
    assert sorted(trial.number for trial in more.study.trials) == list(range(7))


def test_worker_count_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="workers"):
        tune.run(tiny_settings(), storage=sqlite_url(tmp_path), workers=0)
    assert not (tmp_path / "studies.db").exists()
    assert tune.worker_thread_count(1) >= tune.worker_thread_count(2) >= 1
    assert np.isclose(tune.worker_thread_count(10**6), 1)
