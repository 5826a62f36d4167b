"""The Optuna objective: build, train and score one configuration (imports TensorFlow).

Introduced in ``03_tuning.ipynb``. The rest of the subpackage imports this module
only when a trial is about to train, so that settings, spaces and storage URLs are
checked without loading TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from aideploy import data, models, train
from aideploy.backend import keras, tf
from aideploy.tune._optuna import optuna
from aideploy.tune.settings import TuneSettings
from aideploy.tune.space import hyperparameters


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
    settings: TuneSettings, splits: data.Splits, *, run_id: str = "", worker: int | None = None
) -> Callable[[optuna.Trial], float | tuple[float, float]]:
    """The Optuna objective: build, train and score one configuration.

    A trial trains ``settings.epochs()`` epochs with the same seed (so trials
    differ only by their hyperparameters) and returns the best validation
    accuracy of its epochs, plus the cost when the study has two objectives.

    Introduced in ``03_tuning.ipynb``.

    Args:
        settings: The run's settings.
        splits: Data for the model kind (:func:`aideploy.data.load_splits`).
        run_id: Recorded on each trial, so a failed run can find its own trials.
        worker: Index of the worker process running the trials, recorded on each
            trial as the ``worker`` attribute (``None``: this process, not recorded).

    Returns:
        ``objective(trial)``.
    """
    seed = settings.resolved_seed()
    num_epochs = settings.epochs()

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        params = settings.space.suggest(trial)
        if run_id:
            trial.set_user_attr("run_id", run_id)
        if worker is not None:
            trial.set_user_attr("worker", worker)
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
        trial.set_user_attr("train_images", len(splits.x_train))
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
