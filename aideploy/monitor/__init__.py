"""Stage 08, monitoring: a prediction log, a reference profile, drift, delayed labels and alerts.

Notebook: ``notebooks/08_monitoring.ipynb``. Commands: ``aideploy serve --log-db``,
``aideploy monitor profile``, ``aideploy monitor report``.

Parts: :mod:`~aideploy.monitor.profile` (the input summary features and the
reference profile saved with a model version), :mod:`~aideploy.monitor.drift`
(PSI, Kolmogorov-Smirnov and chi-squared with SciPy), :mod:`~aideploy.monitor.log`
(the SQLite prediction log, its background writer and delayed labels),
:mod:`~aideploy.monitor.service` (windows, rolling accuracy, alerts and their
Prometheus metrics, run in the background of the server) and
:mod:`~aideploy.monitor.report` (summaries and plots).

Nothing here imports TensorFlow or :mod:`aideploy.serve`: the server calls the
monitor, never the reverse.
"""

from __future__ import annotations

from aideploy.monitor.drift import DriftSettings, compare
from aideploy.monitor.log import PredictionLog, submit_labels
from aideploy.monitor.profile import FEATURES, ReferenceProfile, build_profile, input_features

__all__ = [
    "FEATURES",
    "DriftSettings",
    "PredictionLog",
    "ReferenceProfile",
    "build_profile",
    "compare",
    "input_features",
    "submit_labels",
]
