"""Handwritten-digit image data: MNIST from its standard IDX files, and scikit-learn's digits.

MNIST is read from a directory the user names (``data_dir``, ``--data-dir`` or the
``BOLTZKIT_DATA`` environment variable); boltzkit never bundles it. Decoded files are cached
in-process, so loading the same split again (e.g. with another binarisation) is cheap.

Binarisation conventions (log-likelihoods under the two are not comparable, so always say
which one a result uses):

* ``"threshold"``: pixel / 255 > 0.5 (for digits: value / 16 > 0.5).
* ``"stochastic"``: each pixel drawn once as Bernoulli(pixel / 255) with
  ``numpy.random.default_rng([seed, s])`` where s = 0 for the train split and 1 for the
  test split. The draw is fixed by (seed, split): repeated loads give identical data, and
  ``limit=k`` returns exactly the first k rows of the full binarised split.
* ``"none"``: grey levels scaled to [0, 1].
"""

from __future__ import annotations

import functools
import gzip
import logging
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from boltzkit.data.arrays import binarize_array, check_binarize, check_seed
from boltzkit.data.download import fetch
from boltzkit.data.paths import ENV_VAR, resolve_data_dir
from boltzkit.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "test")

#: Base names (without ``.gz``) of the image and label file of each split.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: MD5 of the official gzip files, as distributed by Yann LeCun's site and its mirrors
#: (the values torchvision checks).
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
#: Public mirrors of the official files, tried in order.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_EXPECTED_COUNT = {"train": 60000, "test": 10000}

# IDX type codes -> big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use 'train' or 'test'")
    return split


def _read_bytes(path: Path) -> bytes:
    """Return the file's content, gunzipped when it starts with the gzip magic bytes."""
    try:
        with path.open("rb") as fh:
            head = fh.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path}: corrupted or truncated gzip file ({exc}); delete it and download it again "
            "(boltzkit.data.download_mnist)"
        ) from exc


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode an IDX buffer, validating magic number, dimensions and byte count.

    Raises DataError naming ``source`` when the buffer is not a complete IDX file.
    """
    fix = "delete it and download it again (boltzkit.data.download_mnist)"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{source}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); {fix}"
        )
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{source}: truncated IDX header ({len(raw)} bytes); {fix}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(
            f"{source}: IDX file {what}: header says shape {dims} ({expected} bytes), "
            f"file has {len(raw)} bytes; {fix}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    arr = parse_idx(_read_bytes(Path(path)), source=path)
    arr.flags.writeable = False  # shared by every caller through the cache
    return arr


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip or plain) into a read-only numpy array, cached in-process.

    The cache key includes the file's modification time and size, so a replaced file is
    read again.
    """
    p = Path(path).expanduser().resolve()
    try:
        st = p.stat()
    except OSError as exc:
        raise DataError(f"{p}: cannot read IDX file ({exc}); check the path") from exc
    return _read_idx_cached(str(p), st.st_mtime_ns, st.st_size)


def _has_mnist(folder: Path) -> bool:
    return any(
        (folder / f"{images}{ext}").is_file()
        for images, _ in MNIST_FILES.values()
        for ext in (".gz", "")
    )


def _missing_dir_hint() -> str:
    return (
        f"pass data_dir (--data-dir DIR) or set {ENV_VAR} to the folder holding "
        "train-images-idx3-ubyte.gz etc. (or to its parent containing mnist/); "
        "with internet access, `boltzkit download mnist --data-dir DIR` fetches the files"
    )


def resolve_mnist_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder holding the MNIST files.

    Looks at ``data_dir`` if given, else at ``$BOLTZKIT_DATA``; either may name the MNIST
    folder itself or a parent containing ``mnist/``. Raises DataError when neither is set or
    the folder does not exist.
    """
    return resolve_data_dir("MNIST", data_dir, "mnist", _has_mnist, _missing_dir_hint())


def _find_file(folder: Path, base: str, split: str) -> Path:
    for name in (f"{base}.gz", base):
        if (folder / name).is_file():
            return folder / name
    images, labels = MNIST_FILES[split]
    raise DataError(
        f"MNIST files not found in {folder}: expected {images}.gz and {labels}.gz "
        f"(gzip or uncompressed) for split {split!r}, missing {base}[.gz]; "
        f"pass --data-dir or set {ENV_VAR}, or fetch them with boltzkit.data.download_mnist"
    )


def load_mnist_arrays(
    data_dir: str | os.PathLike[str] | None = None, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Return the raw MNIST split as read-only arrays: images uint8 (N, 28, 28), labels uint8."""
    _check_split(split)
    folder = resolve_mnist_dir(data_dir)
    img_path = _find_file(folder, MNIST_FILES[split][0], split)
    lab_path = _find_file(folder, MNIST_FILES[split][1], split)
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    fix = "replace the file with the official one (boltzkit.data.download_mnist)"
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{img_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} "
            f"{images.shape}; {fix}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{lab_path}: expected a 1-D uint8 label array, got {labels.dtype} "
            f"{labels.shape}; {fix}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{img_path.name} has {len(images)} images but {lab_path.name} has {len(labels)} "
            f"labels; the two files do not belong together, {fix}"
        )
    if labels.size and int(labels.max()) > 9:
        raise DataError(f"{lab_path}: label {int(labels.max())} outside 0-9; {fix}")
    if len(images) != _EXPECTED_COUNT[split]:
        logger.warning(
            "MNIST %s split in %s has %d images (standard: %d)",
            split,
            folder,
            len(images),
            _EXPECTED_COUNT[split],
        )
    return images, labels


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or int(limit) < 1):
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "train",
    binarize: str = "none",
    seed: int = 0,
    limit: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load MNIST as images float32 (N, 784) and labels int64 (N,).

    ``binarize`` is ``"none"`` (grey levels in [0, 1], the default: nothing is converted
    unless asked), ``"threshold"`` (pixel/255 > 0.5) or ``"stochastic"`` (one Bernoulli
    draw per pixel, fixed by ``seed`` and the split, see the module docstring).
    ``limit`` keeps the first ``limit`` images of the file.
    """
    _check_split(split)
    check_binarize(binarize)
    check_seed(seed)
    _check_limit(limit)
    images, labels = load_mnist_arrays(data_dir, split)
    if limit is not None:
        images, labels = images[: int(limit)], labels[: int(limit)]
    flat = images.reshape(len(images), -1)
    x = binarize_array(
        flat, binarize, seed=[int(seed), SPLITS.index(split)], scale=255.0, name="MNIST"
    )
    y = torch.from_numpy(labels.astype(np.int64))
    return torch.from_numpy(x), y


def download_mnist(
    data_dir: str | os.PathLike[str],
    mirrors: tuple[str, ...] = MNIST_MIRRORS,
    timeout: float = 60.0,
    checksums: dict[str, str] | None = None,
) -> Path:
    """Download the four official MNIST gzip files into ``data_dir`` (needs internet).

    Each download is checked against the official MD5 in :data:`MNIST_MD5` (the widely
    published values, also used by torchvision; ``checksums`` replaces them, e.g. for a
    private mirror) and then decoded as IDX to verify its structure; a file failing
    either check is discarded and the next mirror tried. Files already present that
    decode as valid IDX are kept (their MD5 is not checked). Every file is attempted;
    DataError lists those that failed. Returns the directory.
    """
    folder = Path(data_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    for name, md5 in (checksums or MNIST_MD5).items():
        target = folder / name
        if target.is_file():
            try:
                parse_idx(_read_bytes(target), source=str(target))
                logger.info("%s already present, keeping it", target)
                continue
            except DataError:
                logger.warning("%s is corrupted; downloading it again", target)
        urls = [mirror.rstrip("/") + "/" + name for mirror in mirrors]
        try:
            fetch(urls, target, md5, lambda p: parse_idx(_read_bytes(p), source=str(p)),
                  timeout=timeout)
        except DataError as exc:
            failed.append(str(exc))
    if failed:
        raise DataError(
            f"{'; '.join(failed)}; check the internet connection, or copy "
            f"the official MNIST files into {folder} by hand"
        )
    return folder


# --------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    data = np.asarray(bunch.data, dtype=np.float64)
    target = np.asarray(bunch.target, dtype=np.int64)
    data.flags.writeable = False
    target.flags.writeable = False
    return data, target


def load_digits(
    split: str = "train",
    binarize: str = "none",
    seed: int = 0,
    test_fraction: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load scikit-learn's 8x8 digits (1797 images) as float32 (N, 64) and int64 labels.

    Values are scaled to [0, 1] by /16 and binarised like MNIST when asked. The
    train/test split is a fixed permutation drawn with seed 0 (independent of ``seed``,
    which only drives stochastic binarisation), so the two splits never overlap and are
    identical on every call; the test split is the first ``round(N * test_fraction)``
    images of that permutation.
    """
    _check_split(split)
    check_binarize(binarize)
    check_seed(seed)
    if not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    data, target = _digits_arrays()
    n = len(data)
    perm = np.random.default_rng(0).permutation(n)
    n_test = int(round(n * float(test_fraction)))
    idx = perm[:n_test] if split == "test" else perm[n_test:]
    x = binarize_array(
        data[idx], binarize, seed=[int(seed), SPLITS.index(split)], scale=16.0, name="digits"
    )
    return torch.from_numpy(x), torch.from_numpy(target[idx].copy())
