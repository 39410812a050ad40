"""Mixed precision (boltzkit.precision): bfloat16 GEMM operands, everything else float32.

Tolerances come from bfloat16's unit roundoff u = 2**-8 (8 significant bits, round to
nearest): an operand rounded to bfloat16 is off by at most u relative, a product of two
bfloat16 numbers is exact in the GEMM's float32 accumulator, and the stored result is
rounded once more (u relative).  So a bfloat16 product x @ W of exact-in-bfloat16 x
(0/1 states) differs from the float64 one by at most u sum|x||W| + u |x @ W|, plus float32
accumulation error (~n 2**-24 sum|x||W|, negligible here).
"""

from __future__ import annotations

import logging
import math

import pytest
import torch

from boltzkit import kernels, precision
from boltzkit.errors import ConfigError
from boltzkit.objectives import LikelihoodGradient
from boltzkit.rbm import make_rbm
from boltzkit.sampling import make_sampler
from boltzkit.training import Trainer

U = 2.0**-8  # bfloat16 unit roundoff
NATIVE = frozenset({"avx512_bf16"})


@pytest.fixture
def native(monkeypatch):
    """Resolve 'bfloat16' as on a CPU with native support, wherever the tests run (the
    GEMMs themselves run either way: emulated bfloat16 is slower, not different)."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: NATIVE)


def _rbm(nv=20, nh=10, seed=0, scale=30.0):
    rbm = make_rbm(nv, nh, seed=seed)
    with torch.no_grad():
        rbm.connection.weights.mul_(scale)
        rbm.hidden.bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed + 1))
        rbm.visible.bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed + 2))
    return rbm


def _binary(n, d, seed=0, p=0.4):
    return (torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) < p).float()


# ----------------------------------------------------------------------------- choosing
def test_choice_follows_the_hardware(native, monkeypatch, caplog):
    assert precision.choose("float32").name == "float32"
    p = precision.choose("bfloat16")
    assert p.name == "bfloat16" and p.gemm_dtype is torch.bfloat16 and "avx512_bf16" in p.reason
    assert precision.choose("auto").name == "bfloat16"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "avx2"}))
    with caplog.at_level(logging.WARNING, logger="boltzkit"):
        p = precision.choose("bfloat16")
    assert p.name == "float32" and p.gemm_dtype is None
    assert "emulated" in caplog.text and "keeping float32" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="boltzkit"):
        p = precision.choose("auto")
    assert p.name == "float32" and "no native bfloat16" in p.reason and not caplog.text
    with pytest.raises(ConfigError, match="CUDA tensor-core"):
        precision.choose("tf32")
    with pytest.raises(ConfigError, match="unknown precision 'half'"):
        precision.choose("half")


def test_describe_says_what_auto_picks(native):
    d = precision.describe()
    kernels_ = d.pop("bfloat16_kernels")
    assert d == {"device": "cpu", "auto": "bfloat16",
                 "reason": "this CPU has native bfloat16 (avx512_bf16)"}
    assert kernels_ in ("in use", "loaded at the first bfloat16 step (built once per machine)",
                        "unavailable (torch calls instead)", "off (BOLTZKIT_NATIVE=0)")


# ----------------------------------------------------------------------------- products
def test_products_agree_with_float64_to_bfloat16_roundoff(native):
    rbm = _rbm(64, 48)
    v = _binary(32, 64)
    h = torch.rand(32, 48, generator=torch.Generator().manual_seed(3))
    W = rbm.connection.weights.detach().double()
    cases = [(lambda: rbm.connection(v), v.double() @ W, v.double().abs() @ W.abs()),
             (lambda: rbm.connection.transpose(h), h.double() @ W.t(),
              h.double().abs() @ W.abs().t()),
             (lambda: rbm.connection.weight_gradient(v, h), v.double().t() @ h.double(),
              v.double().t().abs() @ h.double().abs())]
    for compute, exact, size in cases:
        with torch.no_grad():
            f32 = compute()
            with precision.computing("bfloat16"):
                low = compute()
        assert low.dtype == torch.float32
        err = (low.double() - exact).abs()
        # operands: u on W (and on h, not exact in bfloat16), the result: u; float32 sums
        bound = (2 * U + 64 * 2.0**-24) * size + U * exact.abs()
        assert bool((err <= bound).all())
        assert float((err / size.clamp_min(1e-12)).max()) > 2.0**-14  # really bfloat16
        assert float((f32.double() - exact).abs().max()) < 1e-4  # float32 outside the block


def test_a_parameter_is_cast_once_per_change(native):
    rbm = _rbm()
    W = rbm.connection.weights
    with precision.computing("bfloat16"), torch.no_grad():
        a = precision.low(W)
        assert precision.low(W) is a  # reused while W is unchanged
        W.mul_(2.0)
        b = precision.low(W)
        assert b is not a and torch.equal(b, W.detach().bfloat16())
    with torch.enable_grad(), precision.computing("bfloat16"):
        x = _binary(4, 20)
        rbm.free_energy(x).sum().backward()  # differentiable through the cast
    assert W.grad is not None and bool(torch.isfinite(W.grad).all())


def test_float64_models_are_refused_mixed_precision(native):
    rbm = _rbm().double()
    with pytest.raises(ConfigError, match="float32 model"):
        Trainer(rbm, make_sampler("cd"), precision="bfloat16")


# ----------------------------------------------------------------------------- training
def _fit(prec, fused=True, method="cd", epochs=2, checkpoint_dir=None, resume=False,
         monkeypatch=None, momentum=0.5, weight_decay=0.01):
    rbm = _rbm()
    sampler = make_sampler(method, k=1, chains=10 if method == "pcd" else None)
    trainer = Trainer(rbm, sampler, LikelihoodGradient(), epochs=epochs, batch_size=10,
                      lr=0.1, momentum=momentum, weight_decay=weight_decay, seed=3,
                      progress=False, monitor_size=0, precision=prec,
                      checkpoint_dir=checkpoint_dir)
    planned = []
    real = kernels.plan_step
    monkeypatch.setattr(kernels, "plan_step",
                        (lambda *a, **kw: planned.append(real(*a, **kw)) or planned[-1])
                        if fused else (lambda *a, **kw: None))
    trainer.fit(_binary(40, 20, seed=5), resume=resume)
    monkeypatch.setattr(kernels, "plan_step", real)
    assert not fused or planned[-1] is not None
    return rbm, sampler, trainer


@pytest.mark.parametrize("momentum", [0.5, 0.0])
@pytest.mark.parametrize("method", ["cd", "pcd"])
def test_fused_step_is_the_general_step_in_bfloat16(native, monkeypatch, method, momentum):
    """Both paths take the same bfloat16 products of the same operands (the same shapes:
    the same GEMM kernel), so the draws agree and the parameters differ only by float32
    rounding of the updates (2 epochs x 4 steps of lr 0.1 x statistics <= 1)."""
    fused, s_f, _ = _fit("bfloat16", True, method, monkeypatch=monkeypatch, momentum=momentum)
    general, s_g, _ = _fit("bfloat16", False, method, monkeypatch=monkeypatch,
                           momentum=momentum)
    plain, _, _ = _fit("float32", True, method, monkeypatch=monkeypatch, momentum=momentum)
    for p_f, p_g in zip(fused.parameters(), general.parameters(), strict=True):
        assert float((p_f - p_g).detach().abs().max()) <= 8 * 0.1 * 1e-5
    if method == "pcd":
        assert torch.equal(s_f.chains, s_g.chains)
    W = [m.connection.weights.detach() for m in (fused, plain)]
    assert float((W[0] - W[1]).abs().max()) > 1e-4  # bfloat16 changed the updates


def test_mixed_precision_stays_close_to_float32(native, monkeypatch):
    """Different roundings flip some draws, so a bfloat16 run is a different sample path of
    the same algorithm: after 8 updates of lr 0.1 its weights stay within the spread that
    a different seed gives in float32."""
    low, _, _ = _fit("bfloat16", monkeypatch=monkeypatch)
    ref, _, _ = _fit("float32", monkeypatch=monkeypatch)
    start = _rbm().connection.weights.detach()
    moved = float((ref.connection.weights.detach() - start).abs().max())
    diff = float((low.connection.weights.detach() - ref.connection.weights.detach()).abs().max())
    assert moved > 0.1 and diff < 0.5 * moved


@pytest.mark.parametrize("fused", [True, False])
def test_resume_is_bit_exact_in_bfloat16(native, monkeypatch, tmp_path, fused):
    whole, s_w, _ = _fit("bfloat16", fused, "pcd", epochs=3, monkeypatch=monkeypatch)
    _fit("bfloat16", fused, "pcd", epochs=1, checkpoint_dir=tmp_path, monkeypatch=monkeypatch)
    resumed, s_r, _ = _fit("bfloat16", fused, "pcd", epochs=3, checkpoint_dir=tmp_path,
                           resume=True, monkeypatch=monkeypatch)
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(s_w.chains, s_r.chains)


def test_without_native_bfloat16_training_falls_back_to_float32(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f"}))
    with caplog.at_level(logging.WARNING, logger="boltzkit"):
        fell_back, _, trainer = _fit("bfloat16", monkeypatch=monkeypatch)
    assert trainer.precision.name == "float32" and "keeping float32" in caplog.text
    plain, _, _ = _fit("float32", monkeypatch=monkeypatch)
    for a, b in zip(fell_back.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- AIS, CLI
def test_ais_kernel_is_the_general_pass_in_bfloat16(native):
    from boltzkit.kernels.ais import anneal_bernoulli
    from boltzkit.metrics.ais import RBMPath, ais_schedule, anneal

    class GeneralPath(RBMPath):
        def fused(self):
            return None

    rbm = _rbm(30, 12, scale=20.0)
    path, general = RBMPath(rbm, torch.zeros(30)), GeneralPath(rbm, torch.zeros(30))
    v0 = _binary(50, 30, seed=4, p=0.5)
    betas = ais_schedule(200).tolist()
    with precision.computing("bfloat16"), torch.no_grad():
        w_fast, v_fast = anneal_bernoulli(rbm, v0, betas, path.d,
                                          torch.Generator().manual_seed(7))
        w_gen, v_gen = anneal(general, v0, betas, torch.Generator().manual_seed(7))
    w_32, _ = anneal_bernoulli(rbm, v0, betas, path.d, torch.Generator().manual_seed(7))
    assert torch.equal(v_fast, v_gen)
    torch.testing.assert_close(w_fast, w_gen, rtol=0, atol=1e-4)
    assert float((w_fast - w_32).abs().max()) > 1e-4  # the products were bfloat16


def test_ais_with_bfloat16_transitions_finds_the_exact_log_z(native):
    from boltzkit.metrics.likelihood import ais_log_z, exact_log_z

    rbm = _rbm(40, 12, scale=40.0)
    exact = exact_log_z(rbm)
    res = ais_log_z(rbm, n_chains=200, n_steps=1000, precision="bfloat16",
                    generator=torch.Generator().manual_seed(0))
    assert res.log_z_lower <= exact <= res.log_z_upper
    assert math.isfinite(res.log_z) and res.reliable


def test_cli_precision_on_train_sample_evaluate_info(native, tmp_path, capsys):
    import json

    from boltzkit.cli import main

    out = tmp_path / "m.safetensors"
    args = ["train", "--dataset", "digits", "--binarize", "threshold", "--n-hidden", "8",
            "--epochs", "1", "--out", str(out)]
    assert main([*args, "--precision", "auto", "--quiet"]) == 0
    assert main([*args, "--precision", "bfloat16"]) == 0
    assert "precision: bfloat16 (this CPU has native bfloat16" in capsys.readouterr().err
    assert main(["sample", str(out), "--npy", str(tmp_path / "s.npy"), "--steps", "3",
                 "--precision", "bfloat16"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "bfloat16"
    assert main(["evaluate", str(out), "--method", "ais", "--ais-steps", "50", "--metrics",
                 "loglik", "--precision", "bfloat16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "bfloat16"
    assert main(["evaluate", str(out), "--metrics", "pl", "--precision", "bfloat16"]) == 2
    assert "sample nothing: drop --precision" in capsys.readouterr().err
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["precision_auto"]["auto"] == "bfloat16"
    assert main([*args, "--precision", "half"]) == 2


def test_scikit_learn_estimators_take_a_precision(native):
    import numpy as np

    from boltzkit.sklearn import BernoulliRBM, GaussianRBM

    X = _binary(60, 20, seed=8).numpy().astype(np.float64)
    low = BernoulliRBM(8, n_iter=2, random_state=0, precision="bfloat16").fit(X)
    ref = BernoulliRBM(8, n_iter=2, random_state=0, dtype="float32").fit(X)
    assert low.trainer_.precision.name == "bfloat16" and low.rbm_.dtype == torch.float32
    diff = np.abs(low.components_ - ref.components_).max()
    assert 0 < diff < 0.05  # bfloat16 products, the same algorithm and draws
    assert low.transform(X).dtype == np.float64
    g = GaussianRBM(4, n_iter=1, random_state=0, precision="bfloat16").fit(X)
    assert g.trainer_.precision.name == "bfloat16"
    with pytest.raises(ValueError, match="precision"):
        BernoulliRBM(precision="half").fit(X)
    with pytest.raises(ValueError, match="float32 model"):
        BernoulliRBM(dtype="float64", precision="bfloat16").fit(X)


def test_mixed_precision_draws_take_16_bits_from_the_run_generator(native):
    """Under bfloat16 the bulk uniforms are multiples of 2**-16 from a generator seeded by
    the run's torch generator: reproducible from its state (so checkpoints resume
    exactly), uniform, and a different stream from float32's 24-bit one."""
    from boltzkit.units import uniform_

    n = 100_000
    g = torch.Generator().manual_seed(5)
    with precision.computing("bfloat16"):
        a = uniform_(torch.empty(n), g)
        state = g.get_state()
        b = uniform_(torch.empty(n), g)
        g.set_state(state)
        again = uniform_(torch.empty(n), g)
    assert torch.equal(b, again) and not torch.equal(a, b)
    assert torch.equal(a * 65536, (a * 65536).round())
    assert float(a.min()) >= 0.0 and float(a.max()) < 1.0
    assert abs(float(a.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)  # 5 standard errors
    counts = torch.histc(a, 16, 0.0, 1.0)
    chi2 = float(((counts - n / 16) ** 2 / (n / 16)).sum())
    assert chi2 < 50.0  # 15 degrees of freedom: P(chi2 > 50) < 1e-5
    g.manual_seed(5)
    c = uniform_(torch.empty(n), g)  # outside the block: float32's 24-bit draws
    assert not torch.equal(c, a) and not torch.equal(c * 65536, (c * 65536).round())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_trains_in_every_precision(monkeypatch):
    """On a GPU: float32, TF32 and bfloat16 train the same model from the same draws; the
    fused bfloat16 step matches the general one and TF32/bfloat16 stay near float32."""
    data = _binary(200, 20, seed=5).cuda()
    out = {}
    for prec, fused in (("float32", True), ("tf32", True), ("bfloat16", True),
                        ("bfloat16", False)):
        rbm = _rbm().cuda()
        sampler = make_sampler("pcd", k=1, chains=10)
        trainer = Trainer(rbm, sampler, LikelihoodGradient(), epochs=2, batch_size=10, lr=0.1,
                          momentum=0.5, seed=3, progress=False, monitor_size=0, precision=prec)
        real = kernels.plan_step
        if not fused:
            monkeypatch.setattr(kernels, "plan_step", lambda *a, **kw: None)
        trainer.fit(data)
        monkeypatch.setattr(kernels, "plan_step", real)
        assert trainer.precision.name == prec
        out[prec, fused] = rbm.connection.weights.detach().cpu()
    moved = float((out["float32", True] - _rbm().connection.weights.detach()).abs().max())
    for key in (("tf32", True), ("bfloat16", True)):
        assert float((out[key] - out["float32", True]).abs().max()) < 0.5 * moved
    assert float((out["bfloat16", True] - out["bfloat16", False]).abs().max()) < 1e-3
