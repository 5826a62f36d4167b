"""Stage 02, models: the 784-64-64-10 MLP and a small CNN, built with tf-keras.

Notebook: ``notebooks/02_training.ipynb``.

Models are built with ``tf_keras`` (the Keras 2 API), never Keras 3, because
tensorflow-model-optimization (pruning, quantization-aware training) only accepts
tf-keras models.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from aideploy.backend import keras, native_stderr_silenced
from aideploy.data import IMAGE_SHAPE, NUM_FEATURES
from aideploy.errors import ConfigError, ModelInputError

MODEL_KINDS = ("mlp", "cnn")
NUM_CLASSES = 10


def build_mlp(
    *,
    hidden_units: Sequence[int] = (64, 64),
    dropout: float = 0.0,
    learning_rate: float = 1e-3,
    num_classes: int = NUM_CLASSES,
) -> keras.Model:
    """The seed model: Dense 64 relu, Dense 64 relu, Dense 10 softmax; Adam; sparse CE.

    With the defaults this is exactly the classic 784-64-64-10 MLP. Introduced in
    ``02_training.ipynb``; ``tune`` varies the keyword arguments.

    Args:
        hidden_units: Units of each hidden Dense layer (relu).
        dropout: Dropout rate after each hidden layer (0 disables it).
        learning_rate: Adam's learning rate.
        num_classes: Size of the softmax output.

    Returns:
        A compiled tf-keras model taking (N, 784) float32 input.

    Raises:
        ConfigError: A hidden layer has no units, the dropout rate is not in [0, 1)
            or the learning rate is not positive.
    """
    _check_architecture(hidden_units, dropout, learning_rate)
    inputs = keras.Input(shape=(NUM_FEATURES,), name="input")
    hidden = inputs
    for index, units in enumerate(hidden_units, start=1):
        hidden = keras.layers.Dense(units, activation="relu", name=f"dense_{index}")(hidden)
        if dropout:
            hidden = keras.layers.Dropout(dropout, name=f"dropout_{index}")(hidden)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(hidden)
    model = keras.Model(inputs, outputs, name="mlp")
    return compile_model(model, learning_rate)


def build_cnn(
    *,
    filters: Sequence[int] = (32, 64),
    dense_units: int = 128,
    dropout: float = 0.3,
    learning_rate: float = 1e-3,
    num_classes: int = NUM_CLASSES,
) -> keras.Model:
    """A small CNN: (Conv 3x3 relu, MaxPool 2x2) per entry of ``filters``, Dense, softmax.

    Introduced in ``02_training.ipynb``.

    Args:
        filters: Filters of each convolution block.
        dense_units: Units of the Dense layer before the output.
        dropout: Dropout rate before the Dense layers.
        learning_rate: Adam's learning rate.
        num_classes: Size of the softmax output.

    Returns:
        A compiled tf-keras model taking (N, 28, 28, 1) float32 input.

    Raises:
        ConfigError: An invalid layer size, dropout rate or learning rate.
    """
    _check_architecture(list(filters) + [dense_units], dropout, learning_rate)
    inputs = keras.Input(shape=(*IMAGE_SHAPE, 1), name="input")
    hidden = inputs
    for index, count in enumerate(filters, start=1):
        hidden = keras.layers.Conv2D(
            count, 3, padding="same", activation="relu", name=f"conv_{index}"
        )(hidden)
        hidden = keras.layers.MaxPooling2D(2, name=f"pool_{index}")(hidden)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    if dropout:
        hidden = keras.layers.Dropout(dropout, name="dropout")(hidden)
    hidden = keras.layers.Dense(dense_units, activation="relu", name="dense")(hidden)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(hidden)
    model = keras.Model(inputs, outputs, name="cnn")
    return compile_model(model, learning_rate)


def build(kind: str, **hyperparameters: Any) -> keras.Model:
    """Build a model by kind (``"mlp"`` or ``"cnn"``) with keyword hyperparameters.

    Introduced in ``02_training.ipynb``; ``train`` and ``tune`` build through it.

    Args:
        kind: ``"mlp"`` or ``"cnn"``.
        **hyperparameters: Keyword arguments of :func:`build_mlp` or :func:`build_cnn`.

    Returns:
        A compiled tf-keras model.

    Raises:
        ConfigError: Unknown kind, an unknown hyperparameter or an invalid value.
    """
    builders = {"mlp": build_mlp, "cnn": build_cnn}
    if kind not in builders:
        raise ConfigError(f"unknown model kind {kind!r}: use one of {', '.join(MODEL_KINDS)}.")
    builder = builders[kind]
    accepted = set(inspect.signature(builder).parameters)
    unknown = sorted(set(hyperparameters) - accepted)
    if unknown:
        raise ConfigError(
            f"the {kind} model has no hyperparameter {', '.join(map(repr, unknown))}: "
            f"use {', '.join(sorted(accepted))}."
        )
    return builder(**hyperparameters)


def _check_architecture(units: Sequence[int], dropout: float, learning_rate: float) -> None:
    # These reach us from search spaces and command lines, so the messages say
    # which value to change rather than letting Keras fail deep inside a layer.
    if any(int(u) < 1 for u in units):
        raise ConfigError(
            f"every layer needs at least 1 unit, got {list(units)}: choose sizes of 1 or more."
        )
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(
            f"dropout must be in [0, 1), got {dropout}: a rate of 1 drops every unit; "
            "choose e.g. 0.0-0.5 (in a search space, keep the upper bound below 1)."
        )
    if not learning_rate > 0:
        raise ConfigError(
            f"learning_rate must be positive, got {learning_rate}: choose e.g. 1e-3."
        )


def compile_model(model: keras.Model, learning_rate: float) -> keras.Model:
    """Compile for training: Adam at ``learning_rate``, sparse cross-entropy, accuracy.

    Every model aideploy trains or fine-tunes is compiled here. Introduced in
    ``02_training.ipynb``.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def check_input(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Check that ``x`` fits the model's input; return it as float32.

    Raises:
        ModelInputError: The shape does not match, with a hint on how to fix it.
    """
    x = np.asarray(x)
    expected = tuple(model.input_shape[1:])
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        hint = ""
        if expected == (NUM_FEATURES,):
            hint = ": flatten the images with data.flatten(x) or data.preprocess(x, 'mlp')"
        elif expected == (*IMAGE_SHAPE, 1):
            hint = ": reshape the images with data.to_image_tensor(x) or data.preprocess(x, 'cnn')"
        raise ModelInputError(
            f"expected input of shape (N, {', '.join(map(str, expected))}) for model "
            f"{model.name!r}, got {x.shape}{hint}."
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ModelInputError(
            f"expected float pixels in [0, 1], got dtype {x.dtype}: scale with data.scale(x)."
        )
    return x.astype(np.float32, copy=False)


def predict_probabilities(model: keras.Model, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities for ``x`` (checked with :func:`check_input`), shape (N, classes)."""
    x = check_input(model, x)
    # predict builds a tf.data pipeline, which logs a harmless native error line.
    with native_stderr_silenced():
        return model.predict(x, batch_size=batch_size, verbose=0)


def count_parameters(model: keras.Model) -> int:
    """Number of weights in the model (trainable and not).

    Introduced in ``02_training.ipynb``.

    Args:
        model: A tf-keras model.

    Returns:
        The number of weights and biases.
    """
    return int(model.count_params())


def count_multiply_adds(model: keras.Model) -> int:
    """Multiply-adds one image costs in the model's Dense and Conv2D layers.

    Introduced in ``02_training.ipynb``: the inference cost of a model, which the
    training time does not tell. A Dense layer with ``n`` inputs and ``m`` units
    costs ``n * m``; a Conv2D layer costs ``out_height * out_width * filters *
    kernel_height * kernel_width * in_channels``. Biases, activations and pooling
    (a few additions or comparisons per output) are left out, as is usual.

    Args:
        model: A built tf-keras model.

    Returns:
        Multiply-adds per image.

    Raises:
        ConfigError: The model holds a layer with weights of a kind not counted here.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            total += int(layer.input_shape[-1]) * int(layer.units)
        elif isinstance(layer, keras.layers.Conv2D):
            _, out_height, out_width, filters = layer.output_shape
            kernel_height, kernel_width, in_channels, _ = layer.kernel.shape
            total += int(out_height * out_width * filters * kernel_height * kernel_width * in_channels)
        elif layer.weights:
            raise ConfigError(
                f"cannot count the multiply-adds of layer {layer.name!r} ({type(layer).__name__}): "
                "only Dense and Conv2D layers are counted."
            )
    return total
