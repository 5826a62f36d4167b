"""Drift: compare a window of live traffic with the reference profile.

Notebook: ``notebooks/08_monitoring.ipynb``.

Three measures, each with what it is good at:

- the **population stability index** (PSI), ``sum((live - ref) * ln(live / ref))``
  over the reference's decile bins: an effect size, so it does not grow with the
  window. Common practice reads it as below 0.1 stable, 0.1-0.25 a moderate
  shift, above 0.25 a major one;
- the two-sample **Kolmogorov-Smirnov** test (``scipy.stats.ks_2samp``): a
  p-value, so with enough rows it calls even a tiny, harmless shift significant;
- **chi-squared** (``scipy.stats.chisquare``) for the mix of predicted classes
  against the reference's.

A feature is flagged when its PSI reaches ``psi_major``, or when it reaches
``psi_moderate`` *and* the test's p-value is below ``p_value``: a flag needs a
shift that is both large enough to matter and unlikely to be noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from aideploy.errors import ConfigError, ModelInputError
from aideploy.monitor.profile import CONFIDENCE, FEATURES, PREDICTED, FeatureReference, ReferenceProfile

#: Proportions are clipped to this before the PSI's logarithm (an empty bin would be infinite).
PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class DriftSettings:
    """When a window counts as drifted.

    Attributes:
        psi_moderate: PSI from which a shift is moderate (common practice: 0.1).
        psi_major: PSI from which a shift is major and flagged on its own (0.25).
        p_value: Significance level of the KS and chi-squared tests (moderate shifts
            are flagged only when the test's p-value is below it).
        window_size: Rows per count window (the server's windows).
        min_accuracy: Rolling accuracy below this raises an accuracy alert
            (default: the reference accuracy minus ``accuracy_drop``).
        accuracy_drop: How far below the reference accuracy the rolling accuracy may fall.
        accuracy_window: Labelled rows the rolling accuracy is computed over.
        min_labels: Fewest labelled rows for a rolling accuracy to be reported.
    """

    psi_moderate: float = 0.1
    psi_major: float = 0.25
    p_value: float = 0.01
    window_size: int = 500
    min_accuracy: float | None = None
    accuracy_drop: float = 0.05
    accuracy_window: int = 500
    min_labels: int = 50

    def __post_init__(self) -> None:
        if not 0 < self.psi_moderate <= self.psi_major:
            raise ConfigError(
                f"need 0 < psi_moderate <= psi_major, got {self.psi_moderate} and {self.psi_major} "
                "(common practice: 0.1 and 0.25)."
            )
        if not 0 < self.p_value < 1:
            raise ConfigError(f"p_value must be between 0 and 1, got {self.p_value}.")
        for name in ("window_size", "accuracy_window", "min_labels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}.")
        if self.window_size < 20:
            raise ConfigError(f"window_size must be at least 20 rows (fewer mean nothing), got {self.window_size}.")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise ConfigError(f"min_accuracy must be between 0 and 1, got {self.min_accuracy}.")
        if not 0 <= self.accuracy_drop <= 1:
            raise ConfigError(f"accuracy_drop must be between 0 and 1, got {self.accuracy_drop}.")

    def accuracy_threshold(self, reference: ReferenceProfile | None) -> float | None:
        """The rolling accuracy below which an alert is raised (``None``: no accuracy alerts)."""
        if self.min_accuracy is not None:
            return self.min_accuracy
        if reference is not None and reference.accuracy is not None:
            return max(0.0, reference.accuracy - self.accuracy_drop)
        return None


def psi(reference: FeatureReference, values: np.ndarray) -> float:
    """The population stability index of ``values`` against a reference distribution.

    Introduced in ``08_monitoring.ipynb``.

    Args:
        reference: The reference's bins and proportions.
        values: The live values.

    Returns:
        The PSI (0 when the proportions are the same).
    """
    edges = np.asarray(reference.edges, dtype=np.float64)
    counts = np.bincount(np.searchsorted(edges, np.asarray(values, np.float64), side="right"),
                         minlength=len(edges) + 1)
    return psi_of_proportions(np.asarray(reference.proportions), counts / max(counts.sum(), 1))


def psi_of_proportions(expected: np.ndarray, actual: np.ndarray) -> float:
    """The PSI between two sets of bin proportions (the same bins).

    Introduced in ``08_monitoring.ipynb``.
    """
    expected = np.clip(np.asarray(expected, np.float64), PSI_EPSILON, None)
    actual = np.clip(np.asarray(actual, np.float64), PSI_EPSILON, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _level(value: float, settings: DriftSettings) -> str:
    if value >= settings.psi_major:
        return "major"
    return "moderate" if value >= settings.psi_moderate else "stable"


def compare(
    reference: ReferenceProfile,
    features: np.ndarray,
    confidences: np.ndarray,
    predicted: np.ndarray,
    settings: DriftSettings | None = None,
) -> dict[str, dict[str, Any]]:
    """Compare one window of live rows with the reference, feature by feature.

    Introduced in ``08_monitoring.ipynb``.

    Args:
        reference: The model version's reference profile.
        features: The window's input features, shape ``(N, len(FEATURES))``.
        confidences: The window's confidences (top probabilities), shape ``(N,)``.
        predicted: The window's predicted classes, shape ``(N,)``.
        settings: Thresholds (default: :class:`DriftSettings`).

    Returns:
        For each feature, ``confidence`` and ``predicted``: ``psi``, ``p_value``
        (KS, or chi-squared for ``predicted``), ``level`` (``stable``,
        ``moderate``, ``major``) and ``drift`` (flagged or not).

    Raises:
        ModelInputError: The arrays do not match, or the window is empty.
    """
    from scipy import stats

    settings = settings or DriftSettings()
    features = np.asarray(features, np.float64)
    confidences = np.asarray(confidences, np.float64)
    predicted = np.asarray(predicted, np.int64)
    num_rows = len(features)
    if num_rows == 0 or features.shape != (num_rows, len(FEATURES)) or confidences.shape != (num_rows,) \
            or predicted.shape != (num_rows,):
        raise ModelInputError(
            f"expected features of shape (N, {len(FEATURES)}) and N confidences and predictions, N >= 1; got "
            f"{features.shape}, {confidences.shape} and {predicted.shape}."
        )
    results: dict[str, dict[str, Any]] = {}
    columns = {name: features[:, i] for i, name in enumerate(FEATURES)}
    columns[CONFIDENCE] = confidences
    for name, values in columns.items():
        ref = reference.features[name]
        value = psi(ref, values)
        p_value = float(stats.ks_2samp(values, np.asarray(ref.sample, np.float64)).pvalue)
        results[name] = _result(value, p_value, settings)
    # The class mix: chi-squared against the reference's proportions, scaled to the window.
    expected = np.clip(np.asarray(reference.class_proportions, np.float64), PSI_EPSILON, None)
    expected /= expected.sum()
    if predicted.min() < 0 or predicted.max() >= len(expected):
        raise ModelInputError(f"predicted classes must be in 0..{len(expected) - 1}.")
    observed = np.bincount(predicted, minlength=len(expected)).astype(np.float64)
    p_value = float(stats.chisquare(observed, expected * num_rows).pvalue)
    results[PREDICTED] = _result(psi_of_proportions(expected, observed / num_rows), p_value, settings)
    return results


def _result(value: float, p_value: float, settings: DriftSettings) -> dict[str, Any]:
    level = _level(value, settings)
    drift = level == "major" or (level == "moderate" and p_value < settings.p_value)
    return {"psi": round(value, 6), "p_value": p_value, "level": level, "drift": bool(drift)}


def settings_dict(settings: DriftSettings) -> dict[str, Any]:
    """The settings as JSON-ready data (recorded with each report)."""
    return asdict(settings)
