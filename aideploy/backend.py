"""Import TensorFlow and tf-keras once, quietly, with the Keras 2 API active.

Stage modules that need TensorFlow import it from here (``from aideploy.backend
import tf, keras``) rather than directly, for two reasons:

- :mod:`aideploy` (imported first, as the package) has already set
  ``TF_USE_LEGACY_KERAS=1``, so ``tf.keras`` is tf-keras.
- TensorFlow 2.21's native code logs through Abseil before Abseil's logging is
  initialised, which ignores ``TF_CPP_MIN_LOG_LEVEL`` and prints a screenful of
  "I0000 ... cudart_stub" lines on every import. Those lines go to the process's
  file descriptor 2, so they are silenced here by pointing that descriptor at
  ``/dev/null`` for the duration of the import only (:func:`aideploy.quiet.native_stderr_silenced`,
  re-exported here). Python errors raised by the import still propagate normally.
"""

from __future__ import annotations

from aideploy.errors import ConfigError
from aideploy.quiet import native_stderr_silenced

try:
    with native_stderr_silenced():
        import tensorflow as tf
        import tf_keras as keras
except ModuleNotFoundError as missing:
    # A serving install (`pip install 'aideploy[serve]'`) has no TensorFlow on purpose.
    raise ConfigError(
        f"this step needs TensorFlow ({missing.name} is not installed): install the training stack "
        "with pip install 'aideploy[train]'. Serving and publishing an ONNX model do not need it."
    ) from None

with native_stderr_silenced():
    # Creating the first tensor initialises the devices; on machines without a
    # GPU that logs a CUDA error, which is noise here.
    tf.constant(0)

tf.get_logger().setLevel("ERROR")

__all__ = ["keras", "native_stderr_silenced", "tf"]
