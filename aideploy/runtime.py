"""Stage 06, runtimes: one predictor interface over tf-keras, SavedModel, TFLite and ONNX Runtime.

Notebook: ``notebooks/06_conversion.ipynb``.

A :class:`Predictor` is a small object with ``predict(x)`` on a NumPy batch and
metadata (``input`` / ``output``: name, shape, dtype; the runtime; its thread
setting); :func:`load` picks the predictor from the path. The ONNX Runtime and
LiteRT predictors never import TensorFlow, so the serving path stays light;
the tf-keras and SavedModel predictors import it lazily.

On top of the predictors, :func:`aideploy.parity.parity_report` compares every
runtime's outputs with the tf-keras model's on a whole test set (still importable
from here as ``runtime.parity_report``); :mod:`aideploy.bench` measures their speed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aideploy.data import IMAGE_SHAPE, NUM_FEATURES
from aideploy.errors import ArtifactError, ConfigError, ModelInputError
from aideploy.quiet import native_stderr_silenced

#: Runtime names, as :func:`load` accepts them and predictors report them.
RUNTIMES = ("keras", "saved_model", "tflite", "onnxruntime")

#: ONNX Runtime execution providers in order of preference.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

_ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (``None``: dynamic) and dtype of what ``predict`` takes or returns.

    A quantized model tensor also records ``quantized_dtype``, ``scale`` and ``zero_point``
    (real = scale * (q - zero_point)); the predictor converts, so ``dtype`` stays float32."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    quantized_dtype: str | None = None
    scale: float | None = None
    zero_point: int | None = None

    def describe(self) -> str:
        """``(N, 784) float32``: the form error messages use."""
        dims = ", ".join("N" if index == 0 else ("?" if d is None else str(d)) for index, d in enumerate(self.shape))
        quantized = self.quantized_dtype and f" ({self.quantized_dtype} inside, scale {self.scale:.6g}, zero point"
        return f"({dims}) {self.dtype}" + (f"{quantized} {self.zero_point})" if quantized else "")


class Predictor:
    """The interface every runtime implements: ``predict`` on a NumPy batch, plus metadata.

    Subclasses set ``runtime``, ``path``, ``input``, ``output`` and
    ``num_threads`` in ``__init__`` and call :meth:`_set_expected` so that
    :meth:`_check` (and the fast path of ONNX Runtime) can validate inputs with
    two cheap comparisons.

    Introduced in ``06_conversion.ipynb``.
    """

    runtime: str = ""
    path: Path | None = None
    input: TensorInfo
    output: TensorInfo
    num_threads: int | None = None

    def _set_expected(self) -> None:
        self._trailing_shape = tuple(self.input.shape[1:])
        self._dtype = np.dtype(self.input.dtype)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run the model on a batch.

        Args:
            x: A NumPy array of shape ``(N, *input.shape[1:])`` and the input's dtype.

        Returns:
            The output for the batch, e.g. ``(N, 10)`` float32 probabilities.

        Raises:
            ModelInputError: ``x`` has the wrong type, shape or dtype.
        """
        raise NotImplementedError

    def _check(self, x: Any) -> None:
        # Two attribute comparisons on the happy path; the message is built
        # only when something is wrong.
        if type(x) is not np.ndarray or x.dtype != self._dtype or x.shape[1:] != self._trailing_shape:
            raise self._input_error(x)

    def _input_error(self, x: Any) -> ModelInputError:
        expected = self.input.describe()
        where = f"{self.runtime} model {self.path.name if self.path else self.input.name!r}"
        if type(x) is not np.ndarray:
            return ModelInputError(
                f"expected a NumPy array of shape {expected} for {where}, got {type(x).__name__}: "
                f"convert it with np.asarray(x, dtype=np.{self.input.dtype})."
            )
        received = f"({', '.join(str(d) for d in x.shape)}) {x.dtype}"
        hint = ""
        if x.shape[1:] != self._trailing_shape:
            if x.shape == self._trailing_shape:
                hint = "add the batch dimension with x[None]"
            elif self._trailing_shape == (NUM_FEATURES,):
                hint = "flatten the images with data.flatten(x) or data.preprocess(x, 'mlp')"
            elif self._trailing_shape == (*IMAGE_SHAPE, 1):
                hint = "reshape the images with data.to_image_tensor(x) or data.preprocess(x, 'cnn')"
            else:
                hint = f"reshape it to (N, {', '.join(map(str, self._trailing_shape))})"
        elif np.issubdtype(x.dtype, np.integer) and np.issubdtype(self._dtype, np.floating):
            hint = "scale the pixels to floats in [0, 1] with data.scale(x)"
        else:
            hint = f"cast it with x.astype(np.{self.input.dtype})"
        return ModelInputError(f"expected input of shape {expected} for {where}, got {received}: {hint}.")

    def metadata(self) -> dict[str, Any]:
        """What the predictor runs and how: runtime, path, input/output, threads.

        Returns:
            JSON-ready data.
        """
        return {
            "runtime": self.runtime,
            "path": str(self.path) if self.path else None,
            "input": asdict(self.input),
            "output": asdict(self.output),
            "num_threads": self.num_threads,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path.name if self.path else ''!s}: "
            f"{self.input.name} {self.input.describe()} -> {self.output.name} {self.output.describe()})"
        )


class OnnxPredictor(Predictor):
    """ONNX Runtime: ``InferenceSession.run`` with the best installed execution provider.

    Providers are taken in the order TensorRT > CUDA > CPU from those installed
    (``onnxruntime.get_available_providers()``); :attr:`providers` reports the
    ones the session really uses. Introduced in ``06_conversion.ipynb``.
    """

    runtime = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        num_threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        import onnxruntime

        self.path = _existing(path)
        self.num_threads = num_threads
        self.session_options = onnxruntime.SessionOptions()
        if num_threads is not None:
            self.session_options.intra_op_num_threads = check_threads(num_threads)
            self.session_options.inter_op_num_threads = 1
        self.available_providers = list(onnxruntime.get_available_providers())
        requested = list(providers) if providers is not None else choose_providers(self.available_providers)
        try:
            self.session = onnxruntime.InferenceSession(
                os.fspath(self.path), self.session_options, providers=requested
            )
        except Exception as error:  # onnxruntime raises its own pybind error types.
            raise ArtifactError(
                f"cannot load {self.path} with ONNX Runtime ({type(error).__name__}: {error}). "
                "Check that it is a complete .onnx file, or export it again with "
                "`aideploy convert MODEL --to onnx`."
            ) from None
        self.providers = self.session.get_providers()
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ArtifactError(f"{self.path} has {len(inputs)} inputs: aideploy runs single-input models.")
        self.input = _onnx_info(inputs[0])
        self.output = _onnx_info(outputs[0])
        self._input_name = self.input.name
        self._output_names = [self.output.name]
        self._set_expected()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run the model on a batch (see :meth:`Predictor.predict`)."""
        if type(x) is not np.ndarray or x.dtype != self._dtype or x.shape[1:] != self._trailing_shape:
            raise self._input_error(x)
        return self.session.run(self._output_names, {self._input_name: x})[0]

    def metadata(self) -> dict[str, Any]:
        """See :meth:`Predictor.metadata`; adds the execution providers."""
        return {
            **super().metadata(),
            "providers": self.providers,
            "available_providers": self.available_providers,
        }


class TFLitePredictor(Predictor):
    """TFLite flatbuffers run with LiteRT's interpreter (``ai_edge_litert``).

    The interpreter has fixed tensor shapes; the predictor resizes the input
    when the batch size changes, so the same object serves batch 1 and batch
    4096. Introduced in ``06_conversion.ipynb``.
    """

    runtime = "tflite"

    def __init__(self, path: str | os.PathLike, *, num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = _existing(path)
        self.num_threads = num_threads
        try:
            # LiteRT's native code prints "INFO: Created TensorFlow Lite XNNPACK
            # delegate for CPU." when the first tensors are allocated: noise here.
            with native_stderr_silenced():
                self.interpreter = Interpreter(
                    model_path=os.fspath(self.path),
                    num_threads=check_threads(num_threads) if num_threads is not None else None,
                )
                self.interpreter.allocate_tensors()
        except Exception as error:
            raise ArtifactError(
                f"cannot load {self.path} with LiteRT ({type(error).__name__}: {error}). "
                "Check that it is a complete .tflite file, or export it again with "
                "`aideploy convert MODEL --to tflite`."
            ) from None
        input_detail = self.interpreter.get_input_details()[0]
        output_detail = self.interpreter.get_output_details()[0]
        # The signature holds the names the exporter chose ("input",
        # "probabilities"); tensor names are internal ("serving_default_input:0").
        input_name, output_name = input_detail["name"], output_detail["name"]
        signatures = self.interpreter.get_signature_list()
        if len(signatures) == 1:
            only = next(iter(signatures.values()))
            if len(only.get("inputs", [])) == 1 and len(only.get("outputs", [])) == 1:
                input_name, output_name = only["inputs"][0], only["outputs"][0]
        self.input = _tflite_info(input_name, input_detail)
        self.output = _tflite_info(output_name, output_detail)
        self._input_index = input_detail["index"]
        self._output_index = output_detail["index"]
        self._batch_size = int(input_detail["shape"][0])
        self._set_expected()
        # predict takes and returns floats: it (de)quantizes an integer input and output itself.
        quantized = self.input.quantized_dtype
        self._input_quantization = (self.input.scale, self.input.zero_point, np.dtype(quantized)) if quantized else None
        self._output_quantization = (self.output.scale, self.output.zero_point) if self.output.quantized_dtype else None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run the model on a batch (see :meth:`Predictor.predict`)."""
        if type(x) is not np.ndarray or x.dtype != self._dtype or x.shape[1:] != self._trailing_shape:
            raise self._input_error(x)
        if x.shape[0] != self._batch_size:
            self.interpreter.resize_tensor_input(self._input_index, x.shape)
            self.interpreter.allocate_tensors()
            self._batch_size = x.shape[0]
        if self._input_quantization is not None:
            scale, zero_point, dtype = self._input_quantization
            limits = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zero_point, limits.min, limits.max).astype(dtype)
        self.interpreter.set_tensor(self._input_index, x)
        self.interpreter.invoke()
        output = self.interpreter.get_tensor(self._output_index)
        if self._output_quantization is not None:
            scale, zero_point = self._output_quantization
            return (output.astype(np.float32) - zero_point) * np.float32(scale)
        return output


class KerasPredictor(Predictor):
    """A tf-keras model, called through a ``tf.function`` traced once for any batch size.

    This is the fast way to call a Keras model on NumPy batches (no
    ``model.predict`` loop, no retracing); the benchmark shows ``model.predict``
    beside it. Introduced in ``06_conversion.ipynb``.
    """

    runtime = "keras"

    def __init__(self, model: Any, *, path: str | os.PathLike | None = None, num_threads: int | None = None):
        from aideploy.backend import tf

        self.model = model
        self.path = Path(path) if path is not None else None
        self.num_threads = _tensorflow_threads(num_threads)
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ConfigError(f"model {model.name!r} must have exactly one input and one output.")
        tensor = model.inputs[0]
        spec = tf.TensorSpec((None, *tensor.shape.as_list()[1:]), tensor.dtype, name="input")
        self._function = tf.function(lambda x: model(x, training=False), input_signature=(spec,))
        output = model.outputs[0]
        self.input = TensorInfo(model.input_names[0], tuple(spec.shape.as_list()), tensor.dtype.name)
        self.output = TensorInfo(
            model.output_names[0], (None, *output.shape.as_list()[1:]), output.dtype.name
        )
        self._set_expected()

    @classmethod
    def from_path(cls, path: str | os.PathLike, *, num_threads: int | None = None) -> KerasPredictor:
        """Load a ``.keras`` file (checked against its manifest when there is one).

        Raises:
            ArtifactError: The file is missing or cannot be loaded.
        """
        from aideploy import train

        path = _existing(path)
        model = train.load_model(path)
        return cls(model, path=path, num_threads=num_threads)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run the model on a batch (see :meth:`Predictor.predict`)."""
        self._check(x)
        return self._function(x).numpy()


class SavedModelPredictor(Predictor):
    """A TensorFlow SavedModel folder, called through its ``serving_default`` signature.

    Introduced in ``06_conversion.ipynb``.
    """

    runtime = "saved_model"

    def __init__(self, path: str | os.PathLike, *, num_threads: int | None = None) -> None:
        from aideploy.backend import tf

        self.path = _existing(path)
        self.num_threads = _tensorflow_threads(num_threads)
        try:
            with native_stderr_silenced():
                self._loaded = tf.saved_model.load(os.fspath(self.path))
            self._function = self._loaded.signatures["serving_default"]
        except Exception as error:
            raise ArtifactError(
                f"cannot load {self.path} as a SavedModel with a serving_default signature "
                f"({type(error).__name__}: {error}). Export it again with "
                "`aideploy convert MODEL --to saved_model`."
            ) from None
        _, input_specs = self._function.structured_input_signature
        output_specs = self._function.structured_outputs
        if len(input_specs) != 1 or len(output_specs) != 1:
            raise ArtifactError(
                f"{self.path}'s serving signature has {len(input_specs)} inputs and "
                f"{len(output_specs)} outputs: aideploy runs single-input, single-output models."
            )
        ((self._input_key, input_spec),) = input_specs.items()
        ((self._output_key, output_spec),) = output_specs.items()
        self.input = TensorInfo(self._input_key, tuple(input_spec.shape.as_list()), input_spec.dtype.name)
        self.output = TensorInfo(self._output_key, tuple(output_spec.shape.as_list()), output_spec.dtype.name)
        self._tf = tf
        self._set_expected()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run the model on a batch (see :meth:`Predictor.predict`)."""
        self._check(x)
        return self._function(**{self._input_key: self._tf.constant(x)})[self._output_key].numpy()


def load(
    source: Any,
    runtime: str | None = None,
    *,
    num_threads: int | None = None,
    providers: Sequence[str] | None = None,
) -> Predictor:
    """Load a model into the predictor of its runtime.

    The runtime follows from the path: ``.onnx`` -> ONNX Runtime, ``.tflite`` ->
    LiteRT, a folder with ``saved_model.pb`` -> SavedModel, ``.keras`` / ``.h5``
    -> tf-keras; an in-memory tf-keras model gives a tf-keras predictor.
    Introduced in ``06_conversion.ipynb``.

    Args:
        source: A path, or a tf-keras model.
        runtime: Force a runtime (one of :data:`RUNTIMES`) instead of guessing it.
        num_threads: Threads the runtime may use for one call (ONNX Runtime's
            intra-op threads, LiteRT's ``num_threads``; TensorFlow's threads can
            only be set before it starts, see :attr:`Predictor.num_threads`).
            ``None`` keeps the runtime's default.
        providers: ONNX Runtime execution providers (default: the best
            installed, see :func:`choose_providers`).

    Returns:
        The :class:`Predictor`.

    Raises:
        ArtifactError: The path is missing, of an unknown kind or unreadable.
        ConfigError: Unknown runtime or invalid thread count.
    """
    if isinstance(source, Predictor):
        return source
    if not isinstance(source, (str, os.PathLike)):
        if hasattr(source, "inputs") and hasattr(source, "predict"):
            return KerasPredictor(source, num_threads=num_threads)
        raise ConfigError(f"expected a model path or a tf-keras model, got {type(source).__name__}.")
    path = _existing(source)
    runtime = runtime or runtime_of(path)
    if runtime == "onnxruntime":
        return OnnxPredictor(path, num_threads=num_threads, providers=providers)
    if runtime == "tflite":
        return TFLitePredictor(path, num_threads=num_threads)
    if runtime == "saved_model":
        return SavedModelPredictor(path, num_threads=num_threads)
    if runtime == "keras":
        return KerasPredictor.from_path(path, num_threads=num_threads)
    raise ConfigError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}.")


def runtime_of(path: str | os.PathLike) -> str:
    """The runtime that runs a model file or folder, from its suffix or contents.

    Args:
        path: A ``.onnx``, ``.tflite``, ``.keras`` / ``.h5`` file or a SavedModel folder.

    Returns:
        One of :data:`RUNTIMES`.

    Raises:
        ArtifactError: The path is of no known kind.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        raise ArtifactError(
            f"{path} is a folder without saved_model.pb, so not a SavedModel: pass a "
            ".onnx, .tflite or .keras file or a SavedModel folder."
        )
    kinds = {".onnx": "onnxruntime", ".tflite": "tflite", ".keras": "keras", ".h5": "keras"}
    if path.suffix in kinds:
        return kinds[path.suffix]
    raise ArtifactError(
        f"cannot tell which runtime runs {path.name!r}: expected a .onnx, .tflite or .keras "
        "file or a SavedModel folder."
    )


def find_models(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into model paths (for ``aideploy bench MODEL_OR_DIR...``).

    A SavedModel folder is a model; any other folder contributes the ``.keras``,
    ``.onnx`` and ``.tflite`` files and SavedModel folders directly inside it.

    Args:
        paths: Model files or folders.

    Returns:
        Model paths, in a stable order.

    Raises:
        ArtifactError: A path is missing, or a folder holds no model.
    """
    found: list[Path] = []
    for item in paths:
        path = _existing(item)
        if path.is_file() or (path / "saved_model.pb").is_file():
            runtime_of(path)
            found.append(path)
            continue
        inside = sorted(
            p
            for p in path.iterdir()
            if (p.is_file() and p.suffix in (".keras", ".onnx", ".tflite"))
            or (p / "saved_model.pb").is_file()
        )
        if not inside:
            raise ArtifactError(
                f"folder {path} holds no model (.keras, .onnx, .tflite or a SavedModel folder)."
            )
        found.extend(inside)
    return found


def choose_providers(available: Sequence[str] | None = None) -> list[str]:
    """ONNX Runtime execution providers in the order TensorRT > CUDA > CPU, from those installed.

    Introduced in ``06_conversion.ipynb``.

    Args:
        available: Installed providers (default: ``onnxruntime.get_available_providers()``).

    Returns:
        The preferred providers that are available, best first (CPU always last).
    """
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    chosen = [name for name in PROVIDER_PREFERENCE if name in available]
    return chosen or ["CPUExecutionProvider"]


# --- helpers ----------------------------------------------------------------------


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise ArtifactError(
            f"model path {path} does not exist: export one with `aideploy convert MODEL --to FORMAT "
            "--out DIR`, or check the path."
        )
    return path


def check_threads(num_threads: int) -> int:
    """Validate a thread count (a whole number of at least 1).

    Args:
        num_threads: The requested number of threads.

    Returns:
        It, as an ``int``.

    Raises:
        ConfigError: It is not a whole number of at least 1.
    """
    if not isinstance(num_threads, (int, np.integer)) or isinstance(num_threads, bool) or num_threads < 1:
        raise ConfigError(f"num_threads must be a whole number of at least 1 (or None), got {num_threads!r}.")
    return int(num_threads)


def _tensorflow_threads(num_threads: int | None) -> int | None:
    """Apply a thread count to TensorFlow if it has not started yet; report what it uses.

    TensorFlow fixes its thread pools when it starts (``aideploy.backend``
    starts it on import), so a later request is recorded but may not apply.
    """
    from aideploy.backend import tf

    if num_threads is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(check_threads(num_threads))
        except RuntimeError:
            pass
    value = tf.config.threading.get_intra_op_parallelism_threads()
    return value or None


def _onnx_info(node: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else None for d in node.shape)
    dtype = _ONNX_TYPES.get(node.type)
    return TensorInfo(node.name, shape, np.dtype(dtype).name if dtype else node.type)


def _tflite_info(name: str, detail: Mapping[str, Any]) -> TensorInfo:
    signature = detail.get("shape_signature", detail["shape"])
    # The predictor resizes the input to each batch, so the batch dimension is
    # dynamic even when the flatbuffer was converted with a fixed batch of 1.
    shape = (None, *(None if int(d) < 0 else int(d) for d in signature[1:]))
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.issubdtype(dtype, np.integer) and scale:
        return TensorInfo(name, shape, "float32", dtype.name, float(scale), int(zero_point))
    return TensorInfo(name, shape, dtype.name)


def __getattr__(name: str) -> Any:
    # The parity code moved to aideploy.parity; notebooks and scripts that call
    # runtime.parity_report keep working. Imported lazily: parity imports this module.
    if name in ("ParityReport", "ParityRow", "Tolerance", "parity_report"):
        from aideploy import parity

        return getattr(parity, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
