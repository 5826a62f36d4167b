"""Stage 06, benchmark worker: one runtime, timed in a process of its own.

Notebook: ``notebooks/06_conversion.ipynb``. :func:`aideploy.bench.benchmark`
starts one worker a runtime (``python -m aideploy.bench_worker SPEC``) and tells
each, in turn, to measure; see :mod:`aideploy.bench` for why.

The worker sets its thread counts before the runtime starts: TensorFlow's
intra-op and inter-op pools (which TensorFlow fixes when it initialises, so
only a fresh process can choose them), ONNX Runtime's intra-op threads,
LiteRT's ``num_threads``, and every BLAS / OpenMP pool through
``threadpoolctl``. The NumPy reference's worker is started with
``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` removed from its environment
(before NumPy loads OpenBLAS, which reads them once), and reports what it saw.

Protocol: ``SPEC`` is a JSON object; commands arrive as JSON lines on standard
input; every answer is one JSON line on the original standard output. File
descriptor 1 is then pointed at standard error, so that nothing a library
prints can corrupt an answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Environment variables that pin OpenBLAS to older kernels on some machines.
OPENBLAS_PINNING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

#: Worker kinds: an aideploy predictor, ``model.predict``, raw ONNX Runtime, the NumPy chain.
KINDS = ("predictor", "model_predict", "raw_onnx", "numpy")

#: Labels of the references (re-exported by :mod:`aideploy.bench` as ``REFERENCE_*``).
LABEL_PREDICT = "keras model.predict"
LABEL_RAW_ONNX = "raw InferenceSession.run"


def latency_samples(call: Callable[[Any], Any], x: Any, calls: int, max_seconds: float) -> list[float]:
    """Seconds of each of up to ``calls`` calls of ``call(x)``, stopping after ``max_seconds`` (10 calls at least).

    Args:
        call: What to time.
        x: Its input.
        calls: Timed calls at most.
        max_seconds: Time cap.

    Returns:
        One duration a call, in seconds.
    """
    timer = time.perf_counter
    samples = []
    deadline = timer() + max_seconds
    for _ in range(calls):
        started = timer()
        call(x)
        finished = timer()
        samples.append(finished - started)
        if finished > deadline and len(samples) >= 10:
            break
    return samples


def throughput(call: Callable[[Any], Any], x: Any, seconds: float) -> tuple[int, float]:
    """Call ``call(x)`` for at least ``seconds`` (3 calls at least).

    Returns:
        ``(calls, elapsed seconds)``.
    """
    timer = time.perf_counter
    count = 0
    started = timer()
    elapsed = 0.0
    while count < 3 or elapsed < seconds:
        call(x)
        count += 1
        elapsed = timer() - started
    return count, elapsed


def numpy_reference_call(layers: list[list[int]], seed: int) -> Callable[[Any], Any]:
    """``relu(a @ w)`` for each ``(rows per example, inner, outputs)`` product, chained where the shapes chain.

    The values do not matter for speed; the shapes do. Operand arrays for each
    batch size are built on its first (untimed, warm-up) call.
    """
    import numpy as np

    generator = np.random.default_rng(seed)
    weights = [generator.random((inner, outputs), dtype=np.float32) for _, inner, outputs in layers]
    operands: dict[int, list[Any]] = {}

    def call(x: Any) -> Any:
        batch_size = x.shape[0]
        if batch_size not in operands:
            operands[batch_size] = [
                generator.random((batch_size * rows, inner), dtype=np.float32) for rows, inner, _ in layers
            ]
        hidden = x.reshape(batch_size, -1) if layers and layers[0][0] == 1 else None
        for (rows, inner, _), weight, operand in zip(layers, weights, operands[batch_size], strict=True):
            source = hidden if hidden is not None and hidden.shape == (batch_size * rows, inner) else operand
            hidden = source @ weight
            np.maximum(hidden, 0, out=hidden)
        return hidden

    return call


def keras_layers(model: Any) -> list[list[int]]:
    """A tf-keras model's matrix products as ``[rows per example, inner size, outputs]``.

    A Dense layer ``k -> n`` is ``[1, k, n]``; a Conv2D layer is an im2col
    product with one row per output position and ``kh * kw * c_in`` inner size.
    """
    layers = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # pruning / QAT wrappers
        kind = type(inner).__name__
        if kind == "Dense":
            layers.append([1, int(inner.kernel.shape[0]), int(inner.kernel.shape[1])])
        elif kind == "Conv2D":
            kernel_h, kernel_w, channels_in, channels_out = (int(d) for d in inner.kernel.shape)
            _, out_h, out_w, _ = layer.output_shape
            layers.append([int(out_h) * int(out_w), kernel_h * kernel_w * channels_in, channels_out])
    return layers


def settings_of(settings: Any) -> dict[str, Any]:
    """The part of :class:`aideploy.bench.BenchmarkSettings` every worker's spec carries."""
    return {
        "num_threads": settings.num_threads,
        "seed": settings.seed,
        "batch_sizes": list(settings.batch_sizes),
        "warmup_calls": settings.warmup_calls,
    }


def source_path(source: Any, scratch: Path, index: int) -> tuple[Path, str]:
    """A path a worker can load, and its runtime; an in-memory tf-keras model is saved to ``scratch``.

    Raises:
        ArtifactError: The path does not exist.
        ConfigError: ``source`` is neither a path, a predictor nor a tf-keras model.
    """
    from aideploy.errors import ArtifactError, ConfigError
    from aideploy.runtime import Predictor, runtime_of

    if isinstance(source, Predictor):
        if source.path is None:
            source = source.model  # an in-memory KerasPredictor
        else:
            return source.path, source.runtime
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ArtifactError(
                f"model path {path} does not exist: export one with `aideploy convert MODEL --to FORMAT "
                "--out DIR`, or check the path."
            )
        return path, runtime_of(path)
    if hasattr(source, "inputs") and hasattr(source, "save"):
        path = scratch / f"model-{index}.keras"
        source.save(path)
        return path, "keras"
    raise ConfigError(f"expected a model path, a predictor or a tf-keras model, got {type(source).__name__}.")


def plan(sources: list[tuple[Path, str]]) -> list[tuple[str, dict[str, Any]]]:
    """Label and worker spec of each runtime, in the natural order (model.predict first, raw ORT after ORT)."""
    entries: list[tuple[str, dict[str, Any]]] = []
    keras_path = next((path for path, name in sources if name == "keras"), None)
    if keras_path is not None:
        entries.append((LABEL_PREDICT, {"kind": "model_predict", "runtime": "keras", "source": str(keras_path)}))
    raw_added = False
    for path, name in sources:
        label = f"aideploy {name}"
        if any(existing == label for existing, _ in entries):
            label = f"{label} ({path.name})"
        entries.append((label, {"kind": "predictor", "runtime": name, "source": str(path)}))
        if name == "onnxruntime" and not raw_added:
            entries.append((LABEL_RAW_ONNX, {"kind": "raw_onnx", "runtime": name, "source": str(path)}))
            raw_added = True
    return entries


def onnx_layers(path: str) -> list[list[int]] | None:
    """A dense ONNX graph's matrix products (``None`` for convolutions: spatial sizes need shape inference)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(path).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    layers = []
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in weights:
            weight = weights[node.input[1]]
            if weight.ndim == 2:
                layers.append([1, int(weight.shape[0]), int(weight.shape[1])])
        elif node.op_type == "Conv":
            return None
    return layers or None


def _start_tensorflow(num_threads: int | None) -> dict[str, int]:
    """Import TensorFlow with its thread pools set, before anything initialises it."""
    import aideploy  # noqa: F401  (sets the Keras 2 switch before TensorFlow loads)
    from aideploy.quiet import native_stderr_silenced

    with native_stderr_silenced():
        import tensorflow as tf
    if num_threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(num_threads)
        tf.config.threading.set_inter_op_parallelism_threads(num_threads)
    from aideploy.backend import tf as initialised  # creates the first tensor: the pools are fixed now

    return {
        "tensorflow_intra_op": initialised.config.threading.get_intra_op_parallelism_threads(),
        "tensorflow_inter_op": initialised.config.threading.get_inter_op_parallelism_threads(),
    }


def _build(spec: dict[str, Any]) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    """The call to time and what the worker reports about it (shape, threads, metadata)."""
    kind, num_threads = spec["kind"], spec["num_threads"]
    report: dict[str, Any] = {"threads": {}, "metadata": {}}
    if kind == "numpy":
        report["input_shape"], report["dtype"] = spec["input_shape"], spec["dtype"]
        return numpy_reference_call(spec["layers"], spec["seed"]), report
    if spec["runtime"] in ("keras", "saved_model"):
        report["threads"].update(_start_tensorflow(num_threads))
    from aideploy import runtime

    predictor = runtime.load(spec["source"], spec["runtime"], num_threads=num_threads)
    report["input_shape"] = list(predictor.input.shape[1:])
    report["dtype"] = predictor.input.dtype
    report["metadata"] = predictor.metadata()
    if isinstance(predictor, runtime.KerasPredictor):
        report["layers"] = keras_layers(predictor.model)
    if isinstance(predictor, runtime.OnnxPredictor):
        options = predictor.session_options
        report["threads"].update(
            onnxruntime_intra_op=options.intra_op_num_threads, onnxruntime_inter_op=options.inter_op_num_threads
        )
    if isinstance(predictor, runtime.TFLitePredictor):
        report["threads"]["litert"] = predictor.num_threads
    if kind == "model_predict":
        model = predictor.model
        return (lambda x: model.predict(x, batch_size=len(x), verbose=0)), report
    if kind == "raw_onnx":
        import onnxruntime

        # A plain session on the same file, options and providers: what a hand-written server calls.
        session = onnxruntime.InferenceSession(
            os.fspath(predictor.path), predictor.session_options, providers=predictor.providers
        )
        input_name, output_names = session.get_inputs()[0].name, [session.get_outputs()[0].name]
        del predictor
        return (lambda x: session.run(output_names, {input_name: x})), report
    return predictor.predict, report


def _blas(num_threads: int | None) -> tuple[Any, list[dict[str, Any]]]:
    """Limit every BLAS / OpenMP pool loaded so far; report them."""
    import threadpoolctl

    limiter = threadpoolctl.threadpool_limits(limits=num_threads) if num_threads is not None else None
    pools = [
        {key: pool.get(key) for key in ("user_api", "internal_api", "version", "architecture", "num_threads")}
        for pool in threadpoolctl.threadpool_info()
    ]
    return limiter, pools


class WorkerProcess:
    """The parent's handle on one worker process (``python -m aideploy.bench_worker``) and its pipes.

    Its standard error goes to a log file in ``scratch``, quoted when the worker fails.
    """

    def __init__(self, label: str, spec: dict[str, Any], scratch: str, *, numpy_reference: bool = False) -> None:
        self.label = label
        self.ready: dict[str, Any] = {}
        environment = dict(os.environ)
        if numpy_reference:
            # Only this process: OpenBLAS reads these once, when NumPy loads it.
            for name in OPENBLAS_PINNING:
                environment.pop(name, None)
        self._log_path = Path(scratch) / f"worker-{len(list(Path(scratch).glob('worker-*')))}.log"
        self._log = open(self._log_path, "w+b")  # noqa: SIM115  (closed in stop)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "aideploy.bench_worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=environment, text=True,
        )  # fmt: skip

    def wait_ready(self) -> None:
        """Wait for the worker's ready message (raises ArtifactError if it could not load its model)."""
        from aideploy.errors import ArtifactError

        self.ready = self._read()
        if not self.ready.get("ready"):
            raise ArtifactError(f"cannot benchmark {self.label}: {self.ready.get('error')}")

    def measure(self, command: dict[str, Any]) -> dict[str, Any]:
        """Send one ``measure`` command; returns the worker's answer."""
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        from aideploy.errors import AideployError

        line = self._process.stdout.readline()
        if not line:
            self._process.wait()
            self._log.seek(0)
            tail = self._log.read().decode(errors="replace").strip()[-2000:]
            raise AideployError(
                f"the benchmark worker for {self.label} exited with status {self._process.returncode}: "
                f"{tail or 'no output'}"
            )
        return json.loads(line)

    def stop(self) -> None:
        """Ask the worker to exit (kill it if it does not within 30 s) and close its log."""
        if self._process.poll() is None:
            try:
                self._process.stdin.write(json.dumps({"cmd": "stop"}) + "\n")
                self._process.stdin.close()
                self._process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        self._log.close()


def main(argv: list[str] | None = None) -> int:
    """Run one worker (see the module docstring); returns the exit status."""
    spec = json.loads((argv or sys.argv[1:])[0])
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    environment = {name: os.environ.get(name) for name in OPENBLAS_PINNING}

    def answer(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    try:
        call, report = _build(spec)
        import numpy as np

        generator = np.random.default_rng(spec["seed"])
        shape, dtype = tuple(report["input_shape"]), np.dtype(report["dtype"])
        inputs = {
            batch_size: generator.random((batch_size, *shape), dtype=np.float64).astype(dtype)
            for batch_size in sorted(set(spec["batch_sizes"]) | {1})
        }
        for batch_size, x in inputs.items():  # warm up every batch size (tracing, resizing, operands)
            for _ in range(spec["warmup_calls"] if batch_size == 1 else 2):
                call(x)
        limiter, pools = _blas(spec["num_threads"])  # after the runtime loaded its libraries
        report["threads"]["blas"] = sorted({pool["num_threads"] for pool in pools})
        answer({"ready": True, **report, "blas": pools, "environment": environment, "pid": os.getpid()})
    except Exception as error:  # reported to the parent, which raises it with this text
        answer({"ready": False, "error": f"{type(error).__name__}: {error}"})
        return 1

    for line in sys.stdin:
        command = json.loads(line)
        if command.get("cmd") != "measure":
            break
        for _ in range(command["rewarm_calls"]):  # caches and spinning threads after the idle wait
            call(inputs[1])
        latency = latency_samples(call, inputs[1], command["latency_calls"], command["latency_max_seconds"])
        counts = {
            str(batch_size): throughput(call, inputs[batch_size], command["throughput_seconds"])
            for batch_size in command["batch_sizes"]
        }
        answer({"latency_s": latency, "throughput": counts})
    del limiter
    return 0


if __name__ == "__main__":
    sys.exit(main())
