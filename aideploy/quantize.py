"""Stage 05, quantization: 8-bit (and 16-bit) models for TFLite and ONNX Runtime.

Notebook: ``notebooks/05_quantization.ipynb``.

The variants, each written through the artifact writer with a manifest that
records the method, its settings, the calibration size and the source model's
SHA-256:

- TFLite post-training (:func:`to_tflite`): ``dynamic`` (int8 weights, float
  activations), ``float16`` (float16 weights), ``int8`` (int8 weights and
  activations, ranges calibrated on a representative dataset drawn from the
  training images; the input and output may be int8 or uint8 too) and
  ``int16x8`` (int16 activations, int8 weights). They go through
  :func:`aideploy.convert.to_tflite`'s converter options.
- Quantization-aware training (:func:`quantization_aware`): tfmot's
  ``quantize_model`` inserts fake-quantization, a short fine-tuning learns the
  ranges, then TFLite int8 and an ONNX QDQ graph (:func:`aideploy.convert.to_onnx`).
- ONNX Runtime (:func:`ort_quantize`): ``quant_pre_process`` on the float32 ONNX
  export, then ``quantize_dynamic`` or ``quantize_static`` (QDQ format, per-channel
  weights optional, calibration with MinMax, Entropy or Percentile over training
  images through a :class:`ImageCalibrationReader`).

Whatever the variant, :func:`aideploy.runtime.load` runs it on float32 images and
returns probabilities.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aideploy import artifacts, config, convert, data, models, prune, train
from aideploy.backend import keras, native_stderr_silenced
from aideploy.errors import ConfigError, ModelInputError

#: Post-training TFLite methods of :func:`to_tflite`.
TFLITE_METHODS = ("dynamic", "float16", "int8", "int16x8")
#: ONNX Runtime methods of :func:`ort_quantize`.
ORT_METHODS = ("ort-dynamic", "ort-static")
#: Every method :func:`quantize` accepts.
METHODS = (*TFLITE_METHODS, "qat", *ORT_METHODS)
#: ONNX Runtime calibration methods (``onnxruntime.quantization.CalibrationMethod`` members).
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
#: Input/output dtypes a full-integer TFLite model may have.
IO_DTYPES = ("float32", "int8", "uint8")
#: Calibration images by default: enough for stable ranges on these models.
DEFAULT_CALIBRATION_SIZE = 500

_TFLITE_OPTIONS: dict[str, dict[str, Any]] = {
    "dynamic": {"optimizations": ("DEFAULT",)},
    "float16": {"optimizations": ("DEFAULT",), "supported_types": ("float16",)},
    "int8": {"optimizations": ("DEFAULT",), "supported_ops": ("TFLITE_BUILTINS_INT8",)},
    "int16x8": {
        "optimizations": ("DEFAULT",),
        "supported_ops": ("EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8",),
    },
}


def check_method(method: str) -> str:
    """Validate a quantization method name.

    Raises:
        ConfigError: ``method`` is not one of :data:`METHODS`.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown quantization method {method!r}: use one of {', '.join(METHODS)}.")
    return method


def calibration_images(
    x_train: np.ndarray, size: int = DEFAULT_CALIBRATION_SIZE, *, seed: int | None = None
) -> np.ndarray:
    """Draw a calibration (representative) set from the training images, without replacement.

    These images decide the activation ranges of a full-integer model: they
    should look like what the model will see. Introduced in ``05_quantization.ipynb``.

    Args:
        x_train: Training images, preprocessed as the model takes them (float32 in [0, 1]).
        size: Images to draw (all of them if there are fewer).
        seed: Seed of the draw (default: the global seed).

    Returns:
        ``size`` images, float32.

    Raises:
        ConfigError: ``size`` is less than 1.
        ModelInputError: ``x_train`` is empty or not floats.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"calibration size must be a whole number of at least 1, got {size!r}.")
    x_train = np.asarray(x_train)
    if len(x_train) == 0:
        raise ModelInputError("the calibration set is empty: pass the training images (at least one).")
    if not np.issubdtype(x_train.dtype, np.floating):
        raise ModelInputError(
            f"calibration images must be float pixels in [0, 1], got {x_train.dtype}: scale them with data.scale(x)."
        )
    generator = np.random.default_rng(config.resolve_seed(seed))
    chosen = generator.choice(len(x_train), size=min(int(size), len(x_train)), replace=False)
    return x_train[np.sort(chosen)].astype(np.float32, copy=False)


def to_tflite(
    model: keras.Model | str | os.PathLike,
    path: str | os.PathLike,
    method: str,
    *,
    calibration: np.ndarray | None = None,
    io_dtype: str = "float32",
    source: dict[str, Any] | None = None,
) -> convert.Export:
    """Post-training TFLite quantization: ``dynamic``, ``float16``, ``int8`` or ``int16x8``.

    The converter options per method (what ``05_quantization.ipynb`` shows)::

        converter.optimizations = [tf.lite.Optimize.DEFAULT]          # every method
        converter.target_spec.supported_types = [tf.float16]          # float16
        converter.representative_dataset = ...                        # int8, int16x8
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # int8
        converter.inference_input_type = tf.int8                      # int8 with io_dtype="int8"

    A quantization-aware model takes ``dynamic``'s options only: its ranges are learned,
    and the converter makes it full-integer without calibration. Introduced in
    ``05_quantization.ipynb``.

    Args:
        model: A tf-keras model or the path of a ``.keras`` file.
        path: Target ``.tflite`` file.
        method: One of :data:`TFLITE_METHODS`.
        calibration: Representative images (from :func:`calibration_images`);
            required for ``int8`` and ``int16x8``.
        io_dtype: ``int8`` only: the dtype of the model's input and output
            (``float32``, ``int8`` or ``uint8``).
        source: Provenance to record when ``model`` is already loaded (see
            :func:`aideploy.prune.load_source`).

    Returns:
        The :class:`aideploy.convert.Export`.

    Raises:
        ConfigError: Unknown method or ``io_dtype``, or calibration missing where required.
        ModelInputError: The calibration images do not fit the model.
    """
    if method not in TFLITE_METHODS:
        raise ConfigError(f"unknown TFLite quantization method {method!r}: use one of {', '.join(TFLITE_METHODS)}.")
    if io_dtype not in IO_DTYPES:
        raise ConfigError(f"unknown io_dtype {io_dtype!r}: use one of {', '.join(IO_DTYPES)}.")
    if io_dtype != "float32" and method != "int8":
        raise ConfigError(f"io_dtype={io_dtype!r} needs method 'int8' (full-integer), not {method!r}.")
    keras_model, loaded_source = prune.load_source(model)
    source = source or loaded_source
    options = dict(_TFLITE_OPTIONS[method])
    calibrated = method in ("int8", "int16x8")
    if calibrated:
        if calibration is None:
            raise ConfigError(
                f"method {method!r} calibrates activation ranges: pass calibration=calibration_images(x_train)."
            )
        options["representative_data"] = calibration
    if io_dtype != "float32":
        options.update(inference_input_type=io_dtype, inference_output_type=io_dtype)
    settings = {"method": method, "io_dtype": io_dtype, "calibration_size": len(calibration) if calibrated else 0}
    return convert.to_tflite(keras_model, path, source=source, **options, extra_params={"quantization": settings})


def quantization_aware(
    model: keras.Model,
    splits: data.Splits,
    *,
    num_epochs: int = 1,
    batch_size: int = 128,
    learning_rate: float = 1e-4,
    seed: int | None = None,
    preserve_sparsity: bool = False,
) -> train.TrainResult:
    """Make a trained model quantization-aware with tfmot and fine-tune it.

    The few lines of tfmot it wraps::

        qat_model = tfmot.quantization.keras.quantize_model(model)
        qat_model.compile(...); qat_model.fit(...)

    With ``preserve_sparsity`` (for a pruned model) the scheme is tfmot's
    pruning-preserving one, so pruning and quantization compound::

        annotated = tfmot.quantization.keras.quantize_annotate_model(model)
        qat_model = tfmot.quantization.keras.quantize_apply(
            annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())

    Introduced in ``05_quantization.ipynb``.

    Args:
        model: A trained tf-keras model (stripped, if it was pruned).
        splits: Data for fine-tuning.
        num_epochs: Fine-tuning epochs.
        batch_size: Images a step.
        learning_rate: Adam's learning rate.
        seed: Seed (default: the global seed).
        preserve_sparsity: Keep the zeros of a pruned model.

    Returns:
        The :class:`aideploy.train.TrainResult` whose model is quantization-aware.

    Raises:
        ConfigError: A model tfmot cannot quantize (the message names the layer).
    """
    import tensorflow_model_optimization as tfmot

    quantization = tfmot.quantization.keras
    models.check_input(model, splits.x_train[:1])
    train.set_seed(seed)
    # A fresh copy: tfmot may reuse the given model's layer objects.
    source = keras.models.clone_model(model)
    source.set_weights(model.get_weights())
    try:
        if preserve_sparsity:
            scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
            qat_model = quantization.quantize_apply(quantization.quantize_annotate_model(source), scheme)
        else:
            qat_model = quantization.quantize_model(source)
    except (ValueError, RuntimeError) as error:
        raise ConfigError(_unsupported_message(model, error)) from None
    qat_model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    settings = train.TrainSettings(num_epochs=num_epochs, batch_size=batch_size, seed=seed, verbose=0)
    return train.fit(qat_model, splits, settings)


def _unsupported_message(model: keras.Model, error: Exception) -> str:
    """Why tfmot cannot make ``model`` quantization-aware, naming the layers it cannot quantize."""
    import tensorflow_model_optimization as tfmot

    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme().get_quantize_registry()
    unsupported = [
        layer for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer) and not registry.supports(layer)
    ]  # fmt: skip
    if not unsupported:
        return f"tfmot cannot make model {model.name!r} quantization-aware: {error}"
    named = ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in unsupported)
    reason = (
        "a Lambda layer's Python function cannot be cloned into the quantization-aware copy"
        if any(type(layer).__name__ == "Lambda" for layer in unsupported)
        else "tfmot's default 8-bit scheme has no quantized version of it"
    )
    return (
        f"tfmot cannot make model {model.name!r} quantization-aware: layer(s) {named} cannot be quantized "
        f"({reason}). Replace the layer with a supported one (Dense, Conv2D, pooling, ReLU...), give it a "
        "QuantizeConfig with tfmot.quantization.keras.quantize_annotate_layer, or use post-training "
        "quantization (method 'int8' or 'ort-static'), which needs no training."
    )


class ImageCalibrationReader:
    """ONNX Runtime's calibration data reader over an array of images.

    ``quantize_static`` calls :meth:`get_next` until it returns ``None``; each
    call hands over one batch as ``{input_name: batch}``. Introduced in
    ``05_quantization.ipynb``.

    Args:
        input_name: The ONNX model's input name.
        images: Calibration images (float32, shaped like the model's input).
        batch_size: Most images a call (the largest divisor of the set's size up to it).
    """

    def __init__(self, input_name: str, images: np.ndarray, *, batch_size: int = 64) -> None:
        if len(images) == 0:
            raise ModelInputError("the calibration set is empty: pass at least one image.")
        self.input_name = input_name
        self.images = np.asarray(images, dtype=np.float32)
        # Every batch has the same size: the Entropy and Percentile calibrators
        # stack the batches' outputs and fail on a shorter last batch.
        self.batch_size = max(d for d in range(1, min(batch_size, len(self.images)) + 1) if len(self.images) % d == 0)
        self._start = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or ``None`` when all images were handed over."""
        if self._start >= len(self.images):
            return None
        batch = self.images[self._start : self._start + self.batch_size]
        self._start += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        """Start again from the first image."""
        self._start = 0


def ort_quantize(
    onnx_path: str | os.PathLike,
    path: str | os.PathLike,
    method: str,
    *,
    calibration: np.ndarray | None = None,
    per_channel: bool = True,
    calibration_method: str = "minmax",
    source: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Quantize a float32 ONNX model with ONNX Runtime: ``ort-dynamic`` or ``ort-static``.

    The few lines of ONNX Runtime it wraps::

        quant_pre_process("model.onnx", "model.pre.onnx")
        quantize_dynamic("model.pre.onnx", "model.int8.onnx", weight_type=QuantType.QInt8)
        quantize_static("model.pre.onnx", "model.int8.onnx", reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, calibrate_method=CalibrationMethod.MinMax)

    Static quantization uses signed int8 weights (symmetric) and int8
    activations in QDQ format: QuantizeLinear/DequantizeLinear pairs around each
    operator, which any ONNX runtime reads. Introduced in ``05_quantization.ipynb``.

    Args:
        onnx_path: A float32 ONNX model (from :func:`aideploy.convert.to_onnx`).
        path: Target ``.onnx`` file.
        method: ``"ort-dynamic"`` or ``"ort-static"``.
        calibration: Calibration images (static only), e.g. from :func:`calibration_images`.
        per_channel: One scale per output channel of each weight (finer, usually more accurate).
        calibration_method: ``"minmax"``, ``"entropy"`` or ``"percentile"`` (static only).
        source: Provenance of the Keras model the ONNX file came from.

    Returns:
        ``(model_path, manifest_path)``.

    Raises:
        ConfigError: Unknown method or calibration method, or no calibration for static.
        ModelInputError: The calibration images do not fit the model.
    """
    import onnxruntime
    from onnxruntime import quantization as ortq

    if method not in ORT_METHODS:
        raise ConfigError(f"unknown ONNX Runtime method {method!r}: use one of {', '.join(ORT_METHODS)}.")
    if calibration_method not in CALIBRATION_METHODS:
        raise ConfigError(
            f"unknown calibration method {calibration_method!r}: use one of {', '.join(CALIBRATION_METHODS)}."
        )
    from aideploy import runtime

    float_model = runtime.load(onnx_path)
    if method == "ort-static":
        if calibration is None:
            raise ConfigError("ort-static calibrates activation ranges: pass calibration=calibration_images(x_train).")
        calibration = np.asarray(calibration)
        if len(calibration) == 0:
            raise ModelInputError("the calibration set is empty: pass at least one image.")
        float_model.predict(calibration[:1])  # the predictor's own check says what is wrong
    settings: dict[str, Any] = {"method": method, "per_channel": per_channel, "weight_type": "QInt8"}
    if method == "ort-static":
        settings.update(
            quant_format="QDQ",
            activation_type="QInt8",
            calibration_method=calibration_method,
            calibration_size=len(calibration),
        )

    def write(temporary: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="aideploy-ort-") as folder:
            prepared = Path(folder) / "prepared.onnx"
            with native_stderr_silenced():
                # Symbolic shape inference (it needs sympy) is for graphs with symbolic
                # sizes inside; ONNX shape inference covers these models.
                ortq.quant_pre_process(os.fspath(onnx_path), os.fspath(prepared), skip_symbolic_shape=True)
                if method == "ort-dynamic":
                    ortq.quantize_dynamic(
                        prepared, temporary, weight_type=ortq.QuantType.QInt8, per_channel=per_channel
                    )
                    return
                ortq.quantize_static(
                    prepared,
                    temporary,
                    ImageCalibrationReader(float_model.input.name, calibration),
                    quant_format=ortq.QuantFormat.QDQ,
                    per_channel=per_channel,
                    activation_type=ortq.QuantType.QInt8,
                    weight_type=ortq.QuantType.QInt8,
                    calibrate_method=getattr(ortq.CalibrationMethod, CALIBRATION_METHODS[calibration_method]),
                )

    return artifacts.save_artifact(
        path,
        write,
        kind="onnx-model",
        produced_by="aideploy.quantize.ort_quantize",
        inputs={"onnx_model": {"path": str(onnx_path), "sha256": artifacts.sha256_of(onnx_path)},
                "source_model": source or {}},  # fmt: skip
        params={"quantization": settings},
        extra={"format": "onnx", "converter_versions": {"onnxruntime": onnxruntime.__version__}},
    )


def quantize(
    model: keras.Model | str | os.PathLike,
    method: str,
    out_dir: str | os.PathLike | None = None,
    *,
    splits: data.Splits | None = None,
    calibration_size: int = DEFAULT_CALIBRATION_SIZE,
    io_dtype: str = "float32",
    per_channel: bool = True,
    calibration_method: str = "minmax",
    num_epochs: int | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Quantize a model with one method, save it with its manifest and measure it on the test set.

    What ``aideploy quantize`` runs. Introduced in ``05_quantization.ipynb``.

    Args:
        model: A tf-keras model or the path of a ``.keras`` file.
        method: One of :data:`METHODS`.
        out_dir: Folder of the result (default: ``<artifacts>/quantized``).
        splits: Data (default: :func:`aideploy.data.load_splits` for the model's kind).
        calibration_size: Training images used for calibration.
        io_dtype: Input/output dtype of a full-integer TFLite model (``int8`` only).
        per_channel: ONNX Runtime: per-channel weight scales.
        calibration_method: ONNX Runtime static: ``minmax``, ``entropy`` or ``percentile``.
        num_epochs: QAT fine-tuning epochs (default 1 in fast mode, 3 otherwise).
        name: File stem (default: the source's stem or the model's name).

    Returns:
        ``method``, ``path``, ``manifest_path``, ``test_accuracy``, ``size_bytes``,
        ``gzip_bytes``; for ``qat`` also ``keras_path`` (HDF5) and ``onnx_path``; for
        ONNX Runtime methods also ``float_onnx_path``.

    Raises:
        ConfigError: Unknown method or invalid settings (checked before any work).
        ArtifactError: The source model is missing or unreadable.
    """
    check_method(method)
    if calibration_method not in CALIBRATION_METHODS:
        raise ConfigError(
            f"unknown calibration method {calibration_method!r}: use one of {', '.join(CALIBRATION_METHODS)}."
        )
    keras_model, source = prune.load_source(model)
    splits = splits or data.load_splits(prune.model_kind(keras_model))
    models.check_input(keras_model, splits.x_train[:1])  # data of another model kind: say so before writing
    calibration = calibration_images(splits.x_train, calibration_size)
    stem = name or (Path(source["path"]).stem if source["path"] else keras_model.name)
    out_dir = config.resolve_out_dir(out_dir, "quantized")
    result: dict[str, Any] = {"method": method}
    written: list[Path] = []
    with _removed_on_error(written):
        _quantize_into(result, written, keras_model, method, splits, calibration, out_dir, stem, source,
                       io_dtype=io_dtype, per_channel=per_channel, calibration_method=calibration_method,
                       num_epochs=num_epochs)  # fmt: skip
    result["manifest_path"] = artifacts.manifest_path(result["path"])
    result["test_accuracy"] = evaluate_file(result["path"], splits.x_test, splits.y_test)
    result.update(prune.file_sizes(result["path"]))
    return {key: str(value) if isinstance(value, Path) else value for key, value in result.items()}


@contextlib.contextmanager
def _removed_on_error(written: list[Path]) -> Iterator[None]:
    """Remove the files (and manifests) listed in ``written`` if the block fails.

    A method that writes several files (the float ONNX export before ONNX Runtime
    quantizes it; QAT's HDF5, ONNX and TFLite files) must not leave the first
    ones behind when a later step fails: a failed command writes nothing.
    """
    try:
        yield
    except BaseException:
        for path in written:
            for leftover in (path, artifacts.manifest_path(path)):
                if leftover.is_file():
                    leftover.unlink()
        raise


def _quantize_into(
    result: dict[str, Any],
    written: list[Path],
    keras_model: keras.Model,
    method: str,
    splits: data.Splits,
    calibration: np.ndarray,
    out_dir: Path,
    stem: str,
    source: dict[str, Any],
    *,
    io_dtype: str,
    per_channel: bool,
    calibration_method: str,
    num_epochs: int | None,
) -> None:
    """The writing part of :func:`quantize`: fills ``result`` and lists each file in ``written`` as it appears."""
    if method in TFLITE_METHODS:
        suffix = f"{method}-{io_dtype}" if io_dtype != "float32" else method
        result["path"] = to_tflite(keras_model, _new(written, out_dir / f"{stem}.{suffix}.tflite"), method,
                                   calibration=calibration, io_dtype=io_dtype, source=source).path  # fmt: skip
    elif method == "qat":
        epochs = num_epochs or config.fast_or_full(1, 3)
        trained = quantization_aware(keras_model, splits, num_epochs=epochs)
        result["keras_path"], _ = artifacts.save_artifact(
            # tf-keras cannot reload a quantization-aware model from the .keras
            # format (its QuantizeLayer comes back with 3 of its 5 variables);
            # HDF5 round-trips it exactly.
            _new(written, out_dir / f"{stem}.qat.h5"),
            lambda temporary: _save_h5(trained.model, temporary),
            kind="keras-model",
            produced_by="aideploy.quantize.quantization_aware",
            inputs={"source_model": source},
            params={"method": "qat", "settings": {"num_epochs": epochs, "learning_rate": 1e-4}},
        )
        result["onnx_path"] = convert.to_onnx(trained.model, _new(written, out_dir / f"{stem}.qat.onnx"),
                                              source=source).path  # fmt: skip
        result["path"] = convert.to_tflite(
            trained.model, _new(written, out_dir / f"{stem}.qat.tflite"), source=source, optimizations=("DEFAULT",),
            extra_params={"quantization": {"method": "qat", "num_epochs": epochs, "calibration_size": 0}},
        ).path  # fmt: skip
    else:
        float_onnx = convert.to_onnx(keras_model, _new(written, out_dir / f"{stem}.onnx"), source=source).path
        result["float_onnx_path"] = float_onnx
        result["path"], _ = ort_quantize(float_onnx, _new(written, out_dir / f"{stem}.{method}.onnx"), method,
                                         calibration=calibration, per_channel=per_channel,
                                         calibration_method=calibration_method, source=source)  # fmt: skip


def _new(written: list[Path], path: Path) -> Path:
    """``path``, listed in ``written`` when no file is there yet (a file that was there is not ours to remove)."""
    if not path.exists():
        written.append(path)
    return path


def _save_h5(model: keras.Model, path: Path) -> None:
    import warnings

    with warnings.catch_warnings():  # "HDF5 is a legacy format": chosen on purpose, see quantize()
        warnings.simplefilter("ignore", UserWarning)
        model.save(path, save_format="h5")


def evaluate_file(path: str | os.PathLike, x: np.ndarray, y: np.ndarray, *, batch_size: int = 500) -> float:
    """Top-1 accuracy of any model file run through :func:`aideploy.runtime.load` on float inputs.

    Introduced in ``05_quantization.ipynb``.
    """
    return float(np.mean(predict_file(path, x, batch_size=batch_size).argmax(axis=1) == np.asarray(y).ravel()))


def predict_file(path: str | os.PathLike, x: np.ndarray, *, batch_size: int = 500) -> np.ndarray:
    """Probabilities of any model file (TFLite, ONNX, Keras) for float32 inputs, batch by batch."""
    from aideploy import runtime

    predictor = runtime.load(path)
    x = np.asarray(x, dtype=np.float32)
    return np.concatenate([predictor.predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
