"""The model repository: Triton layout, config.pbtxt, immutable atomic versions, validation, SHA-256 checks."""

from __future__ import annotations

import json
import os

import pytest
from _serve_models import build

from aideploy import artifacts, cli, registry
from aideploy.errors import ArtifactError, ConfigError, ModelNotFoundError


@pytest.fixture
def export(tmp_path):
    return build(tmp_path / "exports" / "tiny.onnx")


def test_publish_writes_the_triton_layout_and_config(tmp_path, export):
    published = registry.publish(export, tmp_path / "repo", "tiny", max_batch_size=32)
    model_dir = tmp_path / "repo" / "tiny"
    assert published.version == 1 and published.model_dir == model_dir.resolve()
    assert sorted(os.listdir(model_dir)) == ["1", "config.pbtxt"]
    assert published.files == ["model.onnx", "model.onnx.manifest.json"]
    assert (model_dir / "1" / "model.onnx").read_bytes() == export.read_bytes()
    assert (model_dir / "config.pbtxt").read_text() == (
        'name: "tiny"\n'
        'platform: "onnxruntime_onnx"\n'
        "max_batch_size: 32\n"
        "input [\n  {\n    name: \"input\"\n    data_type: TYPE_FP32\n    dims: [ 4 ]\n  }\n]\n"
        "output [\n  {\n    name: \"probabilities\"\n    data_type: TYPE_FP32\n    dims: [ 3 ]\n  }\n]\n"
        "dynamic_batching { }\n"
    )
    manifest = json.loads((model_dir / "1" / "model.onnx.manifest.json").read_text())
    assert manifest["sha256"] == artifacts.sha256_of(export)
    assert manifest["registry"] == {"name": "tiny", "version": 1, "source": str(export.resolve())}


def test_versions_count_up_and_the_newest_serves_by_default(tmp_path, export):
    repo = tmp_path / "repo"
    assert [registry.publish(export, repo, "tiny").version for _ in range(3)] == [1, 2, 3]
    registry.publish(export, repo, "tiny", version=10)
    repository = registry.ModelRepository(repo)
    assert repository.versions("tiny") == [1, 2, 3, 10]
    assert repository.get("tiny").version == 10
    assert repository.get("tiny", "2").version == 2
    assert repository.get("tiny").signature["inputs"][0]["shape"] == [None, 4]
    assert repository.max_batch_size("tiny") == registry.DEFAULT_MAX_BATCH_SIZE


def test_versions_are_immutable(tmp_path, export):
    repo = tmp_path / "repo"
    registry.publish(export, repo, "tiny", version=1)
    before = (repo / "tiny" / "1" / "model.onnx").read_bytes()
    other = build(tmp_path / "exports" / "other.onnx", scale=3.0)
    with pytest.raises(ArtifactError, match="immutable"):
        registry.publish(other, repo, "tiny", version=1)
    assert (repo / "tiny" / "1" / "model.onnx").read_bytes() == before
    assert sorted(os.listdir(repo / "tiny")) == ["1", "config.pbtxt"]


def test_a_failed_publish_leaves_no_version_and_no_temporary_folder(tmp_path, export):
    repo = tmp_path / "repo"
    registry.publish(export, repo, "tiny")
    with pytest.raises(ArtifactError, match="does not exist"):
        registry.publish(export, repo, "tiny", tflite=tmp_path / "missing.tflite")
    assert sorted(os.listdir(repo / "tiny")) == ["1", "config.pbtxt"]
    assert registry.ModelRepository(repo).versions("tiny") == [1]


def test_a_version_appears_whole(tmp_path, export, monkeypatch):
    # Until the final rename, nothing that looks like a version exists.
    seen = []
    original_rename = os.rename

    def watching_rename(source, target):
        seen.append(sorted(os.listdir(tmp_path / "repo" / "tiny")))
        seen.append(sorted(os.listdir(source)))
        return original_rename(source, target)

    monkeypatch.setattr(registry.os, "rename", watching_rename)
    registry.publish(export, tmp_path / "repo", "tiny")
    before_rename, staged = seen
    assert "1" not in before_rename and any(name.startswith(".publishing-1-") for name in before_rename)
    assert staged == ["model.onnx", "model.onnx.manifest.json"]
    assert registry.ModelRepository(tmp_path / "repo").get("tiny").version == 1


def test_publish_refuses_a_tampered_export_and_a_changed_signature(tmp_path, export):
    registry.publish(export, tmp_path / "repo", "tiny")
    pixels = build(tmp_path / "exports" / "pixels.onnx", uint8=True)
    with pytest.raises(ConfigError, match="different input or output"):
        registry.publish(pixels, tmp_path / "repo", "tiny")
    export.write_bytes(export.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        registry.publish(export, tmp_path / "repo", "tiny-2")


def test_publish_without_a_manifest_reads_the_signature_from_the_model(tmp_path):
    bare = build(tmp_path / "exports" / "bare.onnx", uint8=True, with_manifest=False)
    registry.publish(bare, tmp_path / "repo", "bare")
    entry = registry.ModelRepository(tmp_path / "repo").get("bare")
    assert entry.signature["inputs"] == [{"name": "input", "shape": [None, 4], "dtype": "uint8"}]
    assert "data_type: TYPE_UINT8" in (tmp_path / "repo" / "bare" / "config.pbtxt").read_text()


@pytest.mark.parametrize("name", ["", "..", "../evil", "a/b", "/abs", ".hidden", "-dash", "x" * 65, "a b", "é", None])
def test_invalid_names_are_refused(tmp_path, export, name):
    with pytest.raises(ConfigError, match="invalid model name"):
        registry.publish(export, tmp_path / "repo", name)
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("version", [0, -1, "01", "1.0", "../1", True, "", 1.0])
def test_invalid_versions_are_refused(tmp_path, export, version):
    with pytest.raises(ConfigError, match="invalid model version"):
        registry.publish(export, tmp_path / "repo", "tiny", version=version)


def test_lookups_never_leave_the_repository(tmp_path, export):
    repo = tmp_path / "repo"
    registry.publish(export, repo, "tiny")
    outside = tmp_path / "outside"
    (outside / "1").mkdir(parents=True)
    repository = registry.ModelRepository(repo)
    for name in ("..", "../outside", "/etc", "tiny/../.."):
        with pytest.raises(ModelNotFoundError):
            repository.get(name)
    for version in ("../1", "1/..", "-1", "x"):
        with pytest.raises(ModelNotFoundError):
            repository.get("tiny", version)
    # A link inside the repository that points out of it is refused too.
    os.symlink(outside, repo / "linked")
    (outside / "config.pbtxt").write_text('name: "linked"\n')
    with pytest.raises(ArtifactError, match="outside the model repository"):
        repository.get("linked", 1)
    (repo / "tiny" / "2").mkdir()
    os.symlink(repo / "tiny" / "1" / "model.onnx", repo / "tiny" / "2" / "inner.onnx")
    os.symlink(export, repo / "tiny" / "2" / "model.onnx")
    with pytest.raises(ArtifactError, match="outside the model repository"):
        repository.get("tiny", 2)


def test_a_changed_file_fails_its_sha256_check_on_load(tmp_path, export):
    repo = tmp_path / "repo"
    registry.publish(export, repo, "tiny")
    model_file = repo / "tiny" / "1" / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:-1] + b"\1")
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        registry.ModelRepository(repo).get("tiny")


def test_repository_lists_only_complete_models(tmp_path, export):
    repo = tmp_path / "repo"
    registry.publish(export, repo, "tiny")
    (repo / "empty").mkdir()
    (repo / "noconfig" / "1").mkdir(parents=True)
    (repo / "tiny" / ".publishing-2-abc").mkdir()
    repository = registry.ModelRepository(repo)
    assert repository.models() == ["tiny"]
    assert repository.versions("tiny") == [1]
    with pytest.raises(ArtifactError, match="not a folder"):
        registry.ModelRepository(tmp_path / "nowhere")


def test_publish_refuses_other_files(tmp_path):
    text = tmp_path / "model.txt"
    text.write_text("not a model")
    with pytest.raises(ArtifactError, match=r"\.onnx export or a \.keras file"):
        registry.publish(text, tmp_path / "repo", "tiny")
    with pytest.raises(ArtifactError, match="does not exist"):
        registry.publish(tmp_path / "missing.onnx", tmp_path / "repo", "tiny")


def test_publish_command_ends_with_a_json_line(tmp_path, export, capsys):
    status = cli.main(["publish", str(export), "--repo", str(tmp_path / "repo"), "--name", "tiny", "--version", "3"])
    assert status == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["version"] == 3
    assert result["model_dir"] == str((tmp_path / "repo" / "tiny").resolve())
    status = cli.main(["publish", str(export), "--repo", str(tmp_path / "repo"), "--name", "tiny", "--version", "3"])
    assert status == cli.EXIT_EXPECTED_ERROR
    assert "immutable" in capsys.readouterr().err


def test_with_pixel_scaling_gives_the_model_its_preprocessing(tmp_path, export):
    """uint8 pixels into the new model answer exactly what the scaled floats give the original."""
    import numpy as np

    from aideploy import runtime
    from aideploy.data import scale

    pixels_path = registry.with_pixel_scaling(export, tmp_path / "pixels.onnx")
    assert artifacts.read_manifest(pixels_path)["signature"]["inputs"][0]["dtype"] == "uint8"
    artifacts.verify(pixels_path)
    pixels = np.random.default_rng(0).integers(0, 256, (5, 4), dtype=np.uint8)
    original, with_scaling = runtime.load(export), runtime.load(pixels_path)
    np.testing.assert_allclose(with_scaling.predict(pixels), original.predict(scale(pixels)), rtol=1e-6, atol=1e-7)
    published = registry.publish(pixels_path, tmp_path / "repo", "pixels")
    assert "TYPE_UINT8" in (published.model_dir / "config.pbtxt").read_text()
    with pytest.raises(ArtifactError, match="not float32 pixels"):
        registry.with_pixel_scaling(pixels_path, tmp_path / "twice.onnx")
