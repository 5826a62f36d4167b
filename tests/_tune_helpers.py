"""Small tuning settings shared by the tuning tests (fast: 1 epoch a trial, a 4-point space)."""

from __future__ import annotations

from aideploy import tune

TINY_MLP_SPACE = {
    "num_layers": [1],
    "units": [16, 32],
    "dropout": [0.0],
    "learning_rate": {"low": 1e-3, "high": 3e-3, "log": True, "grid": [1e-3, 3e-3]},
    "batch_size": [128],
}


def tiny_settings(**overrides) -> tune.TuneSettings:
    """Small, fast settings: 1 epoch a trial on a 4-point MLP space."""
    values = {
        "kind": "mlp",
        "sampler": "random",
        "num_trials": 3,
        "num_epochs": 1,
        "space": tune.space_from_simple_dict("mlp", TINY_MLP_SPACE),
        **overrides,
    }
    return tune.TuneSettings(**values)


def sqlite_url(folder) -> str:
    """A SQLite storage URL in ``folder``."""
    return f"sqlite:///{folder / 'studies.db'}"
