"""Prometheus metrics of the server, served at ``GET /metrics``.

Notebook: ``notebooks/07_serving.ipynb``.

Each server has its own registry (so two servers in one process, as in tests,
never mix their counts). What each metric corresponds to on the real servers:

============================================  =====================================================
aideploy metric                               Triton / KServe / TensorFlow Serving
============================================  =====================================================
``aideploy_requests_total``                   Triton ``nv_inference_request_success`` and
  (model, version, protocol, outcome)          ``nv_inference_request_failure``; TF Serving
                                               ``:tensorflow:serving:request_count``
``aideploy_request_duration_seconds``         Triton ``nv_inference_request_duration_us``; KServe
                                               ``request_predict_seconds``; TF Serving
                                               ``:tensorflow:serving:request_latency``
``aideploy_queue_duration_seconds``           Triton ``nv_inference_queue_duration_us``; TF Serving
                                               ``:tensorflow:serving:batching_session:queuing_latency``
``aideploy_compute_duration_seconds``         Triton ``nv_inference_compute_infer_duration_us``
``aideploy_batch_size``                       Triton ``nv_inference_exec_count`` against
                                               ``nv_inference_count``; TF Serving
                                               ``:tensorflow:serving:batching_session:input_batch_size``
``aideploy_inflight_requests``                Triton ``nv_inference_pending_request_count``
============================================  =====================================================

Requests are the inference calls (V2 ``infer``, TF Serving ``predict``, the image route);
health and metadata calls are not counted. ``outcome`` is ``success``,
``client_error`` (4xx) or ``server_error`` (5xx). A request for an unknown
model is counted under model ``_unknown``, so clients cannot grow the label set.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from aideploy.serve.batching import BatchStats

#: prometheus-client's multiprocess mode: when this environment variable names a folder
#: (``aideploy serve --workers N`` sets it for its workers), every process writes its
#: values there and ``/metrics`` adds up all processes' values.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

#: Label value for requests whose model name is not in the repository.
UNKNOWN_MODEL = "_unknown"

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    """The server's metrics in a registry of their own.

    Introduced in ``07_serving.ipynb``.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aideploy_requests",
            "Inference requests by model, version, protocol and outcome.",
            ("model", "version", "protocol", "outcome"),
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "aideploy_request_duration_seconds",
            "Time from receiving an inference request to its answer.",
            ("model", "version", "protocol"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_duration = Histogram(
            "aideploy_queue_duration_seconds",
            "Time a request waited for its batch to start.",
            ("model", "version"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.compute_duration = Histogram(
            "aideploy_compute_duration_seconds",
            "Duration of one predictor call on a batch.",
            ("model", "version"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "aideploy_batch_size",
            "Rows in each batch the predictor ran.",
            ("model", "version"),
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
        self.inflight = Gauge(
            "aideploy_inflight_requests",
            "Inference requests being handled now.",
            registry=self.registry,
            multiprocess_mode="livesum",  # with several workers: the sum over the live ones
        )
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_DIR))

    def record_request(self, model: str, version: str, protocol: str, status: int, seconds: float) -> None:
        """Count one finished inference request and its duration.

        Args:
            model: The model's name (or :data:`UNKNOWN_MODEL`).
            version: The version that answered (``""`` when none was found).
            protocol: ``"v2"``, ``"tfserving"`` or ``"image"``.
            status: The HTTP status of the answer.
            seconds: How long it took.
        """
        outcome = "success" if status < 400 else ("client_error" if status < 500 else "server_error")
        key = (model, version, protocol, outcome)
        children = self._children.get(key)
        if children is None:  # .labels() takes a lock and checks its labels: once per label set
            children = self._children[key] = (
                self.requests.labels(model, version, protocol, outcome),
                self.request_duration.labels(model, version, protocol),
            )
        children[0].inc()
        children[1].observe(seconds)

    def batch_recorder(self, model: str, version: str):
        """A callback for :class:`~aideploy.serve.batching.Batcher` that records a model's batches."""
        queue = self.queue_duration.labels(model, version)
        compute = self.compute_duration.labels(model, version)
        batch_size = self.batch_size.labels(model, version)

        def record(stats: BatchStats) -> None:
            for seconds in stats.queue_seconds:
                queue.observe(seconds)
            compute.observe(stats.compute_seconds)
            batch_size.observe(stats.batch_size)

        return record

    def render(self) -> bytes:
        """The metrics in Prometheus's text format (every worker's, in multiprocess mode)."""
        if self.multiprocess:
            from prometheus_client.multiprocess import MultiProcessCollector

            combined = CollectorRegistry()
            MultiProcessCollector(combined)
            return generate_latest(combined)
        return generate_latest(self.registry)


def total_requests(multiprocess_dir: str | os.PathLike) -> int:
    """Inference requests counted by all the processes that wrote to a multiprocess folder."""
    from prometheus_client.multiprocess import MultiProcessCollector

    combined = CollectorRegistry()
    MultiProcessCollector(combined, path=os.fspath(multiprocess_dir))
    return int(sum(sample.value for metric in combined.collect() if metric.name == "aideploy_requests"
                   for sample in metric.samples if sample.name.endswith("_total")))
