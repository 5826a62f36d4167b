"""The one writer for artifacts and their manifests.

Every file a stage produces is written atomically: into a temporary name in the
same folder, then renamed over the final name, so a crash or an error never leaves
a half-written model behind. Beside each artifact lies a JSON manifest
(``<name>.manifest.json``) that says what produced it, from what, with which
settings, how well it did, and the artifact's SHA-256, so a later stage (or a
person) can check that the file is the one the manifest describes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aideploy
from aideploy.errors import ArtifactError

MANIFEST_SUFFIX = ".manifest.json"


def manifest_path(artifact: str | os.PathLike) -> Path:
    """The manifest path of an artifact: ``model.keras`` -> ``model.keras.manifest.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder (its files' relative paths and bytes, sorted).

    Args:
        path: A file or a folder (e.g. a SavedModel).

    Returns:
        The hex digest.

    Raises:
        ArtifactError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"cannot hash {path}: it does not exist.")
    digest = hashlib.sha256()
    if path.is_file():
        _hash_file_into(digest, path)
        return digest.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(b"\0")
        _hash_file_into(digest, file)
    return digest.hexdigest()


def _hash_file_into(digest: Any, path: Path) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def writable_dir(folder: str | os.PathLike, *, option: str | None = "--out") -> Path:
    """Create ``folder`` if needed and check that files can be written into it.

    Commands and stages call this *before* hours of work, so that an unwritable
    output folder is reported up front rather than as a traceback at the end.
    Introduced in ``02_training.ipynb`` (``train.train_and_save`` calls it).

    Args:
        folder: The output folder.
        option: The command-line option that chooses the folder, named in the
            message (``None`` for a folder chosen in code).

    Returns:
        The folder as a :class:`~pathlib.Path`.

    Raises:
        ArtifactError: The folder cannot be created or written to.
    """
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # os.access can say yes where a write still fails (read-only mounts,
        # /proc), so try a real file.
        handle, probe = tempfile.mkstemp(prefix=".aideploy-write-check.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ArtifactError(
            f"cannot write to {folder} ({reason}): choose a writable folder"
            + (f" with {option}." if option else ".")
        ) from None
    return folder


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Give a temporary path next to ``final``; rename it to ``final`` on success.

    The temporary name keeps ``final``'s suffix, because some writers (Keras's
    ``model.save``) choose the format from it. On an exception the temporary file
    or folder is removed and ``final`` is left as it was.

    Args:
        final: Where the artifact should end up (file or folder).

    Yields:
        The temporary path to write to.
    """
    final = Path(final)
    writable_dir(final.parent, option=None)
    handle, temporary_name = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent
    )
    os.close(handle)
    temporary = Path(temporary_name)
    temporary.unlink()  # writers that create folders want the name free
    try:
        yield temporary
        if not temporary.exists():
            raise ArtifactError(f"writing {final.name} produced no file.")
        if final.is_dir() and temporary.is_dir():
            # A folder cannot be renamed over a non-empty folder: move the old
            # one aside first so the swap is as short as possible.
            backup = final.with_name(f".{final.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(final, backup)
            os.replace(temporary, final)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(temporary, final)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        elif temporary.exists():
            temporary.unlink()


def write_bytes(path: str | os.PathLike, content: bytes) -> Path:
    """Write ``content`` to ``path`` atomically.

    Returns:
        The final path.
    """
    with atomic_path(path) as temporary:
        temporary.write_bytes(content)
    return Path(path)


def write_json(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write a JSON document atomically (UTF-8, indented, keys in insertion order).

    Returns:
        The final path.
    """
    text = json.dumps(payload, indent=2, default=_json_default) + "\n"
    return write_bytes(path, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays, Paths: the types stages naturally produce.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def save_artifact(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    *,
    kind: str,
    produced_by: str,
    inputs: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write an artifact atomically with ``write(temporary_path)``, then its manifest.

    Args:
        path: Final path of the artifact (file or folder).
        write: Writes the artifact to the path it is given.
        kind: What the artifact is, e.g. ``"keras-model"``, ``"onnx-model"``.
        produced_by: The function or command that produced it.
        inputs: What it was made from (data checksums, a source model's SHA-256).
        params: Settings (hyperparameters, converter options).
        metrics: How well it did (accuracies, sizes).
        extra: Anything else worth recording (input/output names, shapes).

    Returns:
        ``(artifact_path, manifest_path)``.
    """
    path = Path(path)
    with atomic_path(path) as temporary:
        write(temporary)
    manifest = build_manifest(
        path,
        kind=kind,
        produced_by=produced_by,
        inputs=inputs,
        params=params,
        metrics=metrics,
        extra=extra,
    )
    return path, write_json(manifest_path(path), manifest)


def build_manifest(
    path: str | os.PathLike,
    *,
    kind: str,
    produced_by: str,
    inputs: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of an existing artifact (see :func:`save_artifact`)."""
    path = Path(path)
    size = (
        path.stat().st_size
        if path.is_file()
        else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    )
    return {
        "artifact": path.name,
        "kind": kind,
        "sha256": sha256_of(path),
        "size_bytes": size,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "produced_by": produced_by,
        "environment": {
            "aideploy": aideploy.__version__,
            "python": platform.python_version(),
        },
        "inputs": dict(inputs or {}),
        "params": dict(params or {}),
        "metrics": dict(metrics or {}),
        **dict(extra or {}),
    }


def read_manifest(artifact: str | os.PathLike) -> dict[str, Any]:
    """Read the manifest that lies beside ``artifact``.

    Raises:
        ArtifactError: The manifest is missing or not valid JSON.
    """
    path = manifest_path(artifact)
    if not path.is_file():
        raise ArtifactError(
            f"no manifest for {artifact}: expected {path}. Re-create the artifact "
            "with the aideploy function or command that produced it."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ArtifactError(f"manifest {path} is not valid JSON ({error}).") from None


def verify(artifact: str | os.PathLike) -> dict[str, Any]:
    """Check that an artifact's SHA-256 matches its manifest.

    Returns:
        The manifest.

    Raises:
        ArtifactError: The artifact or manifest is missing, or the hashes differ.
    """
    manifest = read_manifest(artifact)
    actual = sha256_of(artifact)
    if actual != manifest.get("sha256"):
        raise ArtifactError(
            f"{artifact} does not match its manifest (SHA-256 {actual[:12]}... vs "
            f"{str(manifest.get('sha256'))[:12]}...): it was changed after it was "
            "written. Re-create it."
        )
    return manifest
