"""The monitoring routes: delayed labels, alerts and drift windows of the prediction log.

Notebook: ``notebooks/08_monitoring.ipynb``. Command: ``aideploy serve --log-db PATH``.

- ``POST /monitor/labels`` with ``{"id": REQUEST_ID, "label": CLASS}`` (or
  ``"labels": [CLASS, ...]``, one per input row of the request) records the true
  class of a logged request, answered with the model, version and how many rows
  it got right. The id is the V2 answer's ``id`` (the client's, or one the server
  made), the image route's ``id``, or TensorFlow Serving's ``Aideploy-Request-Id``
  header. An unknown id answers 404; a malformed body or label, 400.
- ``GET /monitor/alerts[?model=NAME&limit=N]``: the latest alerts, newest last.
- ``GET /monitor/windows[?model=NAME&limit=N]``: the latest drift windows, newest last.

Without a prediction log (``--no-log``) they answer 404 saying so.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from aideploy.errors import AideployError, ModelInputError
from aideploy.serve.server import ModelServer, parse_json, read_body
from aideploy.serve.v2 import error_response, json_response

_LABELS_BODY_LIMIT = 1024 * 1024


def router(server: ModelServer) -> APIRouter:
    """The monitoring routes of ``server``.

    Introduced in ``08_monitoring.ipynb``.
    """
    routes = APIRouter()

    def monitor() -> Any:
        if server.monitor is None:
            raise _NoLogError("this server keeps no prediction log: start it with --log-db PATH (not --no-log).")
        return server.monitor

    async def answer(work: Any) -> Response:
        try:
            return json_response(await work())
        except AideployError as error:
            return error_response(error.http_status, str(error))

    @routes.post("/monitor/labels")
    async def labels(request: Request) -> Response:
        async def work() -> dict[str, Any]:
            log = monitor().log
            payload = parse_json(await read_body(request, _LABELS_BODY_LIMIT))
            if ("label" in payload) == ("labels" in payload) or not set(payload) <= {"id", "label", "labels"}:
                raise ModelInputError(
                    'the body must be {"id": REQUEST_ID, "label": CLASS} or {"id": REQUEST_ID, "labels": '
                    f"[CLASS, ...]}} (one per input row), got the keys {sorted(payload)}."
                )
            values = payload["label"] if "label" in payload else payload["labels"]
            if "labels" in payload and not isinstance(values, list):
                raise ModelInputError(f'"labels" must be a list of class indices, got {values!r}.')
            # SQLite waits for locks: off the event loop.
            return await asyncio.to_thread(log.submit_labels, payload.get("id"), values)

        return await answer(work)

    @routes.get("/monitor/alerts")
    async def alerts(request: Request) -> Response:
        async def work() -> dict[str, Any]:
            model, limit = _query(request)
            return {"alerts": await asyncio.to_thread(monitor().alerts, model, limit)}

        return await answer(work)

    @routes.get("/monitor/windows")
    async def windows(request: Request) -> Response:
        async def work() -> dict[str, Any]:
            model, limit = _query(request)
            return {"windows": await asyncio.to_thread(monitor().windows, model, limit)}

        return await answer(work)

    return routes


class _NoLogError(AideployError):
    http_status = 404


def _query(request: Request) -> tuple[str | None, int]:
    text = request.query_params.get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise ModelInputError(f"limit must be a whole number from 1 to 10000, got {text!r}.")
    return request.query_params.get("model"), int(text)
