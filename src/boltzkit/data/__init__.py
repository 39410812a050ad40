"""Data sets for boltzkit: MNIST, scikit-learn digits, Gaussian mixtures and user files.

Everything is returned as a float32 tensor of shape (samples, features), with int64 labels
where the data set has them. :func:`load_dataset` is the single entry point used by the CLI.
"""

from boltzkit.data.arrays import (
    BINARIZE_MODES,
    DATA_KINDS,
    binarize,
    load_array,
    validate_data,
)
from boltzkit.data.mixtures import MIXTURES, make_mixture, mixture_spec
from boltzkit.data.mnist import (
    download_mnist,
    load_digits,
    load_mnist,
    load_mnist_arrays,
    read_idx,
    resolve_mnist_dir,
)
from boltzkit.data.movielens import download_movielens
from boltzkit.data.registry import DATASETS, load_dataset
from boltzkit.data.standardize import Standardizer

__all__ = [
    "BINARIZE_MODES",
    "DATASETS",
    "DATA_KINDS",
    "MIXTURES",
    "Standardizer",
    "binarize",
    "download_mnist",
    "download_movielens",
    "load_array",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "load_mnist_arrays",
    "make_mixture",
    "mixture_spec",
    "read_idx",
    "resolve_mnist_dir",
    "validate_data",
]
