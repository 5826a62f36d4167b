"""Stage 07, serving: a local inference server over a Triton-layout model repository.

Notebook: ``notebooks/07_serving.ipynb``. Command: ``aideploy serve``.

The server speaks the KServe V2 / Open Inference Protocol REST API (with the
binary tensor data extension) and the TensorFlow Serving REST API, merges
concurrent requests into batches, validates every request, and exports
Prometheus metrics. It runs models with ONNX Runtime (or LiteRT) and never
imports TensorFlow.

Parts: :mod:`~aideploy.serve.server` (models, readiness, shared checks),
:mod:`~aideploy.serve.v2` and :mod:`~aideploy.serve.tfserving` (one module a
protocol), :mod:`~aideploy.serve.batching`, :mod:`~aideploy.serve.metrics`,
:mod:`~aideploy.serve.monitoring` (delayed labels, alerts and drift windows of the
prediction log, see :mod:`aideploy.monitor`), :mod:`~aideploy.serve.litert` (LiteRT with batch
buckets allocated once), :mod:`~aideploy.serve.app` (the ASGI app and ``run``, ``--workers``) and
:mod:`~aideploy.serve.process` (:func:`running_server`, for notebooks and tests).
"""

from __future__ import annotations

from aideploy.serve.app import create_app, run
from aideploy.serve.process import running_server
from aideploy.serve.server import ModelServer, ServerSettings

__all__ = ["ModelServer", "ServerSettings", "create_app", "run", "running_server"]
