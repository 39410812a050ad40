"""Deep Boltzmann machine: exact/AIS log Z, mean-field, bound, sampler, training, files."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from boltzkit.errors import ConfigError, DataError
from boltzkit.io import load_model, save_model
from boltzkit.stacks.dbm import (
    DBM,
    DBMChains,
    MeanFieldLikelihood,
    ScaledConnection,
    dbm_log_likelihood_bound,
    fit_dbm,
    make_dbm,
    parse_layers,
    pretrain,
)
from boltzkit.units import BernoulliUnits, GaussianUnits

torch.set_num_threads(1)


def _random_dbm(sizes: str, seed: int, scale: float = 1.0) -> DBM:
    m = make_dbm(sizes, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen))
    return m.double()


def _f64(m: DBM) -> DBM:
    """A float64 copy (``Module.double()`` would convert the model itself)."""
    return copy.deepcopy(m).double()


def _all_joint_states(m: DBM) -> list[torch.Tensor]:
    """Every joint state (v, h1, ...) of a tiny DBM as one row per state, per layer."""
    n = sum(m.sizes)
    rows = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)
    return list(rows.split(m.sizes, dim=1))


def _brute_log_joint(m: DBM) -> tuple[torch.Tensor, torch.Tensor]:
    """(log Z, log sum_h exp(-E(v, h)) for every v in enumeration order), differentiable."""
    states = _all_joint_states(m)
    neg_e = -m.energy(states)
    log_z = torch.logsumexp(neg_e, 0)
    n_v = 2 ** m.sizes[0]
    return log_z, torch.logsumexp(neg_e.view(n_v, -1), 1)


def _all_visible(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


# ------------------------------------------------------------------- exact quantities
@pytest.mark.parametrize("sizes", ["6,4,3", "5,4,3,2", "4,3"])
def test_exact_log_z_and_unnormalized_prob_match_brute_force(sizes):
    m = _random_dbm(sizes, seed=1)
    with torch.no_grad():
        log_z, log_pv = _brute_log_joint(m)
    assert m.exact_log_z() == pytest.approx(float(log_z), abs=1e-9)
    got = m.exact_log_prob_unnormalized(_all_visible(m.sizes[0]))
    torch.testing.assert_close(got, log_pv, atol=1e-9, rtol=0)


def test_one_hidden_layer_dbm_is_an_rbm():
    from boltzkit.metrics.likelihood import exact_log_z
    from boltzkit.rbm import RBM

    m = _random_dbm("7,5", seed=2)
    rbm = RBM(m.layers[0], m.layers[1], m.connections[0])
    assert m.exact_log_z() == pytest.approx(exact_log_z(rbm), abs=1e-9)


# ------------------------------------------------------------------- AIS
@pytest.mark.parametrize("sizes,seed", [("6,4,3", 3), ("5,4,3,2", 4)])
def test_ais_log_z_agrees_with_exact_within_error_bars(sizes, seed):
    m = _random_dbm(sizes, seed=seed).float()
    exact = m.exact_log_z()
    gen = torch.Generator().manual_seed(seed)
    res = m.ais_log_z(n_chains=200, n_steps=1000, generator=gen)
    assert res.log_z_lower <= exact <= res.log_z_upper, (res, exact)
    # The interval is informative, not vacuous: log Z to a few hundredths of a nat.
    assert res.log_z_upper - res.log_z_lower < 0.2
    assert res.reliable and res.n_steps == 1000 and res.log_weights.dtype == torch.float64


def test_ais_with_base_rates_and_bad_arguments():
    m = _random_dbm("6,4,3", seed=5, scale=0.7).float()
    data = (torch.rand(50, 6, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    res = m.ais_log_z(n_chains=100, n_steps=500, data=data,
                      generator=torch.Generator().manual_seed(1))
    assert abs(res.log_z - m.exact_log_z()) < 0.1
    with pytest.raises(ConfigError):
        m.ais_log_z(n_chains=0)
    with pytest.raises(ConfigError):
        m.ais_log_z(n_chains=10, n_steps=10, schedule=[0.0, 1.0])
    with pytest.raises(ConfigError):
        m.ais_log_z(n_chains=10, schedule=[0.2, 1.0])


# ------------------------------------------------------------------- mean-field
@pytest.mark.parametrize("damping", [0.0, 0.5])
def test_mean_field_fixed_point_satisfies_its_equations(damping):
    m = _random_dbm("6,4,3,5", seed=6)
    v = _all_visible(6)
    mus, info = m.mean_field(v, max_steps=2000, tol=1e-12, damping=damping, return_info=True)
    assert info["converged"] and info["max_change"] < 1e-12
    states = [v, *mus]
    for i in range(1, m.n_layers):
        expected = torch.sigmoid(m.layers[i].bias + m.field(i, states))
        torch.testing.assert_close(mus[i - 1], expected, atol=1e-10, rtol=0)


def test_mean_field_sweeps_never_lower_the_bound():
    m = _random_dbm("6,4,3", seed=7, scale=1.5)
    v = _all_visible(6)
    mus = m.mean_field(v, max_steps=1)
    prev = m.variational_free_energy(v, mus)
    for _ in range(10):
        mus = m.mean_field(v, max_steps=1, init=mus)
        cur = m.variational_free_energy(v, mus)
        assert bool((cur >= prev - 1e-10).all())
        prev = cur


def test_variational_bound_is_below_exact_and_tight_for_one_hidden_layer():
    m = _random_dbm("6,4,3", seed=8, scale=1.5)
    v = _all_visible(6)
    exact = m.exact_log_prob_unnormalized(v)
    bound = m.variational_free_energy(v, mf_steps=200)
    assert bool((bound <= exact + 1e-10).all())
    assert float((exact - bound).max()) > 1e-3  # two hidden layers: q is not exact
    one = _random_dbm("6,4", seed=9, scale=1.5)
    torch.testing.assert_close(one.variational_free_energy(v, mf_steps=5),
                               one.exact_log_prob_unnormalized(v), atol=1e-9, rtol=0)
    res = dbm_log_likelihood_bound(m, v)
    assert res["method"] == "exact"
    exact_ll = float((exact - m.exact_log_z()).mean())
    assert res["log_likelihood_lower_bound"] <= exact_ll
    assert res["log_likelihood_lower_bound"] == pytest.approx(
        float(bound.mean()) - m.exact_log_z(), abs=1e-9)


def test_bound_with_ais_matches_the_exact_one():
    m = _random_dbm("6,4,3", seed=10).float()
    v = _all_visible(6).float()
    ex = dbm_log_likelihood_bound(m, v)
    ais = dbm_log_likelihood_bound(m, v, ais_chains=200, ais_steps=1000, exact=False)
    assert ais["method"] == "ais" and ais["ais_chains"] == 200 and ais["ais_steps"] == 1000
    low, high = ais["log_likelihood_lower_bound_low"], ais["log_likelihood_lower_bound_high"]
    assert low - 1e-4 <= ex["log_likelihood_lower_bound"] <= high + 1e-4
    for key in ("log_likelihood_lower_bound", "log_z", "log_z_lower", "log_z_upper",
                "n_samples"):
        assert key in ais


# ------------------------------------------------------------------- sampling
def test_gibbs_sampler_matches_exact_distribution():
    m = _random_dbm("3,2,2", seed=11).float()
    n = 20000
    gen = torch.Generator().manual_seed(0)
    states = m.sample(n, steps=60, generator=gen, return_states=True)
    with torch.no_grad():
        m64 = _f64(m)
        log_z, _ = _brute_log_joint(m64)
        joint = _all_joint_states(m64)
        p = torch.exp(-m64.energy(joint) - log_z)
    code = torch.zeros(n, dtype=torch.long)
    for x in states:
        for j in range(x.shape[1]):
            code = code * 2 + x[:, j].long()
    counts = torch.bincount(code, minlength=p.numel()).double() / n
    sd = torch.sqrt(p * (1 - p) / n)
    # every one of the 128 joint states within 4.5 standard errors
    z = (counts - p).abs() / sd
    assert bool(((counts - p).abs() <= 4.5 * sd + 1e-4).all()), float(z.max())
    v = m.sample(5, steps=3, generator=gen)
    assert v.shape == (5, 3) and bool(((v >= 0) & (v <= 1)).all())


# ------------------------------------------------------------------- training
def _toy_data() -> torch.Tensor:
    patterns = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [1, 0, 1, 0, 1, 0]],
                            dtype=torch.float32)
    return patterns.repeat(40, 1)


def test_joint_gradient_points_along_the_exact_gradient():
    # One hidden layer: mean-field is exact, so only the chains' noise separates
    # the estimate from the exact gradient of the mean log-likelihood.
    m = _random_dbm("6,4", seed=12, scale=0.5).float()
    data = _toy_data()
    exact_model = _f64(m)
    for p in exact_model.parameters():
        p.requires_grad_(True)
    log_z, log_pv = _brute_log_joint(exact_model)
    idx = (data.double() @ (2.0 ** torch.arange(5, -1, -1, dtype=torch.float64))).long()
    nll = -(log_pv[idx].mean() - log_z)
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(nll, exact_model.parameters())])
    MeanFieldLikelihood().gradient(m, data, DBMChains(20, 5000),
                                   torch.Generator().manual_seed(0))
    est = torch.cat([p.grad.double().flatten() for p in m.parameters()])
    cos = float(est @ exact / (est.norm() * exact.norm()))
    assert cos > 0.97, cos


def _exact_mean_ll(m: DBM, data: torch.Tensor) -> float:
    return float(m.exact_log_prob_unnormalized(data).mean() - m.exact_log_z())


def test_pretraining_and_joint_training_raise_the_exact_likelihood():
    data = _toy_data()
    m = make_dbm("6,5,4", seed=0)
    ll0 = _exact_mean_ll(m, data)
    hist = pretrain(m, data, epochs=30, batch_size=20, lr=0.1, seed=0)
    assert len(hist) == 60 and {h["rbm"] for h in hist} == {0, 1}
    ll1 = _exact_mean_ll(m, data)
    fit_dbm(m, data, epochs=60, batch_size=20, lr=0.05, momentum=0.5, n_chains=100,
            gibbs_steps=2, weight_decay=0.0, seed=0)
    ll2 = _exact_mean_ll(m, data)
    # the data has 3 equiprobable patterns: the best possible mean log-likelihood is log(1/3)
    assert ll0 < ll1 - 1.0, (ll0, ll1)
    assert ll2 > ll1 + 0.3, (ll1, ll2)  # measured: -2.62 -> -2.00 with these seeds
    assert ll2 <= math.log(1 / 3) + 1e-6


def test_scaled_connection_doubles_fields():
    c = ScaledConnection(3, 2, up=2.0, down=1.0, generator=torch.Generator().manual_seed(0))
    x = torch.ones(1, 3)
    torch.testing.assert_close(c(x), 2 * (x @ c.weights))
    torch.testing.assert_close(c.transpose(torch.ones(1, 2)), torch.ones(1, 2) @ c.weights.t())


# ------------------------------------------------------------------- files, features, CLI
@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_save_load_round_trip(tmp_path, visible):
    m = make_dbm("6,4,3", visible=visible, visible_std=0.5, seed=3)
    with torch.no_grad():
        m.layers[2].bias.fill_(0.25)
    path = save_model(m, tmp_path / "dbm.safetensors")
    back = load_model(path)
    assert isinstance(back, DBM) and back.config() == m.config()
    assert back.config()["model"] == "dbm"
    for (k, a), (_, b) in zip(m.state_dict().items(), back.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    if visible == "gaussian":
        assert isinstance(back.layers[0], GaussianUnits) and back.layers[0].std == 0.5


def test_transform_gives_all_hidden_marginals():
    m = make_dbm("6,4,3", seed=0)
    feats = m.transform(_toy_data())
    assert feats.shape == (120, 7) and bool(((feats > 0) & (feats < 1)).all())


@pytest.mark.parametrize("spec", ["784", "784,0,10", "a,b", "", [784], [784, -1], [784, 2.5]])
def test_bad_layer_specs_raise_config_error(spec):
    with pytest.raises(ConfigError):
        parse_layers(spec)


def test_bad_models_and_data_raise_clear_errors():
    with pytest.raises(ConfigError, match="bernoulli"):
        DBM([BernoulliUnits(4), GaussianUnits(3)])
    with pytest.raises(ConfigError, match="variance"):
        DBM([GaussianUnits(4, learn_variance=True), BernoulliUnits(3)])
    with pytest.raises(ConfigError):
        make_dbm("4,3", visible="relu")
    m = make_dbm("4,3", seed=0)
    with pytest.raises(DataError, match="binary"):
        m.transform(torch.full((2, 4), 0.5))
    with pytest.raises(DataError, match="columns"):
        m.transform(torch.zeros(2, 5))
    with pytest.raises(ConfigError, match="AIS|ais"):
        make_dbm("4,30,3").exact_log_z()
    assert parse_layers("500,1000", n_features=784) == [784, 500, 1000]
    with pytest.raises(ConfigError, match="chain_init"):
        DBMChains(init="warm")
    with pytest.raises(ConfigError, match="mf_steps"):
        MeanFieldLikelihood(mf_steps=0)


def test_cli_trains_a_dbm(tmp_path, capsys):
    import json

    import numpy as np

    from boltzkit.cli import main
    from boltzkit.kinds import OPTIONS, trainable

    assert "dbm" in trainable() and "dbm_mf_steps" in OPTIONS
    np.save(tmp_path / "x.npy", _toy_data().numpy())
    out = tmp_path / "dbm.safetensors"
    assert main(["train", "--model", "dbm", "--dataset", str(tmp_path / "x.npy"),
                 "--layers", "6,4,3", "--dbm-pretrain-epochs", "1", "--epochs", "1",
                 "--chains", "10", "--dbm-ais-chains", "20",
                 "--batch-size", "20", "--out", str(out), "--quiet"]) == 0, \
        capsys.readouterr().err
    model = load_model(out)
    history = json.loads(out.with_suffix(".history.json").read_text())
    assert isinstance(model, DBM) and model.sizes == [6, 4, 3]
    assert [h["stage"] for h in history] == ["pretrain0", "pretrain1", "joint", "evaluate"]
    assert history[-1]["method"] == "exact"  # tiny model: log Z by enumeration


def test_gaussian_visible_dbm_exact_and_ais_log_z():
    m = make_dbm("4,3,2", visible="gaussian", visible_std=0.8, seed=0)
    gen = torch.Generator().manual_seed(21)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    # exact log Z against numerical integration over v (a smooth Gaussian integrand: the
    # Riemann sum error is ~exp(-2 pi^2 sigma^2 / h^2) ~ 1e-11), per hidden state
    m64 = _f64(m)
    hs = _all_joint_states(make_dbm("3,2", seed=0).double())  # all (h1, h2) states
    grid = torch.linspace(-7, 7, 21, dtype=torch.float64)  # spacing 0.7: Riemann sum exact
    vs = torch.cartesian_prod(*[grid] * 4)
    dv = float(grid[1] - grid[0]) ** 4
    with torch.no_grad():
        terms = [torch.logsumexp(-m64.energy([vs, h1.expand(len(vs), -1), h2.expand(len(vs), -1)]),
                                 0) for h1, h2 in zip(hs[0], hs[1], strict=True)]
    numeric = float(torch.logsumexp(torch.stack(terms), 0)) + math.log(dv)
    exact = m.exact_log_z()
    assert exact == pytest.approx(numeric, abs=1e-3)
    res = m.ais_log_z(n_chains=200, n_steps=1000, generator=torch.Generator().manual_seed(2))
    assert res.log_z_lower <= exact <= res.log_z_upper
