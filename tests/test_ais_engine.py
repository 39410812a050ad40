"""The one AIS engine (boltzkit.metrics.ais) on every annealing path: RBM, DBM, lateral.

AIS's importance weight is an unbiased estimate of Z / Z_base for ANY number of steps,
provided each transition leaves its own intermediate distribution invariant.  So on
tiny models (exact log Z by enumeration) a short schedule with many chains must give
log Z within a few standard errors; a transition taken at the previous inverse
temperature (a classic slip) biases a short schedule by much more than that.  Reverse
AIS from exact model samples is unbiased the same way (E[w_rev] = Z_base / Z).
"""

from __future__ import annotations

import math

import pytest
import torch

from boltzkit.metrics import ais as ais_module
from boltzkit.metrics import ais_log_z, exact_log_z
from boltzkit.models.lateral import SemiRestrictedRBM, exact_sample
from boltzkit.models.lateral import ais_log_z as srbm_ais_log_z
from boltzkit.models.lateral import exact_log_z as srbm_exact_log_z
from boltzkit.rbm import RBM, make_rbm
from boltzkit.stacks.dbm import make_dbm
from boltzkit.units import BernoulliUnits, GaussianUnits

torch.set_num_threads(1)

CHAINS, STEPS = 40000, 10


def _randomize(model, seed: int, scale: float):
    gen = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale)
    return model


def _rbm():
    return _randomize(make_rbm(7, 5, seed=0), 1, 1.0)


def _gaussian_rbm():
    rbm = RBM(GaussianUnits(3, std=0.8), BernoulliUnits(4))
    rbm = _randomize(rbm, 2, 0.4)
    return rbm


def _dbm():
    return _randomize(make_dbm("6,4,3", seed=0), 3, 0.8)


def _srbm():
    srbm = SemiRestrictedRBM(BernoulliUnits(6), BernoulliUnits(3))
    srbm = _randomize(srbm, 4, 0.7)
    with torch.no_grad():  # a valid lateral matrix: symmetric, zero diagonal
        a = srbm.lateral
        a.copy_(0.5 * (a + a.t()) * (1 - torch.eye(6, dtype=a.dtype)))
    return srbm


def _estimates(name: str, generator: torch.Generator):
    """(AIS result with a short schedule, exact log Z) for one path."""
    if name == "rbm":
        m = _rbm()
        return ais_log_z(m, n_chains=CHAINS, n_steps=STEPS, generator=generator), exact_log_z(m)
    if name == "gaussian-rbm":
        m = _gaussian_rbm()
        return ais_log_z(m, n_chains=CHAINS, n_steps=STEPS, generator=generator), exact_log_z(m)
    if name == "dbm":
        m = _dbm()
        return m.ais_log_z(CHAINS, n_steps=STEPS, generator=generator), m.exact_log_z()
    m = _srbm()
    return srbm_ais_log_z(m, n_chains=CHAINS, n_steps=STEPS, generator=generator), \
        srbm_exact_log_z(m)


PATHS = ["rbm", "gaussian-rbm", "dbm", "srbm"]


@pytest.mark.parametrize("name", PATHS)
def test_short_schedule_is_unbiased_on_every_path(name):
    res, exact = _estimates(name, torch.Generator().manual_seed(11))
    # log of an unbiased mean: its error is about the delta-method standard error
    assert abs(res.log_z - exact) < 4 * res.log_z_std + 1e-3, (res.log_z, exact, res.log_z_std)
    assert res.log_z_lower <= exact <= res.log_z_upper
    assert res.n_steps == STEPS and res.n_chains == CHAINS and res.ess > 0.05 * CHAINS


def test_a_transition_at_the_previous_beta_is_caught(monkeypatch):
    """The check above has the power to see the classic slip (the RBM path, mutated)."""
    step = ais_module.RBMPath.step

    def slipped(self, v, beta, beta_prev, generator, transition):
        inc, _ = step(self, v, beta, beta_prev, None, False)
        _, v = step(self, v, beta_prev, beta_prev, generator, transition)
        return inc, v

    monkeypatch.setattr(ais_module.RBMPath, "step", slipped)
    res, exact = _estimates("gaussian-rbm", torch.Generator().manual_seed(11))
    assert abs(res.log_z - exact) > 4 * res.log_z_std + 1e-3


@pytest.mark.parametrize("name", ["rbm", "srbm"])
def test_reverse_ais_from_exact_samples_is_unbiased(name):
    gen = torch.Generator().manual_seed(5)
    if name == "rbm":
        m = _rbm()
        states = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * 7)
        p = torch.softmax(-m.free_energy(states).detach(), 0)
        data = states[torch.multinomial(p, 20000, replacement=True, generator=gen)]
        res, exact = ais_log_z(m, data, CHAINS, n_steps=STEPS, generator=gen,
                               reverse=True), exact_log_z(m)
    else:
        m = _srbm()
        data = exact_sample(m, 20000, gen)
        res, exact = srbm_ais_log_z(m, data, CHAINS, STEPS, gen, reverse=True), \
            srbm_exact_log_z(m)
    rev_std = float(torch.exp(res.reverse_log_weights - res.reverse_log_weights.max()).std()
                    / torch.exp(res.reverse_log_weights - res.reverse_log_weights.max()).mean()
                    / math.sqrt(CHAINS))
    assert abs(res.reverse - exact) < 4 * rev_std + 1e-3, (res.reverse, exact, rev_std)


def test_dbm_reverse_runs_from_data_and_brackets():
    m = _dbm()
    gen = torch.Generator().manual_seed(6)
    data = (torch.rand(300, 6, generator=gen) < 0.5).double()
    res = m.ais_log_z(2000, n_steps=200, data=data, generator=gen, reverse=True)
    assert res.reverse is not None and math.isfinite(res.reverse)
    assert abs(res.reverse - m.exact_log_z()) < 1.0  # data are not model samples: loose
