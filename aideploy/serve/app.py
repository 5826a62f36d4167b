"""The ASGI application and the process that runs it.

Notebook: ``notebooks/07_serving.ipynb``. Command: ``aideploy serve``.

:func:`create_app` builds a FastAPI application over a :class:`ModelServer`:
the V2 and TensorFlow Serving routes, the image route, ``GET /metrics``, and error bodies in
the protocols' ``{"error": ...}`` form even for unknown paths and methods.
:func:`run` serves it with uvicorn; a SIGTERM or Ctrl-C first turns
readiness false, then uvicorn stops accepting connections and lets in-flight
requests finish, then the batchers finish what is queued.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from aideploy.serve import images, tfserving, v2
from aideploy.serve.server import ModelServer, ServerSettings

logger = logging.getLogger("aideploy.serve")

#: The uvicorn options of ``aideploy serve`` (the serving benchmark starts its other
#: servers with them too). ``"auto"`` takes uvloop and httptools when installed (the
#: ``serve`` extra installs them) over asyncio's loop and the pure-Python h11 parser.
#: No access log: a log line per request costs more than a small model's inference.
UVICORN_OPTIONS: dict[str, Any] = {"loop": "auto", "http": "auto", "log_level": "warning", "access_log": False}


def create_app(repo_or_server: str | os.PathLike | ModelServer, settings: ServerSettings | None = None) -> FastAPI:
    """The server's ASGI application.

    The application's lifespan starts and stops the :class:`ModelServer`; an
    in-process test client that does not run the lifespan calls
    ``app.state.server.start()`` and ``stop()`` itself. Introduced in ``07_serving.ipynb``.

    Args:
        repo_or_server: A model repository folder, or a :class:`ModelServer`.
        settings: Batching and limits (when a folder is given).

    Returns:
        The FastAPI application; ``app.state.server`` is its :class:`ModelServer`.

    Raises:
        ArtifactError: The repository folder does not exist.
    """
    server = repo_or_server if isinstance(repo_or_server, ModelServer) else ModelServer(repo_or_server, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = _InferenceFastPathApp(
        title="aideploy model server",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.server = server
    routers = [v2.router(server), tfserving.router(server), images.router(server)]
    for router in routers:
        app.include_router(router)
    app.set_hot_routes(route for router in routers for route in router.routes if getattr(route, "methods", None)
                       == {"POST"} and route.path.endswith(("/infer", ":predict")))

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        # Unknown paths and wrong methods answer in the protocols' error form too.
        message = f"{error.detail}: {request.method} {request.url.path}"
        return v2.error_response(error.status_code, message)

    return app


class _InferenceFastPathApp(FastAPI):
    """FastAPI, but inference requests go straight to their endpoint.

    FastAPI's middleware stack and router (error middleware, exception handlers, an
    exit stack, matching every route in turn) cost more per request than a small
    model's inference. The inference endpoints are plain Starlette ones that turn
    every error into an answer themselves (:meth:`ModelServer.track`), so a POST whose
    path matches one of them is dispatched here directly; everything else (health,
    metadata, images, metrics, unknown paths, the lifespan) takes the usual way.
    """

    _hot: tuple[tuple[Any, Callable[[Request], Any]], ...] = ()

    def set_hot_routes(self, routes: Iterable[Any]) -> None:
        """Dispatch POSTs to these plain Starlette routes (already included) directly."""
        self._hot = tuple((route.path_regex, route.endpoint) for route in routes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path = scope["path"]
            for regex, endpoint in self._hot:
                match = regex.match(path)
                if match is not None:
                    scope["app"] = self
                    scope["path_params"] = match.groupdict()
                    try:
                        response = await endpoint(Request(scope, receive))
                    except Exception:  # the endpoints answer errors themselves: this is a bug
                        logger.exception("inference request %s failed", path)
                        response = v2.error_response(500, "internal server error: the server's log has the details.")
                    await response(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


class _GracefulServer:
    """uvicorn's server whose exit signal turns readiness false before anything else stops."""

    def __new__(cls, config: Any, server: ModelServer) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                server.begin_shutdown()
                super().handle_exit(sig, frame)

            @contextlib.contextmanager
            def capture_signals(self) -> Any:
                # SIGTERM / Ctrl-C is how this server is meant to stop: shut down
                # gracefully and return normally (uvicorn would re-raise the
                # signal afterwards, killing the process before the command's
                # last JSON line).
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for sig, handler in originals.items():
                        signal.signal(sig, handler)

        return Server(config)


def run(
    repo: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServerSettings | None = None,
    on_started: Callable[[str], None] | None = None,
    graceful_timeout: float = 30.0,
) -> dict[str, Any]:
    """Serve a model repository until interrupted (SIGINT or SIGTERM).

    Introduced in ``07_serving.ipynb``; ``aideploy serve`` calls it.

    Args:
        repo: The model repository folder.
        host: The interface to listen on (loopback unless told otherwise).
        port: The TCP port.
        settings: Batching and limits.
        on_started: Called with the base URL once the socket listens.
        graceful_timeout: Seconds in-flight requests get to finish on shutdown.

    Returns:
        What was served: ``url``, ``models`` (name to versions) and ``requests``.

    Raises:
        ArtifactError: The repository folder does not exist.
    """
    import uvicorn

    server = ModelServer(repo, settings)
    app = create_app(server)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        **UVICORN_OPTIONS,
        timeout_graceful_shutdown=graceful_timeout,
        lifespan="on",
    )
    uvicorn_server = _GracefulServer(config, server)
    url = f"http://{host}:{port}"
    if on_started is not None:
        original_startup = uvicorn_server.startup

        async def startup(sockets: Any = None) -> None:
            await original_startup(sockets=sockets)
            if not uvicorn_server.should_exit:
                on_started(url)

        uvicorn_server.startup = startup
    uvicorn_server.run()
    requests = sum(
        sample.value
        for metric in server.metrics.requests.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    return {
        "url": url,
        "models": {name: sorted(versions) for name, versions in server.models.items()},
        "requests": int(requests),
    }
