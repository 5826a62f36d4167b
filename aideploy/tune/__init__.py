"""Stage 03, tuning: grid, random and TPE search with Optuna, pruning, several objectives.

Notebook: ``notebooks/03_tuning.ipynb``. Command: ``aideploy tune``.

The pieces, in the order a study uses them (one module each):

- :mod:`~aideploy.tune.space`: a :class:`SearchSpace` per model kind, declared
  once. Every sampler reads it: random search and TPE draw from its ranges, grid
  search walks the grid derived from the same ranges (:meth:`SearchSpace.grid`).
- :mod:`~aideploy.tune.settings`: :class:`TuneSettings` (sampler, number of
  trials, objectives, pruner, epochs per trial, seed), the samplers and pruners.
- :mod:`~aideploy.tune.storage`: where a study lives (a SQLite file in the
  artifacts folder by default; PostgreSQL, MySQL or a journal file to share it).
- :mod:`~aideploy.tune.objective`: what one trial does (build, train, score).
- :mod:`~aideploy.tune.study`: :func:`run` opens (or resumes) a study and runs
  its trials, in this process or in several worker processes
  (:mod:`~aideploy.tune.workers`) that share it.
- :mod:`~aideploy.tune.retrain`: :func:`retrain_best` trains the best
  configuration on train + validation and saves it; :func:`compare_over_seeds`
  retrains candidates under one protocol over several seeds.
- :mod:`~aideploy.tune.report`: :func:`trials_table`, :func:`plot_history`,
  :func:`plot_importances`, :func:`plot_pareto_front`, :func:`plot_sampler_comparison`.

Only the objective and the retraining import TensorFlow, and only when first used
(the names below load them on demand), so that settings, search spaces and storage
URLs are checked in a second and bad ones fail before TensorFlow loads.
"""

from __future__ import annotations

import importlib
from typing import Any

from aideploy.tune.report import (
    best_so_far,
    best_within_seconds,
    elapsed_seconds,
    format_table,
    plot_history,
    plot_importances,
    plot_pareto_front,
    plot_sampler_comparison,
    save_trials,
    trials_table,
)
from aideploy.tune.settings import (
    OBJECTIVE_LABELS,
    OBJECTIVES,
    PRUNERS,
    SAMPLERS,
    TuneSettings,
    make_pruner,
    make_sampler,
)
from aideploy.tune.space import (
    REQUIRED_PARAMETERS,
    Parameter,
    SearchSpace,
    default_space,
    hyperparameters,
    space_from_simple_dict,
)
from aideploy.tune.storage import default_storage_url, default_study_name, delete_study, open_storage
from aideploy.tune.study import TuneResult, best_trial, make_folder, run
from aideploy.tune.workers import worker_thread_count

# Names whose modules import TensorFlow: loaded on first access (PEP 562).
_LAZY = {
    "PruningCallback": "objective",
    "make_objective": "objective",
    "measure_latency": "objective",
    "merge_train_and_validation": "retrain",
    "retrain_best": "retrain",
    "compare_over_seeds": "retrain",
    "SeedComparison": "retrain",
}

__all__ = [
    "OBJECTIVES",
    "OBJECTIVE_LABELS",
    "PRUNERS",
    "REQUIRED_PARAMETERS",
    "SAMPLERS",
    "Parameter",
    "SearchSpace",
    "TuneResult",
    "TuneSettings",
    "best_so_far",
    "best_trial",
    "best_within_seconds",
    "default_space",
    "default_storage_url",
    "default_study_name",
    "delete_study",
    "elapsed_seconds",
    "format_table",
    "hyperparameters",
    "make_folder",
    "make_pruner",
    "make_sampler",
    "open_storage",
    "plot_history",
    "plot_importances",
    "plot_pareto_front",
    "plot_sampler_comparison",
    "run",
    "save_trials",
    "space_from_simple_dict",
    "trials_table",
    "worker_thread_count",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"aideploy.tune.{_LAZY[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aideploy.tune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
