"""Stage 06, parity: does every exported or quantized variant compute the same function?

Notebook: ``notebooks/06_conversion.ipynb`` (the quantized variants: ``05_quantization.ipynb``).

:func:`parity_report` runs a reference model and each candidate on the same test
set and records, per candidate, the largest absolute difference of any output,
the share of identical top-1 classes and the accuracy. What counts as passing
depends on the variant (:func:`tolerance_for`): a float32 export must match to
1e-4 on every probability, but an int8 model cannot; it passes on top-1
agreement and a bounded accuracy change instead. The candidates may take
different input dtypes: each is given the test images in its own input dtype
(:func:`as_input`); the quantized predictors quantize float images themselves.

Moved here from :mod:`aideploy.runtime` (which still re-exports
``ParityReport``, ``ParityRow`` and ``parity_report``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aideploy.errors import ArtifactError, ModelInputError
from aideploy.runtime import KerasPredictor, Predictor, load


@dataclass(frozen=True)
class Tolerance:
    """What a candidate must meet against the reference to pass.

    Attributes:
        max_abs_diff: Largest allowed absolute difference of any output
            (``None``: not checked, as for quantized variants).
        min_top1_agreement: Smallest allowed share of test images where the
            candidate's top-1 class is the reference's.
        max_accuracy_drop: Largest allowed loss of accuracy, as a fraction
            (0.01 = one percentage point; ``None``: not checked). A gain always passes.
    """

    max_abs_diff: float | None = 1e-4
    min_top1_agreement: float = 0.999
    max_accuracy_drop: float | None = None

    def check(self, max_abs_diff: float, top1_agreement: float, accuracy_change: float) -> bool:
        """Whether measured figures are within this tolerance."""
        return (
            (self.max_abs_diff is None or max_abs_diff <= self.max_abs_diff)
            and top1_agreement >= self.min_top1_agreement
            and (self.max_accuracy_drop is None or -accuracy_change <= self.max_accuracy_drop)
        )


#: A float32 export of the same model: the same function to rounding.
FLOAT32 = Tolerance(max_abs_diff=1e-4, min_top1_agreement=0.999)
#: Float16 weights: about three decimal digits a weight.
FLOAT16 = Tolerance(max_abs_diff=1e-2, min_top1_agreement=0.995, max_accuracy_drop=0.002)
#: Integer weights or activations (int8, int16x8, dynamic, QAT): probabilities move by
#: a few quantization steps, so compare classes and accuracy.
QUANTIZED = Tolerance(max_abs_diff=None, min_top1_agreement=0.97, max_accuracy_drop=0.01)
#: Pruned or clustered (another model, fine-tuned): only the accuracy must hold.
COMPRESSED = Tolerance(max_abs_diff=None, min_top1_agreement=0.9, max_accuracy_drop=0.01)

_QUANTIZED_METHODS = {"dynamic", "int8", "int16x8", "qat", "ort-dynamic", "ort-static", "prune-qat"}
_COMPRESSED_METHODS = {"prune", "prune-2:4", "cluster"}
_ONNX_QUANTIZED_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul",
                       "ConvInteger", "QLinearConv"}  # fmt: skip


def tolerance_for(candidate: Any) -> Tolerance:
    """The tolerance a variant is held to: :data:`FLOAT32`, :data:`FLOAT16`, :data:`QUANTIZED` or :data:`COMPRESSED`.

    The method recorded in the variant's manifest decides (the ``quantization``
    or ``compression`` settings :mod:`aideploy.quantize` and
    :mod:`aideploy.compress` write); without a manifest, the model itself: a
    TFLite file with integer or float16 tensors, an ONNX graph with quantize
    operators. Introduced in ``05_quantization.ipynb``.

    Args:
        candidate: A predictor or a path :func:`aideploy.runtime.load` accepts.

    Returns:
        The :class:`Tolerance`.
    """
    from aideploy import artifacts

    path = candidate.path if isinstance(candidate, Predictor) else Path(candidate) if candidate is not None else None
    if path is not None and artifacts.manifest_path(path).is_file():
        try:
            params = artifacts.read_manifest(path).get("params", {})
        except ArtifactError:
            params = {}
        methods = {str(params[key].get("method")) for key in ("quantization", "compression")
                   if isinstance(params.get(key), dict)}  # fmt: skip
        if methods & _QUANTIZED_METHODS or str(params.get("converter", "")).startswith("aideploy.qdq"):
            return QUANTIZED
        if "float16" in methods:
            return FLOAT16
        if methods & _COMPRESSED_METHODS:
            return COMPRESSED
        if methods or params.get("dtype") == "float32":
            return FLOAT32
    predictor = load(candidate)
    return _tolerance_from_model(predictor)


def _tolerance_from_model(predictor: Predictor) -> Tolerance:
    if predictor.runtime == "tflite":
        dtypes = {np.dtype(detail["dtype"]).name for detail in predictor.interpreter.get_tensor_details()}
        if dtypes & {"int8", "uint8", "int16"}:
            return QUANTIZED
        return FLOAT16 if "float16" in dtypes else FLOAT32
    if predictor.runtime == "onnxruntime" and predictor.path is not None:
        import onnx

        graph = onnx.load(str(predictor.path), load_external_data=False).graph
        if {node.op_type for node in graph.node} & _ONNX_QUANTIZED_OPS:
            return QUANTIZED
        if any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer):
            return FLOAT16
    return FLOAT32


@dataclass(frozen=True)
class ParityRow:
    """How one runtime's outputs compare with the reference's on the same inputs.

    Attributes:
        runtime: The candidate's runtime.
        path: Its file.
        max_abs_diff: Largest absolute difference of any output.
        top1_agreement: Share of images with the reference's top-1 class.
        accuracy: Its accuracy.
        accuracy_change: Its accuracy minus the reference's (a fraction).
        tolerance: What it is held to (:func:`tolerance_for`).
        passed: Whether it is within ``tolerance``.
    """

    runtime: str
    path: str | None
    max_abs_diff: float
    top1_agreement: float
    accuracy: float
    accuracy_change: float = 0.0
    tolerance: Tolerance = FLOAT32
    passed: bool = True


@dataclass(frozen=True)
class ParityReport:
    """Outputs of several runtimes against the tf-keras reference on one test set.

    Attributes:
        reference_accuracy: Accuracy of the reference (tf-keras) model.
        rows: One :class:`ParityRow` a runtime.
        num_examples: Size of the test set.
    """

    reference_accuracy: float
    rows: list[ParityRow]
    num_examples: int

    def passed(self, *, max_abs_diff: float | None = None, min_top1_agreement: float | None = None) -> bool:
        """Whether every runtime is within its tolerance.

        Without arguments each row is held to its own tolerance (see
        :func:`tolerance_for`: 1e-4 on every output for a float32 export, top-1
        agreement and accuracy change for a quantized one). Either argument
        holds every row to that figure instead.

        Args:
            max_abs_diff: Largest allowed absolute difference of any output, for every row.
            min_top1_agreement: Smallest allowed share of identical top-1 classes, for every row.
        """
        if max_abs_diff is None and min_top1_agreement is None:
            return all(row.passed for row in self.rows)
        return all(
            (max_abs_diff is None or row.max_abs_diff <= max_abs_diff)
            and (min_top1_agreement is None or row.top1_agreement >= min_top1_agreement)
            for row in self.rows
        )

    def table(self) -> str:
        """The report as a fixed-width text table."""
        lines = [
            f"{'runtime':<12}  {'max |diff|':>10}  {'top-1 agree':>11}  {'accuracy':>8}  {'change pp':>9}  "
            f"{'passed':>6}  file",
            f"{'keras (ref)':<12}  {'-':>10}  {'-':>11}  {self.reference_accuracy:8.4f}",
        ]
        for row in self.rows:
            name = Path(row.path).name if row.path else ""
            lines.append(
                f"{row.runtime:<12}  {row.max_abs_diff:10.2e}  {row.top1_agreement:11.4%}  "
                f"{row.accuracy:8.4f}  {100 * row.accuracy_change:+9.2f}  {'yes' if row.passed else 'NO':>6}  {name}"
            )
        lines.append(f"({self.num_examples} test images)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "reference_accuracy": self.reference_accuracy,
            "num_examples": self.num_examples,
            "rows": [asdict(row) for row in self.rows],
        }


def parity_report(
    reference: Any,
    candidates: Sequence[Any],
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int = 1000,
    tolerances: Sequence[Tolerance | None] | None = None,
) -> ParityReport:
    """Compare every runtime's outputs with the tf-keras model's on a whole test set.

    The reference output is ``model.predict`` of the tf-keras model; each
    candidate runs batches of ``batch_size`` through its predictor, given ``x``
    in its own input dtype. Introduced in ``06_conversion.ipynb``.

    Args:
        reference: The tf-keras model (or a path to it, or its predictor).
        candidates: Predictors, or paths :func:`aideploy.runtime.load` accepts.
        x: Test inputs, e.g. ``splits.x_test``.
        y: True labels (class indices).
        batch_size: Examples a call (bounds memory for the CNN).
        tolerances: One :class:`Tolerance` (or ``None``: :func:`tolerance_for`)
            a candidate (default: :func:`tolerance_for` each).

    Returns:
        The :class:`ParityReport`.

    Raises:
        ModelInputError: ``x`` does not fit a model, ``x`` and ``y`` differ in
            length, or ``tolerances`` and ``candidates`` differ in length.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ModelInputError(f"need as many labels as inputs (and at least one): got {len(x)} and {len(y)}.")
    if tolerances is not None and len(tolerances) != len(candidates):
        raise ModelInputError(f"need one tolerance a candidate: got {len(tolerances)} for {len(candidates)}.")
    y = np.asarray(y).ravel()
    reference_predictor = load(reference)
    if isinstance(reference_predictor, KerasPredictor):
        reference_predictor._check(x[:1])
        expected = reference_predictor.model.predict(x, batch_size=batch_size, verbose=0)
    else:
        expected = predict_in_batches(reference_predictor, x, batch_size)
    reference_top1 = expected.argmax(axis=1)
    reference_accuracy = float(np.mean(reference_top1 == y))
    rows = []
    for index, candidate in enumerate(candidates):
        predictor = load(candidate)
        output = predict_in_batches(predictor, x, batch_size)
        top1 = output.argmax(axis=1)
        accuracy = float(np.mean(top1 == y))
        tolerance = (tolerances[index] if tolerances is not None else None) or tolerance_for(predictor)
        max_abs_diff = float(np.max(np.abs(output.astype(np.float64) - expected)))
        agreement = float(np.mean(top1 == reference_top1))
        rows.append(
            ParityRow(
                runtime=predictor.runtime,
                path=str(predictor.path) if predictor.path else None,
                max_abs_diff=max_abs_diff,
                top1_agreement=agreement,
                accuracy=accuracy,
                accuracy_change=accuracy - reference_accuracy,
                tolerance=tolerance,
                passed=tolerance.check(max_abs_diff, agreement, accuracy - reference_accuracy),
            )
        )
    return ParityReport(reference_accuracy=reference_accuracy, rows=rows, num_examples=len(x))


def as_input(predictor: Predictor, x: np.ndarray) -> np.ndarray:
    """``x`` in the dtype the predictor takes, so variants with different input dtypes get the same images.

    Float images are cast to a float input dtype (float16, float64); anything
    else is left for the predictor's own check to report. Introduced in
    ``05_quantization.ipynb``.

    Args:
        predictor: The variant's predictor.
        x: Images, usually float32 in [0, 1].

    Returns:
        ``x``, cast when needed.
    """
    wanted = np.dtype(predictor.input.dtype)
    x = np.asarray(x)
    if x.dtype != wanted and np.issubdtype(x.dtype, np.floating) and np.issubdtype(wanted, np.floating):
        return x.astype(wanted)
    return x


def predict_in_batches(predictor: Predictor, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """A predictor's outputs for ``x``, ``batch_size`` examples a call, as float32 or wider.

    Introduced in ``06_conversion.ipynb``.
    """
    x = as_input(predictor, x)
    return np.concatenate(
        [np.asarray(predictor.predict(x[start : start + batch_size])) for start in range(0, len(x), batch_size)]
    )
