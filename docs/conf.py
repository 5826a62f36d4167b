"""Sphinx configuration: the committed notebooks (with their outputs) plus an API reference.

The notebooks live in ``notebooks/`` at the repository root, where a reader opens
them in JupyterLab; Sphinx only reads files below ``docs/``, so they are copied
into ``docs/notebooks/`` at build time (that folder is git-ignored). Likewise one
API page per module of the package, subpackages and their modules included
(``aideploy.tune``, ``aideploy.tune.study``, ...), is generated into ``docs/api/``,
so a new module appears in the reference without editing the docs. Both happen in
:func:`setup`, which Sphinx calls before it reads the sources; importing this file
(as a test does) writes nothing.
"""

from __future__ import annotations

import pkgutil
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import aideploy  # noqa: E402  (after the path is set; also selects tf-keras)


def _copy_notebooks() -> None:
    target = DOCS / "notebooks"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        shutil.copy2(notebook, target / notebook.name)


def api_modules(package_dir: Path) -> list[str]:
    """The public modules of the package in ``package_dir``, subpackages included.

    Walks the folder with :func:`pkgutil.iter_modules` (nothing is imported), so a
    subpackage such as ``tune/`` yields ``"tune"`` and ``"tune.<module>"`` for each
    of its modules. Names starting with ``_`` are private and left out.

    Args:
        package_dir: The package's folder (e.g. ``<repo>/aideploy``).

    Returns:
        Dotted names relative to the package, sorted.
    """
    names: list[str] = []
    for info in pkgutil.iter_modules([str(package_dir)]):
        if info.name.startswith("_"):
            continue
        names.append(info.name)
        if info.ispkg:
            names.extend(f"{info.name}.{child}" for child in api_modules(package_dir / info.name))
    return sorted(names)


def _write_api_pages() -> None:
    target = DOCS / "api"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    modules = api_modules(ROOT / "aideploy")
    for module in modules:
        title = f"aideploy.{module}"
        (target / f"{module}.md").write_text(
            f"# `{title}`\n\n```{{eval-rst}}\n.. automodule:: {title}\n   :members:\n"
            "   :show-inheritance:\n```\n"
        )
    entries = "\n".join(modules)
    (target / "index.md").write_text(
        "# API reference\n\nOne module per pipeline stage; each function's docstring names "
        "the notebook that introduces it.\n\n"
        f"```{{toctree}}\n:maxdepth: 1\n\n{entries}\n```\n"
    )


def setup(app) -> None:
    """Generate the copied notebooks and the API pages before Sphinx reads the sources."""
    _copy_notebooks()
    _write_api_pages()


project = "aideploy"
author = "the aideploy developers"
copyright = "2026, the aideploy developers"
release = aideploy.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]

# The notebooks are rendered with the outputs of their committed full-mode run;
# the docs build never executes them (the test suite does, in fast mode).
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"aideploy {release}"
