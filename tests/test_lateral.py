"""Ising, Potts and semi-restricted RBMs (boltzkit.models.lateral) against brute force.

Every reference here is computed independently by enumerating states with
itertools and summing exp(-energy) written out by hand.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from boltzkit import BernoulliUnits, SoftmaxUnits
from boltzkit.cli import main
from boltzkit.errors import ConfigError, DataError, ModelFileError
from boltzkit.io import load_model, read_tensors, save_model, save_tensors
from boltzkit.metrics import exact_log_z as rbm_exact_log_z
from boltzkit.models.lateral import (
    IsingModel,
    PottsModel,
    SemiRestrictedRBM,
    ais_log_z,
    exact_log_z,
    exact_probabilities,
    exact_sample,
    fit_pcd,
    fit_pseudo_likelihood,
    potts_one_hot,
    pseudo_log_likelihood,
)
from boltzkit.rbm import RBM

torch.set_num_threads(1)
D = torch.float64


def _sym(n: int, gen: torch.Generator, scale: float, block: int = 1) -> torch.Tensor:
    a = torch.randn(n, n, generator=gen, dtype=D) * scale
    j = (a + a.t()) / 2
    site = torch.arange(n) // block
    return j * (site[:, None] != site[None, :])


def ising(n=5, spins="pm1", seed=0, scale=0.6, scan="sequential") -> IsingModel:
    gen = torch.Generator().manual_seed(seed)
    m = IsingModel(n, spins=spins, scan=scan).double()
    m.set_couplings(_sym(n, gen, scale))
    with torch.no_grad():
        m.visible.bias.copy_(torch.randn(n, generator=gen, dtype=D) * 0.4)
    return m


def potts(n_sites=3, q=3, seed=0, scale=0.6, scan="sequential") -> PottsModel:
    gen = torch.Generator().manual_seed(seed)
    m = PottsModel(n_sites, q, scan=scan).double()
    m.set_couplings(_sym(n_sites * q, gen, scale, block=q))
    with torch.no_grad():
        m.visible.bias.copy_(torch.randn(n_sites * q, generator=gen, dtype=D) * 0.4)
    return m


def srbm(nv=6, nh=4, seed=0, scale=0.5, q=1) -> SemiRestrictedRBM:
    """Bernoulli visibles, or softmax visibles in groups of q when q > 1."""
    gen = torch.Generator().manual_seed(seed)
    vis = BernoulliUnits(nv) if q == 1 else SoftmaxUnits(nv, group_size=q)
    m = SemiRestrictedRBM(vis, BernoulliUnits(nh)).double()
    m.set_couplings(_sym(nv, gen, scale, block=q))
    with torch.no_grad():
        m.connection.weights.copy_(torch.randn(nv, nh, generator=gen, dtype=D) * scale)
        m.visible.bias.copy_(torch.randn(nv, generator=gen, dtype=D) * scale)
        m.hidden.bias.copy_(torch.randn(nh, generator=gen, dtype=D) * scale)
    return m


# --- brute force references ---------------------------------------------------------------
def states_of(model) -> torch.Tensor:
    if isinstance(model, PottsModel):
        eye = torch.eye(model.q, dtype=D)
        return torch.stack([torch.cat([eye[a] for a in c])
                            for c in itertools.product(range(model.q), repeat=model.n_sites)])
    lo, hi = (-1.0, 1.0) if model.spins == "pm1" else (0.0, 1.0)
    return torch.tensor(list(itertools.product((lo, hi), repeat=model.visible.n)), dtype=D)


def brute_energy(model, x: torch.Tensor) -> torch.Tensor:
    """-h.x - sum_{i<j} J_ij x_i x_j, written as an explicit double loop."""
    j = model.coupling_matrix().detach()
    h = model.visible.bias.detach()
    out = -(x @ h)
    n = x.shape[1]
    for a in range(n):
        for b in range(a + 1, n):
            out = out - j[a, b] * x[:, a] * x[:, b]
    return out


def brute_srbm_free_energy(m: SemiRestrictedRBM, v: torch.Tensor) -> torch.Tensor:
    hs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=m.n_hidden)), dtype=D)
    W, b, c = m.connection.weights.detach(), m.visible.bias.detach(), m.hidden.bias.detach()
    L = m.coupling_matrix().detach()
    e = (-(v @ b)[:, None] - (hs @ c)[None, :] - (v @ W) @ hs.t()
         - 0.5 * ((v @ L) * v).sum(1)[:, None])  # (B, 2^H) joint energies
    return -torch.logsumexp(-e, 1)


# --- energies, conditionals, log Z ---------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: ising(spins="pm1"), lambda: ising(spins="01"),
                                  lambda: potts()], ids=["ising-pm1", "ising-01", "potts"])
def test_energy_and_log_z_match_brute_force(make):
    m = make()
    x = states_of(m)
    assert torch.allclose(m.energy(x), brute_energy(m, x), atol=1e-12)
    assert exact_log_z(m) == pytest.approx(float(torch.logsumexp(-brute_energy(m, x), 0)),
                                           abs=1e-10)


@pytest.mark.parametrize("make", [lambda: ising(spins="pm1"), lambda: ising(spins="01"),
                                  lambda: potts(), lambda: srbm(), lambda: srbm(q=3)],
                         ids=["ising-pm1", "ising-01", "potts", "srbm", "srbm-softmax"])
def test_conditionals_match_energy_by_brute_force(make):
    """log p(x_i | x_-i) = -E(x) - log sum over the alternatives of site i of exp(-E)."""
    m = make()
    gen = torch.Generator().manual_seed(3)
    x = m.random_states(7, gen)
    g = m.group_size
    lo, hi = (-1.0, 1.0) if m.spins == "pm1" else (0.0, 1.0)
    f = (brute_srbm_free_energy if isinstance(m, SemiRestrictedRBM) else brute_energy)
    got = m.log_conditionals(x).detach()
    for i in range(m.n_sites):
        alts = []
        for a in range(max(g, 2)):
            y = x.clone()
            if g == 1:
                y[:, i] = (lo, hi)[a]
            else:
                y[:, i * g:(i + 1) * g] = torch.eye(g, dtype=D)[a]
            alts.append(-f(m, y))
        want = -f(m, x) - torch.logsumexp(torch.stack(alts, 1), 1)
        assert torch.allclose(got[:, i], want, atol=1e-10), i
    if not isinstance(m, SemiRestrictedRBM):
        p = m.conditional_probs(x)
        if g == 1:  # P(s_i = high) from the log-conditional of the observed value
            on = x == hi
            assert torch.allclose(torch.where(on, p, 1 - p), got.exp(), atol=1e-12)


def test_srbm_free_energy_vs_brute_force_and_rbm():
    m = srbm(nv=5, nh=4)
    v = torch.tensor(list(itertools.product((0.0, 1.0), repeat=5)), dtype=D)
    assert torch.allclose(m.free_energy(v), brute_srbm_free_energy(m, v), atol=1e-10)
    h = torch.tensor(list(itertools.product((0.0, 1.0), repeat=4)), dtype=D)[5:6].expand(32, -1)
    e = m.energy(v, h)
    assert torch.allclose(e, m.rbm.energy(v, h) - 0.5 * ((v @ m.coupling_matrix()) * v).sum(1))
    # exact log Z (visible enumeration, hidden closed form) vs the double sum
    ref = float(torch.logsumexp(-brute_srbm_free_energy(m, v), 0))
    assert exact_log_z(m) == pytest.approx(ref, abs=1e-10)
    # with L = 0 it is the plain RBM, whose log Z boltzkit.metrics computes another way
    m.set_couplings(torch.zeros(5, 5, dtype=D))
    assert exact_log_z(m) == pytest.approx(rbm_exact_log_z(m.rbm, layer="hidden"), abs=1e-10)
    assert isinstance(m.rbm, RBM)


# --- sampling ---------------------------------------------------------------------------------
@pytest.mark.parametrize("make,scan", [(lambda s: ising(5, "pm1", scan=s), "sequential"),
                                       (lambda s: ising(5, "01", scan=s), "random"),
                                       (lambda s: potts(3, 3, scan=s), "colored"),
                                       (lambda s: srbm(5, 3), "sequential")],
                         ids=["ising-seq", "ising01-random", "potts-colored", "srbm"])
def test_gibbs_matches_exact_distribution(make, scan):
    """TV distance between 20,000 independent chains and the exact distribution.

    For K states and N independent draws E[TV] <= 0.5 sqrt(K / N) (Cauchy-Schwarz on
    sum_k sqrt(p_k (1-p_k) / N)); K <= 32, N = 20,000 gives 0.020.  Chains run 40
    sweeps from uniform states (the models mix in a few), and the test allows 1.5x
    that bound for the remaining burn-in bias.
    """
    m = make(scan)
    gen = torch.Generator().manual_seed(11)
    n = 20000
    x = m.sample(n, steps=40, generator=gen)
    states, p = exact_probabilities(m)
    idx = (x[:, None, :] == states[None]).all(-1).double().argmax(1)
    emp = torch.bincount(idx, minlength=len(states)).double() / n
    tv = 0.5 * float((emp - p).abs().sum())
    bound = 0.5 * math.sqrt(len(states) / n)
    assert tv < 1.5 * bound, (tv, bound)


def test_colored_blocks_are_independent_sets():
    gen = torch.Generator().manual_seed(0)
    m = IsingModel(16, scan="colored").double()
    j = torch.zeros(16, 16, dtype=D)
    for r in range(4):  # 4x4 open lattice: 2 colours (checkerboard)
        for c in range(4):
            i = 4 * r + c
            for k in ([i + 1] if c < 3 else []) + ([i + 4] if r < 3 else []):
                j[i, k] = j[k, i] = float(torch.randn(1, generator=gen))
    m.set_couplings(j)
    blocks = m.blocks()
    assert len(blocks) == 2
    assert sorted(torch.cat(blocks).tolist()) == list(range(16))
    for b in blocks:
        assert float(j[b][:, b].abs().sum()) == 0.0


# --- pseudo-likelihood gradient ------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: ising(6, "pm1"), lambda: potts(), lambda: srbm()],
                         ids=["ising", "potts", "srbm"])
def test_pseudo_likelihood_gradient_vs_finite_differences(make):
    m = make()
    gen = torch.Generator().manual_seed(5)
    x = m.random_states(13, gen)
    params = dict(m.named_parameters())
    loss = pseudo_log_likelihood(m, x)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    j_grad = grads[m._coupling_name]
    assert torch.allclose(j_grad, j_grad.t())  # symmetric ...
    assert float((j_grad * (1 - m.coupling_mask)).abs().max()) == 0.0  # ... zero within sites
    eps = 1e-6
    for name, p in params.items():
        flat = p.detach().view(-1)
        for k in torch.randperm(flat.numel(), generator=gen)[:6].tolist():
            old = float(flat[k])
            with torch.no_grad():
                flat[k] = old + eps
                up = float(pseudo_log_likelihood(m, x))
                flat[k] = old - eps
                down = float(pseudo_log_likelihood(m, x))
                flat[k] = old
            assert float(grads[name].view(-1)[k]) == pytest.approx((up - down) / (2 * eps),
                                                                  abs=1e-7), (name, k)


# --- learning: coupling recovery -------------------------------------------------------------
def _recovery_model() -> IsingModel:
    """8 spins on a ring plus two chords, couplings +-0.5, small fields."""
    m = IsingModel(8, spins="pm1").double()
    j = torch.zeros(8, 8, dtype=D)
    edges = [(i, (i + 1) % 8) for i in range(8)] + [(0, 4), (2, 6)]
    for k, (a, b) in enumerate(edges):
        j[a, b] = j[b, a] = 0.5 if k % 3 else -0.5
    m.set_couplings(j)
    with torch.no_grad():
        m.visible.bias.copy_(torch.linspace(-0.2, 0.2, 8, dtype=D))
    return m


def _coupling_errors(est, true):
    iu = torch.triu_indices(8, 8, 1)
    d = (est.coupling_matrix() - true.coupling_matrix()).detach()[iu[0], iu[1]]
    return float(d.pow(2).mean().sqrt()), float(d.abs().max())


@pytest.fixture(scope="module")
def recovery_data():
    true = _recovery_model()
    data = exact_sample(true, 4000, torch.Generator().manual_seed(0))
    return true, data


def test_pseudo_likelihood_recovers_couplings(recovery_data):
    """N = 4000 exact samples; L-BFGS reaches the exact maximum-PL estimate, so the error
    is purely statistical: ~ 1/sqrt(N * Fisher information) ~ 0.025 per coupling.  Over 8
    independent draws of N = 4000 (seeds 0-7, measured once) the RMSE over the 28 couplings
    was 0.021-0.031 and the max error 0.038-0.068; tolerances 0.045 and 0.1 sit above that
    spread, while an estimator that ignored the data (J = 0) would have RMSE 0.30."""
    true, data = recovery_data
    m = IsingModel(8, spins="pm1").double()
    hist = fit_pseudo_likelihood(m, data, epochs=4, lr=1.0, optimizer="lbfgs")
    rmse, worst = _coupling_errors(m, true)
    assert rmse < 0.045 and worst < 0.1, (rmse, worst)
    assert hist[-1]["pseudo_log_likelihood"] > hist[0]["pseudo_log_likelihood"] - 1e-9
    assert hist[-1]["loss"] == pytest.approx(hist[-2]["loss"], abs=1e-7)  # converged
    assert float((m.fields - true.fields).detach().abs().max()) < 0.1
    # minibatch Adam climbs towards the same optimum
    m2 = IsingModel(8, spins="pm1").double()
    fit_pseudo_likelihood(m2, data, epochs=10, batch_size=500, lr=0.05, optimizer="adam")
    assert _coupling_errors(m2, true)[0] < 0.06


def test_pcd_recovers_couplings(recovery_data):
    """PCD adds Monte Carlo noise from its persistent chains (1000 chains, Adam lr
    dropped to 0.005 for the last 15 epochs): tolerances ~1.5x those of the exact
    pseudo-likelihood fit (measured at seed 0: RMSE 0.033, max 0.072)."""
    true, data = recovery_data
    m = IsingModel(8, spins="pm1", scan="random").double()
    fit_pcd(m, data, epochs=30, batch_size=400, lr=0.03, chains=1000, optimizer="adam")
    fit_pcd(m, data, epochs=15, batch_size=1000, lr=0.005, chains=1000, optimizer="adam",
            init_fields=False, seed=1)
    rmse, worst = _coupling_errors(m, true)
    assert rmse < 0.07 and worst < 0.15, (rmse, worst)


# --- AIS for the semi-restricted RBM ---------------------------------------------------------
def test_srbm_ais_matches_exact_log_z():
    m = srbm(nv=8, nh=5, seed=2, scale=0.5)
    res = ais_log_z(m, n_chains=200, n_steps=300, generator=torch.Generator().manual_seed(0))
    exact = exact_log_z(m)
    assert res.log_z == pytest.approx(exact, abs=max(0.05, 3 * res.log_z_std))
    assert res.reliable


# --- save / load ------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: ising(5, "pm1", scan="colored"), lambda: potts(),
                                  lambda: srbm()], ids=["ising", "potts", "srbm"])
def test_save_load_round_trip(make, tmp_path):
    m = make().float()
    path = save_model(m, tmp_path / "m.safetensors")
    back = load_model(path)
    assert type(back) is type(m) and back.config() == m.config()
    x = m.random_states(9, torch.Generator().manual_seed(0))
    assert torch.equal(back.free_energy(x), m.free_energy(x))
    tensors, _ = read_tensors(path)
    assert set(tensors) >= {"visible_bias", m._coupling_name}


def test_load_refuses_asymmetric_couplings(tmp_path):
    m = ising(4, "01").float()
    path = save_model(m, tmp_path / "m.safetensors")
    tensors, header = read_tensors(path)
    tensors["couplings"][0, 1] += 1.0
    save_tensors(path, tensors, header)
    with pytest.raises(ModelFileError, match="symmetric"):
        load_model(path)


# --- bad input --------------------------------------------------------------------------------
def test_bad_input_gives_clear_errors():
    m = IsingModel(4)
    with pytest.raises(DataError, match="spin values 0 and 1"):
        fit_pseudo_likelihood(m, torch.tensor([[0.0, 0.5, 1.0, 1.0]]), epochs=1)
    with pytest.raises(DataError, match="spins='01'"):
        fit_pseudo_likelihood(IsingModel(2, spins="pm1"), torch.tensor([[0.0, 1.0]]), epochs=1)
    with pytest.raises(DataError, match="NaN"):
        m.validate(torch.tensor([[0.0, float("nan"), 1.0, 1.0]]))
    with pytest.raises(DataError, match="4 units"):
        m.validate(torch.zeros(3, 5))
    with pytest.raises(ConfigError, match="symmetric"):
        m.set_couplings(torch.triu(torch.ones(4, 4), 1))
    with pytest.raises(ConfigError, match="diagonal"):
        m.set_couplings(torch.eye(4))
    with pytest.raises(ConfigError, match="spins"):
        IsingModel(3, spins="+-")
    p = PottsModel(3, q=3)
    with pytest.raises(DataError, match="wrong q"):
        p.one_hot(torch.tensor([[0, 1, 3]]))
    with pytest.raises(DataError, match="wrong q"):
        p.validate(torch.zeros(2, 8))
    with pytest.raises(DataError, match="one-hot"):
        p.validate(torch.zeros(2, 9))
    with pytest.raises(ConfigError, match="within-site"):
        p.set_couplings(torch.ones(9, 9) - torch.eye(9))
    with pytest.raises(ConfigError, match="q >= 2"):
        PottsModel(3, q=1)
    assert torch.equal(potts_one_hot([[2, 0]], 3), torch.tensor([[0.0, 0, 1, 1, 0, 0]]))


# --- command line -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", [["--objective", "pl"],
                                    ["--objective", "ml", "--method", "pcd"],
                                    ["--objective", "ml", "--method", "pt", "--n-temperatures",
                                     "3"],
                                    ["--objective", "ml", "--method", "tds"]])
def test_cli_trains_ising(method, tmp_path, capsys):
    true = _recovery_model()
    data = exact_sample(true, 300, torch.Generator().manual_seed(1)).numpy()
    np.save(tmp_path / "spins.npy", data)
    out = tmp_path / "ising.safetensors"
    rc = main(["train", "--model", "ising", "--dataset", str(tmp_path / "spins.npy"),
               "--binarize", "none", "--lateral-spins", "pm1", *method,
               "--epochs", "3", "--optimizer", "adam", "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    model = load_model(out)
    assert isinstance(model, IsingModel) and model.spins == "pm1"
    # a plain 0/1 threshold of {-1,+1} data is refused with a pointer to the fix
    rc = main(["train", "--model", "ising", "--dataset", str(tmp_path / "spins.npy"),
               "--binarize", "threshold", "--lateral-spins", "pm1", "--out", str(out),
               "--quiet"])
    assert rc == 2 and "spins='01'" in capsys.readouterr().err


def test_cli_trains_potts_from_labels(tmp_path, capsys):
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(3, (200, 4), generator=gen).numpy().astype(np.float32)
    np.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "potts.safetensors"
    rc = main(["train", "--model", "potts", "--dataset", str(tmp_path / "labels.npy"),
               "--binarize", "none", "--epochs", "2", "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    model = load_model(out)
    assert isinstance(model, PottsModel) and (model.n_sites, model.q) == (4, 3)
    rc = main(["train", "--model", "potts", "--dataset", str(tmp_path / "labels.npy"),
               "--binarize", "none", "--lateral-q", "2", "--out", str(out), "--quiet"])
    assert rc == 2 and "wrong q" in capsys.readouterr().err
