"""The seed MLP, the CNN and their input checks."""

import numpy as np
import pytest

from aideploy import models
from aideploy.errors import AideployError, ConfigError, ModelInputError


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


def test_cnn_shapes_and_where_its_weights_are():
    model = models.build_cnn()
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    # conv 3*3*1*32+32, conv 3*3*32*64+64, dense (7*7*64)*128+128, output 128*10+10
    assert models.count_parameters(model) == 320 + 18_496 + 401_536 + 1_290 == 421_642
    share = model.get_layer("dense").count_params() / models.count_parameters(model)
    assert share == pytest.approx(0.952, abs=0.001)


def test_multiply_adds_per_image():
    # MLP: 784*64 + 64*64 + 64*10.
    assert models.count_multiply_adds(models.build_mlp()) == 54_912
    assert models.count_multiply_adds(models.build_mlp(hidden_units=(10,))) == 784 * 10 + 10 * 10
    # CNN: 28*28*32*(3*3*1) + 14*14*64*(3*3*32) + 3136*128 + 128*10.
    assert models.count_multiply_adds(models.build_cnn()) == 225_792 + 3_612_672 + 401_408 + 1_280
    # A third block halves the map again (7 -> 3): the convolution adds, the Dense layer shrinks.
    deeper = models.count_multiply_adds(models.build_cnn(filters=(32, 64, 64)))
    assert deeper == 225_792 + 3_612_672 + 7 * 7 * 64 * 9 * 64 + 3 * 3 * 64 * 128 + 1_280


def test_multiply_adds_refuse_layers_they_cannot_count():
    from aideploy.backend import keras

    model = keras.Sequential([keras.Input((784,)), keras.layers.Embedding(10, 4)])
    with pytest.raises(ConfigError, match="only Dense and Conv2D"):
        models.count_multiply_adds(model)


@pytest.mark.parametrize(
    ("kind", "hyperparameters", "message"),
    [
        ("transformer", {}, "unknown model kind 'transformer': use one of mlp, cnn"),
        ("mlp", {"hidden_units": (0,)}, "at least 1 unit"),
        ("mlp", {"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0.*upper bound below 1"),
        ("cnn", {"dropout": 1.5}, "dropout must be in"),
        ("cnn", {"learning_rate": 0.0}, "learning_rate must be positive"),
        ("mlp", {"units": 32}, "no hyperparameter 'units': use"),
    ],
)
def test_bad_hyperparameters_raise_config_errors(kind, hyperparameters, message):
    with pytest.raises(ConfigError, match=message) as error:
        models.build(kind, **hyperparameters)
    # The command line turns AideployErrors into one paragraph and exit status 2.
    assert isinstance(error.value, AideployError)


def test_build_by_kind():
    assert models.build("mlp", hidden_units=(32,)).count_params() == 784 * 32 + 32 + 32 * 10 + 10


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
