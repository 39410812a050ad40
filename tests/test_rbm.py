"""The RBM against brute force on its own energy function.

For a discrete layer the brute force sums exp(-E(v, h)) over every state; for a
continuous layer it integrates (Simpson's rule on a fine grid) one unit at a
time, which is exact because the units of a layer are conditionally
independent and every unit type has E0(0) = c(0) = 0, so

    log ∫ exp(-E(v, h)) dh = -E(v, 0) + sum_j log ∫ exp(-(E(v, x e_j) - E(v, 0))) dx.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from boltzkit import (
    RBM,
    BernoulliUnits,
    ConfigError,
    DataError,
    DenseConnection,
    GaussianUnits,
    ReLUUnits,
    SigmoidUnits,
    make_rbm,
)

MODEL_KINDS = [
    "bernoulli-bernoulli", "bernoulli-softmax", "softmax-bernoulli", "gaussian-bernoulli",
    "gaussian_learned-bernoulli", "bernoulli-relu", "sigmoid-bernoulli", "bernoulli-gaussian",
]
BETAS = [1.0, 0.6, "tensor"]
B = 5


def beta_value(beta, rows=B):
    if beta == "tensor":
        return torch.linspace(1.0, 0.2, rows, dtype=torch.float64)[:, None]
    return beta


def _grid(units):
    """Simpson nodes and weights covering the support of one unit (all our fields are O(1))."""
    if isinstance(units, GaussianUnits):
        lo, hi, n = -25.0, 25.0, 10001
    elif isinstance(units, ReLUUnits):
        lo, hi, n = 0.0, 30.0, 6001
    elif isinstance(units, SigmoidUnits):
        lo, hi, n = 0.0, 1.0, 2001
    else:
        raise TypeError(type(units))
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    w = torch.ones(n, dtype=torch.float64)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return x, w * (hi - lo) / (n - 1) / 3.0


def brute(rbm, other, layer, beta, all_states):
    """log ∫ exp(-E) over ``layer`` given the other layer's states, and E[layer | other].

    Returns (log_z (rows,), mean (rows, n_layer)); uses only ``rbm.energy``.
    """
    units = rbm.hidden if layer == "hidden" else rbm.visible
    rows = other.shape[0]

    def energy(x):  # x: (rows, K, n) states of `layer` -> (rows, K)
        K = x.shape[1]
        o = other[:, None, :].expand(rows, K, other.shape[1]).reshape(rows * K, -1)
        xx = x.reshape(rows * K, units.n)
        b = beta.repeat_interleave(K, 0) if isinstance(beta, torch.Tensor) else beta
        e = rbm.energy(o, xx, b) if layer == "hidden" else rbm.energy(xx, o, b)
        return e.reshape(rows, K)

    with torch.no_grad():
        if units.discrete:
            states = all_states(units)
            e = energy(states.expand(rows, *states.shape))
            return torch.logsumexp(-e, 1), torch.softmax(-e, 1) @ states
        nodes, weights = _grid(units)
        e0 = energy(torch.zeros(rows, 1, units.n, dtype=torch.float64))  # (rows, 1)
        log_z = -e0[:, 0].clone()
        means = []
        for j in range(units.n):
            x = torch.zeros(rows, len(nodes), units.n, dtype=torch.float64)
            x[:, :, j] = nodes
            log_f = -(energy(x) - e0)
            top = log_f.max(1, keepdim=True).values
            f = torch.exp(log_f - top)
            z = f @ weights
            log_z += torch.log(z) + top[:, 0]
            means.append((f * nodes) @ weights / z)
        return log_z, torch.stack(means, 1)


# --- free energies and conditionals --------------------------------------------------
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_free_energy_matches_brute_force_over_hidden(kind, beta, tiny_rbm, random_states,
                                                      all_states):
    rbm = tiny_rbm(kind, seed=1)
    v = random_states(rbm.visible, B, seed=2)
    b = beta_value(beta)
    log_z, _ = brute(rbm, v, "hidden", b, all_states)
    with torch.no_grad():
        f = rbm.free_energy(v, b)
    assert f.shape == (B,)
    torch.testing.assert_close(f, -log_z, rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_free_energy_hidden_matches_brute_force_over_visible(kind, beta, tiny_rbm,
                                                              random_states, all_states):
    rbm = tiny_rbm(kind, seed=3)
    h = random_states(rbm.hidden, B, seed=4)
    b = beta_value(beta)
    log_z, _ = brute(rbm, h, "visible", b, all_states)
    with torch.no_grad():
        f = rbm.free_energy_hidden(h, b)
    assert f.shape == (B,)
    torch.testing.assert_close(f, -log_z, rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("beta", [1.0, "tensor"])
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_hidden_mean_is_the_conditional_mean_implied_by_energy(kind, beta, tiny_rbm,
                                                               random_states, all_states):
    rbm = tiny_rbm(kind, seed=5)
    v = random_states(rbm.visible, B, seed=6)
    b = beta_value(beta)
    _, mean = brute(rbm, v, "hidden", b, all_states)
    with torch.no_grad():
        torch.testing.assert_close(rbm.hidden_mean(v, b), mean, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("beta", [1.0, "tensor"])
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_visible_mean_is_the_conditional_mean_implied_by_energy(kind, beta, tiny_rbm,
                                                                random_states, all_states):
    rbm = tiny_rbm(kind, seed=7)
    h = random_states(rbm.hidden, B, seed=8)
    b = beta_value(beta)
    _, mean = brute(rbm, h, "visible", b, all_states)
    with torch.no_grad():
        torch.testing.assert_close(rbm.visible_mean(h, b), mean, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_energy_is_the_sum_of_layer_energies_and_interaction(kind, tiny_rbm, random_states):
    rbm = tiny_rbm(kind, seed=9)
    v = random_states(rbm.visible, B, seed=1)
    h = random_states(rbm.hidden, B, seed=2)
    beta = beta_value("tensor")
    with torch.no_grad():
        cv, ch = rbm.visible.coupling(v), rbm.hidden.coupling(h)
        inter = torch.einsum("bi,ij,bj->b", cv, rbm.connection.weights, ch)
        expected = (rbm.visible.energy(v, beta) + rbm.hidden.energy(h, beta)
                    - beta[:, 0] * inter)
        torch.testing.assert_close(rbm.energy(v, h, beta), expected)
        # a per-row beta gives exactly the row-wise scalar results
        for r in range(B):
            b = float(beta[r])
            torch.testing.assert_close(rbm.energy(v[r:r + 1], h[r:r + 1], b),
                                       rbm.energy(v, h, beta)[r:r + 1])
            torch.testing.assert_close(rbm.free_energy(v[r:r + 1], b),
                                       rbm.free_energy(v, beta)[r:r + 1])
            torch.testing.assert_close(rbm.free_energy_hidden(h[r:r + 1], b),
                                       rbm.free_energy_hidden(h, beta)[r:r + 1])


def test_visible_marginal_from_free_energy_is_the_joint_marginal(tiny_rbm, all_states):
    """exp(-F(v)) / Z_F equals sum_h exp(-E(v, h)) / Z over the full joint (enumeration)."""
    rbm = tiny_rbm("bernoulli-softmax", seed=11, scale=1.0)
    vs, hs = all_states(rbm.visible), all_states(rbm.hidden)
    with torch.no_grad():
        e = rbm.energy(vs.repeat_interleave(len(hs), 0), hs.repeat(len(vs), 1))
        joint = torch.softmax(-e, 0).reshape(len(vs), len(hs))
        torch.testing.assert_close(torch.softmax(-rbm.free_energy(vs), 0), joint.sum(1))
        torch.testing.assert_close(torch.softmax(-rbm.free_energy_hidden(hs), 0), joint.sum(0))


# --- sampling ------------------------------------------------------------------------
def _exact_visible_mean(rbm, all_states, beta=1.0):
    vs = all_states(rbm.visible)
    with torch.no_grad():
        p = torch.softmax(-rbm.free_energy(vs, beta), 0)
    return p @ vs


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_sample_reaches_the_exact_marginal(beta, tiny_rbm, all_states, make_gen):
    rbm = tiny_rbm("bernoulli-bernoulli", seed=12, scale=0.6)
    n = 4000
    x = rbm.sample(n, steps=20, beta=beta, generator=make_gen(1), return_mean=False)
    assert x.shape == (n, 7)
    rbm.visible.validate(x)
    se = x.std(0) / math.sqrt(n)
    exact = _exact_visible_mean(rbm, all_states, beta)
    assert ((x.mean(0) - exact).abs() <= 5 * se).all(), (x.mean(0), exact)


def test_clamped_sampling_keeps_values_and_samples_the_conditional(tiny_rbm, all_states,
                                                                   make_gen):
    rbm = tiny_rbm("bernoulli-bernoulli", seed=13, scale=0.8)
    mask = torch.tensor([True, False, True, False, False, True, False])
    values = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    n = 4000
    x = rbm.sample(n, steps=15, generator=make_gen(2), clamp_mask=mask,
                   clamp_values=values, return_mean=False)
    assert torch.equal(x[:, mask], values[mask].expand(n, 3))
    # exact conditional of the free units given the clamped ones
    vs = all_states(rbm.visible)
    keep = (vs[:, mask] == values[mask]).all(1)
    vs = vs[keep]
    with torch.no_grad():
        exact = torch.softmax(-rbm.free_energy(vs), 0) @ vs
    se = x.std(0) / math.sqrt(n)
    assert ((x.mean(0) - exact).abs() <= 5 * se + 1e-12).all(), (x.mean(0), exact)


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("return_mean", [True, False])
@pytest.mark.parametrize("steps", [0, 1, 4])
def test_sample_with_clamp_mask_keeps_clamped_values(kind, return_mean, steps, tiny_rbm,
                                                     random_states, make_gen):
    rbm = tiny_rbm(kind, seed=14)
    n, nv = 6, rbm.n_visible
    values = random_states(rbm.visible, n, seed=3)
    row_mask = torch.zeros(n, nv, dtype=torch.bool)
    row_mask[::2, : nv // 2] = True  # a per-row mask
    col_mask = torch.zeros(nv, dtype=torch.bool)
    col_mask[-3:] = True  # a per-column mask
    for mask in (row_mask, col_mask):
        x = rbm.sample(n, steps=steps, generator=make_gen(4), clamp_mask=mask,
                       clamp_values=values, return_mean=return_mean)
        assert x.shape == (n, nv)
        full = mask.expand(n, nv)
        assert torch.equal(x[full], values[full])
        if not return_mean:
            rbm.visible.validate(x)


def test_sample_arguments_are_checked(tiny_rbm):
    rbm = tiny_rbm("bernoulli-bernoulli")
    with pytest.raises(ConfigError):
        rbm.sample(3, steps=-1)
    with pytest.raises(DataError, match="init"):
        rbm.sample(3, steps=1, init=torch.zeros(4, 7))
    with pytest.raises(ConfigError, match="clamp_values"):
        rbm.sample(3, steps=1, clamp_mask=torch.ones(7, dtype=torch.bool))


def test_sample_from_init_with_zero_steps_returns_init(tiny_rbm, random_states):
    rbm = tiny_rbm("gaussian-bernoulli")
    init = random_states(rbm.visible, 4, seed=5)
    assert torch.equal(rbm.sample(4, steps=0, init=init), init)


def test_sampling_is_reproducible_and_independent_of_the_global_seed(tiny_rbm, make_gen):
    rbm = tiny_rbm("sigmoid-bernoulli")
    torch.manual_seed(1)
    a = rbm.sample(10, steps=3, generator=make_gen(7), return_mean=False)
    torch.manual_seed(2)
    b = rbm.sample(10, steps=3, generator=make_gen(7), return_mean=False)
    assert torch.equal(a, b)
    c = rbm.sample(10, steps=3, generator=make_gen(8), return_mean=False)
    assert not torch.equal(a, c)


def test_gibbs_with_per_chain_beta(tiny_rbm, make_gen):
    """A (chains, 1) beta runs each chain at its own temperature; beta = 0 ignores the model."""
    rbm = tiny_rbm("bernoulli-bernoulli", seed=15, scale=3.0)
    n = 3000
    v0 = torch.zeros(2 * n, 7, dtype=torch.float64)
    beta = torch.cat([torch.zeros(n, 1), torch.ones(n, 1)]).double()
    v = rbm.gibbs(v0, steps=3, beta=beta, generator=make_gen(3))
    cold = v[:n].mean(0)
    assert ((cold - 0.5).abs() < 5 * 0.5 / math.sqrt(n)).all()  # uniform at beta = 0
    assert not ((v[n:].mean(0) - 0.5).abs() < 5 * 0.5 / math.sqrt(n)).all()


# --- transform / reconstruct / prepare -----------------------------------------------
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_transform_and_reconstruct_shapes_and_batching(kind, tiny_rbm, random_states):
    rbm = tiny_rbm(kind, seed=16)
    v = random_states(rbm.visible, 23, seed=9)
    t = rbm.transform(v)
    r = rbm.reconstruct(v)
    assert t.shape == (23, rbm.n_hidden) and r.shape == (23, rbm.n_visible)
    with torch.no_grad():
        torch.testing.assert_close(t, rbm.hidden_mean(v), rtol=0, atol=0)
        torch.testing.assert_close(r, rbm.visible_mean(rbm.hidden_mean(v)), rtol=0, atol=0)
    for bs in (1, 4, 22, 23, 1000):
        # the same numbers up to GEMM blocking (MKL may round the last bit differently)
        torch.testing.assert_close(rbm.transform(v, batch_size=bs), t, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(rbm.reconstruct(v, batch_size=bs), r, rtol=1e-14,
                                   atol=1e-15)
    assert not t.requires_grad and not r.requires_grad


def test_transform_accepts_numpy_and_converts_dtype(tiny_rbm):
    rbm = tiny_rbm("bernoulli-bernoulli")
    v = np.random.default_rng(0).integers(0, 2, size=(5, 7)).astype(np.float32)
    t = rbm.transform(v)
    assert t.dtype == torch.float64 and t.shape == (5, 5)


@pytest.mark.parametrize("bad", [
    torch.zeros(3, 6),                       # wrong width
    torch.zeros(7),                          # 1-D
    torch.zeros(0, 7),                       # empty
    torch.full((2, 7), math.nan),            # NaN
    torch.full((2, 7), 0.5),                 # not binary
])
def test_prepare_rejects_bad_data(bad, tiny_rbm):
    rbm = tiny_rbm("bernoulli-bernoulli")
    with pytest.raises(DataError):
        rbm.prepare(bad)
    with pytest.raises(DataError):
        rbm.transform(bad)
    with pytest.raises(DataError):
        rbm.reconstruct(bad)


def test_prepare_without_check_only_converts(tiny_rbm):
    rbm = tiny_rbm("bernoulli-bernoulli")
    out = rbm.prepare(torch.full((2, 7), 0.5, dtype=torch.float32), check=False)
    assert out.dtype == torch.float64


def test_prepare_names_the_data_in_errors(tiny_rbm):
    rbm = tiny_rbm("sigmoid-bernoulli")
    with pytest.raises(DataError, match="validation data"):
        rbm.prepare(torch.full((2, 7), 2.0), name="validation data")


# --- construction ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_config_round_trip(kind, tiny_rbm):
    rbm = tiny_rbm(kind)
    rebuilt = RBM.from_config(rbm.config())
    assert rebuilt.config() == rbm.config()
    assert type(rebuilt.visible) is type(rbm.visible) and type(rebuilt.hidden) is type(rbm.hidden)
    assert (rebuilt.n_visible, rebuilt.n_hidden) == (rbm.n_visible, rbm.n_hidden)
    assert rebuilt.connection.weights.shape == (rbm.n_visible, rbm.n_hidden)


def test_from_config_rejects_other_models():
    cfg = make_rbm(3, 2).config()
    cfg["model"] = "dbm"
    with pytest.raises(ConfigError):
        RBM.from_config(cfg)


def test_mismatched_connection_is_rejected():
    with pytest.raises(ConfigError, match="3x2"):
        RBM(BernoulliUnits(3), BernoulliUnits(4), DenseConnection(3, 2))
    with pytest.raises(ConfigError):
        DenseConnection(0, 2)


def test_make_rbm_is_seeded_independently_of_the_global_rng():
    torch.manual_seed(0)
    a = make_rbm(7, 5, seed=3)
    torch.manual_seed(1)
    b = make_rbm(7, 5, seed=3)
    assert torch.equal(a.connection.weights, b.connection.weights)
    assert not torch.equal(a.connection.weights, make_rbm(7, 5, seed=4).connection.weights)
    assert a.connection.weights.shape == (7, 5)
    assert a.connection.weights.dtype == torch.float32
    assert 0.001 < float(a.connection.weights.detach().std()) < 0.1  # small random init
    assert torch.equal(a.visible.bias, torch.zeros(7)) and torch.equal(a.hidden.bias,
                                                                        torch.zeros(5))


def test_make_rbm_builds_the_named_unit_types():
    rbm = make_rbm(6, 4, visible="softmax", hidden="relu", visible_options={"group_size": 3})
    assert rbm.visible.kind == "softmax" and rbm.hidden.kind == "relu"
    with pytest.raises(ConfigError):
        make_rbm(6, 4, visible="magic")


def test_init_visible_bias_uses_the_units_fit(tiny_rbm, random_states):
    rbm = tiny_rbm("bernoulli-bernoulli")
    data = random_states(rbm.visible, 40, seed=1)
    rbm.init_visible_bias(data)
    torch.testing.assert_close(rbm.visible.bias.detach(), rbm.visible.fit_bias(data).double())


def test_parameters_finite(tiny_rbm):
    rbm = tiny_rbm("gaussian_learned-bernoulli")
    assert rbm.parameters_finite()
    with torch.no_grad():
        rbm.visible.log_var[2] = math.inf
    assert not rbm.parameters_finite()


def test_device_and_dtype(tiny_rbm):
    rbm = tiny_rbm("bernoulli-bernoulli")
    assert rbm.dtype == torch.float64 and rbm.device == torch.device("cpu")


# --- the fused Bernoulli conditionals ------------------------------------------------------
def _bernoulli_rbm_and_states(seed=0):
    gen = torch.Generator().manual_seed(seed)
    rbm = make_rbm(30, 20, seed=seed)
    with torch.no_grad():
        rbm.visible.bias.normal_(0.0, 1.0, generator=gen)
        rbm.hidden.bias.normal_(0.0, 1.0, generator=gen)
        rbm.connection.weights.normal_(0.0, 0.5, generator=gen)
    v = (torch.rand(64, 30, generator=gen) < 0.5).float()
    h = (torch.rand(64, 20, generator=gen) < 0.5).float()
    return rbm, v, h


@pytest.mark.parametrize("beta", [1.0, 0.6])
def test_fused_bernoulli_conditionals_match_the_generic_route(beta):
    """One addmm (bias fused into the GEMM) + sigmoid in place == field, bias, sigmoid."""
    rbm, v, h = _bernoulli_rbm_and_states()
    assert rbm.fused_activation(v, True, beta) is not None
    torch.testing.assert_close(rbm.hidden_mean(v, beta),
                               rbm.hidden.mean(rbm.hidden_field(v), beta))
    torch.testing.assert_close(rbm.visible_mean(h, beta),
                               rbm.visible.mean(rbm.visible_field(h), beta))
    a = rbm.sample_hidden(v, beta, torch.Generator().manual_seed(1))
    b = rbm.hidden.sample(rbm.hidden_field(v), beta, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    a = rbm.sample_visible(h, beta, torch.Generator().manual_seed(2))
    b = rbm.visible.sample(rbm.visible_field(h), beta, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    out = torch.empty(64, 21)[:, :20]  # a strided preallocated result
    with torch.no_grad():  # out= is not differentiable
        res = rbm.fused_activation(v, True, 1.0, out=out)
    assert res.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, rbm.hidden.activation(rbm.hidden_field(v)))


def test_fusion_steps_aside_for_overrides_tensor_betas_and_other_couplings():
    rbm, v, h = _bernoulli_rbm_and_states(1)

    class Shifted(RBM):
        def hidden_field(self, v):
            return super().hidden_field(v) + 1.0

    shifted = Shifted(rbm.visible, rbm.hidden, rbm.connection)
    assert shifted.fused_activation(v) is None
    torch.testing.assert_close(shifted.hidden_mean(v),
                               torch.sigmoid(v @ rbm.connection.weights + 1.0 + rbm.hidden.bias))
    assert shifted.fused_activation(h, to_hidden=False) is not None  # visible side untouched
    assert rbm.fused_activation(v, True, torch.full((64, 1), 0.5)) is None
    gauss = RBM(GaussianUnits(30, std=0.5), BernoulliUnits(20))
    assert gauss.fused_activation(v) is None  # coupling v / sigma^2 is not the identity
    assert gauss.fused_activation(h, to_hidden=False) is not None
