"""KServe V2 / Open Inference Protocol REST routes, with the binary tensor data extension.

Notebook: ``notebooks/07_serving.ipynb``.

The routes and bodies follow the protocol's REST specification (the one
KServe, Triton, MLServer and OpenVINO Model Server speak), so their clients
(``tritonclient.http``, KServe's ``InferenceRESTClient``, plain ``curl``) work
unchanged:

- ``GET /v2`` server metadata; ``GET /v2/health/live``, ``GET /v2/health/ready``
  (200 when true, 503 when not, with ``{"live": ...}`` / ``{"ready": ...}``);
- ``GET /v2/models/{name}[/versions/{version}]`` model metadata and
  ``.../ready``;
- ``POST /v2/models/{name}[/versions/{version}]/infer``: a JSON request with
  ``inputs`` (``name``, ``shape``, ``datatype``, ``data`` flat or nested,
  ``parameters``), optional ``outputs`` and ``id``, answered with
  ``model_name``, ``model_version``, ``id`` and ``outputs``.

Binary tensor data: when the request carries ``Inference-Header-Content-Length``,
the body is that many bytes of JSON followed by the raw little-endian tensors of
the inputs that have ``parameters.binary_data_size``, in order. Outputs asked for
with ``parameters.binary_data`` (or every output, with the request parameter
``binary_data_output``) come back the same way. Errors are ``{"error": "..."}``
with a 4xx or 503 status.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

import aideploy
from aideploy.errors import ModelInputError
from aideploy.serve.server import ModelServer, ServedModel, array_from_json, check_input, read_body
from aideploy.serve.tensor_json import parse_tensor_json

HEADER_LENGTH = "Inference-Header-Content-Length"
#: The header that carries a request's id in the answers of the protocols without an ``id``
#: field, when the prediction log is on (see :mod:`aideploy.serve.monitoring`).
REQUEST_ID_HEADER = "Aideploy-Request-Id"
PROTOCOL = "v2"


def json_response(payload: Any, status: int = 200) -> Response:
    """A JSON answer serialised with orjson (NumPy arrays included)."""
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


def error_response(status: int, message: str) -> Response:
    """The protocol's error body: ``{"error": message}``."""
    return json_response({"error": message}, status)


def router(server: ModelServer) -> APIRouter:
    """The V2 routes of ``server``.

    Introduced in ``07_serving.ipynb``.
    """
    routes = APIRouter()

    # Inference routes first (the router tries routes in order) and as plain Starlette
    # routes: FastAPI's parameter injection costs more per request than a small model's inference.
    async def infer(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        return await server.track(
            PROTOCOL, name, version, lambda model: _infer(server, model, request), error_response
        )

    routes.add_route("/v2/models/{name}/infer", infer, methods=["POST"])
    routes.add_route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"])

    @routes.get("/v2")
    async def server_metadata() -> Response:
        return json_response(
            {"name": "aideploy", "version": aideploy.__version__, "extensions": ["binary_tensor_data"]}
        )

    @routes.get("/v2/health/live")
    async def live() -> Response:
        return json_response({"live": True})

    @routes.get("/v2/health/ready")
    async def ready() -> Response:
        is_ready = server.ready
        return json_response({"ready": is_ready}, 200 if is_ready else 503)

    @routes.get("/v2/models/{name}")
    async def model_metadata(name: str) -> Response:
        return answer(lambda: _metadata(server, server.lookup(name)))

    @routes.get("/v2/models/{name}/versions/{version}")
    async def version_metadata(name: str, version: str) -> Response:
        return answer(lambda: _metadata(server, server.lookup(name, version)))

    @routes.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        return answer(lambda: _ready(server, server.lookup(name)))

    @routes.get("/v2/models/{name}/versions/{version}/ready")
    async def version_ready(name: str, version: str) -> Response:
        return answer(lambda: _ready(server, server.lookup(name, version)))

    return routes


def answer(build: Any) -> Response:
    """Call ``build()`` for a response; turn an expected error into its status and error body.

    Both REST protocols answer errors as ``{"error": message}``, so the TensorFlow
    Serving routes use this too.
    """
    from aideploy.errors import AideployError

    try:
        return build()
    except AideployError as error:
        return error_response(error.http_status, str(error))


def _metadata(server: ModelServer, model: ServedModel) -> Response:
    versions = sorted(server.models[model.name])
    payload: dict[str, Any] = {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime_onnx",
    }
    if model.entry is not None:
        payload["inputs"] = [_tensor_metadata(entry) for entry in model.entry.signature["inputs"]]
        payload["outputs"] = [_tensor_metadata(entry) for entry in model.entry.signature["outputs"]]
    else:  # still loading or broken: the protocol's fields, empty
        payload["inputs"], payload["outputs"] = [], []
    return json_response(payload)


def _tensor_metadata(entry: dict[str, Any]) -> dict[str, Any]:
    from aideploy import registry

    return {
        "name": entry["name"],
        "datatype": registry.DATATYPES[entry["dtype"]][1],
        "shape": [-1 if d is None else int(d) for d in entry["shape"]],
    }


def _ready(server: ModelServer, model: ServedModel) -> Response:
    is_ready = model.ready and not server.stopping
    return json_response({"name": model.name, "ready": is_ready}, 200 if is_ready else 503)


async def _infer(server: ModelServer, model: ServedModel, request: Request) -> Response:
    started = time.perf_counter()
    body = await read_body(request, server.settings.max_body_bytes)
    header_text = request.headers.get(HEADER_LENGTH)
    if header_text is None:
        header, binary = body, b""
    else:
        if not header_text.isdigit() or int(header_text) > len(body):
            raise ModelInputError(
                f"{HEADER_LENGTH} must be the byte length of the JSON part of the body "
                f"(0..{len(body)}), got {header_text!r}."
            )
        header, binary = body[: int(header_text)], body[int(header_text) :]
    payload = parse_tensor_json(header)
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ModelInputError(f'"id" must be a string, got {type(request_id).__name__}.')
    parameters = _parameters(payload, "the request")
    x = _decode_input(server, model, payload, binary)
    wanted = _requested_outputs(model, payload, bool(parameters.get("binary_data_output", False)))
    y = await model.batcher.submit(x)
    request_id = server.log_prediction(model, request_id, x, y, started)
    response: dict[str, Any] = {"model_name": model.name, "model_version": str(model.version)}
    if request_id is not None:
        response["id"] = request_id
    datatype = server.datatype(y.dtype)
    chunks = []
    outputs = []
    for name, as_binary in wanted:
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(y.shape)}
        if as_binary:
            raw = np.ascontiguousarray(y, dtype=y.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = np.ascontiguousarray(y).ravel()
        outputs.append(entry)
    response["outputs"] = outputs
    encoded = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Response(encoded, 200, media_type="application/json")
    return Response(
        encoded + b"".join(chunks),
        200,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(encoded))},
    )


def _parameters(container: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = container.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ModelInputError(f'"parameters" of {what} must be a JSON object, got {type(parameters).__name__}.')
    return parameters


def _decode_input(server: ModelServer, model: ServedModel, payload: dict[str, Any], binary: bytes) -> np.ndarray:
    inputs = payload.get("inputs")
    expected = model.predictor.input
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ModelInputError(
            f'"inputs" must be a list of one tensor object for model {model.name!r} (its input {expected.name!r}).'
        )
    tensor = inputs[0]
    name = tensor.get("name")
    if name != expected.name:
        raise ModelInputError(f"unexpected input {name!r}: model {model.name!r} has one input, {expected.name!r}.")
    datatype = server.datatype(expected.dtype)
    if tensor.get("datatype") != datatype:
        raise ModelInputError(
            f"input {name!r} has datatype {tensor.get('datatype')!r}, but the model expects {datatype}."
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ModelInputError(f'"shape" of input {name!r} must be a list of whole numbers >= 0, got {shape!r}.')
    count = math.prod(shape)
    dtype = model.input_dtype
    parameters = _parameters(tensor, f"input {name!r}")
    what = f"input {name!r}"
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ModelInputError(f"binary_data_size of input {name!r} must be a whole number, got {size!r}.")
        if size != len(binary):
            raise ModelInputError(
                f"input {name!r} declares binary_data_size {size}, but {len(binary)} bytes follow the JSON header."
            )
        if size != count * dtype.itemsize:
            raise ModelInputError(
                f"input {name!r} of shape {shape} and datatype {datatype} needs {count * dtype.itemsize} bytes, "
                f"got binary_data_size {size}."
            )
        array = np.frombuffer(binary, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)
    else:
        if binary:
            raise ModelInputError(f"{len(binary)} bytes of binary data follow the JSON, but no input declares them.")
        if "data" not in tensor:
            raise ModelInputError(f'input {name!r} has no "data" (nor a binary_data_size parameter).')
        array = array_from_json(tensor["data"], dtype, what)
        if array.size != count:
            raise ModelInputError(
                f"input {name!r} has shape {shape} ({count} values), but its data holds {array.size}."
            )
        array = array.reshape(shape)
    return check_input(model, array, what)


def _requested_outputs(model: ServedModel, payload: dict[str, Any], binary_default: bool) -> list[tuple[str, bool]]:
    output_name = model.predictor.output.name
    requested = payload.get("outputs")
    if requested is None or requested == []:
        return [(output_name, binary_default)]
    if not isinstance(requested, list) or not all(isinstance(item, dict) for item in requested):
        raise ModelInputError('"outputs" must be a list of objects with a "name".')
    wanted = []
    for item in requested:
        if item.get("name") != output_name:
            raise ModelInputError(
                f"unknown output {item.get('name')!r}: model {model.name!r} has one output, {output_name!r}."
            )
        flag = _parameters(item, f"output {output_name!r}").get("binary_data", binary_default)
        wanted.append((output_name, bool(flag)))
    return wanted
