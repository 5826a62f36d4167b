"""Stage 01, data: load Fashion-MNIST offline, verify it, preprocess and split it.

Notebook: ``notebooks/01_data.ipynb``.

The four IDX files ship in ``data/fashion-mnist/`` with a ``SHA256SUMS`` file, so
nothing is downloaded. :func:`load` verifies the checksums, parses the IDX
format and returns uint8 arrays. A Keras-style ``mnist.npz`` (the file
``keras.datasets.mnist.load_data()`` caches) can be loaded through the same
function, so a reader with MNIST runs the same pipeline.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aideploy import artifacts, config
from aideploy.errors import ConfigError, DataError, ModelInputError

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(digit) for digit in range(10))

FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}

IMAGE_SHAPE = (28, 28)
NUM_FEATURES = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]

# IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte) and
# the number of dimensions (3 for images, 1 for labels).
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801

_RESTORE_HINT = (
    "Restore the original files with `git checkout -- data/fashion-mnist/` (from "
    "the repository root), or extract them again from Debian's package "
    "dataset-fashion-mnist as data/fashion-mnist/README.md explains; "
    "`sha256sum -c SHA256SUMS` in that folder checks them."
)


@dataclass(frozen=True)
class Dataset:
    """Raw images and labels as loaded from disk.

    Attributes:
        x_train: uint8 images, shape (N, 28, 28).
        y_train: uint8 labels, shape (N,).
        x_test: uint8 images, shape (M, 28, 28).
        y_test: uint8 labels, shape (M,).
        class_names: Names of the classes, index = label.
        name: Name of the data set, e.g. ``"fashion-mnist"``.
        checksums: SHA-256 of each source file, recorded in artifact manifests.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    name: str
    checksums: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """A small summary (name, shapes, checksums) for manifests and notebooks."""
        return {
            "name": self.name,
            "train_shape": list(self.x_train.shape),
            "test_shape": list(self.x_test.shape),
            "num_classes": len(self.class_names),
            "checksums": dict(self.checksums),
        }


@dataclass(frozen=True)
class Splits:
    """Preprocessed train / validation / test arrays ready for a model.

    Images are float32 in [0, 1], shaped (N, 784) for the MLP or (N, 28, 28, 1)
    for the CNN; labels are int64 class indices.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: dict[str, Any] = field(default_factory=dict)


def load(source: str | os.PathLike = "fashion-mnist", *, verify: bool = True) -> Dataset:
    """Load a data set: ``"fashion-mnist"`` (shipped) or a path to a Keras ``mnist.npz``.

    Introduced in ``01_data.ipynb``.

    Args:
        source: ``"fashion-mnist"`` for the copy in the data folder, or the path
            of an ``.npz`` file with ``x_train``, ``y_train``, ``x_test``,
            ``y_test`` (Keras's MNIST cache file has exactly these).
        verify: Check the files against ``SHA256SUMS`` first (Fashion-MNIST only).

    Returns:
        The raw :class:`Dataset`.

    Raises:
        DataError: A file is missing, corrupted or not in the expected format.
    """
    if str(source) == "fashion-mnist":
        return load_fashion_mnist(verify=verify)
    path = Path(source).expanduser()
    if path.suffix == ".npz":
        return load_npz(path)
    raise DataError(
        f"unknown data source {str(source)!r}: use 'fashion-mnist' or the path of "
        "a Keras-style .npz file (x_train, y_train, x_test, y_test)."
    )


def load_fashion_mnist(folder: str | os.PathLike | None = None, *, verify: bool = True) -> Dataset:
    """Load the shipped Fashion-MNIST IDX files (see :func:`load`).

    Args:
        folder: The folder with the four ``.gz`` files and ``SHA256SUMS``
            (default: ``<data dir>/fashion-mnist``).
        verify: Check the checksums first.

    Raises:
        DataError: A file is missing, corrupted or malformed; the message names it.
    """
    folder = Path(folder) if folder is not None else config.data_dir() / "fashion-mnist"
    checksums = verify_checksums(folder) if verify else {}
    arrays = {key: read_idx(folder / filename) for key, filename in FASHION_MNIST_FILES.items()}
    for split in ("train", "test"):
        if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise DataError(
                f"{split} images and labels differ in length "
                f"({len(arrays[f'x_{split}'])} vs {len(arrays[f'y_{split}'])}). {_RESTORE_HINT}"
            )
    return Dataset(
        **arrays, class_names=FASHION_MNIST_CLASSES, name="fashion-mnist", checksums=checksums
    )


def load_npz(path: str | os.PathLike) -> Dataset:
    """Load a Keras-style ``.npz`` (e.g. ``~/.keras/datasets/mnist.npz``).

    Images have shape (N, 28, 28): integer pixels 0-255 (Keras's files hold
    uint8), or float pixels already scaled to [0, 1], which are converted back
    to uint8 (``round(x * 255)``) so that every source goes through the same
    :func:`scale`. Labels are whole numbers from 0. Introduced in ``01_data.ipynb``.

    Args:
        path: The ``.npz`` file with ``x_train``, ``y_train``, ``x_test``, ``y_test``.

    Returns:
        The raw :class:`Dataset` (uint8 images).

    Raises:
        DataError: The file is missing, unreadable, lacks an expected array, or
            holds pixels or labels outside the ranges above.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as error:
        raise DataError(
            f"{path} lacks the array {error}: a Keras-style file has x_train, y_train, "
            "x_test and y_test."
        ) from None
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path} as a .npz file: {error}") from None
    for key in ("x_train", "x_test"):
        if arrays[key].ndim != 3 or arrays[key].shape[1:] != IMAGE_SHAPE:
            raise DataError(
                f"{path}: {key} has shape {arrays[key].shape}, expected (N, 28, 28)."
            )
    images = {key: _pixels_as_uint8(arrays[key], f"{path}: {key}") for key in ("x_train", "x_test")}
    labels = np.concatenate([arrays["y_train"], arrays["y_test"]])
    if labels.size and (
        not np.issubdtype(labels.dtype, np.integer) and not np.all(np.mod(labels, 1) == 0)
        or labels.min() < 0
        or labels.max() > 255
    ):
        raise DataError(
            f"{path}: labels must be whole class numbers 0, 1, 2, ... (at most 255), got values "
            f"from {labels.min()} to {labels.max()} of dtype {labels.dtype}: store class indices, "
            "not one-hot vectors or names."
        )
    num_classes = int(labels.max()) + 1 if labels.size else 0
    class_names = MNIST_CLASSES if num_classes <= 10 else tuple(str(i) for i in range(num_classes))
    return Dataset(
        x_train=images["x_train"],
        y_train=arrays["y_train"].astype(np.uint8),
        x_test=images["x_test"],
        y_test=arrays["y_test"].astype(np.uint8),
        class_names=class_names,
        name=path.stem,
        checksums={path.name: artifacts.sha256_of(path)},
    )


def _pixels_as_uint8(images: np.ndarray, where: str) -> np.ndarray:
    """Integer pixels 0-255 or float pixels in [0, 1] as uint8; anything else is refused.

    Casting floats straight to uint8 would turn every pixel of a [0, 1] image
    into 0 or 1 (a black image) without a word, so floats are rescaled.
    """
    if images.dtype == np.uint8:
        return images
    if images.size == 0:
        return images.astype(np.uint8)
    low, high = float(images.min()), float(images.max())
    if np.issubdtype(images.dtype, np.integer):
        if low < 0 or high > 255:
            raise DataError(
                f"{where} holds integer pixels from {low:g} to {high:g}: expected 0-255. "
                "Rescale the images to 0-255 (or to floats in [0, 1]) before saving them."
            )
        return images.astype(np.uint8)
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all() or low < 0.0 or high > 1.0:
            raise DataError(
                f"{where} holds float pixels from {low:g} to {high:g} ({images.dtype}): float "
                "images must be scaled to [0, 1]. Divide by 255 (or save them as uint8 0-255)."
            )
        return np.rint(images * 255.0).astype(np.uint8)
    raise DataError(f"{where} has dtype {images.dtype}: expected uint8 pixels 0-255 or floats in [0, 1].")


def verify_checksums(folder: str | os.PathLike) -> dict[str, str]:
    """Check every file listed in ``folder/SHA256SUMS``.

    Returns:
        ``{file name: sha256}`` of the verified files.

    Raises:
        DataError: ``SHA256SUMS`` or a listed file is missing, or a file's hash
            differs; the message names the file and how to restore it.
    """
    folder = Path(folder)
    sums_file = folder / "SHA256SUMS"
    if not sums_file.is_file():
        raise DataError(f"checksum file {sums_file} is missing. {_RESTORE_HINT}")
    expected = {}
    for line in sums_file.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            expected[name.strip().lstrip("*")] = digest.lower()
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"data file {path} is missing. {_RESTORE_HINT}")
        actual = artifacts.sha256_of(path)
        if actual != digest:
            raise DataError(
                f"data file {path} is corrupted: its SHA-256 is {actual}, but "
                f"SHA256SUMS expects {digest}. {_RESTORE_HINT}"
            )
    return expected



def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (gzip-compressed or plain) of unsigned bytes.

    Args:
        path: An ``*-idx3-ubyte[.gz]`` (images) or ``*-idx1-ubyte[.gz]`` (labels).

    Returns:
        uint8 array shaped by the header's dimensions.

    Raises:
        DataError: The file is missing, not gzip, has a wrong magic number or is
            shorter than its header says.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} is missing. {_RESTORE_HINT}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"data file {path} cannot be decompressed ({error}). {_RESTORE_HINT}") from None
    if len(raw) < 8:
        raise DataError(f"data file {path} is truncated: no IDX header. {_RESTORE_HINT}")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC):
        raise DataError(
            f"data file {path} is not an IDX file of unsigned bytes: magic number "
            f"0x{magic:08x}, expected 0x{_IDX_IMAGES_MAGIC:08x} (images) or "
            f"0x{_IDX_LABELS_MAGIC:08x} (labels). {_RESTORE_HINT}"
        )
    num_dims = raw[3]
    header_size = 4 + 4 * num_dims
    if len(raw) < header_size:
        raise DataError(f"data file {path} is truncated inside its header. {_RESTORE_HINT}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(num_dims))
    expected_size = header_size + int(np.prod(dims))
    if len(raw) != expected_size:
        raise DataError(
            f"data file {path} is truncated or padded: {len(raw)} bytes, but its header "
            f"{dims} needs {expected_size}. {_RESTORE_HINT}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def scale(images: np.ndarray) -> np.ndarray:
    """Scale uint8 pixels to float32 in [0, 1].

    Raises:
        ModelInputError: ``images`` is not an integer array of pixels 0-255.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ModelInputError(
            f"expected uint8 pixels (0-255), got dtype {images.dtype}: pass the raw "
            "images from data.load(), or skip scaling if they are already floats in [0, 1]."
        )
    return images.astype(np.float32) / 255.0


def flatten(images: np.ndarray) -> np.ndarray:
    """Reshape images (N, 28, 28) or (N, 28, 28, 1) to (N, 784) for the MLP.

    Raises:
        ModelInputError: The images do not hold 784 pixels each.
    """
    images = np.asarray(images)
    if images.ndim < 2 or int(np.prod(images.shape[1:])) != NUM_FEATURES:
        raise ModelInputError(
            f"expected images of 28x28 = 784 pixels, got shape {images.shape}."
        )
    return images.reshape(len(images), NUM_FEATURES)


def to_image_tensor(images: np.ndarray) -> np.ndarray:
    """Reshape images (N, 784) or (N, 28, 28) to (N, 28, 28, 1) for the CNN.

    Raises:
        ModelInputError: The images do not hold 784 pixels each.
    """
    return flatten(images).reshape(-1, *IMAGE_SHAPE, 1)


def preprocess(images: np.ndarray, model_kind: str = "mlp") -> np.ndarray:
    """Scale to [0, 1] and shape for a model: (N, 784) for ``"mlp"``, (N, 28, 28, 1) for ``"cnn"``.

    Introduced in ``01_data.ipynb``.

    Raises:
        ModelInputError: Wrong dtype or shape.
        ConfigError: Unknown ``model_kind``.
    """
    if model_kind not in ("mlp", "cnn"):
        raise ConfigError(f"unknown model kind {model_kind!r}: use 'mlp' or 'cnn'.")
    scaled = scale(images)
    return flatten(scaled) if model_kind == "mlp" else to_image_tensor(scaled)


def stratified_split(
    x: np.ndarray, y: np.ndarray, *, val_fraction: float = 0.1, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split off a validation set with the same class proportions (seeded).

    Returns:
        ``(x_train, y_train, x_val, y_val)``.

    Raises:
        ConfigError: ``val_fraction`` is not strictly between 0 and 1.
        DataError: Too few images of a class to put it on both sides.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(
            f"val_fraction must be strictly between 0 and 1, got {val_fraction}: "
            "choose e.g. 0.1 to hold out 10 % of the images."
        )
    try:
        x_train, x_val, y_train, y_val = train_test_split(
            x,
            y,
            test_size=val_fraction,
            stratify=y,
            random_state=config.resolve_seed(seed),
        )
    except ValueError as error:
        # scikit-learn refuses splits that cannot keep every class on both sides.
        raise DataError(
            f"cannot split {len(x)} images of {len(np.unique(y))} classes with val_fraction="
            f"{val_fraction:g} so that every class is on both sides ({error}): use more images "
            "(at least a few of each class) or a val_fraction closer to 0.5."
        ) from None
    return x_train, y_train, x_val, y_val


def subsample(
    x: np.ndarray, y: np.ndarray, size: int, *, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, stratified subset of ``size`` samples (all of them if ``size >= len(x)``)."""
    if size >= len(x):
        return x, y
    _, _, x_subset, y_subset = stratified_split(
        x, y, val_fraction=size / len(x), seed=seed
    )
    return x_subset, y_subset


def prepare(
    dataset: Dataset,
    model_kind: str = "mlp",
    *,
    val_fraction: float = 0.1,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int | None = None,
) -> Splits:
    """Preprocess a :class:`Dataset` and split off a stratified validation set.

    Introduced in ``01_data.ipynb``; every later stage calls it.

    Args:
        dataset: From :func:`load`.
        model_kind: ``"mlp"`` (N, 784) or ``"cnn"`` (N, 28, 28, 1).
        val_fraction: Share of the training images held out for validation.
        train_size: Keep only this many training images (stratified), e.g. in
            fast mode; ``None`` keeps all.
        test_size: Likewise for the test set.
        seed: Seed of the split (default: the global seed).

    Returns:
        The :class:`Splits`.
    """
    seed = config.resolve_seed(seed)
    x_all, y_all = dataset.x_train, dataset.y_train
    if train_size is not None:
        x_all, y_all = subsample(x_all, y_all, train_size, seed=seed)
    x_test, y_test = dataset.x_test, dataset.y_test
    if test_size is not None:
        x_test, y_test = subsample(x_test, y_test, test_size, seed=seed)
    x_train, y_train, x_val, y_val = stratified_split(
        x_all, y_all, val_fraction=val_fraction, seed=seed
    )
    return Splits(
        x_train=preprocess(x_train, model_kind),
        y_train=y_train.astype(np.int64),
        x_val=preprocess(x_val, model_kind),
        y_val=y_val.astype(np.int64),
        x_test=preprocess(x_test, model_kind),
        y_test=y_test.astype(np.int64),
        class_names=dataset.class_names,
        source={
            **dataset.describe(),
            "model_kind": model_kind,
            "val_fraction": val_fraction,
            "train_size": train_size,
            "test_size": test_size,
            "split_seed": seed,
        },
    )


#: Training and test images used in fast mode (stratified subsets).
FAST_TRAIN_SIZE = 6000
FAST_TEST_SIZE = 2000


def load_splits(kind: str, *, source: str = "fashion-mnist", seed: int | None = None) -> Splits:
    """Load and prepare the data for a model kind, subsampled in fast mode.

    The one call later stages use to get the same data the models were trained
    on: :func:`load` then :func:`prepare`. Introduced in ``01_data.ipynb``.

    Args:
        kind: ``"mlp"`` (rows of 784 features) or ``"cnn"`` (28x28x1 images).
        source: What :func:`load` reads (default: the bundled Fashion-MNIST).
        seed: Seed of the split and the fast-mode subsets (default: the global seed).

    Returns:
        The :class:`Splits`; in fast mode :data:`FAST_TRAIN_SIZE` training and
        :data:`FAST_TEST_SIZE` test images.

    Raises:
        DataError: A data file is missing or corrupted.
    """
    dataset = load(source)
    fast = config.fast_mode()
    return prepare(
        dataset,
        kind,
        train_size=FAST_TRAIN_SIZE if fast else None,
        test_size=FAST_TEST_SIZE if fast else None,
        seed=seed,
    )


def find_duplicates(x_first: np.ndarray, x_second: np.ndarray | None = None) -> np.ndarray:
    """Find images that appear twice: within one set, or in both of two sets.

    Introduced in ``01_data.ipynb``: duplicates across train and test inflate the
    test accuracy a little, so a careful reader checks for them.

    Args:
        x_first: Images (N, ...).
        x_second: Other images (M, ...), or ``None`` to look inside ``x_first``.

    Returns:
        Index pairs, shape (K, 2): ``(i, j)`` with ``x_first[i]`` equal to
        ``x_second[j]`` (or to ``x_first[j]``, ``i < j``).
    """
    first_keys = [hashlib.sha1(image.tobytes()).digest() for image in np.asarray(x_first)]
    seen: dict[bytes, list[int]] = {}
    for index, key in enumerate(first_keys):
        seen.setdefault(key, []).append(index)
    pairs: list[tuple[int, int]] = []
    if x_second is None:
        for indices in seen.values():
            pairs.extend((a, b) for position, a in enumerate(indices) for b in indices[position + 1 :])
    else:
        for j, image in enumerate(np.asarray(x_second)):
            for i in seen.get(hashlib.sha1(image.tobytes()).digest(), []):
                pairs.append((i, j))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def summarize(splits: Splits) -> dict[str, Any]:
    """What :func:`prepare` produced: source, sizes, shapes and images per class.

    Introduced in ``01_data.ipynb``, which saves it as ``data_summary.json``.
    """
    return {
        **splits.source,
        "class_names": list(splits.class_names),
        "sizes": {
            "train": len(splits.y_train),
            "validation": len(splits.y_val),
            "test": len(splits.y_test),
        },
        "input_shape": list(splits.x_train.shape[1:]),
        "per_class": {
            name: np.bincount(labels, minlength=len(splits.class_names)).tolist()
            for name, labels in (("train", splits.y_train), ("validation", splits.y_val), ("test", splits.y_test))
        },
    }


def plot_samples(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    *,
    num_images: int = 25,
    title: str | None = None,
):
    """A grid of images with their class names.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    num_images = min(num_images, len(images))
    columns = min(5, num_images) or 1
    rows = int(np.ceil(num_images / columns)) or 1
    figure, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, 2.2 * rows))
    for index, axis in enumerate(np.atleast_1d(axes).ravel()):
        axis.axis("off")
        if index < num_images:
            axis.imshow(np.asarray(images[index]).reshape(IMAGE_SHAPE), cmap="gray_r")
            axis.set_title(class_names[int(labels[index])], fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_class_balance(splits: Splits):
    """Bar chart of how many images each class has in train, validation and test.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    num_classes = len(splits.class_names)
    positions = np.arange(num_classes)
    figure, axis = plt.subplots(figsize=(9, 3.5))
    width = 0.28
    for offset, (name, labels) in enumerate(
        [("train", splits.y_train), ("validation", splits.y_val), ("test", splits.y_test)]
    ):
        counts = np.bincount(labels, minlength=num_classes)
        axis.bar(positions + (offset - 1) * width, counts, width, label=name)
    axis.set_xticks(positions, splits.class_names, rotation=30, ha="right")
    axis.set_ylabel("images")
    axis.legend()
    axis.set_title("Images per class")
    figure.tight_layout()
    return figure
