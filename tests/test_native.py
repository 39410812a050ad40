"""The compiled bfloat16 step (boltzkit.kernels.native) against the torch calls it replaces.

It takes the same bfloat16 products of the same operands and the same draws (the hashed
16-bit uniforms keyed by the same generator words), so its parameters differ from the
general path's only by float32 rounding of the elementwise arithmetic (a fused
multiply-add, libm's vector exp): ~1e-7 per update here, far below what one flipped draw
moves (lr / B = 1e-3).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from boltzkit import kernels, precision, units
from boltzkit.kernels import fused, native
from boltzkit.objectives import LikelihoodGradient
from boltzkit.rbm import make_rbm
from boltzkit.sampling import make_sampler
from boltzkit.training import Trainer


@pytest.fixture
def nat(monkeypatch):
    """The compiled module (skip where it does not build), bfloat16 resolving as native."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    module = native.load()
    if module is None:
        pytest.skip("the compiled bfloat16 kernels do not build on this machine")
    return module


NV, NH, B = 256, 128, 128  # B x NH = 16384: the draws are bulk ones


def _fit(fused, method, momentum, rows, k=2, model_norm="particles", epochs=1,
         checkpoint_dir=None, resume=False, grid=False, steps=None):
    """Train on ``rows`` random binary rows; ``grid``: weights on a 1/8 grid small enough
    that every product of the first update is exact in bfloat16 (whatever the GEMM's
    summation order); ``steps`` (a list) receives the fused step the planner made."""
    rbm = make_rbm(NV, NH, seed=0)
    with torch.no_grad():
        if grid:
            g = torch.Generator().manual_seed(4)
            rbm.connection.weights.copy_(torch.randint(-2, 3, (NV, NH), generator=g) / 8)
        else:
            rbm.connection.weights.mul_(10)
    sampler = make_sampler(method, k=k, chains=B if method == "pcd" else None)
    trainer = Trainer(rbm, sampler, LikelihoodGradient(model_norm=model_norm), epochs=epochs,
                      batch_size=B, lr=0.1, momentum=momentum, weight_decay=0.01, seed=3,
                      progress=False, monitor_size=0, precision="bfloat16",
                      checkpoint_dir=checkpoint_dir)
    real = kernels.plan_step

    def plan(*a, **kw):
        step = real(*a, **kw) if fused else None
        if steps is not None:
            steps.append(step)
        return step

    kernels.plan_step = plan
    try:
        X = (torch.rand(rows, NV, generator=torch.Generator().manual_seed(1)) < 0.3).float()
        trainer.fit(X, resume=resume)
    finally:
        kernels.plan_step = real
    return rbm, sampler


@pytest.mark.parametrize("method", ["cd", "pcd"])
@pytest.mark.parametrize("momentum,model_norm", [(0.5, "particles"), (0.0, "rows")])
def test_compiled_step_is_the_torch_step(nat, monkeypatch, method, momentum, model_norm):
    """One update (k = 2) from weights on which every product is exact: the compiled pass
    and the torch calls draw exactly the same states and hidden means (up to the float32
    rounding of the sigmoid); the parameters differ by the float32 rounding of the
    update and by the bfloat16 rounding of V^T H, which the two layouts sum in different
    orders (one bfloat16 ulp, 2**-7 relative, of |V^T H| <= B + M, times lr / B)."""
    calls = []
    real = nat.bernoulli_pass
    monkeypatch.setattr(nat, "bernoulli_pass",
                        lambda *a: calls.append((len(a[0]), a[0][0].dtype)) or real(*a))
    runs = {}
    for name in ("compiled", "torch"):
        steps = []
        if name == "torch":
            monkeypatch.setattr(native, "_state", {"module": None})
        rbm, sampler = _fit(True, method, momentum, B, model_norm=model_norm, grid=True,
                            steps=steps)
        runs[name] = rbm, sampler, steps[-1]._ws[(B, B)]
    assert calls == [(1, torch.int64)]  # in-memory rows: the pass gathers them by index
    (fast, s_f, ws_f), (plain, s_p, ws_p) = runs["compiled"], runs["torch"]
    assert torch.equal(ws_f.V, ws_p.V)  # the same draws: data rows and model states
    # the hidden means, as the weight gradient's bfloat16 operand: the compiled pass keeps
    # them transposed; float32 sigmoids 1e-7 apart round to the same bfloat16 but near a
    # rounding boundary, where they may land one ulp (2**-8 below 1) apart
    h_f, h_p = ws_f.HlT.t().float(), ws_p.Hl.float()
    torch.testing.assert_close(h_f, h_p, rtol=0, atol=2.0**-8)
    assert int((h_f != h_p).sum()) <= h_f.numel() // 1000
    bound = 0.1 / B * 2.0**-7 * (B + B) + 1e-6
    for p_f, p_p in zip(fast.parameters(), plain.parameters(), strict=True):
        assert float((p_f - p_p).detach().abs().max()) <= bound
    if method == "pcd":
        assert torch.equal(s_f.chains, s_p.chains)


@pytest.mark.parametrize("method", ["cd", "pcd"])
def test_compiled_pass_writes_back_and_hands_short_batches_to_torch(nat, monkeypatch, method):
    """Three full batches and a short last one: too small for bulk draws, CD's takes the
    torch calls (W written back first); PCD's chains keep it in the compiled pass.  After
    the pass the model and the optimizer hold what the pass computed."""
    calls, handed = [], []
    real = nat.bernoulli_pass
    monkeypatch.setattr(nat, "bernoulli_pass", lambda *a: calls.append(len(a[0])) or real(*a))
    torch_steps = fused.FusedBernoulliSGD._steps

    def steps_(self, batches, activation, native=True):
        if not native:  # handed over: the model holds what the pass computed
            WT, bufT, _ = self._WT
            handed.append(torch.equal(self._W, WT.t()) and torch.equal(self.bufs[0], bufT.t()))
        return torch_steps(self, batches, activation, native)

    monkeypatch.setattr(fused.FusedBernoulliSGD, "_steps", steps_)
    steps = []
    rbm, _ = _fit(True, method, 0.5, 3 * B + 40, steps=steps)
    assert calls == ([3] if method == "cd" else [3, 1])
    assert handed == ([True] if method == "cd" else [])
    step = steps[-1]
    if method == "pcd":  # ended compiled: W and momentum are the pass's transposed ones
        WT, bufT, _ = step._WT
        assert torch.equal(rbm.connection.weights.detach(), WT.t())
        assert torch.equal(step.bufs[0], bufT.t())
    general, _ = _fit(False, method, 0.5, 3 * B + 40)
    start = make_rbm(NV, NH, seed=0).connection.weights.detach() * 10
    moved = float((general.connection.weights.detach() - start).abs().max())
    diff = float((general.connection.weights - rbm.connection.weights).detach().abs().max())
    assert diff < moved  # a sanity check: the same algorithm, not stuck at the start


def test_resume_is_bit_exact_through_the_compiled_pass(nat, tmp_path):
    whole, s_w = _fit(True, "pcd", 0.5, 2 * B, epochs=3)
    _fit(True, "pcd", 0.5, 2 * B, epochs=1, checkpoint_dir=tmp_path)
    resumed, s_r = _fit(True, "pcd", 0.5, 2 * B, epochs=3, checkpoint_dir=tmp_path,
                        resume=True)
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(s_w.chains, s_r.chains)


def test_hashed_draws_are_the_same_compiled_and_in_numpy(nat, monkeypatch):
    for key, n in ((0, 16384), (-(2**63), 50_001), (2**63 - 1, 17), (123456789, 100_000)):
        compiled = units.hashed_bits16(n, key)
        monkeypatch.setattr(native, "_state", {"module": None})
        plain = units.hashed_bits16(n, key)
        monkeypatch.setattr(native, "_state", {"module": nat})
        assert torch.equal(compiled, plain)
    u = units.hashed_bits16(200_000, 7).numpy().view(np.uint16) / 65536.0
    n = u.size  # uniform: mean, variance and lag-1 correlation within 5 standard errors
    assert abs(u.mean() - 0.5) < 5 * (1 / 12 / n) ** 0.5
    assert abs(u.var() - 1 / 12) < 5 * (1 / 180 / n) ** 0.5
    assert abs(((u[1:] - 0.5) * (u[:-1] - 0.5)).mean()) < 5 * (1 / 144 / n) ** 0.5


def test_transpose_copy(nat):
    a = torch.randn(70, 45)
    out = torch.empty(45, 70)
    nat.transpose_copy(a, out)
    assert torch.equal(out, a.t())
    low = torch.empty(45, 70, dtype=torch.bfloat16)
    nat.transpose_copy(a, low)
    assert torch.equal(low, a.t().to(torch.bfloat16))


def test_loading_keeps_subnormal_floats(nat):
    """-ffast-math is a compile flag only: linking it would flush subnormals process-wide."""
    assert float(torch.tensor([1e-40]) * 1.0) != 0.0
    assert np.float32(1e-40) * np.float32(1.0) != 0.0


def test_a_failed_build_warns_once_and_training_takes_the_torch_calls(monkeypatch):
    from torch.utils import cpp_extension

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr(native, "_state", {})

    def broken(*a, **kw):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpp_extension, "load", broken)
    with pytest.warns(RuntimeWarning, match="Ninja is required"):
        assert native.load() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.load() is None  # once
        fast, _ = _fit(True, "cd", 0.5, 2 * B, grid=True)
    general, _ = _fit(False, "cd", 0.5, 2 * B, grid=True)
    for p_f, p_g in zip(fast.parameters(), general.parameters(), strict=True):
        assert float((p_f - p_g).detach().abs().max()) <= 1e-5
    assert "unavailable" in native.status()


def test_the_kernels_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("BOLTZKIT_NATIVE", "0")
    monkeypatch.setattr(native, "_state", {})
    assert native.load() is None and native.status().startswith("off")


def test_saturated_fields_give_probabilities_not_nan(nat):
    """Fields far past exp's range (here +-90 to +-1e4): sigmoid saturates at 0 or 1, the
    draws follow; a NaN here once sent a 784x500 bfloat16 run to NaN in its second epoch."""
    # rows of 64 (the vector loop, not its scalar tail), each value in a run of 16 lanes
    values = torch.tensor([-1e4, -200.0, -90.0, 0.0, 90.0, 200.0, 1e4, -88.0])
    pre = values.repeat_interleave(16).view(2, 64).repeat(2, 1).to(torch.bfloat16)
    bias = torch.zeros(64)
    prob, prob_low = torch.empty(4, 64), torch.empty(4, 64, dtype=torch.bfloat16)
    state = torch.empty(4, 64)
    e32, e16 = native.empty(), native.empty(torch.bfloat16)
    nat.sample_bernoulli(pre, bias, 5, prob, prob_low, 1.0, state, e16, -1, e32, e32)
    assert torch.isfinite(prob).all() and torch.isfinite(prob_low.float()).all()
    torch.testing.assert_close(prob, torch.sigmoid(pre.float()), rtol=0, atol=1e-30)
    saturated = pre.float().abs() >= 88
    # P(u < 2e-35) = P(u = 0) = 2**-16 per draw: no state of a field <= -88 is 1
    assert torch.equal(state[saturated], (pre.float()[saturated] > 0).float())


@pytest.mark.parametrize("R", [1, 33, 64, 100, 257])
def test_sampling_loop_outputs_agree_and_its_sums_ignore_the_thread_count(nat, R):
    """The transposed bfloat16 write (tiles of rows) holds exactly the row-major one, into
    its columns only; the column sums are those of the written outputs (the states' exactly,
    being integers), summed alike whatever the number of threads."""
    C = 70
    g = torch.Generator().manual_seed(R)
    pre = (torch.randn(R, C, generator=g) * 3).to(torch.bfloat16)
    bias = torch.randn(C, generator=g)
    e32, e16 = native.empty(), native.empty(torch.bfloat16)
    prob, prob_low, state = torch.empty(R, C), torch.empty(R, C, dtype=torch.bfloat16), \
        torch.empty(R, C)
    nat.sample_bernoulli(pre, bias, 9, prob, prob_low, -0.5, state, e16, -1, e32, e32)
    threads = torch.get_num_threads()
    sums = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            wide = torch.full((C, R + 5), 7.0, dtype=torch.bfloat16)
            ps, ss, st = torch.empty(C), torch.empty(C), torch.empty(R, C)
            nat.sample_bernoulli(pre, bias, 9, e32, wide, -0.5, st, e16, 3, ps, ss)
            assert torch.equal(wide[:, 3:3 + R], prob_low.t())
            assert bool((wide[:, :3] == 7).all()) and bool((wide[:, 3 + R:] == 7).all())
            assert torch.equal(st, state)
            cs = torch.empty(C)
            nat.column_sums(prob, cs)
            sums.append((ps, ss, cs))
    finally:
        torch.set_num_threads(threads)
    ps, ss, cs = sums[0]
    torch.testing.assert_close(ps, prob.sum(0), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(cs, prob.sum(0), rtol=1e-6, atol=1e-5)
    assert torch.equal(ss, state.sum(0))
    for other in sums[1:]:
        assert all(torch.equal(a, b) for a, b in zip(sums[0], other, strict=True))
