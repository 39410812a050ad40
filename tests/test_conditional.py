"""Conditional RBM (boltzkit.models.conditional): math by brute force, training, files, errors.

Tiny float64 models (2-3 visible, 3-4 hidden, order 2) are enumerated exactly; training runs
on a small synthetic vector autoregression, so the file runs in seconds on one core.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from boltzkit import BernoulliUnits, GaussianUnits
from boltzkit.errors import ConfigError, DataError
from boltzkit.io import load_model, model_tensors, save_model
from boltzkit.models.conditional import (
    ConditionalRBM,
    chronological_split,
    linear_ar_fit,
    linear_ar_predict,
)

torch.set_num_threads(1)


def _tiny(visible: str, seed: int = 0, n_vis: int = 3, n_hid: int = 4,
          order: int = 2) -> ConditionalRBM:
    vis = BernoulliUnits(n_vis) if visible == "bernoulli" else GaussianUnits(n_vis, std=0.8)
    m = ConditionalRBM(vis, BernoulliUnits(n_hid), order).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return m


def _binary(n: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=gen, dtype=torch.float64) < 0.5).double()


def _states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=torch.float64)


def _history(m: ConditionalRBM, n: int, seed: int) -> torch.Tensor:
    if m.visible.kind == "bernoulli":
        return _binary(n, m.order * m.n_visible, seed)
    return torch.randn(n, m.order * m.n_visible, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


# --- conditionals against the conditional energy, by brute force --------------------
@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_hidden_conditional_and_free_energy_match_energy(visible):
    m = _tiny(visible)
    u = _history(m, 5, 1)
    v = _binary(5, 3, 2) if visible == "bernoulli" else torch.randn(
        5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    H = _states(m.n_hidden)  # (16, 4)
    # E(v, h | u) for every h, row by row: (batch, 16)
    e = torch.stack([m.energy(v, H[j].expand(5, -1), u) for j in range(H.shape[0])], dim=1)
    p_h = torch.softmax(-e, dim=1)
    assert torch.allclose(m.hidden_mean(v, u), p_h @ H, atol=1e-12)
    assert torch.allclose(m.free_energy(v, u), -torch.logsumexp(-e, dim=1), atol=1e-10)
    # with no history influence the CRBM is exactly its RBM
    with torch.no_grad():
        m.visible_history.weights.zero_()
        m.hidden_history.weights.zero_()
    assert torch.allclose(m.free_energy(v, u), m.rbm.free_energy(v), atol=1e-12)


def test_bernoulli_visible_conditional_matches_energy():
    m = _tiny("bernoulli")
    u = _history(m, 4, 3)
    h = _binary(4, m.n_hidden, 4)
    V = _states(3)
    e = torch.stack([m.energy(V[j].expand(4, -1), h, u) for j in range(V.shape[0])], dim=1)
    p_v = torch.softmax(-e, dim=1)
    assert torch.allclose(m.visible_mean(h, u), p_v @ V, atol=1e-12)


def test_gaussian_visible_conditional_matches_energy():
    # -E(v, h | u) is quadratic in v; its differences must equal those of the log density
    # of N(visible_mean, sigma^2), for any two v.
    m = _tiny("gaussian")
    u = _history(m, 6, 5)
    h = _binary(6, m.n_hidden, 6)
    gen = torch.Generator().manual_seed(7)
    v1, v2 = (torch.randn(6, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    mu, var = m.visible_mean(h, u), m.visible.variance()

    def log_n(v):
        return (-0.5 * (v - mu) ** 2 / var).sum(-1)

    lhs = -m.energy(v1, h, u) + m.energy(v2, h, u)
    assert torch.allclose(lhs, log_n(v1) - log_n(v2), atol=1e-10)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_exact_log_partition_by_both_routes(visible):
    m = _tiny(visible)
    u = _history(m, 3, 8)
    log_z = m.log_partition(u).detach()  # enumerates the hidden layer
    if visible == "bernoulli":
        V = _states(3)
        f = torch.stack([m.free_energy(V[j].expand(3, -1), u) for j in range(8)], dim=1)
        assert torch.allclose(log_z, torch.logsumexp(-f, dim=1), atol=1e-10)
    else:
        # 3-D Gaussian integral by quadrature on a grid for one history row.
        # spacing 0.2 against sigma 0.8: the Riemann sum of a Gaussian is exact to ~e^-300
        g = torch.linspace(-9, 9, 91, dtype=torch.float64)
        grid = torch.cartesian_prod(g, g, g)
        with torch.no_grad():
            f = m.free_energy(grid, u[:1].expand(grid.shape[0], -1))
        approx = torch.logsumexp(-f, 0) + 3 * math.log(float(g[1] - g[0]))
        assert abs(float(approx - log_z[0])) < 1e-6


# --- gradients -------------------------------------------------------------------------
def test_exact_conditional_nll_gradient_matches_finite_differences():
    m = _tiny("bernoulli", seed=3)
    u, v = _history(m, 6, 9), _binary(6, 3, 10)
    V = _states(3)
    params = list(m.parameters())
    # Analytic: mean F(v|u) - mean_rows E_{p(v'|u)} F(v'|u), expectation by enumeration.
    with torch.no_grad():
        f_all = torch.stack([m.free_energy(V[j].expand(6, -1), u) for j in range(8)], dim=1)
        w = torch.softmax(-f_all, dim=1)
    f_all = torch.stack([m.free_energy(V[j].expand(6, -1), u) for j in range(8)], dim=1)
    surrogate = m.free_energy(v, u).mean() - (w * f_all).sum(1).mean()
    grads = torch.autograd.grad(surrogate, params)

    def nll() -> float:
        with torch.no_grad():
            return float(-m.conditional_log_likelihood(v, u).mean())

    eps = 1e-6
    for p, g in zip(params, grads, strict=True):
        flat, gflat = p.data.view(-1), g.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 5)):
            old = float(flat[i])
            flat[i] = old + eps
            up = nll()
            flat[i] = old - eps
            down = nll()
            flat[i] = old
            assert abs((up - down) / (2 * eps) - float(gflat[i])) < 1e-6


def test_long_chain_cd_gradient_matches_exact_gradient():
    # CD-k with k large is (nearly) the exact gradient: its Monte Carlo error is bounded by
    # the per-sample spread of dF/dtheta over sqrt(#samples); check within 5 standard errors.
    m = _tiny("bernoulli", seed=4)
    rows, reps = 3, 4000
    u, v = _history(m, rows, 11), _binary(rows, 3, 12)
    V = _states(3)
    params = list(m.parameters())
    with torch.no_grad():
        w = torch.softmax(-torch.stack([m.free_energy(V[j].expand(rows, -1), u)
                                        for j in range(8)], dim=1), dim=1)
    f_all = torch.stack([m.free_energy(V[j].expand(rows, -1), u) for j in range(8)], dim=1)
    exact = torch.autograd.grad(m.free_energy(v, u).mean() - (w * f_all).sum(1).mean(), params)
    ur, vr = u.repeat(reps, 1), v.repeat(reps, 1)
    v_neg = m.gibbs(vr, ur, steps=30, generator=torch.Generator().manual_seed(13))
    f_neg = m.free_energy(v_neg, ur)
    cd = torch.autograd.grad(m.free_energy(vr, ur).mean() - f_neg.mean(), params)
    # standard error of the negative-phase mean, per parameter, from per-sample gradients
    per = torch.autograd.functional.jacobian(
        lambda *ps: _free_energy_with(m, ps, v_neg[:1500], ur[:1500]), tuple(params))
    for g_cd, g_ex, jac in zip(cd, exact, per, strict=True):
        se = jac.reshape(jac.shape[0], -1).std(0) / math.sqrt(ur.shape[0])
        err = (g_cd - g_ex).reshape(-1).abs()
        assert bool((err <= 5 * se + 1e-9).all()), (err.max(), se.max())


def _free_energy_with(m, ps, v, u):
    """F(v | u) per row with the parameters replaced by ``ps`` (for per-sample gradients)."""
    names = [n for n, _ in m.named_parameters()]
    return torch.func.functional_call(m, dict(zip(names, ps, strict=True)), (v, u))


# --- prediction ----------------------------------------------------------------------
def test_gibbs_prediction_converges_to_exact_mean():
    m = _tiny("gaussian", seed=5)
    u = _history(m, 4, 14)
    exact = m.predict_std(u, "exact")
    est = m.predict_std(u, "gibbs", steps=40, n_samples=4000,
                        generator=torch.Generator().manual_seed(15))
    # E[v|h,u] has spread <= |W| row norms; with 4000 chains the error is a few 0.01.
    assert torch.allclose(est, exact, atol=0.08)
    mf = m.predict_std(u, "mean-field", steps=20)
    assert mf.shape == exact.shape and bool(torch.isfinite(mf).all())


# --- training on a synthetic autoregressive process ----------------------------------
def _var_process(T: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a1 = np.array([[0.6, 0.3], [-0.2, 0.5]])
    a2 = np.array([[-0.3, 0.0], [0.1, -0.2]])
    x = np.zeros((T, 2))
    for t in range(2, T):
        x[t] = a1 @ x[t - 1] + a2 @ x[t - 2] + 0.5 * rng.normal(size=2)
    return (x * np.array([2.0, 0.5]) + np.array([10.0, -3.0])).astype(np.float32)


def test_training_beats_persistence_on_ar_process():
    x = _var_process()
    train, test = chronological_split(x, 0.25, order=2)
    m = ConditionalRBM(GaussianUnits(2), BernoulliUnits(8), order=2,
                       generator=torch.Generator().manual_seed(0))
    hist = m.fit(train, epochs=6, batch_size=32, lr=1e-2, validation=test)
    # standardisation is stored in the model, from the training part only
    assert torch.allclose(m.data_mean, torch.as_tensor(train).mean(0), atol=1e-4)
    last = hist[-1]
    assert last["val_rmse"] < 0.9 * last["val_persistence_rmse"]
    assert last["val_rmse"] < hist[0]["val_rmse"]
    # predictions in original units line up with the test frames
    pred = m.predict(test)
    truth = torch.as_tensor(test[2:])
    pers = torch.as_tensor(test[1:-1])
    assert pred.shape == truth.shape
    assert float(((pred - truth) ** 2).mean()) < 0.85 * float(((pers - truth) ** 2).mean())
    # the least-squares AR baseline of the same order is fitted on the same windows
    h_tr, f_tr = m.windows(train)
    h_te, f_te = m.windows(test)
    coef = linear_ar_fit(h_tr.numpy(), f_tr.numpy())
    ar = np.sqrt(((linear_ar_predict(coef, h_te.numpy()) - f_te.numpy()) ** 2).mean())
    assert ar < last["val_persistence_rmse"]
    # ... and the CRBM uses the history as well as the linear model does, clearly better than
    # predicting the training mean (0 in standardised units): persistence alone is a weak bar
    # on this process (it is worse than the mean), so both are checked.
    assert last["val_rmse"] < 1.1 * ar
    assert last["val_rmse"] < 0.9 * float(f_te.pow(2).mean().sqrt())
    gen = m.generate(test[:2], 10, n_chains=3, generator=torch.Generator().manual_seed(1))
    assert gen.shape == (3, 10, 2) and bool(torch.isfinite(gen).all())
    assert abs(float(gen[..., 0].mean()) - 10.0) < 4.0  # stays on the data's scale


# --- files ------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    m = _tiny("gaussian", seed=6).float()
    with torch.no_grad():
        m.data_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        m.data_std.copy_(torch.tensor([0.5, 2.0, 4.0]))
    path = save_model(m, tmp_path / "crbm.safetensors")
    back = load_model(path)
    assert isinstance(back, ConditionalRBM) and back.order == 2
    assert set(model_tensors(back)) >= {"rbm_weights", "rbm_visible_bias", "data_mean",
                                        "visible_history_weights", "hidden_history_weights"}
    for key, t in m.state_dict().items():
        assert torch.equal(back.state_dict()[key], t), key
    seq = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(back.predict(seq), m.predict(seq))


# --- bad input --------------------------------------------------------------------------
def test_bad_sequences_raise_clear_errors():
    m = _tiny("gaussian")
    with pytest.raises(DataError, match="needs at least 3"):
        m.windows(np.zeros((2, 3)))
    with pytest.raises(DataError, match="3 features per frame"):
        m.windows(np.zeros((10, 4)))
    with pytest.raises(DataError, match="NaN"):
        bad = np.zeros((10, 3))
        bad[4, 1] = np.nan
        m.windows(bad)
    with pytest.raises(DataError, match="sequence 1 has 1 frames"):
        m.windows([np.zeros((5, 3)), np.zeros((1, 3))])
    with pytest.raises(DataError, match="history has shape"):
        m.predict_std(torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ConfigError, match="prediction method"):
        m.predict_std(torch.zeros(2, 6, dtype=torch.float64), method="magic")
    with pytest.raises(ConfigError, match="order"):
        ConditionalRBM(GaussianUnits(2), BernoulliUnits(2), order=0)
    with pytest.raises(DataError, match="binary"):
        _tiny("bernoulli").windows(np.full((5, 3), 0.5))
    with pytest.raises(DataError, match="leaves"):
        chronological_split(np.zeros((4, 2)), 0.5, order=2)


def test_windows_layout():
    m = ConditionalRBM(GaussianUnits(2), BernoulliUnits(3), order=2)
    seq = torch.arange(10.0).reshape(5, 2)  # frames 0..4: [2t, 2t+1]
    hist, frames = m.windows([seq, seq[:3]])
    assert frames.shape == (4, 2) and hist.shape == (4, 4)
    # frame t=2 has history [v_1, v_0]; the second sequence adds one window, no crossing
    assert hist[0].tolist() == [2.0, 3.0, 0.0, 1.0] and frames[0].tolist() == [4.0, 5.0]
    assert hist[3].tolist() == [2.0, 3.0, 0.0, 1.0]


def test_macrodata_loads_offline():
    pytest.importorskip("statsmodels")
    from boltzkit.models.conditional import MACRO_COLUMNS, load_macrodata

    x = load_macrodata()
    assert x.shape == (202, len(MACRO_COLUMNS)) and np.isfinite(x).all()
    # real GDP grew about 0.78 % a quarter on average over 1959-2009
    assert 0.5 < float(x[:, 0].mean()) < 1.0


def test_cli_trains_crbm_on_a_sequence_file(tmp_path, capsys):
    from boltzkit.cli import main

    data = tmp_path / "series.npy"
    np.save(data, _var_process(T=120))
    out = tmp_path / "crbm.safetensors"
    rc = main(["train", "--model", "crbm", "--dataset", str(data), "--crbm-order", "3",
               "--n-hidden", "4", "--epochs", "2", "--batch-size", "16", "--lr", "0.01",
               "--optimizer", "adam", "--learn-variance", "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    model = load_model(out)
    assert isinstance(model, ConditionalRBM) and model.order == 3 and model.n_hidden == 4
    assert model.visible.learn_variance and "rbm_visible_log_var" in model_tensors(model)
    # the stored standardisation is that of the chronological training part (first 96 frames)
    train = torch.as_tensor(_var_process(T=120)[:96])
    assert torch.allclose(model.data_mean, train.mean(0), atol=1e-4)
    # too short a file: a clear error, exit status 2
    np.save(data, _var_process(T=120)[:4])
    assert main(["train", "--model", "crbm", "--dataset", str(data), "--crbm-order", "3",
                 "--out", str(out), "--quiet"]) == 2
    assert "needs at least 4" in capsys.readouterr().err


def test_example_script_runs_on_a_sequence_file(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import importlib
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    data = tmp_path / "series.npy"
    np.save(data, _var_process(T=150))
    module = importlib.import_module("crbm_sequence")
    try:
        res = module.main(["--dataset", str(data), "--epochs", "2", "--chains", "3",
                           "--out-dir", str(tmp_path / "out")])
    finally:
        sys.modules.pop("crbm_sequence", None)
    assert (tmp_path / "out" / "crbm_continuation.png").stat().st_size > 1000
    assert set(res) >= {"persistence", "linear AR(2)", "CRBM mean-field", "CRBM exact mean"}
    # on a linear VAR(2) the least-squares AR model beats persistence
    assert res["linear AR(2)"]["rmse_std"] < res["persistence"]["rmse_std"]
