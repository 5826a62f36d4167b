"""The best model: retrain it, and compare candidates fairly over seeds (imports TensorFlow).

Introduced in ``03_tuning.ipynb``.
"""

from __future__ import annotations

import os
from dataclasses import replace
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
