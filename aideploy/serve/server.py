"""The server's state: the served models, their loading, readiness and the shared request checks.

Notebook: ``notebooks/07_serving.ipynb``.

A :class:`ModelServer` reads a model repository (:mod:`aideploy.registry`),
loads every version of every model in a background thread (so the server
answers health checks while it loads), and gives each version its
:class:`~aideploy.serve.batching.Batcher`. The protocol modules
(:mod:`aideploy.serve.v2`, :mod:`aideploy.serve.tfserving`) look models up
here and use :func:`array_from_json` and :func:`check_input` so both
protocols validate requests the same way.
"""

from __future__ import annotations

import array
import asyncio
import itertools
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from aideploy import registry
from aideploy.errors import (
    AideployError,
    ConfigError,
    ModelInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    PayloadTooLargeError,
)
from aideploy.serve.batching import Batcher
from aideploy.serve.metrics import UNKNOWN_MODEL, ServerMetrics

logger = logging.getLogger("aideploy.serve")

#: Runtimes the server can run a published version with.
SERVE_RUNTIMES = ("onnxruntime", "tflite")


@dataclass(frozen=True)
class ServerSettings:
    """How the server batches, limits and runs models.

    Attributes:
        max_batch_size: Most rows a merged batch holds (default: each model's
            ``config.pbtxt``).
        max_queue_delay_ms: Milliseconds a batch waits for more requests. The
            default 0 is Triton's for ``dynamic_batching { }`` (the config
            :mod:`aideploy.registry` writes): no request waits for company, yet
            requests that arrive while a batch runs are merged into the next.
        max_body_bytes: Largest request body accepted (larger: HTTP 413).
        num_threads: Threads for one predictor call (default: the runtime's).
        runtime: ``"onnxruntime"`` (``model.onnx``) or ``"tflite"`` (``model.tflite``).
        inline_below_ms: A batch whose predictor call is estimated shorter than this
            runs on the event loop rather than in the model's thread, which costs more
            than such a call (see :mod:`aideploy.serve.batching`); 0 always uses the thread.
        log_db: The prediction log's SQLite file (``None``: no log, no drift monitoring;
            see :mod:`aideploy.monitor`).
        monitor_window: Rows per drift window of the prediction log.
    """

    max_batch_size: int | None = None
    max_queue_delay_ms: float = 0.0
    max_body_bytes: int = 16 * 1024 * 1024
    num_threads: int | None = None
    runtime: str = "onnxruntime"
    inline_below_ms: float = 1.0
    log_db: str | None = None
    monitor_window: int = 500

    def __post_init__(self) -> None:
        if self.max_batch_size is not None and (not isinstance(self.max_batch_size, int) or self.max_batch_size < 1):
            raise ConfigError(f"max_batch_size must be a whole number of at least 1, got {self.max_batch_size!r}.")
        if not (isinstance(self.max_queue_delay_ms, (int, float)) and 0 <= self.max_queue_delay_ms <= 10_000):
            raise ConfigError(f"max_queue_delay_ms must be between 0 and 10000, got {self.max_queue_delay_ms!r}.")
        if not isinstance(self.max_body_bytes, int) or self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be a whole number of at least 1024, got {self.max_body_bytes!r}.")
        if not (isinstance(self.inline_below_ms, (int, float)) and 0 <= self.inline_below_ms <= 1000):
            raise ConfigError(f"inline_below_ms must be between 0 and 1000, got {self.inline_below_ms!r}.")
        if not isinstance(self.monitor_window, int) or self.monitor_window < 20:
            raise ConfigError(f"monitor_window must be a whole number of at least 20, got {self.monitor_window!r}.")
        if self.runtime not in SERVE_RUNTIMES:
            raise ConfigError(f"unknown serving runtime {self.runtime!r}: use one of {', '.join(SERVE_RUNTIMES)}.")


@dataclass
class ServedModel:
    """One version of a model as the server holds it.

    Attributes:
        name: The model's name.
        version: Its version.
        state: ``"LOADING"``, ``"AVAILABLE"`` or ``"UNAVAILABLE"`` (failed to load).
        error: Why it is unavailable.
        entry: The repository entry (signature, paths), once found.
        predictor: The runtime's predictor, once loaded.
        batcher: Its batcher, once loaded.
    """

    name: str
    version: int
    state: str = "LOADING"
    error: str = ""
    entry: registry.ModelVersion | None = None
    predictor: Any = field(default=None, repr=False)
    batcher: Batcher | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        """Whether it answers inference requests."""
        return self.state == "AVAILABLE"

    def require_ready(self) -> ServedModel:
        """Itself, if ready.

        Raises:
            ModelNotReadyError: It is loading, failed to load or the server is stopping.
        """
        if self.state == "AVAILABLE":
            return self
        if self.state == "LOADING":
            raise ModelNotReadyError(f"model {self.name!r} version {self.version} is still loading: retry shortly.")
        raise ModelNotReadyError(f"model {self.name!r} version {self.version} is not available: {self.error}")

    @property
    def input_dtype(self) -> np.dtype:
        """The input's NumPy dtype."""
        return np.dtype(self.predictor.input.dtype)


class ModelServer:
    """Every model of a repository, loaded for serving.

    Introduced in ``07_serving.ipynb``.

    Args:
        repo: The model repository folder.
        settings: Batching and limits (default: :class:`ServerSettings`).

    Raises:
        ArtifactError: The repository folder does not exist.
    """

    def __init__(self, repo: str | os.PathLike, settings: ServerSettings | None = None) -> None:
        self.repository = registry.ModelRepository(repo)
        self.settings = settings or ServerSettings()
        self.metrics = ServerMetrics()
        self.models: dict[str, dict[int, ServedModel]] = {}
        self.stopping = False
        self._loading: asyncio.Task | None = None
        self.monitor: Any = None  # an aideploy.monitor Monitor when settings.log_db is set
        # Request ids the server makes: a random prefix per process (several processes may
        # share a log) and a counter, so that ids grow and the log's index only appends.
        self._id_prefix = uuid.uuid4().hex[:12]
        self._id_counter = itertools.count()

    # --- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        """Find the models and start loading them in the background."""
        if self.settings.log_db is not None and self.monitor is None:
            from aideploy.monitor import service

            self.monitor = service.Monitor(
                self.settings.log_db,
                settings=service.drift.DriftSettings(window_size=self.settings.monitor_window),
                registry=self.metrics.registry,
            )
            self.monitor.start()
        for name in self.repository.models():
            self.models[name] = {v: ServedModel(name, v) for v in self.repository.versions(name)}
        self._loading = asyncio.get_running_loop().create_task(self._load_all())

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every model finished loading (or failed to).

        Raises:
            ModelNotReadyError: Not done within ``timeout`` seconds.
        """
        if self._loading is None:
            raise ModelNotReadyError("the server has not been started.")
        try:
            await asyncio.wait_for(asyncio.shield(self._loading), timeout)
        except asyncio.TimeoutError:
            raise ModelNotReadyError(f"models still loading after {timeout} s.") from None

    def begin_shutdown(self) -> None:
        """Report not ready from now on (the first step of a graceful shutdown)."""
        self.stopping = True

    async def stop(self) -> None:
        """Stop: readiness turns false, queued requests finish, batcher threads end."""
        self.begin_shutdown()
        if self._loading is not None and not self._loading.done():
            await self._loading
        for versions in self.models.values():
            for model in versions.values():
                if model.batcher is not None:
                    await model.batcher.stop()
                if model.state == "AVAILABLE":
                    model.state = "UNAVAILABLE"
                    model.error = "the server is stopping."
        if self.monitor is not None:  # after the batchers: every answered request is queued by now
            await asyncio.to_thread(self.monitor.stop)

    async def _load_all(self) -> None:
        for name, versions in self.models.items():
            for number, model in versions.items():
                try:
                    entry, predictor = await asyncio.to_thread(self._load_one, name, number)
                except Exception as error:  # a broken model must not stop the others
                    model.state, model.error = "UNAVAILABLE", str(error)
                    logger.error("cannot load model %s version %s: %s", name, number, error)
                    continue
                max_batch_size = self.settings.max_batch_size or entry.max_batch_size or 1
                if predictor.input.shape[0] is not None:  # a fixed batch size cannot merge requests
                    max_batch_size = 1
                model.entry, model.predictor = entry, predictor
                model.batcher = Batcher(
                    predictor.predict,
                    max_batch_size=max_batch_size,
                    max_queue_delay=self.settings.max_queue_delay_ms / 1000,
                    on_batch=self.metrics.batch_recorder(name, str(number)),
                    name=f"{name}-{number}",
                    inline_below=self.settings.inline_below_ms / 1000,
                )
                model.batcher.start()
                if self.monitor is not None:
                    await asyncio.to_thread(self._watch, entry)
                model.state = "AVAILABLE"

    def _load_one(self, name: str, version: int) -> tuple[registry.ModelVersion, Any]:
        from aideploy import runtime

        entry = self.repository.get(name, version)
        if self.settings.runtime == "tflite":
            if entry.tflite_path is None:
                raise ModelNotReadyError(f"no {registry.TFLITE_NAME} published in version {version}.")
            from aideploy.serve.litert import ServingLiteRT

            max_batch_size = self.settings.max_batch_size or entry.max_batch_size or 1
            return entry, ServingLiteRT(entry.tflite_path, max_batch_size=max_batch_size,
                                        num_threads=self.settings.num_threads)
        return entry, runtime.load(entry.path, num_threads=self.settings.num_threads)

    def _watch(self, entry: registry.ModelVersion) -> None:
        from aideploy.monitor import profile

        reference_path = entry.path.parent / profile.REFERENCE_NAME
        reference = None
        if reference_path.is_file():
            try:
                reference = profile.load_profile(reference_path)
            except AideployError as error:  # serve the model; only its drift is not watched
                logger.error("model %s version %s: no drift monitoring: %s", entry.name, entry.version, error)
        self.monitor.add_model(entry.name, str(entry.version), reference)

    def log_prediction(
        self, model: ServedModel, request_id: str | None, x: np.ndarray, y: np.ndarray, started: float
    ) -> str | None:
        """Hand an answered request to the prediction log, if there is one; never waits.

        Returns:
            The request's id: the client's, or a new one when the log is on and the client sent none.
        """
        if self.monitor is None:
            return request_id
        request_id = request_id or f"{self._id_prefix}{next(self._id_counter):010x}"
        self.monitor.record(model.name, str(model.version), request_id, x, y, time.perf_counter() - started)
        return request_id

    # --- lookups ----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether the server answers: not stopping, and every model version loaded."""
        return (
            not self.stopping
            and self._loading is not None
            and all(model.ready for versions in self.models.values() for model in versions.values())
        )

    def lookup(self, name: str, version: str | None = None) -> ServedModel:
        """A model version (default: the newest), ready or not.

        Raises:
            ModelNotFoundError: No such model or version.
        """
        versions = self.models.get(name)
        if versions is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFoundError(f"unknown model {name!r} (models: {known}).")
        if version is None:
            return versions[max(versions)]
        if not (isinstance(version, str) and version.isdigit() and int(version) in versions):
            known = ", ".join(str(v) for v in sorted(versions))
            raise ModelNotFoundError(f"model {name!r} has no version {version!r} (versions: {known}).")
        return versions[int(version)]

    async def track(
        self,
        protocol: str,
        name: str,
        version: str | None,
        work: Callable[[ServedModel], Awaitable[Response]],
        error_response: Callable[[int, str], Response],
    ) -> Response:
        """Run an inference request: look the model up, call ``work``, count it, turn errors into answers.

        Expected errors answer with their ``http_status`` and message; anything
        else is the server's fault: a 500 with a short message, the traceback in the log.
        """
        started = time.perf_counter()
        self.metrics.inflight.inc()
        # Labels come from the repository, never from the request, so clients
        # cannot grow the metrics' label sets.
        model_label, version_label = (name if name in self.models else UNKNOWN_MODEL), ""
        try:
            model = self.lookup(name, version)
            version_label = str(model.version)
            response = await work(model.require_ready())
        except AideployError as error:
            response = error_response(error.http_status, str(error))
        except Exception:
            logger.exception("inference request for %s failed", name)
            response = error_response(500, "internal server error: the server's log has the details.")
        finally:
            self.metrics.inflight.dec()
        self.metrics.record_request(model_label, version_label, protocol, response.status_code,
                                    time.perf_counter() - started)
        return response

    def datatype(self, dtype: str | np.dtype) -> str:
        """The V2 datatype (``FP32``) of a NumPy dtype or its name."""
        # Keyed by dtype objects too: str(dtype) costs microseconds on every answer.
        return _V2_DATATYPES[dtype]


_V2_DATATYPES: dict[Any, str] = {
    **{name: v2 for name, (_, v2) in registry.DATATYPES.items()},
    **{np.dtype(name): v2 for name, (_, v2) in registry.DATATYPES.items()},
}


# --- request helpers shared by the protocols ------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused early when it is larger than ``limit`` bytes.

    Raises:
        PayloadTooLargeError: The body (or its declared length) is over the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body of {int(declared):,} bytes is over the limit of {limit:,} bytes.")
    # The ASGI messages themselves, not request.stream(): an async generator per request
    # costs more than the usual one or two messages a body comes in.
    receive = request.receive
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body is over the limit of {limit:,} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object from a request body.

    Raises:
        ModelInputError: Not valid JSON (NaN and Infinity are not JSON), or not an object.
    """
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ModelInputError(f"malformed JSON in the request body: {error}.") from None
    if not isinstance(payload, dict):
        raise ModelInputError(f"the request body must be a JSON object, got a JSON {type(payload).__name__}.")
    return payload


def array_from_json(data: Any, dtype: np.dtype, what: str) -> np.ndarray:
    """A (nested) JSON list of numbers as an array of ``dtype``, checked value by value.

    ``data`` may also hold NumPy arrays where :func:`~aideploy.serve.tensor_json.parse_tensor_json`
    read long arrays of numbers straight into them (a whole ``int64`` / ``float64`` array,
    or a list of such rows).

    Floats are refused for integer inputs (rather than silently truncated),
    integers out of the dtype's range are refused, and floating inputs must
    be finite.

    Raises:
        ModelInputError: Not a rectangular array of numbers that fit ``dtype``.
    """
    fast = _floats_from_json(data, dtype)
    if fast is not None:
        return fast
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError):
        raise ModelInputError(f"{what} is not a rectangular array of numbers (rows of different lengths?).") from None
    if raw.dtype.kind not in "biuf" or (raw.dtype.kind == "b" and dtype.kind != "b"):
        raise ModelInputError(f"{what} must hold numbers only, got values of type {raw.dtype.kind!r} ({raw.dtype}).")
    if dtype.kind in "iu":
        if raw.dtype.kind == "f":
            raise ModelInputError(f"{what} must hold whole numbers for a {dtype} input, got floating-point values.")
        info = np.iinfo(dtype)
        if raw.size and (raw.min() < info.min or raw.max() > info.max):
            raise ModelInputError(f"{what} has values outside the range of {dtype} ({info.min}..{info.max}).")
    with np.errstate(over="ignore", invalid="ignore"):
        return raw.astype(dtype, copy=False)


_ARRAY_TYPECODES = {np.dtype(np.float32): "f", np.dtype(np.float64): "d"}


def _floats_from_json(data: Any, dtype: np.dtype) -> np.ndarray | None:
    """The common case fast: a flat list, or a list of equally long lists, of JSON numbers for a float input.

    ``array.array`` converts a list of Python numbers in one C loop without the type
    discovery ``np.asarray`` does first (a third faster for 784 values), and it refuses
    anything that is not a number (strings, ``null``, deeper lists) with a TypeError.
    ``None`` means "not this case": the caller's checks decide and word the error.
    """
    code = _ARRAY_TYPECODES.get(dtype)
    if code is None or type(data) is not list or not data:
        return None
    first = data[0]
    if type(first) is np.ndarray:  # rows parse_tensor_json already read: np.asarray stacks them
        return None
    try:
        if type(first) is list:
            width = len(first)
            if not width or type(first[0]) is bool or not all(type(row) is list and len(row) == width for row in data):
                return None
            flat = array.array(code)
            for row in data:
                flat.extend(row)
            return np.frombuffer(flat, dtype).reshape(len(data), width)
        if type(first) is bool:  # all-boolean data is refused by the general path
            return None
        return np.frombuffer(array.array(code, data), dtype)
    except (TypeError, OverflowError):
        return None


def check_input(model: ServedModel, array: np.ndarray, what: str) -> np.ndarray:
    """Check an input array against the model's input: rank, fixed dimensions, rows, finite values.

    Returns:
        The array, C-contiguous.

    Raises:
        ModelInputError: It does not fit the model.
    """
    expected = model.predictor.input.shape
    if array.ndim != len(expected) or any(d is not None and d != n for d, n in zip(expected[1:], array.shape[1:])):
        shown = "[" + ", ".join("-1" if d is None else str(d) for d in expected) + "]"
        raise ModelInputError(
            f"{what} has shape {list(array.shape)}, but model {model.name!r} expects {shown} "
            "(-1: any size, the first axis is the batch)."
        )
    if array.shape[0] == 0:
        raise ModelInputError(f"{what} has no rows: send at least one.")
    if expected[0] is not None and array.shape[0] != expected[0]:
        raise ModelInputError(
            f"{what} has {array.shape[0]} rows, but model {model.name!r} takes exactly {expected[0]}."
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ModelInputError(f"{what} contains NaN or infinite values (or values too large for {array.dtype}).")
    return np.ascontiguousarray(array)
