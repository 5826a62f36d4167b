"""The documentation site: it builds with warnings as errors (once per module), its API
reference covers every module, every notebook page shows its plots, and every relative
link in the hand-written pages points at a page and anchor that exist."""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


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


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory, repo_root) -> Path:
    """The site built once for this module, with warnings as errors; the HTML folder."""
    sphinx = Path(sys.executable).with_name("sphinx-build")
    html = tmp_path_factory.mktemp("docs") / "html"
    result = subprocess.run(
        [str(sphinx), "-W", "--keep-going", "-q", "-b", "html", str(repo_root / "docs"), str(html)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return html


def test_docs_build_without_warnings_and_with_an_api_page_per_module(built_docs, repo_root):
    html = built_docs
    assert "aideploy.data.load" in (html / "api" / "data.html").read_text()
    # Subpackages get a page of their own and one for each module.
    for subpackage in _subpackages(repo_root / "aideploy"):
        page = html / "api" / f"{subpackage}.html"
        assert page.is_file(), f"no API page for the subpackage aideploy.{subpackage}"
        assert f"aideploy.{subpackage}" in page.read_text()
    # The hand-written pages are in the site and linked from the landing page.
    landing = (html / "index.html").read_text()
    for page in _pages(repo_root):
        assert (html / page.with_suffix(".html").name).is_file(), page.name
        if page.stem != "index":
            assert f'href="{page.stem}.html"' in landing, f"{page.name} is not in the landing page's toctree"


def _image_outputs(notebook: Path) -> int:
    cells = json.loads(notebook.read_text())["cells"]
    return sum(
        1
        for cell in cells if cell["cell_type"] == "code"
        for output in cell.get("outputs", [])
        if any(kind.startswith("image/") for kind in output.get("data", {}))
    )


def test_every_notebook_page_shows_its_plots(built_docs, repo_root):
    """Each notebook is rendered from its committed outputs (not re-executed), plots as images."""
    notebooks = sorted((repo_root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks
    with_plots = 0
    for notebook in notebooks:
        page = built_docs / "notebooks" / f"{notebook.stem}.html"
        assert page.is_file(), f"notebook {notebook.stem} is not rendered"
        text = page.read_text()
        sources = re.findall(r"<img[^>]*\ssrc=\"([^\"]+)\"", text)
        expected = _image_outputs(notebook)
        assert len(sources) >= expected, f"{notebook.name}: {expected} image outputs, {len(sources)} <img> tags"
        for source in sources:
            if not source.startswith("data:"):
                assert (page.parent / source).resolve().is_file(), f"{notebook.name}: {source} is missing"
        with_plots += expected > 0
    assert with_plots >= 1  # the committed notebooks carry their full-mode outputs, plots included


# --- Internal links ---------------------------------------------------------------------

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")


def _pages(repo_root: Path) -> list[Path]:
    """The hand-written Markdown pages (generated API and notebook pages are not in docs/*.md)."""
    return sorted((repo_root / "docs").glob("*.md"))


def _relative_links(markdown: str) -> list[str]:
    """Targets of the Markdown links outside code that point inside the site."""
    prose = _INLINE_CODE.sub("", _FENCE.sub("", markdown))
    return [target for target in _LINK.findall(prose) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def _broken_links(page: Path, docs: Path, html: Path) -> list[str]:
    """Relative links of ``page`` whose page or anchor does not exist in the built site."""
    broken = []
    for target in _relative_links(page.read_text()):
        path, _, anchor = target.partition("#")
        source = (page.parent / path).resolve() if path else page
        if not source.is_file() or docs not in source.parents:
            broken.append(f"{target} (no such page)")
            continue
        built = html / source.relative_to(docs).with_suffix(".html")
        if not built.is_file():
            broken.append(f"{target} (not in the built site)")
        elif anchor and f'id="{anchor}"' not in built.read_text():
            broken.append(f"{target} (no anchor #{anchor})")
    return broken


def test_relative_links_in_the_pages_resolve(built_docs, repo_root):
    docs = (repo_root / "docs").resolve()
    pages = _pages(repo_root)
    assert {"scale-out.md", "troubleshooting.md", "monitoring-ops.md"} <= {page.name for page in pages}
    checked = 0
    for page in pages:
        assert _broken_links(page, docs, built_docs) == [], page.name
        checked += len(_relative_links(page.read_text()))
    assert checked >= 5


def test_the_link_check_finds_broken_links(built_docs, repo_root, tmp_path):
    # A probe page beside a copy of the quickstart, checked against the built site.
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(repo_root / "docs" / "quickstart.md", docs / "quickstart.md")
    page = docs / "probe.md"
    page.write_text(
        "[ok](quickstart.md) [ok too](quickstart.md#configuration) [web](https://example.org/x.md)\n"
        "[gone](no-such-page.md) [bad anchor](quickstart.md#no-such-heading) `[code](missing.md)`\n"
        "```\n[fenced](missing.md)\n```\n"
    )
    assert _broken_links(page, docs.resolve(), built_docs) == [
        "no-such-page.md (no such page)", "quickstart.md#no-such-heading (no anchor #no-such-heading)",
    ]
