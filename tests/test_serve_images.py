"""The image route: PNG or JPEG in, 28x28 grayscale as in training, class name and probabilities out."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from _serve_models import build_image_model, publish_tiny_repository, serving
from PIL import Image

from aideploy import registry
from aideploy.data import FASHION_MNIST_CLASSES
from aideploy.errors import ModelInputError
from aideploy.serve.images import image_to_pixels


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-images")
    repo = publish_tiny_repository(root / "repo", root / "exports")
    registry.publish(build_image_model(root / "exports" / "image.onnx"), repo, "fashion")
    return repo


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def test_image_to_pixels_matches_the_training_format():
    pixels = (np.arange(784) % 256).astype(np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(image_to_pixels(encode(pixels, "PNG")), pixels)
    np.testing.assert_array_equal(image_to_pixels(encode(pixels, "PNG"), invert=True), 255 - pixels)
    rgb = np.stack([pixels] * 3, axis=-1)
    np.testing.assert_array_equal(image_to_pixels(encode(rgb, "PNG")), pixels)
    large = np.full((56, 40), 200, dtype=np.uint8)
    resized = image_to_pixels(encode(large, "PNG"))
    assert resized.shape == (28, 28) and resized.dtype == np.uint8
    np.testing.assert_array_equal(resized, np.full((28, 28), 200, dtype=np.uint8))
    with pytest.raises(ModelInputError, match="PNG or JPEG"):
        image_to_pixels(b"not an image")
    with pytest.raises(ModelInputError, match="PNG or JPEG"):
        image_to_pixels(encode(pixels, "BMP"))


def test_classify_an_image(repo):
    white = np.full((28, 28), 255, dtype=np.uint8)

    async def scenario():
        async with serving(repo) as (client, _):
            png = await client.post("/images/fashion", content=encode(white, "PNG"))
            jpeg = await client.post("/images/fashion/versions/1?invert=true", content=encode(white, "JPEG"))
            garbage = await client.post("/images/fashion", content=b"\x89PNG but not really")
            wrong_model = await client.post("/images/tiny", content=encode(white, "PNG"))
            unknown = await client.post("/images/nope", content=encode(white, "PNG"))
            return png, jpeg, garbage, wrong_model, unknown

    png, jpeg, garbage, wrong_model, unknown = asyncio.run(scenario())
    body = png.json()
    assert (body["model_name"], body["model_version"]) == ("fashion", "1")
    assert (body["class_index"], body["class_name"]) == (9, FASHION_MNIST_CLASSES[9])
    assert list(body["probabilities"]) == list(FASHION_MNIST_CLASSES)
    logits = np.arange(10, dtype=np.float64)
    # float32 sums 784 products per logit: agreement to about 1e-5.
    np.testing.assert_allclose(list(body["probabilities"].values()), np.exp(logits) / np.exp(logits).sum(), atol=5e-5)
    inverted = jpeg.json()["probabilities"]
    np.testing.assert_allclose(list(inverted.values()), np.full(10, 0.1), atol=0.01)
    assert garbage.status_code == 400 and "PNG or JPEG" in garbage.json()["error"]
    assert wrong_model.status_code == 400 and "not a 28x28 image" in wrong_model.json()["error"]
    assert unknown.status_code == 404
