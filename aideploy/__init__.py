"""aideploy: a Jupyter-first tour of deploying a Keras model.

Importing the package is cheap: it only makes sure that TensorFlow, when a stage
module imports it later, uses the Keras 2 API (``tf-keras``). That is what
tensorflow-model-optimization needs, and it keeps ``tf.keras`` in a reader's
notebook the same Keras as ``tf_keras`` and the package's own models.

Stage modules (``aideploy.data``, ``aideploy.train``, ...) are imported on
demand: ``from aideploy import data``.
"""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"

# TensorFlow reads these when it is imported (and, for the Keras switch, when
# ``tf.keras`` is first touched), so they must be set before any stage module
# imports it. ``setdefault`` leaves a reader's explicit choice alone.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"


class KerasSetupError(RuntimeError):
    """TensorFlow was imported with Keras 3 active before aideploy could switch it."""


def _check_keras_not_already_keras3() -> None:
    """Fail early when ``tf.keras`` was already bound to Keras 3.

    If a notebook ran ``import tensorflow as tf; tf.keras...`` before importing
    aideploy, TensorFlow has already resolved ``tf.keras`` to Keras 3 and setting
    the environment variable now changes nothing; models built there would be
    rejected by tensorflow-model-optimization much later with an obscure error.
    """
    keras_module = sys.modules.get("keras")
    tensorflow_module = sys.modules.get("tensorflow")
    if tensorflow_module is None or keras_module is None:
        return
    keras_version = str(getattr(keras_module, "__version__", ""))
    if not keras_version.startswith("3"):
        return
    # Keras 3 is loaded; it matters only if tf.keras already points at it.
    resolved = getattr(tensorflow_module, "keras", None)
    resolved_version = str(getattr(resolved, "__version__", ""))
    if resolved_version.startswith("3"):
        raise KerasSetupError(
            "TensorFlow was imported with Keras 3 active (tf.keras is Keras "
            f"{resolved_version}), but aideploy needs the Keras 2 API (tf-keras) "
            "because tensorflow-model-optimization only accepts tf-keras models. "
            "Restart the kernel and import aideploy before TensorFlow, or set "
            "TF_USE_LEGACY_KERAS=1 in the environment before starting Python."
        )


_check_keras_not_already_keras3()
