"""Stage 03, tuning: grid, random and TPE search with Optuna, pruning, several objectives.

Notebook: ``notebooks/03_tuning.ipynb``. Command: ``aideploy tune``.

The pieces, in the order a study uses them:

- A :class:`SearchSpace` per model kind, declared once. Every sampler reads it:
  random search and TPE draw from its ranges, grid search walks the grid derived
  from the same ranges (:meth:`SearchSpace.grid`).
- :class:`TuneSettings`: sampler, number of trials, objectives (validation
  accuracy alone, or accuracy *and* a deployment cost: parameter count or batch-1
  latency), pruner, epochs per trial, seed. Invalid settings fail when the
  settings are made, before any study exists.
- :func:`run`: opens (or resumes) a study in a storage URL, by default a SQLite
  file in the artifacts folder, and runs the trials in this process or in
  several worker processes that share the study. The same storage URL on many
  machines (PostgreSQL, MySQL, or a journal file on a shared disk) is how the
  search scales out.
- :func:`retrain_best`: trains the best configuration on train + validation and
  saves it as ``<kind>_tuned.keras`` with its manifest.
- Tables and plots: :func:`trials_table`, :func:`plot_history`,
  :func:`plot_importances`, :func:`plot_pareto_front`, :func:`plot_sampler_comparison`.

Worker processes are started with ``python -m aideploy.tune --worker SPEC``
(subprocesses, not fork: TensorFlow is not fork-safe). Each gets its share of the
machine's threads through ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS``,
which TensorFlow reads when it starts: once TensorFlow has run an op,
``tf.config.threading`` can no longer change them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from aideploy import artifacts, config, data, evaluate, models, train
from aideploy.backend import keras, tf
from aideploy.errors import AideployError, ConfigError

with warnings.catch_warnings():
    # Optuna imports ``tqdm.auto``, which warns in a notebook without ipywidgets;
    # tuning prints one line a trial instead of a progress widget.
    warnings.simplefilter("ignore")
    import optuna

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

#: The hyperparameters each model kind's search space must declare.
REQUIRED_PARAMETERS = {
    "mlp": ("num_layers", "units", "dropout", "learning_rate", "batch_size"),
    "cnn": ("num_conv_layers", "filters", "dense_units", "dropout", "learning_rate", "batch_size"),
}

# Optuna logs one INFO line per trial; the tuning functions print their own,
# shorter progress, so keep Optuna to warnings.
optuna.logging.set_verbosity(optuna.logging.WARNING)


# --- search space -------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """One hyperparameter: a set of choices, or a numeric range.

    A range is searched continuously by random search and TPE; grid search uses
    ``grid`` if given, else ``grid_points`` values spread evenly over the range
    (geometrically when ``log``), or every whole number for a small integer range.

    Attributes:
        name: The name trials record, e.g. ``"learning_rate"``.
        choices: The allowed values (categorical); leave empty for a range.
        low: Lower end of a range (inclusive).
        high: Upper end of a range (inclusive).
        log: Search the range on a log scale (learning rates).
        integer: The range holds whole numbers.
        grid: Explicit grid points for a range (must lie inside it).
        grid_points: How many grid points to derive when ``grid`` is empty.
    """

    name: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    grid: tuple[Any, ...] = ()
    grid_points: int = 3

    def problems(self) -> list[str]:
        """What is wrong with this parameter (empty when it is consistent)."""
        if self.choices:
            found = []
            if self.low is not None or self.high is not None:
                found.append(f"{self.name}: give either choices or a low/high range, not both")
            if len(set(map(repr, self.choices))) != len(self.choices):
                found.append(f"{self.name}: choices {list(self.choices)} contain duplicates")
            return found
        if self.low is None or self.high is None:
            return [f"{self.name}: needs choices or both low and high"]
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            return [f"{self.name}: low ({self.low}) must not be above high ({self.high})"]
        if self.log and self.low <= 0:
            return [f"{self.name}: a log-scale range needs low > 0, got {self.low}"]
        if self.integer and (self.low != int(self.low) or self.high != int(self.high)):
            return [f"{self.name}: an integer range needs whole low and high, got {self.low}..{self.high}"]
        if not self.grid and self.grid_points < 1:
            return [f"{self.name}: grid_points must be at least 1, got {self.grid_points}"]
        outside = [value for value in self.grid if not self.low <= value <= self.high]
        if outside:
            return [f"{self.name}: grid points {outside} lie outside {self.low}..{self.high}"]
        return []

    def grid_values(self) -> tuple[Any, ...]:
        """The values grid search tries for this parameter."""
        if self.choices:
            return tuple(self.choices)
        if self.grid:
            return tuple(self.grid)
        low, high = float(self.low), float(self.high)
        if self.integer:
            if high - low + 1 <= max(self.grid_points, 5):
                return tuple(range(int(low), int(high) + 1))
            points = np.linspace(low, high, self.grid_points)
            return tuple(sorted({int(round(point)) for point in points}))
        if self.grid_points == 1 or low == high:
            return (low,)
        points = np.geomspace(low, high, self.grid_points) if self.log else np.linspace(low, high, self.grid_points)
        # Round to one significant digit (3e-4, not 3.1e-4): readable grids, still
        # inside the range because the ends are kept exact.
        rounded = [float(f"{point:.0e}") if self.log else round(float(point), 6) for point in points]
        rounded[0], rounded[-1] = low, high
        return tuple(dict.fromkeys(rounded))

    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask ``trial`` for a value of this parameter."""
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class SearchSpace:
    """The hyperparameters of one model kind, declared once for every sampler.

    Introduced in ``03_tuning.ipynb``.

    Attributes:
        kind: ``"mlp"`` or ``"cnn"``.
        parameters: One :class:`Parameter` per name in ``REQUIRED_PARAMETERS[kind]``.

    Raises:
        ConfigError: The space is empty, lacks or adds a parameter, or a parameter
            is inconsistent (an empty range, a grid point outside its range, ...).
    """

    kind: str
    parameters: tuple[Parameter, ...]

    def __post_init__(self) -> None:
        if self.kind not in REQUIRED_PARAMETERS:
            raise ConfigError(f"unknown model kind {self.kind!r}: use one of {', '.join(REQUIRED_PARAMETERS)}.")
        required = REQUIRED_PARAMETERS[self.kind]
        if not self.parameters:
            raise ConfigError(
                f"the search space for the {self.kind} is empty: declare {', '.join(required)} "
                f"(see tune.default_space({self.kind!r}))."
            )
        names = [parameter.name for parameter in self.parameters]
        found = [f"{name} is declared twice" for name in sorted(set(names)) if names.count(name) > 1]
        missing = [name for name in required if name not in names]
        unknown = [name for name in names if name not in required]
        if missing:
            found.append(f"missing {', '.join(missing)}")
        if unknown:
            found.append(f"unknown for the {self.kind}: {', '.join(unknown)}")
        for parameter in self.parameters:
            found.extend(parameter.problems())
        if found:
            raise ConfigError(
                f"inconsistent search space for the {self.kind}: {'; '.join(found)}. "
                f"A {self.kind} space declares exactly {', '.join(required)}."
            )

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Ask ``trial`` for one value of every parameter.

        Introduced in ``03_tuning.ipynb``.

        Args:
            trial: The Optuna trial.

        Returns:
            ``{name: value}``.
        """
        return {parameter.name: parameter.suggest(trial) for parameter in self.parameters}

    def grid(self) -> dict[str, list[Any]]:
        """The grid derived from the space, for Optuna's ``GridSampler``.

        Introduced in ``03_tuning.ipynb``.

        Returns:
            ``{name: [values]}``.
        """
        return {parameter.name: list(parameter.grid_values()) for parameter in self.parameters}

    def grid_size(self) -> int:
        """How many points the grid has (the product of the value counts)."""
        return int(np.prod([len(values) for values in self.grid().values()]))

    def to_dict(self) -> dict[str, Any]:
        """The space as JSON-ready data (for study attributes and worker processes)."""
        return {"kind": self.kind, "parameters": [asdict(parameter) for parameter in self.parameters]}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> SearchSpace:
        """Rebuild a space from :meth:`to_dict` output.

        Raises:
            ConfigError: The data does not describe a valid space.
        """
        try:
            parameters = tuple(
                Parameter(**{**item, "choices": tuple(item.get("choices", ())), "grid": tuple(item.get("grid", ()))})
                for item in payload.get("parameters", ())
            )
            return cls(kind=payload["kind"], parameters=parameters)
        except (KeyError, TypeError) as error:
            raise ConfigError(f"cannot read a search space from {dict(payload)!r}: {error}.") from None


def default_space(kind: str) -> SearchSpace:
    """The search space the notebook and the command use for a model kind.

    Introduced in ``03_tuning.ipynb``. MLP: 1-3 hidden layers of 64-512 units,
    dropout 0-0.4, learning rate 1e-4 to 3e-3 (log scale), batch 32-256. CNN: 1-2
    convolution blocks starting at 16-64 filters (doubling), a dense layer of
    64-256 units, and the same dropout, learning rate and batch sizes.

    Args:
        kind: ``"mlp"`` or ``"cnn"``.

    Returns:
        The :class:`SearchSpace`.

    Raises:
        ConfigError: Unknown kind.
    """
    shared = (
        Parameter("dropout", low=0.0, high=0.4, grid_points=3),
        Parameter("learning_rate", low=1e-4, high=3e-3, log=True, grid_points=4),
    )
    if kind == "mlp":
        return SearchSpace(
            "mlp",
            (
                Parameter("num_layers", low=1, high=3, integer=True),
                Parameter("units", choices=(64, 128, 256, 512)),
                *shared,
                Parameter("batch_size", choices=(32, 64, 128, 256)),
            ),
        )
    if kind == "cnn":
        return SearchSpace(
            "cnn",
            (
                Parameter("num_conv_layers", low=1, high=2, integer=True),
                Parameter("filters", choices=(16, 32, 64)),
                Parameter("dense_units", choices=(64, 128, 256)),
                *shared,
                Parameter("batch_size", choices=(32, 64, 128)),
            ),
        )
    raise ConfigError(f"unknown model kind {kind!r}: use one of {', '.join(REQUIRED_PARAMETERS)}.")


def space_from_simple_dict(kind: str, mapping: Mapping[str, Any]) -> SearchSpace:
    """A space from a short mapping, as ``aideploy tune --space FILE.json`` reads it.

    Each name maps to a list of choices, or to ``{"low": .., "high": .., "log":
    .., "integer": .., "grid": [..]}``.

    Introduced in ``03_tuning.ipynb``.

    Args:
        kind: ``"mlp"`` or ``"cnn"``.
        mapping: ``{name: [choices] or {range}}``.

    Returns:
        The :class:`SearchSpace`.

    Raises:
        ConfigError: The mapping is not of that form or the space is inconsistent.
    """
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"a search space is a JSON object {{name: [choices] or {{low, high}}}}, got {mapping!r}.")
    parameters = []
    for name, value in mapping.items():
        if isinstance(value, list):
            parameters.append(Parameter(str(name), choices=tuple(value)))
        elif isinstance(value, Mapping):
            allowed = {"low", "high", "log", "integer", "grid", "grid_points"}
            if set(value) - allowed:
                raise ConfigError(
                    f"search space entry {name!r} has unknown keys {sorted(set(value) - allowed)}: "
                    f"use {sorted(allowed)}."
                )
            parameters.append(Parameter(str(name), **{**value, "grid": tuple(value.get("grid", ()))}))
        else:
            raise ConfigError(
                f"search space entry {name!r} must be a list of choices or an object with low/high, got {value!r}."
            )
    return SearchSpace(kind, tuple(parameters))


def hyperparameters(kind: str, params: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """Turn a trial's parameters into model-builder arguments and a batch size.

    Introduced in ``03_tuning.ipynb``.

    Args:
        kind: ``"mlp"`` or ``"cnn"``.
        params: Values of the space's parameters (``trial.params``).

    Returns:
        ``(keyword arguments for models.build, batch_size)``.

    Raises:
        ConfigError: Unknown kind or a parameter is missing.
    """
    try:
        shared = {"dropout": float(params["dropout"]), "learning_rate": float(params["learning_rate"])}
        batch_size = int(params["batch_size"])
        if kind == "mlp":
            units = int(params["units"])
            return {"hidden_units": (units,) * int(params["num_layers"]), **shared}, batch_size
        if kind == "cnn":
            first = int(params["filters"])
            filters = tuple(first * 2**index for index in range(int(params["num_conv_layers"])))
            return {"filters": filters, "dense_units": int(params["dense_units"]), **shared}, batch_size
    except KeyError as error:
        raise ConfigError(f"the parameters {dict(params)} lack {error} for the {kind}.") from None
    raise ConfigError(f"unknown model kind {kind!r}: use one of {', '.join(REQUIRED_PARAMETERS)}.")


# --- settings -----------------------------------------------------------------


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


# --- storage ------------------------------------------------------------------


def default_storage_url(out_dir: str | os.PathLike | None = None) -> str:
    """``sqlite:///<out_dir>/tuning.db`` (default: the artifacts folder).

    Introduced in ``03_tuning.ipynb``.

    Args:
        out_dir: Folder of the SQLite file.

    Returns:
        The storage URL.
    """
    folder = config.resolve_out_dir(out_dir)
    return f"sqlite:///{folder.resolve() / 'tuning.db'}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open an Optuna storage, failing clearly when it cannot be opened.

    - ``sqlite:///path.db``: a local file; several processes on one machine can
      share it (writes wait up to a minute for the file lock).
    - ``postgresql://...``, ``mysql+pymysql://...``: a database server that many
      machines share (needs its driver installed, e.g. ``psycopg2``).
    - ``journal:///path.log`` (or a path ending in ``.log``): Optuna's journal
      file, an append-only log with a file lock, for shared disks (NFS) where
      SQLite's locking is unreliable.

    Introduced in ``03_tuning.ipynb``.

    Args:
        url: The storage URL.

    Returns:
        The storage.

    Raises:
        ConfigError: The URL is malformed, its folder does not exist, its driver
            is missing or the database cannot be reached.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("the storage URL is empty: use e.g. sqlite:///artifacts/tuning.db.")
    url = url.strip()
    if url.startswith("journal://") or (url.endswith(".log") and "://" not in url):
        path = Path(url[len("journal://") :] if url.startswith("journal://") else url)
        _check_parent_folder(path, url)
        try:
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend)
        except Exception as error:  # noqa: BLE001 - any failure means "cannot open"
            raise ConfigError(f"cannot open the journal storage {url}: {error}.") from None
    if "://" not in url:
        raise ConfigError(
            f"{url!r} is not a storage URL: use sqlite:///path/to/file.db, a PostgreSQL/MySQL URL "
            "(postgresql://user:password@host/database) or journal:///path/to/file.log."
        )
    sqlite_file: Path | None = None
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        sqlite_file = Path(url[len("sqlite:///") :])
        _check_parent_folder(sqlite_file, url)
        # SQLite lets one writer in at a time; the others wait (default 5 s). Trials
        # write rarely but several workers may finish at once, so wait longer.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    existed = sqlite_file is not None and sqlite_file.exists()
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as error:  # noqa: BLE001 - SQLAlchemy raises many types here
        if sqlite_file is not None and not existed and sqlite_file.exists():
            sqlite_file.unlink()  # do not leave an empty database behind
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"cannot open the storage {_redact(url)}: {reason}. Check the URL's scheme, host, "
            "database and credentials, and that its driver is installed (psycopg2 for PostgreSQL, "
            "pymysql for mysql+pymysql)."
        ) from None


def _check_parent_folder(path: Path, url: str) -> None:
    if not path.parent.is_dir():
        raise ConfigError(
            f"cannot open the storage {url}: the folder {path.parent} does not exist. "
            "Create it first or choose another path."
        )
    if not os.access(path.parent, os.W_OK):
        raise ConfigError(f"cannot open the storage {url}: the folder {path.parent} is not writable.")


def _redact(url: str) -> str:
    # Never print a database password in an error message.
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return url


def default_study_name(settings: TuneSettings) -> str:
    """The study name :func:`run` uses when none is given.

    Introduced in ``03_tuning.ipynb``.

    Args:
        settings: The run's settings.

    Returns:
        ``<kind>-<sampler>-<objectives>``, e.g. ``mlp-tpe-accuracy``.
    """
    return f"{settings.kind}-{settings.sampler}-{'-'.join(settings.objectives)}"


def delete_study(study_name: str, storage: str | None = None) -> bool:
    """Delete a study if it exists, so that the next :func:`run` starts it afresh.

    :func:`run` resumes a study of the same name; a notebook that should give the
    same answer each time it runs deletes its studies first.

    Introduced in ``03_tuning.ipynb``.

    Args:
        study_name: The study.
        storage: Its storage URL (default: :func:`default_storage_url`).

    Returns:
        Whether a study was deleted.

    Raises:
        ConfigError: The storage cannot be opened.
    """
    backend = open_storage(storage if storage is not None else default_storage_url())
    if study_name not in optuna.study.get_all_study_names(backend):
        return False
    optuna.delete_study(study_name=study_name, storage=backend)
    return True


def _open_study(
    storage: optuna.storages.BaseStorage, study_name: str, settings: TuneSettings, *, sampler_offset: int = 0
) -> tuple[optuna.Study, bool]:
    """Load the study if it exists (checking it fits ``settings``), else create it."""
    names = optuna.study.get_all_study_names(storage)
    if study_name in names:
        study = optuna.load_study(study_name=study_name, storage=storage)
        recorded = study.user_attrs.get("aideploy", {})
        if (
            recorded.get("kind", settings.kind) != settings.kind
            or list(recorded.get("objectives", settings.objectives)) != list(settings.objectives)
            or [direction.name.lower() for direction in study.directions] != settings.directions
        ):
            raise ConfigError(
                f"the study {study_name!r} in this storage was created for the "
                f"{recorded.get('kind', '?')} with objectives {','.join(recorded.get('objectives', ['?']))}, "
                f"not the {settings.kind} with {','.join(settings.objectives)}: choose another study name "
                "(--study) or the same model and objectives."
            )
        offset = sampler_offset + len(study.trials)
        study.sampler = make_sampler(settings, offset=offset)
        study.pruner = make_pruner(settings)
        return study, False
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        directions=settings.directions,
        sampler=make_sampler(settings, offset=sampler_offset),
        pruner=make_pruner(settings),
    )
    study.set_user_attr(
        "aideploy",
        {"kind": settings.kind, "objectives": list(settings.objectives), "space": settings.space.to_dict()},
    )
    return study, True


# --- the objective --------------------------------------------------------------


class PruningCallback(keras.callbacks.Callback):
    """Report validation accuracy to Optuna after each epoch; stop hopeless trials.

    Raising inside Keras's loop would skip its clean-up, so the callback only
    stops training and remembers why; the objective then raises
    ``optuna.TrialPruned``.

    Introduced in ``03_tuning.ipynb``.

    Args:
        trial: The Optuna trial to report to.
        monitor: The Keras log entry to report.
    """

    def __init__(self, trial: optuna.Trial, monitor: str = "val_accuracy") -> None:
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Report this epoch's value; stop training if the pruner says so."""
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        self.trial.report(float(value), step=epoch + 1)
        if self.trial.should_prune():
            self.pruned_at = epoch + 1
            self.model.stop_training = True


def measure_latency(model: keras.Model, *, repeats: int = 100, warmup: int = 10) -> float:
    """Median batch-1 latency of a Keras model, in microseconds.

    The call goes through a ``tf.function`` (a traced graph), which is closer to
    a served model than eager ``model(x)`` calls dominated by Python overhead.

    Introduced in ``03_tuning.ipynb``.

    Args:
        model: A built Keras model.
        repeats: Timed calls (the median is returned).
        warmup: Untimed calls first (tracing, caches).

    Returns:
        Microseconds per batch-1 call.
    """
    from aideploy import bench

    x = tf.zeros((1, *model.input_shape[1:]), dtype=tf.float32)
    call = tf.function(lambda inputs: model(inputs, training=False))
    latency = bench.measure_latency(lambda inputs: call(inputs).numpy(), x, num_calls=repeats, warmup_calls=warmup)
    return latency.p50_us


def make_objective(
    settings: TuneSettings, splits: data.Splits, *, run_id: str = ""
) -> Callable[[optuna.Trial], float | tuple[float, float]]:
    """The Optuna objective: build, train and score one configuration.

    A trial trains ``settings.epochs()`` epochs with the same seed (so trials
    differ only by their hyperparameters) and returns the best validation
    accuracy of its epochs, plus the cost when the study has two objectives.

    Introduced in ``03_tuning.ipynb``.

    Args:
        settings: The run's settings.
        splits: Data for the model kind (:func:`aideploy.train.load_splits`).
        run_id: Recorded on each trial, so a failed run can find its own trials.

    Returns:
        ``objective(trial)``.
    """
    seed = settings.resolved_seed()
    num_epochs = settings.epochs()

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        params = settings.space.suggest(trial)
        if run_id:
            trial.set_user_attr("run_id", run_id)
        build_arguments, batch_size = hyperparameters(settings.kind, params)
        # Free the graphs of earlier trials; a long study would grow otherwise.
        keras.backend.clear_session()
        train.set_seed(seed)
        model = models.build(settings.kind, **build_arguments)
        pruning = None if settings.multi_objective else PruningCallback(trial)
        result = train.fit(
            model,
            splits,
            train.TrainSettings(num_epochs=num_epochs, batch_size=batch_size, seed=seed, verbose=0),
            callbacks=[pruning] if pruning else None,
        )
        val_accuracy = result.history.get("val_accuracy", [0.0])
        best_epoch = int(np.argmax(val_accuracy)) + 1
        trial.set_user_attr("best_epoch", best_epoch)
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("parameters", models.count_parameters(model))
        trial.set_user_attr("train_seconds", round(result.seconds, 3))
        if pruning is not None and pruning.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}")
        accuracy = float(max(val_accuracy))
        if not settings.multi_objective:
            return accuracy
        if settings.objectives[1] == "params":
            cost = float(models.count_parameters(model))
        else:
            cost = measure_latency(model)
            trial.set_user_attr("latency_us", round(cost, 2))
        return accuracy, cost

    return objective


# --- running a study ------------------------------------------------------------


@dataclass
class TuneResult:
    """What a tuning run found.

    Attributes:
        study: The Optuna study (all its trials, earlier runs' included).
        settings: The run's settings.
        storage_url: Where the study lives.
        best_params: Parameters of the best trial (for two objectives: the most
            accurate trial on the Pareto front).
        best_value: Its value (for two objectives: ``[accuracy, cost]``).
        n_trials: Trials in the study now.
        n_new_trials: Trials this run added.
        seconds: Wall time of the search.
        created: Whether this run created the study.
    """

    study: optuna.Study
    settings: TuneSettings
    storage_url: str
    best_params: dict[str, Any]
    best_value: float | list[float]
    n_trials: int
    n_new_trials: int
    seconds: float
    created: bool
    best_trial_number: int = -1
    pareto_front: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``aideploy tune`` prints)."""
        states = [trial.state.name for trial in self.study.trials]
        return {
            "study": self.study.study_name,
            "storage": _redact(self.storage_url),
            "model": self.settings.kind,
            "sampler": self.settings.sampler,
            "objectives": list(self.settings.objectives),
            "best_value": self.best_value,
            "best_params": self.best_params,
            "best_trial": self.best_trial_number,
            "n_trials": self.n_trials,
            "n_new_trials": self.n_new_trials,
            "n_complete": states.count("COMPLETE"),
            "n_pruned": states.count("PRUNED"),
            "n_failed": states.count("FAIL"),
            "search_seconds": round(self.seconds, 2),
            **({"pareto_front": self.pareto_front} if self.settings.multi_objective else {}),
        }


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The best trial; for two objectives, the most accurate one on the Pareto front.

    Introduced in ``03_tuning.ipynb``.

    Args:
        study: A study with at least one complete trial.

    Returns:
        The trial.

    Raises:
        AideployError: No trial completed.
    """
    complete = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise AideployError(
            f"the study {study.study_name!r} has no complete trial: run more trials, or a "
            "milder pruner (--pruner none)."
        )
    if len(study.directions) == 1:
        return study.best_trial
    # Highest accuracy first, then the lower cost.
    return max(study.best_trials, key=lambda trial: (trial.values[0], -trial.values[1]))


def run(
    settings: TuneSettings,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    workers: int = 1,
    out_dir: str | os.PathLike | None = None,
    splits: data.Splits | None = None,
    progress: bool = True,
) -> TuneResult:
    """Run ``settings.num_trials`` trials in a (new or resumed) study.

    Everything is checked before the study is touched: settings, worker count and
    the storage URL. If this run created the study and fails before any trial
    completes, the study is deleted again; trials this run left unfinished are
    marked failed, so the study stays consistent and resumable.

    Introduced in ``03_tuning.ipynb``.

    Args:
        settings: What to search and how.
        storage: Storage URL (default: ``sqlite:///<out_dir>/tuning.db``).
        study_name: Default :func:`default_study_name`. A study of that name in
            the storage is resumed: this run adds ``num_trials`` trials to it.
        workers: Local worker processes sharing the study (1: this process).
        out_dir: Folder of the default storage (default: the artifacts folder).
        splits: Data to tune on, in-process only (default: :func:`aideploy.train.load_splits`).
        progress: Print one line per finished trial.

    Returns:
        The :class:`TuneResult`.

    Raises:
        ConfigError: Invalid worker count, storage URL or a study that does not fit.
        AideployError: A worker process failed, or no trial completed.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"the number of workers must be at least 1, got {workers!r}.")
    folder = config.resolve_out_dir(out_dir)
    if storage is None:
        folder.mkdir(parents=True, exist_ok=True)
    storage_url = storage if storage is not None else default_storage_url(folder)
    if settings.sampler == "grid" and settings.num_trials > settings.space.grid_size():
        raise ConfigError(
            f"the grid has {settings.space.grid_size()} points, fewer than the {settings.num_trials} "
            "trials asked for: ask for fewer trials or widen the grid."
        )
    backend = open_storage(storage_url)
    study_name = study_name or default_study_name(settings)
    study, created = _open_study(backend, study_name, settings)
    trials_before = len(study.trials)
    if settings.sampler == "grid" and trials_before + settings.num_trials > settings.space.grid_size():
        if created:
            optuna.delete_study(study_name=study_name, storage=backend)
        raise ConfigError(
            f"the study {study_name!r} already has {trials_before} trials and its grid only "
            f"{settings.space.grid_size()} points: {settings.num_trials} more would repeat points. "
            "Ask for fewer trials or start a new study (--study)."
        )
    run_id = uuid.uuid4().hex
    started = time.perf_counter()
    try:
        if workers == 1:
            splits = splits if splits is not None else data.load_splits(settings.kind, seed=settings.resolved_seed())
            _optimize(study, settings, splits, settings.num_trials, run_id=run_id, progress=progress)
        else:
            _run_workers(study_name, storage_url, settings, workers, run_id=run_id, progress=progress)
    except BaseException:
        _clean_up_after_failure(backend, study_name, run_id, created)
        raise
    seconds = time.perf_counter() - started
    study = optuna.load_study(study_name=study_name, storage=backend)
    try:
        chosen = best_trial(study)
    except AideployError:
        if created:
            optuna.delete_study(study_name=study_name, storage=backend)
        raise
    pareto = []
    if settings.multi_objective:
        pareto = [
            {"trial": trial.number, "values": list(trial.values), "params": trial.params}
            for trial in sorted(study.best_trials, key=lambda trial: trial.values[1])
        ]
    return TuneResult(
        study=study,
        settings=settings,
        storage_url=storage_url,
        best_params=dict(chosen.params),
        best_value=chosen.value if len(study.directions) == 1 else list(chosen.values),
        n_trials=len(study.trials),
        n_new_trials=len(study.trials) - trials_before,
        seconds=seconds,
        created=created,
        best_trial_number=chosen.number,
        pareto_front=pareto,
    )


def _clean_up_after_failure(
    storage: optuna.storages.BaseStorage, study_name: str, run_id: str, created: bool
) -> None:
    """Leave no half-written study: fail this run's open trials, drop an empty new study."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        if created and not any(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials):
            optuna.delete_study(study_name=study_name, storage=storage)
            return
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if trial.user_attrs.get("run_id") == run_id:
                storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    except Exception:  # noqa: BLE001 - clean-up must not hide the original error
        pass


def _optimize(
    study: optuna.Study,
    settings: TuneSettings,
    splits: data.Splits,
    num_trials: int | None,
    *,
    run_id: str,
    progress: bool,
    claims: Path | None = None,
    label: str = "",
) -> int:
    """Run trials until ``num_trials`` are done, or while ``claims`` grants one; return the count."""
    objective = make_objective(settings, splits, run_id=run_id)
    callbacks = [_progress_callback(settings, label)] if progress else []
    done = 0
    while (claims is None and done < num_trials) or (claims is not None and _claim_trial(claims)):
        # One trial per call: a worker asks for permission before each trial, so
        # the workers together run exactly the number of trials asked for.
        study.optimize(objective, n_trials=1, callbacks=callbacks, gc_after_trial=False)
        done += 1
    return done


def _progress_callback(settings: TuneSettings, label: str) -> Callable[[optuna.Study, Any], None]:
    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        if trial.state == optuna.trial.TrialState.COMPLETE:
            values = ", ".join(
                f"{name} {value:.4f}" if name == "accuracy" else f"{name} {value:,.0f}"
                for name, value in zip(settings.objectives, trial.values)
            )
            outcome = values
        else:
            outcome = f"{trial.state.name.lower()} after epoch {trial.last_step or 0}"
        params = ", ".join(f"{key}={_short(value)}" for key, value in trial.params.items())
        print(f"{label}trial {trial.number:3d}  {outcome:<38} {seconds:5.1f} s  {params}", flush=True)

    return report


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _claim_trial(path: Path) -> bool:
    """Take one trial from the shared counter file (under an exclusive lock)."""
    with open(path, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        remaining = int(handle.read().strip() or 0)
        if remaining <= 0:
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(str(remaining - 1))
        return True


def worker_thread_count(workers: int) -> int:
    """TensorFlow threads per worker: the machine's cores split evenly (at least 1).

    Introduced in ``03_tuning.ipynb``.

    Args:
        workers: Number of local worker processes.

    Returns:
        Threads per worker.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def _run_workers(
    study_name: str, storage_url: str, settings: TuneSettings, workers: int, *, run_id: str, progress: bool
) -> None:
    """Start ``workers`` processes on the study; they share a trial counter; wait for all."""
    threads = worker_thread_count(workers)
    with tempfile.TemporaryDirectory(prefix="aideploy-tune-") as scratch:
        claims = Path(scratch) / "remaining"
        claims.write_text(str(settings.num_trials))
        spec = Path(scratch) / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "study_name": study_name,
                    "storage": storage_url,
                    "settings": settings.to_dict(),
                    "run_id": run_id,
                    "claims": str(claims),
                    "progress": progress,
                }
            )
        )
        environment = {
            **os.environ,
            # TensorFlow reads these when it starts, before any op runs.
            "TF_NUM_INTRAOP_THREADS": str(threads),
            "TF_NUM_INTEROP_THREADS": str(threads),
            "OMP_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1",
        }
        if progress:
            print(f"Starting {workers} workers with {threads} TensorFlow thread(s) each...", flush=True)
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "aideploy.tune", "--worker", str(spec), "--index", str(index)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=environment,
            )
            for index in range(workers)
        ]
        try:
            tails = _relay_output(processes, show=progress)
        except BaseException:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=30)
            raise
    failed = [(index, process.returncode) for index, process in enumerate(processes) if process.returncode]
    if failed:
        index, code = failed[0]
        tail = " | ".join(tails[index][-5:])
        raise AideployError(
            f"tuning worker {index} failed with exit status {code}: {tail or 'no output'}. "
            "The study keeps its complete trials; fix the cause and run the command again to resume it."
        )


def _relay_output(processes: list[subprocess.Popen], *, show: bool) -> list[list[str]]:
    """Print the workers' lines as they come (prefixed), in this thread; keep each one's tail."""
    lines: queue.Queue[tuple[int, str | None]] = queue.Queue()

    def read(index: int, process: subprocess.Popen) -> None:
        for line in process.stdout:
            lines.put((index, line.rstrip("\n")))
        lines.put((index, None))

    readers = [
        threading.Thread(target=read, args=(index, process), daemon=True) for index, process in enumerate(processes)
    ]
    for reader in readers:
        reader.start()
    tails: list[list[str]] = [[] for _ in processes]
    open_streams = len(processes)
    while open_streams:
        index, line = lines.get()
        if line is None:
            open_streams -= 1
            continue
        tails[index] = (tails[index] + [line])[-20:]
        if show:
            print(f"[worker {index}] {line}", flush=True)
    for process in processes:
        process.wait()
    return tails


def _worker_main(arguments: Sequence[str]) -> int:
    """Entry point of a worker process: ``python -m aideploy.tune --worker SPEC --index I``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m aideploy.tune", description="An aideploy tuning worker.")
    parser.add_argument("--worker", required=True, help="path of the JSON spec written by tune.run")
    parser.add_argument("--index", type=int, default=0, help="this worker's index")
    options = parser.parse_args(arguments)
    try:
        spec = json.loads(Path(options.worker).read_text())
        settings = TuneSettings.from_dict(spec["settings"])
        storage = open_storage(spec["storage"])
        study, _ = _open_study(storage, spec["study_name"], settings, sampler_offset=1 + options.index)
        splits = data.load_splits(settings.kind, seed=settings.resolved_seed())
        _optimize(
            study,
            settings,
            splits,
            None,
            run_id=spec["run_id"],
            progress=spec["progress"],
            claims=Path(spec["claims"]),
        )
    except AideployError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


# --- the best model ---------------------------------------------------------------


def merge_train_and_validation(splits: data.Splits) -> data.Splits:
    """The same splits with the validation images added to the training images.

    Once tuning has used the validation set to choose hyperparameters, the final
    model can learn from those images too. The validation arrays stay as they
    are, so Keras still reports a (now optimistic) validation accuracy.

    Introduced in ``03_tuning.ipynb``.

    Args:
        splits: From :func:`aideploy.train.load_splits`.

    Returns:
        New :class:`aideploy.data.Splits` with train = train + validation.
    """
    return replace(
        splits,
        x_train=np.concatenate([splits.x_train, splits.x_val]),
        y_train=np.concatenate([splits.y_train, splits.y_val]),
        source={**splits.source, "train_includes_validation": True},
    )


def retrain_best(
    result: TuneResult | optuna.Study,
    *,
    kind: str | None = None,
    splits: data.Splits | None = None,
    num_epochs: int | None = None,
    out_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    verbose: int = 0,
) -> dict[str, Any]:
    """Train the best configuration on train + validation, test it and save it.

    Introduced in ``03_tuning.ipynb``.

    Args:
        result: A :class:`TuneResult`, or a study (then give ``kind``).
        kind: Model kind when ``result`` is a study.
        splits: Data (default: :func:`aideploy.train.load_splits`).
        num_epochs: Epochs (default: 2 in fast mode, 30 in full mode).
        out_dir: Folder of ``<kind>_tuned.keras`` (default: the artifacts folder).
        seed: Seed (default: the global seed).
        verbose: Keras progress output.

    Returns:
        ``model`` (the Keras model), ``test_accuracy``, ``model_path``,
        ``manifest_path``, ``params``, ``parameters``, ``epochs_run``, ``training_seconds``.

    Raises:
        AideployError: The study has no complete trial.
        ConfigError: ``kind`` is missing for a study.
    """
    if isinstance(result, TuneResult):
        study, kind = result.study, result.settings.kind
    else:
        study = result
        kind = kind or study.user_attrs.get("aideploy", {}).get("kind")
        if kind is None:
            raise ConfigError("give the model kind (kind='mlp' or 'cnn') to retrain the best trial of this study.")
    chosen = best_trial(study)
    seed = config.resolve_seed(seed)
    splits = splits if splits is not None else data.load_splits(kind, seed=seed)
    merged = merge_train_and_validation(splits)
    build_arguments, batch_size = hyperparameters(kind, chosen.params)
    num_epochs = num_epochs if num_epochs is not None else config.fast_or_full(2, 30)
    keras.backend.clear_session()
    train.set_seed(seed)
    model = models.build(kind, **build_arguments)
    fitted = train.fit(
        model,
        merged,
        train.TrainSettings(num_epochs=num_epochs, batch_size=batch_size, seed=seed, verbose=verbose),
    )
    report, _ = evaluate.evaluate_model(fitted.model, splits.x_test, splits.y_test, splits.class_names)
    folder = config.resolve_out_dir(out_dir)
    model_path, manifest_path = train.save(
        fitted,
        folder / f"{kind}_tuned.keras",
        splits=merged,
        metrics={
            "test_accuracy": report.accuracy,
            "tuning_objectives": list(study.user_attrs.get("aideploy", {}).get("objectives", ["accuracy"])),
            "tuning_values": list(chosen.values),
            "fast_mode": config.fast_mode(),
        },
        hyperparameters={**chosen.params, **{key: list(value) if isinstance(value, tuple) else value
                                             for key, value in build_arguments.items()}},
        produced_by=f"aideploy.tune.retrain_best (study {study.study_name!r}, trial {chosen.number})",
    )
    return {
        "model": fitted.model,
        "test_accuracy": round(report.accuracy, 6),
        "model_path": str(model_path),
        "manifest_path": str(manifest_path),
        "params": dict(chosen.params),
        "trial": chosen.number,
        "parameters": models.count_parameters(fitted.model),
        "epochs_run": fitted.epochs_run,
        "training_seconds": round(fitted.seconds, 2),
    }


# --- tables and plots ---------------------------------------------------------------


def trials_table(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: number, state, values, parameters, epochs, seconds.

    Introduced in ``03_tuning.ipynb``.

    Args:
        study: Any study.

    Returns:
        Rows as dicts (JSON-ready), ordered by trial number.
    """
    objectives = study.user_attrs.get("aideploy", {}).get("objectives", ["accuracy"])
    rows = []
    for trial in sorted(study.trials, key=lambda item: item.number):
        row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
        for index, name in enumerate(objectives):
            row[name] = trial.values[index] if trial.values else None
        row.update(trial.params)
        row["epochs"] = trial.user_attrs.get("epochs_run")
        row["seconds"] = round(trial.duration.total_seconds(), 2) if trial.duration else None
        rows.append(row)
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of dicts as a fixed-width text table (notebooks and terminals).

    Introduced in ``03_tuning.ipynb``.

    Args:
        rows: E.g. :func:`trials_table` output.

    Returns:
        The table as text.
    """
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[index]) for line in cells)) for index, column in enumerate(columns)]
    lines = ["  ".join(column.rjust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def save_trials(study: optuna.Study, path: str | os.PathLike) -> Path:
    """Write :func:`trials_table` as a JSON artifact (atomically).

    Introduced in ``03_tuning.ipynb``.

    Args:
        study: The study.
        path: Target ``.json`` file.

    Returns:
        The path written.
    """
    return artifacts.write_json(path, {"study": study.study_name, "trials": trials_table(study)})


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    # Optuna marks its matplotlib plots as experimental and warns on every call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _accuracy_target(study: optuna.Study) -> Callable[[Any], float] | None:
    # Optuna's plots need a target for multi-objective studies; accuracy is
    # always the first objective.
    return None if len(study.directions) == 1 else (lambda trial: trial.values[0])


def plot_history(study: optuna.Study):
    """Optimisation history: each trial's validation accuracy and the best so far.

    Introduced in ``03_tuning.ipynb``.

    Args:
        study: A study (for two objectives, accuracy is plotted).

    Returns:
        The matplotlib figure.
    """
    from optuna.visualization.matplotlib import plot_optimization_history

    with _quiet_experimental():
        axes = plot_optimization_history(
            study, target=_accuracy_target(study), target_name="validation accuracy"
        )
    axes.set_title(f"Optimisation history: {study.study_name}")
    axes.figure.tight_layout()
    return axes.figure


def plot_importances(study: optuna.Study):
    """Which hyperparameters mattered most for validation accuracy (fANOVA).

    Introduced in ``03_tuning.ipynb``.

    Args:
        study: A study with at least two complete trials.

    Returns:
        The matplotlib figure.
    """
    from optuna.visualization.matplotlib import plot_param_importances

    with _quiet_experimental():
        axes = plot_param_importances(
            study, target=_accuracy_target(study), target_name="validation accuracy"
        )
    axes.set_title(f"Hyperparameter importances: {study.study_name}")
    axes.figure.tight_layout()
    return axes.figure


def plot_pareto_front(study: optuna.Study):
    """Accuracy against deployment cost; the Pareto-optimal trials highlighted.

    Introduced in ``03_tuning.ipynb``.

    Args:
        study: A two-objective study (accuracy and a cost).

    Returns:
        The matplotlib figure.

    Raises:
        ConfigError: The study has one objective.
    """
    from optuna.visualization.matplotlib import plot_pareto_front as optuna_pareto_front

    if len(study.directions) < 2:
        raise ConfigError(f"the study {study.study_name!r} has one objective: a Pareto front needs two.")
    objectives = study.user_attrs.get("aideploy", {}).get("objectives", ["accuracy", "cost"])
    with _quiet_experimental():
        axes = optuna_pareto_front(study, target_names=[OBJECTIVE_LABELS.get(name, name) for name in objectives])
    if objectives[1] == "params":
        axes.set_yscale("log")
    axes.set_title(f"Pareto front: {study.study_name}")
    axes.figure.tight_layout()
    return axes.figure


def best_so_far(study: optuna.Study) -> list[float]:
    """Best validation accuracy after each trial (pruned and failed trials add nothing).

    Introduced in ``03_tuning.ipynb``.

    Args:
        study: A study.

    Returns:
        One value per trial, in trial order (NaN until a trial completes).
    """
    best, curve = float("nan"), []
    for trial in sorted(study.trials, key=lambda item: item.number):
        if trial.state == optuna.trial.TrialState.COMPLETE:
            value = trial.values[0]
            best = value if math.isnan(best) else max(best, value)
        curve.append(best)
    return curve


def plot_sampler_comparison(studies: Mapping[str, optuna.Study]):
    """Best validation accuracy so far against trial number, one line per sampler.

    Introduced in ``03_tuning.ipynb``.

    Args:
        studies: ``{label: study}``, e.g. ``{"grid": ..., "random": ..., "tpe": ...}``.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4))
    for label, study in studies.items():
        curve = best_so_far(study)
        axes.plot(range(1, len(curve) + 1), curve, marker="o", label=label)
    axes.set_xlabel("trials")
    axes.set_ylabel("best validation accuracy so far")
    axes.set_title("Same budget, three samplers")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
