"""kNN KL estimates against closed forms, and mode coverage on synthetic clusters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from boltzkit.errors import ConfigError, DataError
from boltzkit.metrics import forward_kl, knn_kl_divergence, mode_coverage, reverse_kl
from boltzkit.metrics.divergence import _knn_kl_terms


def gaussian_kl(mu_p, var_p, mu_q, var_q, d):
    """KL(N(mu_p, var_p I) || N(mu_q, var_q I)) in d dimensions."""
    diff = np.sum((np.asarray(mu_q) - np.asarray(mu_p)) ** 2)
    return 0.5 * (d * var_p / var_q + diff / var_q - d + d * math.log(var_q / var_p))


def test_knn_kl_matches_closed_form_for_gaussians():
    # P = N(0, I), Q = N(0.5, 1.5 I) in 2-D: KL = 0.2388 nats.
    true = gaussian_kl(np.zeros(2), 1.0, np.full(2, 0.5), 1.5, 2)
    assert true == pytest.approx(0.23880, abs=1e-4)
    reps, n = 10, 5000
    ests, ses = [], []
    for seed in range(reps):
        rng = np.random.default_rng(seed)
        p = rng.normal(size=(n, 2))
        q = 0.5 + math.sqrt(1.5) * rng.normal(size=(n, 2))
        terms, const = _knn_kl_terms(p, q, 1)
        ests.append(knn_kl_divergence(p, q, k=1))
        assert ests[-1] == pytest.approx(terms.mean() + const)
        ses.append(terms.std() / math.sqrt(n))
    # The estimate is a mean of n per-sample terms (k=1: nearly independent), so its
    # standard error is std(terms)/sqrt(n) ~ 0.027; over 10 replicates ~ 0.0085.  The
    # estimator's bias at n = 5000 is below 0.01 (simulation), so 4 se + 0.01 is safe.
    se_mean = float(np.mean(ses)) / math.sqrt(reps)
    assert abs(np.mean(ests) - true) < 4 * se_mean + 0.01
    # A single 5000-sample estimate is within 4 of its own standard errors.
    assert abs(ests[0] - true) < 4 * ses[0] + 0.01


def test_knn_kl_of_same_distribution_is_near_zero():
    rng = np.random.default_rng(1)
    p, q = rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3))
    terms, _ = _knn_kl_terms(p, q, 1)
    se = terms.std() / math.sqrt(len(p))
    assert abs(knn_kl_divergence(p, q)) < 4 * se + 0.01
    # Larger k: lower variance, still near zero.
    assert abs(knn_kl_divergence(p, q, k=4)) < 4 * se + 0.01


def test_knn_kl_accepts_tensors_and_orders_forward_reverse():
    rng = np.random.default_rng(2)
    data = torch.tensor(rng.normal(size=(2000, 2)))
    wide = torch.tensor(3.0 * rng.normal(size=(2000, 2)))
    assert forward_kl(data, wide) == pytest.approx(knn_kl_divergence(data, wide))
    assert reverse_kl(data, wide) == pytest.approx(knn_kl_divergence(wide, data))
    # In 2-D, KL(N(0,I)||N(0,9I)) = 1.31 < KL(N(0,9I)||N(0,I)) = 5.80.  The second is
    # dominated by P's tails where Q has no samples, which the kNN estimate underrates at
    # this n: only its direction is checked.
    assert forward_kl(data, wide) == pytest.approx(gaussian_kl(0, 1, 0, 9, 2), abs=0.15)
    assert reverse_kl(data, wide) > forward_kl(data, wide) + 0.5


def test_knn_kl_handles_duplicate_points():
    # Binary data repeats rows: zero distances must not produce inf/nan.
    rng = np.random.default_rng(3)
    probs = np.array([0.2, 0.5, 0.8, 0.3])
    p = (rng.random((3000, 4)) < probs).astype(float)
    q = (rng.random((3000, 4)) < probs).astype(float)
    kl = knn_kl_divergence(p, q)
    assert math.isfinite(kl)
    # Exact copies in a continuous sample are skipped by raising the neighbour order.
    c = rng.normal(size=(500, 2))
    d = rng.normal(size=(500, 2))
    assert math.isfinite(knn_kl_divergence(np.concatenate([c, c[:50]]), d))


def test_knn_kl_duplicate_correction_gives_the_discrete_kl():
    """On well-separated discrete points every neighbour distance is the distance to the
    next support point, in P and in Q alike, so the log(nu / rho) terms vanish and the
    estimate is mean_P[psi(l_i) - psi(k_i)] + log(m / (n - 1)) with l_i = c_P(x_i) and
    k_i = c_Q(x_i) + 1: the plug-in KL(P || Q) of the two samples' frequencies, up to
    psi(c) - log(c) = O(1/c).  Closed form: sum_x p(x) log(p(x) / q(x)); a sign error in
    the correction gives about minus that."""
    rng = np.random.default_rng(11)
    support = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    p_probs, q_probs = np.array([0.1, 0.2, 0.3, 0.4]), np.full(4, 0.25)
    n = m = 20000
    p = support[rng.choice(4, n, p=p_probs)]
    q = support[rng.choice(4, m, p=q_probs)]
    exact = float(np.sum(p_probs * np.log(p_probs / q_probs)))  # 0.1064
    # plug-in KL of the samples: its sampling sd here is ~0.004; 0.02 is 5 sd
    assert knn_kl_divergence(p, q) == pytest.approx(exact, abs=0.02)
    assert knn_kl_divergence(q, q[::-1].copy()) == pytest.approx(0.0, abs=0.01)


def test_knn_kl_errors():
    with pytest.raises(DataError, match="features"):
        knn_kl_divergence(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(ConfigError, match="k must"):
        knn_kl_divergence(np.random.rand(10, 2), np.random.rand(10, 2), k=0)
    with pytest.raises(DataError, match="NaN"):
        knn_kl_divergence(np.full((10, 2), np.nan), np.random.rand(10, 2))
    with pytest.raises(DataError, match="distinct"):
        knn_kl_divergence(np.ones((10, 2)), np.random.rand(10, 2))


def ring_means(k=8, radius=2.0):
    a = 2 * np.pi * np.arange(k) / k
    return radius * np.stack([np.cos(a), np.sin(a)], 1)


def test_mode_coverage_on_synthetic_clusters():
    rng = np.random.default_rng(4)
    means, std = ring_means(), 0.1
    # 6 of 8 modes get 100 samples each, mode 6 gets 3 strays, 50 samples sit at the origin.
    parts = [means[i] + std * rng.normal(size=(100, 2)) for i in range(6)]
    parts.append(means[6] + std * rng.normal(size=(3, 2)))
    parts.append(0.05 * rng.normal(size=(50, 2)))
    x = np.concatenate(parts)
    res = mode_coverage(x, means, std)
    n = len(x)
    assert res["n_modes"] == 8
    assert res["min_count"] == math.ceil(0.1 * n / 8)
    assert res["modes_covered"] == 6
    assert res["coverage"] == pytest.approx(6 / 8)
    counts = res["counts"]
    # Within 3 std of a 2-D Gaussian: P(chi2_2 <= 9) = 1 - exp(-4.5) = 98.9% of samples.
    assert all(90 <= c <= 100 for c in counts[:6])
    assert counts[6] <= 3 and counts[7] == 0
    assert res["high_quality_fraction"] == pytest.approx(sum(counts) / n)
    assert 0.85 * 600 / n < res["high_quality_fraction"] <= 603 / n
    # min_count=1 counts the strays' mode too.
    assert mode_coverage(x, means, std, min_count=1)["modes_covered"] == 7
    # Per-mode std and torch input work.
    res2 = mode_coverage(torch.tensor(x), torch.tensor(means), np.full(8, std))
    assert res2["counts"] == counts


def test_mode_coverage_errors():
    with pytest.raises(DataError, match="features"):
        mode_coverage(np.zeros((5, 2)), np.zeros((3, 3)), 0.1)
    with pytest.raises(ConfigError, match="std"):
        mode_coverage(np.zeros((5, 2)), np.zeros((3, 2)), -1.0)
    with pytest.raises(ConfigError, match="min_count"):
        mode_coverage(np.zeros((5, 2)), np.zeros((3, 2)), 0.1, min_count=0)
