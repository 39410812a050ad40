"""Exact and AIS log Z, log-likelihood, pseudo-likelihood, evaluate and the likelihood monitor.

Reference values are computed independently in numpy (brute force over both layers,
closed-form Gaussian integrals, numerical quadrature), in float64.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import logsumexp

from boltzkit import RBM, PersistentCD, Trainer, make_rbm
from boltzkit.errors import ConfigError, DataError
from boltzkit.metrics import (
    AISResult,
    LikelihoodMonitor,
    ais_log_z,
    ais_schedule,
    evaluate,
    exact_log_z,
    free_energy_gap,
    log_likelihood,
    pseudo_likelihood,
    reconstruction_error,
)
from boltzkit.units import BernoulliUnits, GaussianUnits, ReLUUnits, SoftmaxUnits


def _mnist_dir() -> Path:
    env = os.environ.get("BOLTZKIT_DATA")
    for cand in ([Path(env), Path(env) / "mnist"] if env else []) + [
            Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"]:
        if (cand / "train-images-idx3-ubyte.gz").is_file():
            return cand
    return Path("/nonexistent")


MNIST_DIR = _mnist_dir()


# --------------------------------------------------------------------------- helpers
def randomize(rbm: RBM, seed: int, w_std: float = 0.5, b_std: float = 0.5) -> RBM:
    gen = torch.Generator().manual_seed(seed)
    rbm = rbm.double()
    with torch.no_grad():
        for p in (rbm.connection.weights, rbm.visible.bias, rbm.hidden.bias):
            std = w_std if p is rbm.connection.weights else b_std
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * std)
    return rbm


def params(rbm: RBM):
    return (rbm.connection.weights.detach().numpy(), rbm.visible.bias.detach().numpy(),
            rbm.hidden.bias.detach().numpy())


def binary_states(n):
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def onehot_states(groups, k):
    eye = np.eye(k)
    return np.array([np.concatenate([eye[i] for i in c])
                     for c in itertools.product(range(k), repeat=groups)])


def brute_log_z(rbm: RBM, vs: np.ndarray, hs: np.ndarray) -> float:
    """log sum_{v,h} exp(-E(v,h)) with E = -b.v - c.h - v W h (E0 = 0 units)."""
    W, b, c = params(rbm)
    neg_e = (vs @ b)[:, None] + (hs @ c)[None, :] + vs @ W @ hs.T
    return float(logsumexp(neg_e))


def bernoulli_model(nv=20, nh=12, seed=0, **kw) -> RBM:
    return randomize(make_rbm(nv, nh, seed=seed), seed, **kw)


def np_softplus(x):
    return np.logaddexp(0.0, x)


# --------------------------------------------------------------------------- exact log Z
@pytest.mark.parametrize("kind", ["bernoulli-bernoulli", "softmax-bernoulli",
                                  "bernoulli-softmax"])
def test_exact_log_z_matches_brute_force_over_both_layers(kind):
    if kind == "bernoulli-bernoulli":
        rbm = RBM(BernoulliUnits(5), BernoulliUnits(4))
        vs, hs = binary_states(5), binary_states(4)
    elif kind == "softmax-bernoulli":
        rbm = RBM(SoftmaxUnits(6, group_size=3), BernoulliUnits(4))
        vs, hs = onehot_states(2, 3), binary_states(4)
    else:
        rbm = RBM(BernoulliUnits(5), SoftmaxUnits(6, group_size=2))
        vs, hs = binary_states(5), onehot_states(3, 2)
    rbm = randomize(rbm, 1, w_std=1.0, b_std=1.0)
    truth = brute_log_z(rbm, vs, hs)
    assert exact_log_z(rbm) == pytest.approx(truth, abs=1e-10)
    assert exact_log_z(rbm, layer="visible") == pytest.approx(truth, abs=1e-10)
    assert exact_log_z(rbm, layer="hidden") == pytest.approx(truth, abs=1e-10)
    # Tiny chunks exercise the chunked log-sum-exp.
    assert exact_log_z(rbm, chunk=3) == pytest.approx(truth, abs=1e-10)


def test_exact_log_z_visible_and_hidden_enumeration_agree_on_float32_model():
    rbm = make_rbm(12, 10, seed=3)
    with torch.no_grad():
        rbm.connection.weights.normal_(0, 0.8, generator=torch.Generator().manual_seed(0))
    a, b = exact_log_z(rbm, layer="visible"), exact_log_z(rbm, layer="hidden")
    assert a == pytest.approx(b, abs=1e-9)
    assert rbm.dtype == torch.float32  # the caller's model is untouched
    assert exact_log_z(rbm, dtype=torch.float32) == pytest.approx(a, abs=1e-4)


def test_exact_log_z_gaussian_visible_one_unit_matches_quadrature():
    std = 0.7
    rbm = randomize(RBM(GaussianUnits(1, std=std), BernoulliUnits(3)), 2, w_std=1.0)
    W, b, c = params(rbm)
    var = float(rbm.visible.variance())  # std**2 as stored (log-variance rounded to float32)
    assert var == pytest.approx(std**2, rel=1e-6)

    def neg_free_energy(v):  # -F(v) = -v^2/(2 var) + b v/var + sum_j softplus(c_j + W_j v/var)
        return -v * v / (2 * var) + b[0] * v / var + np_softplus(c + W[0] * v / var).sum()

    z = integrate.quad(lambda v: math.exp(neg_free_energy(v)), -30, 30, limit=200,
                       epsabs=0, epsrel=1e-12)[0]
    assert exact_log_z(rbm) == pytest.approx(math.log(z), abs=1e-9)


def test_exact_log_z_gaussian_visible_matches_closed_form():
    rbm = RBM(GaussianUnits(4, learn_variance=True), BernoulliUnits(5))
    rbm = randomize(rbm, 4)
    with torch.no_grad():
        rbm.visible.log_var.copy_(torch.tensor([-0.5, 0.0, 0.3, 0.8], dtype=torch.float64))
    W, b, c = params(rbm)
    var = np.exp(rbm.visible.log_var.detach().numpy())
    hs = binary_states(5)
    # sum_h exp(c.h) prod_i integral exp(-v^2/(2 var) + v (b + W h)/var) dv
    mu = b[None, :] + hs @ W.T
    terms = hs @ c + (mu**2 / (2 * var) + 0.5 * np.log(2 * np.pi * var)).sum(1)
    assert exact_log_z(rbm) == pytest.approx(float(logsumexp(terms)), abs=1e-10)


def test_exact_log_z_errors():
    gg = make_rbm(3, 3, visible="gaussian", hidden="gaussian")
    with pytest.raises(ConfigError, match="ais"):
        exact_log_z(gg)
    with pytest.raises(ConfigError, match="continuous"):
        exact_log_z(make_rbm(3, 3, visible="gaussian"), layer="visible")
    with pytest.raises(ConfigError, match="AIS|ais"):
        exact_log_z(make_rbm(40, 40))
    with pytest.raises(ConfigError, match="layer"):
        exact_log_z(make_rbm(3, 3), layer="both")
    with pytest.raises(ConfigError, match="RBM"):
        exact_log_z("model")


# --------------------------------------------------------------------------- AIS
def test_ais_schedule_shape():
    s = ais_schedule()
    assert s.dtype == torch.float64 and s.numel() == 14501
    assert float(s[0]) == 0.0 and float(s[-1]) == 1.0
    assert float(s[500]) == pytest.approx(0.5) and float(s[4500]) == pytest.approx(0.9)
    assert bool((s[1:] > s[:-1]).all())
    small = ais_schedule(145)
    assert small.numel() == 146 and float(small[5]) == pytest.approx(0.5)
    assert float(small[45]) == pytest.approx(0.9)
    assert ais_schedule(2).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ConfigError):
        ais_schedule(0)


def test_ais_schedule_validation():
    rbm = make_rbm(4, 3)
    for bad in ([0.0], [0.1, 1.0], [0.0, 0.5], [0.0, 0.7, 0.3, 1.0]):
        with pytest.raises(ConfigError, match="schedule"):
            ais_log_z(rbm, schedule=bad)
    with pytest.raises(ConfigError, match="not both"):
        ais_log_z(rbm, schedule=[0.0, 1.0], n_steps=5)


def check_ais(res: AISResult, exact: float, n_chains: int):
    assert isinstance(res.log_weights, torch.Tensor)
    assert res.log_weights.dtype == torch.float64 and res.log_weights.shape == (n_chains,)
    assert res.log_z_lower <= res.log_z <= res.log_z_upper
    # +/- 3 sigma of the mean weight: the exact value is inside the interval.
    assert res.log_z_lower <= exact <= res.log_z_upper, (res, exact)
    assert 0 < res.ess <= n_chains
    json.dumps(res.to_dict())


def test_ais_matches_exact_on_small_bernoulli_model():
    rbm = bernoulli_model(20, 12, seed=5, w_std=0.5, b_std=0.5)
    exact = exact_log_z(rbm)
    gen = torch.Generator().manual_seed(0)
    data = rbm.sample(500, steps=100, generator=gen, return_mean=False)
    res = ais_log_z(rbm, data=data, n_chains=100, n_steps=1500, generator=gen, reverse=True)
    check_ais(res, exact, 100)
    assert res.reliable and res.warning is None
    assert res.n_steps == 1500
    # Reverse AIS from (model) data lands close to the forward estimate.
    assert abs(res.reverse - exact) < 0.1
    # Without data the base model is uniform (b_A = 0): still consistent, wider spread.
    res0 = ais_log_z(rbm, n_chains=100, n_steps=1500, generator=gen)
    check_ais(res0, exact, 100)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bernoulli_annealing_pass_is_the_general_one(dtype):
    """The buffered Bernoulli AIS pass takes the general loop's draws and weights.

    200 chains x 100 visible units take the bulk 64-bit-word draws, x 30 hidden units
    the small-tensor ones; forward and reverse schedules.  In float64 the rounding
    differences never flip a draw, so the final states agree exactly; in float32 a flip
    is possible, so only the log weights are compared there.
    """
    from boltzkit.kernels.ais import anneal_bernoulli
    from boltzkit.metrics.ais import RBMPath, anneal

    class GeneralPath(RBMPath):
        def fused(self):
            return None  # the engine's own loop over RBMPath.step

    rbm = bernoulli_model(100, 30, seed=2, w_std=0.3, b_std=0.5).to(dtype)
    base = torch.linspace(-1, 1, 100, dtype=dtype)
    path, general = RBMPath(rbm, base), GeneralPath(rbm, base)
    v0 = (torch.rand(200, 100, generator=torch.Generator().manual_seed(1)) < 0.5).to(dtype)
    for betas in (ais_schedule(300).tolist(), ais_schedule(300).tolist()[::-1]):
        runs = [anneal_bernoulli(rbm, v0, betas, path.d, torch.Generator().manual_seed(7)),
                anneal(general, v0, betas, torch.Generator().manual_seed(7)),
                anneal(path, v0, betas, torch.Generator().manual_seed(7))]
        (w_fast, v_fast), (w_gen, v_gen), (w_auto, v_auto) = runs
        assert torch.equal(w_auto, w_fast) and torch.equal(v_auto, v_fast)  # the dispatch
        tol = 1e-9 if dtype == torch.float64 else 2e-3
        torch.testing.assert_close(w_fast, w_gen, rtol=0, atol=tol)
        assert float(w_fast.std()) > 0.1  # the weights are far from trivial
        if dtype == torch.float64:
            assert torch.equal(v_fast, v_gen)
        assert not torch.equal(v_fast, v0)


def test_ais_is_exact_for_a_uniform_model():
    rbm = make_rbm(6, 5).double()
    with torch.no_grad():
        rbm.connection.weights.zero_()
    res = ais_log_z(rbm, n_chains=10, n_steps=20, generator=torch.Generator().manual_seed(0))
    # With no couplings and b_A = b_B every weight is exactly 0.
    assert torch.equal(res.log_weights, torch.zeros(10, dtype=torch.float64))
    assert res.log_z == pytest.approx(11 * math.log(2), abs=1e-12)
    assert res.ess == pytest.approx(10)


def test_ais_matches_exact_on_gaussian_visible_model():
    rbm = randomize(RBM(GaussianUnits(10, std=1.0), BernoulliUnits(8)), 6, w_std=0.4)
    exact = exact_log_z(rbm)
    gen = torch.Generator().manual_seed(1)
    data = rbm.sample(400, steps=100, generator=gen, return_mean=False)
    res = ais_log_z(rbm, data=data, n_chains=100, n_steps=1500, generator=gen)
    check_ais(res, exact, 100)
    assert res.reliable


@pytest.mark.parametrize("kind", ["softmax-visible", "relu-hidden"])
def test_ais_matches_exact_on_other_unit_types(kind):
    if kind == "softmax-visible":
        rbm = RBM(SoftmaxUnits(12, group_size=4), BernoulliUnits(8))
    else:
        rbm = RBM(BernoulliUnits(10), ReLUUnits(6))
    rbm = randomize(rbm, 7, w_std=0.4)
    exact = exact_log_z(rbm)
    gen = torch.Generator().manual_seed(2)
    data = rbm.sample(300, steps=100, generator=gen, return_mean=False)
    res = ais_log_z(rbm, data=data, n_chains=100, n_steps=1000, generator=gen)
    check_ais(res, exact, 100)


def test_ais_flags_an_unreliable_run():
    # Strong couplings and only 5 annealing steps: weights degenerate.
    rbm = bernoulli_model(20, 12, seed=8, w_std=2.0, b_std=0.5)
    res = ais_log_z(rbm, n_chains=50, n_steps=5, generator=torch.Generator().manual_seed(0))
    assert not res.reliable
    assert "unreliable" in res.warning and "steps" in res.warning


def test_ais_reproducible_with_generator_and_leaves_model_alone():
    rbm = bernoulli_model(10, 6, seed=9)
    before = [p.clone() for p in rbm.parameters()]
    a = ais_log_z(rbm, n_chains=20, n_steps=50, generator=torch.Generator().manual_seed(3))
    b = ais_log_z(rbm, n_chains=20, n_steps=50, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.log_weights, b.log_weights)
    assert all(torch.equal(x, y) for x, y in zip(before, rbm.parameters(), strict=True))


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="MNIST not available")
def test_ais_matches_exact_on_mnist_model_with_2_20_hidden_states():
    from boltzkit.data import load_mnist

    x, _ = load_mnist(MNIST_DIR, binarize="threshold", limit=2000)
    rbm = make_rbm(784, 20, seed=0)
    Trainer(rbm, PersistentCD(k=1, n_chains=100), epochs=1, batch_size=100, lr=0.05, seed=0,
            progress=False).fit(x)
    # 2^20 hidden states against 784 visible units: float32 free energies (about 1e-4
    # nats of error, far below the AIS interval) keep this at a few seconds.
    exact = exact_log_z(rbm, dtype=torch.float32)
    res = ais_log_z(rbm, data=x, n_chains=100, n_steps=1000,
                    generator=torch.Generator().manual_seed(0))
    check_ais(res, exact, 100)
    assert res.reliable
    ll = log_likelihood(rbm, x[:500], log_z=res)
    assert ll["method"] == "ais"
    assert ll["log_likelihood_lower"] <= ll["log_likelihood"] <= ll["log_likelihood_upper"]
    ll_exact = log_likelihood(rbm, x[:500], log_z=exact)
    assert abs(ll["log_likelihood"] - ll_exact["log_likelihood"]) < res.log_z_upper - res.log_z


# --------------------------------------------------------------------------- log-likelihood
def test_log_likelihood_of_uniform_model_is_minus_n_log_2():
    rbm = make_rbm(10, 7)
    with torch.no_grad():
        rbm.connection.weights.zero_()
    data = (torch.rand(50, 10, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    for method in ("auto", "exact"):
        res = log_likelihood(rbm, data, method=method)
        assert res["method"] == "exact"
        assert res["log_likelihood"] == pytest.approx(-10 * math.log(2), abs=1e-12)
        assert res["log_likelihood_std_err"] == pytest.approx(0.0, abs=1e-12)
        assert res["n_samples"] == 50
    res = log_likelihood(rbm, data, method="ais", ais_chains=50, ais_steps=200,
                         generator=torch.Generator().manual_seed(0))
    assert res["method"] == "ais" and res["ais_chains"] == 50 and res["ais_steps"] == 200
    # The base model is fitted to the data (p = 0.3), so the weights are not all 0.
    assert res["log_likelihood_lower"] <= -10 * math.log(2) <= res["log_likelihood_upper"]


def test_log_likelihood_exact_dtype_float32_agrees_and_is_reported():
    rbm = make_rbm(12, 10, seed=3)
    with torch.no_grad():
        rbm.connection.weights.normal_(0, 0.8, generator=torch.Generator().manual_seed(0))
    data = (torch.rand(50, 12, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    f64 = log_likelihood(rbm, data, method="exact")
    f32 = log_likelihood(rbm, data, method="exact", exact_dtype=torch.float32)
    assert f64["exact_dtype"] == "float64" and f32["exact_dtype"] == "float32"
    assert f32["log_z"] == pytest.approx(f64["log_z"], abs=1e-4)
    assert f32["log_z"] != f64["log_z"]  # really computed in another precision
    with pytest.raises(ConfigError, match="exact_dtype"):
        log_likelihood(rbm, data, method="exact", exact_dtype=torch.float16)


def test_log_likelihood_with_given_log_z_and_per_sample_values():
    rbm = bernoulli_model(8, 5, seed=10)
    data = rbm.sample(40, steps=50, generator=torch.Generator().manual_seed(1),
                      return_mean=False)
    lz = exact_log_z(rbm)
    res = log_likelihood(rbm, data, log_z=lz)
    assert res["method"] == "given"
    W, b, c = params(rbm)
    v = data.numpy()
    neg_f = v @ b + np_softplus(c + v @ W).sum(1)
    assert res["log_likelihood"] == pytest.approx(float(np.mean(neg_f) - lz), abs=1e-10)
    assert res["log_likelihood_std_err"] == pytest.approx(
        float(np.std(neg_f, ddof=1) / math.sqrt(40)), rel=1e-9)
    assert json.dumps(res)


def test_log_likelihood_errors():
    rbm = make_rbm(4, 3)
    data = torch.zeros(3, 4)
    with pytest.raises(ConfigError, match="method"):
        log_likelihood(rbm, data, method="magic")
    with pytest.raises(DataError, match="binary"):
        log_likelihood(rbm, torch.full((3, 4), 0.5))
    with pytest.raises(DataError, match="columns"):
        log_likelihood(rbm, torch.zeros(3, 5))
    with pytest.raises(ConfigError, match="finite"):
        log_likelihood(rbm, data, log_z=float("nan"))


# --------------------------------------------------------------------------- pseudo-likelihood
def brute_pl_bernoulli(rbm: RBM, data: np.ndarray) -> np.ndarray:
    W, b, c = params(rbm)
    out = np.zeros(len(data))
    for i in range(data.shape[1]):
        both = []
        for val in (0.0, 1.0):
            v = data.copy()
            v[:, i] = val
            both.append(v @ b + np_softplus(c + v @ W).sum(1))  # -F
        both = np.stack(both, 1)
        own = both[np.arange(len(data)), data[:, i].astype(int)]
        out += own - logsumexp(both, axis=1)
    return out


def test_pseudo_likelihood_exact_matches_brute_force_bernoulli():
    rbm = bernoulli_model(7, 5, seed=11, w_std=1.0)
    data = rbm.sample(30, steps=50, generator=torch.Generator().manual_seed(0),
                      return_mean=False)
    truth = brute_pl_bernoulli(rbm, data.numpy())
    per = pseudo_likelihood(rbm, data, reduce=False)
    np.testing.assert_allclose(per.numpy(), truth, atol=1e-10)
    assert pseudo_likelihood(rbm, data) == pytest.approx(truth.mean(), abs=1e-10)
    # Small batches exercise the chunking.
    assert pseudo_likelihood(rbm, data, batch_size=7) == pytest.approx(truth.mean(), abs=1e-10)


def test_pseudo_likelihood_exact_matches_brute_force_softmax():
    rbm = randomize(RBM(SoftmaxUnits(9, group_size=3), BernoulliUnits(4)), 12, w_std=1.0)
    states = onehot_states(3, 3)
    W, b, c = params(rbm)
    data = states[[0, 5, 13, 26, 17]].copy()
    data[4, 3:6] = 0.0  # a missing group is skipped
    truth = np.zeros(len(data))
    for g in range(3):
        alts = []
        for k in range(3):
            v = data.copy()
            v[:, 3 * g:3 * g + 3] = np.eye(3)[k]
            alts.append(v @ b + np_softplus(c + v @ W).sum(1))
        alts = np.stack(alts, 1)
        grp = data[:, 3 * g:3 * g + 3]
        observed = grp.sum(1) > 0
        own = (alts * grp).sum(1)
        truth += np.where(observed, own - logsumexp(alts, axis=1), 0.0)
    per = pseudo_likelihood(rbm, torch.tensor(data), reduce=False)
    np.testing.assert_allclose(per.numpy(), truth, atol=1e-10)


def test_pseudo_likelihood_stochastic_estimate_is_unbiased():
    rbm = bernoulli_model(12, 6, seed=13, w_std=0.8)
    data = rbm.sample(200, steps=50, generator=torch.Generator().manual_seed(0),
                      return_mean=False)
    exact = pseudo_likelihood(rbm, data)
    gen = torch.Generator().manual_seed(1)
    est = np.array([pseudo_likelihood(rbm, data, exact=False, generator=gen)
                    for _ in range(40)])
    # Each estimate is a mean of independent per-sample draws; the spread over seeds
    # gives the standard error of their mean.
    se = est.std(ddof=1) / math.sqrt(len(est))
    assert abs(est.mean() - exact) < 4 * se
    assert est.std() > 0


def test_pseudo_likelihood_rejects_continuous_visibles():
    rbm = make_rbm(3, 2, visible="gaussian")
    with pytest.raises(ConfigError, match="discrete"):
        pseudo_likelihood(rbm, torch.zeros(4, 3))


# --------------------------------------------------------------------------- monitors
def test_reconstruction_error_and_free_energy_gap():
    rbm = bernoulli_model(6, 4, seed=14)
    data = (torch.rand(20, 6, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    W, b, c = params(rbm)
    v = data.numpy()
    h = 1 / (1 + np.exp(-(c + v @ W)))
    r = 1 / (1 + np.exp(-(b + h @ W.T)))
    assert reconstruction_error(rbm, data, batch_size=7) == pytest.approx(
        float(((v - r) ** 2).mean()), abs=1e-12)
    assert free_energy_gap(rbm, data, data) == pytest.approx(0.0, abs=1e-12)
    f = -(v @ b + np_softplus(c + v @ W).sum(1))
    assert free_energy_gap(rbm, data[:10], data[10:]) == pytest.approx(
        float(f[10:].mean() - f[:10].mean()), abs=1e-10)


def labelled_blobs(n=200, nv=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(2, (n,), generator=gen)
    p = torch.where(y[:, None] == 1, 0.8, 0.2).expand(n, nv)
    return (torch.rand(n, nv, generator=gen) < p).float(), y


def test_evaluate_returns_json_numbers():
    x, y = labelled_blobs()
    rbm = make_rbm(16, 8, seed=0)
    Trainer(rbm, PersistentCD(k=1, n_chains=50), epochs=2, batch_size=20, lr=0.05, seed=0,
            progress=False).fit(x[:150])
    res = evaluate(rbm, x[150:], metrics=("loglik", "pl", "recon", "knn", "features"),
                   train_data=x[:150], labels=y[150:], train_labels=y[:150],
                   n_model_samples=200, sample_steps=20)
    json.dumps(res, allow_nan=False)
    assert res["method"] == "exact" and res["n_samples"] == 50
    assert res["log_likelihood"] < 0 and res["pseudo_likelihood"] < 0
    assert res["log_likelihood"] == pytest.approx(
        log_likelihood(rbm, x[150:])["log_likelihood"], abs=1e-9)
    assert 0 <= res["recon_error"] <= 1
    assert res["features_accuracy"] > 0.9
    for key in ("free_energy", "free_energy_gap", "knn_forward_kl", "knn_reverse_kl"):
        assert isinstance(res[key], float)
    with pytest.raises(ConfigError, match="valid names"):
        evaluate(rbm, x, metrics=("loglik", "bleu"))
    with pytest.raises(ConfigError, match="train_labels|train_data"):
        evaluate(rbm, x, metrics=("features",))
    with pytest.raises(ConfigError, match="reference"):
        evaluate(rbm, x, metrics=("modes",), sample_steps=2)


def train_with(callbacks, seed=0):
    x, _ = labelled_blobs(n=120, nv=10, seed=1)
    rbm = make_rbm(10, 6, seed=seed)
    trainer = Trainer(rbm, PersistentCD(k=1, n_chains=20), epochs=4, batch_size=20, lr=0.05,
                      seed=seed, progress=False, callbacks=callbacks)
    history = trainer.fit(x)
    return rbm, history, x


@pytest.mark.parametrize("method", ["exact", "ais"])
def test_likelihood_monitor_adds_keys_without_changing_training(method):
    plain, hist_plain, x = train_with([])
    monitor = LikelihoodMonitor(x[:60], every=2, method=method, ais_chains=20, ais_steps=100,
                                train_data=x, seed=5)
    monitored, hist, _ = train_with([monitor])
    for p, q in zip(plain.parameters(), monitored.parameters(), strict=True):
        assert torch.equal(p, q)
    assert [("log_likelihood" in r) for r in hist] == [False, True, False, True]
    for rec in hist[1::2]:
        assert rec["log_likelihood_method"] == method
        assert rec["log_likelihood"] < 0 and math.isfinite(rec["log_z"])
        err = rec["log_likelihood_err"]
        assert err == 0.0 if method == "exact" else (err is None or err > 0)
    if method == "exact":
        assert hist[-1]["log_likelihood"] == pytest.approx(
            log_likelihood(monitored, x[:60])["log_likelihood"], abs=1e-9)
    with pytest.raises(ConfigError, match="every"):
        LikelihoodMonitor(x, every=0)


def test_stochastic_pseudo_likelihood_matches_scikit_learn_estimator():
    # scikit-learn's BernoulliRBM.score_samples flips one random bit per sample and
    # multiplies by n_features: our per-unit terms for the same bits, times n, agree.
    from sklearn.neural_network import BernoulliRBM

    from boltzkit.metrics.likelihood import _field_rows, _pl_bernoulli

    rbm = bernoulli_model(9, 5, seed=15, w_std=1.0)
    W, b, c = params(rbm)
    data = rbm.sample(25, steps=30, generator=torch.Generator().manual_seed(0),
                      return_mean=False)
    sk = BernoulliRBM(n_components=5, random_state=7)
    sk.components_, sk.intercept_hidden_, sk.intercept_visible_ = W.T.copy(), c, b
    sk.n_features_in_ = 9
    theirs = sk.score_samples(data.numpy())
    bits = np.random.RandomState(7).randint(0, 9, 25)
    units = torch.tensor(bits).unsqueeze(1)
    ours = 9 * _pl_bernoulli(rbm, data, rbm.hidden_field(data), _field_rows(rbm), units)
    np.testing.assert_allclose(ours.detach().numpy(), theirs, atol=1e-10)


def test_generator_on_wrong_device_is_refused():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device type")
    with pytest.raises(ConfigError, match="generator"):
        ais_log_z(make_rbm(4, 3), generator=torch.Generator(device="cuda"))


def test_long_computations_show_progress_on_request(capsys):
    """AIS and pseudo-likelihood draw a progress bar when asked (by default: on a terminal
    only, so pipes and logs stay clean); the bar changes nothing they compute."""
    rbm = bernoulli_model(20, 8, seed=1)
    data = (torch.rand(50, 20, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    with_bar = ais_log_z(rbm, data, n_chains=5, n_steps=600, reverse=True,
                         generator=torch.Generator().manual_seed(1), progress=True)
    err = capsys.readouterr().err
    assert "AIS" in err and "step" in err
    quiet = ais_log_z(rbm, data, n_chains=5, n_steps=600, reverse=True,
                      generator=torch.Generator().manual_seed(1), progress=False)
    assert capsys.readouterr().err == ""
    assert with_bar.log_z == quiet.log_z and with_bar.reverse == quiet.reverse
    pl = pseudo_likelihood(rbm, data, progress=True)
    assert "pseudo-likelihood" in capsys.readouterr().err
    assert pl == pseudo_likelihood(rbm, data, progress=False)
