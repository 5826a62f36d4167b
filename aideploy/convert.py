"""Stage 06, conversion: export a trained tf-keras model to SavedModel, ONNX and TFLite.

Notebook: ``notebooks/06_conversion.ipynb``. Command: ``aideploy convert``.

Each export is written atomically with a manifest (:mod:`aideploy.artifacts`)
that records the source model's SHA-256, the format, the converter and its
version (and the ONNX opset), and the names, shapes and dtypes of the input and
output. Every format uses the same names: the input is ``input`` with a dynamic
batch dimension, the output is ``probabilities``; so a client written against
one format works against the others.

The routes are the ones that work with tf-keras models here (see DESIGN.md):
``tf2onnx.convert.from_function`` on a ``tf.function`` that calls the model in
inference mode, ``tf.lite.TFLiteConverter.from_keras_model`` and
``tf.saved_model.save`` with an explicit serving signature. They work for plain
and pruned tf-keras models alike. A quantization-aware model (tfmot
``quantize_model``) goes to ONNX through :mod:`aideploy.qdq` instead, which
writes a QuantizeLinear/DequantizeLinear graph with TensorFlow's own scales and
zero points (tf2onnx gets them wrong; the module says how). Running the exports
is :mod:`aideploy.runtime`'s job.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aideploy import artifacts, config, qdq
from aideploy.backend import keras, native_stderr_silenced, tf
from aideploy.errors import ArtifactError, ConfigError

#: The formats :func:`export` writes, in the order the notebook introduces them.
FORMATS = ("saved_model", "onnx", "tflite")

#: ONNX opset used by default: supported by onnxruntime >= 1.14 and by TensorRT 8.6+,
#: and one of the opsets (14-18) tested with tf2onnx 1.17 here.
DEFAULT_OPSET = 17
SUPPORTED_OPSETS = range(13, 19)

#: Names of the model's input and output in every exported format.
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
#: Name of the dynamic batch dimension in the ONNX graph.
BATCH_DIMENSION = "batch"

_SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "saved_model": "_saved_model"}


@dataclass(frozen=True)
class Export:
    """One exported model.

    Attributes:
        path: The exported file (ONNX, TFLite) or folder (SavedModel).
        format: ``"saved_model"``, ``"onnx"`` or ``"tflite"``.
        sha256: SHA-256 of the export (as in its manifest).
        manifest_path: The JSON manifest beside it.
        size_bytes: Size on disk.
    """

    path: Path
    format: str
    sha256: str
    manifest_path: Path
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """The export as JSON-ready data (what ``aideploy convert`` prints)."""
        return {
            "path": str(self.path),
            "format": self.format,
            "sha256": self.sha256,
            "manifest_path": str(self.manifest_path),
            "size_bytes": self.size_bytes,
        }


def export(
    model: keras.Model | str | os.PathLike,
    format: str,
    out_dir: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    opset: int = DEFAULT_OPSET,
) -> Export:
    """Export a tf-keras model (or a ``.keras`` file) to one format.

    Introduced in ``06_conversion.ipynb``; ``aideploy convert`` calls it.

    Args:
        model: A tf-keras model, or the path of a ``.keras`` file (whose
            SHA-256 is then recorded in the export's manifest).
        format: ``"saved_model"``, ``"onnx"`` or ``"tflite"``.
        out_dir: Folder for the export (default: ``<artifacts>/exports``).
        name: Base name of the export (default: the ``.keras`` file's stem or
            the model's name), e.g. ``mlp`` -> ``mlp.onnx``.
        opset: ONNX opset (ONNX only).

    Returns:
        The :class:`Export`.

    Raises:
        ConfigError: Unknown format or unsupported opset.
        ArtifactError: The model file is missing or cannot be loaded.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}: use one of {', '.join(FORMATS)}.")
    keras_model, source = _load_source(model)
    out_dir = config.resolve_out_dir(out_dir, "exports")
    base = name or (Path(source["path"]).stem if source.get("path") else keras_model.name)
    path = out_dir / f"{base}{_SUFFIXES[format]}"
    if format == "onnx":
        return to_onnx(keras_model, path, opset=opset, source=source)
    if format == "tflite":
        return to_tflite(keras_model, path, source=source)
    return to_saved_model(keras_model, path, source=source)


def export_all(
    model: keras.Model | str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    formats: tuple[str, ...] = FORMATS,
    name: str | None = None,
    opset: int = DEFAULT_OPSET,
) -> dict[str, Export]:
    """Export a model to several formats (by default all of them).

    Introduced in ``06_conversion.ipynb``.

    Args:
        model: A tf-keras model or the path of a ``.keras`` file.
        out_dir: Folder for the exports (default: ``<artifacts>/exports``).
        formats: Which formats to write.
        name: Base name of the exports.
        opset: ONNX opset.

    Returns:
        ``{format: Export}``.

    Raises:
        ConfigError: An unknown format or unsupported opset.
        ArtifactError: The model file is missing or cannot be loaded.
    """
    keras_model, source = _load_source(model)
    if name is None and source.get("path"):
        name = Path(source["path"]).stem
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown export format(s) {unknown}: use {', '.join(FORMATS)}.")
    return {fmt: export(_Loaded(keras_model, source), fmt, out_dir, name=name, opset=opset) for fmt in formats}


def to_onnx(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    source: dict[str, Any] | None = None,
) -> Export:
    """Convert a tf-keras model to ONNX and check the result.

    A plain or pruned model is traced as ``tf.function(lambda x:
    {"probabilities": model(x, training=False)})`` with an input signature named
    ``input`` whose batch dimension is ``None`` and converted with tf2onnx, which
    names the graph's output after the dict key. A quantization-aware (tfmot)
    model becomes a QDQ graph built by :func:`aideploy.qdq.to_onnx_model` from
    its quantizers' ranges, with the same scales and zero points as its TFLite
    int8 conversion; the manifest records that route. Either way the batch
    dimension is named ``batch`` and ``onnx.checker`` validates the graph before
    it is written. Introduced in ``06_conversion.ipynb``.

    Args:
        model: A tf-keras model with one input and one output.
        path: Target ``.onnx`` file.
        opset: ONNX opset (13-18).
        source: Provenance of the model (as :func:`export` records it).

    Returns:
        The :class:`Export`.

    Raises:
        ConfigError: Unsupported opset, a model with several inputs/outputs, or
            a quantization-aware model with layers the QDQ export does not handle.
        ArtifactError: The converted graph fails ``onnx.checker``, or a
            quantization-aware model has not been trained (its ranges are unset).
    """
    import onnx

    if opset not in SUPPORTED_OPSETS:
        raise ConfigError(
            f"ONNX opset {opset} is not supported here: use one of "
            f"{SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1} (default {DEFAULT_OPSET})."
        )
    spec = _input_spec(model)
    if qdq.is_quantization_aware(model):
        model_proto, params, versions = _qat_to_onnx(model, spec, opset)
    else:
        model_proto, params, versions = _tf2onnx(model, spec, opset)
    model_proto.producer_name = "aideploy.convert.to_onnx"
    try:
        onnx.checker.check_model(model_proto, full_check=True)
    except onnx.checker.ValidationError as error:
        # tf2onnx keeps going past ops it cannot convert (continue_on_error);
        # the checker is where that surfaces.
        first_line = str(error).strip().splitlines()[0]
        raise ArtifactError(
            f"{params['converter']} produced an invalid ONNX graph for model {model.name!r} ({first_line}). "
            "Unconverted TensorFlow ops are the usual cause: other opsets "
            f"({SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1}) or the TFLite export may work."
        ) from None
    return _save(
        path,
        lambda temporary: onnx.save_model(model_proto, os.fspath(temporary)),
        fmt="onnx",
        model=model,
        source=source,
        params={"opset": opset, **params},
        versions={**versions, "onnx": onnx.__version__, "tensorflow": tf.__version__},
        extra={"opset": opset},
    )


def _tf2onnx(model: keras.Model, spec: tf.TensorSpec, opset: int) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """The tf2onnx route for plain and pruned models: graph, manifest params, versions."""
    import tf2onnx

    function = _serving_function(model, spec)
    # tf2onnx logs its version banner and graph statistics at INFO level.
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    with native_stderr_silenced():
        model_proto, _ = tf2onnx.convert.from_function(function, input_signature=(spec,), opset=opset)
    for value in (*model_proto.graph.input, *model_proto.graph.output):
        dimensions = value.type.tensor_type.shape.dim
        if dimensions and not dimensions[0].HasField("dim_value"):
            dimensions[0].dim_param = BATCH_DIMENSION
    return model_proto, {"converter": "tf2onnx.convert.from_function"}, {"tf2onnx": tf2onnx.__version__}


def _qat_to_onnx(model: keras.Model, spec: tf.TensorSpec, opset: int) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """The QDQ route for quantization-aware models: graph, manifest params, versions."""
    import tensorflow_model_optimization as tfmot

    model_proto, details = qdq.to_onnx_model(
        model, spec.shape.as_list()[1:], opset=opset, input_name=INPUT_NAME, output_name=OUTPUT_NAME,
        batch_dimension=BATCH_DIMENSION,
    )  # fmt: skip
    params = {
        "converter": "aideploy.qdq.to_onnx_model",
        "quantization": {
            "format": "QDQ",
            "route": "QuantizeLinear/DequantizeLinear built with onnx.helper from the tfmot quantizers",
            "scales_origin": qdq.SCALES_ORIGIN,
            "activations": details["activations"],
            "weights": [
                {"layer": w["layer"], "per_channel": w["per_channel"], "num_scales": len(np.atleast_1d(w["scale"]))}
                for w in details["weights"]
            ],
        },
    }
    return model_proto, params, {"tensorflow_model_optimization": tfmot.__version__}


#: Names :func:`to_tflite` accepts for its options (the ``tf.lite`` attribute names).
TFLITE_OPTIMIZATIONS = ("DEFAULT",)
TFLITE_OPS = (
    "TFLITE_BUILTINS",
    "TFLITE_BUILTINS_INT8",
    "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8",
    "SELECT_TF_OPS",
)
TFLITE_TYPES = ("float32", "float16", "int8", "uint8", "int16")


def to_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    source: dict[str, Any] | None = None,
    optimizations: tuple[str, ...] = (),
    representative_data: np.ndarray | None = None,
    supported_ops: tuple[str, ...] = (),
    supported_types: tuple[str, ...] = (),
    inference_input_type: str | None = None,
    inference_output_type: str | None = None,
    extra_params: dict[str, Any] | None = None,
) -> Export:
    """Convert a tf-keras model to a TFLite flatbuffer, float32 unless options say otherwise.

    Uses ``tf.lite.TFLiteConverter`` on the serving function. Without options,
    weights and activations stay float32; the options are the converter's own
    (``05_quantization.ipynb`` uses them for the quantized variants), given by
    name so the manifest can record them::

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8

    The flatbuffer's ``serving_default`` signature names the input ``input`` and
    the output ``probabilities``. Introduced in ``06_conversion.ipynb``.

    Args:
        model: A tf-keras model with one input and one output.
        path: Target ``.tflite`` file.
        source: Provenance of the model.
        optimizations: Names of ``tf.lite.Optimize`` members (``"DEFAULT"``).
        representative_data: Float32 inputs shaped like the model's input; the
            converter calibrates activation ranges on them one image at a time.
        supported_ops: Names of ``tf.lite.OpsSet`` members (:data:`TFLITE_OPS`).
        supported_types: ``target_spec.supported_types`` (``"float16"`` for float16 weights).
        inference_input_type: dtype of the model's input, e.g. ``"int8"`` or ``"uint8"``.
        inference_output_type: dtype of the model's output.
        extra_params: More to record in the manifest's params (a caller's method
            and settings).

    Returns:
        The :class:`Export`.

    Raises:
        ConfigError: A model with several inputs or outputs, an unknown option name.
        ModelInputError: ``representative_data`` is empty or does not fit the model's input.
    """
    spec = _input_spec(model)
    function = _serving_function(model, spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], model)
    converter.optimizations = [getattr(tf.lite.Optimize, _option(o, TFLITE_OPTIMIZATIONS, "optimization"))
                               for o in optimizations]  # fmt: skip
    if supported_ops:
        converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, _option(o, TFLITE_OPS, "op set"))
                                               for o in supported_ops]  # fmt: skip
    if supported_types:
        converter.target_spec.supported_types = [tf.as_dtype(_option(t, TFLITE_TYPES, "type")) for t in supported_types]
    if inference_input_type is not None:
        converter.inference_input_type = tf.as_dtype(_option(inference_input_type, TFLITE_TYPES, "input type"))
    if inference_output_type is not None:
        converter.inference_output_type = tf.as_dtype(_option(inference_output_type, TFLITE_TYPES, "output type"))
    if representative_data is not None:
        samples = _check_representative(representative_data, spec)
        converter.representative_dataset = lambda: ([samples[i : i + 1]] for i in range(len(samples)))
    with native_stderr_silenced():
        flatbuffer = converter.convert()
    return _save(
        path,
        lambda temporary: temporary.write_bytes(flatbuffer),
        fmt="tflite",
        model=model,
        source=source,
        params={
            "converter": "tf.lite.TFLiteConverter",
            "optimizations": list(optimizations),
            "dtype": "float32" if not optimizations else "quantized",
            "supported_ops": list(supported_ops),
            "supported_types": list(supported_types),
            "inference_input_type": inference_input_type or "float32",
            "inference_output_type": inference_output_type or "float32",
            "representative_size": 0 if representative_data is None else len(representative_data),
            **(extra_params or {}),
        },
        versions={"tensorflow": tf.__version__},
    )


def _option(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ConfigError(f"unknown TFLite {what} {value!r}: use one of {', '.join(allowed)}.")
    return value


def _check_representative(samples: Any, spec: tf.TensorSpec) -> np.ndarray:
    """The representative data as float32, checked against the model's input."""
    from aideploy.errors import ModelInputError

    samples = np.asarray(samples)
    trailing = tuple(spec.shape.as_list()[1:])
    if samples.ndim != len(trailing) + 1 or samples.shape[1:] != trailing:
        raise ModelInputError(
            f"representative data must be shaped (N, {', '.join(map(str, trailing))}) like the model's input, "
            f"got {samples.shape}: draw it from the model's own training images."
        )
    if len(samples) == 0:
        raise ModelInputError("representative data is empty: pass at least one image (100-500 is usual).")
    if not np.issubdtype(samples.dtype, np.floating):
        raise ModelInputError(
            f"representative data must be float pixels in [0, 1] like the training images, got {samples.dtype}: "
            "scale it with data.scale(x)."
        )
    return samples.astype(np.float32, copy=False)


def to_saved_model(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    source: dict[str, Any] | None = None,
) -> Export:
    """Save a tf-keras model as a TensorFlow SavedModel folder with a serving signature.

    The ``serving_default`` signature takes ``input`` (batch dimension ``None``)
    and returns ``{"probabilities": ...}``: what TensorFlow Serving, TF.js's
    converter and ``tf.saved_model.load`` expect. The folder is for inference, so
    it holds the model's variables and the signature only: saving the compiled
    Keras model itself would also write the optimizer's state (Adam keeps two
    slots a weight, which made the folder about 3x the parameters' bytes).
    Introduced in ``06_conversion.ipynb``.

    Args:
        model: A tf-keras model with one input and one output.
        path: Target folder.
        source: Provenance of the model.

    Returns:
        The :class:`Export`.

    Raises:
        ConfigError: A model with several inputs or outputs.
    """
    serve = _serving_function(model, _input_spec(model))
    # A bare module that tracks the model's variables (trainable and not) and the
    # serving function, but not the model object and hence not its optimizer.
    module = tf.Module(name=f"{model.name}_serving")
    module.model_variables = list(model.variables)
    module.serve = serve

    def write(temporary: Path) -> None:
        with native_stderr_silenced():
            tf.saved_model.save(module, os.fspath(temporary), signatures={"serving_default": serve})

    return _save(
        path,
        write,
        fmt="saved_model",
        model=model,
        source=source,
        params={"converter": "tf.saved_model.save", "signature": "serving_default", "optimizer_state": False},
        versions={"tensorflow": tf.__version__},
    )


def signature(model: keras.Model) -> dict[str, list[dict[str, Any]]]:
    """Names, shapes (``None`` = any size) and dtypes of the exports' input and output.

    Introduced in ``06_conversion.ipynb``.

    Args:
        model: A tf-keras model with one input and one output.

    Returns:
        A dict with ``inputs`` and ``outputs``, each a list of one entry with
        ``name``, ``shape`` (``None`` for the batch) and ``dtype``.

    Raises:
        ConfigError: A model with several inputs or outputs.
    """
    spec = _input_spec(model)
    output = model.outputs[0]
    return {
        "inputs": [{"name": INPUT_NAME, "shape": list(spec.shape.as_list()), "dtype": spec.dtype.name}],
        "outputs": [{"name": OUTPUT_NAME, "shape": [None, *output.shape.as_list()[1:]], "dtype": output.dtype.name}],
    }


def onnx_summary(path: str | os.PathLike) -> dict[str, Any]:
    """What is inside an ONNX file: inputs, outputs, opsets, producer and node counts by type.

    Introduced in ``06_conversion.ipynb``.

    Args:
        path: An ``.onnx`` file.

    Returns:
        A dict with ``inputs`` and ``outputs`` (lists of ``name``, ``shape``,
        ``dtype``; a dynamic dimension's entry is its name, e.g. ``"batch"``),
        ``opsets`` (domain to version), ``producer``, ``node_counts`` (operator
        type to count), ``num_nodes`` and ``num_parameters``.

    Raises:
        ArtifactError: The file is missing or is not an ONNX model.
    """
    import collections

    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX file {path} does not exist: export one with `aideploy convert`.")
    try:
        model = onnx.load(os.fspath(path))
    except Exception as error:  # protobuf's DecodeError and friends
        raise ArtifactError(f"cannot read {path} as an ONNX model ({type(error).__name__}: {error}).") from None

    def describe(value: Any) -> dict[str, Any]:
        tensor = value.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
        return {
            "name": value.name,
            "shape": shape,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
        }

    counts = collections.Counter(node.op_type for node in model.graph.node)
    return {
        "inputs": [describe(value) for value in model.graph.input],
        "outputs": [describe(value) for value in model.graph.output],
        "opsets": {entry.domain or "ai.onnx": entry.version for entry in model.opset_import},
        "producer": model.producer_name,
        "node_counts": dict(sorted(counts.items())),
        "num_nodes": len(model.graph.node),
        "num_parameters": int(sum(numpy_helper.to_array(init).size for init in model.graph.initializer)),
    }


# --- helpers ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    """A model already loaded by :func:`_load_source`, with its provenance."""

    model: keras.Model
    source: dict[str, Any]


def _load_source(model: Any) -> tuple[keras.Model, dict[str, Any]]:
    """The tf-keras model to export and what to record about where it came from."""
    if isinstance(model, _Loaded):
        return model.model, model.source
    if isinstance(model, keras.Model):
        return model, {"path": None, "sha256": None, "weights_sha256": weights_sha256(model)}
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigError(f"expected a tf-keras model or the path of a .keras file, got {type(model).__name__}.")
    path = Path(model)
    if not path.exists():
        raise ArtifactError(
            f"model file {path} does not exist: train one with `aideploy train --out DIR` "
            "or pass the path of an existing .keras file."
        )
    if path.is_dir() or path.suffix not in (".keras", ".h5"):
        raise ArtifactError(
            f"{path} is not a Keras model file: aideploy converts .keras files "
            "(written by `aideploy train` or model.save('model.keras'))."
        )
    from aideploy import train

    keras_model = train.load_model(path)
    return keras_model, {"path": str(path.resolve()), "sha256": artifacts.sha256_of(path)}


def weights_sha256(model: keras.Model) -> str:
    """A fingerprint of an in-memory model: the SHA-256 of its weights' bytes.

    Manifests record it for a model that has no file. Introduced in
    ``06_conversion.ipynb``.
    """
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()


def _input_spec(model: keras.Model) -> tf.TensorSpec:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError(
            f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs: "
            "aideploy exports models with exactly one input and one output."
        )
    tensor = model.inputs[0]
    return tf.TensorSpec((None, *tensor.shape.as_list()[1:]), tensor.dtype, name=INPUT_NAME)


def _serving_function(model: keras.Model, spec: tf.TensorSpec) -> tf.types.experimental.GenericFunction:
    """The inference graph every format exports: ``input`` -> ``{"probabilities": ...}``."""
    return tf.function(lambda x: {OUTPUT_NAME: model(x, training=False)}, input_signature=(spec,))


def _save(
    path: str | os.PathLike,
    write: Any,
    *,
    fmt: str,
    model: keras.Model,
    source: dict[str, Any] | None,
    params: dict[str, Any],
    versions: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> Export:
    source = source or {"path": None, "sha256": None, "weights_sha256": weights_sha256(model)}
    artifact, manifest = artifacts.save_artifact(
        path,
        write,
        kind=f"{fmt.replace('_', '-')}-model",
        produced_by=f"aideploy.convert.to_{fmt}",
        inputs={"source_model": source},
        params=params,
        extra={
            "format": fmt,
            **(extra or {}),
            "converter_versions": {**versions, "tf_keras": keras.__version__},
            "signature": signature(model),
        },
    )
    written = artifacts.read_manifest(artifact)
    return Export(
        path=artifact,
        format=fmt,
        sha256=written["sha256"],
        manifest_path=manifest,
        size_bytes=int(written["size_bytes"]),
    )
