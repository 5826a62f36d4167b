"""LiteRT for serving: fixed batch shapes allocated once, and one call at a time.

Notebook: ``notebooks/07_serving.ipynb``.

A LiteRT interpreter has fixed tensor shapes: :class:`aideploy.runtime.TFLitePredictor`
resizes and re-allocates its tensors whenever the batch size changes, which under
dynamic batching (batches of 1, 3, 7, 2, ... rows) would be on almost every call.
:class:`ServingLiteRT` keeps one interpreter per batch size bucket (1, 2, 4, ... up to
the model's largest batch), each allocated once, and pads a batch with zero rows up
to its bucket; the caller gets exactly its rows back. A lock makes it safe to call
from several threads (an interpreter must never run two calls at once); the server's
batcher already calls it one batch at a time. Integer (full-int8) models take and
give floats: the predictor quantizes and dequantizes.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from aideploy.errors import ConfigError


class ServingLiteRT:
    """A ``.tflite`` model for the server: one allocated interpreter per batch bucket.

    Introduced in ``07_serving.ipynb``.

    Args:
        path: The ``.tflite`` file.
        max_batch_size: The largest batch the server forms (the largest bucket).
        num_threads: LiteRT threads for one call (default: LiteRT's).

    Raises:
        ArtifactError: The file cannot be loaded.
        ConfigError: ``max_batch_size`` below 1.
    """

    runtime = "tflite"

    def __init__(self, path: str | os.PathLike, *, max_batch_size: int, num_threads: int | None = None) -> None:
        from aideploy import runtime

        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be a whole number of at least 1, got {max_batch_size!r}.")
        self.path = path
        self.num_threads = num_threads
        self.buckets = tuple(sorted({min(2**k, max_batch_size) for k in range(max_batch_size.bit_length() + 1)}))
        first = runtime.TFLitePredictor(path, num_threads=num_threads)
        self.input, self.output = first.input, first.output
        self._predictors: dict[int, Any] = {}
        self._add(first, 1)
        self._lock = threading.Lock()

    def _add(self, predictor: Any, size: int) -> Any:
        # Allocate the bucket's shape once, here, never again on a call of that size.
        predictor.predict(np.zeros((size, *self.input.shape[1:]), dtype=self.input.dtype))
        self._predictors[size] = predictor
        return predictor

    def _predictor(self, size: int) -> Any:
        from aideploy import runtime

        predictor = self._predictors.get(size)
        if predictor is None:
            predictor = self._add(runtime.TFLitePredictor(self.path, num_threads=self.num_threads), size)
        return predictor

    @property
    def allocated_sizes(self) -> list[int]:
        """The batch sizes whose interpreters are allocated (each once)."""
        return sorted(self._predictors)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run the model on a batch of any size; returns exactly its rows' outputs.

        Raises:
            ModelInputError: ``x`` has the wrong type, shape or dtype.
        """
        rows = len(x)
        largest = self.buckets[-1]
        with self._lock:
            if rows > largest:  # a request larger than any batch: in slices of the largest bucket
                return np.concatenate([self._run(x[start : start + largest]) for start in range(0, rows, largest)])
            return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        rows = len(x)
        size = next(bucket for bucket in self.buckets if bucket >= rows)
        predictor = self._predictor(size)
        if size != rows:
            padded = np.zeros((size, *x.shape[1:]), dtype=x.dtype)
            padded[:rows] = x
            x = padded
        return predictor.predict(x)[:rows].copy()
