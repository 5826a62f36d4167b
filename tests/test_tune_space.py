"""Tuning without training: search spaces, their domains, settings, samplers and pruners."""

from __future__ import annotations

import optuna
import pytest
from _tune_helpers import TINY_MLP_SPACE, tiny_settings

from aideploy import tune
from aideploy.errors import ConfigError

# --- search space -------------------------------------------------------------


def test_default_mlp_space_grid_is_derived_from_the_ranges():
    space = tune.default_space("mlp")
    grid = space.grid()
    assert grid["num_layers"] == [1, 2, 3]
    assert grid["units"] == [64, 128, 256, 512]
    assert grid["dropout"] == [0.0, 0.2, 0.4]
    assert grid["learning_rate"] == [1e-4, 3e-4, 1e-3, 3e-3]
    assert grid["batch_size"] == [32, 64, 128, 256]
    assert space.grid_size() == 3 * 4 * 3 * 4 * 4
    for parameter in space.parameters:
        if parameter.choices:
            continue
        assert all(parameter.low <= value <= parameter.high for value in parameter.grid_values())


def test_default_cnn_space_builds_the_documented_models():
    space = tune.default_space("cnn")
    assert set(space.grid()) == set(tune.REQUIRED_PARAMETERS["cnn"])
    build, batch = tune.hyperparameters(
        "cnn",
        {"num_conv_layers": 2, "filters": 16, "dense_units": 64, "dropout": 0.1, "learning_rate": 1e-3,
         "batch_size": 64},
    )
    assert build == {"filters": (16, 32), "dense_units": 64, "dropout": 0.1, "learning_rate": 1e-3}
    assert batch == 64


def test_mlp_hyperparameters_repeat_the_units_per_layer():
    build, batch = tune.hyperparameters(
        "mlp", {"num_layers": 3, "units": 128, "dropout": 0.2, "learning_rate": 3e-4, "batch_size": 32}
    )
    assert build["hidden_units"] == (128, 128, 128) and batch == 32


def test_space_round_trips_through_json_data():
    space = tune.default_space("mlp")
    assert tune.SearchSpace.from_dict(space.to_dict()) == space
    settings = tiny_settings(sampler="tpe", objectives=("accuracy", "params"))
    assert tune.TuneSettings.from_dict(settings.to_dict()) == settings


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({}, "empty"),
        ({**TINY_MLP_SPACE, "units": []}, "empty list of choices"),
        ({key: value for key, value in TINY_MLP_SPACE.items() if key != "dropout"}, "missing dropout"),
        ({**TINY_MLP_SPACE, "filters": [8]}, "unknown for the mlp: filters"),
        ({**TINY_MLP_SPACE, "dropout": {"low": 0.5, "high": 0.1}}, "must not be above"),
        ({**TINY_MLP_SPACE, "learning_rate": {"low": 0.0, "high": 0.1, "log": True}}, "log-scale"),
        ({**TINY_MLP_SPACE, "dropout": {"low": 0.0, "high": 0.3, "grid": [0.0, 0.5]}}, "outside"),
        ({**TINY_MLP_SPACE, "units": [16, 16]}, "duplicates"),
        ({**TINY_MLP_SPACE, "units": 16}, "list of choices"),
        # Values outside a parameter's domain fail before anything trains.
        ({**TINY_MLP_SPACE, "dropout": {"low": 0.0, "high": 1.0, "grid_points": 3}},
         r"dropout must be a number in \[0, 1\), but the space allows 1.0"),
        ({**TINY_MLP_SPACE, "dropout": [0.2, 1.5]}, "dropout must be a number in .* allows 1.5"),
        ({**TINY_MLP_SPACE, "learning_rate": [0.0, 1e-3]}, "learning_rate must be a number > 0, .* allows 0.0"),
        ({**TINY_MLP_SPACE, "learning_rate": {"low": -1e-3, "high": 1e-2}}, "learning_rate must be .* allows -0.001"),
        ({**TINY_MLP_SPACE, "units": [0, 16]}, "units must be a whole number >= 1, but the space allows 0"),
        ({**TINY_MLP_SPACE, "units": ["wide", 16.5]}, "units must be a whole number .* allows 'wide', 16.5"),
        ({**TINY_MLP_SPACE, "batch_size": {"low": 0, "high": 64, "integer": True}}, "batch_size must be .* allows 0"),
    ],
)
def test_inconsistent_spaces_are_rejected_with_the_reason(mapping, message):
    with pytest.raises(ConfigError, match=message):
        tune.space_from_simple_dict("mlp", mapping)


def test_cnn_depth_is_limited_by_the_image_size():
    cnn = {"filters": [8], "dense_units": [16], "dropout": [0.0], "learning_rate": [1e-3], "batch_size": [64]}
    assert tune.space_from_simple_dict("cnn", {**cnn, "num_conv_layers": [4]}).grid_size() == 1
    with pytest.raises(ConfigError, match=r"num_conv_layers must be a whole number in \[1, 4\]"):
        tune.space_from_simple_dict("cnn", {**cnn, "num_conv_layers": {"low": 1, "high": 5, "integer": True}})


def test_a_space_for_another_model_is_rejected():
    with pytest.raises(ConfigError, match="search space is for the cnn"):
        tune.TuneSettings(kind="mlp", space=tune.default_space("cnn"))


# --- settings, samplers, pruners --------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sampler": "bayes"}, "unknown sampler 'bayes'"),
        ({"num_trials": 0}, "at least 1"),
        ({"num_trials": -3}, "at least 1"),
        ({"objectives": ("latency",)}, "not supported"),
        ({"objectives": ("accuracy", "size")}, "not supported"),
        ({"objectives": ()}, "not supported"),
        ({"pruner": "hyperband"}, "unknown pruner"),
        ({"kind": "resnet"}, "unknown model kind"),
        ({"num_epochs": 0}, "epochs per trial"),
    ],
)
def test_invalid_settings_fail_when_made(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tune.TuneSettings(**overrides)


def test_samplers_are_the_requested_kind_and_seeded():
    grid = tune.make_sampler(tiny_settings(sampler="grid"))
    assert isinstance(grid, optuna.samplers.GridSampler)
    # Grid search shuffles its points the same way in every worker and run.
    assert tune.make_sampler(tiny_settings(sampler="grid"), offset=5)._all_grids == grid._all_grids
    assert isinstance(tune.make_sampler(tiny_settings(sampler="random")), optuna.samplers.RandomSampler)
    assert isinstance(tune.make_sampler(tiny_settings(sampler="tpe")), optuna.samplers.TPESampler)

    def draws(offset: int) -> list[float]:
        sampler = tune.make_sampler(tiny_settings(sampler="random", seed=7), offset=offset)
        study = optuna.create_study(sampler=sampler)
        return [study.ask().suggest_float("x", 0, 1) for _ in range(3)]

    assert draws(0) == draws(0)  # seeded
    assert draws(0) != draws(1)  # a second worker or a resumed run draws other values


def test_pruners_follow_the_settings():
    assert isinstance(tune.make_pruner(tiny_settings(pruner="median")), optuna.pruners.MedianPruner)
    assert isinstance(tune.make_pruner(tiny_settings(pruner="halving")), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(tune.make_pruner(tiny_settings(pruner="none")), optuna.pruners.NopPruner)
    # Optuna cannot prune multi-objective trials.
    two_objectives = tiny_settings(pruner="median", objectives=("accuracy", "params"))
    assert isinstance(tune.make_pruner(two_objectives), optuna.pruners.NopPruner)
