"""Search spaces: each hyperparameter declared once, with its allowed domain.

Introduced in ``03_tuning.ipynb``. A :class:`SearchSpace` per model kind is read by
every sampler: random search and TPE draw from its ranges, grid search walks the
grid derived from the same ranges (:meth:`SearchSpace.grid`). Values outside a
parameter's domain (a dropout of 1.0, a learning rate of 0, no units) fail here,
before any training. No TensorFlow is imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from aideploy.errors import ConfigError

if TYPE_CHECKING:
    import optuna

#: The hyperparameters each model kind's search space must declare.
REQUIRED_PARAMETERS = {
    "mlp": ("num_layers", "units", "dropout", "learning_rate", "batch_size"),
    "cnn": ("num_conv_layers", "filters", "dense_units", "dropout", "learning_rate", "batch_size"),
}


@dataclass(frozen=True)
class Domain:
    """The values a hyperparameter may take at all, whatever the search space says.

    Attributes:
        integer: Whole numbers only.
        low: Smallest allowed value (``None``: no bound).
        high: Largest allowed value (``None``: no bound).
        low_open: ``low`` itself is not allowed.
        high_open: ``high`` itself is not allowed.
    """

    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        """The domain in words, e.g. ``a number in [0, 1)``."""
        kind = "a whole number" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{kind} in {opening}{self.low:g}, {self.high:g}{closing}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        return kind

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in the domain."""
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            return False
        if not math.isfinite(value) or (self.integer and value != int(value)):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))


#: What each hyperparameter may be: the model builders reject anything else
#: (a dropout rate of 1 drops every unit; 4 pooling steps take 28 pixels to 1).
DOMAINS = {
    "num_layers": Domain(integer=True, low=1),
    "num_conv_layers": Domain(integer=True, low=1, high=4),
    "units": Domain(integer=True, low=1),
    "filters": Domain(integer=True, low=1),
    "dense_units": Domain(integer=True, low=1),
    "dropout": Domain(low=0.0, high=1.0, high_open=True),
    "learning_rate": Domain(low=0.0, low_open=True),
    "batch_size": Domain(integer=True, low=1),
}


@dataclass(frozen=True)
class Parameter:
    """One hyperparameter: a set of choices, or a numeric range.

    A range is searched continuously by random search and TPE; grid search uses
    ``grid`` if given, else ``grid_points`` values spread evenly over the range
    (geometrically when ``log``), or every whole number for a small integer range.

    Attributes:
        name: The name trials record, e.g. ``"learning_rate"``.
        choices: The allowed values (categorical); leave empty for a range.
        low: Lower end of a range (inclusive).
        high: Upper end of a range (inclusive).
        log: Search the range on a log scale (learning rates).
        integer: The range holds whole numbers.
        grid: Explicit grid points for a range (must lie inside it).
        grid_points: How many grid points to derive when ``grid`` is empty.
    """

    name: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    grid: tuple[Any, ...] = ()
    grid_points: int = 3

    def problems(self) -> list[str]:
        """What is wrong with this parameter (empty when it is consistent and in its domain)."""
        found = self._consistency_problems()
        domain = DOMAINS.get(self.name)
        if found or domain is None:
            return found
        values = list(self.choices) if self.choices else [self.low, self.high, *self.grid]
        outside = [value for value in dict.fromkeys(values) if not domain.contains(value)]
        if outside:
            found.append(
                f"{self.name} must be {domain.describe()}, but the space allows {', '.join(map(repr, outside))}"
            )
        return found

    def _consistency_problems(self) -> list[str]:
        if self.choices:
            found = []
            if self.low is not None or self.high is not None:
                found.append(f"{self.name}: give either choices or a low/high range, not both")
            if len(set(map(repr, self.choices))) != len(self.choices):
                found.append(f"{self.name}: choices {list(self.choices)} contain duplicates")
            return found
        if self.low is None or self.high is None:
            return [f"{self.name}: needs choices or both low and high"]
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            return [f"{self.name}: low ({self.low}) must not be above high ({self.high})"]
        if self.log and self.low <= 0:
            return [f"{self.name}: a log-scale range needs low > 0, got {self.low}"]
        if self.integer and (self.low != int(self.low) or self.high != int(self.high)):
            return [f"{self.name}: an integer range needs whole low and high, got {self.low}..{self.high}"]
        if not self.grid and self.grid_points < 1:
            return [f"{self.name}: grid_points must be at least 1, got {self.grid_points}"]
        outside = [value for value in self.grid if not self.low <= value <= self.high]
        if outside:
            return [f"{self.name}: grid points {outside} lie outside {self.low}..{self.high}"]
        return []

    def grid_values(self) -> tuple[Any, ...]:
        """The values grid search tries for this parameter."""
        if self.choices:
            return tuple(self.choices)
        if self.grid:
            return tuple(self.grid)
        low, high = float(self.low), float(self.high)
        if self.integer:
            if high - low + 1 <= max(self.grid_points, 5):
                return tuple(range(int(low), int(high) + 1))
            points = np.linspace(low, high, self.grid_points)
            return tuple(sorted({int(round(point)) for point in points}))
        if self.grid_points == 1 or low == high:
            return (low,)
        points = np.geomspace(low, high, self.grid_points) if self.log else np.linspace(low, high, self.grid_points)
        # Round to one significant digit (3e-4, not 3.1e-4): readable grids, still
        # inside the range because the ends are kept exact.
        rounded = [float(f"{point:.0e}") if self.log else round(float(point), 6) for point in points]
        rounded[0], rounded[-1] = low, high
        return tuple(dict.fromkeys(rounded))

    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask ``trial`` for a value of this parameter."""
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class SearchSpace:
    """The hyperparameters of one model kind, declared once for every sampler.

    Introduced in ``03_tuning.ipynb``.

    Attributes:
        kind: ``"mlp"`` or ``"cnn"``.
        parameters: One :class:`Parameter` per name in ``REQUIRED_PARAMETERS[kind]``.

    Raises:
        ConfigError: The space is empty, lacks or adds a parameter, a parameter is
            inconsistent (an empty range, a grid point outside its range, ...), or
            allows a value outside its domain (:data:`DOMAINS`: a dropout rate of
            1, a learning rate of 0, a layer without units).
    """

    kind: str
    parameters: tuple[Parameter, ...]

    def __post_init__(self) -> None:
        if self.kind not in REQUIRED_PARAMETERS:
            raise ConfigError(f"unknown model kind {self.kind!r}: use one of {', '.join(REQUIRED_PARAMETERS)}.")
        required = REQUIRED_PARAMETERS[self.kind]
        if not self.parameters:
            raise ConfigError(
                f"the search space for the {self.kind} is empty: declare {', '.join(required)} "
                f"(see tune.default_space({self.kind!r}))."
            )
        names = [parameter.name for parameter in self.parameters]
        found = [f"{name} is declared twice" for name in sorted(set(names)) if names.count(name) > 1]
        missing = [name for name in required if name not in names]
        unknown = [name for name in names if name not in required]
        if missing:
            found.append(f"missing {', '.join(missing)}")
        if unknown:
            found.append(f"unknown for the {self.kind}: {', '.join(unknown)}")
        if found:
            found.append(f"a {self.kind} space declares exactly {', '.join(required)}")
        for parameter in self.parameters:
            found.extend(parameter.problems())
        if found:
            raise ConfigError(
                f"invalid search space for the {self.kind}: {'; '.join(found)}. "
                "Fix the space (see tune.default_space for a valid one); nothing was trained."
            )

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Ask ``trial`` for one value of every parameter.

        Introduced in ``03_tuning.ipynb``.

        Args:
            trial: The Optuna trial.

        Returns:
            ``{name: value}``.
        """
        return {parameter.name: parameter.suggest(trial) for parameter in self.parameters}

    def grid(self) -> dict[str, list[Any]]:
        """The grid derived from the space, for Optuna's ``GridSampler``.

        Introduced in ``03_tuning.ipynb``.

        Returns:
            ``{name: [values]}``.
        """
        return {parameter.name: list(parameter.grid_values()) for parameter in self.parameters}

    def grid_size(self) -> int:
        """How many points the grid has (the product of the value counts)."""
        return int(np.prod([len(values) for values in self.grid().values()]))

    def to_dict(self) -> dict[str, Any]:
        """The space as JSON-ready data (for study attributes and worker processes)."""
        return {"kind": self.kind, "parameters": [asdict(parameter) for parameter in self.parameters]}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> SearchSpace:
        """Rebuild a space from :meth:`to_dict` output.

        Raises:
            ConfigError: The data does not describe a valid space.
        """
        try:
            parameters = tuple(
                Parameter(**{**item, "choices": tuple(item.get("choices", ())), "grid": tuple(item.get("grid", ()))})
                for item in payload.get("parameters", ())
            )
            return cls(kind=payload["kind"], parameters=parameters)
        except (KeyError, TypeError) as error:
            raise ConfigError(f"cannot read a search space from {dict(payload)!r}: {error}.") from None


def default_space(kind: str) -> SearchSpace:
    """The search space the notebook and the command use for a model kind.

    Introduced in ``03_tuning.ipynb``. MLP: 1-3 hidden layers of 64-512 units,
    dropout 0-0.4, learning rate 1e-4 to 3e-3 (log scale), batch 32-256. CNN: 1-2
    convolution blocks starting at 16-64 filters (doubling), a dense layer of
    64-256 units, and the same dropout, learning rate and batch sizes.

    Args:
        kind: ``"mlp"`` or ``"cnn"``.

    Returns:
        The :class:`SearchSpace`.

    Raises:
        ConfigError: Unknown kind.
    """
    shared = (
        Parameter("dropout", low=0.0, high=0.4, grid_points=3),
        Parameter("learning_rate", low=1e-4, high=3e-3, log=True, grid_points=4),
    )
    if kind == "mlp":
        return SearchSpace(
            "mlp",
            (
                Parameter("num_layers", low=1, high=3, integer=True),
                Parameter("units", choices=(64, 128, 256, 512)),
                *shared,
                Parameter("batch_size", choices=(32, 64, 128, 256)),
            ),
        )
    if kind == "cnn":
        return SearchSpace(
            "cnn",
            (
                Parameter("num_conv_layers", low=1, high=2, integer=True),
                Parameter("filters", choices=(16, 32, 64)),
                Parameter("dense_units", choices=(64, 128, 256)),
                *shared,
                Parameter("batch_size", choices=(32, 64, 128)),
            ),
        )
    raise ConfigError(f"unknown model kind {kind!r}: use one of {', '.join(REQUIRED_PARAMETERS)}.")


def space_from_simple_dict(kind: str, mapping: Mapping[str, Any]) -> SearchSpace:
    """A space from a short mapping, as ``aideploy tune --space FILE.json`` reads it.

    Each name maps to a list of choices, or to ``{"low": .., "high": .., "log":
    .., "integer": .., "grid": [..]}``.

    Introduced in ``03_tuning.ipynb``.

    Args:
        kind: ``"mlp"`` or ``"cnn"``.
        mapping: ``{name: [choices] or {range}}``.

    Returns:
        The :class:`SearchSpace`.

    Raises:
        ConfigError: The mapping is not of that form or the space is inconsistent.
    """
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"a search space is a JSON object {{name: [choices] or {{low, high}}}}, got {mapping!r}.")
    parameters = []
    for name, value in mapping.items():
        if isinstance(value, list):
            if not value:
                raise ConfigError(
                    f"search space entry {name!r} has an empty list of choices: give at least one value."
                )
            parameters.append(Parameter(str(name), choices=tuple(value)))
        elif isinstance(value, Mapping):
            allowed = {"low", "high", "log", "integer", "grid", "grid_points"}
            if set(value) - allowed:
                raise ConfigError(
                    f"search space entry {name!r} has unknown keys {sorted(set(value) - allowed)}: "
                    f"use {sorted(allowed)}."
                )
            parameters.append(Parameter(str(name), **{**value, "grid": tuple(value.get("grid", ()))}))
        else:
            raise ConfigError(
                f"search space entry {name!r} must be a list of choices or an object with low/high, got {value!r}."
            )
    return SearchSpace(kind, tuple(parameters))


def hyperparameters(kind: str, params: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """Turn a trial's parameters into model-builder arguments and a batch size.

    Introduced in ``03_tuning.ipynb``.

    Args:
        kind: ``"mlp"`` or ``"cnn"``.
        params: Values of the space's parameters (``trial.params``).

    Returns:
        ``(keyword arguments for models.build, batch_size)``.

    Raises:
        ConfigError: Unknown kind or a parameter is missing.
    """
    try:
        shared = {"dropout": float(params["dropout"]), "learning_rate": float(params["learning_rate"])}
        batch_size = int(params["batch_size"])
        if kind == "mlp":
            units = int(params["units"])
            return {"hidden_units": (units,) * int(params["num_layers"]), **shared}, batch_size
        if kind == "cnn":
            first = int(params["filters"])
            filters = tuple(first * 2**index for index in range(int(params["num_conv_layers"])))
            return {"filters": filters, "dense_units": int(params["dense_units"]), **shared}, batch_size
    except KeyError as error:
        raise ConfigError(f"the parameters {dict(params)} lack {error} for the {kind}.") from None
    raise ConfigError(f"unknown model kind {kind!r}: use one of {', '.join(REQUIRED_PARAMETERS)}.")
