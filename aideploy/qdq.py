"""Stage 06, conversion: a quantization-aware (tfmot) model as an ONNX QDQ graph.

Notebook: ``notebooks/06_conversion.ipynb`` (and ``05_quantization.ipynb`` for
quantization-aware training). :func:`aideploy.convert.to_onnx` calls
:func:`to_onnx_model` for every model that :func:`is_quantization_aware` says
was made by ``tfmot.quantization.keras.quantize_model``.

**Why not tf2onnx.** A QAT model's inference graph holds
``FakeQuantWithMinMaxVars`` ops (per channel for Conv2D kernels). tf2onnx 1.17
converts them poorly:

- its handler refuses ``narrow_range=True`` (every tfmot weight quantizer is
  symmetric and narrow-range) and it has no handler for
  ``FakeQuantWithMinMaxVarsPerChannel``; the weights convert only because
  TensorFlow constant-folds their fake-quant into plain float32 constants.
  ONNX Runtime (1.2x and later, graph optimization level "basic" and up) then
  sees MatMuls with float weights inside a QDQ graph and quantizes those weights
  a second time with its own asymmetric per-tensor scale (its
  ``MatMulAddFusion``), which moves every weight off TensorFlow's grid. That,
  not the activations, is why a QAT MLP exported with tf2onnx agreed with
  tf-keras on only 89-99.4% of the test images, depending on the weights (with
  graph optimizations disabled the same file agrees to 2e-7);
- it computes the zero point with ``np.around`` (half to even) instead of
  TensorFlow's nudging (half away from zero, clamped to the quantized range),
  uses uint8 where TFLite uses int8, and divides by zero on an untrained model's
  unset input range (AllValuesQuantizer starts at min = max = 0).

**What this module does instead.** Fixing tf2onnx's output afterwards would
mean mapping its generated node names back to Keras layers to find each
weight's quantizer, and converting the TFLite int8 model with
``tf2onnx.convert.from_tflite`` yields a graph with TFLite's tensor names and a
requantized softmax output that the QAT model does not have. The QAT models
here are chains of Dense, Conv2D, MaxPooling2D, Flatten and Dropout layers, so
this module builds the QDQ graph itself with ``onnx.helper``, straight from the
tfmot quantizer variables:

- every quantizer's min/max is nudged exactly as
  ``tf.quantization.fake_quant_with_min_max_vars`` does (``Nudge`` in
  TensorFlow's ``fake_quant_ops_functor.h``), in float32, and written as an int8
  scale and zero point (TFLite's convention: zero point = nudged uint8 zero
  point - 128);
- activations (the QuantizeLayer's input range, each layer's pre/post-activation
  range) become QuantizeLinear -> DequantizeLinear pairs, per tensor;
- weights are quantized once, here, to int8 (symmetric, narrow range: zero point
  0, values in [-127, 127]) and stored as int8 initializers behind a
  DequantizeLinear: per tensor for Dense kernels, per output channel for Conv2D
  kernels (axis 0 of ONNX's OIHW layout), as tfmot's default 8-bit scheme and
  the TFLite converter do;
- biases are int32 with scale = input scale x weight scale and zero point 0,
  as TFLite stores them, so an integer engine needs no float bias.

The result has the same scales and zero points as the TFLite int8 model that
``TFLiteConverter`` (``optimizations=[tf.lite.Optimize.DEFAULT]``) makes from the
same QAT model: the form ONNX Runtime's QDQ kernels and TensorRT's explicit
quantization read. The softmax output stays float, as in the QAT model itself
(TFLite's int8 softmax adds a 1/256 output quantization of its own). One caveat
for TensorRT: it takes int8 Q/DQ with zero points of 0 only, while tfmot's
default scheme quantizes activations asymmetrically (non-zero zero points); a
model meant for TensorRT needs symmetric activation quantizers (a custom
``QuantizeConfig``) before this export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aideploy.errors import ArtifactError, ConfigError

#: Where the QDQ scales and zero points come from (recorded in the manifest).
SCALES_ORIGIN = (
    "tfmot quantizer min/max variables, nudged as tf.quantization.fake_quant_with_min_max_vars does "
    "(TFLite int8 convention: zero point = nudged uint8 zero point - 128)"
)

#: What aideploy tells a user whose QAT model it cannot turn into a QDQ graph.
WORKING_ROUTE = (
    "export it to TFLite int8 instead (tf.lite.TFLiteConverter.from_keras_model(model) with "
    "optimizations=[tf.lite.Optimize.DEFAULT]), or build the model from Dense, Conv2D, "
    "MaxPooling2D, Flatten and Dropout layers"
)

_ACTIVATIONS = ("linear", "relu", "softmax")
_TFMOT = "tensorflow_model_optimization."


@dataclass(frozen=True)
class FakeQuantParameters:
    """TensorFlow's nudged fake-quant range as an int8 scale and zero point.

    Attributes:
        scale: float32 scale (one value, or one per channel).
        zero_point: int8 zero point (same shape as ``scale``).
        nudged_min: Lowest value the fake-quant op outputs.
        nudged_max: Highest value the fake-quant op outputs.
        inverse_scale: TensorFlow's separately computed ``1 / scale``.
        quant_min: Lowest unsigned quantized value (1 with ``narrow_range``, else 0).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    nudged_min: np.ndarray
    nudged_max: np.ndarray
    inverse_scale: np.ndarray
    quant_min: int


def fake_quant_parameters(
    min_value: Any, max_value: Any, *, num_bits: int = 8, narrow_range: bool = False
) -> FakeQuantParameters:
    """The scale and zero point that TensorFlow's fake-quant ops use for a range.

    Reproduces ``Nudge`` of ``tensorflow/core/kernels/fake_quant_ops_functor.h``
    in float32: scale = (max - min) / (quant_max - quant_min); the zero point
    ``quant_min - min / scale`` is rounded half away from zero and clamped to
    the quantized range, so that 0.0 is exactly representable. Works element-wise
    for per-channel ranges. Introduced in ``06_conversion.ipynb``.

    Args:
        min_value: The quantizer's ``min`` variable (scalar or per channel).
        max_value: The quantizer's ``max`` variable.
        num_bits: Quantized bits (tfmot's default scheme uses 8).
        narrow_range: Quantize to [1, 2^bits - 1] instead of [0, 2^bits - 1].

    Returns:
        The :class:`FakeQuantParameters`, zero point in int8 convention.

    Raises:
        ConfigError: ``num_bits`` is not 8.
        ArtifactError: A range is empty (max <= min) or not finite.
    """
    if num_bits != 8:
        raise ConfigError(f"only 8-bit quantizers can be exported as int8 QDQ, got num_bits={num_bits}.")
    minimum = np.asarray(min_value, dtype=np.float32)
    maximum = np.asarray(max_value, dtype=np.float32)
    if not (np.all(np.isfinite(minimum)) and np.all(np.isfinite(maximum)) and np.all(maximum > minimum)):
        raise ArtifactError(f"empty or non-finite quantization range [{minimum}, {maximum}]")
    quant_min = np.float32(1 if narrow_range else 0)
    quant_max = np.float32((1 << num_bits) - 1)
    scale = (maximum - minimum) / (quant_max - quant_min)
    inverse_scale = (quant_max - quant_min) / (maximum - minimum)
    zero_point_from_min = quant_min - minimum / scale
    # std::round rounds half away from zero; the value is >= quant_min >= 0 where it is used.
    rounded = np.floor(zero_point_from_min.astype(np.float64) + 0.5).astype(np.float32)
    nudged_zero_point = np.clip(rounded, quant_min, quant_max)
    return FakeQuantParameters(
        scale=scale.astype(np.float32),
        zero_point=(nudged_zero_point - np.float32(128)).astype(np.int8),
        nudged_min=((quant_min - nudged_zero_point) * scale).astype(np.float32),
        nudged_max=((quant_max - nudged_zero_point) * scale).astype(np.float32),
        inverse_scale=inverse_scale.astype(np.float32),
        quant_min=int(quant_min),
    )


def quantize_weights(values: np.ndarray, parameters: FakeQuantParameters) -> np.ndarray:
    """Quantize weights to int8 exactly as TensorFlow's fake-quant op rounds them.

    TensorFlow computes ``floor((clamp(w) - nudged_min) * inverse_scale + 0.5)``
    in float32; the int8 value is that step count plus ``quant_min - 128``, so
    ``(q - zero_point) * scale`` is the fake-quantized weight. Per-channel
    parameters apply along the last axis (TensorFlow's convention).

    Args:
        values: float32 weights.
        parameters: The quantizer's :func:`fake_quant_parameters`.

    Returns:
        int8 weights of the same shape.
    """
    values = np.asarray(values, dtype=np.float32)
    clamped = np.maximum(np.minimum(values, parameters.nudged_max), parameters.nudged_min)
    steps = np.floor((clamped - parameters.nudged_min) * parameters.inverse_scale + np.float32(0.5))
    return (steps + np.float32(parameters.quant_min - 128)).astype(np.int8)


def is_quantization_aware(model: Any) -> bool:
    """Whether a tf-keras model was made quantization-aware by tfmot.

    True when any layer is a tfmot ``QuantizeLayer`` or ``QuantizeWrapper``
    (``quantize_model`` adds both). Plain and pruned models (after
    ``strip_pruning``) have neither. Introduced in ``06_conversion.ipynb``.

    Args:
        model: A tf-keras model.

    Returns:
        ``True`` for a quantization-aware model.
    """
    layers = [layer for layer in getattr(model, "layers", ()) if type(layer).__module__.startswith(_TFMOT)]
    if not layers:  # plain and pruned models never import tfmot here
        return False
    import tensorflow_model_optimization as tfmot

    # QuantizeLayer is not part of tfmot's public API; its class name and module identify it.
    return any(
        isinstance(layer, tfmot.quantization.keras.QuantizeWrapper) or type(layer).__name__ == "QuantizeLayer"
        for layer in layers
    )


@dataclass
class _Graph:
    """The ONNX graph under construction and what the manifest records about it."""

    nodes: list[Any] = field(default_factory=list)
    initializers: list[Any] = field(default_factory=list)
    activations: list[dict[str, Any]] = field(default_factory=list)
    weights: list[dict[str, Any]] = field(default_factory=list)

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str, **attributes: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attributes))
        return output


def to_onnx_model(model: Any, input_shape: list[int | None], *, opset: int, input_name: str,
                  output_name: str, batch_dimension: str) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Build the ONNX QDQ graph of a tfmot quantization-aware tf-keras model.

    Walks the model's chain of layers and writes each as ONNX operators with
    QuantizeLinear/DequantizeLinear where tfmot fake-quantizes (see the module
    docstring). Introduced in ``06_conversion.ipynb``;
    :func:`aideploy.convert.to_onnx` calls it.

    Args:
        model: A model that :func:`is_quantization_aware`.
        input_shape: The input's shape without the batch dimension.
        opset: ONNX opset (13 or later: per-axis DequantizeLinear).
        input_name: Name of the graph input.
        output_name: Name of the graph output.
        batch_dimension: Name of the dynamic batch dimension.

    Returns:
        ``(onnx.ModelProto, details)`` where ``details`` lists each activation's
        and weight's scale and zero point for the manifest.

    Raises:
        ConfigError: A layer, activation or quantizer the QDQ export does not
            handle (the message names the TFLite route that does).
        ArtifactError: A quantizer's range is unset: the model has not been
            trained (or calibrated) yet.
    """
    from onnx import TensorProto, helper

    graph = _Graph()
    state = _State(tensor=input_name, layout="NHWC" if len(input_shape) == 3 else "flat", scale=None)
    previous_output = model.inputs[0]
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        if layer.input is not previous_output:
            raise ConfigError(
                f"layer {layer.name!r} of model {model.name!r} does not take the previous layer's output: "
                f"the QDQ export handles a chain of layers only; {WORKING_ROUTE}."
            )
        previous_output = layer.output
        _add_layer(graph, state, layer, model.name)
    if state.layout == "NCHW":
        state.tensor = graph.node("Transpose", [state.tensor], f"{model.name}/to_nhwc", perm=[0, 2, 3, 1])
    graph.node("Identity", [state.tensor], output_name)

    output_shape = [batch_dimension, *model.outputs[0].shape.as_list()[1:]]
    onnx_graph = helper.make_graph(
        graph.nodes,
        f"{model.name}_qdq",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch_dimension, *input_shape])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, output_shape)],
        graph.initializers,
    )
    opset_ids = [helper.make_opsetid("", opset)]
    onnx_model = helper.make_model(
        onnx_graph, opset_imports=opset_ids, ir_version=helper.find_min_ir_version_for(opset_ids)
    )
    return onnx_model, {"activations": graph.activations, "weights": graph.weights}


@dataclass
class _State:
    """The current tensor, its layout and its activation scale (None: float)."""

    tensor: str
    layout: str
    scale: float | None


def _add_layer(graph: _Graph, state: _State, layer: Any, model_name: str) -> None:
    kind = type(layer).__name__
    if kind == "QuantizeLayer":
        if layer.quantizer is not None:
            _quantize_activation(graph, state, layer.quantizer, layer.quantizer_vars, f"{layer.name}/input", model_name)
        return
    wrapper = layer if hasattr(layer, "_weight_vars") else None
    inner = layer.layer if wrapper is not None else layer
    inner_kind = type(inner).__name__
    name = layer.name
    if inner_kind in ("Dropout", "SpatialDropout2D"):
        pass  # inference mode: identity
    elif inner_kind == "Flatten":
        if state.layout == "NCHW":  # Keras flattens in NHWC order
            state.tensor = graph.node("Transpose", [state.tensor], f"{name}/to_nhwc", perm=[0, 2, 3, 1])
            state.layout = "NHWC"
        state.tensor = graph.node("Flatten", [state.tensor], f"{name}/flatten", axis=1)
        state.layout = "flat"
    elif inner_kind == "MaxPooling2D":
        _to_nchw(graph, state, name)
        config = inner.get_config()
        state.tensor = graph.node(
            "MaxPool", [state.tensor], f"{name}/max_pool",
            kernel_shape=list(config["pool_size"]), strides=list(config["strides"]),
            auto_pad=_auto_pad(config["padding"]),
        )  # fmt: skip
    elif inner_kind in ("Dense", "Conv2D") and wrapper is not None:
        _add_weighted_layer(graph, state, wrapper, inner, model_name)
    else:
        raise ConfigError(
            f"layer {name!r} ({inner_kind}) of quantization-aware model {model_name!r} is not handled by "
            f"the QDQ ONNX export; {WORKING_ROUTE}."
        )
    if wrapper is not None and wrapper._output_quantizers:
        _quantize_activation(
            graph, state, wrapper._output_quantizers[0], wrapper._output_quantizer_vars, f"{name}/output", model_name
        )


def _add_weighted_layer(graph: _Graph, state: _State, wrapper: Any, layer: Any, model_name: str) -> None:
    name = wrapper.name
    kind = type(layer).__name__
    # After a call the wrapper has replaced ``layer.kernel`` by its fake-quantized
    # tensor, so the variable is found among the wrapper's quantized weights.
    kernels = [entry for entry in wrapper._weight_vars if entry[0].name.split("/")[-1].startswith("kernel")]
    if len(kernels) != 1:
        raise ConfigError(f"layer {name!r} has no kernel quantizer: {WORKING_ROUTE}.")
    kernel_variable, quantizer, variables = kernels[0]
    config = quantizer.get_config()
    if not config.get("symmetric") or not config.get("narrow_range"):
        raise ConfigError(
            f"layer {name!r}'s kernel quantizer is not symmetric and narrow-range ({config}): int8 QDQ weights "
            f"need a zero point of 0; {WORKING_ROUTE}."
        )
    parameters = _parameters(variables, config, f"{name}'s kernel", model_name)
    kernel = kernel_variable.numpy()
    quantized_kernel = quantize_weights(kernel, parameters)
    per_channel = parameters.scale.ndim == 1
    if kind == "Dense":
        if state.layout != "flat":
            raise ConfigError(f"Dense layer {name!r} needs a flat input (add a Flatten layer): {WORKING_ROUTE}.")
        axis = 1  # Dense kernels are (inputs, units): units are the last axis
    else:
        quantized_kernel = quantized_kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        axis = 0
    weight = graph.node(
        "DequantizeLinear",
        [graph.constant(f"{name}/kernel_quantized", quantized_kernel),
         graph.constant(f"{name}/kernel_scale", parameters.scale),
         graph.constant(f"{name}/kernel_zero_point", parameters.zero_point)],
        f"{name}/kernel", **({"axis": axis} if per_channel else {}),
    )  # fmt: skip
    graph.weights.append(
        {"layer": name, "per_channel": per_channel, "scale": parameters.scale.tolist(),
         "zero_point": parameters.zero_point.tolist()}
    )  # fmt: skip
    bias = _bias(graph, state, layer, name, parameters.scale)
    if kind == "Dense":
        output = graph.node("MatMul", [state.tensor, weight], f"{name}/matmul")
        if bias is not None:
            output = graph.node("Add", [output, bias], f"{name}/bias_add")
    else:
        _to_nchw(graph, state, name)
        layer_config = layer.get_config()
        if layer_config.get("groups", 1) != 1 or layer_config.get("data_format") != "channels_last":
            raise ConfigError(f"Conv2D layer {name!r} uses groups or channels_first: {WORKING_ROUTE}.")
        output = graph.node(
            "Conv", [state.tensor, weight, *([bias] if bias is not None else [])], f"{name}/conv",
            kernel_shape=list(layer_config["kernel_size"]), strides=list(layer_config["strides"]),
            dilations=list(layer_config["dilation_rate"]), auto_pad=_auto_pad(layer_config["padding"]),
        )  # fmt: skip
    state.tensor = output
    state.scale = None
    activations = wrapper._quantize_activations
    if len(activations) != 1:
        raise ConfigError(f"layer {name!r} has {len(activations)} activation quantizers: {WORKING_ROUTE}.")
    activation = activations[0]
    activation_name = getattr(activation.activation, "__name__", type(activation.activation).__name__)
    if activation_name not in _ACTIVATIONS:
        raise ConfigError(
            f"layer {name!r} uses activation {activation_name!r}; the QDQ export handles "
            f"{', '.join(_ACTIVATIONS)}: {WORKING_ROUTE}."
        )
    if activation._should_pre_quantize():
        _quantize_activation(
            graph, state, activation.quantizer, activation._pre_activation_vars, f"{name}/pre_activation", model_name
        )
    if activation_name == "relu":
        state.tensor = graph.node("Relu", [state.tensor], f"{name}/relu")
    elif activation_name == "softmax":
        axis = -1 if state.layout != "NCHW" else 1
        state.tensor = graph.node("Softmax", [state.tensor], f"{name}/softmax", axis=axis)
    if activation._should_post_quantize():
        _quantize_activation(
            graph, state, activation.quantizer, activation._post_activation_vars, f"{name}/post_activation", model_name
        )


def _bias(graph: _Graph, state: _State, layer: Any, name: str, weight_scale: np.ndarray) -> str | None:
    """The layer's bias: int32 behind a DequantizeLinear when the input is quantized (as TFLite stores it)."""
    if not getattr(layer, "use_bias", False) or layer.bias is None:
        return None
    bias = layer.bias.numpy().astype(np.float32)
    if state.scale is None:
        return graph.constant(f"{name}/bias", bias)
    scale = (np.float32(state.scale) * weight_scale).astype(np.float32)
    scale = np.broadcast_to(scale, bias.shape).astype(np.float32) if scale.ndim else scale
    limit = np.iinfo(np.int32)
    quantized = np.clip(np.round(bias.astype(np.float64) / scale), limit.min, limit.max).astype(np.int32)
    per_channel = scale.ndim == 1
    return graph.node(
        "DequantizeLinear",
        [graph.constant(f"{name}/bias_quantized", quantized), graph.constant(f"{name}/bias_scale", scale),
         graph.constant(f"{name}/bias_zero_point", np.zeros(scale.shape, np.int32))],
        f"{name}/bias", **({"axis": 0} if per_channel else {}),
    )  # fmt: skip


def _quantize_activation(graph: _Graph, state: _State, quantizer: Any, variables: dict[str, Any], name: str,
                         model_name: str) -> None:  # fmt: skip
    config = quantizer.get_config()
    if config.get("per_axis") or config.get("narrow_range"):
        raise ConfigError(
            f"{name}: per-axis or narrow-range activation quantizers are not handled by the QDQ export "
            f"({config}); {WORKING_ROUTE}."
        )
    parameters = _parameters(variables, config, name, model_name)
    scale = graph.constant(f"{name}/scale", parameters.scale)
    zero_point = graph.constant(f"{name}/zero_point", parameters.zero_point)
    quantized = graph.node("QuantizeLinear", [state.tensor, scale, zero_point], f"{name}/quantized")
    state.tensor = graph.node("DequantizeLinear", [quantized, scale, zero_point], f"{name}/dequantized")
    state.scale = float(parameters.scale)
    graph.activations.append(
        {"tensor": name, "scale": float(parameters.scale), "zero_point": int(parameters.zero_point)}
    )


def _parameters(variables: dict[str, Any], config: dict[str, Any], what: str, model_name: str) -> FakeQuantParameters:
    minimum = variables["min_var"].numpy()
    maximum = variables["max_var"].numpy()
    try:
        return fake_quant_parameters(
            minimum, maximum, num_bits=int(config.get("num_bits", 8)), narrow_range=bool(config.get("narrow_range"))
        )
    except ArtifactError:
        raise ArtifactError(
            f"cannot export quantization-aware model {model_name!r} to ONNX: the quantization range of "
            f"{what} is unset or empty (min {np.min(minimum):g}, max {np.max(maximum):g}). A quantization-aware "
            "model must be trained (or calibrated) for at least one step so its fake-quant ranges are set: "
            "fine-tune it with model.fit on a few batches, then export it again."
        ) from None


def _to_nchw(graph: _Graph, state: _State, name: str) -> None:
    """ONNX's Conv and MaxPool want NCHW; Keras's layers are NHWC."""
    if state.layout == "NHWC":
        state.tensor = graph.node("Transpose", [state.tensor], f"{name}/to_nchw", perm=[0, 3, 1, 2])
        state.layout = "NCHW"
    elif state.layout != "NCHW":
        raise ConfigError(f"layer {name!r} needs a 4-D image input (N, H, W, C): {WORKING_ROUTE}.")


def _auto_pad(padding: str) -> str:
    # TensorFlow's "same" puts the odd padding pixel at the end: ONNX's SAME_UPPER.
    return {"same": "SAME_UPPER", "valid": "VALID"}[padding.lower()]
