"""Test-session settings for the unit tests and the notebooks that nbval runs.

Set at import time, before any test or notebook kernel reads the configuration
(nbval starts kernels with this process's environment, ``--nbval-current-env``),
so the whole suite runs in fast mode and never writes into the repository's own
``artifacts/`` folder. It lives at the repository root so that it applies to
``notebooks/`` as well as ``tests/``.
"""

import os
import tempfile

os.environ["AIDEPLOY_FAST"] = "1"
os.environ.setdefault("AIDEPLOY_SEED", "42")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["AIDEPLOY_ARTIFACTS_DIR"] = tempfile.mkdtemp(prefix="aideploy-test-artifacts-")
