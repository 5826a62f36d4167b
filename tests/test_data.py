"""Loading, verifying, parsing and preprocessing the data."""

import gzip

import numpy as np
import pytest

from aideploy import data
from aideploy.errors import ConfigError, DataError, ModelInputError


@pytest.fixture()
def dataset(fashion_mnist):
    return fashion_mnist


@pytest.fixture()
def data_copy(data_dir_copy):
    """A writable copy of data/fashion-mnist."""
    return data_dir_copy / "fashion-mnist"


def test_fashion_mnist_loads_with_expected_shapes(dataset):
    assert dataset.x_train.shape == (60000, 28, 28)
    assert dataset.x_test.shape == (10000, 28, 28)
    assert dataset.x_train.dtype == np.uint8 and dataset.y_train.dtype == np.uint8
    assert dataset.class_names[0] == "T-shirt/top" and len(dataset.class_names) == 10
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images a class.
    assert np.bincount(dataset.y_train).tolist() == [6000] * 10
    assert np.bincount(dataset.y_test).tolist() == [1000] * 10
    assert set(dataset.checksums) == set(data.FASHION_MNIST_FILES.values())


def test_first_test_labels_match_the_published_data(dataset):
    # The first ten labels of the official t10k file.
    assert dataset.y_test[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


def test_corrupted_file_is_named_with_a_restore_hint(data_copy):
    target = data_copy / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(target.read_bytes())
    content[100] ^= 0xFF
    target.write_bytes(bytes(content))
    with pytest.raises(DataError) as error:
        data.load_fashion_mnist(data_copy)
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte.gz" in message and "corrupted" in message
    assert "git checkout" in message


def test_missing_file_is_named(data_copy):
    (data_copy / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz is missing"):
        data.load_fashion_mnist(data_copy)


def test_missing_checksum_file(data_copy):
    (data_copy / "SHA256SUMS").unlink()
    with pytest.raises(DataError, match="SHA256SUMS"):
        data.load_fashion_mnist(data_copy)


def test_wrong_magic_number_is_rejected(tmp_path):
    path = tmp_path / "bad-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x09\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03"))
    with pytest.raises(DataError, match="magic number 0x00000901"):
        data.read_idx(path)


def test_truncated_file_is_rejected(tmp_path):
    path = tmp_path / "short-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01\x02"))
    with pytest.raises(DataError, match="truncated"):
        data.read_idx(path)


def test_not_gzip_is_rejected(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot be decompressed"):
        data.read_idx(path)


def test_valid_idx_round_trip(tmp_path):
    path = tmp_path / "ok-idx3-ubyte"
    pixels = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    header = b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in pixels.shape)
    path.write_bytes(header + pixels.tobytes())
    np.testing.assert_array_equal(data.read_idx(path), pixels)


def test_mnist_npz_loads_through_the_same_loader(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
        y_train=np.arange(50) % 10,
        x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        y_test=np.arange(20) % 10,
    )
    dataset = data.load(path)
    assert dataset.name == "mnist"
    assert dataset.class_names == data.MNIST_CLASSES
    splits = data.prepare(dataset, "mlp", val_fraction=0.2)
    assert splits.x_train.shape == (40, 784) and splits.x_val.shape == (10, 784)


def _save_npz(path, x_train, x_test, y_train=None, y_test=None):
    np.savez(
        path,
        x_train=x_train,
        y_train=np.arange(len(x_train)) % 10 if y_train is None else y_train,
        x_test=x_test,
        y_test=np.arange(len(x_test)) % 10 if y_test is None else y_test,
    )
    return path


def test_npz_float_images_in_unit_range_are_converted_to_pixels(tmp_path):
    """Floats already scaled to [0, 1] come back as the uint8 pixels they were made from."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    path = _save_npz(tmp_path / "scaled.npz", pixels / 255.0, pixels[:10].astype(np.float32) / 255.0)
    dataset = data.load(path)
    assert dataset.x_train.dtype == np.uint8 and dataset.x_test.dtype == np.uint8
    np.testing.assert_array_equal(dataset.x_train, pixels)
    np.testing.assert_array_equal(dataset.x_test, pixels[:10])
    # Through the pipeline they end up as the same floats as uint8 input would.
    splits = data.prepare(dataset, "mlp", val_fraction=0.5, seed=0)
    both = np.concatenate([splits.x_train, splits.x_val])
    assert both.max() == pytest.approx(pixels.max() / 255.0)
    # Too few images of a class for a stratified split is a DataError, not scikit-learn's ValueError.
    with pytest.raises(DataError, match="cannot split 30 images of 10 classes"):
        data.prepare(dataset, "mlp", val_fraction=0.1, seed=0)


@pytest.mark.parametrize(
    ("x_train", "message"),
    [
        (np.full((4, 28, 28), 255.0), r"float pixels from 255 to 255.*Divide by 255"),
        (np.full((4, 28, 28), -0.5, np.float32), r"float pixels from -0.5"),
        (np.full((4, 28, 28), np.nan), r"scaled to \[0, 1\]"),
        (np.full((4, 28, 28), 300, np.int32), r"integer pixels from 300 to 300"),
    ],
)
def test_npz_pixels_out_of_range_are_refused(tmp_path, x_train, message):
    path = _save_npz(tmp_path / "bad.npz", x_train, np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match=message):
        data.load(path)


def test_npz_labels_must_be_class_indices(tmp_path):
    images = np.zeros((4, 28, 28), np.uint8)
    one_hot_like = np.array([0.5, 1.0, 2.0, 3.0])
    path = _save_npz(tmp_path / "labels.npz", images, images, y_train=one_hot_like)
    with pytest.raises(DataError, match="whole class numbers"):
        data.load(path)


def test_find_duplicates_within_and_across_sets():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    images[5] = images[1]  # one pair
    images[7] = images[1]  # ... and a triple: (1, 5), (1, 7), (5, 7)
    images[6] = images[3]
    np.testing.assert_array_equal(
        data.find_duplicates(images), [[1, 5], [1, 7], [3, 6], [5, 7]]
    )
    others = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    others[2] = images[3]
    # (i, j): images[i] equals others[j]; both copies of images[3] are found.
    np.testing.assert_array_equal(data.find_duplicates(images, others), [[3, 2], [6, 2]])
    assert data.find_duplicates(others).shape == (0, 2)
    # One pixel apart is not a duplicate.
    nearly = images[:2].copy()
    nearly[1] = nearly[0]
    nearly[1, 0, 0] ^= 1
    assert data.find_duplicates(nearly).shape == (0, 2)


def test_npz_missing_array_and_unknown_source(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DataError, match="lacks the array"):
        data.load(path)
    with pytest.raises(DataError, match="unknown data source"):
        data.load("cifar10")


def test_preprocess_scales_and_shapes(dataset):
    mlp = data.preprocess(dataset.x_test[:5], "mlp")
    cnn = data.preprocess(dataset.x_test[:5], "cnn")
    assert mlp.shape == (5, 784) and mlp.dtype == np.float32
    assert cnn.shape == (5, 28, 28, 1)
    assert 0.0 <= mlp.min() and mlp.max() <= 1.0
    np.testing.assert_allclose(mlp[0, :10], dataset.x_test[0].ravel()[:10] / 255.0)


def test_preprocess_rejects_bad_input():
    with pytest.raises(ModelInputError, match="uint8"):
        data.preprocess(np.zeros((2, 28, 28), np.float64))
    with pytest.raises(ModelInputError, match="784 pixels"):
        data.flatten(np.zeros((2, 10, 10)))
    with pytest.raises(ConfigError, match="unknown model kind 'rnn'"):
        data.preprocess(np.zeros((2, 28, 28), np.uint8), "rnn")
    with pytest.raises(ConfigError, match="val_fraction must be strictly between 0 and 1"):
        data.stratified_split(np.zeros((10, 784)), np.arange(10) % 2, val_fraction=1.0)


def test_split_is_stratified_and_seeded(dataset):
    first = data.prepare(dataset, "mlp", val_fraction=0.1, seed=3)
    second = data.prepare(dataset, "mlp", val_fraction=0.1, seed=3)
    other = data.prepare(dataset, "mlp", val_fraction=0.1, seed=4)
    assert first.x_train.shape == (54000, 784) and first.x_val.shape == (6000, 784)
    assert np.bincount(first.y_val).tolist() == [600] * 10
    np.testing.assert_array_equal(first.y_val, second.y_val)
    assert not np.array_equal(first.y_val, other.y_val)


def test_subsample_keeps_class_balance(dataset):
    splits = data.prepare(dataset, "mlp", train_size=1000, test_size=500)
    assert len(splits.x_train) + len(splits.x_val) == 1000
    assert np.bincount(splits.y_test).tolist() == [50] * 10
    assert splits.source["train_size"] == 1000


def test_plots_return_figures(dataset):
    import matplotlib

    matplotlib.use("Agg")
    figure = data.plot_samples(dataset.x_train[:10], dataset.y_train[:10], dataset.class_names, num_images=10)
    assert len([axis for axis in figure.axes if axis.images]) == 10
    splits = data.prepare(dataset, "mlp", train_size=1000, test_size=500)
    assert data.plot_class_balance(splits).axes[0].get_title() == "Images per class"
