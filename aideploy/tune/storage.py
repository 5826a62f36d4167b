"""Where studies live: SQLite, a database server, or a journal file (no TensorFlow).

Introduced in ``03_tuning.ipynb``. The same storage URL on many processes or
machines is how a search scales out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aideploy import config
from aideploy.errors import ConfigError
from aideploy.tune._optuna import optuna
from aideploy.tune.settings import TuneSettings, make_pruner, make_sampler


def default_storage_url(out_dir: str | os.PathLike | None = None) -> str:
    """``sqlite:///<out_dir>/tuning.db`` (default: the artifacts folder).

    Introduced in ``03_tuning.ipynb``.

    Args:
        out_dir: Folder of the SQLite file.

    Returns:
        The storage URL.
    """
    folder = config.resolve_out_dir(out_dir)
    return f"sqlite:///{folder.resolve() / 'tuning.db'}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open an Optuna storage, failing clearly when it cannot be opened.

    - ``sqlite:///path.db``: a local file; several processes on one machine can
      share it (writes wait up to a minute for the file lock).
    - ``postgresql://...``, ``mysql+pymysql://...``: a database server that many
      machines share (needs its driver: ``pip install 'aideploy[postgres]'``
      installs psycopg2 for PostgreSQL).
    - ``journal:///path.log`` (or a path ending in ``.log``): Optuna's journal
      file, an append-only log with a file lock, for shared disks (NFS) where
      SQLite's locking is unreliable.

    Introduced in ``03_tuning.ipynb``.

    Args:
        url: The storage URL.

    Returns:
        The storage.

    Raises:
        ConfigError: The URL is malformed, its folder does not exist, its driver
            is missing or the database cannot be reached.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("the storage URL is empty: use e.g. sqlite:///artifacts/tuning.db.")
    url = url.strip()
    if url.startswith("journal://") or (url.endswith(".log") and "://" not in url):
        path = Path(url[len("journal://") :] if url.startswith("journal://") else url)
        _check_parent_folder(path, url)
        try:
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend)
        except Exception as error:  # noqa: BLE001 - any failure means "cannot open"
            raise ConfigError(f"cannot open the journal storage {url}: {error}.") from None
    if "://" not in url:
        raise ConfigError(
            f"{url!r} is not a storage URL: use sqlite:///path/to/file.db, a PostgreSQL/MySQL URL "
            "(postgresql://user:password@host/database) or journal:///path/to/file.log."
        )
    sqlite_file: Path | None = None
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        sqlite_file = Path(url[len("sqlite:///") :])
        _check_parent_folder(sqlite_file, url)
        # SQLite lets one writer in at a time; the others wait (default 5 s). Trials
        # write rarely but several workers may finish at once, so wait longer.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    existed = sqlite_file is not None and sqlite_file.exists()
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as error:  # noqa: BLE001 - SQLAlchemy raises many types here
        if sqlite_file is not None and not existed and sqlite_file.exists():
            sqlite_file.unlink()  # do not leave an empty database behind
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"cannot open the storage {_redact(url)}: {reason}. Check the URL's scheme, host, "
            "database and credentials, and that its driver is installed (for PostgreSQL: "
            "pip install 'aideploy[postgres]'; for mysql+pymysql: pip install pymysql)."
        ) from None


def _check_parent_folder(path: Path, url: str) -> None:
    if not path.parent.is_dir():
        raise ConfigError(
            f"cannot open the storage {url}: the folder {path.parent} does not exist. "
            "Create it first or choose another path."
        )
    if not os.access(path.parent, os.W_OK):
        raise ConfigError(f"cannot open the storage {url}: the folder {path.parent} is not writable.")


def _redact(url: str) -> str:
    # Never print a database password in an error message.
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return url


def default_study_name(settings: TuneSettings) -> str:
    """The study name :func:`run` uses when none is given.

    Introduced in ``03_tuning.ipynb``.

    Args:
        settings: The run's settings.

    Returns:
        ``<kind>-<sampler>-<objectives>``, e.g. ``mlp-tpe-accuracy``.
    """
    return f"{settings.kind}-{settings.sampler}-{'-'.join(settings.objectives)}"


def delete_study(study_name: str, storage: str | None = None) -> bool:
    """Delete a study if it exists, so that the next :func:`run` starts it afresh.

    :func:`run` resumes a study of the same name; a notebook that should give the
    same answer each time it runs deletes its studies first.

    Introduced in ``03_tuning.ipynb``.

    Args:
        study_name: The study.
        storage: Its storage URL (default: :func:`default_storage_url`).

    Returns:
        Whether a study was deleted.

    Raises:
        ConfigError: The storage cannot be opened.
    """
    backend = open_storage(storage if storage is not None else default_storage_url())
    if study_name not in optuna.study.get_all_study_names(backend):
        return False
    optuna.delete_study(study_name=study_name, storage=backend)
    return True


def _open_study(
    storage: optuna.storages.BaseStorage, study_name: str, settings: TuneSettings, *, sampler_offset: int = 0
) -> tuple[optuna.Study, bool]:
    """Load the study if it exists (checking it fits ``settings``), else create it."""
    names = optuna.study.get_all_study_names(storage)
    if study_name in names:
        study = optuna.load_study(study_name=study_name, storage=storage)
        recorded = study.user_attrs.get("aideploy", {})
        if (
            recorded.get("kind", settings.kind) != settings.kind
            or list(recorded.get("objectives", settings.objectives)) != list(settings.objectives)
            or [direction.name.lower() for direction in study.directions] != settings.directions
        ):
            raise ConfigError(
                f"the study {study_name!r} in this storage was created for the "
                f"{recorded.get('kind', '?')} with objectives {','.join(recorded.get('objectives', ['?']))}, "
                f"not the {settings.kind} with {','.join(settings.objectives)}: choose another study name "
                "(--study) or the same model and objectives."
            )
        offset = sampler_offset + len(study.trials)
        study.sampler = make_sampler(settings, offset=offset)
        study.pruner = make_pruner(settings)
        return study, False
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        directions=settings.directions,
        sampler=make_sampler(settings, offset=sampler_offset),
        pruner=make_pruner(settings),
    )
    study.set_user_attr(
        "aideploy",
        {"kind": settings.kind, "objectives": list(settings.objectives), "space": settings.space.to_dict()},
    )
    return study, True
