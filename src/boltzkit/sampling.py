"""Samplers: where the negative (model) particles of a gradient step come from.

A sampler's ``negative(model, v_data, field_data, generator)`` returns states
that stand for the model distribution, and their hidden field under the current
parameters when it has computed it anyway (else None), so the gradient does not
pay for that GEMM twice.  ``field_data`` is the hidden field of the data batch when
the objective has it (else None).  Samplers that keep chains expose them through
``state_dict``/``load_state_dict`` so checkpoints resume exactly.

Any model with ``gibbs(x, steps, beta=..., generator=...)`` and
``free_energy(x, beta)`` can be sampled (Ising, Potts and semi-restricted models
too; their chains start at ``model.init_chains(n, generator)``).  A model with a
hidden layer whose units are independent given the visible ones (an RBM: it has
``hidden_field`` and ``sample_visible``) takes block-Gibbs half-sweeps that reuse
the hidden fields the gradient needs anyway.

Samplers that run chains hot temper the whole energy (p^beta:
:func:`boltzkit.units.whole_energy`), so hot chains of Gaussian-like units spread out
rather than shrink to the origin.  Parallel tempering can place its temperatures
itself (``swap_target``: :func:`place_ladder`); replica exchange, the Metropolis swap
both it and parallel trajectory tempering (:mod:`boltzkit.trajectory`) use, is
:func:`exchange`.  :func:`draw` is the sampling entry point of ``boltzkit sample``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .errors import ConfigError
from .rbm import RBM
from .units import BernoulliUnits, whole_energy


class Sampler:
    """Base class for negative-phase samplers.

    ``k_schedule`` (optional): ``[(from_epoch, k), ...]`` (0-based epochs, the first at
    0), e.g. ``[(0, 1), (20, 3)]``: CD-1 for 20 epochs, then CD-3 (Salakhutdinov et
    al.'s increasing-k schedule); the Trainer calls :meth:`begin_epoch` before each
    epoch.
    """

    name = "sampler"
    k = 1
    k_schedule: list[tuple[int, int]] | None = None

    def begin_epoch(self, epoch: int) -> None:
        """Set ``k`` from ``k_schedule`` for ``epoch`` (0-based)."""
        if self.k_schedule:
            self.k = [k for start, k in self.k_schedule if start <= epoch][-1]

    def negative(self, rbm: RBM, v_data: Tensor, field_data: Tensor,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        return None

    def stats(self) -> dict[str, float]:
        """Per-epoch diagnostics (e.g. swap rates); reset after reading."""
        return {}

    def model_samples(self) -> Tensor | None:
        """The persistent chains that stand for the model at beta = 1 (chains, n_visible),
        or None (no persistent chains, or none at beta = 1).  Monitors read them (trajectory
        AIS starts each leg there); they must not change them."""
        return None


def _block_gibbs(model) -> bool:
    """Whether ``model`` is an RBM-like model (hidden units independent given v)."""
    return hasattr(model, "sample_visible") and hasattr(model, "hidden_field")


def init_chains(model, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` random starting states of sampler chains: (n, n_visible)."""
    start = getattr(model, "init_chains", None)
    return start(n, generator) if start is not None else model.visible.init_state(n, generator)


def _check_k(k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"the number of Gibbs steps k must be an integer >= 1, got {k!r}")
    return k


def check_k_schedule(schedule) -> list[tuple[int, int]] | None:
    """``[(from_epoch, k), ...]`` sorted and checked (first entry at epoch 0, every k >= 1)."""
    if schedule is None:
        return None
    try:
        pairs = sorted((int(e), int(k)) for e, k in schedule)
    except (TypeError, ValueError):
        raise ConfigError(f"k_schedule must be (from_epoch, k) pairs, e.g. [[0, 1], [20, 3]], "
                          f"got {schedule!r}") from None
    if not pairs or pairs[0][0] != 0 or any(k < 1 for _, k in pairs):
        raise ConfigError(f"k_schedule must start at epoch 0 with every k >= 1, e.g. "
                          f"[[0, 1], [20, 3]], got {schedule!r}")
    return pairs


def parse_k_schedule(text) -> list[tuple[int, int]] | None:
    """``"0:1,20:3"`` (from epoch: k) or a list of pairs -> checked pairs; None/"" -> None."""
    if text is None or text == "":
        return None
    if isinstance(text, str):
        try:
            text = [tuple(int(x) for x in part.split(":")) for part in text.split(",") if part]
        except ValueError:
            raise ConfigError(f"k schedule {text!r} is not EPOCH:K[,EPOCH:K...], e.g. "
                              "0:1,15:3,24:5") from None
    return check_k_schedule(text)


class ContrastiveDivergence(Sampler):
    """CD-k: k Gibbs sweeps started at the data batch (Hinton 2002)."""

    name = "cd"

    def __init__(self, k: int = 1) -> None:
        self.k = _check_k(k)

    def negative(self, rbm, v_data, field_data, generator=None):
        if field_data is None or not _block_gibbs(rbm):
            return rbm.gibbs(v_data, self.k, generator=generator), None
        h = rbm.hidden.sample(field_data, generator=generator)
        v = rbm.sample_visible(h, generator=generator)
        return (rbm.gibbs(v, self.k - 1, generator=generator) if self.k > 1 else v), None


class PersistentCD(Sampler):
    """PCD-k (Tieleman 2008): ``n_chains`` persistent chains, k sweeps per update.

    The number of chains is independent of the batch size; chains start from
    random states of the visible layer (``init="random"``) or from data
    (``init="data"``, the first batch's rows, repeated as needed).
    """

    name = "pcd"

    def __init__(self, k: int = 1, n_chains: int | None = None, init: str = "random") -> None:
        self.k = _check_k(k)
        if n_chains is not None and (not isinstance(n_chains, int) or n_chains < 1):
            raise ConfigError(f"n_chains must be a positive integer, got {n_chains!r}")
        if init not in ("random", "data"):
            raise ConfigError(f"unknown chain init {init!r}: use 'random' or 'data'")
        self.n_chains = n_chains
        self.init = init
        self.chains: Tensor | None = None
        self.field: Tensor | None = None

    def start(self, rbm: RBM, v_data: Tensor, generator) -> Tensor:
        """The chains' first states: random, or rows of the first batch (``init``)."""
        n = self.n_chains or v_data.shape[0]
        if self.init == "data":
            reps = math.ceil(n / v_data.shape[0])
            return v_data.repeat(reps, 1)[:n].clone()
        return init_chains(rbm, n, generator)

    def negative(self, rbm, v_data, field_data, generator=None):
        if self.chains is None:
            self.chains = self.start(rbm, v_data, generator)
        if not _block_gibbs(rbm):
            self.chains = rbm.gibbs(self.chains, self.k, generator=generator)
            return self.chains, None
        if self.field is None:
            self.field = rbm.hidden_field(self.chains)
        # The first half-sweep samples h from the field computed at the end of
        # the previous update (the chain's transition then used the parameters
        # of that time, as in scikit-learn's PCD); every later step, and the
        # returned field, use the current parameters.  This saves one GEMM.
        h = rbm.hidden.sample(self.field, generator=generator)
        v = rbm.sample_visible(h, generator=generator)
        if self.k > 1:
            v = rbm.gibbs(v, self.k - 1, generator=generator)
        self.chains, self.field = v, rbm.hidden_field(v)
        return self.chains, self.field

    def model_samples(self):
        return self.chains

    def state_dict(self):
        return {} if self.chains is None else {"chains": self.chains, "field": self.field}

    def load_state_dict(self, state):
        if "chains" in state:
            self.chains = state["chains"].clone()
            self.field = state["field"].clone() if "field" in state else None


class HiddenPersistentCD(Sampler):
    """scikit-learn's persistent CD: chains of *hidden* states, draws from a NumPy RandomState.

    scikit-learn's ``BernoulliRBM`` (stochastic maximum likelihood, Tieleman 2008)
    keeps ``n_chains`` hidden states, all zero at the start (its ``h_samples_``).
    An update samples visible states from them, returns those with their hidden field
    under the current parameters (the model statistics are their hidden means), and
    already draws the chains' next hidden states from those means, before the
    parameters change.  Every draw is a uniform from ``random_state`` compared with
    the unit's probability (1 where u < p), and an update takes its uniforms in one
    ``random_sample`` call in the order they are used, so with the same RandomState
    the chains and draws are scikit-learn's, number for number.  ``k`` > 1 adds
    k - 1 sweeps h -> v -> h first (scikit-learn: k = 1).

    :class:`PersistentCD` keeps visible states and draws from a torch generator; this
    sampler ignores the ``generator`` it is given.  Bernoulli visible and hidden units
    only (the draw rule is theirs); one process only (every rank would draw the same
    numbers).  ``state_dict`` holds the chains and the RandomState's state.
    """

    name = "pcd-hidden"

    def __init__(self, k: int = 1, n_chains: int | None = None,
                 random_state: np.random.RandomState | int | None = None) -> None:
        self.k = _check_k(k)
        if n_chains is not None and (not isinstance(n_chains, int) or n_chains < 1):
            raise ConfigError(f"n_chains must be a positive integer, got {n_chains!r}")
        if not isinstance(random_state, np.random.RandomState):
            random_state = np.random.RandomState(random_state)
        self.n_chains = n_chains
        self.random_state = random_state
        self.chains: Tensor | None = None  # hidden states (n_chains, n_hidden)

    def start(self, rbm: RBM, v_data: Tensor) -> Tensor:
        """All-zero hidden states, ``n_chains`` of them (default: the batch's rows)."""
        if not (isinstance(rbm.visible, BernoulliUnits)
                and isinstance(rbm.hidden, BernoulliUnits)):
            raise ConfigError(f"{type(self).__name__} draws Bernoulli units; this model has "
                              f"{rbm.visible.kind} visible and {rbm.hidden.kind} hidden units: "
                              "use PersistentCD ('pcd')")
        if torch.distributed.is_available() and torch.distributed.is_initialized() and (
                torch.distributed.get_world_size() > 1):
            raise ConfigError(f"{type(self).__name__} draws from one NumPy RandomState, which "
                              "every process would repeat: train it in one process, or use "
                              "'pcd'")
        n = self.n_chains or v_data.shape[0]
        return v_data.new_zeros(n, rbm.n_hidden)

    def uniforms(self, n_chains: int, n_visible: int, n_hidden: int,
                 device: torch.device) -> list[Tensor]:
        """One update's uniforms in the order they are used: (n_chains, n_visible) for each
        visible draw and (n_chains, n_hidden) for each hidden one, v, (h, v) x (k - 1), h.

        float64 on ``device``, from one ``random_sample`` call: the same numbers as
        successive ``uniform(size=...)`` calls of those shapes.
        """
        sizes = [n_visible] + [n_hidden, n_visible] * (self.k - 1) + [n_hidden]
        flat = torch.from_numpy(self.random_state.random_sample(n_chains * sum(sizes)))
        if device.type != "cpu":
            flat = flat.to(device)
        out, at = [], 0
        for size in sizes:
            out.append(flat[at:at + n_chains * size].view(n_chains, size))
            at += n_chains * size
        return out

    def negative(self, rbm, v_data, field_data, generator=None):
        h = self.start(rbm, v_data) if self.chains is None else self.chains
        u = self.uniforms(h.shape[0], rbm.n_visible, rbm.n_hidden, h.device)
        v = _below(u[0], rbm.visible_mean(h))
        for i in range(1, len(u) - 1, 2):
            v = _below(u[i + 1], rbm.visible_mean(_below(u[i], rbm.hidden_mean(v))))
        field = rbm.hidden_field(v)
        self.chains = _below(u[-1], rbm.hidden.mean(field))
        return v, field

    def state_dict(self):
        out = {"random_state": random_state_tensor(self.random_state)}
        if self.chains is not None:
            out["chains"] = self.chains
        return out

    def load_state_dict(self, state):
        if "random_state" in state:
            set_random_state(self.random_state, state["random_state"])
        if "chains" in state:
            self.chains = state["chains"].clone()


def _below(u: Tensor, p: Tensor) -> Tensor:
    """Bernoulli(p) states from uniforms ``u`` (1 where u < p), in p's dtype; the compare
    runs in the wider of the two dtypes (float64 uniforms against float32 p: exact)."""
    return torch.lt(u, p).to(p.dtype)


def random_state_tensor(rs: np.random.RandomState) -> Tensor:
    """A NumPy RandomState's (MT19937) state as a float64 tensor of 627 values, exact
    (the 624 32-bit key words, the position, the Gaussian flag and the cached Gaussian)."""
    name, keys, pos, has_gauss, cached = rs.get_state(legacy=True)
    return torch.from_numpy(np.concatenate([keys.astype(np.float64),
                                            [pos, has_gauss, cached]]))


def set_random_state(rs: np.random.RandomState, state: Tensor) -> None:
    """Restore a state that :func:`random_state_tensor` wrote into ``rs``."""
    a = state.detach().cpu().to(torch.float64).numpy()
    if a.shape != (627,):
        raise ConfigError(f"a NumPy RandomState state has 627 values, got shape {a.shape}")
    rs.set_state(("MT19937", a[:624].astype(np.uint32), int(a[624]), int(a[625]),
                  float(a[626])))


def geometric_betas(n_temperatures: int, beta_min: float = 0.1) -> Tensor:
    """A ladder of inverse temperatures from 1 down to ``beta_min``, geometric spacing."""
    if n_temperatures < 2:
        raise ConfigError("parallel tempering needs at least 2 temperatures")
    if not 0 < beta_min < 1:
        raise ConfigError(f"beta_min must be in (0, 1), got {beta_min}")
    return torch.logspace(0.0, math.log10(beta_min), n_temperatures)


def exchange(x: Tensor, lo: Tensor, own: Tensor, swapped: Tensor,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Metropolis replica exchange between rows ``lo`` and ``lo + 1`` of ``x``.

    x: tensor (replicas, chains, n_visible); lo: (P,) indices of the lower replica of each
    pair; own: (P, chains) F_lo(x_lo) + F_hi(x_hi); swapped: (P, chains) F_lo(x_hi) +
    F_hi(x_lo), where F_r is replica r's free energy.  A swap is accepted with probability
    min(1, exp(own - swapped)), which leaves the product of the replicas' distributions
    invariant.  Returns (the new states, the accepted swaps (P, chains), the acceptance
    probabilities (P, chains)).
    """
    log_alpha = own - swapped
    u = torch.rand(log_alpha.shape, generator=generator, device=x.device, dtype=x.dtype)
    accept = torch.log(u) < log_alpha
    hi = lo + 1
    a, b = x[lo], x[hi]
    acc = accept.unsqueeze(-1)
    x = x.clone()
    x[lo] = torch.where(acc, b, a)
    x[hi] = torch.where(acc, a, b)
    return x, accept, log_alpha.clamp_max(0.0).exp()


def place_ladder(positions: Tensor, rates: Tensor, target: float,
                 max_replicas: int) -> Tensor:
    """New ladder positions whose neighbouring swap rates should all be about ``target``.

    positions: (R,) the current ladder (e.g. log beta from 0 down to log beta_min), ends
    kept; rates: (R - 1,) the measured mean acceptance probability of each neighbouring
    pair.  For replicas whose energy distributions are near-Gaussian, a pair's acceptance
    is erfc(d / 2) with d proportional to their distance (Kofke 2002; Predescu et al.
    2004), so d_i = 2 erfcinv(rate_i) measures each gap and adds up along the ladder.  The
    new ladder has the fewest gaps of length at most 2 erfcinv(target) (between 2 and
    ``max_replicas`` positions), equally spaced in that distance, by interpolation of the
    cumulative distance at the old positions.  Repeating it with rates measured on the
    new ladder converges where the measured rates stop moving.
    """
    if not 0 < target < 1:
        raise ConfigError(f"the target swap rate must be in (0, 1), got {target}")
    pos = positions.double().cpu()
    r = rates.double().cpu().clamp(1e-4, 1.0 - 1e-9)
    d = 2.0 * torch.special.erfinv(1.0 - r)  # 2 erfcinv(rate)
    d = d.clamp_min(1e-6)
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), d.cumsum(0)])
    step = 2.0 * float(torch.special.erfinv(torch.tensor(1.0 - target, dtype=torch.float64)))
    gaps = min(max(math.ceil(float(cum[-1]) / step - 1e-9), 1), max_replicas - 1)
    want = torch.linspace(0.0, float(cum[-1]), gaps + 1, dtype=torch.float64)
    idx = torch.searchsorted(cum, want, right=True).clamp(1, pos.numel() - 1)
    lo, hi = idx - 1, idx
    frac = ((want - cum[lo]) / (cum[hi] - cum[lo])).clamp(0.0, 1.0)
    out = pos[lo] + frac * (pos[hi] - pos[lo])
    out[0], out[-1] = pos[0], pos[-1]
    return out.to(positions.dtype)


def _check_ladder_options(swap_target: float | None, max_replicas: int) -> None:
    if swap_target is not None and not 0 < swap_target < 1:
        raise ConfigError(f"swap_target must be in (0, 1) (e.g. 0.25), got {swap_target!r}")
    if not isinstance(max_replicas, int) or isinstance(max_replicas, bool) or max_replicas < 2:
        raise ConfigError(f"max_replicas must be an integer >= 2, got {max_replicas!r}")


class ParallelTempering(Sampler):
    """Parallel tempering (Desjardins et al. 2010): replicas at several betas, swapped.

    Each update runs ``k`` Gibbs sweeps on every replica at its own beta (one
    batched pass), then proposes swaps between neighbouring temperatures
    (alternating even and odd pairs), accepted with the Metropolis rule on
    the free energies (:func:`exchange`).  Replicas sample p(v)^beta, the whole
    energy tempered (:func:`boltzkit.units.whole_energy`); the beta = 1 replicas are
    the negative particles.  ``stats()`` reports the swap acceptance rate of each
    neighbouring pair (``swap_rate_min``, ``swap_rate_mean``).

    ``swap_target`` (e.g. 0.25) turns on the automatic ladder: every ``adapt_every``
    updates the temperatures between 1 and ``beta_min`` are re-placed, and their number
    chosen (at most ``max_replicas``), so that every neighbouring pair's acceptance
    approaches the target (:func:`place_ladder`; each new temperature takes the chains
    of the nearest old one).  ``stats()`` then also reports ``n_temperatures``.
    ``adapt_until`` (updates; None: always) freezes the ladder after a burn-in, as a
    sampler must for its chains to target the model exactly.
    """

    name = "pt"

    def __init__(self, k: int = 1, betas: Tensor | list[float] | None = None,
                 n_temperatures: int = 10, beta_min: float = 0.1,
                 n_chains: int | None = None, swap_target: float | None = None,
                 max_replicas: int = 32, adapt_every: int = 50,
                 adapt_until: int | None = None) -> None:
        self.k = _check_k(k)
        b = geometric_betas(n_temperatures, beta_min) if betas is None else torch.as_tensor(
            betas, dtype=torch.float32)
        b = b.flatten()
        if b.numel() < 2 or float(b[0]) != 1.0 or bool((b[1:] >= b[:-1]).any()) or float(
                b[-1]) < 0:
            raise ConfigError("betas must start at 1.0 and decrease strictly, staying >= 0, "
                              f"got {b.tolist()}")
        _check_ladder_options(swap_target, max_replicas)
        if swap_target is not None and float(b[-1]) <= 0:
            raise ConfigError("the automatic ladder places temperatures in log beta: the "
                              "lowest beta must be > 0")
        if not isinstance(adapt_every, int) or adapt_every < 1:
            raise ConfigError(f"adapt_every must be a positive integer, got {adapt_every!r}")
        self.betas = b
        self.n_chains = n_chains
        self.swap_target = swap_target
        self.max_replicas = max_replicas
        self.adapt_every = adapt_every
        self.adapt_until = adapt_until
        self.chains: Tensor | None = None  # (T, C, n_visible)
        self._parity = 0
        self._updates = 0
        self._accepted = torch.zeros(b.numel() - 1)
        self._attempted = torch.zeros(b.numel() - 1)
        self._prob_sum = torch.zeros(b.numel() - 1, dtype=torch.float64)  # since adapting
        self._prob_n = torch.zeros(b.numel() - 1, dtype=torch.float64)

    def begin_epoch(self, epoch: int) -> None:
        """The k schedule, and (automatic ladder) a re-placement from last epoch's rates."""
        super().begin_epoch(epoch)
        if self.swap_target is not None and (self.adapt_until is None
                                             or self._updates <= self.adapt_until):
            self.adapt()

    def negative(self, rbm, v_data, field_data, generator=None):
        T = self.betas.numel()
        if self.chains is None:
            c = self.n_chains or v_data.shape[0]
            self.chains = init_chains(rbm, T * c, generator).reshape(T, c, -1)
        T, C, n = self.chains.shape
        betas = self.betas.to(device=rbm.device, dtype=rbm.dtype)
        beta_col = betas.repeat_interleave(C).unsqueeze(1)
        with whole_energy(rbm):
            flat = rbm.gibbs(self.chains.reshape(T * C, n), self.k, beta=beta_col,
                             generator=generator)
            self.chains = self._swap(rbm, flat.reshape(T, C, n), betas, generator)
        self._updates += 1
        if (self.swap_target is not None and self._updates % self.adapt_every == 0
                and (self.adapt_until is None or self._updates <= self.adapt_until)):
            self.adapt()
        return self.chains[0], None

    def _swap(self, rbm: RBM, x: Tensor, betas: Tensor, generator) -> Tensor:
        T, C, n = x.shape
        lo = torch.arange(self._parity, T - 1, 2, device=x.device)
        self._parity ^= 1
        if lo.numel() == 0:
            return x
        hi = lo + 1
        a, b = x[lo], x[hi]  # (P, C, n)
        ba = betas[lo].repeat_interleave(C).unsqueeze(1)
        bb = betas[hi].repeat_interleave(C).unsqueeze(1)
        P = lo.numel()
        a2, b2 = a.reshape(-1, n), b.reshape(-1, n)
        if _block_gibbs(rbm):
            fld_a, fld_b = rbm.hidden_field(a2), rbm.hidden_field(b2)  # each used at two betas
            fe = rbm.free_energy
            own = fe(a2, ba, field=fld_a) + fe(b2, bb, field=fld_b)
            swapped = fe(b2, ba, field=fld_b) + fe(a2, bb, field=fld_a)
        else:
            fe = rbm.free_energy
            own = fe(a2, ba) + fe(b2, bb)
            swapped = fe(b2, ba) + fe(a2, bb)
        x, accept, prob = exchange(x, lo, own.reshape(P, C), swapped.reshape(P, C), generator)
        where = lo.cpu()
        self._accepted[where] += accept.sum(1).float().cpu()
        self._attempted[where] += C
        self._prob_sum[where] += prob.sum(1).double().cpu()
        self._prob_n[where] += C
        return x

    @torch.no_grad()
    def adapt(self) -> None:
        """Re-place the ladder from the acceptance probabilities measured since the last
        adaptation (pairs never attempted keep rate 1: nothing is known against them)."""
        if self.chains is None or not bool((self._prob_n > 0).all()):
            return
        rates = self._prob_sum / self._prob_n
        old = self.betas.double().log()
        new = place_ladder(old, rates, self.swap_target, self.max_replicas)
        nearest = (new[:, None] - old[None, :]).abs().argmin(1)
        self.chains = self.chains[nearest.to(self.chains.device)].clone()
        self.betas = new.exp().to(torch.float32)
        self.betas[0] = 1.0
        T = self.betas.numel()
        self._accepted = torch.zeros(T - 1)
        self._attempted = torch.zeros(T - 1)
        self._prob_sum = torch.zeros(T - 1, dtype=torch.float64)
        self._prob_n = torch.zeros(T - 1, dtype=torch.float64)

    def swap_rates(self) -> list[float]:
        return (self._accepted / self._attempted.clamp_min(1)).tolist()

    def model_samples(self):
        return None if self.chains is None else self.chains[0]

    def stats(self):
        rates = self.swap_rates()
        self._accepted.zero_()
        self._attempted.zero_()
        out = {"swap_rate_min": min(rates), "swap_rate_mean": sum(rates) / len(rates)}
        if self.swap_target is not None:
            out["n_temperatures"] = float(self.betas.numel())
        return out

    def state_dict(self):
        if self.chains is None:
            return {}
        out = {"chains": self.chains, "parity": torch.tensor(self._parity)}
        if self.swap_target is not None:
            out.update(betas=self.betas, updates=torch.tensor(self._updates),
                       prob_sum=self._prob_sum, prob_n=self._prob_n,
                       accepted=self._accepted, attempted=self._attempted)
        return out

    def load_state_dict(self, state):
        if "chains" in state:
            self.chains = state["chains"].clone()
            self._parity = int(state.get("parity", torch.tensor(0)))
        if "betas" in state:
            self.betas = state["betas"].clone().cpu()
            self._updates = int(state["updates"])
            self._prob_sum = state["prob_sum"].clone().cpu()
            self._prob_n = state["prob_n"].clone().cpu()
            self._accepted = state["accepted"].clone().cpu()
            self._attempted = state["attempted"].clone().cpu()


SAMPLERS = ("cd", "pcd", "pt", "tds", "ptt")


def make_sampler(method: str, k: int = 1, chains: int | None = None,
                 n_temperatures: int = 10, beta_min: float = 0.1,
                 betas: list[float] | None = None, chain_init: str = "random",
                 beta_std: float = 0.5, beta_autocorr: float = 0.9,
                 readout_steps: int = 0, k_schedule=None, swap_target: float | None = None,
                 max_replicas: int = 32) -> Sampler:
    """Build a sampler by name: "cd", "pcd", "pt", "tds" (temperature-driven PCD) or "ptt"
    (parallel trajectory tempering, :class:`boltzkit.trajectory.TrajectoryTempering`).

    ``beta_std``, ``beta_autocorr`` and ``readout_steps`` only apply to "tds"
    (see :class:`boltzkit.driven.DrivenPCD`); ``swap_target`` to "pt" (the automatic
    ladder) and "ptt" (when to take a snapshot; default 0.25), ``max_replicas`` to both;
    ``k_schedule`` to every sampler (:class:`Sampler`).
    """
    if swap_target is not None and method not in ("pt", "ptt"):
        raise ConfigError(f"swap_target applies to 'pt' and 'ptt', not to {method!r}: drop it")
    if method == "tds":
        from .driven import DrivenPCD

        sampler: Sampler = DrivenPCD(k, chains, beta_std=beta_std, beta_autocorr=beta_autocorr,
                                     init=chain_init, readout_steps=readout_steps)
    elif readout_steps:
        raise ConfigError(f"readout_steps applies to the temperature-driven sampler ('tds'), "
                          f"not to {method!r}: drop it or use method 'tds'")
    elif method == "cd":
        sampler = ContrastiveDivergence(k)
    elif method == "pcd":
        sampler = PersistentCD(k, chains, init=chain_init)
    elif method == "pt":
        sampler = ParallelTempering(k, betas=betas, n_temperatures=n_temperatures,
                                    beta_min=beta_min, n_chains=chains, swap_target=swap_target,
                                    max_replicas=max_replicas)
    elif method == "ptt":
        from .trajectory import TrajectoryTempering

        sampler = TrajectoryTempering(k, chains, swap_target=0.25 if swap_target is None
                                      else swap_target, max_replicas=max_replicas,
                                      init=chain_init)
    else:
        raise ConfigError(f"unknown training method {method!r}: choose one of "
                          f"{list(SAMPLERS)}")
    sampler.k_schedule = parse_k_schedule(k_schedule)
    return sampler


#: Methods of :func:`draw` (``boltzkit sample --method``).
DRAW_METHODS = ("gibbs", "pt", "ptt")


def _takes(func, name: str) -> bool:
    import inspect

    return name in inspect.signature(func).parameters


def tempers(model) -> bool:
    """Whether ``model`` can be tempered by the replica samplers: states of one layer
    (n, n_visible), ``gibbs(x, steps, beta=...)`` and ``free_energy(x, beta)``."""
    gibbs, fe = getattr(model, "gibbs", None), getattr(model, "free_energy", None)
    return (callable(gibbs) and callable(fe) and _takes(gibbs, "beta") and _takes(fe, "beta")
            and hasattr(model, "visible"))


@torch.no_grad()
def draw(model, n: int, steps: int = 1000, method: str = "gibbs", init: Tensor | None = None,
         generator: torch.Generator | None = None, beta: float = 1.0,
         return_mean: bool = False, n_temperatures: int = 10, beta_min: float = 0.1,
         swap_target: float | None = 0.25, max_replicas: int = 32,
         trajectory=None) -> tuple[Tensor, dict]:
    """``n`` samples of ``model`` (n, n_visible) by ``method``, and what the run measured.

    * "gibbs": ``steps`` Gibbs sweeps of ``n`` chains from ``init`` (or the model's own
      random start), at inverse temperature ``beta`` (the whole energy tempered:
      samples of p(v)^beta);
    * "pt": parallel tempering with ``n`` chains per temperature, from 1 down to
      ``beta_min``; with ``swap_target`` the ladder (at most ``max_replicas`` temperatures)
      is placed automatically during the first half of the updates, then frozen
      (:class:`ParallelTempering`); info: ``n_temperatures`` and the frozen half's
      ``swap_rate_min`` / ``swap_rate_mean``;
    * "ptt": replica exchange along a saved training trajectory
      (``trajectory``: a :class:`boltzkit.trajectory.TrajectoryPath`; see
      :func:`boltzkit.trajectory.trajectory_sample`); info: ``n_replicas`` and the rates.

    ``init``: starting states (n, n_visible) of every chain (pt, ptt: of every replica).
    ``return_mean`` (RBMs): E[v | h] of one last half-sweep instead of states.
    """
    if method not in DRAW_METHODS:
        raise ConfigError(f"unknown sampling method {method!r}: choose one of "
                          f"{list(DRAW_METHODS)}")
    if method != "gibbs" and beta != 1.0:
        raise ConfigError(f"{method} samples the model at beta = 1 (its hot replicas do the "
                          "mixing): drop --beta")
    if init is not None:
        init = init.to(device=model.device, dtype=model.dtype)
        if init.shape[0] != n:
            raise ConfigError(f"init has {init.shape[0]} rows, expected n = {n}")
    info: dict = {}
    if method == "gibbs":
        options = {"generator": generator}
        for key, value, default in (("init", init, None), ("beta", beta, 1.0),
                                    ("return_mean", return_mean, False)):
            if _takes(model.sample, key):
                options[key] = value
            elif value is not default:
                raise ConfigError(f"a {type(model).__name__} does not sample with {key}: "
                                  "drop it")
        if beta != 1.0:
            with whole_energy(model):
                return model.sample(n, steps=steps, **options), info
        return model.sample(n, steps=steps, **options), info
    if not tempers(model):
        raise ConfigError(f"a {type(model).__name__} cannot be sampled by {method} (it needs "
                          "gibbs and free_energy at a temperature): use --method gibbs")
    if return_mean and not _block_gibbs(model):
        raise ConfigError(f"a {type(model).__name__} has no E[v | h]: drop --mean")
    if method == "pt":
        pt = ParallelTempering(1, n_temperatures=n_temperatures, beta_min=beta_min, n_chains=n,
                               swap_target=swap_target, max_replicas=max_replicas,
                               adapt_every=25, adapt_until=steps // 2)
        if init is not None:
            pt.chains = init.unsqueeze(0).repeat(pt.betas.numel(), 1, 1)
        dummy = torch.empty(n, model.n_visible, device=model.device, dtype=model.dtype)
        v = init if init is not None else dummy
        for step in range(1, steps + 1):
            v = pt.negative(model, dummy, None, generator)[0]
            if step == steps // 2:
                pt.stats()  # the rates below are the frozen ladder's
        info = {**pt.stats(), "n_temperatures": int(pt.betas.numel()),
                "betas": [round(float(b), 5) for b in pt.betas]}
    else:
        if trajectory is None:
            raise ConfigError("ptt needs the model's training trajectory (train with "
                              "--save-trajectory)")
        from .trajectory import trajectory_sample

        v, info = trajectory_sample(trajectory, n, steps, swap_target=swap_target or 0.25,
                                    max_replicas=max_replicas, init=init, generator=generator)
    if return_mean:
        v = model.visible_mean(model.sample_hidden(v, generator=generator))
    return v, info
