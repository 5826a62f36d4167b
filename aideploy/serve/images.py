"""The image route: post a PNG or JPEG, get the class name and the probabilities.

Notebook: ``notebooks/07_serving.ipynb``.

``POST /images/{name}[/versions/{version}]`` with the image file as the body
(``Content-Type: image/png`` or ``image/jpeg``; ``curl --data-binary @shirt.png``).
The image becomes what the training data is: 28x28 grayscale uint8 pixels
(converted with Pillow to ``L`` mode, resized with Lanczos filtering when it
is not 28x28 already), then scaled to [0, 1] and shaped for the model (784
values for the MLP, 28x28x1 for the CNN) unless the model takes uint8 pixels
itself. Fashion-MNIST shows light garments on a black background:
``?invert=true`` turns a dark-on-light photo around first. The answer is
``{"model_name", "model_version", "class_index", "class_name", "probabilities"}``;
errors are ``{"error": ...}`` like the other routes.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from aideploy.data import FASHION_MNIST_CLASSES, IMAGE_SHAPE
from aideploy.errors import ModelInputError
from aideploy.serve.server import ModelServer, ServedModel, check_input, read_body
from aideploy.serve.v2 import error_response, json_response

PROTOCOL = "image"


def router(server: ModelServer) -> APIRouter:
    """The image routes of ``server``.

    Introduced in ``07_serving.ipynb``.
    """
    routes = APIRouter()

    @routes.post("/images/{name}")
    async def classify(name: str, request: Request) -> Response:
        return await server.track(PROTOCOL, name, None, lambda model: _classify(server, model, request), error_response)

    @routes.post("/images/{name}/versions/{version}")
    async def classify_version(name: str, version: str, request: Request) -> Response:
        return await server.track(
            PROTOCOL, name, version, lambda model: _classify(server, model, request), error_response
        )

    return routes


def image_to_pixels(content: bytes, *, invert: bool = False) -> np.ndarray:
    """Decode a PNG or JPEG into one 28x28 grayscale uint8 image, as the training images are.

    Introduced in ``07_serving.ipynb``.

    Args:
        content: The file's bytes.
        invert: Turn dark-on-light into light-on-dark (Fashion-MNIST's look).

    Returns:
        A ``(28, 28)`` uint8 array.

    Raises:
        ModelInputError: The bytes are not an image Pillow can read.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(content)) as image:
            if image.format not in ("PNG", "JPEG"):
                raise ModelInputError(f"expected a PNG or JPEG image, got {image.format or 'an unknown format'}.")
            gray = image.convert("L")
            if gray.size != (IMAGE_SHAPE[1], IMAGE_SHAPE[0]):
                gray = gray.resize((IMAGE_SHAPE[1], IMAGE_SHAPE[0]), Image.Resampling.LANCZOS)
            pixels = np.asarray(gray, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        if isinstance(error, ModelInputError):
            raise
        raise ModelInputError(f"the body is not a readable PNG or JPEG image ({error}).") from None
    return 255 - pixels if invert else pixels


def model_input(model: ServedModel, pixels: np.ndarray) -> np.ndarray:
    """One image's pixels shaped and typed for the model's input (a batch of one)."""
    trailing = tuple(model.predictor.input.shape[1:])
    if int(np.prod([d or 0 for d in trailing])) != pixels.size:
        raise ModelInputError(
            f"model {model.name!r} takes input of shape {list(trailing)} per example, not a 28x28 image."
        )
    dtype = model.input_dtype
    values = pixels.astype(np.float32) / 255.0 if dtype.kind == "f" else pixels
    return values.astype(dtype, copy=False).reshape(1, *trailing)


async def _classify(server: ModelServer, model: ServedModel, request: Request) -> Response:
    started = time.perf_counter()
    content = await read_body(request, server.settings.max_body_bytes)
    invert = request.query_params.get("invert", "false").lower() in ("1", "true", "yes")
    x = check_input(model, model_input(model, image_to_pixels(content, invert=invert)), "the image")
    y = await model.batcher.submit(x)
    request_id = server.log_prediction(model, None, x, y, started)
    (probabilities,) = y
    names = _class_names(len(probabilities))
    index = int(np.argmax(probabilities))
    payload: dict[str, Any] = {
        "model_name": model.name,
        "model_version": str(model.version),
        "class_index": index,
        "class_name": names[index],
        "probabilities": {name: float(p) for name, p in zip(names, probabilities)},
    }
    if request_id is not None:
        payload["id"] = request_id
    return json_response(payload)


def _class_names(num_classes: int) -> tuple[str, ...]:
    if num_classes == len(FASHION_MNIST_CLASSES):
        return tuple(FASHION_MNIST_CLASSES)
    return tuple(str(index) for index in range(num_classes))
