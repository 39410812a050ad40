"""BEAM: adversarial gradient, critics, the Gamma temperature process, driven PCD, resume."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from boltzkit import RBM, GaussianUnits, LikelihoodGradient, Trainer, make_rbm
from boltzkit.adversarial import (
    AdversarialGradient,
    DistanceWeightedKNNCritic,
    DivergenceMonitor,
    KNNCritic,
    adversarial_surrogate,
)
from boltzkit.data import load_dataset, mixture_spec
from boltzkit.driven import DrivenPCD, GammaProcess, driven_sample, sample_gamma
from boltzkit.errors import ConfigError
from boltzkit.metrics.divergence import mode_coverage
from boltzkit.sampling import make_sampler
from boltzkit.units import BernoulliUnits


# --- the adversarial gradient against finite differences of an exact expectation --------
def _tiny_model() -> RBM:
    rbm = make_rbm(4, 3, seed=1).double()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in rbm.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.7)
    return rbm


def _joint_states(rbm):
    vs = next(rbm.visible.enumerate_states())
    hs = next(rbm.hidden.enumerate_states())
    pairs = list(itertools.product(range(vs.shape[0]), range(hs.shape[0])))
    v = vs[[a for a, _ in pairs]]
    h = hs[[b for _, b in pairs]]
    return v, h


def _t_of_h(h):  # a fixed, non-linear critic on the hidden states
    return torch.sin(h @ torch.tensor([1.0, 2.0, 4.0], dtype=h.dtype) + 0.3)


def _t_of_v(v):
    return torch.cos(v @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=v.dtype))


def _exact_a(rbm, mode):
    with torch.no_grad():
        if mode == "energy":
            v, h = _joint_states(rbm)
            logp = -rbm.energy(v, h)
            t = _t_of_h(h)
        else:
            v = next(rbm.visible.enumerate_states())
            logp = -rbm.free_energy(v)
            t = _t_of_v(v)
        return float((torch.softmax(logp, 0) * t).sum())


@pytest.mark.parametrize("mode", ["energy", "free_energy"])
def test_adversarial_gradient_matches_finite_differences(mode):
    rbm = _tiny_model()
    if mode == "energy":
        v, h = _joint_states(rbm)
        with torch.no_grad():
            w = torch.softmax(-rbm.energy(v, h), 0)
        t = _t_of_h(h)
    else:
        v, h = next(rbm.visible.enumerate_states()), None
        with torch.no_grad():
            w = torch.softmax(-rbm.free_energy(v), 0)
        t = _t_of_v(v)
    params = list(rbm.parameters())
    s = adversarial_surrogate(rbm, v, t, h, weights=w)
    grads = torch.autograd.grad(s, params)
    eps = 1e-6
    for p, g in zip(params, grads, strict=True):
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            flat[i] = old + eps
            up = _exact_a(rbm, mode)
            flat[i] = old - eps
            down = _exact_a(rbm, mode)
            flat[i] = old
            fd = (up - down) / (2 * eps)
            # the surrogate's gradient is the descent direction: -dA/dtheta
            assert -float(g.view(-1)[i]) == pytest.approx(fd, abs=1e-7, rel=1e-5)


def test_gamma_one_is_likelihood_and_gamma_mixes_the_two():
    rbm = make_rbm(6, 4, seed=0)
    g = torch.Generator().manual_seed(0)
    vd = (torch.rand(20, 6, generator=g) < 0.5).float()
    vm = (torch.rand(30, 6, generator=g) < 0.5).float()

    def grads(obj):
        for p in rbm.parameters():
            p.grad = None
        obj.compute(rbm, vd, vm)
        return [p.grad.clone() for p in rbm.parameters()]

    ml = grads(LikelihoodGradient())
    assert all(torch.equal(a, b) for a, b in zip(ml, grads(AdversarialGradient(gamma=1.0)),
                                                  strict=True))
    crit = KNNCritic(3)
    with torch.no_grad():
        t = crit(rbm.hidden_mean(vm), rbm.hidden_mean(vd), None)
    s = adversarial_surrogate(rbm, vm, t)
    adv = torch.autograd.grad(s, list(rbm.parameters()))
    mixed = grads(AdversarialGradient(crit, gamma=0.3))
    for a, b, c in zip(mixed, ml, adv, strict=True):
        torch.testing.assert_close(a, 0.3 * b + 0.7 * c)


def test_gamma_schedule_counts_epochs_and_resumes():
    obj = AdversarialGradient(gamma_schedule=[(0, 1.0), (2, 0.1)])
    rbm = make_rbm(4, 3, seed=0)
    data = torch.zeros(10, 4)
    obj.setup(rbm, data)
    seen = []
    for _ in range(6):  # 3 epochs of 2 batches of 5
        seen.append(obj.gamma_at(obj.epoch))
        obj.compute(rbm, data[:5], data[:5])
    assert seen == [1.0, 1.0, 1.0, 1.0, 0.1, 0.1]
    other = AdversarialGradient(gamma_schedule=[(0, 1.0), (2, 0.1)])
    other.load_state_dict(obj.state_dict())
    assert other.epoch == 3 and torch.equal(other.previous, obj.previous)
    with pytest.raises(ConfigError):
        AdversarialGradient(gamma=1.5)
    with pytest.raises(ConfigError):
        AdversarialGradient(critic="bogus")


# --- critics ------------------------------------------------------------------------------
@pytest.mark.parametrize("critic", [KNNCritic(5), DistanceWeightedKNNCritic(5, 0.01)])
def test_knn_critics_on_separated_clusters(critic):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(50, 2, generator=g) * 0.1
    prev = torch.randn(50, 2, generator=g) * 0.1 + 10.0
    fantasy = torch.cat([torch.randn(10, 2, generator=g) * 0.05,
                         torch.randn(10, 2, generator=g) * 0.1 + 10.0])
    t = critic(fantasy, data, prev)
    torch.testing.assert_close(t[:10], torch.ones(10))  # among data: looks real
    torch.testing.assert_close(t[10:], -torch.ones(10))  # among fantasy particles only
    t0 = critic(fantasy, data, None)  # no cache: leave-one-out on the current particles
    torch.testing.assert_close(t0[10:], -torch.ones(10))


# --- the Gamma temperature process ---------------------------------------------------------
def test_sample_gamma_moments():
    g = torch.Generator().manual_seed(0)
    n = 40000
    for a in (0.3, 1.0, 4.0):
        x = sample_gamma(torch.full((n,), a, dtype=torch.float64), g)
        assert bool((x > 0).all())
        se_mean = math.sqrt(a / n)
        assert float(x.mean()) == pytest.approx(a, abs=5 * se_mean)
        assert float(x.var()) == pytest.approx(a, rel=0.08)


@pytest.mark.parametrize("std,rho", [(0.5, 0.9), (0.9, 0.5)])
def test_gamma_process_mean_variance_autocorrelation(std, rho):
    g = torch.Generator().manual_seed(1)
    proc = GammaProcess(std, rho)
    n = 40000
    b0 = proc.initial(n, g, torch.float64)
    for _ in range(3):  # stays stationary
        b0 = proc.step(b0, g)
    b1 = proc.step(b0, g)
    nu = 1.0 / std**2
    var = std**2
    assert float(b1.mean()) == pytest.approx(1.0, abs=5 * math.sqrt(var / n))
    se_var = var * math.sqrt((2.0 + 6.0 / nu) / n)
    assert float(b1.var()) == pytest.approx(var, abs=5 * se_var)
    corr = float(torch.corrcoef(torch.stack([b0, b1]))[0, 1])
    assert corr == pytest.approx(rho, abs=5 * (1 + rho) / math.sqrt(n))
    # conditional mean (1 - rho) + rho beta
    fixed = torch.full((n,), 2.0, dtype=torch.float64)
    assert float(proc.step(fixed, g).mean()) == pytest.approx(1 - rho + 2 * rho, abs=0.02)


def test_gamma_process_is_reproducible():
    proc = GammaProcess(0.5, 0.9)
    a = proc.step(torch.ones(100), torch.Generator().manual_seed(3))
    b = proc.step(torch.ones(100), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ConfigError):
        GammaProcess(0.5, 1.0)


# --- driven PCD -------------------------------------------------------------------------------
def test_driven_pcd_state_round_trip():
    rbm = make_rbm(6, 4, seed=0)
    data = (torch.rand(10, 6, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    s = make_sampler("tds", k=2, chains=7)
    assert isinstance(s, DrivenPCD)
    g = torch.Generator().manual_seed(5)
    s.negative(rbm, data, rbm.hidden_field(data), g)
    assert s.betas.shape == (7, 1)
    other = DrivenPCD(k=2, n_chains=7)
    other.load_state_dict(s.state_dict())
    g2 = torch.Generator()
    g2.set_state(g.get_state())
    a, _ = s.negative(rbm, data, None, g)
    b, _ = other.negative(rbm, data, None, g2)
    assert torch.equal(a, b) and torch.equal(s.betas, other.betas)
    assert set(s.stats()) == {"beta_mean", "beta_min"}


def test_driven_pcd_readout_returns_beta_one_sweeps_of_the_driven_chains():
    rbm = make_rbm(6, 4, seed=0)
    data = (torch.rand(10, 6, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    plain, read = DrivenPCD(k=1, n_chains=5), DrivenPCD(k=1, n_chains=5, readout_steps=2)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, _ = plain.negative(rbm, data, None, g1)
    b, field = read.negative(rbm, data, None, g2)
    # the persistent (driven) chains are the same; the handed-out particles are 2 more
    # beta = 1 sweeps from them, drawn next from the same generator
    assert torch.equal(plain.chains, read.chains) and torch.equal(a, plain.chains)
    expect = rbm.gibbs(plain.chains, 2, generator=g1)
    assert torch.equal(b, expect) and torch.equal(field, rbm.hidden_field(b))
    with pytest.raises(ConfigError):
        DrivenPCD(readout_steps=-1)


def _beam_trainer(epochs, ckpt):
    model = make_rbm(10, 4, seed=3)
    obj = AdversarialGradient("dwknn", gamma_schedule=[(0, 1.0), (1, 0.2)], k=3)
    return Trainer(model, DrivenPCD(k=2, n_chains=8), obj, epochs=epochs, batch_size=10,
                   lr=0.05, momentum=0.5, seed=4, checkpoint_dir=ckpt,
                   signature={"method": "tds", "objective": "beam"})


def test_driven_beam_resume_is_bit_identical(tmp_path):
    data = (torch.rand(43, 10, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    full = _beam_trainer(3, tmp_path / "full")
    full.fit(data)
    first = _beam_trainer(1, tmp_path / "resumed")
    first.fit(data)
    second = _beam_trainer(3, tmp_path / "resumed")
    second.fit(data, resume=True)
    for a, b in zip(full.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(full.sampler.betas, second.sampler.betas)
    assert full.objective.epoch == second.objective.epoch == 3


# --- end to end -------------------------------------------------------------------------------
def test_short_beam_run_covers_both_modes_of_mog_1d():
    spec = mixture_spec("mog-1d")
    train, _ = load_dataset("mog-1d", "train", seed=0, limit=4000)
    test, _ = load_dataset("mog-1d", "test", seed=0, limit=500)
    rbm = RBM(GaussianUnits(1, std=spec["std"]), BernoulliUnits(20),
              generator=torch.Generator().manual_seed(0))
    obj = AdversarialGradient("knn", gamma_schedule=[(0, 1.0), (2, 0.1)])
    monitor = DivergenceMonitor(test, every=3, n_samples=500, steps=50)
    # 10 epochs: after 6, one of three seeds still held a mode at under 5% of the mass
    # (sample counts below the coverage threshold), after 10 all three cover both.
    trainer = Trainer(rbm, DrivenPCD(k=1, n_chains=100), obj, epochs=10, batch_size=100,
                      lr=0.01, optimizer="adam", momentum=0.5, seed=0, callbacks=[monitor],
                      progress=False)
    trainer.fit(train)
    assert "knn_forward_kl" in trainer.history[2] and "knn_reverse_kl" in trainer.history[8]
    assert "knn_forward_kl" not in trainer.history[0]
    x = rbm.sample(1000, steps=500, generator=torch.Generator().manual_seed(1),
                   return_mean=False)
    cov = mode_coverage(x, spec["means"], spec["std"])
    assert cov["modes_covered"] == 2, cov
    assert cov["high_quality_fraction"] > 0.8, cov
    # The model's own density (quadrature of exp(-F(v)) on a grid) has both modes too.
    # (The split between them is not pinned down: persistent chains at beta = 1 rarely
    # cross between modes 8 std apart, so short runs leave the mode weights unbalanced.)
    grid = torch.linspace(-6, 6, 4801).unsqueeze(1)
    with torch.no_grad():
        p = torch.softmax(-rbm.free_energy(grid), 0)
    for mu in (-2.0, 2.0):
        near = (grid[:, 0] - mu).abs() <= 3 * spec["std"]
        assert float(p[near].sum()) > 0.02, (mu, float(p[near].sum()))
    y = driven_sample(rbm, 300, steps=100, generator=torch.Generator().manual_seed(2))
    assert y.shape == (300, 1) and bool(torch.isfinite(y).all())
    assert mode_coverage(y, spec["means"], spec["std"])["modes_covered"] == 2


def test_cli_beam_config_trains_and_resumes(tmp_path, capsys):
    from pathlib import Path

    from boltzkit.cli import main
    from boltzkit.io import load_model

    cfg = Path(__file__).resolve().parents[1] / "examples" / "configs" / "beam-mog-1d.toml"
    args = ["train", "--config", str(cfg), "--limit", "300", "--gamma-warmup", "1",
            "--out", str(tmp_path / "m.safetensors"), "--checkpoint-dir", str(tmp_path / "ck"),
            "--quiet"]
    assert main(args + ["--epochs", "2"]) == 0
    assert main(args + ["--epochs", "3", "--resume"]) == 0
    model = load_model(tmp_path / "m.safetensors")
    assert model.n_visible == 1 and model.n_hidden == 20
    assert main(args + ["--epochs", "4", "--resume", "--gamma", "0.9"]) != 0  # changed run
    capsys.readouterr()


def test_readout_steps_reach_the_driven_sampler_from_config_and_flags(tmp_path):
    from pathlib import Path

    from boltzkit.cli import main
    from boltzkit.errors import ConfigError
    from boltzkit.sampling import make_sampler

    assert make_sampler("tds", readout_steps=2).readout_steps == 2
    with pytest.raises(ConfigError, match="readout_steps applies"):
        make_sampler("pcd", readout_steps=1)
    cfg = Path(__file__).resolve().parents[1] / "examples" / "configs" / "tds-mog-1d.toml"
    out = tmp_path / "m.safetensors"
    assert main(["train", "--config", str(cfg), "--limit", "200", "--epochs", "1",
                 "--out", str(out), "--quiet"]) == 0
    assert "readout_steps = 1" in out.with_suffix(".config.toml").read_text()
    assert main(["train", "--dataset", "mog-1d", "--visible", "gaussian", "--limit", "200",
                 "--epochs", "1", "--method", "pcd", "--readout-steps", "1",
                 "--out", str(out), "--quiet"]) == 2
