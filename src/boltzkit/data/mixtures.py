"""Synthetic mixtures of Gaussians, after the benchmarks of the BEAM paper (Fisher et al. 2018).

The paper uses a bimodal 1-D mixture, 8 modes on a ring and a 5x5 grid of modes to show
whether a model covers every mode and puts little mass between them. The exact
parameters here are boltzkit's choice (the shapes follow the paper); all components are
isotropic Gaussians with equal weights and one shared standard deviation:

* ``"mog-1d"``: 2 modes at -2 and +2, std 0.5 (8 std apart: the density midway is
  below 0.1% of the peaks, so mass a model puts between the modes is plainly visible).
* ``"mog-ring8"``: 8 modes equally spaced on a circle of radius 2 (angles 2*pi*k/8,
  first mode at (2, 0)), std 0.1; neighbouring modes are 1.53 apart, about 15 std.
* ``"mog-grid25"``: 25 modes on the grid {-4, -2, 0, 2, 4}^2 (row-major: x varies
  slowest), std 0.1; neighbours are 2 apart, 20 std.

A sample "covers" a mode when it lies within 3 std of that mode's mean (the usual
criterion for these benchmarks; see :func:`mixture_spec`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from boltzkit.data.arrays import check_seed
from boltzkit.errors import ConfigError

#: Names of the built-in mixtures.
MIXTURES: tuple[str, ...] = ("mog-1d", "mog-ring8", "mog-grid25")


def _means(name: str) -> tuple[np.ndarray, float]:
    if name == "mog-1d":
        return np.array([[-2.0], [2.0]]), 0.5
    if name == "mog-ring8":
        angles = 2.0 * math.pi * np.arange(8) / 8
        return 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1), 0.1
    if name == "mog-grid25":
        coords = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
        gx, gy = np.meshgrid(coords, coords, indexing="ij")
        return np.stack([gx.ravel(), gy.ravel()], axis=1), 0.1
    raise ConfigError(f"unknown mixture {name!r}; use one of {', '.join(MIXTURES)}")


def mixture_spec(name: str) -> dict:
    """Describe a mixture: ``means`` float32 (m, d), ``std`` float, ``weights`` float32 (m,).

    Also ``dim`` (d), ``n_modes`` (m) and ``cover_radius`` (3 * std, the distance within
    which a sample counts as hitting a mode), so evaluation can count modes covered.
    """
    means, std = _means(name)
    m, d = means.shape
    return {
        "name": name,
        "means": torch.tensor(means, dtype=torch.float32),
        "std": float(std),
        "weights": torch.full((m,), 1.0 / m, dtype=torch.float32),
        "dim": d,
        "n_modes": m,
        "cover_radius": 3.0 * float(std),
    }


def make_mixture(name: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` samples of mixture ``name``: data float32 (n, d), component labels int64 (n,).

    Components are chosen uniformly at random and the draw is fixed by ``seed``
    (``numpy.random.default_rng(seed)``).
    """
    means, std = _means(name)
    if isinstance(n, bool) or int(n) < 1:
        raise ConfigError(f"number of samples must be a positive integer, got {n!r}")
    check_seed(seed)
    n = int(n)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(means), size=n)
    data = means[labels] + std * rng.standard_normal((n, means.shape[1]))
    return torch.from_numpy(data.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))
