"""One fast-mode ``aideploy pipeline`` run, run twice, shared by the tests that need a finished run.

The first run builds everything (about half a minute); the second resumes and
should skip every stage. Both are timed here, once a test session, so that the
README and ``make demo`` tests can start from a finished run (copied into their
own folder) instead of paying for a third.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Run:
    """One command's outcome: exit status, wall seconds, output, and its last line as JSON."""

    returncode: int
    seconds: float
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict:
        return json.loads(self.stdout.strip().splitlines()[-1])


def run_cli(*args: str, cwd: Path = REPO_ROOT, timeout: float = 600) -> Run:
    """Run ``python -m aideploy.cli ARGS`` with this interpreter and this worktree first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "aideploy.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    return Run(done.returncode, time.perf_counter() - started, done.stdout, done.stderr)


_CACHE: dict[str, tuple[Path, Run, Run]] = {}


def fast_run_twice(folder: Path) -> tuple[Path, Run, Run]:
    """``aideploy pipeline --fast --out folder/run`` twice (once a session); the folder and both runs."""
    if "run" not in _CACHE:
        out_dir = folder / "run"
        first = run_cli("pipeline", "--fast", "--out", str(out_dir))
        second = run_cli("pipeline", "--fast", "--out", str(out_dir)) if first.returncode == 0 else first
        _CACHE["run"] = (out_dir, first, second)
    return _CACHE["run"]
