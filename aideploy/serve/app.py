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
import dataclasses
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from aideploy import registry
from aideploy.errors import ConfigError
from aideploy.serve import images, monitoring, tfserving, v2
from aideploy.serve.server import ModelServer, ServerSettings

logger = logging.getLogger("aideploy.serve")

#: The uvicorn options of ``aideploy serve`` (the serving benchmark starts its other
#: servers with them too). ``"auto"`` takes uvloop and httptools when installed (the
#: ``serve`` extra installs them) over asyncio's loop and the pure-Python h11 parser.
#: No access log: a log line per request costs more than a small model's inference.
UVICORN_OPTIONS: dict[str, Any] = {"loop": "auto", "http": "auto", "log_level": "warning", "access_log": False}


def create_app(
    repo_or_server: str | os.PathLike | ModelServer,
    settings: ServerSettings | None = None,
    *,
    load_before_serving: bool = False,
) -> FastAPI:
    """The server's ASGI application.

    The application's lifespan starts and stops the :class:`ModelServer`; an
    in-process test client that does not run the lifespan calls
    ``app.state.server.start()`` and ``stop()`` itself. Introduced in ``07_serving.ipynb``.

    Args:
        repo_or_server: A model repository folder, or a :class:`ModelServer`.
        settings: Batching and limits (when a folder is given).
        load_before_serving: Let the lifespan's start-up wait until every model has
            loaded (the worker processes of ``--workers`` do: a worker that accepts
            connections only once loaded never answers 503 beside a ready one).

    Returns:
        The FastAPI application; ``app.state.server`` is its :class:`ModelServer`.

    Raises:
        ArtifactError: The repository folder does not exist.
    """
    server = repo_or_server if isinstance(repo_or_server, ModelServer) else ModelServer(repo_or_server, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.start()
        if load_before_serving:
            await server.wait_ready(timeout=600)
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
    routers = [v2.router(server), tfserving.router(server), images.router(server),
               monitoring.router(server)]
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
    workers: int = 1,
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
        workers: Server processes sharing the port (see :func:`_run_workers`).

    Returns:
        What was served: ``url``, ``models`` (name to versions) and ``requests``.

    Raises:
        ArtifactError: The repository folder does not exist.
        ConfigError: ``workers`` is not a whole number of at least 1.
    """
    import uvicorn

    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"workers must be a whole number of at least 1, got {workers!r}.")
    if workers > 1:
        return _run_workers(repo, host=host, port=port, settings=settings or ServerSettings(),
                            on_started=on_started, graceful_timeout=graceful_timeout, workers=workers)
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


#: Environment variable that hands the worker processes their repository and settings.
_WORKER_CONFIG = "AIDEPLOY_SERVE_WORKER_CONFIG"


def _worker_app() -> FastAPI:
    """The application of one ``--workers`` process (uvicorn's factory, run in each worker)."""
    config = json.loads(os.environ[_WORKER_CONFIG])
    app = create_app(config["repo"], ServerSettings(**config["settings"]), load_before_serving=True)
    _readiness_false_on_exit_signals(app.state.server)
    return app


def _readiness_false_on_exit_signals(server: ModelServer) -> None:
    """Make SIGINT and SIGTERM turn ``server``'s readiness false before uvicorn's own handler runs.

    A worker process runs uvicorn's server, not :class:`_GracefulServer`; uvicorn
    installs its signal handlers before it calls the application factory, so the
    factory wraps them (the single-process server does the same in ``handle_exit``).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(number)
        if not callable(previous):
            continue

        def handler(sig: int, frame: Any, previous: Callable[[int, Any], Any] = previous) -> None:
            server.begin_shutdown()
            previous(sig, frame)

        signal.signal(number, handler)


def _run_workers(
    repo: str | os.PathLike,
    *,
    host: str,
    port: int,
    settings: ServerSettings,
    on_started: Callable[[str], None] | None,
    graceful_timeout: float,
    workers: int,
) -> dict[str, Any]:
    """Serve with several processes on one port: uvicorn's supervisor and its workers.

    The parent binds the socket and starts ``workers`` processes that accept
    connections from it, each with its own models and batchers (a batch holds one
    worker's requests). A worker accepts connections once its models have loaded.
    Metrics stay whole across processes through prometheus-client's multiprocess
    mode: each worker writes its values to files in a folder of its own for this run,
    and ``/metrics``, whichever worker answers, adds them all up. SIGTERM or Ctrl-C
    stops the workers (each turns its readiness false, then finishes its in-flight
    requests) and then the parent.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from aideploy.serve.metrics import MULTIPROCESS_DIR, total_requests

    repository = registry.ModelRepository(repo)  # a missing folder fails here, before any process starts
    metrics_dir = tempfile.mkdtemp(prefix="aideploy-metrics-")
    saved = {name: os.environ.get(name) for name in (MULTIPROCESS_DIR, _WORKER_CONFIG)}
    os.environ[MULTIPROCESS_DIR] = metrics_dir
    os.environ[_WORKER_CONFIG] = json.dumps({"repo": os.fspath(repo), "settings": dataclasses.asdict(settings)})
    try:
        config = uvicorn.Config(
            "aideploy.serve.app:_worker_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            **UVICORN_OPTIONS,
            timeout_graceful_shutdown=graceful_timeout,
            lifespan="on",
        )
        sock = config.bind_socket()
        url = f"http://{host}:{port}"
        supervisor = Multiprocess(config, sockets=[sock])
        if on_started is not None:
            on_started(url)
        try:
            supervisor.run()
        finally:
            sock.close()
        return {
            "url": url,
            "models": {name: repository.versions(name) for name in repository.models()},
            "requests": total_requests(metrics_dir),
            "workers": workers,
        }
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(metrics_dir, ignore_errors=True)
