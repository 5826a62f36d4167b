"""The seed MLP, the CNN and their input checks."""

import numpy as np
import pytest

from aideploy import models
from aideploy.errors import ModelInputError


def test_mlp_is_exactly_the_seed_model():
    model = models.build_mlp()
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert [layer.units for layer in dense] == [64, 64, 10]
    assert [layer.activation.__name__ for layer in dense] == ["relu", "relu", "softmax"]
    assert model.input_shape == (None, 784) and model.output_shape == (None, 10)
    # 784*64+64 + 64*64+64 + 64*10+10
    assert models.count_parameters(model) == 55050
    assert model.optimizer.__class__.__name__ == "Adam"
    assert model.loss == "sparse_categorical_crossentropy"


def test_cnn_shapes():
    model = models.build_cnn()
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    assert any(layer.__class__.__name__ == "Conv2D" for layer in model.layers)


def test_build_by_kind_and_bad_hyperparameters():
    assert models.build("mlp", hidden_units=(32,)).count_params() == 784 * 32 + 32 + 32 * 10 + 10
    with pytest.raises(ValueError, match="unknown model kind"):
        models.build("transformer")
    with pytest.raises(ValueError, match="at least 1 unit"):
        models.build_mlp(hidden_units=(0,))
    with pytest.raises(ValueError, match="dropout"):
        models.build_cnn(dropout=1.5)


def test_wrong_input_shape_explains_the_fix():
    model = models.build_mlp()
    with pytest.raises(ModelInputError, match=r"expected input of shape \(N, 784\).*got \(3, 28, 28\).*data.flatten"):
        models.check_input(model, np.zeros((3, 28, 28), np.float32))
    cnn = models.build_cnn()
    with pytest.raises(ModelInputError, match="data.to_image_tensor"):
        models.predict_probabilities(cnn, np.zeros((3, 784), np.float32))
    with pytest.raises(ModelInputError, match="dtype uint8"):
        models.check_input(model, np.zeros((3, 784), np.uint8))


def test_probabilities_sum_to_one():
    model = models.build_mlp()
    probabilities = models.predict_probabilities(model, np.random.default_rng(0).random((4, 784)))
    assert probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
