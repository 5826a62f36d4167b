"""Tuning: search spaces, samplers, pruning, objectives, storage, resuming, workers, results."""

from __future__ import annotations

import math

import optuna
import pytest
from _tune_helpers import sqlite_url, tiny_settings

from aideploy import artifacts, models, tune
from aideploy.errors import AideployError, ConfigError

# --- storage ----------------------------------------------------------------------


def test_unopenable_storage_urls_fail_clearly_and_create_nothing(tmp_path):
    missing = tmp_path / "no-such-folder" / "s.db"
    with pytest.raises(ConfigError, match="does not exist"):
        tune.open_storage(f"sqlite:///{missing}")
    assert not missing.parent.exists()
    with pytest.raises(ConfigError, match="not a storage URL"):
        tune.open_storage("studies.db")
    with pytest.raises(ConfigError, match="cannot open the storage nosuchdb://"):
        tune.open_storage("nosuchdb://host/db")
    with pytest.raises(ConfigError, match=r"postgresql://user:\*\*\*@"):
        # No driver installed / no server: a clear error, and the password is not printed.
        tune.open_storage("postgresql://user:secret@127.0.0.1:1/none")
    with pytest.raises(ConfigError):
        tune.run(tiny_settings(), storage=f"sqlite:///{missing}")
    assert list(tmp_path.iterdir()) == []


def test_journal_storage_runs_a_study(tmp_path, mlp_splits):
    journal = tmp_path / "studies.log"
    result = tune.run(
        tiny_settings(num_trials=2), storage=f"journal://{journal}", study_name="j", splits=mlp_splits,
        progress=False,
    )
    assert result.n_trials == 2 and journal.stat().st_size > 0


# --- running, resuming, failures ----------------------------------------------------


def test_a_study_resumes_where_it_stopped(tmp_path, mlp_splits, capsys):
    url = sqlite_url(tmp_path)
    first = tune.run(tiny_settings(num_trials=3), storage=url, study_name="s", splits=mlp_splits)
    assert first.created and first.n_trials == 3 and first.n_new_trials == 3
    assert "trial   2" in capsys.readouterr().out  # progress: one line a trial
    second = tune.run(tiny_settings(num_trials=2), storage=url, study_name="s", splits=mlp_splits)
    assert not second.created and second.n_trials == 5 and second.n_new_trials == 2
    assert sorted(trial.number for trial in second.study.trials) == [0, 1, 2, 3, 4]
    # The resumed run draws new learning rates rather than repeating the first run's.
    rates = [trial.params["learning_rate"] for trial in second.study.trials]
    assert len(set(rates)) == 5
    summary = second.summary()
    assert summary["n_trials"] == 5 and 0.0 < summary["best_value"] <= 1.0
    assert summary["best_value"] == max(t.value for t in second.study.trials if t.value is not None)


def test_grid_search_visits_distinct_points_and_refuses_to_repeat(tmp_path, mlp_splits):
    url = sqlite_url(tmp_path)
    settings = tiny_settings(sampler="grid", num_trials=4, pruner="none")
    result = tune.run(settings, storage=url, study_name="g", splits=mlp_splits, progress=False)
    points = {tuple(sorted(trial.params.items())) for trial in result.study.trials}
    assert len(points) == 4 == settings.space.grid_size()
    with pytest.raises(ConfigError, match="already has 4 trials"):
        tune.run(tiny_settings(sampler="grid", num_trials=1), storage=url, study_name="g", splits=mlp_splits)
    with pytest.raises(ConfigError, match="grid has 4 points"):
        tune.run(tiny_settings(sampler="grid", num_trials=5), storage=url, study_name="g2", splits=mlp_splits)
    assert optuna.study.get_all_study_names(url) == ["g"]
    assert len(optuna.load_study(study_name="g", storage=url).trials) == 4


def test_a_study_with_other_objectives_is_not_resumed(tmp_path, mlp_splits):
    url = sqlite_url(tmp_path)
    tune.run(tiny_settings(num_trials=1), storage=url, study_name="s", splits=mlp_splits, progress=False)
    with pytest.raises(ConfigError, match="choose another study name"):
        tune.run(
            tiny_settings(num_trials=1, objectives=("accuracy", "params")), storage=url, study_name="s",
            splits=mlp_splits,
        )


def test_a_failing_new_study_is_removed(tmp_path, mlp_splits, monkeypatch):
    url = sqlite_url(tmp_path)

    def broken_build(*arguments, **keywords):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(models, "build", broken_build)
    with pytest.raises(RuntimeError, match="simulated"):
        tune.run(tiny_settings(num_trials=2), storage=url, study_name="broken", splits=mlp_splits)
    assert "broken" not in optuna.study.get_all_study_names(url)


def test_a_failing_resumed_study_keeps_its_trials(tmp_path, mlp_splits, monkeypatch):
    url = sqlite_url(tmp_path)
    tune.run(tiny_settings(num_trials=2), storage=url, study_name="s", splits=mlp_splits, progress=False)
    monkeypatch.setattr(models, "build", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        tune.run(tiny_settings(num_trials=2), storage=url, study_name="s", splits=mlp_splits)
    states = [trial.state.name for trial in optuna.load_study(study_name="s", storage=url).trials]
    assert states[:2] == ["COMPLETE", "COMPLETE"] and "RUNNING" not in states


def test_pruning_in_a_study_records_intermediate_values(tmp_path, mlp_splits):
    settings = tiny_settings(num_trials=6, num_epochs=2, pruner="median", sampler="tpe")
    result = tune.run(settings, storage=sqlite_url(tmp_path), splits=mlp_splits, progress=False)
    for trial in result.study.trials:
        assert set(trial.intermediate_values) <= {1, 2}
        if trial.state.name == "COMPLETE":
            assert trial.value == pytest.approx(max(trial.intermediate_values.values()))
            assert trial.user_attrs["epochs_run"] == 2
        else:
            assert trial.state.name == "PRUNED" and trial.user_attrs["epochs_run"] < 2


# --- two objectives -----------------------------------------------------------------


def test_accuracy_and_parameter_count_give_a_pareto_front(tmp_path, mlp_splits):
    settings = tiny_settings(sampler="grid", num_trials=4, objectives=("accuracy", "params"))
    result = tune.run(settings, storage=sqlite_url(tmp_path), splits=mlp_splits, progress=False)
    trials = result.study.trials
    for trial in trials:
        assert trial.values[1] == trial.user_attrs["parameters"]
        assert trial.values[1] in (784 * 16 + 16 + 16 * 10 + 10, 784 * 32 + 32 + 32 * 10 + 10)
    front = result.pareto_front
    assert front and all(
        not any(
            other.values[0] >= point["values"][0] and other.values[1] <= point["values"][1]
            and tuple(other.values) != tuple(point["values"])
            for other in trials
        )
        for point in front
    )
    best = tune.best_trial(result.study)
    assert result.best_value == list(best.values)
    assert best.values[0] == max(point["values"][0] for point in front)


def test_latency_is_measured_in_microseconds(mlp_splits):
    from aideploy import models

    latency = tune.measure_latency(models.build_mlp(hidden_units=(16,)), repeats=20, warmup=3)
    assert 1.0 < latency < 1e5


# --- results ----------------------------------------------------------------------------


def test_best_model_is_retrained_on_train_and_validation_and_saved(tmp_path, mlp_splits):
    merged = tune.merge_train_and_validation(mlp_splits)
    assert len(merged.x_train) == len(mlp_splits.x_train) + len(mlp_splits.x_val) == 6000
    result = tune.run(tiny_settings(num_trials=2), storage=sqlite_url(tmp_path), splits=mlp_splits,
                      progress=False)
    final = tune.retrain_best(result, splits=mlp_splits, num_epochs=2, out_dir=tmp_path)
    assert final["model_path"].endswith("mlp_tuned.keras")
    manifest = artifacts.verify(final["model_path"])
    assert manifest["params"]["hyperparameters"]["units"] == result.best_params["units"]
    assert manifest["inputs"]["data"]["train_includes_validation"] is True
    assert manifest["metrics"]["test_accuracy"] == pytest.approx(final["test_accuracy"], abs=1e-6)
    assert 0.6 < final["test_accuracy"] <= 1.0  # two epochs on 6,000 images


def test_best_trial_needs_a_complete_trial():
    study = optuna.create_study()
    with pytest.raises(AideployError, match="no complete trial"):
        tune.best_trial(study)


def test_trials_table_and_plots(tmp_path, mlp_splits):
    import matplotlib

    matplotlib.use("Agg")
    result = tune.run(tiny_settings(num_trials=3, pruner="none"), storage=sqlite_url(tmp_path),
                      splits=mlp_splits, progress=False)
    rows = tune.trials_table(result.study)
    assert [row["number"] for row in rows] == [0, 1, 2]
    assert set(rows[0]) >= {"state", "accuracy", "units", "learning_rate", "epochs", "seconds"}
    text = tune.format_table(rows)
    assert len(text.splitlines()) == 4 and "learning_rate" in text
    saved = tune.save_trials(result.study, tmp_path / "trials.json")
    assert saved.is_file()
    curve = tune.best_so_far(result.study)
    assert len(curve) == 3 and all(b >= a for a, b in zip(curve, curve[1:]) if not math.isnan(a))
    assert curve[-1] == pytest.approx(result.best_value)
    for figure in (
        tune.plot_history(result.study),
        tune.plot_importances(result.study),
        tune.plot_sampler_comparison({"random": result.study}),
    ):
        assert figure.axes and figure.axes[0].has_data()
    with pytest.raises(ConfigError, match="Pareto front needs two"):
        tune.plot_pareto_front(result.study)


def test_pareto_plot_of_a_two_objective_study(tmp_path, mlp_splits):
    import matplotlib

    matplotlib.use("Agg")
    settings = tiny_settings(num_trials=3, objectives=("accuracy", "params"))
    result = tune.run(settings, storage=sqlite_url(tmp_path), splits=mlp_splits, progress=False)
    figure = tune.plot_pareto_front(result.study)
    assert figure.axes[0].get_yscale() == "log"


def test_pruning_callback_reports_each_epoch_and_stops_a_hopeless_trial(mlp_splits):
    from aideploy import models, train

    # A threshold no 1-epoch model reaches: the trial must stop after epoch 1.
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.999))
    trial = study.ask()
    callback = tune.PruningCallback(trial)
    train.set_seed(1)
    result = train.fit(
        models.build_mlp(hidden_units=(16,)),
        mlp_splits,
        train.TrainSettings(num_epochs=4, batch_size=256, verbose=0),
        callbacks=[callback],
    )
    assert callback.pruned_at == 1 and result.epochs_run == 1
    assert study.trials[0].intermediate_values == {1: pytest.approx(result.history["val_accuracy"][0])}


def test_delete_study_starts_a_study_afresh(tmp_path, mlp_splits):
    url = sqlite_url(tmp_path)
    tune.run(tiny_settings(num_trials=1), storage=url, study_name="d", splits=mlp_splits, progress=False)
    assert tune.delete_study("d", url) is True
    assert tune.delete_study("d", url) is False
    again = tune.run(tiny_settings(num_trials=1), storage=url, study_name="d", splits=mlp_splits, progress=False)
    assert again.created and again.n_trials == 1


def test_latency_objective_and_the_cnn_space(tmp_path, cnn_splits):
    space = tune.space_from_simple_dict(
        "cnn",
        {"num_conv_layers": [1], "filters": [4, 8], "dense_units": [16], "dropout": [0.0],
         "learning_rate": [1e-3], "batch_size": [256]},
    )
    settings = tune.TuneSettings(kind="cnn", sampler="grid", num_trials=2, num_epochs=1, space=space,
                                 objectives=("accuracy", "latency"))
    result = tune.run(settings, storage=sqlite_url(tmp_path), splits=cnn_splits, progress=False)
    for trial in result.study.trials:
        assert trial.values[1] == pytest.approx(trial.user_attrs["latency_us"], abs=0.01)
        assert trial.values[1] > 0
    assert {trial.params["filters"] for trial in result.study.trials} == {4, 8}
    assert all(point["params"]["num_conv_layers"] == 1 for point in result.pareto_front)
