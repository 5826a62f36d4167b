"""The input summary features and the reference profile a served model is compared with.

Notebook: ``notebooks/08_monitoring.ipynb``. Command: ``aideploy monitor profile``.

The prediction log does not keep the 784 pixels of every request: it keeps a few
numbers that summarise each input (:data:`FEATURES`), computed by
:func:`input_features`. The reference profile is the same summary of the
*training* data, plus the model's predicted classes and confidences on it: what
"normal" looks like. It is saved with the model version it describes, as
``<repo>/<name>/<version>/reference.json`` with a manifest (SHA-256) beside it,
and the server loads it with the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aideploy import artifacts
from aideploy.errors import ArtifactError, ModelInputError

#: The summary of one input row, in the order :func:`input_features` returns them:
#: mean intensity, its standard deviation, the ink fraction (pixels above 0.5) and a
#: coarse four-bin histogram of the pixel values over [0, 1].
FEATURES = ("mean", "std", "ink", "hist_0", "hist_1", "hist_2", "hist_3")

#: The file name of a reference profile inside a model version's folder.
REFERENCE_NAME = "reference.json"

#: The score distributions compared besides the input features.
CONFIDENCE = "confidence"
PREDICTED = "predicted"

_NUM_BINS = 10
_SAMPLE_SIZE = 2000
_FORMAT = "aideploy-reference-profile"


def input_features(x: np.ndarray) -> np.ndarray:
    """Summarise each input row by the numbers in :data:`FEATURES`.

    Integer inputs are pixels in 0..255 and are scaled to [0, 1] first, so a
    model that takes uint8 pixels and one that takes scaled floats give the same
    summary. Introduced in ``08_monitoring.ipynb``.

    Args:
        x: Inputs, one row per item (any trailing shape: ``(N, 784)``, ``(N, 28, 28, 1)``).

    Returns:
        A float32 array of shape ``(N, len(FEATURES))``.

    Raises:
        ModelInputError: ``x`` has no batch axis or holds no numbers.
    """
    x = np.asarray(x)
    if x.ndim < 1 or x.dtype.kind not in "biuf":
        raise ModelInputError(f"expected a numeric array of shape (N, ...), got {x.dtype} of shape {x.shape}.")
    rows = x.reshape(len(x), -1)
    if rows.dtype.kind in "iu":
        values = rows.astype(np.float32) / np.float32(255)
    else:
        values = rows.astype(np.float32, copy=False)
    width = values.shape[1]
    if width == 0:
        raise ModelInputError("the inputs have no values to summarise.")
    # The prediction log's writer calls this for every logged row: counts and a
    # dot product rather than np.std and means of boolean arrays, which cost more.
    mean = values.mean(axis=1)
    mean_square = np.einsum("ij,ij->i", values, values, dtype=np.float64) / width
    std = np.sqrt(np.maximum(mean_square - mean * mean, 0.0))
    below_quarter = np.count_nonzero(values < 0.25, axis=1) / width
    below_half = np.count_nonzero(values < 0.5, axis=1) / width
    below_three_quarters = np.count_nonzero(values < 0.75, axis=1) / width
    features = np.stack(
        [
            mean,
            std,
            1.0 - below_half,
            below_quarter,
            below_half - below_quarter,
            below_three_quarters - below_half,
            1.0 - below_three_quarters,
        ],
        axis=1,
    )
    return features.astype(np.float32)


@dataclass(frozen=True)
class FeatureReference:
    """The reference distribution of one feature.

    Attributes:
        edges: Inner bin edges (from the reference's deciles) for the PSI.
        proportions: The reference's share of each of the ``len(edges) + 1`` bins.
        sample: A random sample of reference values for the Kolmogorov-Smirnov test.
    """

    edges: list[float]
    proportions: list[float]
    sample: list[float] = field(repr=False)


@dataclass(frozen=True)
class ReferenceProfile:
    """What a model's inputs and predictions look like on its training data.

    Attributes:
        features: Per input feature (and ``confidence``), its :class:`FeatureReference`.
        class_proportions: The share of each predicted class.
        num_samples: How many rows the profile was built from.
        accuracy: The model's accuracy on those rows, when labels were given.
        model: The model's name, when known.
        version: The model's version, when known.
    """

    features: dict[str, FeatureReference]
    class_proportions: list[float]
    num_samples: int
    accuracy: float | None = None
    model: str | None = None
    version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (the file's content)."""
        return {
            "format": _FORMAT,
            "model": self.model,
            "version": self.version,
            "num_samples": self.num_samples,
            "accuracy": self.accuracy,
            "class_proportions": self.class_proportions,
            "features": {
                name: {"edges": ref.edges, "proportions": ref.proportions, "sample": ref.sample}
                for name, ref in self.features.items()
            },
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ReferenceProfile:
        """Read what :meth:`to_dict` wrote.

        Raises:
            ArtifactError: It is not a reference profile.
        """
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ArtifactError("not an aideploy reference profile: build one with `aideploy monitor profile`.")
        try:
            features = {
                name: FeatureReference(list(entry["edges"]), list(entry["proportions"]), list(entry["sample"]))
                for name, entry in payload["features"].items()
            }
            return cls(
                features=features,
                class_proportions=list(payload["class_proportions"]),
                num_samples=int(payload["num_samples"]),
                accuracy=payload.get("accuracy"),
                model=payload.get("model"),
                version=payload.get("version"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ArtifactError(f"the reference profile is incomplete ({error!r}): build it again.") from None


def _feature_reference(values: np.ndarray, rng: np.random.Generator) -> FeatureReference:
    values = np.asarray(values, dtype=np.float64)
    # Deciles as bin edges give each bin about a tenth of the reference; features
    # with many equal values (an empty histogram bin) get fewer, wider bins.
    edges = np.unique(np.quantile(values, np.linspace(0, 1, _NUM_BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    sample = values if len(values) <= _SAMPLE_SIZE else rng.choice(values, _SAMPLE_SIZE, replace=False)
    return FeatureReference(
        edges=[float(e) for e in edges],
        proportions=[float(c) for c in counts / counts.sum()],
        sample=[round(float(v), 6) for v in sample],
    )


def build_profile(
    x: np.ndarray,
    probabilities: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    model: str | None = None,
    version: int | None = None,
    seed: int = 0,
) -> ReferenceProfile:
    """Build a reference profile from training inputs and the model's answers on them.

    Introduced in ``08_monitoring.ipynb``.

    Args:
        x: The training inputs (as the model takes them).
        probabilities: The model's output on ``x``, shape ``(N, num_classes)``.
        labels: The true classes, to record the reference accuracy (optional).
        model: The model's name (recorded).
        version: The model's version (recorded).
        seed: Seed of the random sample kept for the Kolmogorov-Smirnov test.

    Returns:
        The :class:`ReferenceProfile`.

    Raises:
        ModelInputError: The arrays do not have one row per input.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or len(probabilities) != len(x) or len(x) < 2 * _NUM_BINS:
        raise ModelInputError(
            f"expected probabilities of shape ({len(x)}, num_classes) for {len(x)} inputs (at least "
            f"{2 * _NUM_BINS}), got shape {probabilities.shape}."
        )
    rng = np.random.default_rng(seed)
    features = input_features(x)
    references = {name: _feature_reference(features[:, i], rng) for i, name in enumerate(FEATURES)}
    references[CONFIDENCE] = _feature_reference(probabilities.max(axis=1), rng)
    predicted = probabilities.argmax(axis=1)
    class_counts = np.bincount(predicted, minlength=probabilities.shape[1])
    accuracy = None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(x),):
            raise ModelInputError(f"expected {len(x)} labels, got an array of shape {labels.shape}.")
        accuracy = float((predicted == labels).mean())
    return ReferenceProfile(
        features=references,
        class_proportions=[float(c) for c in class_counts / class_counts.sum()],
        num_samples=len(x),
        accuracy=accuracy,
        model=model,
        version=version,
    )


def save_profile(profile: ReferenceProfile, path: str | os.PathLike) -> Path:
    """Write a profile atomically with a manifest beside it.

    Introduced in ``08_monitoring.ipynb``.

    Args:
        profile: The profile.
        path: The file (``reference.json`` in a version folder, for the server to find it).

    Returns:
        The file's path.
    """
    text = json.dumps(profile.to_dict()).encode("utf-8")
    path, _ = artifacts.save_artifact(
        path,
        lambda temporary: temporary.write_bytes(text),
        kind="reference-profile",
        produced_by="aideploy.monitor.profile.save_profile",
        params={"num_samples": profile.num_samples, "model": profile.model, "version": profile.version},
        metrics={"accuracy": profile.accuracy},
    )
    return path


def load_profile(path: str | os.PathLike) -> ReferenceProfile:
    """Read a profile, checked against its manifest.

    Introduced in ``08_monitoring.ipynb``.

    Raises:
        ArtifactError: The file is missing, changed since it was written, or not a profile.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"no reference profile at {path}: build one with `aideploy monitor profile`.")
    artifacts.verify(path)
    try:
        return ReferenceProfile.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as error:
        raise ArtifactError(f"reference profile {path} is not valid JSON ({error}).") from None


def profile_version(
    repo: str | os.PathLike,
    name: str,
    x: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    version: int | str | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Build a published version's profile by running it (ONNX Runtime) on ``x``, and save it beside it.

    The profile is derived data about the version, not part of the model, so it
    may be added to a version after it was published. Introduced in ``08_monitoring.ipynb``;
    ``aideploy monitor profile`` calls it.

    Args:
        repo: The model repository.
        name: The model's name.
        x: Training inputs.
        labels: Their classes (optional; records the reference accuracy).
        version: The version (default: the newest).
        validation: Held-out ``(x, y)`` to measure the reference accuracy on instead
            (training accuracy is optimistic, and accuracy alerts compare with it).

    Returns:
        The path of ``reference.json``.

    Raises:
        ModelNotFoundError: No such model or version.
        ArtifactError: The model's files do not match their manifests.
    """
    from aideploy import registry, runtime

    entry = registry.ModelRepository(repo).get(name, version)
    predictor = runtime.load(entry.path)

    def predict(inputs: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [predictor.predict(np.ascontiguousarray(inputs[i : i + 4096])) for i in range(0, len(inputs), 4096)]
        )

    profile = build_profile(x, predict(x), labels, model=name, version=entry.version)
    if validation is not None:
        x_val, y_val = validation
        accuracy = float((predict(x_val).argmax(axis=1) == np.asarray(y_val)).mean())
        profile = dataclasses.replace(profile, accuracy=accuracy)
    return save_profile(profile, entry.path.parent / REFERENCE_NAME)
