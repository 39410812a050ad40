"""Sample-based divergences: kNN estimates of KL and mode coverage for mixtures.

These compare two *sample sets* and need no partition function, so they work for
any generator (including BEAM-trained models whose likelihood is not the goal).
The kNN estimator is consistent for continuous densities; in high dimensions it
converges slowly, so compare models with the same sample sizes and ``k``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma

from ..errors import ConfigError, DataError


def _as_array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (samples x features), got shape {a.shape}")
    if a.shape[0] == 0:
        raise DataError(f"{name} is empty: pass at least one sample")
    if not np.isfinite(a).all():
        raise DataError(f"{name} contains NaN/inf values: drop or clean those samples")
    return a


def _counts_in(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """For each row of ``points``, how many rows of ``reference`` are exactly equal to it."""
    both = np.concatenate([reference, points])
    _, inverse, counts_all = np.unique(both, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    ref_counts = np.bincount(inverse[: len(reference)], minlength=len(counts_all))
    return ref_counts[inverse[len(reference):]]


def _kth_distance(tree: cKDTree, points: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Distance from each point to its ``order[i]``-th nearest neighbour in ``tree`` (1-based)."""
    out = np.empty(len(points))
    for r in np.unique(order):
        sel = order == r
        dist, _ = tree.query(points[sel], k=[int(r)])
        out[sel] = dist[:, 0]
    return out


def _knn_kl_terms(p: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Per-sample terms t_i with KL_hat = mean(t_i) + log(m / (n - 1)), and that constant."""
    n, d = p.shape
    m = q.shape[0]
    if q.shape[1] != d:
        raise DataError(f"the two sample sets have {d} and {q.shape[1]} features: they must match")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    # Exact duplicates would give zero distances (log 0).  Following Wang, Kulkarni &
    # Verdu's adaptive form, use for each point the first neighbour order beyond its
    # duplicates (l_i for P, k_i for Q) and add the digamma correction psi(l_i) - psi(k_i).
    dup_p = _counts_in(p, p) - 1  # duplicates of x_i in P other than itself
    dup_q = _counts_in(p, q)
    l_i = k + dup_p
    k_i = k + dup_q
    if int(l_i.max()) > n - 1 or int(k_i.max()) > m:
        raise DataError(
            f"too few distinct samples for the k={k} nearest-neighbour KL estimate (a point is "
            "repeated more often than the sample size allows): use more samples or a smaller k; "
            "the estimator assumes continuous data")
    rho = _kth_distance(cKDTree(p), p, l_i + 1)  # +1 skips the point itself
    nu = _kth_distance(cKDTree(q), p, k_i)
    terms = d * (np.log(nu) - np.log(rho)) + digamma(l_i) - digamma(k_i)
    return terms, math.log(m / (n - 1))


def knn_kl_divergence(p_samples, q_samples, k: int = 1) -> float:
    """KL(P || Q) from samples by Wang, Kulkarni & Verdu's (2009) k-NN estimator.

    KL_hat = d/n sum_i log(nu_k(i) / rho_k(i)) + log(m / (n - 1)), where rho_k(i)
    is the distance from x_i to its k-th nearest neighbour among the other P
    samples and nu_k(i) to its k-th nearest among the m Q samples (Euclidean,
    scipy's cKDTree).  Exact duplicate points (zero distances) are handled
    with the paper's adaptive variant: the neighbour order is raised past the
    duplicates and a digamma term psi(l_i) - psi(k_i) keeps it consistent.
    The estimate can be slightly negative when P = Q.
    """
    p = _as_array(p_samples, "p_samples")
    q = _as_array(q_samples, "q_samples")
    if p.shape[0] < 2:
        raise DataError("the kNN KL estimate needs at least 2 samples from P")
    terms, const = _knn_kl_terms(p, q, k)
    return float(terms.mean() + const)


def forward_kl(data, samples, k: int = 1) -> float:
    """KL(data || model) from model samples: large when the model misses data modes."""
    return knn_kl_divergence(data, samples, k)


def reverse_kl(data, samples, k: int = 1) -> float:
    """KL(model || data) from model samples: large when the model puts mass off the data."""
    return knn_kl_divergence(samples, data, k)


def mode_coverage(samples, means, std, n_std: float = 3.0, min_count: int | None = None,
                  min_fraction: float = 0.1) -> dict:
    """How many mixture modes the samples cover, and how many samples are near any mode.

    A sample is *high quality* when it lies within ``n_std * std`` (Euclidean)
    of its nearest mode; ``std`` is one number or one per mode.  A mode is
    *covered* when at least ``min_count`` high-quality samples sit at it.  The
    default min_count is ``max(1, ceil(min_fraction * n / n_modes))``: 10% of a
    mode's fair share of the n samples, so a handful of stray samples does not
    count as capturing a mode.  Returns modes_covered, n_modes, coverage
    (fraction of modes), high_quality_fraction, counts (per mode) and min_count.
    """
    x = _as_array(samples, "samples")
    mu = _as_array(means, "means")
    if mu.shape[1] != x.shape[1]:
        raise DataError(f"means have {mu.shape[1]} features but samples have {x.shape[1]}")
    n, n_modes = x.shape[0], mu.shape[0]
    s = np.broadcast_to(np.asarray(std, dtype=np.float64).reshape(-1), (n_modes,))
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ConfigError(f"std must be positive and finite, got {std!r}")
    if not n_std > 0:
        raise ConfigError(f"n_std must be positive, got {n_std!r}")
    if min_count is None:
        if not 0 < min_fraction <= 1:
            raise ConfigError(f"min_fraction must be in (0, 1], got {min_fraction!r}")
        min_count = max(1, math.ceil(min_fraction * n / n_modes))
    elif not isinstance(min_count, int) or min_count < 1:
        raise ConfigError(f"min_count must be a positive integer, got {min_count!r}")
    dist, nearest = cKDTree(mu).query(x, k=1)
    good = dist <= n_std * s[nearest]
    counts = np.bincount(nearest[good], minlength=n_modes)
    covered = int((counts >= min_count).sum())
    return {"modes_covered": covered, "n_modes": int(n_modes), "coverage": covered / n_modes,
            "high_quality_fraction": float(good.mean()), "counts": counts.tolist(),
            "min_count": int(min_count)}
