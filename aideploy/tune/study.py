"""Running a study: :func:`run` opens or resumes it and runs its trials.

Introduced in ``03_tuning.ipynb``. Trials run in this process or in worker
processes (:mod:`aideploy.tune.workers`) that share the study's storage.
TensorFlow is loaded only when the first trial trains.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aideploy import config, data
from aideploy.errors import AideployError, ConfigError
from aideploy.tune._optuna import optuna
from aideploy.tune.settings import TuneSettings
from aideploy.tune.storage import _open_study, _redact, default_storage_url, default_study_name, open_storage


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
        splits: Data to tune on (default: :func:`aideploy.data.load_splits`); worker
            processes receive it as an ``.npz`` file.
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
        make_folder(folder)
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
            from aideploy.tune.workers import run_workers

            run_workers(study_name, storage_url, settings, workers, run_id=run_id, progress=progress, splits=splits)
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


def make_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) if needed; fail clearly when it cannot be written.

    Introduced in ``03_tuning.ipynb`` (through :func:`run`).

    Args:
        folder: The folder.

    Returns:
        The folder as a path.

    Raises:
        ConfigError: It cannot be created or is not writable.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create the output folder {folder}: {error.strerror or error}. Choose a folder you can write to."
        ) from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"the output folder {folder} is not writable: choose a folder you can write to.")
    return folder


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
    claim: Callable[[], bool] | None = None,
    worker: int | None = None,
) -> int:
    """Run trials until ``num_trials`` are done, or while ``claim()`` grants one; return the count."""
    # The objective trains with TensorFlow: import it only now that a trial runs.
    from aideploy.tune.objective import make_objective

    objective = make_objective(settings, splits, run_id=run_id, worker=worker)
    callbacks = [_progress_callback(settings)] if progress else []
    done = 0
    while (claim is None and done < num_trials) or (claim is not None and claim()):
        # One trial per call: a worker asks for permission before each trial, so
        # the workers together run exactly the number of trials asked for.
        study.optimize(objective, n_trials=1, callbacks=callbacks, gc_after_trial=False)
        done += 1
    return done


def _progress_callback(settings: TuneSettings) -> Callable[[optuna.Study, Any], None]:
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
        print(f"trial {trial.number:3d}  {outcome:<38} {seconds:5.1f} s  {params}", flush=True)

    return report


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
