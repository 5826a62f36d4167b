"""Tuning settings, samplers and pruners (no TensorFlow).

Introduced in ``03_tuning.ipynb``. Invalid settings fail when the settings are
made, before any study exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from aideploy import config
from aideploy.errors import ConfigError
from aideploy.tune._optuna import optuna
from aideploy.tune.space import REQUIRED_PARAMETERS, SearchSpace, default_space

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("median", "halving", "none")
#: Objectives: the first is always validation accuracy (maximised); the optional
#: second is a deployment cost (minimised).
OBJECTIVES = ("accuracy", "params", "latency")
OBJECTIVE_LABELS = {
    "accuracy": "validation accuracy",
    "params": "parameters",
    "latency": "batch-1 latency (µs)",
}


@dataclass(frozen=True)
class TuneSettings:
    """What a tuning run searches and how.

    Introduced in ``03_tuning.ipynb``.

    Attributes:
        kind: ``"mlp"`` or ``"cnn"``.
        sampler: ``"grid"``, ``"random"`` or ``"tpe"``.
        num_trials: Trials this run adds to the study (at least 1).
        objectives: ``("accuracy",)``, or accuracy and one cost: ``("accuracy",
            "params")`` or ``("accuracy", "latency")``.
        pruner: ``"median"``, ``"halving"`` (successive halving) or ``"none"``;
            single-objective studies only (Optuna cannot prune multi-objective trials).
        num_epochs: Epochs per trial (default: 2 in fast mode, 4 in full mode).
        seed: Seed of samplers and training (default: the global seed).
        space: The search space (default: :func:`default_space` of ``kind``).
        tpe_startup_trials: Random trials TPE runs before it models the results.

    Raises:
        ConfigError: Any of the above is invalid.
    """

    kind: str = "mlp"
    sampler: str = "tpe"
    num_trials: int = 10
    objectives: tuple[str, ...] = ("accuracy",)
    pruner: str = "median"
    num_epochs: int | None = None
    seed: int | None = None
    space: SearchSpace | None = None
    tpe_startup_trials: int = 4

    def __post_init__(self) -> None:
        if self.kind not in REQUIRED_PARAMETERS:
            raise ConfigError(f"unknown model kind {self.kind!r}: use one of {', '.join(REQUIRED_PARAMETERS)}.")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}: use one of {', '.join(SAMPLERS)}.")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"unknown pruner {self.pruner!r}: use one of {', '.join(PRUNERS)}.")
        if isinstance(self.num_trials, bool) or not isinstance(self.num_trials, int) or self.num_trials < 1:
            raise ConfigError(f"the number of trials must be a whole number of at least 1, got {self.num_trials!r}.")
        objectives = tuple(self.objectives)
        if (
            not objectives
            or objectives[0] != "accuracy"
            or len(objectives) > 2
            or any(name not in OBJECTIVES for name in objectives)
            or len(set(objectives)) != len(objectives)
        ):
            raise ConfigError(
                f"objectives {','.join(map(str, objectives)) or '(none)'} are not supported: use "
                "accuracy, accuracy,params or accuracy,latency (accuracy is maximised, the cost minimised)."
            )
        object.__setattr__(self, "objectives", objectives)
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ConfigError(f"epochs per trial must be at least 1, got {self.num_epochs}.")
        if self.tpe_startup_trials < 1:
            raise ConfigError(f"tpe_startup_trials must be at least 1, got {self.tpe_startup_trials}.")
        space = self.space if self.space is not None else default_space(self.kind)
        if space.kind != self.kind:
            raise ConfigError(f"the search space is for the {space.kind}, but the model kind is {self.kind}.")
        object.__setattr__(self, "space", space)

    @property
    def directions(self) -> list[str]:
        """Optuna's study directions: accuracy is maximised, a cost minimised."""
        return ["maximize"] + ["minimize"] * (len(self.objectives) - 1)

    @property
    def multi_objective(self) -> bool:
        """Whether the study has a cost objective besides accuracy."""
        return len(self.objectives) > 1

    def epochs(self) -> int:
        """Epochs per trial: the setting, or the mode's default."""
        return self.num_epochs if self.num_epochs is not None else config.fast_or_full(2, 4)

    def resolved_seed(self) -> int:
        """The seed: the setting, or the global seed."""
        return config.resolve_seed(self.seed)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data (worker processes rebuild them from it)."""
        payload = asdict(self)
        payload["space"] = self.space.to_dict()
        payload["objectives"] = list(self.objectives)
        return payload

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> TuneSettings:
        """Rebuild settings from :meth:`to_dict` output."""
        values = dict(payload)
        values["space"] = SearchSpace.from_dict(values["space"])
        values["objectives"] = tuple(values["objectives"])
        return cls(**values)


def make_sampler(settings: TuneSettings, *, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The seeded Optuna sampler for ``settings``.

    Grid search always uses the same seed, because Optuna's ``GridSampler`` gives
    trial number *n* grid point *n* of its seeded shuffle: every worker and every
    resumed run must shuffle alike so that no point is tried twice. Random search
    and TPE get a seed that also depends on ``offset`` (the trials already in the
    study and the worker's index); with one seed for all, two workers, or a
    resumed run, would draw the same parameters again.

    Introduced in ``03_tuning.ipynb``.

    Args:
        settings: The run's settings.
        offset: Distinguishes workers and resumed runs (random and TPE only).

    Returns:
        A ``GridSampler``, ``RandomSampler`` or ``TPESampler``.
    """
    seed = settings.resolved_seed()
    if settings.sampler == "grid":
        return optuna.samplers.GridSampler(settings.space.grid(), seed=seed)
    if offset:
        seed = int(np.random.SeedSequence([seed, offset]).generate_state(1)[0])
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.tpe_startup_trials)


def make_pruner(settings: TuneSettings) -> optuna.pruners.BasePruner:
    """The pruner for ``settings``: median, successive halving, or none.

    The median pruner stops a trial whose validation accuracy after an epoch is
    below the median of earlier trials at that epoch (after 3 complete trials and
    the first epoch); successive halving keeps the best third at each rung.
    Multi-objective studies cannot prune, so they always get ``NopPruner``.

    Introduced in ``03_tuning.ipynb``.

    Args:
        settings: The run's settings.

    Returns:
        An Optuna pruner.
    """
    if settings.multi_objective or settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
