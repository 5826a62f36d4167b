"""Shared fixtures: data splits and small trained models (fast mode, see ../conftest.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def session_artifacts() -> Path:
    """The artifacts folder shared by the session (and by the notebooks nbval runs)."""
    return Path(os.environ["AIDEPLOY_ARTIFACTS_DIR"])


@pytest.fixture()
def data_dir_copy(tmp_path, repo_root) -> Path:
    """A writable copy of the data folder (for tests that corrupt or remove a file)."""
    folder = tmp_path / "data"
    shutil.copytree(repo_root / "data", folder)
    return folder


@pytest.fixture(scope="session")
def fashion_mnist():
    """The full raw Fashion-MNIST data set, loaded and verified once for the session."""
    from aideploy import data

    return data.load()


@pytest.fixture(scope="session")
def mlp_splits():
    """Fast-mode MLP data: 5,400 train, 600 validation, 2,000 test images."""
    from aideploy import data

    return data.load_splits("mlp")


@pytest.fixture(scope="session")
def cnn_splits():
    """Fast-mode CNN data, shaped (N, 28, 28, 1)."""
    from aideploy import data

    return data.load_splits("cnn")


@pytest.fixture(scope="session")
def trained_mlp(tmp_path_factory) -> dict:
    """A fast-mode MLP trained once for the session: the summary of ``train_and_save``."""
    from aideploy import train

    return train.train_and_save("mlp", tmp_path_factory.mktemp("mlp"), num_epochs=3, verbose=0)


@pytest.fixture(scope="session")
def trained_cnn(tmp_path_factory) -> dict:
    """A fast-mode CNN trained once for the session: the summary of ``train_and_save``."""
    from aideploy import train

    return train.train_and_save("cnn", tmp_path_factory.mktemp("cnn"), num_epochs=1, verbose=0)


@pytest.fixture(scope="session")
def mlp_exports(trained_mlp, tmp_path_factory) -> dict:
    """The session's MLP exported once to every format (``convert.export_all``), shared by
    the conversion and runtime tests."""
    from aideploy import convert

    return convert.export_all(trained_mlp["model_path"], tmp_path_factory.mktemp("mlp-exports"))


@pytest.fixture(scope="session")
def cnn_exports(trained_cnn, tmp_path_factory) -> dict:
    """The session's CNN exported once to every format."""
    from aideploy import convert

    return convert.export_all(trained_cnn["model_path"], tmp_path_factory.mktemp("cnn-exports"))
