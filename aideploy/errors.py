"""The errors aideploy raises on purpose.

Every error here is *expected*: bad input, a missing or corrupted file, a wrong
setting. The message says what was wrong and how to fix it. The command line
prints such a message without a traceback and exits non-zero; the server (later)
maps the family to HTTP status codes.
"""

from __future__ import annotations


class AideployError(Exception):
    """Base class of the errors that aideploy raises for expected problems."""


class DataError(AideployError):
    """A data file is missing, corrupted or not in the expected format."""


class ModelInputError(AideployError, ValueError):
    """An array handed to a model helper has the wrong shape or dtype."""


class ConfigError(AideployError, ValueError):
    """A setting (argument, environment variable) has an invalid value."""


class ArtifactError(AideployError):
    """An artifact is missing, unreadable or does not match its manifest."""
