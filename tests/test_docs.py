"""The documentation site builds with warnings as errors."""

import subprocess
import sys
from pathlib import Path


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
