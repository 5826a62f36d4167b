"""Tables and plots of studies (no TensorFlow).

Introduced in ``03_tuning.ipynb``.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from aideploy import artifacts
from aideploy.errors import ConfigError
from aideploy.tune._optuna import optuna
from aideploy.tune.settings import OBJECTIVE_LABELS


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


def _legend_outside(axes: Any) -> None:
    # Beside the plot, a legend can cover no point, whatever the trials look like.
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


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
    _legend_outside(axes)
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
    # Optuna sets its own title on the left; replace it rather than add a second one.
    axes.set_title("", loc="left")
    axes.set_title(f"Hyperparameter importances (fANOVA): {study.study_name}")
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
    _legend_outside(axes)
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


def elapsed_seconds(study: optuna.Study) -> list[float]:
    """Trial time spent up to the end of each trial (the sum of trial durations, in trial order).

    Introduced in ``03_tuning.ipynb``.

    Args:
        study: A study run in one process (with workers, durations overlap).

    Returns:
        One value per trial, in trial order.
    """
    total, curve = 0.0, []
    for trial in sorted(study.trials, key=lambda item: item.number):
        total += trial.duration.total_seconds() if trial.duration else 0.0
        curve.append(total)
    return curve


def best_within_seconds(study: optuna.Study, seconds: float) -> float:
    """Best validation accuracy among the trials finished within ``seconds`` of trial time.

    Compares samplers at equal wall time rather than an equal number of trials.

    Introduced in ``03_tuning.ipynb``.

    Args:
        study: A study run in one process.
        seconds: The time budget.

    Returns:
        The best value, or NaN when no trial completed within the budget.
    """
    best = float("nan")
    for value, spent in zip(best_so_far(study), elapsed_seconds(study)):
        if spent <= seconds and not math.isnan(value):
            best = value
    return best


def plot_sampler_comparison(studies: Mapping[str, optuna.Study], *, x: str = "trials"):
    """Best validation accuracy so far, one line per sampler, against trials or seconds.

    Introduced in ``03_tuning.ipynb``.

    Args:
        studies: ``{label: study}``, e.g. ``{"grid": ..., "random": ..., "tpe": ...}``.
        x: ``"trials"`` (trial number) or ``"seconds"`` (trial time spent, see
            :func:`elapsed_seconds`).

    Returns:
        The matplotlib figure.

    Raises:
        ConfigError: ``x`` is neither.
    """
    import matplotlib.pyplot as plt

    if x not in ("trials", "seconds"):
        raise ConfigError(f"x must be 'trials' or 'seconds', got {x!r}.")
    figure, axes = plt.subplots(figsize=(6.5, 4))
    for label, study in studies.items():
        curve = best_so_far(study)
        positions = range(1, len(curve) + 1) if x == "trials" else elapsed_seconds(study)
        axes.plot(positions, curve, marker="o", label=label)
    axes.set_xlabel("trials" if x == "trials" else "trial time spent (s)")
    axes.set_ylabel("best validation accuracy so far")
    axes.set_title("Best so far, by trial" if x == "trials" else "Best so far, by time spent")
    _legend_outside(axes)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure
