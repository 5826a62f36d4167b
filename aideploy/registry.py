"""Stage 07, model repository: publish exports into Triton's layout, and read them back safely.

Notebook: ``notebooks/07_serving.ipynb``. Command: ``aideploy publish``.

The repository is a folder in the layout Triton Inference Server and KServe
read, so the folder the tutorial serves locally also serves on them::

    <repo>/<name>/config.pbtxt              name, platform, max_batch_size, inputs, outputs
    <repo>/<name>/<version>/model.onnx      the model (a model.tflite may sit beside it)
    <repo>/<name>/<version>/model.onnx.manifest.json

Versions are whole numbers; the newest serves by default. A version is
immutable: publishing into an existing version is an error, and a version
folder appears whole (it is written into a temporary folder inside the
repository and renamed). Names and versions are validated, and every file
the repository hands out lies inside it and matches its manifest's SHA-256.

This module never imports TensorFlow: publishing a ``.keras`` file imports
:mod:`aideploy.convert` only for that case.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aideploy import artifacts
from aideploy.errors import ArtifactError, ConfigError, ModelNotFoundError

CONFIG_NAME = "config.pbtxt"
ONNX_NAME = "model.onnx"
TFLITE_NAME = "model.tflite"
PLATFORM = "onnxruntime_onnx"
DEFAULT_MAX_BATCH_SIZE = 64

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VERSION_PATTERN = re.compile(r"[1-9][0-9]{0,17}")

#: NumPy dtype name -> (Triton config ``data_type``, KServe V2 ``datatype``).
DATATYPES = {
    "bool": ("TYPE_BOOL", "BOOL"),
    "uint8": ("TYPE_UINT8", "UINT8"),
    "uint16": ("TYPE_UINT16", "UINT16"),
    "uint32": ("TYPE_UINT32", "UINT32"),
    "uint64": ("TYPE_UINT64", "UINT64"),
    "int8": ("TYPE_INT8", "INT8"),
    "int16": ("TYPE_INT16", "INT16"),
    "int32": ("TYPE_INT32", "INT32"),
    "int64": ("TYPE_INT64", "INT64"),
    "float16": ("TYPE_FP16", "FP16"),
    "float32": ("TYPE_FP32", "FP32"),
    "float64": ("TYPE_FP64", "FP64"),
}


def validate_name(name: Any) -> str:
    """Check a model name: 1-64 letters, digits, ``_``, ``.``, ``-``, starting with a letter or digit.

    A name is a folder name inside the repository, so anything that could
    leave it (``..``, ``/``, an absolute path) is refused. Introduced in
    ``07_serving.ipynb``.

    Args:
        name: The proposed name.

    Returns:
        The name.

    Raises:
        ConfigError: The name is not of that form.
    """
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (e.g. 'fashion-mlp')."
        )
    return name


def validate_version(version: Any) -> int:
    """Check a version: a whole number of at least 1 (as an int or its decimal text).

    Introduced in ``07_serving.ipynb``.

    Args:
        version: The proposed version.

    Returns:
        The version as an ``int``.

    Raises:
        ConfigError: It is not a positive whole number.
    """
    text = str(version) if isinstance(version, int) and not isinstance(version, bool) else version
    if not isinstance(text, str) or not _VERSION_PATTERN.fullmatch(text):
        raise ConfigError(f"invalid model version {version!r}: use a whole number of at least 1 (e.g. 1, 2, 3).")
    return int(text)


@dataclass(frozen=True)
class ModelVersion:
    """One published, verified version of a model.

    Attributes:
        name: The model's name.
        version: Its version number.
        path: The ``model.onnx`` file.
        manifest: The manifest of ``model.onnx`` (its SHA-256 checked).
        signature: ``inputs`` and ``outputs`` (lists of ``name``, ``shape``, ``dtype``).
        max_batch_size: From ``config.pbtxt``.
        tflite_path: The ``model.tflite`` beside it (verified too), or ``None``.
    """

    name: str
    version: int
    path: Path
    manifest: dict[str, Any] = field(repr=False)
    signature: dict[str, list[dict[str, Any]]] = field(repr=False)
    max_batch_size: int
    tflite_path: Path | None = None


@dataclass(frozen=True)
class Published:
    """What :func:`publish` wrote.

    Attributes:
        name: The model's name.
        version: The new version.
        model_dir: ``<repo>/<name>``.
        version_dir: ``<repo>/<name>/<version>``.
        files: The files of the version folder.
    """

    name: str
    version: int
    model_dir: Path
    version_dir: Path
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (what ``aideploy publish`` prints)."""
        return {
            "name": self.name,
            "version": self.version,
            "model_dir": str(self.model_dir),
            "version_dir": str(self.version_dir),
            "files": self.files,
        }


class ModelRepository:
    """A Triton-layout model repository on disk, read safely.

    Introduced in ``07_serving.ipynb``.

    Args:
        root: The repository folder.

    Raises:
        ArtifactError: The folder does not exist.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ArtifactError(
                f"model repository {root} is not a folder: publish a model into it with "
                "`aideploy publish MODEL --repo DIR --name NAME`."
            )
        self.root = root.resolve()

    def __repr__(self) -> str:
        return f"ModelRepository({str(self.root)!r})"

    def models(self) -> list[str]:
        """Names of the models that have a ``config.pbtxt`` and at least one version, sorted."""
        names = []
        for entry in sorted(self.root.iterdir()):
            if _NAME_PATTERN.fullmatch(entry.name) and entry.is_dir() and (entry / CONFIG_NAME).is_file():
                if self._versions_in(entry):
                    names.append(entry.name)
        return names

    def versions(self, name: str) -> list[int]:
        """A model's versions, oldest first.

        Raises:
            ModelNotFoundError: No such model.
        """
        versions = self._versions_in(self._model_dir(name))
        if not versions:
            raise ModelNotFoundError(f"model {name!r} has no versions in {self.root}.")
        return versions

    def latest(self, name: str) -> int:
        """The newest version of a model (the one that serves by default)."""
        return self.versions(name)[-1]

    def max_batch_size(self, name: str) -> int:
        """``max_batch_size`` from the model's ``config.pbtxt``."""
        text = self._inside(self._model_dir(name) / CONFIG_NAME).read_text(encoding="utf-8")
        match = re.search(r"^\s*max_batch_size\s*:\s*(\d+)", text, re.MULTILINE)
        return int(match.group(1)) if match else 0

    def get(self, name: str, version: int | str | None = None) -> ModelVersion:
        """Find a version (default: the newest) and check its files against their manifests.

        Args:
            name: The model's name.
            version: The version (default: the newest).

        Returns:
            The :class:`ModelVersion`.

        Raises:
            ModelNotFoundError: No such model or version.
            ArtifactError: A file is missing, outside the repository, or does
                not match its manifest.
        """
        model_dir = self._model_dir(name)
        if version is None:
            number = self.latest(name)
        else:
            try:
                number = validate_version(version)
            except ConfigError:
                raise ModelNotFoundError(f"model {name!r} has no version {version!r}.") from None
        version_dir = model_dir / str(number)
        if not version_dir.is_dir():
            known = ", ".join(str(v) for v in self._versions_in(model_dir)) or "none"
            raise ModelNotFoundError(f"model {name!r} has no version {number} (versions: {known}).")
        path = self._inside(version_dir / ONNX_NAME)
        manifest = _verified(path)
        tflite = version_dir / TFLITE_NAME
        tflite_path = None
        if tflite.exists():
            tflite_path = self._inside(tflite)
            _verified(tflite_path)
        signature = manifest.get("signature") or _signature_of_onnx(path)
        return ModelVersion(
            name=name,
            version=number,
            path=path,
            manifest=manifest,
            signature=signature,
            max_batch_size=self.max_batch_size(name),
            tflite_path=tflite_path,
        )

    def _model_dir(self, name: str) -> Path:
        try:
            validate_name(name)
        except ConfigError:
            raise ModelNotFoundError(f"no model named {name!r} in {self.root}.") from None
        model_dir = self.root / name
        if not model_dir.is_dir():
            known = ", ".join(self.models()) or "none"
            raise ModelNotFoundError(f"no model named {name!r} in the repository (models: {known}).")
        return self._inside(model_dir)

    def _versions_in(self, model_dir: Path) -> list[int]:
        return sorted(
            int(entry.name)
            for entry in model_dir.iterdir()
            if _VERSION_PATTERN.fullmatch(entry.name) and entry.is_dir()
        )

    def _inside(self, path: Path) -> Path:
        # A symbolic link could point out of the repository even when every
        # name is valid: resolve it and refuse anything outside the root.
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise ArtifactError(f"{path} leads outside the model repository {self.root}: refusing to read it.")
        if not resolved.exists():
            raise ArtifactError(f"{path} is missing from the model repository: publish the model again.")
        return resolved


def publish(
    model: str | os.PathLike,
    repo: str | os.PathLike,
    name: str,
    *,
    version: int | str | None = None,
    tflite: str | os.PathLike | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> Published:
    """Publish a model into a repository as a new, immutable version.

    An ``.onnx`` export is copied with its manifest (checked first); a
    ``.keras`` file is exported to ONNX first (:func:`aideploy.convert.export`).
    ``config.pbtxt`` is generated from the manifest's signature on the first
    publish; later versions must have the same signature, since Triton serves
    every version with one configuration. Introduced in ``07_serving.ipynb``;
    ``aideploy publish`` calls it.

    Args:
        model: An ``.onnx`` file (with or without a manifest beside it) or a ``.keras`` file.
        repo: The repository folder (created if missing).
        name: The model's name (see :func:`validate_name`).
        version: The new version (default: one more than the newest).
        tflite: A ``.tflite`` export to publish beside the ONNX model.
        max_batch_size: The largest batch the server forms (``config.pbtxt``).

    Returns:
        The :class:`Published` version.

    Raises:
        ConfigError: Invalid name, version or batch size, or a signature that
            differs from the model's existing one.
        ArtifactError: The version exists already, or a file is missing or
            does not match its manifest.
    """
    name = validate_name(name)
    if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or max_batch_size < 1:
        raise ConfigError(f"max_batch_size must be a whole number of at least 1, got {max_batch_size!r}.")
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    model_dir = repo / name
    model_dir.mkdir(exist_ok=True)
    number = validate_version(version) if version is not None else _next_version(model_dir)
    version_dir = model_dir / str(number)
    if version_dir.exists():
        raise ArtifactError(
            f"model {name!r} already has version {number} in {repo}: versions are immutable; "
            "publish a new version (leave --version out to get the next one)."
        )
    staging = Path(tempfile.mkdtemp(prefix=f".publishing-{number}-", dir=model_dir))
    try:
        onnx_path = _as_onnx(Path(model), staging)
        _copy_with_manifest(onnx_path, staging / ONNX_NAME, name=name, version=number)
        if tflite is not None:
            _copy_with_manifest(Path(tflite), staging / TFLITE_NAME, name=name, version=number)
        signature = artifacts.read_manifest(staging / ONNX_NAME).get("signature")
        if not signature:
            signature = _signature_of_onnx(staging / ONNX_NAME)
        _write_config(model_dir, name, signature, max_batch_size)
        for leftover in staging.glob(".export-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if version_dir.exists():
            raise ArtifactError(f"model {name!r} version {number} appeared while publishing: publish again.")
        # rename(2) makes the whole folder appear at once; a reader never sees
        # a version without its manifest.
        os.rename(staging, version_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return Published(
        name=name,
        version=number,
        model_dir=model_dir.resolve(),
        version_dir=version_dir.resolve(),
        files=sorted(p.name for p in version_dir.iterdir()),
    )


def with_pixel_scaling(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """An ONNX model that takes uint8 pixels (0-255) and scales them itself, ready to publish.

    Two nodes go in front of ``source``'s graph: ``Cast`` to float32 and ``Mul`` by 1/255,
    exactly the scaling of :func:`aideploy.data.scale`. A client then sends the raw pixels
    and cannot skew the model's input by forgetting (or repeating) the scaling. The
    manifest's signature is ``source``'s with a ``uint8`` input. Introduced in
    ``07_serving.ipynb``.

    Args:
        source: An ONNX export with its manifest (a float32 input of pixels in [0, 1]).
        target: The new ``.onnx`` file (its manifest is written beside it).

    Returns:
        The new model's path.

    Raises:
        ArtifactError: ``source`` has no manifest (or does not match it), or its input is not float32.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    source = Path(source)
    signature = artifacts.verify(source).get("signature") or _signature_of_onnx(source)  # a fresh dict to change
    model = onnx.load(source)
    graph = model.graph
    first = graph.input[0]
    if first.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ArtifactError(f"{source} takes {TensorProto.DataType.Name(first.type.tensor_type.elem_type)}, "
                            "not float32 pixels in [0, 1]: it cannot get the pixel scaling in front.")
    for node in graph.node:  # the original graph now reads the scaled pixels
        node.input[:] = ["scaled_pixels" if name == first.name else name for name in node.input]
    graph.node.insert(0, helper.make_node("Cast", [first.name], ["pixels_as_float"], to=TensorProto.FLOAT))
    graph.node.insert(1, helper.make_node("Mul", ["pixels_as_float", "one_over_255"], ["scaled_pixels"]))
    graph.initializer.append(numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "one_over_255"))
    first.type.tensor_type.elem_type = TensorProto.UINT8
    onnx.checker.check_model(model)
    signature["inputs"][0]["dtype"] = "uint8"
    path, _ = artifacts.save_artifact(
        target, lambda temporary: temporary.write_bytes(model.SerializeToString()),
        kind="onnx-model", produced_by="aideploy.registry.with_pixel_scaling",
        extra={"format": "onnx", "signature": signature},
    )
    return path


def config_pbtxt(name: str, signature: dict[str, list[dict[str, Any]]], max_batch_size: int) -> str:
    """Triton's ``config.pbtxt`` for a model with this signature.

    ``dims`` leave out the batch axis (Triton adds it when ``max_batch_size``
    is above 0); a dynamic dimension is ``-1``. Introduced in ``07_serving.ipynb``.

    Args:
        name: The model's name.
        signature: ``inputs`` and ``outputs``, each a list of ``name``, ``shape``, ``dtype``.
        max_batch_size: The largest batch.

    Returns:
        The file's text.

    Raises:
        ConfigError: A dtype Triton has no type for.
    """

    def tensor(entry: dict[str, Any]) -> str:
        dtype = str(entry["dtype"])
        if dtype not in DATATYPES:
            raise ConfigError(f"tensor {entry['name']!r} has dtype {dtype}, which the repository cannot describe.")
        dims = ", ".join("-1" if d is None else str(int(d)) for d in list(entry["shape"])[1:])
        return (
            f'  {{\n    name: "{entry["name"]}"\n    data_type: {DATATYPES[dtype][0]}\n    dims: [ {dims} ]\n  }}'
        )

    inputs = ",\n".join(tensor(entry) for entry in signature["inputs"])
    outputs = ",\n".join(tensor(entry) for entry in signature["outputs"])
    return (
        f'name: "{name}"\nplatform: "{PLATFORM}"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\ndynamic_batching {{ }}\n"
    )


# --- helpers ----------------------------------------------------------------------


def _next_version(model_dir: Path) -> int:
    existing = [int(p.name) for p in model_dir.iterdir() if _VERSION_PATTERN.fullmatch(p.name)]
    return max(existing, default=0) + 1


def _as_onnx(model: Path, staging: Path) -> Path:
    if not model.is_file():
        raise ArtifactError(f"model file {model} does not exist: pass an .onnx export or a .keras file.")
    if model.suffix == ".onnx":
        return model
    if model.suffix in (".keras", ".h5"):
        from aideploy import convert  # imports TensorFlow: only on this path

        exported = convert.export(model, "onnx", Path(tempfile.mkdtemp(prefix=".export-", dir=staging)))
        return exported.path
    raise ArtifactError(f"cannot publish {model}: pass an .onnx export or a .keras file.")


def _copy_with_manifest(source: Path, target: Path, *, name: str, version: int) -> None:
    if not source.is_file():
        raise ArtifactError(f"model file {source} does not exist.")
    if artifacts.manifest_path(source).is_file():
        manifest = artifacts.verify(source)
    else:
        kind = "onnx-model" if source.suffix == ".onnx" else "tflite-model"
        manifest = artifacts.build_manifest(source, kind=kind, produced_by="aideploy.registry.publish")
    shutil.copyfile(source, target)
    if artifacts.sha256_of(target) != manifest["sha256"]:
        raise ArtifactError(f"copying {source} into the repository changed its bytes: publish again.")
    manifest = {**manifest, "registry": {"name": name, "version": version, "source": str(source.resolve())}}
    artifacts.write_json(artifacts.manifest_path(target), manifest)


def _write_config(model_dir: Path, name: str, signature: dict[str, Any], max_batch_size: int) -> None:
    text = config_pbtxt(name, signature, max_batch_size)
    config_path = model_dir / CONFIG_NAME
    if config_path.is_file():
        existing = config_path.read_text(encoding="utf-8")
        if _tensors_part(existing) != _tensors_part(text):
            raise ConfigError(
                f"the new version of {name!r} has a different input or output than the published ones "
                f"(see {config_path}): publish it under a new name."
            )
        if existing == text:
            return
    artifacts.write_bytes(config_path, text.encode("utf-8"))


def _tensors_part(text: str) -> str:
    start = text.find("input [")
    end = text.find("dynamic_batching")
    return text[start:end]


def _verified(path: Path) -> dict[str, Any]:
    try:
        return artifacts.verify(path)
    except ArtifactError as error:
        raise ArtifactError(f"{error} (model repository file {path})") from None


def _signature_of_onnx(path: Path) -> dict[str, list[dict[str, Any]]]:
    from aideploy import runtime

    predictor = runtime.load(path)
    return {
        "inputs": [
            {"name": predictor.input.name, "shape": list(predictor.input.shape), "dtype": predictor.input.dtype}
        ],
        "outputs": [
            {"name": predictor.output.name, "shape": list(predictor.output.shape), "dtype": predictor.output.dtype}
        ],
    }


def describe(repo: str | os.PathLike) -> str:
    """A short listing of a repository: each model, its versions and its ``config.pbtxt`` settings.

    Introduced in ``07_serving.ipynb``.

    Args:
        repo: The repository folder.

    Returns:
        JSON text, one entry a model.
    """
    repository = ModelRepository(repo)
    listing = {
        name: {"versions": repository.versions(name), "max_batch_size": repository.max_batch_size(name)}
        for name in repository.models()
    }
    return json.dumps(listing, indent=2)
