"""Configuration, read in one place.

Every setting that may come from the environment is read here, at call time (so a
test or a notebook can change it with ``os.environ`` and see the effect):

- ``AIDEPLOY_DATA_DIR``: the data folder (default: ``data/`` of the repository).
- ``AIDEPLOY_ARTIFACTS_DIR``: where stages write what they produce (default:
  ``artifacts/`` of the repository).
- ``AIDEPLOY_SEED``: the global seed (default 42).
- ``AIDEPLOY_FAST``: ``1`` shrinks epochs, samples and trials so the notebooks run
  in seconds in tests; ``0`` (the default) is the full run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from aideploy.errors import ConfigError

T = TypeVar("T")

#: The repository root when the package is used from a checkout (``pip install -e``).
REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_SEED = 42

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def data_dir() -> Path:
    """The folder that holds the data sets (``AIDEPLOY_DATA_DIR`` or ``<repo>/data``).

    Returns:
        The data folder as an absolute path.
    """
    value = os.environ.get("AIDEPLOY_DATA_DIR")
    return Path(value).expanduser().resolve() if value else REPO_ROOT / "data"


def artifacts_dir() -> Path:
    """The folder stages write their artifacts to (``AIDEPLOY_ARTIFACTS_DIR`` or ``<repo>/artifacts``).

    Returns:
        The artifacts folder as an absolute path (not created here).
    """
    value = os.environ.get("AIDEPLOY_ARTIFACTS_DIR")
    return Path(value).expanduser().resolve() if value else REPO_ROOT / "artifacts"


def seed() -> int:
    """The global seed (``AIDEPLOY_SEED``, default 42).

    Raises:
        ConfigError: ``AIDEPLOY_SEED`` is not a whole number.
    """
    value = os.environ.get("AIDEPLOY_SEED", "").strip()
    if not value:
        return DEFAULT_SEED
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"AIDEPLOY_SEED must be a whole number, got {value!r}: "
            "set it to e.g. 42 or unset it."
        ) from None


def fast_mode() -> bool:
    """Whether fast mode is on (``AIDEPLOY_FAST=1``): small epochs, samples and trials.

    Raises:
        ConfigError: ``AIDEPLOY_FAST`` is not a recognised boolean.
    """
    value = os.environ.get("AIDEPLOY_FAST", "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(
        f"AIDEPLOY_FAST must be 1 or 0 (true/false), got {value!r}."
    )


def fast_or_full(fast: T, full: T) -> T:
    """Pick a setting by mode: ``fast`` in fast mode, ``full`` otherwise.

    Notebooks use it so that one cell states both sizes, e.g.
    ``num_epochs = config.fast_or_full(1, 30)``.
    """
    return fast if fast_mode() else full


def set_fast_mode(enabled: bool) -> None:
    """Turn fast mode on or off for this process (and the processes it starts).

    The command line's ``--fast`` flag calls this; it writes ``AIDEPLOY_FAST`` so
    that :func:`fast_mode` stays the one place the setting is read.
    """
    os.environ["AIDEPLOY_FAST"] = "1" if enabled else "0"


def resolve_seed(seed: int | None = None) -> int:
    """``seed`` if given, else the configured global seed (:func:`seed`).

    The one place that turns an optional ``seed=None`` argument into a number.
    """
    return _configured_seed() if seed is None else int(seed)


def resolve_out_dir(out_dir: str | os.PathLike | None = None, subfolder: str | None = None) -> Path:
    """``out_dir`` if given, else the artifacts folder (or ``<artifacts>/<subfolder>``).

    The one place that turns an optional ``out_dir=None`` argument into a folder.
    The folder is not created here.

    Args:
        out_dir: A folder chosen by the caller, or ``None``.
        subfolder: Where under the artifacts folder the default lies (e.g. ``"exports"``).

    Returns:
        The folder as a :class:`~pathlib.Path`.
    """
    if out_dir is not None:
        return Path(out_dir)
    folder = artifacts_dir()
    return folder / subfolder if subfolder else folder


# ``resolve_seed``'s parameter shadows the module function ``seed`` inside it.
_configured_seed = seed
