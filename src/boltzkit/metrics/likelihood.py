"""Likelihood-based quality measures: exact and AIS log Z, log-likelihood, pseudo-likelihood.

The log-likelihood is the number to report for an RBM; it needs the log partition
function log Z, which is

* **exact** (:func:`exact_log_z`) when one layer is discrete and small enough to
  enumerate: summing that layer's states against the other layer's closed-form
  log-partition gives log Z to float64 precision;
* **estimated by annealed importance sampling** (:func:`ais_log_z`) otherwise,
  following Salakhutdinov & Murray (2008) with a base-rate model, and reported
  with error bars, an effective sample size and a reliability flag.

:func:`pseudo_likelihood`, :func:`reconstruction_error` and
:func:`free_energy_gap` are cheaper diagnostics.  Reconstruction error is easy to
improve without improving the model: report it, never as the quality figure.
"""

from __future__ import annotations

import copy
import ctypes
import math
import sys

import torch
from torch import Tensor
from torch.nn import functional as F

from ..errors import ConfigError, DataError
from ..progress import progress_bar
from ..rbm import RBM
from ..units import BernoulliUnits, SoftmaxUnits
from .ais import (  # noqa: F401 - AIS names this module has always offered
    DEFAULT_AIS_STEPS,
    SM_SCHEDULE,
    AISResult,
    RBMPath,
    ais_schedule,
    betas_from,
    run_ais,
)

#: Above this many states :func:`exact_log_z` refuses (use AIS).
MAX_EXACT_STATES = 2**25
#: ``method="auto"`` uses the exact log Z up to this many states of the smaller layer.
AUTO_EXACT_STATES = 2**20
#: Elements per intermediate tensor when enumerating / flipping (bounds memory).
_CHUNK_ELEMENTS = 2**22

METHODS = ("auto", "exact", "ais")


# --------------------------------------------------------------------------- helpers
def _as_dtype(rbm: RBM, dtype: torch.dtype | None) -> RBM:
    """The model itself, or a detached copy cast to ``dtype`` (the original is untouched)."""
    if dtype is None or dtype == rbm.dtype:
        return rbm
    return copy.deepcopy(rbm).to(dtype)


def _sampling_copy(rbm: RBM) -> RBM:
    """A copy whose units draw real samples (mean-field sigmoid units only return means)."""
    if not any(getattr(u, "mean_field", False) for u in (rbm.visible, rbm.hidden)):
        return rbm
    rbm = copy.deepcopy(rbm)
    for u in (rbm.visible, rbm.hidden):
        if getattr(u, "mean_field", False):
            u.mean_field = False
    return rbm


def _check_rbm(rbm: object) -> RBM:
    if not isinstance(rbm, RBM):
        raise ConfigError(f"expected a boltzkit RBM, got {type(rbm).__name__}: likelihood "
                          "metrics are defined for RBM models (visible + hidden + connection)")
    return rbm


def _discrete_states(rbm: RBM) -> dict[str, int]:
    """Number of states of each discrete layer, keyed "visible"/"hidden"."""
    out = {}
    for name in ("visible", "hidden"):
        units = getattr(rbm, name)
        if units.discrete and units.n_states is not None:
            out[name] = int(units.n_states)
    return out


def _check_generator(gen: torch.Generator | None, device: torch.device) -> None:
    if gen is not None and torch.device(gen.device).type != torch.device(device).type:
        raise ConfigError(f"the generator is on {gen.device} but the model is on {device}: "
                          f"create it with torch.Generator(device={str(device)!r})")


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


@torch.no_grad()
def free_energies(rbm: RBM, data: Tensor, batch_size: int = 1000,
                  dtype: torch.dtype | None = torch.float64) -> Tensor:
    """F(v) for every row of ``data`` as a float64 tensor, computed batch by batch."""
    rbm = _check_rbm(rbm)
    _positive_int("batch_size", batch_size)
    model = _as_dtype(rbm, dtype)
    v = model.prepare(data)
    return torch.cat([model.free_energy(b).double() for b in v.split(batch_size)])


# --------------------------------------------------------------------------- exact
def _fix_mmap_threshold() -> None:
    """Pin glibc's mmap threshold at 1 MiB (once per process, Linux only).

    Enumeration allocates and frees tens-of-MB tensors thousands of times;
    glibc's *dynamic* threshold then moves them onto the heap, which
    fragments without bound (measured: 6.2 GB peak RSS for 2^20 hidden states
    of a 784-unit model, 14 GB and rising at 2^25; 355 MB with a fixed
    threshold).  A fixed threshold only makes large blocks come from mmap.
    """
    global _MMAP_FIXED
    if _MMAP_FIXED or not sys.platform.startswith("linux"):
        return
    _MMAP_FIXED = True
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


_MMAP_FIXED = False


@torch.no_grad()
def exact_log_z(rbm: RBM, chunk: int = 65536, max_states: int = MAX_EXACT_STATES,
                layer: str | None = None, dtype: torch.dtype = torch.float64) -> float:
    """log Z by enumerating the discrete layer with fewer states (float64, chunked).

    Enumerating hidden states h gives log Z = logsumexp_h(-F_h(h)) with the
    visible layer integrated out in closed form (``free_energy_hidden``);
    enumerating visible states gives logsumexp_v(-F(v)).  ``layer`` forces
    "visible" or "hidden".  Chunks are capped so no intermediate tensor holds
    more than ~4M numbers.  Models with more than ``max_states`` states in
    every discrete layer raise ConfigError: use :func:`ais_log_z`.
    The free energies are computed on a copy of the model in ``dtype``
    (float64 by default); ``dtype=torch.float32`` is 3-4x faster on CPU for
    wide layers (e.g. 2^20 hidden states x 784 visible units) at an absolute
    error of about 1e-4 nats.  The log-sum-exp over chunks is always float64.
    """
    rbm = _check_rbm(rbm)
    _positive_int("chunk", chunk)
    states = _discrete_states(rbm)
    if layer is not None:
        if layer not in ("visible", "hidden"):
            raise ConfigError(f"layer must be 'visible', 'hidden' or None, got {layer!r}")
        if layer not in states:
            raise ConfigError(f"the {layer} layer ({getattr(rbm, layer).kind} units) is "
                              "continuous and cannot be enumerated: enumerate the other layer "
                              "(layer=None) or use ais_log_z")
        states = {layer: states[layer]}
    if not states:
        raise ConfigError("exact log Z needs a discrete layer (bernoulli or softmax units) to "
                          "enumerate; both layers are continuous: use ais_log_z instead")
    name = min(states, key=lambda k: states[k])
    if states[name] > max_states:
        raise ConfigError(
            f"exact log Z would enumerate {states[name]:,} {name} states (limit "
            f"{max_states:,}): estimate it with ais_log_z / method='ais' instead")
    _fix_mmap_threshold()
    model = copy.deepcopy(rbm).to(dtype)
    units = getattr(model, name)
    other = model.hidden if name == "visible" else model.visible
    rows = max(1, min(chunk, _CHUNK_ELEMENTS // max(other.n, units.n)))
    fe = model.free_energy if name == "visible" else model.free_energy_hidden
    parts = [torch.logsumexp(-fe(s).double(), 0) for s in units.enumerate_states(rows)]
    return float(torch.logsumexp(torch.stack(parts), 0))


# --------------------------------------------------------------------------- AIS
@torch.no_grad()
def ais_log_z(rbm: RBM, data: Tensor | None = None, n_chains: int = 100,
              schedule: Tensor | list[float] | None = None, n_steps: int | None = None,
              generator: torch.Generator | None = None, base_bias: Tensor | None = None,
              reverse: bool = False, dtype: torch.dtype | None = None,
              min_ess_fraction: float = 0.1, max_log_weight_std: float = 2.0,
              reverse_tolerance: float = 1.0, precision: str | None = None,
              progress: bool | None = None) -> AISResult:
    """Estimate log Z by annealed importance sampling (Salakhutdinov & Murray 2008).

    The base model A has the target's visible units (same variances etc.), the
    bias b_A = ``visible.fit_bias(data)`` (zeros without data; ``base_bias``
    overrides), and no hidden couplings; its log Z is closed-form.  Chains
    start from exact samples of A and follow the geometric path to the target
    over ``schedule`` (default :func:`ais_schedule`, ``n_steps`` = 14,500),
    all chains as one batch, with float64 log weights.  Runs on the model's
    device in its dtype unless ``dtype`` is given (a cast copy is used).

    Forward AIS is a stochastic *lower* bound on log Z (E[log Z_hat] <= log Z),
    so it tends to overstate the log-likelihood.  ``reverse=True`` also runs
    reverse AIS from data rows at beta = 1 back to the base model (in the
    spirit of Burda, Grosse & Salakhutdinov 2015): with exact model samples it
    would be a stochastic upper bound, with data a conservative estimate.
    When the two differ by more than ``reverse_tolerance`` nats (or the
    forward interval width, if larger) the result is marked unreliable.  It
    is also unreliable when ESS / n_chains < ``min_ess_fraction`` or the log
    weights' std exceeds ``max_log_weight_std``; ``warning`` says why.
    ``precision``: the annealing passes' GEMM precision, ``progress``: a progress bar
    (:func:`~boltzkit.metrics.ais.run_ais`).
    """
    rbm = _check_rbm(rbm)
    betas = betas_from(schedule, n_steps)
    _check_generator(generator, rbm.device)
    model = _sampling_copy(_as_dtype(rbm, dtype))
    vis, dev, dt = model.visible, model.device, model.dtype
    if data is not None:
        data = model.prepare(data)
    if base_bias is not None:
        b_a = torch.as_tensor(base_bias).to(device=dev, dtype=dt).reshape(-1)
        if b_a.numel() != vis.n:
            raise ConfigError(f"base_bias has {b_a.numel()} entries, expected {vis.n}")
    elif data is not None:
        b_a = vis.fit_bias(data).to(device=dev, dtype=dt)
    else:
        b_a = torch.zeros(vis.n, device=dev, dtype=dt)
    return run_ais(RBMPath(model, b_a), n_chains, betas, generator, reverse, data,
                   min_ess_fraction, max_log_weight_std, reverse_tolerance, precision,
                   progress)


def exact_is_auto(rbm: RBM, threshold: int = AUTO_EXACT_STATES) -> bool:
    """Whether ``method="auto"`` computes this model's log Z exactly (a discrete layer has at
    most ``threshold`` states) rather than by AIS."""
    states = _discrete_states(rbm)
    return bool(states) and min(states.values()) <= threshold


# --------------------------------------------------------------------------- log-likelihood
@torch.no_grad()
def log_likelihood(rbm: RBM, data: Tensor, log_z: float | AISResult | None = None,
                   method: str = "auto", ais_chains: int = 100,
                   ais_steps: int = DEFAULT_AIS_STEPS, train_data: Tensor | None = None,
                   generator: torch.Generator | None = None, batch_size: int = 1000,
                   exact_threshold: int = AUTO_EXACT_STATES, reverse: bool = False,
                   exact_dtype: torch.dtype = torch.float64, log_jacobian: float = 0.0,
                   precision: str | None = None) -> dict:
    """Average log p(v) over ``data`` in nats per sample, with log Z exact or by AIS.

    log p(v) = -F(v) - log Z with F in float64.  ``log_z`` may be given (a
    float or an :class:`AISResult`); otherwise ``method`` picks it: "exact"
    enumerates, "ais" anneals (base model fitted to ``train_data`` if given,
    else to ``data``), "auto" is exact when a discrete layer has at most
    ``exact_threshold`` states (2^20 by default: 2^20 states x 784 visible
    units take seconds; :func:`exact_log_z` itself goes to 2^25) and AIS
    otherwise.  ``log_likelihood_lower/upper`` follow from the log Z interval
    (the data's sampling error is ``log_likelihood_std_err``, reported apart).
    ``exact_dtype`` is the enumeration's precision (see :func:`exact_log_z`):
    float32 halves the time of a 2^25-state enumeration at ~1e-4 nats of error.
    ``log_jacobian`` (nats per sample) is added to the log-likelihood and its bounds:
    for a model of transformed data z = T(x), pass log |det dT/dx| to get the density
    of the original x, e.g. ``Standardizer.log_jacobian`` (-sum log scale_i) when the
    model saw standardised data.  It is reported as ``log_jacobian``.  ``precision``: the
    GEMM precision of AIS's annealing (:mod:`boltzkit.precision`; F stays float64).
    """
    rbm = _check_rbm(rbm)
    log_jacobian = float(log_jacobian)
    if not math.isfinite(log_jacobian):
        raise ConfigError(f"log_jacobian must be finite, got {log_jacobian}")
    if exact_dtype not in (torch.float64, torch.float32):
        raise ConfigError(f"exact_dtype must be torch.float64 or torch.float32, got {exact_dtype}")
    if method not in METHODS:
        raise ConfigError(f"unknown likelihood method {method!r}: choose one of {list(METHODS)}")
    fe = free_energies(rbm, data, batch_size)
    n = fe.numel()
    ais: AISResult | None = None
    if isinstance(log_z, AISResult):
        ais, used = log_z, "ais"
    elif log_z is not None:
        lz = float(log_z)
        if not math.isfinite(lz):
            raise ConfigError(f"log_z must be finite, got {lz}")
        used, lo, hi = "given", lz, lz
    else:
        if method == "exact" or (method == "auto" and exact_is_auto(rbm, exact_threshold)):
            lz = exact_log_z(rbm, dtype=exact_dtype)
            used, lo, hi = "exact", lz, lz
        else:
            ais = ais_log_z(rbm, data=train_data if train_data is not None else data,
                            n_chains=ais_chains, n_steps=ais_steps, generator=generator,
                            reverse=reverse, precision=precision)
            used = "ais"
    if ais is not None:
        lz, lo, hi = ais.log_z, ais.log_z_lower, ais.log_z_upper
    neg_f = float((-fe).mean())
    neg_f += log_jacobian
    out = {
        "log_likelihood": neg_f - lz,
        "log_likelihood_std_err": float(fe.std()) / math.sqrt(n) if n > 1 else 0.0,
        "log_likelihood_lower": neg_f - hi,
        "log_likelihood_upper": neg_f - lo,
        "log_jacobian": log_jacobian,
        "log_z": lz, "log_z_lower": lo, "log_z_upper": hi,
        "method": used, "n_samples": n,
        "ais_chains": None, "ais_steps": None, "ais_ess": None, "ais_reliable": None,
        "ais_warning": None, "ais_log_z_reverse": None,
        "exact_dtype": str(exact_dtype).removeprefix("torch.") if used == "exact" else None,
    }
    if ais is not None:
        out.update(ais_chains=ais.n_chains, ais_steps=ais.n_steps, ais_ess=ais.ess,
                   ais_reliable=ais.reliable, ais_warning=ais.warning,
                   ais_log_z_reverse=ais.reverse)
    return out


# --------------------------------------------------------------------------- pseudo-likelihood
def _field_rows(model: RBM) -> Tensor:
    """Hidden-field contribution of each visible unit: rows of a linear connection."""
    eye = torch.eye(model.n_visible, dtype=model.dtype, device=model.device)
    zero = torch.zeros(1, model.n_visible, dtype=model.dtype, device=model.device)
    return model.connection(eye) - model.connection(zero)


def _pl_bernoulli(model: RBM, v: Tensor, fld: Tensor, rows: Tensor, units: Tensor) -> Tensor:
    """Sum over the given units i (B, J) of log p(v_i | v_-i), per sample (B,).

    F(v) - F(v with bit i flipped) = b_i s_i + lp_h(field + s_i W_i) - lp_h(field),
    s_i = 1 - 2 v_i; log p(v_i | rest) = -softplus of it.
    """
    hid, b = model.hidden, model.visible.bias
    B, J = units.shape
    s = 1.0 - 2.0 * v.gather(1, units)  # (B, J)
    flipped = fld.unsqueeze(1) + s.unsqueeze(-1) * rows[units]  # (B, J, H)
    lp_flip = hid.log_partition(flipped.reshape(B * J, -1)).reshape(B, J)
    lp = hid.log_partition(fld).unsqueeze(1)
    diff = b[units] * s + lp_flip - lp
    return -F.softplus(diff).sum(1)


def _pl_softmax(model: RBM, v: Tensor, fld: Tensor, rows: Tensor, groups: Tensor) -> Tensor:
    """Sum over the given groups g (B, J) of log p(x_g | x_-g), per sample (B,).

    Each of the K alternatives k of group g scores b_{g,k} + lp_h(field - x_g W_g + W_{g,k});
    log p = score of the observed value - logsumexp of all K scores.  Missing
    (all-zero) groups contribute 0.
    """
    vis, hid = model.visible, model.hidden
    K = vis.group_size
    B, J = groups.shape
    cols = groups.unsqueeze(-1) * K + torch.arange(K, device=v.device)  # (B, J, K)
    x = v.gather(1, cols.reshape(B, -1)).reshape(B, J, K)
    w = rows[cols]  # (B, J, K, H)
    base = fld.unsqueeze(1) - (x.unsqueeze(-1) * w).sum(2)  # field without group g
    cand = base.unsqueeze(2) + w
    scores = vis.bias[cols] + hid.log_partition(cand.reshape(B * J * K, -1)).reshape(B, J, K)
    logp = (scores * x).sum(-1) - torch.logsumexp(scores, -1)
    observed = x.sum(-1) > 0
    return torch.where(observed, logp, torch.zeros_like(logp)).sum(1)


@torch.no_grad()
def pseudo_likelihood(rbm: RBM, data: Tensor, exact: bool = True,
                      generator: torch.Generator | None = None, batch_size: int = 1000,
                      reduce: bool = True, dtype: torch.dtype | None = torch.float64,
                      progress: bool | None = None) -> float | Tensor:
    """Log pseudo-likelihood: per sample, the SUM over visible units of log p(v_i | v_-i).

    Defined for discrete visibles.  Bernoulli: log p(v_i | rest) =
    -softplus(F(v) - F(v with bit i flipped)); softmax: each group against its
    K alternatives (missing all-zero groups are skipped).  ``exact=True`` sums
    every unit (chunked; one field update per unit, no extra GEMMs);
    ``exact=False`` draws one random unit (group) per sample and multiplies by
    the number of units (groups): an unbiased estimate of the same per-sample
    sum, the estimator of scikit-learn's ``BernoulliRBM.score_samples`` and on
    the same scale (per-sample sum, not per unit; ``tests`` check the two
    agree bit for bit).  Unlike ``score_samples`` with an integer
    ``random_state``, which flips the same bits on every call, each call here
    draws fresh bits from ``generator``.
    Returns the mean over samples, or the per-sample float64 tensor with
    ``reduce=False``.  ``progress``: a progress bar over the rows (None: when stderr
    is a terminal).
    """
    rbm = _check_rbm(rbm)
    _positive_int("batch_size", batch_size)
    if isinstance(rbm.visible, SoftmaxUnits):
        n_items, fn = rbm.visible.groups, _pl_softmax
        per_item = rbm.visible.group_size * rbm.n_hidden
    elif isinstance(rbm.visible, BernoulliUnits):
        n_items, fn, per_item = rbm.n_visible, _pl_bernoulli, rbm.n_hidden
    else:
        raise ConfigError(
            f"pseudo-likelihood is defined here for discrete visible units (bernoulli, "
            f"softmax), not {rbm.visible.kind}: use log_likelihood (exact or AIS) instead")
    _check_generator(generator, rbm.device)
    model = _as_dtype(rbm, dtype)
    v = model.prepare(data)
    rows = _field_rows(model)
    out = []
    bar = progress_bar(v.shape[0], "pseudo-likelihood", "row", progress)
    for vb in v.split(batch_size):
        fld = model.hidden_field(vb)
        B = vb.shape[0]
        if exact:
            step = max(1, _CHUNK_ELEMENTS // max(1, B * per_item))
            total = torch.zeros(B, dtype=model.dtype, device=v.device)
            for start in range(0, n_items, step):
                units = torch.arange(start, min(start + step, n_items), device=v.device)
                total += fn(model, vb, fld, rows, units.expand(B, -1))
        else:
            units = torch.randint(n_items, (B, 1), generator=generator, device=v.device)
            total = n_items * fn(model, vb, fld, rows, units)
        out.append(total.double())
        if bar is not None:
            bar.update(B)
    if bar is not None:
        bar.close()
    per_sample = torch.cat(out)
    return float(per_sample.mean()) if reduce else per_sample


# --------------------------------------------------------------------------- cheap monitors
@torch.no_grad()
def reconstruction_error(rbm: RBM, data: Tensor, batch_size: int = 1000) -> float:
    """Mean over samples AND units of (v - E[v | E[h | v]])^2: a per-unit MSE.

    Multiply by the number of visible units for a per-sample squared error.
    Easy to improve without improving the model: never the quality figure.
    """
    rbm = _check_rbm(rbm)
    _positive_int("batch_size", batch_size)
    v = rbm.prepare(data)
    total = 0.0
    for vb in v.split(batch_size):
        r = rbm.visible_mean(rbm.hidden_mean(vb))
        total += float(((vb - r) ** 2).double().sum())
    return total / v.numel()


@torch.no_grad()
def free_energy_gap(rbm: RBM, train: Tensor, test: Tensor, batch_size: int = 1000) -> float:
    """mean F(test) - mean F(train): positive and growing during training means overfitting.

    log Z cancels, so this is the log-likelihood gap between the two sets.
    Use equally sized, fixed subsets so epochs are comparable.
    """
    f_test = free_energies(rbm, test, batch_size)
    f_train = free_energies(rbm, train, batch_size)
    if f_test.numel() == 0 or f_train.numel() == 0:
        raise DataError("free_energy_gap needs non-empty train and test sets")
    return float(f_test.mean() - f_train.mean())
