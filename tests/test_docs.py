"""The documentation site builds with warnings as errors, and its API reference covers every module."""

import importlib.util
import subprocess
import sys
from pathlib import Path


def _load_docs_conf(repo_root: Path):
    # Importing docs/conf.py writes nothing: Sphinx's setup() hook does that.
    spec = importlib.util.spec_from_file_location("aideploy_docs_conf", repo_root / "docs" / "conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _subpackages(package_dir: Path) -> list[str]:
    return sorted(
        path.parent.relative_to(package_dir).as_posix().replace("/", ".")
        for path in package_dir.rglob("__init__.py")
        if path.parent != package_dir and not path.parent.name.startswith(("_", "."))
    )


def test_api_reference_walks_subpackages(tmp_path, repo_root):
    """A subpackage and its modules get pages; private modules do not."""
    package = tmp_path / "package"
    (package / "stage" / "deeper").mkdir(parents=True)
    for relative in ("__init__.py", "plain.py", "_private.py", "stage/__init__.py", "stage/part.py",
                     "stage/_helper.py", "stage/deeper/__init__.py", "stage/deeper/leaf.py"):
        (package / relative).write_text('"""A module."""\n')
    (package / "notes.txt").write_text("not a module")
    conf = _load_docs_conf(repo_root)
    assert conf.api_modules(package) == [
        "plain", "stage", "stage.deeper", "stage.deeper.leaf", "stage.part",
    ]
    assert not (repo_root / "docs" / "api" / "plain.md").exists()
    # On the real package every subpackage there is (tune/, later serve/) is listed
    # with its modules.
    real = conf.api_modules(repo_root / "aideploy")
    assert "data" in real and "cli" in real
    for subpackage in _subpackages(repo_root / "aideploy"):
        assert subpackage in real
        modules = [p.stem for p in (repo_root / "aideploy" / subpackage.replace(".", "/")).glob("[!_]*.py")]
        assert all(f"{subpackage}.{module}" in real for module in modules), (subpackage, modules)


def test_docs_build_without_warnings(tmp_path, repo_root):
    sphinx = Path(sys.executable).with_name("sphinx-build")
    result = subprocess.run(
        [str(sphinx), "-W", "--keep-going", "-q", "-b", "html", str(repo_root / "docs"), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    html = tmp_path / "html"
    notebooks = sorted(path.stem for path in (repo_root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for name in notebooks:
        page = html / "notebooks" / f"{name}.html"
        assert page.is_file(), f"notebook {name} is not rendered"
    # The committed outputs are rendered (plots as images), not re-executed.
    assert "<img" in (html / "notebooks" / "02_training.html").read_text()
    assert "aideploy.data.load" in (html / "api" / "data.html").read_text()
    # Subpackages get a page of their own and one for each module.
    for subpackage in _subpackages(repo_root / "aideploy"):
        page = html / "api" / f"{subpackage}.html"
        assert page.is_file(), f"no API page for the subpackage aideploy.{subpackage}"
        assert f"aideploy.{subpackage}" in page.read_text()
