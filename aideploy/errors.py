"""The errors aideploy raises on purpose.

Every error here is *expected*: bad input, a missing or corrupted file, a wrong
setting. The message says what was wrong and how to fix it. The command line
prints such a message without a traceback and exits non-zero; the server
(:mod:`aideploy.serve`) answers with the HTTP status each family carries in
``http_status`` (after MLServer's ``errors.py``): 400 bad input, 404 unknown
model or version, 413 body too large, 503 not ready, 500 for the server's own
problems (a corrupted model file is not the client's fault).
"""

from __future__ import annotations


class AideployError(Exception):
    """Base class of the errors that aideploy raises for expected problems."""

    #: The HTTP status the server answers with when a request hits this error.
    http_status: int = 500


class DataError(AideployError):
    """A data file is missing, corrupted or not in the expected format."""


class ModelInputError(AideployError, ValueError):
    """An array handed to a model helper has the wrong shape or dtype (HTTP 400)."""

    http_status = 400


class ConfigError(AideployError, ValueError):
    """A setting (argument, environment variable) has an invalid value (HTTP 400)."""

    http_status = 400


class ArtifactError(AideployError):
    """An artifact is missing, unreadable or does not match its manifest."""


class ModelNotFoundError(AideployError, LookupError):
    """A request names a model or version that the repository does not hold (HTTP 404)."""

    http_status = 404


class PayloadTooLargeError(ModelInputError):
    """A request body is larger than the server accepts (HTTP 413)."""

    http_status = 413


class ModelNotReadyError(AideployError):
    """A model (or the server) is still loading, failed to load or is shutting down (HTTP 503)."""

    http_status = 503
