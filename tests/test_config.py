"""Configuration is read in one place, at call time."""

import pytest

from aideploy import config
from aideploy.errors import ConfigError


def test_data_dir_defaults_to_the_repository_data_folder(monkeypatch, repo_root):
    monkeypatch.delenv("AIDEPLOY_DATA_DIR", raising=False)
    assert config.data_dir() == repo_root / "data"
    assert (config.data_dir() / "fashion-mnist" / "SHA256SUMS").is_file()


def test_folders_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AIDEPLOY_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("AIDEPLOY_ARTIFACTS_DIR", str(tmp_path / "a"))
    assert config.data_dir() == (tmp_path / "d").resolve()
    assert config.artifacts_dir() == (tmp_path / "a").resolve()


def test_artifacts_dir_default(monkeypatch, repo_root):
    monkeypatch.delenv("AIDEPLOY_ARTIFACTS_DIR", raising=False)
    assert config.artifacts_dir() == repo_root / "artifacts"


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("0", False), ("", False)])
def test_fast_mode_values(monkeypatch, value, expected):
    monkeypatch.setenv("AIDEPLOY_FAST", value)
    assert config.fast_mode() is expected
    assert config.fast_or_full("fast", "full") == ("fast" if expected else "full")


def test_bad_settings_raise_clear_errors(monkeypatch):
    monkeypatch.setenv("AIDEPLOY_FAST", "maybe")
    with pytest.raises(ConfigError, match="AIDEPLOY_FAST must be 1 or 0"):
        config.fast_mode()
    monkeypatch.setenv("AIDEPLOY_SEED", "forty-two")
    with pytest.raises(ConfigError, match="whole number"):
        config.seed()


def test_seed_default_and_override(monkeypatch):
    monkeypatch.delenv("AIDEPLOY_SEED", raising=False)
    assert config.seed() == 42
    monkeypatch.setenv("AIDEPLOY_SEED", "7")
    assert config.seed() == 7


def test_set_fast_mode_is_read_back(monkeypatch):
    monkeypatch.setenv("AIDEPLOY_FAST", "0")
    config.set_fast_mode(True)
    assert config.fast_mode() is True
