"""Atomic writes and manifests."""

import json

import pytest

from aideploy import artifacts
from aideploy.errors import ArtifactError


def test_save_artifact_writes_file_and_manifest(tmp_path):
    path, manifest_file = artifacts.save_artifact(
        tmp_path / "model.bin",
        lambda temporary: temporary.write_bytes(b"weights"),
        kind="test",
        produced_by="tests",
        params={"units": 64},
        metrics={"accuracy": 0.9},
    )
    assert path.read_bytes() == b"weights"
    manifest = json.loads(manifest_file.read_text())
    assert manifest_file.name == "model.bin.manifest.json"
    assert manifest["sha256"] == artifacts.sha256_of(path)
    assert manifest["params"] == {"units": 64} and manifest["metrics"] == {"accuracy": 0.9}
    assert artifacts.verify(path)["kind"] == "test"


def test_failed_write_leaves_nothing_behind(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"old")

    def broken_writer(temporary):
        temporary.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        artifacts.save_artifact(tmp_path / "model.bin", broken_writer, kind="t", produced_by="t")
    assert (tmp_path / "model.bin").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_folder_artifacts_are_replaced_and_hashed(tmp_path):
    def writer(content):
        def write(temporary):
            temporary.mkdir()
            (temporary / "a.txt").write_text(content)

        return write

    path, _ = artifacts.save_artifact(tmp_path / "saved", writer("one"), kind="t", produced_by="t")
    first = artifacts.sha256_of(path)
    artifacts.save_artifact(tmp_path / "saved", writer("two"), kind="t", produced_by="t")
    assert (path / "a.txt").read_text() == "two"
    assert artifacts.sha256_of(path) != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved", "saved.manifest.json"]


def test_verify_detects_a_changed_file(tmp_path):
    path = artifacts.write_bytes(tmp_path / "x.bin", b"1")
    artifacts.write_json(artifacts.manifest_path(path), artifacts.build_manifest(path, kind="t", produced_by="t"))
    path.write_bytes(b"2")
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        artifacts.verify(path)


def test_missing_or_broken_manifest(tmp_path):
    path = artifacts.write_bytes(tmp_path / "x.bin", b"1")
    with pytest.raises(ArtifactError, match="no manifest"):
        artifacts.read_manifest(path)
    artifacts.manifest_path(path).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        artifacts.read_manifest(path)
    with pytest.raises(ArtifactError, match="does not exist"):
        artifacts.sha256_of(tmp_path / "nothing")


def test_writable_dir_creates_the_folder_or_says_what_to_do(tmp_path):
    folder = artifacts.writable_dir(tmp_path / "new" / "nested")
    assert folder.is_dir() and list(folder.iterdir()) == []  # the write probe is gone
    (tmp_path / "a-file").write_text("")
    expected = r"cannot write to .*a-file/out \(Not a directory\): choose a writable folder with --out\."
    with pytest.raises(ArtifactError, match=expected):
        artifacts.writable_dir(tmp_path / "a-file" / "out")
    with pytest.raises(ArtifactError, match=r"choose a writable folder\.$"):
        artifacts.writable_dir(tmp_path / "a-file" / "out", option=None)
    # Every artifact writer goes through it: no bare OSError from a bad target folder.
    with pytest.raises(ArtifactError, match="cannot write to"):
        artifacts.write_bytes(tmp_path / "a-file" / "x.bin", b"1")
