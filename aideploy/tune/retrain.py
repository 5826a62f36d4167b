"""The best model: retrain it, and compare candidates fairly over seeds (imports TensorFlow).

Introduced in ``03_tuning.ipynb``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from aideploy import config, data, evaluate, models, train
from aideploy.backend import keras
from aideploy.errors import ConfigError
from aideploy.tune._optuna import optuna
from aideploy.tune.space import hyperparameters
from aideploy.tune.study import TuneResult, best_trial


def merge_train_and_validation(splits: data.Splits) -> data.Splits:
    """The same splits with the validation images added to the training images.

    Once tuning has used the validation set to choose hyperparameters, the final
    model can learn from those images too. The validation arrays stay as they
    are, so Keras still reports a (now optimistic) validation accuracy.

    Introduced in ``03_tuning.ipynb``.

    Args:
        splits: From :func:`aideploy.data.load_splits`.

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
        splits: Data (default: :func:`aideploy.data.load_splits`).
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


@dataclass
class SeedComparison:
    """Candidates retrained under one protocol over several seeds: what :func:`compare_over_seeds` returns.

    Introduced in ``03_tuning.ipynb``.

    Attributes:
        rows: One dict a run: ``label``, ``seed``, ``test_accuracy``,
            ``val_accuracy`` (of the weights kept), ``epochs_run``, ``parameters``,
            ``seconds`` (training time).
        protocol: What every run shared: model kind, maximum epochs, early-stopping
            patience, training, validation and test images, seeds.
    """

    rows: list[dict[str, Any]]
    protocol: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        """The candidates, in the order given."""
        return list(dict.fromkeys(row["label"] for row in self.rows))

    def accuracies(self, label: str) -> np.ndarray:
        """Test accuracies of one candidate, in seed order."""
        return np.array([row["test_accuracy"] for row in self.rows if row["label"] == label])

    def summary(self) -> list[dict[str, Any]]:
        """Per candidate: ``n`` runs, mean and sample standard deviation of test accuracy, and more.

        The standard deviation is the sample one (``ddof=1``); with one seed it is NaN.
        """
        summary = []
        for label in self.labels:
            runs = [row for row in self.rows if row["label"] == label]
            accuracies = self.accuracies(label)
            summary.append(
                {
                    "label": label,
                    "n": len(runs),
                    "test_accuracy_mean": float(accuracies.mean()),
                    "test_accuracy_std": float(accuracies.std(ddof=1)) if len(runs) > 1 else float("nan"),
                    "val_accuracy_mean": float(np.mean([row["val_accuracy"] for row in runs])),
                    "epochs_mean": float(np.mean([row["epochs_run"] for row in runs])),
                    "parameters": runs[0]["parameters"],
                    "seconds_mean": float(np.mean([row["seconds"] for row in runs])),
                }
            )
        return summary

    def paired_difference(self, label: str, baseline: str) -> tuple[float, float]:
        """Mean and sample standard deviation of ``label`` minus ``baseline``, seed by seed.

        Both candidates ran with the same seeds, so the per-seed differences cancel
        part of the seed-to-seed noise.

        Args:
            label: A candidate.
            baseline: Another candidate.

        Returns:
            ``(mean, std)`` of the test-accuracy differences (std NaN for one seed).
        """
        differences = self.accuracies(label) - self.accuracies(baseline)
        spread = float(differences.std(ddof=1)) if len(differences) > 1 else float("nan")
        return float(differences.mean()), spread

    def table(self) -> str:
        """The summary as text: test accuracy mean ± std per candidate."""
        lines = [f"{'candidate':<24} {'n':>2}  {'test accuracy':>17}  {'val acc':>7}  {'epochs':>6}  "
                 f"{'parameters':>10}  {'seconds':>7}"]
        for row in self.summary():
            accuracy = f"{row['test_accuracy_mean']:.4f} ± {row['test_accuracy_std']:.4f}"
            lines.append(
                f"{row['label']:<24} {row['n']:>2}  {accuracy:>17}  {row['val_accuracy_mean']:>7.4f}  "
                f"{row['epochs_mean']:>6.1f}  {row['parameters']:>10,}  {row['seconds_mean']:>7.1f}"
            )
        return "\n".join(lines)

    def plot(self):
        """Each run's test accuracy (dots) and each candidate's mean ± std (bar).

        Returns:
            The matplotlib figure.
        """
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(6.5, 3.5))
        for position, row in enumerate(self.summary()):
            accuracies = self.accuracies(row["label"])
            axes.scatter(np.full(len(accuracies), position), accuracies, color="tab:blue", alpha=0.6, zorder=3)
            axes.errorbar(position + 0.15, row["test_accuracy_mean"], yerr=row["test_accuracy_std"],
                          fmt="s", color="black", capsize=5, zorder=3)
        axes.set_xticks(range(len(self.labels)), self.labels)
        axes.set_xlim(-0.5, len(self.labels) - 0.5)
        axes.set_ylabel("test accuracy")
        axes.set_title(f"{len(self.protocol['seeds'])} seeds per candidate: runs (dots), mean ± std (squares)")
        axes.grid(axis="y", alpha=0.3)
        figure.tight_layout()
        return figure


def compare_over_seeds(
    candidates: Mapping[str, Mapping[str, Any]],
    *,
    kind: str = "mlp",
    seeds: Sequence[int] = (0, 1, 2),
    splits: data.Splits | None = None,
    num_epochs: int | None = None,
    early_stopping_patience: int | None = -1,
    progress: bool = True,
) -> SeedComparison:
    """Train each candidate with each seed under one protocol and test it.

    A fair comparison of configurations: every run trains on the same training
    split, stops early on the same validation split (keeping its best weights),
    gets the same maximum epochs and patience, and is tested on the same test
    split; only the hyperparameters and the seed differ.

    Introduced in ``03_tuning.ipynb``.

    Args:
        candidates: ``{label: params}``, ``params`` as in a trial
            (:func:`aideploy.tune.hyperparameters` turns them into a model).
        kind: ``"mlp"`` or ``"cnn"``.
        seeds: Seeds of weights, shuffling and dropout; every candidate gets each.
        splits: Data (default: :func:`aideploy.data.load_splits`).
        num_epochs: Maximum epochs (default: :func:`aideploy.train.default_settings`'s).
        early_stopping_patience: Epochs without a better validation loss before
            stopping; ``None`` trains every epoch; default (``-1``): the one of
            :func:`aideploy.train.default_settings`.
        progress: Print one line a run.

    Returns:
        The :class:`SeedComparison`.

    Raises:
        ConfigError: No candidate or seed, a duplicate seed, or invalid parameters.
    """
    if not candidates:
        raise ConfigError("give at least one candidate: {label: params}.")
    seeds = [int(seed) for seed in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"give one or more distinct seeds, got {seeds}.")
    built = {label: hyperparameters(kind, params) for label, params in candidates.items()}
    defaults = train.default_settings(kind)
    num_epochs = num_epochs if num_epochs is not None else defaults.num_epochs
    patience = defaults.early_stopping_patience if early_stopping_patience == -1 else early_stopping_patience
    splits = splits if splits is not None else data.load_splits(kind)
    rows = []
    for label, (build_arguments, batch_size) in built.items():
        for seed in seeds:
            keras.backend.clear_session()
            train.set_seed(seed)
            model = models.build(kind, **build_arguments)
            settings = train.TrainSettings(
                num_epochs=num_epochs, batch_size=batch_size, early_stopping_patience=patience, seed=seed, verbose=0
            )
            fitted = train.fit(model, splits, settings)
            test_report, _ = evaluate.evaluate_model(fitted.model, splits.x_test, splits.y_test, splits.class_names)
            val_report, _ = evaluate.evaluate_model(fitted.model, splits.x_val, splits.y_val, splits.class_names)
            row = {
                "label": label,
                "seed": seed,
                "test_accuracy": round(float(test_report.accuracy), 6),
                "val_accuracy": round(float(val_report.accuracy), 6),
                "epochs_run": fitted.epochs_run,
                "parameters": models.count_parameters(fitted.model),
                "seconds": round(fitted.seconds, 2),
                "params": dict(candidates[label]),
            }
            rows.append(row)
            if progress:
                print(
                    f"{label:<24} seed {seed}: test accuracy {row['test_accuracy']:.4f}, "
                    f"{row['epochs_run']} epochs, {row['seconds']:.1f} s",
                    flush=True,
                )
    protocol = {
        "kind": kind,
        "max_epochs": num_epochs,
        "early_stopping_patience": patience,
        "train_images": len(splits.x_train),
        "val_images": len(splits.x_val),
        "test_images": len(splits.x_test),
        "seeds": seeds,
    }
    return SeedComparison(rows=rows, protocol=protocol)
