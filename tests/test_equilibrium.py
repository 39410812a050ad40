"""Equilibrium sampling: whole-energy tempering, replica exchange (PT and PTT), the automatic
ladder, trajectory AIS, and ``boltzkit sample`` (issue 28)."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from boltzkit import RBM, BernoulliUnits, ConfigError, GaussianUnits, ParallelTempering, Trainer
from boltzkit.cli import main
from boltzkit.data import load_dataset, mixture_spec
from boltzkit.driven import DrivenPCD, GammaProcess
from boltzkit.io import save_model
from boltzkit.metrics.divergence import mode_coverage
from boltzkit.metrics.likelihood import ais_log_z, exact_log_z
from boltzkit.metrics.trajectory_ais import TrajectoryAIS
from boltzkit.sampling import PersistentCD, draw, exchange, make_sampler, place_ladder
from boltzkit.trajectory import (
    TrajectoryPath,
    TrajectoryTempering,
    _pair_energies,
    base_log_z,
    base_state,
    float_state,
    set_state,
    snapshot,
    trajectory_sample,
)
from boltzkit.units import ReLUUnits, whole_energy

REPO = Path(__file__).resolve().parents[1]
STATES4 = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def codes(x: torch.Tensor) -> torch.Tensor:
    """Index of each 4-bit row in STATES4's order."""
    return (x * torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=x.dtype)).sum(-1).long()


def strong_rbm(seed: int, scale: float = 3.0) -> RBM:
    """4 visible x 3 hidden Bernoulli, strong random couplings (a rugged 16-state law)."""
    g = torch.Generator().manual_seed(seed)
    rbm = RBM(BernoulliUnits(4), BernoulliUnits(3), generator=g).double()
    with torch.no_grad():
        rbm.connection.weights.copy_(scale * torch.randn(4, 3, generator=g, dtype=torch.float64))
        rbm.visible.bias.copy_(torch.randn(4, generator=g, dtype=torch.float64))
        rbm.hidden.bias.copy_(torch.randn(3, generator=g, dtype=torch.float64))
    return rbm


# --------------------------------------------------------------------------- tempering
@pytest.mark.parametrize("units", [GaussianUnits(1, std=0.7), ReLUUnits(1)])
def test_whole_energy_tempering_is_p_to_the_beta(units):
    """log_partition, mean and draws at beta of exp(-beta E0(x) + beta a c(x)), by quadrature.

    The grid (spacing 1e-4 over +-30) integrates these smooth densities to ~1e-6; the
    draws' mean has standard error sd / sqrt(2e5) ~ 0.0025, so 0.015 is 6 of them.
    """
    u = units.double()
    with torch.no_grad():
        u.bias.fill_(0.3)
    field = torch.tensor([[0.5], [-1.2]], dtype=torch.float64)
    beta = torch.tensor([[0.4], [2.5]], dtype=torch.float64)
    x = torch.linspace(-30, 30, 600001, dtype=torch.float64)[:, None]
    if isinstance(u, ReLUUnits):
        x = x[x[:, 0] >= 0]
    dx = float(x[1] - x[0])
    with torch.no_grad(), whole_energy(u):
        lp, mean = u.log_partition(field, beta), u.mean(field, beta)
        draws = u.sample(field[:1].expand(200000, 1), beta[:1].expand(200000, 1),
                         torch.Generator().manual_seed(0))
    assert not u.whole_energy  # restored
    for i in range(2):
        b, a = float(beta[i]), 0.3 + float(field[i])
        log_f = -b * u.base_energy(x) + b * a * u.coupling(x)[:, 0]
        num = float(torch.logsumexp(log_f, 0)) + math.log(dx)
        w = torch.softmax(log_f, 0)
        tol = 2e-4 if isinstance(u, ReLUUnits) else 1e-6  # the ReLU edge at 0 is a step
        assert abs(float(lp[i]) - num) < tol
        assert abs(float(mean[i]) - float((w * x[:, 0]).sum())) < 1e-4
        if i == 0:
            assert abs(float(draws.mean()) - float((w * x[:, 0]).sum())) < 0.015
    # at beta = 1 both conventions are the same function
    with torch.no_grad():
        lin = u.log_partition(field, 1.0)
        with whole_energy(u):
            assert torch.equal(u.log_partition(field, 1.0), lin)


def test_whole_energy_free_energy_sums_the_tempered_joint():
    """F_beta(v) = -log sum_h exp(-beta E(v, h)) for a Gaussian-Bernoulli RBM, exactly."""
    g = torch.Generator().manual_seed(3)
    rbm = RBM(GaussianUnits(3, std=0.6), BernoulliUnits(4), generator=g).double()
    with torch.no_grad():
        rbm.connection.weights.copy_(torch.randn(3, 4, generator=g, dtype=torch.float64))
        rbm.hidden.bias.copy_(torch.randn(4, generator=g, dtype=torch.float64))
        rbm.visible.bias.copy_(torch.randn(3, generator=g, dtype=torch.float64))
    v = torch.randn(5, 3, generator=g, dtype=torch.float64)
    h = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    beta = 0.3
    with torch.no_grad(), whole_energy(rbm):
        f = rbm.free_energy(v, beta)
        e = torch.stack([rbm.energy(v[i].expand(16, 3), h, 1.0) for i in range(5)])
    torch.testing.assert_close(f, -torch.logsumexp(-beta * e, 1), rtol=0, atol=1e-10)
    # the linear convention (AIS's) is a different family: not tempered in E0
    with torch.no_grad():
        assert not torch.allclose(rbm.free_energy(v, beta), f)


def test_ais_stays_exact_after_tempered_sampling():
    """Samplers switch their model to whole-energy tempering only inside their updates:
    AIS (linear tempering, its own base model) afterwards agrees with the exact log Z.

    100 chains x 2000 steps on a 6x4 Gaussian-Bernoulli RBM: the +-3 sigma interval is the
    tolerance (plus 0.02 nats for the schedule's bias)."""
    g = torch.Generator().manual_seed(5)
    rbm = RBM(GaussianUnits(6, std=0.8), BernoulliUnits(4), generator=g).double()
    with torch.no_grad():
        rbm.connection.weights.copy_(0.5 * torch.randn(6, 4, generator=g, dtype=torch.float64))
    pt = ParallelTempering(n_temperatures=4, beta_min=0.2, n_chains=8)
    with torch.no_grad():
        for _ in range(5):
            pt.negative(rbm, torch.zeros(8, 6, dtype=torch.float64), None, g)
    assert not any(m.__dict__.get("whole_energy") for m in rbm.modules())
    res = ais_log_z(rbm, n_chains=100, n_steps=2000, generator=torch.Generator().manual_seed(1))
    exact = exact_log_z(rbm)
    assert res.log_z_lower - 0.02 <= exact <= res.log_z_upper + 0.02, (res, exact)


def test_hot_gaussian_chains_spread_instead_of_collapsing():
    """At beta 0.1 a Gaussian chain of p^beta is sigma / sqrt(0.1) wide around b + W h; under
    linear tempering its mean would be 0.1 (b + W h): the origin for these modes."""
    rbm = RBM(GaussianUnits(1, std=0.1), BernoulliUnits(1)).double()
    with torch.no_grad():
        rbm.connection.weights.zero_()
        rbm.visible.bias.fill_(4.0)
    g = torch.Generator().manual_seed(0)
    v = torch.full((20000, 1), 4.0, dtype=torch.float64)
    with torch.no_grad(), whole_energy(rbm):
        out = rbm.gibbs(v, 1, beta=0.1, generator=g)
    assert abs(float(out.mean()) - 4.0) < 0.01  # se 0.32 / sqrt(2e4) = 0.002
    assert abs(float(out.std()) - 0.1 / math.sqrt(0.1)) < 0.01
    with torch.no_grad():
        lin = rbm.gibbs(v, 1, beta=0.1, generator=g)
    assert abs(float(lin.mean()) - 0.4) < 0.01


def test_beta_std_zero_is_beta_one():
    proc = GammaProcess(0.0, 0.9)
    assert torch.equal(proc.initial(5), torch.ones(5))
    assert torch.equal(proc.step(torch.full((3, 1), 0.2)), torch.ones(3, 1))
    with pytest.raises(ConfigError, match=">= 0"):
        GammaProcess(-0.1)
    rbm = strong_rbm(0)
    sampler = DrivenPCD(k=1, n_chains=6, beta_std=0.0)
    with torch.no_grad():
        sampler.negative(rbm, torch.zeros(2, 4, dtype=torch.float64), None,
                         torch.Generator().manual_seed(0))
    assert torch.equal(sampler.betas, torch.ones(6, 1, dtype=torch.float64))


# --------------------------------------------------------------------------- replica exchange
@torch.no_grad()
def test_ptt_swap_keeps_the_joint_distribution_over_replicas_exact():
    """Chains drawn exactly from two different models A and B keep those marginals after a
    trajectory-tempering swap (free-energy Metropolis between models, not temperatures).

    20,000 chains per replica over 16 states: the total variation of an exact sample's
    histogram has mean ~0.011, so 0.03 is ~3x; a swap that accepted everything would hand
    B's law to A's row, more than 0.2 away (asserted)."""
    a, b = strong_rbm(1, scale=3.0), strong_rbm(1, scale=1.0)  # one model, two epochs apart
    exact = [torch.softmax(-m.free_energy(STATES4), 0) for m in (a, b)]
    assert tv(*exact) > 0.2
    C, g = 20000, torch.Generator().manual_seed(0)
    x = torch.stack([STATES4[torch.multinomial(p, C, replacement=True, generator=g)]
                     for p in exact])
    lo = torch.zeros(1, dtype=torch.long)
    own, swapped = _pair_energies([a, b], x, lo)
    out, accept, prob = exchange(x, lo, own, swapped, g)
    assert 0.05 < float(accept.double().mean()) < 0.95
    assert abs(float(accept.double().mean()) - float(prob.mean())) < 0.01
    for row, p in zip(out, exact, strict=True):
        assert tv(torch.bincount(codes(row), minlength=16).double() / C, p) < 0.03
    # control: swapping unconditionally breaks it
    forced = x.flip(0)
    assert tv(torch.bincount(codes(forced[0]), minlength=16).double() / C, exact[0]) > 0.2


def _exact_mean(rbm: RBM) -> tuple[float, float]:
    states = torch.tensor(list(itertools.product((0.0, 1.0), repeat=10)), dtype=torch.float64)
    with torch.no_grad():
        p = torch.softmax(-rbm.free_energy(states), 0)
    return float(p @ states.mean(1)), float(p[states.mean(1) > 0.5].sum())


@torch.no_grad()
def test_trajectory_sample_crosses_between_modes_where_gibbs_does_not(bimodal_rbm):
    """Replica exchange along a path of models (every parameter of the bimodal model scaled
    from 0.05 to 1, as the sharpening of a training run) draws the exact marginal: the
    fraction of samples in the all-ones mode matches the exact mass within 4 standard
    errors of 800 independent chains; plain Gibbs chains from the same start stay in the
    all-zeros mode."""
    rbm = bimodal_rbm(6.0)
    _, upper = _exact_mean(rbm)
    assert 0.55 < upper < 0.8
    states = []
    for s in (0.05, 0.2, 0.4, 0.7, 1.0):
        m = snapshot(rbm)
        for p in m.parameters():
            p.mul_(s)
        states.append(float_state(m))
    path = TrajectoryPath(rbm, states)
    n, g = 800, torch.Generator().manual_seed(3)
    init = torch.zeros(n, 10, dtype=torch.float64)  # every chain starts in the lower mode
    x, info = trajectory_sample(path, n, steps=400, swap_target=0.3, generator=g, init=init)
    frac = float((x.mean(1) > 0.5).double().mean())
    se = math.sqrt(upper * (1 - upper) / n)
    assert abs(frac - upper) < 4 * se, (frac, upper, info)
    assert info["swap_rate_min"] > 0.1
    gibbs = rbm.gibbs(init, 400, generator=g)
    assert float((gibbs.mean(1) > 0.5).double().mean()) < 0.1


def test_ladder_reaches_its_target_swap_rate(bimodal_rbm):
    """Parallel tempering of the bimodal model with the automatic ladder (beta 1 to 0.02,
    target 0.3): after 400 adapting updates, the frozen ladder's neighbouring rates, over
    400 more updates of 200 chains (standard errors < 0.005), are all at least 0.25 (the
    target, less the erfc model's imprecision), and the ladder is the smallest that does
    it: the same ladder less one interior temperature swaps below 0.3 (the control)."""
    rbm = bimodal_rbm()
    g = torch.Generator().manual_seed(0)
    v = torch.zeros(200, 10, dtype=torch.float64)
    pt = ParallelTempering(n_temperatures=10, beta_min=0.02, n_chains=200, swap_target=0.3,
                           adapt_every=20, adapt_until=400)
    with torch.no_grad():
        for step in range(800):
            pt.negative(rbm, v, None, g)
            if step == 399:
                pt.stats()
    rates = pt.swap_rates()
    assert min(rates) >= 0.25, (rates, pt.betas)
    assert 3 <= pt.betas.numel() < 10 and float(pt.betas[-1]) == pytest.approx(0.02)
    fewer = torch.cat([pt.betas[:1], pt.betas[2:]])
    control = ParallelTempering(betas=fewer.tolist(), n_chains=200)
    with torch.no_grad():
        for _ in range(200):
            control.negative(rbm, v, None, g)
    assert min(control.swap_rates()) < 0.3, control.swap_rates()


def test_place_ladder_keeps_ends_and_splits_long_gaps():
    pos = torch.tensor([0.0, -1.0, -2.0], dtype=torch.float64)
    same = place_ladder(pos, torch.tensor([0.3, 0.3]), 0.3, 10)
    torch.testing.assert_close(same, pos)  # already on target: unchanged
    new = place_ladder(pos, torch.tensor([0.9, 0.01]), 0.3, 10)
    assert new[0] == 0.0 and new[-1] == -2.0 and new.numel() > 3
    assert int(((new > -1.0) & (new < 0.0)).sum()) == 0  # the easy gap gets no new point
    assert place_ladder(pos, torch.tensor([0.01, 0.01]), 0.3, 4).numel() == 4  # capped
    with pytest.raises(ConfigError, match="target"):
        place_ladder(pos, torch.tensor([0.3, 0.3]), 1.5, 10)


# --------------------------------------------------------------------------- PTT in training
@torch.no_grad()
def test_ptt_sampler_snapshots_the_model_as_it_moves(make_gen):
    rbm = strong_rbm(4, scale=0.5)
    ptt = TrajectoryTempering(k=1, n_chains=30, swap_target=0.5, max_replicas=4)
    g, v = make_gen(0), torch.zeros(5, 4, dtype=torch.float64)
    out, field = ptt.negative(rbm, v, None, g)
    assert out.shape == (30, 4) and field is None and len(ptt.models) == 1
    for _ in range(60):
        rbm.connection.weights.mul_(1.08)  # the model sharpens, as in training
        ptt.negative(rbm, v, None, g)
    assert 2 <= len(ptt.models) <= 3 and ptt.chains.shape[0] == len(ptt.models) + 1
    stats = ptt.stats()
    assert {"n_replicas", "swap_rate_min", "swap_rate_mean"} <= set(stats)
    assert stats["n_replicas"] == ptt.chains.shape[0] <= 4
    # the first snapshot (the model as it started) is kept: it mixes fastest
    assert torch.equal(ptt.models[0].connection.weights,
                       strong_rbm(4, scale=0.5).connection.weights)


@torch.no_grad()
def test_ptt_state_dict_round_trip_continues_identically(make_gen):
    rbm = strong_rbm(6, scale=0.5)
    a = TrajectoryTempering(k=1, n_chains=7, swap_target=0.95)
    g, v = make_gen(1), torch.zeros(5, 4, dtype=torch.float64)
    for _ in range(9):
        rbm.connection.weights.mul_(1.3)
        a.negative(rbm, v, None, g)
    assert len(a.models) >= 2
    b = TrajectoryTempering(k=1, n_chains=7, swap_target=0.95)
    b.load_state_dict({k: t.clone() for k, t in a.state_dict().items()})
    g2 = torch.Generator()
    g2.set_state(g.get_state())
    for _ in range(4):
        rbm.connection.weights.mul_(1.3)
        assert torch.equal(a.negative(rbm, v, None, g)[0], b.negative(rbm, v, None, g2)[0])
    assert len(a.models) == len(b.models) and torch.equal(a.chains, b.chains)
    for ma, mb in zip(a.models, b.models, strict=True):  # the snapshots came back exactly
        sa, sb = float_state(ma), float_state(mb)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_make_sampler_builds_ptt_and_refuses_misplaced_options():
    ptt = make_sampler("ptt", k=2, chains=9, swap_target=0.3, max_replicas=5)
    assert isinstance(ptt, TrajectoryTempering) and (ptt.k, ptt.n_chains) == (2, 9)
    assert (ptt.swap_target, ptt.max_replicas) == (0.3, 5)
    assert make_sampler("ptt").swap_target == 0.25
    with pytest.raises(ConfigError, match="swap_target"):
        make_sampler("pcd", swap_target=0.3)
    with pytest.raises(ConfigError, match="max_replicas"):
        make_sampler("ptt", max_replicas=1)


# --------------------------------------------------------------------------- trajectory AIS
def test_base_model_log_z_is_exact(tiny_rbm):
    rbm = tiny_rbm("bernoulli-bernoulli", seed=2)
    base = set_state(snapshot(rbm), base_state(rbm))
    assert float(base.connection.weights.abs().sum()) == 0.0
    assert abs(base_log_z(base) - exact_log_z(base)) < 1e-10


def test_trajectory_ais_follows_the_exact_log_z_along_training():
    """A 64x10 RBM trained 6 epochs on binarised digits by PCD (its chains near equilibrium
    on so small a model): every epoch the trajectory estimate of log Z agrees with the exact
    one within its 3-sigma error bar plus 0.05 nats (the legs' own schedule bias)."""
    x, _ = load_dataset("digits", "train", binarize="threshold")
    xt, _ = load_dataset("digits", "test", binarize="threshold")
    torch.manual_seed(0)
    rbm = RBM(BernoulliUnits(64), BernoulliUnits(10), generator=torch.Generator().manual_seed(0))
    exact = []
    monitor = TrajectoryAIS(xt, n_chains=100, steps=50)
    trainer = Trainer(rbm, PersistentCD(1, 100), epochs=6, batch_size=50, lr=0.05,
                      momentum=0.5, progress=False,
                      callbacks=[monitor, lambda tr, rec: exact.append(exact_log_z(tr.model))])
    history = trainer.fit(x)
    for r, lz in zip(history, exact, strict=True):
        assert abs(r["log_z"] - lz) <= r["log_z_err"] + 0.05, (r["epoch"], r["log_z"], lz)
        assert r["test_log_likelihood_err"] == r["log_z_err"]
    assert history[-1]["log_z"] != history[0]["log_z"]  # the model did move
    ll = history[-1]["test_log_likelihood"]
    with torch.no_grad():
        free = float(rbm.free_energy(rbm.prepare(xt)).double().mean())
    assert abs(ll - (-free - exact[-1])) <= history[-1]["log_z_err"] + 0.05


# --------------------------------------------------------------------------- boltzkit sample
def _hand_grid(tmp_path: Path) -> Path:
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from beam_mixtures import hand_built_grid_rbm
    finally:
        sys.path.pop(0)
    path = tmp_path / "hand.safetensors"
    save_model(hand_built_grid_rbm(), path, extra={"train_config": {
        "model": "rbm", "dataset": "mog-grid25", "visible": "gaussian", "visible_std": 0.1}})
    return path


def test_sample_starts_from_the_training_data_by_default(tmp_path, capsys):
    """The hand-built 25-mode grid RBM, sampled with default settings, shows >= 24 modes and
    >= 0.9 of its samples within 3 std of a mode (from noise: 1 mode)."""
    path = _hand_grid(tmp_path)
    spec = mixture_spec("mog-grid25")
    for extra, modes in (([], 24), (["--init", "noise"], None)):
        code = main(["sample", str(path), "--n", "1000", "--npy", str(tmp_path / "s.npy"),
                     *extra])
        out = json.loads(capsys.readouterr().out)
        assert code == 0 and out["method"] == "gibbs"
        cov = mode_coverage(np.load(tmp_path / "s.npy"), spec["means"], spec["std"])
        if modes:
            assert out["init"] == "data"
            assert cov["modes_covered"] >= modes and cov["high_quality_fraction"] >= 0.9
        else:
            assert out["init"] == "noise" and cov["modes_covered"] <= 2


def test_sample_falls_back_to_noise_without_data_and_says_so(tmp_path, capsys):
    rbm = strong_rbm(0).float()
    path = tmp_path / "m.safetensors"
    save_model(rbm, path, extra={"train_config": {"dataset": str(tmp_path / "gone.npy")}})
    code = main(["sample", str(path), "--n", "3", "--steps", "2", "--npy",
                 str(tmp_path / "s.npy")])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["init"] == "noise" and "gone.npy" in out["init_note"]
    code = main(["sample", str(path), "--n", "3", "--init", "data", "--npy",
                 str(tmp_path / "s.npy")])
    err = capsys.readouterr().err
    assert code == 2 and "gone.npy" in err and err.count("\n") == 1


def test_sample_refuses_options_of_other_methods_and_a_missing_trajectory(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    save_model(strong_rbm(0).float(), path)
    for args, word in ((["--n-temperatures", "5"], "--n-temperatures"),
                       (["--method", "pt", "--trajectory", "x"], "--trajectory"),
                       (["--method", "ptt"], "trajectory"),
                       (["--method", "pt", "--beta", "0.5"], "--beta")):
        code = main(["sample", str(path), "--npy", str(tmp_path / "s.npy"), *args])
        err = capsys.readouterr().err
        assert code == 2 and word in err and err.count("\n") == 1, (args, err)


def test_sample_by_pt_and_by_ptt_from_a_saved_trajectory(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    code = main(["train", "--model", "rbm", "--dataset", "digits", "--binarize", "threshold",
                 "--n-hidden", "8", "--epochs", "3", "--save-trajectory", "--quiet",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    traj = out.with_suffix(".trajectory.safetensors")
    assert traj.is_file()
    for method, key in (("pt", "n_temperatures"), ("ptt", "n_replicas")):
        code = main(["sample", str(out), "--method", method, "--n", "20", "--steps", "40",
                     "--npy", str(tmp_path / f"{method}.npy")])
        res = json.loads(capsys.readouterr().out)
        assert code == 0 and res[key] >= 2 and 0 <= res["swap_rate_min"] <= 1
        x = np.load(tmp_path / f"{method}.npy")
        assert x.shape == (20, 64) and set(np.unique(x)) <= {0.0, 1.0}
    # a trajectory that does not end at the model is refused
    other = tmp_path / "other.safetensors"
    save_model(RBM(BernoulliUnits(64), BernoulliUnits(8)), other)
    code = main(["sample", str(other), "--method", "ptt", "--trajectory", str(traj),
                 "--npy", str(tmp_path / "s.npy")])
    err = capsys.readouterr().err
    assert code == 2 and "does not end at" in err


def test_draw_checks_its_arguments():
    rbm = strong_rbm(0)
    with pytest.raises(ConfigError, match="gibbs.*pt.*ptt"):
        draw(rbm, 3, method="hmc")
    with pytest.raises(ConfigError, match="trajectory"):
        draw(rbm, 3, 2, method="ptt")
    x, info = draw(rbm, 3, 2, method="gibbs", generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 4) and info == {}


# --------------------------------------------------------------------------- data
def test_mixture_size_sets_the_training_split_only():
    x, y = load_dataset("mog-grid25", "train", mixture_size=1234)
    assert x.shape == (1234, 2) and y.shape == (1234,)
    assert load_dataset("mog-grid25", "test", mixture_size=1234)[0].shape == (2000, 2)
    with pytest.raises(ConfigError, match="mixture"):
        load_dataset("digits", "train", mixture_size=10)


# --------------------------------------------------------------------------- resume
@pytest.mark.parametrize("extra", [
    ["--method", "ptt", "--swap-target", "0.9", "--chains", "8"],
    ["--method", "pt", "--swap-target", "0.3", "--n-temperatures", "3"],
    ["--method", "pcd", "--trajectory-ais", "--trajectory-ais-steps", "5",
     "--save-trajectory"],
])
def test_killed_and_resumed_runs_are_bit_identical(extra, tmp_path, capsys, monkeypatch):
    """The new samplers' state (snapshots, ladder) and the trajectory monitors' state (beside
    the checkpoint) make a run killed after epoch 2 and resumed end as the whole run does:
    the same model, history, and trajectory file."""
    from boltzkit.io import read_tensors

    base = ["train", "--model", "rbm", "--dataset", "digits", "--binarize", "threshold",
            "--n-hidden", "6", "--epochs", "4", "--batch-size", "50", "--lr", "0.1", "--quiet",
            *extra]
    whole = tmp_path / "whole.safetensors"
    assert main([*base, "--checkpoint-dir", str(tmp_path / "ckw"), "--out", str(whole)]) == 0
    saves = {"n": 0}
    real = Trainer.save_checkpoint

    def killed(self, *a, **kw):
        path = real(self, *a, **kw)
        saves["n"] += 1
        if saves["n"] == 2:
            raise KeyboardInterrupt
        return path

    parted = tmp_path / "parted.safetensors"
    ck = ["--checkpoint-dir", str(tmp_path / "ck"), "--out", str(parted)]
    monkeypatch.setattr(Trainer, "save_checkpoint", killed)
    assert main([*base, *ck]) == 130
    monkeypatch.setattr(Trainer, "save_checkpoint", real)
    assert main([*base, *ck, "--resume"]) == 0, capsys.readouterr().err
    suffixes = [".safetensors"] + ([".trajectory.safetensors"] if "--save-trajectory" in extra
                                   else [])
    for suffix in suffixes:
        a, _ = read_tensors(whole.with_suffix(suffix))
        b, _ = read_tensors(parted.with_suffix(suffix))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), suffix
    strip = [{k: v for k, v in r.items() if not k.endswith("time")}
             for r in json.loads(whole.with_suffix(".history.json").read_text())]
    again = [{k: v for k, v in r.items() if not k.endswith("time")}
             for r in json.loads(parted.with_suffix(".history.json").read_text())]
    assert strip == again
    keys = set(strip[-1])
    assert ({"n_replicas"} if "ptt" in extra else {"n_temperatures"} if "pt" in extra
            else {"log_z", "test_log_likelihood_err", "trajectory_ais_reliable"}) <= keys


# --------------------------------------------------------------------------- update points
class _Probe:
    """A callback that asks to run after given batch counts and records what it saw."""

    def __init__(self, points):
        self.points, self.seen = points, []

    def update_points(self, trainer, epoch, n_batches):
        return self.points

    def on_update(self, trainer, epoch, done):
        self.seen.append((epoch, done, trainer.model.connection.weights.detach().clone()))

    def __call__(self, trainer, record):
        self.seen.append((record["epoch"], "end", None))


@pytest.mark.parametrize("fused", [True, False])
def test_callbacks_run_after_the_batches_they_ask_for(fused, monkeypatch):
    """Within-epoch callbacks run after exactly the batch counts asked (0 and n_batches are
    not within), on the fused step (its runs split there) as on the general path, and
    splitting the fused runs changes no update."""
    from boltzkit import kernels

    x = (torch.rand(40, 12, generator=torch.Generator().manual_seed(0)) < 0.4).float()

    def fit(callbacks):
        rbm = RBM(BernoulliUnits(12), BernoulliUnits(5), generator=torch.Generator().manual_seed(1))
        if not fused:
            monkeypatch.setattr(kernels, "plan_step", lambda *a, **kw: None)
        Trainer(rbm, PersistentCD(k=1, n_chains=10), epochs=2, batch_size=10, lr=0.1,
                momentum=0.5, progress=False, monitor_size=0,
                callbacks=callbacks).fit(x)
        monkeypatch.undo()
        return rbm

    probe = _Probe([0, 1, 3, 4, 7])
    with_probe = fit([probe])
    assert [(e, d) for e, d, _ in probe.seen] == [(0, 1), (0, 3), (1, "end"), (1, 1), (1, 3),
                                                  (2, "end")]
    plain = fit([])
    assert torch.equal(with_probe.connection.weights, plain.connection.weights)
    start = RBM(BernoulliUnits(12), BernoulliUnits(5),
                generator=torch.Generator().manual_seed(1)).connection.weights.detach()
    after1, after3 = probe.seen[0][2], probe.seen[1][2]
    assert not torch.equal(after1, start) and not torch.equal(after1, after3)


def test_trajectory_keeps_log_spaced_updates_and_epoch_ends(tmp_path, capsys):
    from boltzkit.trajectory import load_trajectory, log_spaced_updates

    assert log_spaced_updates(12, 5) == [1, 2, 3, 6, 12]
    assert log_spaced_updates(3, 10) == [1, 2, 3] and log_spaced_updates(10, 0) == []
    out = tmp_path / "m.safetensors"
    # 120 rows in batches of 30: 4 batches an epoch, 12 updates in 3 epochs
    np.save(tmp_path / "x.npy", (np.random.default_rng(0).random((120, 16)) < 0.5)
            .astype(np.float32))
    code = main(["train", "--model", "rbm", "--dataset", str(tmp_path / "x.npy"),
                 "--binarize", "none", "--n-hidden", "4", "--epochs", "3", "--batch-size",
                 "30", "--save-trajectory", "--trajectory-updates", "5", "--quiet",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    template, states, epochs = load_trajectory(out.with_suffix(".trajectory.safetensors"))
    # updates 1, 2, 3 (epoch 1) and 6 (epoch 2, after 2 of its 4 batches); the ends
    assert epochs == [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]
    assert len(states) == 7 and not torch.equal(states[0]["connection.weights"],
                                                states[1]["connection.weights"])
    from boltzkit.io import load_model

    final = load_model(out)
    assert torch.equal(states[-1]["connection.weights"], final.connection.weights)
