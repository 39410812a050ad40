"""Annealed importance sampling: one engine for every model with a tempered family.

A model supplies an *annealing path* (:class:`AnnealingPath`): a base distribution with
a closed-form log Z (independent units), one step's log-weight increment
log f_k(x) - log f_{k-1}(x) and a transition that leaves f_k invariant.  The engine
(:func:`run_ais`) anneals ``n_chains`` chains over a schedule of inverse temperatures,
accumulates log-weights in float64, and reports log Z with +/-3 sigma bounds, the
effective sample size, a reliability flag and, optionally, reverse AIS from data
(Salakhutdinov & Murray 2008; Burda, Grosse & Salakhutdinov 2015).  The RBM
(:class:`RBMPath`, any units), the DBM (even layers annealed, odd layers summed out) and
the semi-restricted RBM (lateral couplings tempered with the rest) share it; the
kernel planner may replace a whole pass by a buffered kernel doing the same draws
(:func:`boltzkit.kernels.plan_anneal`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import torch
from torch import Tensor

from ..errors import ConfigError
from ..precision import Precision, computing
from ..progress import progress_bar

#: Salakhutdinov & Murray's schedule: 500 betas to 0.5, 4,000 to 0.9, 10,000 to 1.0.
SM_SCHEDULE = ((0.5, 500), (0.9, 4000), (1.0, 10000))
DEFAULT_AIS_STEPS = sum(n for _, n in SM_SCHEDULE)  # 14,500


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass
class AISResult:
    """An AIS estimate of log Z with its diagnostics.

    ``log_z_lower``/``log_z_upper`` are log(Z_hat -/+ 3 sigma_hat) where sigma_hat
    is the standard error of the mean importance weight (Salakhutdinov & Murray's
    convention and code); the lower end is -inf when 3 sigma_hat exceeds Z_hat.
    They cover the sampling error of the weights only: a schedule too short for
    the model biases log Z_hat low without widening them (see ``reliable``).  ``ess`` is
    the effective sample size (sum w)^2 / sum w^2.  ``reverse`` is the reverse-AIS
    estimate of log Z when it was run (see :func:`ais_log_z`).
    """

    log_z: float
    log_z_lower: float
    log_z_upper: float
    log_z_base: float
    log_weights: Tensor = field(repr=False)
    n_chains: int
    n_steps: int
    ess: float
    reliable: bool
    warning: str | None = None
    reverse: float | None = None
    reverse_log_weights: Tensor | None = field(default=None, repr=False)

    @property
    def log_z_std(self) -> float:
        """Delta-method standard error of log Z_hat (sigma_hat / Z_hat)."""
        return _log_weight_stats(self.log_weights)[1]

    def __float__(self) -> float:
        return self.log_z

    def to_dict(self) -> dict:
        """JSON-friendly summary: no tensors, non-finite numbers (a -inf bound) as None."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("log_weights", "reverse_log_weights")}
        out["log_z_std"] = self.log_z_std
        out["log_weight_std"] = float(self.log_weights.std()) if self.n_chains > 1 else 0.0
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v
                for k, v in out.items()}


def ais_schedule(n_steps: int = DEFAULT_AIS_STEPS) -> Tensor:
    """Salakhutdinov & Murray's beta schedule scaled to ``n_steps`` steps (float64, 0 to 1).

    Their 14,500 steps put 500 uniformly in [0, 0.5], 4,000 in [0.5, 0.9] and
    10,000 in [0.9, 1]: most effort where the distributions change fastest.
    """
    _positive_int("n_steps", n_steps)
    if n_steps < 3:
        return torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)
    total = DEFAULT_AIS_STEPS
    counts = [max(1, round(n_steps * n / total)) for _, n in SM_SCHEDULE[:-1]]
    counts.append(n_steps - sum(counts))
    parts, start = [torch.zeros(1, dtype=torch.float64)], 0.0
    for (end, _), n in zip(SM_SCHEDULE, counts, strict=True):
        parts.append(torch.linspace(start, end, n + 1, dtype=torch.float64)[1:])
        start = end
    return torch.cat(parts)


def _check_schedule(schedule: Tensor | list[float]) -> Tensor:
    s = torch.as_tensor(schedule, dtype=torch.float64).detach().cpu()
    if s.ndim != 1 or s.numel() < 2:
        raise ConfigError("an AIS schedule must be a 1-D sequence of at least 2 betas from 0 to 1")
    if not bool(torch.isfinite(s).all()) or float(s[0]) != 0.0 or float(s[-1]) != 1.0:
        raise ConfigError(f"an AIS schedule must start at 0.0 and end at 1.0, got "
                          f"{float(s[0])} ... {float(s[-1])}")
    if bool((s[1:] < s[:-1]).any()):
        raise ConfigError("an AIS schedule must be non-decreasing (betas from 0 up to 1)")
    return s


def _log_weight_stats(log_w: Tensor) -> tuple[float, float, float, float]:
    """(log mean w, std error of log mean w, log upper, log lower) from log weights.

    Works on normalised weights r = exp(log w - max) so nothing overflows; the
    bounds are log(mean r +/- 3 se(r)) shifted back (lower -inf if negative).
    """
    n = log_w.numel()
    m = float(log_w.max())
    r = torch.exp(log_w - m)
    mean = float(r.mean())
    se = float(r.std()) / math.sqrt(n) if n > 1 else 0.0
    lme = m + math.log(mean)
    upper = m + math.log(mean + 3.0 * se)
    lower = m + math.log(mean - 3.0 * se) if mean > 3.0 * se else -math.inf
    return lme, se / mean, upper, lower


def _ess(log_w: Tensor) -> float:
    r = torch.exp(log_w - log_w.max())
    return float(r.sum() ** 2 / (r * r).sum())


@torch.no_grad()
def _weight_problems(log_w: Tensor, ess: float, lower: float, min_ess_fraction: float,
                     max_log_weight_std: float) -> list[str]:
    """Why an AIS run's importance weights cannot be trusted (empty when they can).

    Shared by every AIS in boltzkit (RBM, DBM, lateral models) so all report the same
    reliability test: effective sample size, spread of the log-weights, and a lower
    bound that the error bars push below zero.
    """
    n = log_w.numel()
    problems = []
    if ess / n < min_ess_fraction:
        problems.append(f"effective sample size {ess:.1f} of {n} chains is below "
                        f"{min_ess_fraction:.0%}")
    lw_std = float(log_w.std()) if n > 1 else 0.0
    if lw_std > max_log_weight_std:
        problems.append(f"log-weight std {lw_std:.2f} exceeds {max_log_weight_std}")
    if not math.isfinite(lower):
        problems.append("the -3 sigma end of the interval is below zero (lower bound -inf)")
    return problems


def _logmeanexp(x: Tensor) -> float:
    return float(torch.logsumexp(x, 0)) - math.log(x.numel())


class AnnealingPath(Protocol):
    """A model's tempered family for AIS: base at beta = 0, the model at beta = 1."""

    #: log Z of the base distribution (float64, closed form).
    log_z_base: float

    def sample_base(self, n: int, generator: torch.Generator | None) -> Any:
        """``n`` exact draws of the base distribution (the chains' starting states)."""

    def step(self, state: Any, beta: float, beta_prev: float,
             generator: torch.Generator | None, transition: bool) -> tuple[Tensor, Any]:
        """(log f_beta(x) - log f_beta_prev(x) per chain, the next state); the state moves
        by a transition leaving f_beta invariant only when ``transition``."""

    def from_data(self, data: Tensor, n: int, generator: torch.Generator | None) -> Any:
        """Starting states of reverse AIS: ``n`` rows of data (approximate model samples)."""

    def fused(self) -> Callable | None:
        """A whole pass ``f(state, betas, generator) -> (log_w, state)`` doing the same
        draws on buffers, or None (the engine's loop)."""


#: Steps between progress-bar updates of an annealing pass.
PROGRESS_EVERY = 256


def anneal(path: AnnealingPath, state: Any, betas: Sequence[float],
           generator: torch.Generator | None = None, bar=None) -> tuple[Tensor, Any]:
    """One AIS pass over ``betas`` from ``state``: (float64 log weights, final state).

    ``bar`` (a tqdm bar, optional) advances by one per step, every :data:`PROGRESS_EVERY`.
    """
    fast = path.fused()
    if fast is not None:
        return fast(state, list(betas), generator, bar)
    log_w = None
    last = len(betas) - 1
    for k in range(1, last + 1):
        inc, state = path.step(state, betas[k], betas[k - 1], generator, k < last)
        log_w = inc.double() if log_w is None else log_w.add_(inc)
        if bar is not None and k % PROGRESS_EVERY == 0:
            bar.update(PROGRESS_EVERY)
    return log_w, state


def _device(path: AnnealingPath) -> torch.device:
    """The device a path's model lives on (where its precision is resolved)."""
    model = getattr(path, "model", None)
    if model is None:
        model = getattr(path, "rbm", None)
    return getattr(model, "device", torch.device("cpu"))


def betas_from(schedule: Tensor | Sequence[float] | None, n_steps: int | None) -> list[float]:
    """The schedule given, or Salakhutdinov & Murray's with ``n_steps`` steps (default
    14,500); refuses both at once."""
    if schedule is not None and n_steps is not None:
        raise ConfigError("give either schedule (explicit betas) or n_steps, not both")
    betas = _check_schedule(schedule) if schedule is not None else ais_schedule(
        DEFAULT_AIS_STEPS if n_steps is None else n_steps)
    return [float(b) for b in betas]


@torch.no_grad()
def run_ais(path: AnnealingPath, n_chains: int, betas: Sequence[float],
            generator: torch.Generator | None = None, reverse: bool = False,
            data: Tensor | None = None, min_ess_fraction: float = 0.1,
            max_log_weight_std: float = 2.0, reverse_tolerance: float = 1.0,
            precision: str | Precision | None = None,
            progress: bool | None = None) -> AISResult:
    """Estimate log Z along ``path`` with ``n_chains`` chains; see :class:`AISResult`.

    ``precision`` (:mod:`boltzkit.precision`): the GEMM precision of the annealing
    passes (transitions and the products of the log-weight increments); the
    log-weights accumulate in float64 whatever it is.

    ``reverse``: also anneal from 1 down to 0, starting at rows of ``data`` (or, without
    data, at the forward chains' end states), log Z_rev = log Z_base - logmeanexp(w_rev):
    with exact model samples a stochastic upper bound, with data a conservative estimate.
    The result is unreliable when the two differ by more than ``reverse_tolerance`` nats
    (or the forward interval's width, if larger), when ESS / n_chains <
    ``min_ess_fraction``, when the log-weights' std exceeds ``max_log_weight_std``, or
    when a chain's weight is not finite (the model's density is improper: log Z = +inf).
    """
    _positive_int("n_chains", n_chains)
    log_z_base = float(path.log_z_base)
    n_steps = (len(betas) - 1) * (2 if reverse else 1)
    bar = progress_bar(n_steps, "AIS", "step", progress)
    with computing(precision, _device(path)):
        log_w, end = anneal(path, path.sample_base(n_chains, generator), betas, generator, bar)
    finite = torch.isfinite(log_w)
    if bool(finite.all()):
        lme, _, upper, lower = _log_weight_stats(log_w)
        log_z = log_z_base + lme
        ess = _ess(log_w)
        problems = _weight_problems(log_w, ess, lower, min_ess_fraction, max_log_weight_std)
    else:
        # Chains that run off to infinity mean the annealed densities do not normalise:
        # report log Z = +inf (so log-likelihoods are -inf), never a NaN.
        log_z = upper = lower = math.inf
        ess = 0.0
        problems = [f"{int((~finite).sum())} of {n_chains} chains' log-weights are NaN/inf: "
                    "the annealing chains diverged, so the model's density is probably "
                    "improper (Z is infinite; e.g. Gaussian visible units with ReLU or Gaussian "
                    "hidden units and weights too large: with unit variances, a largest "
                    "singular value of W below 1 guarantees a proper model)"]
    rev = rev_w = None
    if reverse:
        start = end if data is None else path.from_data(data, n_chains, generator)
        with computing(precision, _device(path)):
            rev_w, _ = anneal(path, start, list(betas)[::-1], generator, bar)
        rev = log_z_base - _logmeanexp(rev_w)
        if not math.isfinite(rev):
            rev = None  # reported as missing; an improper model is flagged above
        tol = max(reverse_tolerance, upper - lower if math.isfinite(lower) else math.inf)
        if rev is not None and math.isfinite(log_z) and abs(rev - log_z) > tol:
            problems.append(f"reverse AIS gives log Z = {rev:.3f}, {rev - log_z:+.3f} nats from "
                            f"the forward estimate {log_z:.3f}")
    if bar is not None:
        bar.close()
    warning = None
    if problems:
        warning = ("AIS estimate may be unreliable: " + "; ".join(problems)
                   + ". Use more steps (n_steps / ais_steps) and chains, or a base model fitted "
                   "to the training data.")
    if not math.isfinite(log_z):
        lower = upper = math.inf
    return AISResult(log_z=log_z, log_z_lower=log_z_base + lower, log_z_upper=log_z_base + upper,
                     log_z_base=log_z_base, log_weights=log_w, n_chains=n_chains,
                     n_steps=len(betas) - 1, ess=ess, reliable=not problems, warning=warning,
                     reverse=rev, reverse_log_weights=rev_w)


class RBMPath:
    """The annealing path of an RBM (any units): Salakhutdinov & Murray's base-rate model.

    At beta the visible bias is b_B + (1 - beta) d (d = b_A - b_B, b_A the base model's
    visible bias) and everything else of the target is scaled by beta, so
    log f_k(v) - log f_{k-1}(v) = lp_h(field, b_k) - lp_h(field, b_{k-1})
    - (b_k - b_{k-1}) d . c_v(v): the -E_v(v) terms cancel.  Per step: one hidden field
    (reused for the weight and the hidden sample) and one visible field.  The base
    model (visible units with bias b_A at beta = 1, hidden units at beta = 0) has a
    closed-form log Z, computed in float64.
    """

    @torch.no_grad()
    def __init__(self, rbm, base_bias: Tensor) -> None:
        import copy

        vis, hid = rbm.visible, rbm.hidden
        self.rbm = rbm
        self.d = base_bias.to(device=rbm.device, dtype=rbm.dtype) - vis.bias.detach()
        v64, h64 = copy.deepcopy(vis).double(), copy.deepcopy(hid).double()
        zero = torch.zeros(1, hid.n, dtype=torch.float64, device=rbm.device)
        self.log_z_base = float(v64.log_partition(self.d.double().unsqueeze(0), 1.0)[0]
                                + h64.log_partition(zero, 0.0)[0])

    def sample_base(self, n, generator):
        return self.rbm.visible.sample(self.d.expand(n, -1), 1.0, generator)

    def step(self, v, beta, beta_prev, generator, transition):
        rbm, d = self.rbm, self.d
        vis, hid = rbm.visible, rbm.hidden
        fld = rbm.hidden_field(v)
        inc = hid.log_partition(fld, beta) - hid.log_partition(fld, beta_prev)
        if beta != beta_prev:
            inc -= (beta - beta_prev) * (vis.coupling(v) @ d)
        if transition:
            h = hid.sample(fld, beta, generator)
            vf = rbm.visible_field(h)
            vf.mul_(beta).add_(d, alpha=1.0 - beta)
            v = vis.sample(vf, 1.0, generator)
        return inc, v

    def from_data(self, data, n, generator):
        idx = torch.randint(data.shape[0], (n,), generator=generator, device=data.device)
        return data.index_select(0, idx)

    def fused(self):
        from ..kernels import plan_anneal

        kernel = plan_anneal(self.rbm)
        if kernel is None:
            return None
        return lambda v, betas, gen, bar=None: kernel(self.rbm, v, betas, self.d, gen, bar)
