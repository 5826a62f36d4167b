"""Parse an inference request's JSON with simdjson, long arrays of numbers straight into NumPy.

Used by the V2 ``infer`` and TensorFlow Serving ``:predict`` routes. A 28x28 image
sent as JSON is 784 decimal numbers. ``orjson.loads`` makes a Python float of each
(about 30 µs) and turning that list into an array costs as much again; that was most
of a V2 JSON request's cost. pysimdjson parses the document into its own buffer and
``Array.as_buffer`` copies a flat array of numbers into C doubles or integers without
creating a Python object per value (about 14 µs for the whole body).

The result is what ``orjson.loads`` would give, except that every array of at least
:data:`MIN_ARRAY` numbers is an ``int64`` (or ``uint64``) array when all are whole
numbers, else a ``float64`` array. Arrays of other things, and shorter ones, stay lists.
Like Triton, a long array that holds a few one-element arrays among its numbers is read
flattened. Anything simdjson refuses or cannot represent this way (invalid JSON,
integers beyond 64 bits) is parsed again by orjson, so the answer and the error message
are exactly those of :func:`aideploy.serve.server.parse_json`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import simdjson

from aideploy.serve.server import parse_json

#: Arrays of numbers at least this long become NumPy arrays (shapes, at most 32
#: dimensions in NumPy, stay lists).
MIN_ARRAY = 33


def parse_tensor_json(body: bytes) -> dict[str, Any]:
    """A request body's JSON object; long arrays of numbers come back as ``int64`` or ``float64`` arrays.

    Args:
        body: The request body (UTF-8 JSON).

    Returns:
        The object, as :func:`orjson.loads` would give it except for the long numeric arrays.

    Raises:
        ModelInputError: Not valid JSON, or not an object (the message orjson's parse gives).
    """
    try:
        # A parser per document: cheaper than reusing one (measured), and nothing can
        # hold on to a previous document's values.
        document = simdjson.Parser().parse(body)
        if not isinstance(document, simdjson.Object):
            return parse_json(body)
        return _convert(document)
    except (ValueError, TypeError, RuntimeError):  # UnicodeDecodeError is a ValueError
        return parse_json(body)


def _convert(value: Any) -> Any:
    if isinstance(value, simdjson.Object):
        # items() would convert the values to Python objects; indexing keeps them lazy.
        return {key: _convert(value[key]) for key in value.keys()}
    if isinstance(value, simdjson.Array):
        count = len(value)
        if count >= MIN_ARRAY:
            numbers = _numbers(value, count)
            if numbers is not None:
                return numbers
        return [_convert(item) for item in value]
    return value


def _numbers(array: simdjson.Array, count: int) -> np.ndarray | None:
    """The array's numbers as int64 or uint64 (all whole) or float64, or ``None`` if it holds anything else."""
    first = array[0]
    if type(first) is bool or not isinstance(first, (int, float)):
        return None
    kinds = (("i", np.int64), ("u", np.uint64), ("d", np.float64)) if type(first) is int else (("d", np.float64),)
    for code, dtype in kinds:
        try:
            values = np.frombuffer(array.as_buffer(of_type=code), dtype)
        except (TypeError, ValueError, OverflowError):  # a value of another kind
            continue
        # as_buffer flattens nested arrays; a count that differs means the array was not flat.
        return values if values.size == count else None
    return None
