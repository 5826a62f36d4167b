"""Optuna, imported once for the tuning subpackage, quietly.

Optuna imports ``tqdm.auto``, which warns in a notebook without ipywidgets; tuning
prints one line a trial instead of a progress widget. Optuna also logs one INFO
line per trial; the tuning functions print their own, shorter progress, so keep
Optuna to warnings.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)

__all__ = ["optuna"]
