"""Negative-phase samplers: CD-k, PCD-k and parallel tempering."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from boltzkit import (
    RBM,
    BernoulliUnits,
    ConfigError,
    ContrastiveDivergence,
    ParallelTempering,
    PersistentCD,
    make_sampler,
)
from boltzkit.sampling import HiddenPersistentCD, geometric_betas


def negative(sampler, rbm, v_data, field_data, generator):
    """Call ``sampler.negative`` and check its contract: (states, their field or None)."""
    out = sampler.negative(rbm, v_data, field_data, generator)
    assert isinstance(out, tuple) and len(out) == 2
    v, field = out
    if field is not None:  # the field of the returned states under the current parameters
        torch.testing.assert_close(field, rbm.hidden_field(v), rtol=0, atol=0)
    return v, field


def clone_gen(g: torch.Generator) -> torch.Generator:
    out = torch.Generator()
    out.set_state(g.get_state())
    return out


@pytest.fixture
def setup(tiny_rbm, random_states):
    def make(kind="bernoulli-bernoulli", batch=6, seed=0):
        rbm = tiny_rbm(kind, seed=seed)
        v = random_states(rbm.visible, batch, seed=seed + 1)
        with torch.no_grad():
            field = rbm.hidden_field(v)
        return rbm, v, field

    return make


# --- contrastive divergence ---------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("kind", ["bernoulli-bernoulli", "gaussian-bernoulli", "softmax-bernoulli",
                                  "bernoulli-relu"])
def test_cd_k_is_k_gibbs_sweeps_from_the_data(kind, k, setup, make_gen):
    rbm, v, field = setup(kind)
    g = make_gen(3)
    ref_gen = clone_gen(g)
    with torch.no_grad():
        out, _ = negative(ContrastiveDivergence(k), rbm, v, field, g)
        h = rbm.sample_hidden(v, generator=ref_gen)
        expected = rbm.gibbs(rbm.sample_visible(h, generator=ref_gen), k - 1, generator=ref_gen)
    assert out.shape == v.shape and out.dtype == v.dtype
    assert torch.equal(out, expected)
    rbm.visible.validate(out)


def test_cd_uses_the_given_field(setup, make_gen):
    """CD samples h from ``field_data`` (not recomputed): a huge field forces h = 1."""
    rbm, v, field = setup()
    with torch.no_grad():
        forced, _ = negative(ContrastiveDivergence(1), rbm, v, torch.full_like(field, 1e3),
                             make_gen(0))
    # the uniform draws of the hidden layer come first, then the visible ones
    g = make_gen(0)
    torch.rand(6, 5, generator=g, dtype=torch.float64)
    with torch.no_grad():
        ref = rbm.sample_visible(torch.ones(6, 5, dtype=torch.float64), generator=g)
    assert torch.equal(forced, ref)


@pytest.mark.parametrize("k", [0, -1, 1.5, "2", None])
def test_bad_k_raises_config_error(k):
    for cls in (ContrastiveDivergence, PersistentCD, ParallelTempering):
        with pytest.raises(ConfigError):
            cls(k)


# --- persistent CD ------------------------------------------------------------------------
def test_pcd_chains_persist_between_calls(setup, make_gen):
    rbm, v, field = setup("sigmoid-bernoulli")
    pcd = PersistentCD(k=2, n_chains=9)
    g = make_gen(1)
    with torch.no_grad():
        first = negative(pcd, rbm, v, field, g)[0].clone()
        assert first.shape == (9, 7)
        ref_gen = clone_gen(g)
        second, _ = negative(pcd, rbm, v[:2], field[:2], g)  # batch size does not matter
        assert torch.equal(second, rbm.gibbs(first, 2, generator=ref_gen))
    assert second.shape == (9, 7)
    assert torch.equal(pcd.state_dict()["chains"], second)


def test_pcd_returned_field_follows_parameter_updates(setup, make_gen):
    """Between updates the optimizer changes W: the field handed to the gradient must be
    the field of the returned chains under the *current* parameters."""
    rbm, v, field = setup("bernoulli-bernoulli")
    pcd = PersistentCD(k=1, n_chains=8)
    g = make_gen(9)
    with torch.no_grad():
        for _ in range(3):
            negative(pcd, rbm, v, field, g)  # checks the field against rbm.hidden_field
            rbm.connection.weights.mul_(1.5).add_(0.1)
            rbm.hidden.bias.add_(0.2)


def test_pcd_defaults_to_batch_size_chains_and_random_start(setup, make_gen):
    rbm, v, field = setup("bernoulli-bernoulli", batch=5)
    pcd = PersistentCD()
    assert pcd.state_dict() == {}
    g = make_gen(2)
    ref_gen = clone_gen(g)
    with torch.no_grad():
        out, _ = negative(pcd, rbm, v, field, g)
        start = rbm.visible.init_state(5, ref_gen)
        assert torch.equal(out, rbm.gibbs(start, 1, generator=ref_gen))


def test_pcd_data_init_starts_from_repeated_batch_rows(setup, make_gen):
    rbm, v, field = setup("bernoulli-bernoulli", batch=4)
    pcd = PersistentCD(k=1, n_chains=10, init="data")
    g = make_gen(3)
    ref_gen = clone_gen(g)
    with torch.no_grad():
        out, _ = negative(pcd, rbm, v, field, g)
        start = torch.cat([v, v, v])[:10]
        assert torch.equal(out, rbm.gibbs(start, 1, generator=ref_gen))


def test_pcd_state_dict_round_trip_continues_identically(setup, make_gen):
    rbm, v, field = setup("gaussian-bernoulli")
    a = PersistentCD(k=1, n_chains=7)
    g = make_gen(4)
    with torch.no_grad():
        for _ in range(3):
            negative(a, rbm, v, field, g)
        b = PersistentCD(k=1, n_chains=7)
        b.load_state_dict({k: t.clone() for k, t in a.state_dict().items()})
        g2 = clone_gen(g)
        va, fa = negative(a, rbm, v, field, g)
        vb, fb = negative(b, rbm, v, field, g2)
        assert torch.equal(va, vb)
        assert (fa is None and fb is None) or torch.equal(fa, fb)
    # the loaded chains are a copy, not an alias of the caller's tensor
    state = a.state_dict()
    c = PersistentCD()
    c.load_state_dict(state)
    c.chains.add_(1.0)
    assert not torch.equal(c.chains, a.chains)
    c.load_state_dict({})  # nothing to restore is fine


# --- hidden-state PCD (scikit-learn's) ------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2])
def test_hidden_pcd_update_written_out(k, setup):
    """Chains of hidden states from zero; per update one block of uniforms from the
    RandomState, used in order: v ~ p(v | h), (h ~ p(h | v), v ~ p(v | h)) x (k - 1),
    then the next chains h ~ p(h | v) from the means under the same parameters."""
    rbm, v_data, field = setup(batch=6, seed=3)
    nv, nh, M = rbm.n_visible, rbm.n_hidden, 4
    sampler = HiddenPersistentCD(k=k, n_chains=M, random_state=np.random.RandomState(5))
    ref = np.random.RandomState(5)
    W, b, c = (t.detach() for t in (rbm.connection.weights, rbm.visible.bias, rbm.hidden.bias))
    h = torch.zeros(M, nh, dtype=W.dtype)
    with torch.no_grad():
        for _ in range(3):
            u = torch.from_numpy(ref.random_sample(M * k * (nv + nh)))
            take = iter(torch.split(u, [M * nv, M * nh] * k))
            vm = (next(take).view(M, nv) < torch.sigmoid(h @ W.t() + b)).to(W.dtype)
            for _ in range(k - 1):
                hm = (next(take).view(M, nh) < torch.sigmoid(vm @ W + c)).to(W.dtype)
                vm = (next(take).view(M, nv) < torch.sigmoid(hm @ W.t() + b)).to(W.dtype)
            h = (next(take).view(M, nh) < torch.sigmoid(vm @ W + c)).to(W.dtype)
            got, got_field = negative(sampler, rbm, v_data, field, None)
            assert torch.equal(got, vm) and torch.equal(sampler.chains, h)
            torch.testing.assert_close(got_field, vm @ W)
    assert set(torch.unique(h).tolist()) <= {0.0, 1.0} and 0 < float(h.mean()) < 1
    # the RandomState is the caller's: it advanced by exactly the draws taken
    assert sampler.random_state.random_sample() == ref.random_sample()


def test_hidden_pcd_starts_at_zero_with_batch_size_chains(setup):
    rbm, v_data, field = setup(batch=6)
    sampler = HiddenPersistentCD(random_state=0)
    assert isinstance(sampler.random_state, np.random.RandomState)
    assert torch.equal(sampler.start(rbm, v_data), torch.zeros(6, rbm.n_hidden))
    with torch.no_grad():
        v, _ = negative(sampler, rbm, v_data, field, None)
    assert v.shape == (6, rbm.n_visible) and sampler.chains.shape == (6, rbm.n_hidden)


def test_hidden_pcd_state_dict_round_trip_continues_identically(setup):
    rbm, v_data, field = setup(batch=6, seed=1)
    a = HiddenPersistentCD(n_chains=5, random_state=np.random.RandomState(2))
    with torch.no_grad():
        negative(a, rbm, v_data, field, None)
        state = {k: t.clone() for k, t in a.state_dict().items()}
        assert set(state) == {"chains", "random_state"}
        b = HiddenPersistentCD(n_chains=5, random_state=np.random.RandomState(99))
        b.load_state_dict(state)
        for _ in range(2):
            va, _ = negative(a, rbm, v_data, field, None)
            vb, _ = negative(b, rbm, v_data, field, None)
            assert torch.equal(va, vb) and torch.equal(a.chains, b.chains)
    fresh = HiddenPersistentCD(random_state=0)
    assert set(fresh.state_dict()) == {"random_state"}  # no chains before the first update
    with pytest.raises(ConfigError, match="627 values"):
        fresh.load_state_dict({"random_state": torch.zeros(5)})


def test_hidden_pcd_needs_bernoulli_units(setup):
    rbm, v_data, field = setup("gaussian-bernoulli")
    with pytest.raises(ConfigError, match="Bernoulli units.*'pcd'"):
        HiddenPersistentCD(random_state=0).negative(rbm, v_data, field)
    with pytest.raises(ConfigError, match="n_chains"):
        HiddenPersistentCD(n_chains=0)


@pytest.mark.parametrize("kwargs", [{"n_chains": 0}, {"n_chains": -3}, {"n_chains": 2.5},
                                    {"init": "zeros"}])
def test_pcd_bad_options(kwargs):
    with pytest.raises(ConfigError):
        PersistentCD(**kwargs)


# --- parallel tempering ---------------------------------------------------------------------
@pytest.mark.parametrize("betas", [
    [1.0],                      # one temperature
    [0.9, 0.5],                 # does not start at 1
    [1.0, 1.0, 0.5],            # not strictly decreasing
    [1.0, 0.3, 0.5],            # increasing
    [1.0, 0.5, -0.1],           # negative
    [],
])
def test_pt_rejects_bad_betas(betas):
    with pytest.raises(ConfigError, match="betas"):
        ParallelTempering(betas=betas)


@pytest.mark.parametrize("kwargs", [{"n_temperatures": 1}, {"beta_min": 0.0},
                                    {"beta_min": 1.0}, {"beta_min": -0.5}])
def test_pt_rejects_bad_ladders(kwargs):
    with pytest.raises(ConfigError):
        ParallelTempering(**kwargs)


def test_geometric_betas():
    b = geometric_betas(5, 0.01)
    assert b.shape == (5,)
    assert float(b[0]) == 1.0
    assert math.isclose(float(b[-1]), 0.01, rel_tol=1e-5)
    ratios = b[1:] / b[:-1]
    torch.testing.assert_close(ratios, torch.full((4,), ratios[0].item()))
    assert ParallelTempering(betas=[1.0, 0.5, 0.0]).betas.tolist() == [1.0, 0.5, 0.0]


@torch.no_grad()
def test_pt_swap_leaves_the_tempered_product_invariant():
    """Chains drawn exactly from p_1 and p_0.3 keep those marginals through a swap step.

    Empirical distributions over 16 states from 20,000 chains each: their total variation
    to the exact one has mean ~0.011 (sum over states of sqrt(p(1-p)/C) * sqrt(2/pi) / 2),
    so 0.03 is ~3x that; a swap that always (or never correctly) accepted would hand
    p_0.3's states to the beta = 1 row, 0.2+ away (asserted below).
    """
    from boltzkit import make_rbm

    rbm = make_rbm(4, 3, seed=0).double()
    rbm.connection.weights.mul_(300.0)  # N(0, 0.01) -> strong couplings
    rbm.visible.bias.copy_(torch.tensor([1.0, -2.0, 0.5, -1.0], dtype=torch.float64))
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    betas = torch.tensor([1.0, 0.3], dtype=torch.float64)
    exact = [torch.softmax(-rbm.free_energy(states, float(b)), 0) for b in betas]
    tv = lambda p, q: 0.5 * float((p - q).abs().sum())  # noqa: E731
    assert tv(exact[0], exact[1]) > 0.2  # the test can tell the two rows apart
    C, g = 20000, torch.Generator().manual_seed(0)
    x = torch.stack([states[torch.multinomial(p, C, replacement=True, generator=g)]
                     for p in exact])
    pt = ParallelTempering(betas=[1.0, 0.3])
    swapped = pt._swap(rbm, x, betas, g)
    assert 0.05 < pt.swap_rates()[0] < 0.95  # swaps did happen, and not all of them
    codes = (swapped * torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=torch.float64)).sum(-1).long()
    for row, p in zip(codes, exact, strict=True):
        empirical = torch.bincount(row, minlength=16).double() / C
        assert tv(empirical, p) < 0.03


def test_pt_shapes_rates_and_stats(setup, make_gen):
    rbm, v, field = setup("bernoulli-bernoulli", batch=4)
    pt = ParallelTempering(k=1, n_temperatures=5, beta_min=0.2, n_chains=11)
    g = make_gen(5)
    with torch.no_grad():
        for _ in range(20):
            out, _ = negative(pt, rbm, v, field, g)
            assert out.shape == (11, 7)
            rbm.visible.validate(out)
    assert pt.chains.shape == (5, 11, 7)
    rates = pt.swap_rates()
    assert len(rates) == 4 and all(0.0 <= r <= 1.0 for r in rates)
    stats = pt.stats()
    assert set(stats) == {"swap_rate_min", "swap_rate_mean"}
    assert math.isclose(stats["swap_rate_min"], min(rates))
    assert math.isclose(stats["swap_rate_mean"], sum(rates) / 4)
    assert 0.0 < stats["swap_rate_min"] <= stats["swap_rate_mean"] <= 1.0
    assert pt.swap_rates() == [0.0] * 4  # reset after reading


def test_pt_always_swaps_when_the_model_is_flat(make_gen):
    """All parameters zero: F(v; beta) does not depend on v, so every swap is accepted."""
    rbm = RBM(BernoulliUnits(7), BernoulliUnits(5)).double()
    with torch.no_grad():
        for p in rbm.parameters():
            p.zero_()
    pt = ParallelTempering(betas=[1.0, 0.7, 0.4, 0.1], n_chains=8)
    v = torch.zeros(3, 7, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(4):
            negative(pt, rbm, v, rbm.hidden_field(v), make_gen(6))
    assert pt.swap_rates() == [1.0, 1.0, 1.0]


def test_pt_state_dict_round_trip_continues_identically(setup, make_gen):
    rbm, v, field = setup("bernoulli-softmax")
    a = ParallelTempering(k=1, betas=[1.0, 0.6, 0.3], n_chains=5)
    g = make_gen(7)
    with torch.no_grad():
        for _ in range(3):  # odd number: the next sweep swaps the other pairs
            negative(a, rbm, v, field, g)
        state = {k: t.clone() for k, t in a.state_dict().items()}
        assert set(state) == {"chains", "parity"}
        b = ParallelTempering(k=1, betas=[1.0, 0.6, 0.3], n_chains=5)
        b.load_state_dict(state)
        g2 = clone_gen(g)
        for _ in range(2):
            assert torch.equal(negative(a, rbm, v, field, g)[0],
                               negative(b, rbm, v, field, g2)[0])
        assert torch.equal(a.chains, b.chains)
    assert ParallelTempering().state_dict() == {}


def _chain_average_estimate(rbm, sampler, chains=64, burn_in=80, iters=320):
    """Mean over chains of each chain's time-average of mean(v): (estimate, its std. error)."""
    g = torch.Generator().manual_seed(11)
    dummy = torch.zeros(chains, rbm.n_visible, dtype=torch.float64)
    total = torch.zeros(chains, dtype=torch.float64)
    with torch.no_grad():
        for i in range(burn_in + iters):
            x = sampler.negative(rbm, dummy, None, g)[0]
            if i >= burn_in:
                total += x.mean(1)
    per_chain = total / iters
    return float(per_chain.mean()), float(per_chain.std() / math.sqrt(chains))


def test_pt_reaches_the_exact_marginal_of_a_bimodal_model(bimodal_rbm):
    rbm = bimodal_rbm()
    states = torch.tensor(list(itertools.product((0.0, 1.0), repeat=10)), dtype=torch.float64)
    with torch.no_grad():
        p = torch.softmax(-rbm.free_energy(states), 0)
    exact = float(p @ states.mean(1))
    assert 0.55 < float(p[states.mean(1) > 0.5].sum()) < 0.8  # two unequal, separated modes
    betas = torch.logspace(0, math.log10(0.05), 6).tolist()
    est, se = _chain_average_estimate(rbm, ParallelTempering(k=1, betas=betas, n_chains=64))
    assert se < 0.02  # chains cross between the modes: chain averages agree
    assert abs(est - exact) < 5 * se, (est, exact, se)
    # control: plain persistent Gibbs with the same budget is stuck in one mode per chain
    _, se_gibbs = _chain_average_estimate(rbm, PersistentCD(k=1, n_chains=64))
    assert se_gibbs > 2 * se


# --- factory --------------------------------------------------------------------------------
def test_make_sampler_builds_each_method():
    cd = make_sampler("cd", k=3)
    assert isinstance(cd, ContrastiveDivergence) and cd.k == 3
    pcd = make_sampler("pcd", k=2, chains=50, chain_init="data")
    assert isinstance(pcd, PersistentCD) and (pcd.k, pcd.n_chains, pcd.init) == (2, 50, "data")
    pt = make_sampler("pt", chains=20, n_temperatures=4, beta_min=0.25)
    assert isinstance(pt, ParallelTempering) and pt.n_chains == 20
    assert pt.betas.numel() == 4 and math.isclose(float(pt.betas[-1]), 0.25, rel_tol=1e-5)
    pt2 = make_sampler("pt", betas=[1.0, 0.5])
    assert pt2.betas.tolist() == [1.0, 0.5]
    assert ContrastiveDivergence().stats() == {} and ContrastiveDivergence().state_dict() == {}


def test_make_sampler_rejects_unknown_methods():
    with pytest.raises(ConfigError, match="cd.*pcd.*pt"):
        make_sampler("gibbs")
