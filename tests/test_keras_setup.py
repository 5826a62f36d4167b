"""Importing aideploy selects the Keras 2 API (tf-keras) for TensorFlow."""

import os
import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess:
    # A fresh interpreter without the switch that importing aideploy in this
    # process has already set.
    environment = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=environment
    )


def test_stage_modules_select_tf_keras_quietly():
    """One TensorFlow process checks the switch, the models it builds and a quiet import."""
    result = _run(
        "import aideploy, os; import aideploy.train; from aideploy import models;"
        "import tensorflow as tf, tf_keras;"
        "print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.Model is tf_keras.Model,"
        " isinstance(models.build_mlp(), tf_keras.Model), isinstance(models.build_cnn(), tf_keras.Model))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "True", "True", "True"]
    # The backend silences TensorFlow's start-up chatter.
    assert "cudart_stub" not in result.stderr
    assert "absl::InitializeLog" not in result.stderr


def test_importing_aideploy_does_not_import_tensorflow():
    result = _run("import sys, aideploy, aideploy.config, aideploy.data; print('tensorflow' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_keras3_already_active_gives_a_clear_error():
    result = _run("import tensorflow as tf; tf.keras.Sequential; import aideploy")
    assert result.returncode != 0
    assert "KerasSetupError" in result.stderr
    assert "import aideploy before TensorFlow" in result.stderr
