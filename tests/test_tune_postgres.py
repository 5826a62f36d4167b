"""Two tuning workers share one study on a real PostgreSQL server.

The fixture creates a throwaway database cluster in a temporary folder, serves it
on a free loopback port, and removes it afterwards, also when the test fails. It
needs Debian's ``postgresql`` package (``initdb``, ``pg_ctl``); the driver is the
``postgres`` extra of the package (``pip install -e '.[postgres]'``).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from _tune_helpers import tiny_settings

from aideploy import tune


def server_binaries() -> Path | None:
    """The folder of ``initdb``, ``pg_ctl`` and ``createdb``: from the PATH, or Debian's newest version."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent  # Debian links the tools from its versioned folder
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name))
    found = [Path(folder) for folder in folders if (Path(folder) / "initdb").is_file()]
    return found[-1] if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database on 127.0.0.1 for this module's tests; its URL."""
    binaries = server_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql package")
    folder = Path(tempfile.mkdtemp(prefix="aideploy-postgres-"))
    # initdb refuses to run as root: run the server as the postgres user then.
    as_server_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, user="postgres", group="postgres")
        as_server_user = ["runuser", "-u", "postgres", "--"]
    cluster, log, port = folder / "data", folder / "server.log", free_port()

    def server(tool: str, *arguments: str) -> None:
        subprocess.run([*as_server_user, str(binaries / tool), *arguments], check=True, capture_output=True,
                       text=True, timeout=120)

    started = False
    try:
        server("initdb", "-D", str(cluster), "-A", "trust", "-U", "aideploy", "-E", "UTF8", "--no-sync")
        # Loopback only, the socket in the temporary folder, no fsync: a throwaway server.
        server("pg_ctl", "-D", str(cluster), "-l", str(log), "-w", "-t", "60",
               "-o", f"-h 127.0.0.1 -p {port} -k {folder} -F", "start")
        started = True
        server("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "aideploy", "optuna")
        yield f"postgresql+psycopg2://aideploy@127.0.0.1:{port}/optuna"
    except subprocess.CalledProcessError as error:
        server_log = log.read_text() if log.exists() else ""
        pytest.fail(f"could not start a PostgreSQL server: {error.stderr}\n{server_log}")
    finally:
        try:
            if started:
                server("pg_ctl", "-D", str(cluster), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_one_study_on_postgresql(postgres_url):
    settings = tiny_settings(sampler="random", num_trials=4, pruner="none")
    result = tune.run(settings, storage=postgres_url, study_name="pg", workers=2, progress=False)
    # Read the study back from the server, as another machine would.
    trials = optuna.load_study(study_name="pg", storage=postgres_url).trials
    numbers = [trial.number for trial in trials]
    assert len(trials) == 4 == result.n_trials == result.n_new_trials
    assert sorted(numbers) == [0, 1, 2, 3]  # unique, none lost
    assert {trial.state.name for trial in trials} == {"COMPLETE"}
    assert {trial.user_attrs["worker"] for trial in trials} == {0, 1}  # both workers contributed
    assert "postgresql" in result.summary()["storage"]


def test_a_postgresql_study_is_created_listed_and_deleted(postgres_url):
    settings = tiny_settings()
    storage = tune.open_storage(postgres_url)
    study = optuna.create_study(study_name="empty", storage=storage, directions=settings.directions)
    assert "empty" in optuna.study.get_all_study_names(storage) and study.trials == []
    assert tune.delete_study("empty", postgres_url) is True
    assert tune.delete_study("empty", postgres_url) is False
