"""Convolutional RBM: ConvConnection, probabilistic max-pooling units, the conv-rbm kind.

Every check compares against an independent brute-force construction: the
Toeplitz matrix of the convolution built pixel by pixel, block states of the
pooled layer enumerated by hand, log Z by enumerating all visible states.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from boltzkit import RBM, BernoulliUnits, GaussianUnits
from boltzkit.connections import ConvConnection, DenseConnection, connection_from_config
from boltzkit.errors import ConfigError, DataError
from boltzkit.io import load_model, save_model
from boltzkit.kinds import KINDS, model_class
from boltzkit.metrics.likelihood import ais_log_z, exact_log_z
from boltzkit.models.conv import ConvRBM, parse_image_shape
from boltzkit.objectives import LikelihoodGradient
from boltzkit.units import PooledBernoulliUnits

torch.set_num_threads(1)
D = torch.float64


def _randomize(module: torch.nn.Module, seed: int, scale: float = 0.5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def toeplitz(conn: ConvConnection) -> torch.Tensor:
    """The (n_visible, n_hidden) matrix of a valid cross-correlation, pixel by pixel."""
    C, H, W = conn.channels, conn.height, conn.width
    K, f = conn.filters, conn.filter_size
    h, w = conn.out_height, conn.out_width
    Wt = conn.weights.detach()
    M = torch.zeros(C * H * W, K * h * w, dtype=Wt.dtype)
    for k, i, j, c, a, b in itertools.product(range(K), range(h), range(w), range(C),
                                              range(f), range(f)):
        M[c * H * W + (i + a) * W + (j + b), k * h * w + i * w + j] = Wt[k, c, a, b]
    return M


def tiny_conv(channels=2, height=5, width=4, filters=3, size=2, seed=0) -> ConvConnection:
    conn = ConvConnection(channels, height, width, filters, size).to(D)
    _randomize(conn, seed)
    return conn


# --------------------------------------------------------------------------- connection
def test_conv_equals_dense_toeplitz():
    conn = tiny_conv()  # 2x5x4 images, 3 filters 2x2 -> maps 4x3 (non-square on purpose)
    M = toeplitz(conn)
    dense = DenseConnection(conn.n_visible, conn.n_hidden).to(D)
    with torch.no_grad():
        dense.weights.copy_(M)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, conn.n_visible, generator=g, dtype=D)
    h = torch.randn(6, conn.n_hidden, generator=g, dtype=D)
    torch.testing.assert_close(conn(x), dense(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(conn.transpose(h), dense.transpose(h), rtol=0, atol=1e-12)
    torch.testing.assert_close(conn.interaction(x, h), dense.interaction(x, h),
                               rtol=0, atol=1e-11)
    torch.testing.assert_close(conn.dense_weights(), M, rtol=0, atol=0)
    # The weight gradient is the dense gradient x^T h folded back onto the shared filters.
    gW = conn.weight_gradient(x, h)
    dense_grad = x.t() @ h
    C, H, Wd, f = conn.channels, conn.height, conn.width, conn.filter_size
    hh, ww = conn.out_height, conn.out_width
    folded = torch.zeros_like(gW)
    for k, i, j, c, a, b in itertools.product(range(conn.filters), range(hh), range(ww),
                                              range(C), range(f), range(f)):
        row, col = c * H * Wd + (i + a) * Wd + j + b, k * hh * ww + i * ww + j
        folded[k, c, a, b] += dense_grad[row, col]
    torch.testing.assert_close(gW, folded, rtol=0, atol=1e-11)
    conn.interaction(x, h).sum().backward()
    torch.testing.assert_close(conn.weights.grad, folded, rtol=0, atol=1e-11)


def test_conv_forward_transpose_adjoint():
    conn = tiny_conv(channels=1, height=7, width=6, filters=2, size=3, seed=3)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, conn.n_visible, generator=g, dtype=D)
    h = torch.randn(4, conn.n_hidden, generator=g, dtype=D)
    lhs = (conn(x) * h).sum(-1)
    rhs = (x * conn.transpose(h)).sum(-1)
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-12)


def test_conv_bad_shapes_are_clear_errors():
    with pytest.raises(ConfigError, match="filter_size 9 is larger"):
        ConvConnection(1, 8, 8, 4, 9)
    with pytest.raises(ConfigError, match="filters must be a positive integer"):
        ConvConnection(1, 8, 8, 0, 3)
    conn = ConvConnection(1, 8, 8, 2, 3)
    with pytest.raises(DataError, match="64 = 1x8x8"):
        conn(torch.zeros(2, 63))
    with pytest.raises(DataError, match="72 = 2x6x6"):
        conn.transpose(torch.zeros(2, 10))
    # pooling block that does not tile the feature maps (8 - 3 + 1 = 6, block 4)
    with pytest.raises(ConfigError, match="multiple of 4"):
        ConvRBM((8, 8), filters=2, filter_size=3, pool=4)
    with pytest.raises(ConfigError, match="image_shape"):
        ConvRBM((8,), filters=2)
    with pytest.raises(ConfigError, match="visible units must be one of"):
        ConvRBM((8, 8), filters=2, filter_size=3, visible="softmax")
    with pytest.raises(DataError, match="not a square image"):
        parse_image_shape("", 30)
    with pytest.raises(DataError, match="has 20 pixels"):
        parse_image_shape("4x5", 30)
    with pytest.raises(ConfigError, match="look like 28x28"):
        parse_image_shape("28by28", 784)
    m = ConvRBM((6, 6), filters=2, filter_size=3, pool=2)
    with pytest.raises(DataError, match="36 columns"):
        m.transform(torch.zeros(3, 35))
    assert connection_from_config(m.connection.config()).config() == m.connection.config()


# --------------------------------------------------------------------------- pooled units
def _brute_block(a: list[float]) -> tuple[list[float], float, float]:
    """Enumerate a block's c^2 + 1 states: (P(unit i on), P(pool on), log partition)."""
    states = [None, *range(len(a))]  # None = all off
    weights = [1.0 if s is None else math.exp(a[s]) for s in states]
    z = sum(weights)
    p_on = [weights[i + 1] / z for i in range(len(a))]
    return p_on, 1.0 - 1.0 / z, math.log(z)


@pytest.mark.parametrize("block", [1, 2, 3])
def test_pooled_conditionals_match_enumeration(block):
    K, h, w = 2, 2 * block, 3 * block  # non-square maps
    u = PooledBernoulliUnits(filters=K, height=h, width=w, block=block).to(D)
    _randomize(u, 4)
    beta = 0.7
    g = torch.Generator().manual_seed(5)
    field = 2.0 * torch.randn(3, u.n, generator=g, dtype=D)
    field[0, 0] = 800.0  # overflow guard: exp(800) must not appear
    with torch.no_grad():
        mean, pool = u.mean(field, beta), u.pool_mean(field, beta)
        lp = u.log_partition(field, beta)
    assert torch.isfinite(mean).all() and torch.isfinite(lp).all()
    bias = u.filter_bias.detach()
    for n in range(3):
        total = 0.0
        for k, bi, bj in itertools.product(range(K), range(h // block), range(w // block)):
            idx = [k * h * w + (bi * block + r) * w + bj * block + s
                   for r in range(block) for s in range(block)]
            a = [beta * float(field[n, i] + bias[k]) for i in idx]
            if max(a) > 700:
                p_on = [1.0 if x == max(a) else 0.0 for x in a]
                p_pool, logz = 1.0, max(a)
            else:
                p_on, p_pool, logz = _brute_block(a)
            total += logz
            torch.testing.assert_close(mean[n, idx], torch.tensor(p_on, dtype=D),
                                       rtol=0, atol=1e-12)
            g_idx = k * (h // block) * (w // block) + bi * (w // block) + bj
            assert abs(float(pool[n, g_idx].detach()) - p_pool) < 1e-12
        assert abs(float(lp[n]) - total) < 1e-9 * max(1.0, abs(total))


def test_pooled_energy_and_bias_are_per_filter():
    u = PooledBernoulliUnits(filters=3, height=2, width=2, block=2).to(D)
    assert [n for n, _ in u.named_parameters()] == ["filter_bias"]
    with torch.no_grad():
        u.filter_bias.copy_(torch.tensor([0.5, -1.0, 2.0], dtype=D))
    x = torch.zeros(1, 12, dtype=D)
    x[0, 1] = 1.0  # filter 0
    x[0, 11] = 1.0  # filter 2
    assert float(u.energy(x).detach()) == pytest.approx(-(0.5 + 2.0), abs=1e-12)
    # log_partition equals log sum over enumerated states of exp(-energy)
    states = torch.cat(list(u.enumerate_states()))
    assert states.shape == (5**3, 12) == (u.n_states, u.n)
    assert len({tuple(s.tolist()) for s in states}) == 125
    u.validate(states, "states")
    with torch.no_grad():
        lz = torch.logsumexp(-u.energy(states), 0)
        assert float(lz) == pytest.approx(float(u.log_partition(torch.zeros(1, 12, dtype=D))),
                                          abs=1e-12)
    cfg = {k: v for k, v in u.config().items() if k != "kind"}
    assert PooledBernoulliUnits(**cfg).config() == u.config()
    with pytest.raises(DataError, match="more than one unit on"):
        u.validate(torch.tensor([[1.0, 1.0] + [0.0] * 10], dtype=D))
    with pytest.raises(ConfigError, match="n=10"):
        PooledBernoulliUnits(10, filters=3, height=2, width=2, block=2)


def test_pooled_sampling_frequencies():
    u = PooledBernoulliUnits(filters=1, height=2, width=2, block=2).to(D)
    field = torch.tensor([[1.0, -0.5, 0.3, 0.0]], dtype=D).expand(40000, -1)
    x = u.sample(field, generator=torch.Generator().manual_seed(6))
    assert bool((x.sum(-1) <= 1).all())
    p = u.mean(field[:1])[0].detach()
    freq = x.mean(0)
    # 4.5 standard errors of a binomial proportion with n = 40000
    tol = 4.5 * torch.sqrt(p * (1 - p) / 40000)
    assert bool(((freq - p).abs() < tol).all()), (freq, p)
    off = 1 - float(p.sum())
    assert abs(float((x.sum(-1) == 0).double().mean()) - off) < 4.5 * math.sqrt(
        off * (1 - off) / 40000)
    torch.testing.assert_close(u.pool_sample(x), x.amax(-1, keepdim=True))


# --------------------------------------------------------------------------- the model
def tiny_model(visible="bernoulli", seed=0) -> ConvRBM:
    m = ConvRBM((4, 4), filters=2, filter_size=3, pool=2, visible=visible,
                visible_std=0.8).to(D)  # 16 visible, 2 maps 2x2 -> 2 pooling blocks
    _randomize(m, seed)
    return m


def test_exact_log_z_equals_brute_force():
    m = tiny_model()
    v = torch.tensor(list(itertools.product((0.0, 1.0), repeat=16)), dtype=D)
    h = torch.cat(list(m.hidden.enumerate_states()))
    assert h.shape == (25, 8)
    # brute force over the joint (v, h): 65536 x 25 energies
    with torch.no_grad():
        joint = -torch.stack([m.energy(v, hh.expand(v.shape[0], -1)) for hh in h], 1)
    brute = float(torch.logsumexp(joint.flatten(), 0))
    assert exact_log_z(m, layer="visible") == pytest.approx(brute, abs=1e-9)
    assert exact_log_z(m, layer="hidden") == pytest.approx(brute, abs=1e-9)
    assert exact_log_z(m) == pytest.approx(brute, abs=1e-9)
    # free energy = -log sum_h exp(-E(v, h))
    torch.testing.assert_close(m.free_energy(v[:50]).detach(),
                               -torch.logsumexp(joint[:50], 1), rtol=0, atol=1e-10)
    # AIS agrees within its own error bars (a generic piece working unchanged)
    r = ais_log_z(m, n_chains=100, n_steps=500, generator=torch.Generator().manual_seed(0))
    assert r.log_z_lower - 0.05 <= brute <= r.log_z_upper + 0.05


def test_gaussian_visible_exact_log_z():
    m = tiny_model("gaussian", seed=1)
    with torch.no_grad():
        m.connection.weights.mul_(0.3)
    # log Z by enumerating h with v integrated out in closed form, against a dense RBM
    # with the brute-force Toeplitz weights and the same pooled hidden layer.
    dense = RBM(GaussianUnits(16, std=0.8), PooledBernoulliUnits(filters=2, height=2, width=2,
                                                                 block=2)).to(D)
    with torch.no_grad():
        dense.connection.weights.copy_(toeplitz(m.connection))
        dense.visible.bias.copy_(m.visible.bias)
        dense.hidden.filter_bias.copy_(m.hidden.filter_bias)
    assert exact_log_z(m) == pytest.approx(exact_log_z(dense), abs=1e-9)
    v = torch.randn(5, 16, dtype=D, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(m.free_energy(v), dense.free_energy(v), rtol=0, atol=1e-10)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("sparsity", [None, (0.1, 0.5)], ids=["plain", "sparse"])
def test_gradient_matches_finite_differences(visible, sparsity):
    m = tiny_model(visible, seed=2)
    g = torch.Generator().manual_seed(8)
    if visible == "bernoulli":
        v_data = (torch.rand(7, 16, generator=g, dtype=D) < 0.5).to(D)
        v_model = (torch.rand(5, 16, generator=g, dtype=D) < 0.5).to(D)
    else:
        v_data = torch.randn(7, 16, generator=g, dtype=D)
        v_model = torch.randn(5, 16, generator=g, dtype=D)
    opts = {} if sparsity is None else {"sparsity_target": sparsity[0],
                                        "sparsity_cost": sparsity[1]}
    LikelihoodGradient(**opts).compute(m, v_data, v_model)
    target = None if sparsity is None else sparsity[0]
    cost = 0.0 if sparsity is None else sparsity[1]

    def objective() -> float:
        with torch.no_grad():
            val = float(m.free_energy(v_data).mean() - m.free_energy(v_model).mean())
            if cost:
                # lambda * sum_j cross-entropy(p, q_j), q_j = mean activation of unit j
                q = m.hidden.mean(m.hidden_field(v_data)).mean(0)
                val += cost * float(-(target * torch.log(q)
                                      + (1 - target) * torch.log1p(-q)).sum())
            return val

    eps = 1e-6
    for name, p in m.named_parameters():
        flat = p.data.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 5)):
            old = float(flat[i])
            flat[i] = old + eps
            up = objective()
            flat[i] = old - eps
            down = objective()
            flat[i] = old
            num = (up - down) / (2 * eps)
            got = float(p.grad.view(-1)[i])
            if cost and name != "visible.bias":
                # The sparsity term is Lee et al.'s surrogate (q - p) times the unit's
                # input gradient, not the exact cross-entropy gradient: compare only the
                # likelihood part, checked separately below, and the sign of the total.
                continue
            assert got == pytest.approx(num, rel=1e-5, abs=1e-7), (name, i)
    if cost:
        # The per-filter bias gradient is the likelihood part plus cost * sum over that
        # filter's positions of (q - p): rebuild it from the plain gradient.
        plain = tiny_model(visible, seed=2)
        LikelihoodGradient().compute(plain, v_data, v_model)
        with torch.no_grad():
            q = m.hidden.mean(m.hidden_field(v_data)).mean(0)
        extra = cost * (q - target).view(2, -1).sum(1)
        torch.testing.assert_close(m.hidden.filter_bias.grad,
                                   plain.hidden.filter_bias.grad + extra, rtol=0, atol=1e-12)


def test_save_load_roundtrip(tmp_path):
    m = tiny_model("gaussian", seed=5)
    m.input_mean, m.input_std = 0.13, 0.31
    path = save_model(m, tmp_path / "conv.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert sorted(f.keys()) == ["hidden_filter_bias", "visible_bias", "visible_log_var",
                                    "weights"]
        assert f.get_tensor("weights").shape == (2, 1, 3, 3)
    back = load_model(path)
    assert isinstance(back, ConvRBM) and back.config() == m.config()
    v = torch.randn(4, 16, dtype=D)
    torch.testing.assert_close(back.to(D).free_energy(v), m.free_energy(v), rtol=0, atol=1e-6)
    assert "conv-rbm" in KINDS and model_class("conv-rbm") is ConvRBM
    with pytest.raises(ConfigError, match="not a conv-rbm"):
        ConvRBM.from_config({**m.config(), "model": "rbm"})


def test_gibbs_and_features_shapes():
    m = ConvRBM((8, 8), filters=3, filter_size=3, pool=3).to(D)  # maps 6x6 -> 2x2 pooled
    g = torch.Generator().manual_seed(0)
    v = (torch.rand(5, 64, generator=g, dtype=D) < 0.5).to(D)
    out = m.gibbs(v, steps=3, generator=g)
    assert out.shape == v.shape and bool(((out == 0) | (out == 1)).all())
    feats = m.pooled_features(v)
    assert feats.shape == (5, 3 * 2 * 2)
    assert bool(((feats > 0) & (feats < 1)).all())
    assert m.filter_images().shape == (9, 3)


def test_train_from_config_tiny(tmp_path):
    import json

    import numpy as np

    from boltzkit.cli import main
    from boltzkit.io import load_model

    g = torch.Generator().manual_seed(0)
    data = tmp_path / "bits.npy"
    np.save(data, (torch.rand(60, 64, generator=g) < 0.3).float().numpy())
    out = tmp_path / "conv.safetensors"
    common = ["train", "--model", "conv-rbm", "--epochs", "2", "--batch-size", "20",
              "--conv-filters", "3", "--conv-filter-size", "3", "--conv-pool", "2",
              "--method", "cd", "--out", str(out), "--quiet"]
    assert main([*common, "--dataset", str(data), "--lr", "0.01", "--sparsity-target", "0.1",
                 "--sparsity-cost", "0.1"]) == 0
    model, history = load_model(out), json.loads(out.with_suffix(".history.json").read_text())
    assert isinstance(model, ConvRBM) and len(history) == 2
    assert all(math.isfinite(r["free_energy_train"]) for r in history)
    assert isinstance(model.visible, BernoulliUnits)
    # Gaussian visibles: standardised globally, no NaNs
    grey = torch.rand(60, 64, generator=g)
    np.save(data, grey.numpy())
    assert main([*common, "--dataset", str(data), "--visible", "gaussian", "--lr",
                 "0.001"]) == 0
    model_g, hist_g = load_model(out), json.loads(out.with_suffix(".history.json").read_text())
    assert model_g.visible_kind == "gaussian" and model_g.parameters_finite()
    assert model_g.input_mean == pytest.approx(float(grey.mean()), abs=1e-6)
    assert all(math.isfinite(r["free_energy_train"]) for r in hist_g)


def test_filter_sparsity_acts_on_biases_only():
    from boltzkit.models.conv import FilterSparsityGradient, make_objective

    g = torch.Generator().manual_seed(9)
    v_data = (torch.rand(6, 16, generator=g, dtype=D) < 0.5).to(D)
    v_model = (torch.rand(6, 16, generator=g, dtype=D) < 0.5).to(D)
    plain, sparse = tiny_model(seed=3), tiny_model(seed=3)
    LikelihoodGradient().compute(plain, v_data, v_model)
    obj = make_objective(0.05, 0.4, "bias")
    assert isinstance(obj, FilterSparsityGradient)
    obj.compute(sparse, v_data, v_model)
    assert obj.sparsity_cost == 0.4  # restored after the call
    torch.testing.assert_close(sparse.connection.weights.grad, plain.connection.weights.grad)
    torch.testing.assert_close(sparse.visible.bias.grad, plain.visible.bias.grad)
    with torch.no_grad():
        q = sparse.hidden.mean(sparse.hidden_field(v_data)).mean(0).view(2, -1)
    torch.testing.assert_close(sparse.hidden.filter_bias.grad,
                               plain.hidden.filter_bias.grad + 0.4 * (q - 0.05).sum(1))
    with pytest.raises(ConfigError, match="'bias' or 'all'"):
        make_objective(0.05, 0.4, "weights")


def test_cli_train_conv_rbm(tmp_path):
    import numpy as np

    from boltzkit.cli import main

    g = np.random.default_rng(0)
    path = tmp_path / "imgs.npy"
    np.save(path, (g.random((40, 64)) < 0.3).astype(np.float32))
    out = tmp_path / "conv.safetensors"
    rc = main(["train", "--model", "conv-rbm", "--dataset", str(path), "--epochs", "1",
               "--batch-size", "20", "--lr", "0.01", "--conv-filters", "2",
               "--conv-filter-size", "3", "--conv-pool", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    model = load_model(out)
    assert isinstance(model, ConvRBM) and model.config()["filters"] == 2
    assert model.connection.weights.shape == (2, 1, 3, 3)
