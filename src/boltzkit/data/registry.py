"""One entry point, :func:`load_dataset`, for built-in data sets and user files.

The CLI and examples name data by a short name ("mnist", "digits", "mog-ring8", ...) or by
a file path; this module turns either into a float32 (samples, features) tensor plus labels
where the data set has them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from boltzkit.data.arrays import (
    ARRAY_SUFFIXES,
    binarize_array,
    check_binarize,
    check_finite,
    check_seed,
    validate_data,
)
from boltzkit.data.arrays import load_array as _load_array
from boltzkit.data.mixtures import MIXTURES, make_mixture
from boltzkit.data.mnist import SPLITS, load_digits, load_mnist
from boltzkit.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: Names accepted by :func:`load_dataset` (besides file paths).
DATASETS: tuple[str, ...] = ("mnist", "digits", *MIXTURES)

#: Sizes of the synthetic mixtures' splits.
MIXTURE_SIZES: dict[str, int] = {"train": 10000, "test": 2000}


def mixture_split_seed(seed: int, split: str) -> int:
    """Seed of a mixture split: ``seed`` itself for train, a distinct derived seed for test."""
    if split == "train":
        return int(seed)
    return int(np.random.SeedSequence([int(seed), 1]).generate_state(1)[0])


def _looks_like_path(name: str) -> bool:
    return (
        os.sep in name
        or "/" in name
        or Path(name).suffix.lower() in ARRAY_SUFFIXES
        or Path(name).expanduser().exists()
    )


def _apply_limit(
    x: torch.Tensor, y: torch.Tensor | None, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if limit is None:
        return x, y
    if isinstance(limit, bool) or int(limit) < 1:
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
    return x[: int(limit)], None if y is None else y[: int(limit)]


def load_dataset(
    name_or_path: str | os.PathLike[str],
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    binarize: str = "none",
    seed: int = 0,
    limit: int | None = None,
    test_path: str | os.PathLike[str] | None = None,
    key: str | None = None,
    mmap: bool = False,
    mixture_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Load a data set split as (data float32 (N, d), labels int64 (N,) or None).

    * ``"mnist"``: :func:`~boltzkit.data.mnist.load_mnist` from ``data_dir`` /
      ``$BOLTZKIT_DATA``.
    * ``"digits"``: scikit-learn's 8x8 digits, fixed 80/20 split.
    * ``"mog-1d"``, ``"mog-ring8"``, ``"mog-grid25"``: 10000 train (``mixture_size``, e.g.
      the BEAM paper's 100,000) / 2000 test samples,
      train drawn with ``seed``, test with a seed derived from it (never the same draw).
      These are real-valued: only ``binarize="none"`` applies (others are refused).
      Labels are the mixture components.
    * a ``.npy``/``.npz``/``.csv`` path: split "train" is the file itself, split "test"
      is the file ``test_path`` (required). ``binarize="threshold"`` maps values > 0.5 to
      1, ``"stochastic"`` draws Bernoulli(value) (values must lie in [0, 1]) and ``"none"``
      keeps the values. ``key`` picks an array of an .npz file; ``mmap`` memory-maps .npy
      files (useful only with ``binarize="none"``, which does not copy).  An ``.npz``
      holding arrays ``x`` and ``y`` is labelled (``y``: integer class indices); other
      files have no labels.

    NaN/inf values are refused on every path and in every ``binarize`` mode (DataError
    naming the data set or file and the first bad value's 1-based row and column), never
    binarised away.

    ``limit`` keeps the first ``limit`` samples.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use 'train' or 'test'")
    check_binarize(binarize)
    check_seed(seed)
    name = os.fspath(name_or_path)
    lowered = name.lower() if isinstance(name_or_path, str) else None
    if mixture_size is not None:
        if lowered not in MIXTURES:
            raise ConfigError(f"mixture_size applies to the built-in mixtures "
                              f"({', '.join(MIXTURES)}), not to {name!r}: drop it")
        if isinstance(mixture_size, bool) or int(mixture_size) < 1:
            raise ConfigError(f"mixture_size must be a positive integer, got {mixture_size!r}")

    if lowered == "mnist":
        return load_mnist(data_dir, split=split, binarize=binarize, seed=seed, limit=limit)
    if lowered == "digits":
        x, y = load_digits(split=split, binarize=binarize, seed=seed)
        return _apply_limit(x, y, limit)
    if lowered in MIXTURES:
        if binarize != "none":
            raise ConfigError(f"{lowered} is real-valued data: binarize {binarize!r} does not "
                              "apply to it (drop --binarize)")
        size = int(mixture_size) if mixture_size is not None and split == "train" else \
            MIXTURE_SIZES[split]
        x, y = make_mixture(lowered, size, seed=mixture_split_seed(seed, split))
        check_finite(x, name=lowered)
        return _apply_limit(x, y, limit)

    if lowered is not None and not _looks_like_path(name):
        raise ConfigError(
            f"unknown data set {name!r}; use one of {', '.join(DATASETS)}, or the path of a "
            f"{'/'.join(ARRAY_SUFFIXES)} file"
        )
    path = Path(name)
    if split == "test":
        if test_path is None:
            raise DataError(
                f"no test data for {path}: a data file is used as the training split only; "
                "name the held-out file with --test-data FILE (test_path in Python)"
            )
        path = Path(test_path)
    labels = _npz_labels(path) if key is None else None
    x = _load_array(path, key="x" if labels is not None else key, mmap=mmap)
    x, labels = _apply_limit(x, labels, limit)
    if binarize == "none":
        check_finite(x, name=str(path))
    else:  # binarize_array refuses NaN/inf itself
        if binarize == "stochastic":
            validate_data(x, name=str(path), kind="unit_interval")
        x = torch.from_numpy(
            binarize_array(
                x.numpy(), binarize, seed=[int(seed), SPLITS.index(split)], name=str(path)
            )
        )
    return x, labels


def _npz_labels(path: Path) -> torch.Tensor | None:
    """Class labels of a labelled ``.npz`` (arrays ``x`` and ``y``), else None."""
    if path.suffix.lower() != ".npz" or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not {"x", "y"} <= set(archive.files):
                return None
            y = np.asarray(archive["y"])
            n = archive["x"].shape[0]
    except (OSError, ValueError):
        return None  # load_array reports an unreadable archive
    if y.ndim != 1 or y.shape[0] != n or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: 'y' must hold one integer class label per row of 'x' "
                        f"({n}), got shape {y.shape} and dtype {y.dtype}")
    return torch.from_numpy(y.astype(np.int64))
