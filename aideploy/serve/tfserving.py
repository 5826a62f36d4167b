"""TensorFlow Serving REST routes: model status, metadata and ``:predict``.

Notebook: ``notebooks/07_serving.ipynb``.

- ``GET /v1/models/{name}[/versions/{version}]`` answers
  ``{"model_version_status": [{"version", "state", "status"}]}``;
- ``GET /v1/models/{name}[/versions/{version}]/metadata`` answers the
  ``serving_default`` signature in TF Serving's ``signature_def`` form;
- ``POST /v1/models/{name}[/versions/{version}]:predict`` takes the row
  format (``{"instances": [...]}``, each instance a value or
  ``{"input": value}``), answered with ``{"predictions": [...]}``, or the
  columnar format (``{"inputs": value}`` or ``{"inputs": {"input": value}}``),
  answered with ``{"outputs": ...}``.

Errors are ``{"error": "..."}`` with a 4xx or 503 status, as TF Serving sends them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from aideploy.errors import ModelInputError
from aideploy.serve.server import ModelServer, ServedModel, array_from_json, check_input, read_body
from aideploy.serve.tensor_json import parse_tensor_json
from aideploy.serve.v2 import REQUEST_ID_HEADER, answer, error_response, json_response

PROTOCOL = "tfserving"
SIGNATURE_NAME = "serving_default"

_TF_DTYPES = {
    "bool": "DT_BOOL",
    "uint8": "DT_UINT8",
    "uint16": "DT_UINT16",
    "uint32": "DT_UINT32",
    "uint64": "DT_UINT64",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "float16": "DT_HALF",
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
}


def router(server: ModelServer) -> APIRouter:
    """The TensorFlow Serving routes of ``server``.

    Introduced in ``07_serving.ipynb``.
    """
    routes = APIRouter()

    # A plain Starlette route, as V2's infer: no FastAPI parameter injection per request.
    async def predict(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        return await server.track(
            PROTOCOL, name, version, lambda model: _predict(server, model, request), error_response
        )

    routes.add_route("/v1/models/{name}:predict", predict, methods=["POST"])
    routes.add_route("/v1/models/{name}/versions/{version}:predict", predict, methods=["POST"])

    @routes.get("/v1/models/{name}")
    async def status(name: str) -> Response:
        return answer(lambda: _status(server, name, None))

    @routes.get("/v1/models/{name}/versions/{version}")
    async def version_status(name: str, version: str) -> Response:
        return answer(lambda: _status(server, name, version))

    @routes.get("/v1/models/{name}/metadata")
    async def metadata(name: str) -> Response:
        return answer(lambda: _metadata(server.lookup(name)))

    @routes.get("/v1/models/{name}/versions/{version}/metadata")
    async def version_metadata(name: str, version: str) -> Response:
        return answer(lambda: _metadata(server.lookup(name, version)))

    return routes


def _status(server: ModelServer, name: str, version: str | None) -> Response:
    if version is None:
        server.lookup(name)  # raises for an unknown model
        models = [server.models[name][number] for number in sorted(server.models[name], reverse=True)]
    else:
        models = [server.lookup(name, version)]
    states = {"LOADING": "LOADING", "AVAILABLE": "AVAILABLE", "UNAVAILABLE": "END"}
    return json_response(
        {
            "model_version_status": [
                {
                    "version": str(model.version),
                    "state": states[model.state],
                    "status": {
                        "error_code": "UNKNOWN" if model.error else "OK",
                        "error_message": model.error,
                    },
                }
                for model in models
            ]
        }
    )


def _metadata(model: ServedModel) -> Response:
    model.require_ready()
    signature = model.entry.signature

    def tensors(entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            entry["name"]: {
                "dtype": _TF_DTYPES.get(entry["dtype"], "DT_INVALID"),
                "tensor_shape": {
                    "dim": [{"size": str(-1 if d is None else int(d)), "name": ""} for d in entry["shape"]],
                    "unknown_rank": False,
                },
                "name": entry["name"],
            }
            for entry in entries
        }

    return json_response(
        {
            "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
            "metadata": {
                "signature_def": {
                    "signature_def": {
                        SIGNATURE_NAME: {
                            "inputs": tensors(signature["inputs"]),
                            "outputs": tensors(signature["outputs"]),
                            "method_name": "tensorflow/serving/predict",
                        }
                    }
                }
            },
        }
    )


async def _predict(server: ModelServer, model: ServedModel, request: Request) -> Response:
    started = time.perf_counter()
    payload = parse_tensor_json(await read_body(request, server.settings.max_body_bytes))
    signature_name = payload.get("signature_name", SIGNATURE_NAME)
    if signature_name != SIGNATURE_NAME:
        raise ModelInputError(f"unknown signature_name {signature_name!r}: the model has {SIGNATURE_NAME!r}.")
    input_name = model.predictor.input.name
    has_instances, has_inputs = "instances" in payload, "inputs" in payload
    if has_instances == has_inputs:
        raise ModelInputError('the request must have exactly one of "instances" (row format) or "inputs" (columnar).')
    if has_instances:
        instances = payload["instances"]
        if not isinstance(instances, (list, np.ndarray)) or not len(instances):
            raise ModelInputError('"instances" must be a non-empty list, one entry an example.')
        if isinstance(instances, list) and any(isinstance(item, dict) for item in instances):
            if not all(isinstance(item, dict) and set(item) == {input_name} for item in instances):
                raise ModelInputError(
                    f"each instance must be a value or an object with exactly the key {input_name!r}."
                )
            instances = [item[input_name] for item in instances]
        x = check_input(model, array_from_json(instances, model.input_dtype, '"instances"'), '"instances"')
        y = await model.batcher.submit(x)
        return _logged(server, model, x, y, started, json_response({"predictions": np.ascontiguousarray(y)}))
    inputs = payload["inputs"]
    if isinstance(inputs, dict):
        if set(inputs) != {input_name}:
            raise ModelInputError(
                f'"inputs" as an object must have exactly the key {input_name!r}, got {sorted(inputs)}.'
            )
        inputs = inputs[input_name]
    x = check_input(model, array_from_json(inputs, model.input_dtype, '"inputs"'), '"inputs"')
    y = await model.batcher.submit(x)
    return _logged(server, model, x, y, started, json_response({"outputs": np.ascontiguousarray(y)}))


def _logged(server: ModelServer, model: ServedModel, x: np.ndarray, y: np.ndarray, started: float,
            response: Response) -> Response:
    # The protocol has no request id: when the prediction log is on, the answer
    # carries the one it was logged under in a header, for delayed labels.
    request_id = server.log_prediction(model, None, x, y, started)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response
