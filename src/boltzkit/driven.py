"""Temperature-driven sampling (TDS; Fisher, Smith & Walsh 2018, Algorithms 1 and 2).

Each persistent chain carries its own inverse temperature beta, which follows
an autoregressive Gamma process, ARG(1) (Gourieroux & Jasiak 2006), with
stationary distribution Gamma(shape nu, scale sigma^2), nu = 1 / sigma^2 --
mean 1, variance ``beta_std**2`` -- and lag-1 autocorrelation ``rho``::

    c    = (1 - rho) * sigma^2                       (scale of each step)
    z    ~ Poisson(rho * beta_prev / c)               (= rho beta nu / (1 - rho))
    beta ~ Gamma(shape nu + z, scale c)

Then ``E[beta | beta_prev] = (1 - rho) + rho beta_prev`` (so the stationary
mean is 1), the stationary law is Gamma(nu, c / (1 - rho)) = Gamma(nu, sigma^2)
(variance nu sigma^4 = sigma^2), and Corr(beta_t, beta_{t-1}) = rho.  Chains
that wander to small beta (high temperature) cross the energy barriers
between modes; chains near beta = 1 sample the model.  Gibbs updates of each
chain use its current beta (the units' ``beta`` argument, shape (chains, 1)).

``beta_std = 0`` is the degenerate process beta = 1 at every step (plain persistent
chains written as a driven sampler; the BEAM paper's setting for the plain RBM).
Chains are tempered in the whole energy (:func:`boltzkit.units.whole_energy`): a hot
chain samples p(v)^beta, so Gaussian units widen (variance sigma^2 / beta) around the
modes instead of shrinking towards the origin.

All draws come from the caller's ``torch.Generator``: Poisson by
``torch.poisson(..., generator=)`` and Gamma by Marsaglia & Tsang's (2000)
method from ``torch.randn``/``torch.rand`` (``torch._standard_gamma`` takes no
generator), so runs are reproducible and resume exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .errors import ConfigError
from .rbm import RBM
from .sampling import Sampler, _check_k, init_chains
from .units import whole_energy


def sample_gamma(shape: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gamma(shape, 1) draws, one per element, by Marsaglia-Tsang with ``generator``.

    Shapes below 1 use the boost Gamma(a) = Gamma(a + 1) * U^(1/a).
    """
    a = shape.to(torch.float64)
    if bool((a <= 0).any()) or not bool(torch.isfinite(a).all()):
        raise ConfigError("Gamma shapes must be positive and finite")
    boost = a < 1
    a1 = torch.where(boost, a + 1.0, a)
    d = a1 - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    for _ in range(100):
        x = torch.randn(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        v = (1.0 + c * x) ** 3
        ok = (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * x * x + d - d * v
                        + d * torch.log(v.clamp_min(1e-300)))
        take = todo & ok
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
        if not bool(todo.any()):
            break
    if bool(boost.any()):
        u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        out = torch.where(boost, out * u.clamp_min(1e-300) ** (1.0 / a), out)
    return out.to(shape.dtype)


class GammaProcess:
    """ARG(1) process of per-chain inverse temperatures: mean 1, std ``beta_std``, lag-1 rho.

    ``beta_std = 0``: beta = 1 always (no draws).
    """

    def __init__(self, beta_std: float = 0.5, autocorr: float = 0.9) -> None:
        if not (beta_std >= 0 and math.isfinite(beta_std)):
            raise ConfigError(f"beta_std must be >= 0 (0: beta = 1 always), got {beta_std!r}")
        if not 0 <= autocorr < 1:
            raise ConfigError(f"beta autocorrelation must be in [0, 1), got {autocorr!r}")
        self.beta_std = float(beta_std)
        self.autocorr = float(autocorr)
        self.nu = 1.0 / self.beta_std**2 if self.beta_std else math.inf
        self.scale = (1.0 - self.autocorr) * self.beta_std**2

    def initial(self, n: int, generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """Draws from the stationary law Gamma(nu, sigma^2), shape (n,)."""
        if not self.beta_std:
            return torch.ones(n, dtype=dtype, device=device)
        shape = torch.full((n,), self.nu, dtype=torch.float64, device=device)
        return (sample_gamma(shape, generator) * self.beta_std**2).to(dtype)

    def step(self, beta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One ARG(1) transition from ``beta`` (any shape)."""
        if not self.beta_std:
            return torch.ones_like(beta)
        b = beta.to(torch.float64)
        if self.autocorr > 0:
            z = torch.poisson(self.autocorr * b / self.scale, generator=generator)
        else:
            z = torch.zeros_like(b)
        return (sample_gamma(self.nu + z, generator) * self.scale).to(beta.dtype)


class DrivenPCD(Sampler):
    """Persistent chains whose inverse temperatures follow a :class:`GammaProcess`.

    Each update first advances every chain's beta by one ARG(1) step, then runs
    ``k`` Gibbs sweeps of each chain at its beta (paper Algorithm 2).  The
    chains are the negative particles (as in the paper): a few run hot at any
    time, which lets the ensemble hop between modes.  ``n_chains`` and
    ``init`` are as for :class:`~boltzkit.sampling.PersistentCD`.

    ``readout_steps`` > 0 hands the gradient, instead of the driven states
    themselves, copies of them advanced by that many Gibbs sweeps at beta = 1
    (the persistent chains stay driven).  A chain at beta != 1 is not a model
    sample: with Gaussian visibles a hot chain's noise is wider than the model's
    (variance sigma^2 / beta), which for narrow modes puts it many model standard
    deviations off its mode.  The read-out sweeps return
    those particles to the model's own modes, so the negative phase (and the
    BEAM critic) sees beta = 1 samples while mixing still comes from the hot
    chains (as :func:`driven_sample`'s ``final_steps`` do for sampling).
    """

    name = "tds"

    def __init__(self, k: int = 1, n_chains: int | None = None, beta_std: float = 0.5,
                 beta_autocorr: float = 0.9, init: str = "random",
                 readout_steps: int = 0) -> None:
        self.k = _check_k(k)
        if not isinstance(readout_steps, int) or readout_steps < 0:
            raise ConfigError(f"readout_steps must be an integer >= 0, got {readout_steps!r}")
        self.readout_steps = readout_steps
        if n_chains is not None and (not isinstance(n_chains, int) or n_chains < 1):
            raise ConfigError(f"n_chains must be a positive integer, got {n_chains!r}")
        if init not in ("random", "data"):
            raise ConfigError(f"unknown chain init {init!r}: use 'random' or 'data'")
        self.process = GammaProcess(beta_std, beta_autocorr)
        self.n_chains = n_chains
        self.init = init
        self.chains: Tensor | None = None
        self.betas: Tensor | None = None  # (n_chains, 1)
        self._beta_sum = 0.0
        self._beta_min = math.inf
        self._updates = 0

    def start(self, rbm: RBM, v_data: Tensor, generator) -> None:
        """Chains (random or from the first batch) and their stationary initial betas."""
        n = self.n_chains or v_data.shape[0]
        if self.init == "data":
            reps = math.ceil(n / v_data.shape[0])
            self.chains = v_data.repeat(reps, 1)[:n].clone()
        else:
            self.chains = init_chains(rbm, n, generator)
        self.betas = self.process.initial(n, generator, rbm.dtype, rbm.device).unsqueeze(1)

    @torch.no_grad()
    def negative(self, rbm, v_data, field_data, generator=None):
        if self.chains is None:
            self.start(rbm, v_data, generator)
        self.betas = self.process.step(self.betas, generator)
        with whole_energy(rbm):
            self.chains = rbm.gibbs(self.chains, self.k, beta=self.betas, generator=generator)
        self._beta_sum += float(self.betas.mean())
        self._beta_min = min(self._beta_min, float(self.betas.min()))
        self._updates += 1
        v = self.chains
        if self.readout_steps:
            v = rbm.gibbs(self.chains, self.readout_steps, generator=generator)
        return v, (rbm.hidden_field(v) if hasattr(rbm, "sample_visible") else None)

    def stats(self):
        if not self._updates:
            return {}
        out = {"beta_mean": self._beta_sum / self._updates, "beta_min": self._beta_min}
        self._beta_sum, self._beta_min, self._updates = 0.0, math.inf, 0
        return out

    def state_dict(self):
        if self.chains is None:
            return {}
        return {"chains": self.chains, "betas": self.betas}

    def load_state_dict(self, state):
        if "chains" in state:
            self.chains = state["chains"].clone()
            self.betas = state["betas"].clone()


@torch.no_grad()
def driven_sample(rbm: RBM, n: int, steps: int = 1000, beta_std: float = 0.5,
                  beta_autocorr: float = 0.9, final_steps: int = 10,
                  generator: torch.Generator | None = None, init: Tensor | None = None,
                  return_mean: bool = False) -> Tensor:
    """Draw ``n`` samples by temperature-driven Gibbs sampling (paper Algorithm 1).

    ``steps`` driven sweeps (one ARG(1) beta step per sweep) from random
    states (or ``init``), then ``final_steps`` sweeps at beta = 1 so the
    returned states are model samples rather than hot-chain states.
    """
    proc = GammaProcess(beta_std, beta_autocorr)
    v = rbm.visible.init_state(n, generator) if init is None else init.to(rbm.device, rbm.dtype)
    beta = proc.initial(n, generator, rbm.dtype, rbm.device).unsqueeze(1)
    with whole_energy(rbm):
        for _ in range(steps):
            beta = proc.step(beta, generator)
            v = rbm.gibbs(v, 1, beta=beta, generator=generator)
    return rbm.sample(n, steps=final_steps, generator=generator, init=v,
                      return_mean=return_mean) if final_steps else v
