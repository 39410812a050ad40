"""Deep Boltzmann machines (Salakhutdinov & Hinton 2009, 2012) with honest likelihoods.

A DBM is a chain of layers x_0 (visible), x_1, ..., x_{L-1} with undirected
weights between neighbours only::

    E(x) = sum_l E_l(x_l) - sum_l c(x_l)^T W_l c(x_{l+1})

It is composed from boltzkit parts: each layer is a :class:`~boltzkit.units.Units`
(Bernoulli; the visible layer may be Gaussian with a fixed variance) and each
weight matrix a :class:`~boltzkit.connections.DenseConnection`.  Given its two
neighbours a layer is conditionally independent of the rest, so

* **inference** of q(h | v) is mean-field: damped fixed-point (Gauss-Seidel)
  updates mu_l <- (1 - d) * E[x_l | neighbours' means] + d * mu_l, layer by
  layer, until the largest change of any mean in a sweep is below ``tol``
  (or ``max_steps`` sweeps); with ``d = 0`` each layer update maximises the
  variational bound exactly for that layer, so the bound never decreases;
* **sampling** alternates the odd layers (given the even ones) and the even
  layers (given the odd ones): two block-Gibbs half-sweeps, batched over chains;
* **log Z** is exact for tiny models (enumerate the odd layers, sum the even
  layers out in closed form) and estimated by AIS otherwise, annealing only the
  even layers {v, h2, ...} with the odd layers summed out analytically
  (Salakhutdinov & Hinton 2009), with float64 log weights and the +/-3 sigma
  convention of :func:`boltzkit.metrics.likelihood.ais_log_z`;
* **log p(v)** is bounded below by E_q[-E(v, h)] + H(q) - log Z with the
  mean-field q (equal to log p(v) when q is the exact posterior, e.g. one
  hidden layer).

Training: greedy pretraining with the doubling trick (bottom RBM with doubled
visible-to-hidden input, top RBM with doubled hidden-to-visible input, middle
RBMs halved when composed), each RBM trained by :class:`boltzkit.training.Trainer`,
then joint training (mean-field data phase, persistent Gibbs chains for the
model phase, gradient = data statistics - model statistics, a torch optimizer).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import precision
from ..connections import DenseConnection
from ..errors import ConfigError
from ..metrics.ais import DEFAULT_AIS_STEPS, AISResult, betas_from, run_ais
from ..model import Model
from ..objectives import Objective, assign_grads
from ..rbm import RBM
from ..sampling import Sampler, _check_k
from ..units import BernoulliUnits, Beta, GaussianUnits, Units, make_units, units_from_config

log = logging.getLogger(__name__)

#: exact log Z refuses to enumerate more odd-layer states than this.
MAX_EXACT_STATES = 2**22


# --------------------------------------------------------------------------- specs
def parse_layers(spec: str | Sequence[int] | None, n_features: int | None = None) -> list[int]:
    """Layer sizes from "784,500,1000" or a sequence of ints; ConfigError when malformed.

    With ``n_features`` (the data's width) the visible size may be omitted, as for
    the DBN: a spec that does not start with ``n_features`` is read as hidden sizes.
    """
    if spec is None:
        raise ConfigError("a DBM needs layer sizes: pass --layers like 784,500,1000 "
                          "(visible first, at least one hidden layer)")
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.replace("-", ",").split(",") if p.strip()]
        try:
            sizes = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"layer sizes must be integers separated by commas, like "
                              f"784,500,1000; got {spec!r}") from None
    else:
        sizes = list(spec)
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
            raise ConfigError(f"layer sizes must be integers, got {spec!r}")
    if n_features is not None and sizes and sizes[0] != n_features:
        sizes = [n_features, *sizes]
    if len(sizes) < 2:
        raise ConfigError(f"a DBM needs a visible layer and at least one hidden layer, got "
                          f"{sizes}: pass sizes like 784,500,1000")
    if any(s <= 0 for s in sizes):
        raise ConfigError(f"every layer size must be a positive integer, got {sizes}")
    return sizes


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


# --------------------------------------------------------------------------- the model
class DBM(Model):
    """A deep Boltzmann machine: a list of layers and the dense connections between them."""

    def __init__(self, layers: Sequence[Units], connections: Sequence[DenseConnection] | None
                 = None, init_std: float = 0.01,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        layers = list(layers)
        if len(layers) < 2:
            raise ConfigError("a DBM needs a visible layer and at least one hidden layer")
        for i, u in enumerate(layers):
            if not isinstance(u, Units):
                raise ConfigError(f"layer {i} is a {type(u).__name__}, not boltzkit units")
            if i > 0 and not isinstance(u, BernoulliUnits):
                raise ConfigError(f"DBM hidden layers must be bernoulli units, layer {i} is "
                                  f"{u.kind}")
        if not isinstance(layers[0], BernoulliUnits | GaussianUnits):
            raise ConfigError(f"the DBM visible layer must be bernoulli or gaussian, got "
                              f"{layers[0].kind}")
        if isinstance(layers[0], GaussianUnits) and layers[0].learn_variance:
            raise ConfigError("DBM Gaussian visible units need a fixed variance "
                              "(learn_variance=False): standardise the data instead")
        if connections is None:
            connections = [DenseConnection(a.n, b.n, init_std=init_std, generator=generator)
                           for a, b in zip(layers[:-1], layers[1:], strict=True)]
        connections = list(connections)
        if len(connections) != len(layers) - 1:
            raise ConfigError(f"{len(layers)} layers need {len(layers) - 1} connections, got "
                              f"{len(connections)}")
        for i, c in enumerate(connections):
            if (c.n_visible, c.n_hidden) != (layers[i].n, layers[i + 1].n):
                raise ConfigError(f"connection {i} is {c.n_visible}x{c.n_hidden} but layers "
                                  f"{i}, {i + 1} have {layers[i].n}, {layers[i + 1].n} units")
        self.layers = nn.ModuleList(layers)
        self.connections = nn.ModuleList(connections)

    # --- shape and description ----------------------------------------------
    @property
    def sizes(self) -> list[int]:
        return [u.n for u in self.layers]

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def visible(self) -> Units:
        return self.layers[0]

    def config(self) -> dict:
        """JSON description that, with the tensors, rebuilds the model."""
        return {"model": "dbm", "layers": [u.config() for u in self.layers],
                "connections": [c.config() for c in self.connections]}

    @classmethod
    def from_config(cls, cfg: dict) -> DBM:
        if cfg.get("model") != "dbm":
            raise ConfigError(f"config describes a {cfg.get('model')!r}, not a dbm")
        layers = [units_from_config(u) for u in cfg["layers"]]
        conns = [DenseConnection(int(c["n_visible"]), int(c["n_hidden"]))
                 for c in cfg["connections"]]
        return cls(layers, conns)

    def prepare(self, v: Tensor, name: str = "data") -> Tensor:
        """Move data to the model's device/dtype and validate it against the visible layer."""
        if not isinstance(v, Tensor):
            v = torch.as_tensor(v)
        v = v.to(device=self.device, dtype=self.dtype)
        self.layers[0].validate(v, name)
        return v

    # --- fields and energies -------------------------------------------------
    def field(self, layer: int, states: Sequence[Tensor]) -> Tensor:
        """Input to ``layer`` from its neighbours' states (biases not included)."""
        out = None
        if layer > 0:
            out = self.connections[layer - 1](self.layers[layer - 1].coupling(states[layer - 1]))
        if layer < self.n_layers - 1:
            down = self.connections[layer].transpose(self.layers[layer + 1].coupling(
                states[layer + 1]))
            out = down if out is None else out + down
        return out

    def energy(self, states: Sequence[Tensor], beta: Beta = 1.0) -> Tensor:
        """E(v, h_1, ..., h_{L-1}) per sample, shape (batch,)."""
        e = sum(u.energy(x, beta) for u, x in zip(self.layers, states, strict=True))
        for i, c in enumerate(self.connections):
            inter = c.interaction(self.layers[i].coupling(states[i]),
                                  self.layers[i + 1].coupling(states[i + 1]))
            e = e - (inter * beta.reshape(-1) if isinstance(beta, Tensor) else inter * beta)
        return e

    # --- inference -----------------------------------------------------------
    @torch.no_grad()
    def mean_field(self, v: Tensor, max_steps: int = 30, tol: float = 1e-4,
                   damping: float = 0.0, init: Sequence[Tensor] | None = None,
                   return_info: bool = False):
        """Mean-field q(h | v): the hidden means [mu_1, ..., mu_{L-1}].

        Starts from a bottom-up pass that doubles the input of every layer with
        a layer above (it stands in for the missing top-down input, as in
        Salakhutdinov & Hinton's recognition pass), or from ``init``.  Each sweep
        updates layers 1..L-1 in order (Gauss-Seidel), damped by ``damping`` in
        [0, 1).  Converged when the largest absolute change of any mean in a
        sweep is below ``tol``; ``return_info`` also returns
        ``{"steps", "converged", "max_change"}``.
        """
        if not 0.0 <= damping < 1.0:
            raise ConfigError(f"damping must be in [0, 1), got {damping}")
        _positive_int("max_steps", max_steps)
        L = self.n_layers
        states: list[Tensor] = [v]
        if init is not None:
            states += [m.clone() for m in init]
        else:
            for i in range(1, L):
                fld = self.connections[i - 1](self.layers[i - 1].coupling(states[i - 1]))
                states.append(self.layers[i].mean(fld * (2.0 if i < L - 1 else 1.0)))
        steps, change, converged = 0, math.inf, False
        for steps in range(1, max_steps + 1):  # noqa: B007 (steps reported after the loop)
            change = 0.0
            for i in range(1, L):
                new = self.layers[i].mean(self.field(i, states))
                if damping:
                    new = damping * states[i] + (1.0 - damping) * new
                change = max(change, float((new - states[i]).abs().max()))
                states[i] = new
            if change < tol:
                converged = True
                break
        mus = states[1:]
        if return_info:
            return mus, {"steps": steps, "converged": converged, "max_change": change}
        return mus

    @torch.no_grad()
    def transform(self, v: Tensor, batch_size: int = 1000, mf_steps: int = 30) -> Tensor:
        """Features for a classifier: all hidden layers' mean-field marginals, concatenated."""
        v = self.prepare(v)
        return torch.cat([torch.cat(self.mean_field(b, mf_steps), 1)
                          for b in v.split(batch_size)])

    # --- sampling --------------------------------------------------------------
    def init_states(self, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """Random states of every layer for ``n`` chains."""
        return [u.init_state(n, generator) for u in self.layers]

    @torch.no_grad()
    def gibbs_step(self, states: list[Tensor], beta: Beta = 1.0,
                   generator: torch.Generator | None = None,
                   clamp_visible: bool = False) -> list[Tensor]:
        """One sweep: sample odd layers given even ones, then even layers given odd ones."""
        states = list(states)
        for parity in (1, 0):
            for i in range(parity, self.n_layers, 2):
                if i == 0 and clamp_visible:
                    continue
                states[i] = self.layers[i].sample(self.field(i, states), beta, generator)
        return states

    @torch.no_grad()
    def sample(self, n: int, steps: int = 1000, generator: torch.Generator | None = None,
               init: list[Tensor] | None = None, return_mean: bool = True,
               return_states: bool = False, beta: Beta = 1.0):
        """Draw ``n`` visible samples by ``steps`` Gibbs sweeps (at inverse temperature
        ``beta``) from random (or ``init``) states.

        ``return_mean`` gives E[v | h_1] of the last sweep (for pictures);
        ``return_states`` returns every layer's final states instead.
        """
        if not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"steps must be an integer >= 0, got {steps!r}")
        states = self.init_states(n, generator) if init is None else list(init)
        for _ in range(steps):
            states = self.gibbs_step(states, beta, generator=generator)
        if return_states:
            return states
        if return_mean:
            return self.layers[0].mean(self.field(0, states), beta)
        return states[0]

    # --- exact quantities for tiny models ---------------------------------------
    def _odd_states(self, max_states: int) -> tuple[list[int], int]:
        odd = list(range(1, self.n_layers, 2))
        total = math.prod(2 ** self.layers[i].n for i in odd)
        if total > max_states:
            raise ConfigError(f"exact DBM log Z would enumerate {total:,} odd-layer states "
                              f"(limit {max_states:,}): use ais_log_z instead")
        return odd, total

    def _enumerate_odd(self, odd: list[int], chunk: int = 4096):
        """Yield lists (per odd layer) of state chunks covering every joint odd state."""
        bits = [self.layers[i].n for i in odd]
        n_bits = sum(bits)
        dev, dt = self.device, self.dtype
        shifts = torch.arange(n_bits, device=dev)
        total = 2**n_bits
        for start in range(0, total, chunk):
            idx = torch.arange(start, min(start + chunk, total), device=dev)
            all_bits = ((idx[:, None] >> shifts) & 1).to(dt)
            yield list(all_bits.split(bits, dim=1))

    def _log_f_odd(self, odd: list[int], odd_states: list[Tensor],
                   v: Tensor | None = None) -> Tensor:
        """log sum over the even layers (v held fixed if given) of exp(-E), per odd state."""
        n = odd_states[0].shape[0]
        states: list[Tensor | None] = [None] * self.n_layers
        for i, s in zip(odd, odd_states, strict=True):
            states[i] = s
        out = torch.zeros(n, dtype=torch.float64, device=self.device)
        for i, s in zip(odd, odd_states, strict=True):
            out -= self.layers[i].energy(s).double()
        for i in range(0, self.n_layers, 2):
            fld = self.field(i, states)  # only odd neighbours are needed
            if i == 0 and v is not None:
                cv = self.layers[0].coupling(v)
                out += (-self.layers[0].energy(v) + (cv * fld).sum(-1)).double()
            else:
                out += self.layers[i].log_partition(fld).double()
        return out

    @torch.no_grad()
    def exact_log_z(self, max_states: int = MAX_EXACT_STATES) -> float:
        """log Z by enumerating the odd layers and summing the even ones out (float64)."""
        model = copy.deepcopy(self).double()
        odd, _ = model._odd_states(max_states)
        parts = [torch.logsumexp(model._log_f_odd(odd, s), 0) for s in model._enumerate_odd(odd)]
        return float(torch.logsumexp(torch.stack(parts), 0))

    @torch.no_grad()
    def exact_log_prob_unnormalized(self, v: Tensor,
                                    max_states: int = MAX_EXACT_STATES) -> Tensor:
        """log sum_h exp(-E(v, h)) for each row of ``v`` (float64; tiny models only)."""
        model = copy.deepcopy(self).double()
        odd, total = model._odd_states(max_states)
        v = model.prepare(v)
        out = []
        for row in v:
            parts = []
            for s in model._enumerate_odd(odd):
                parts.append(torch.logsumexp(
                    model._log_f_odd(odd, s, row.expand(s[0].shape[0], -1)), 0))
            out.append(torch.logsumexp(torch.stack(parts), 0))
        return torch.stack(out)

    # --- the variational bound -------------------------------------------------
    @torch.no_grad()
    def variational_free_energy(self, v: Tensor, mus: Sequence[Tensor] | None = None,
                                mf_steps: int = 30) -> Tensor:
        """E_q[-E(v, h)] + H(q) per row (float64): a lower bound on log sum_h exp(-E(v, h)).

        Bernoulli hidden layers make E_q[E] the energy at the means (each term is
        linear in any one layer's state); H(q) is the factorised entropy.
        """
        if mus is None:
            mus = self.mean_field(v, mf_steps)
        mus = [m.double() for m in mus]
        model = copy.deepcopy(self).double()
        states = [v.double(), *mus]
        bound = -model.energy(states)
        for m in mus:
            mc = m.clamp(1e-12, 1 - 1e-12)
            bound -= (mc * torch.log(mc) + (1 - mc) * torch.log1p(-mc)).sum(-1)
        return bound

    # --- AIS ---------------------------------------------------------------------
    @torch.no_grad()
    def ais_log_z(self, n_chains: int = 100, n_steps: int | None = None,
                  schedule: Tensor | Sequence[float] | None = None,
                  data: Tensor | None = None, generator: torch.Generator | None = None,
                  min_ess_fraction: float = 0.1, max_log_weight_std: float = 2.0,
                  reverse: bool = False, precision: str | None = None) -> AISResult:
        """Estimate log Z by AIS over the even layers with the odd layers summed out.

        The path at inverse temperature beta: even layer l has bias
        beta b_l + (1 - beta) a_l (a_0 = ``visible.fit_bias(data)``, zeros
        without data; a_l = 0 for even hidden layers) and every coupling is
        scaled by beta; the odd layers are summed out, contributing
        ``log_partition(field, beta)``.  At beta = 0 the layers are independent
        (log Z_A closed-form), at beta = 1 it is the DBM.  A transition is one
        Gibbs sweep (odd layers, then even layers) at beta.  Log weights are
        accumulated in float64; the engine is :func:`boltzkit.metrics.ais.run_ais`
        (+/-3 sigma bounds of the mean weight, ESS, reliability flag and warning;
        ``reverse`` anneals back from ``data`` rows, their even hidden layers drawn from
        the mean field).
        """
        betas = betas_from(schedule, n_steps)
        if data is not None:
            data = self.prepare(data)
        return run_ais(_DBMPath(self, data), n_chains, betas, generator, reverse, data,
                       min_ess_fraction, max_log_weight_std, precision=precision)


class _DBMPath:
    """The DBM's annealing path: even layers annealed, odd layers summed out (see
    :meth:`DBM.ais_log_z`).  States are lists of every layer's states (odd ones unused)."""

    def __init__(self, model: DBM, data: Tensor | None) -> None:
        L, dev, dt = model.n_layers, model.device, model.dtype
        self.model, self.even, self.odd = model, list(range(0, L, 2)), list(range(1, L, 2))
        self.d: dict[int, Tensor] = {}
        for i in self.even:
            b = model.layers[i].bias.detach()
            a = (model.layers[0].fit_bias(data).to(device=dev, dtype=dt)
                 if i == 0 and data is not None else torch.zeros_like(b))
            self.d[i] = a - b
        m64 = copy.deepcopy(model).double()
        self.log_z_base = sum(float(m64.layers[i].log_partition(
            self.d[i].double().unsqueeze(0), 1.0)[0]) for i in self.even) + sum(
            float(m64.layers[i].log_partition(torch.zeros(1, model.layers[i].n,
                                                          dtype=torch.float64, device=dev),
                                              0.0)[0]) for i in self.odd)

    def sample_base(self, n, generator):
        states: list[Tensor] = [torch.empty(0)] * self.model.n_layers
        for i in self.even:
            states[i] = self.model.layers[i].sample(self.d[i].expand(n, -1), 1.0, generator)
        return states

    def step(self, states, b, bp, generator, transition):
        model = self.model
        fields = {i: model.field(i, states) for i in self.odd}
        inc = None
        for i in self.odd:
            lp = model.layers[i].log_partition
            term = (lp(fields[i], b) - lp(fields[i], bp)).double()
            inc = term if inc is None else inc + term
        if b != bp:
            for i in self.even:
                inc = inc - (b - bp) * (model.layers[i].coupling(states[i]) @ self.d[i]).double()
        if transition:
            states = list(states)
            for i in self.odd:
                states[i] = model.layers[i].sample(fields[i], b, generator)
            for i in self.even:
                f = model.field(i, states)
                f.mul_(b).add_(self.d[i], alpha=1.0 - b)
                states[i] = model.layers[i].sample(f, 1.0, generator)
        return inc, states

    def from_data(self, data, n, generator):
        idx = torch.randint(data.shape[0], (n,), generator=generator, device=data.device)
        v = data.index_select(0, idx)
        mus = self.model.mean_field(v)
        states = [v] + [torch.empty(0)] * (self.model.n_layers - 1)
        for i in self.even[1:]:
            states[i] = self.model.layers[i].sample(torch.zeros_like(mus[i - 1]), 1.0,
                                                    generator, mean=mus[i - 1])
        return states

    def fused(self):
        return None


def make_dbm(sizes: str | Sequence[int], visible: str = "bernoulli", visible_std: float = 1.0,
             init_std: float = 0.01, seed: int | None = None) -> DBM:
    """Build a DBM from layer sizes, e.g. ``make_dbm("784,500,1000")``."""
    sizes = parse_layers(sizes)
    if visible not in ("bernoulli", "gaussian"):
        raise ConfigError(f"DBM visible units must be 'bernoulli' or 'gaussian', got {visible!r}")
    opts = {"std": visible_std} if visible == "gaussian" else {}
    layers = [make_units(visible, sizes[0], **opts)] + [BernoulliUnits(n) for n in sizes[1:]]
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return DBM(layers, init_std=init_std, generator=gen)


# --------------------------------------------------------------------------- likelihood
@torch.no_grad()
def dbm_log_likelihood_bound(model: DBM, data: Tensor, ais_chains: int = 100,
                             ais_steps: int = DEFAULT_AIS_STEPS, seed: int = 0,
                             mf_steps: int = 30, train_data: Tensor | None = None,
                             batch_size: int = 1000, log_z: AISResult | float | None = None,
                             exact: bool | None = None,
                             precision: str | None = None) -> dict[str, Any]:
    """Average variational lower bound on log p(v) over ``data`` (nats per sample).

    bound(v) = E_q[-E(v, h)] + H(q) - log Z with the mean-field q.  log Z is
    exact for tiny models (``exact=None`` picks it when the odd layers have at
    most 2^20 states) and AIS otherwise (base rates fitted to ``train_data``,
    else ``data``).  With AIS the bound is itself an estimate: the
    ``log_likelihood_lower_bound_low/high`` range follows from log Z's +/-3 sigma
    interval.  ``precision``: the GEMM precision of AIS's annealing.
    """
    if not isinstance(model, DBM):
        raise ConfigError(f"expected a DBM, got {type(model).__name__}")
    v = model.prepare(data)
    elbo = torch.cat([model.variational_free_energy(b, mf_steps=mf_steps)
                      for b in v.split(batch_size)])
    n = elbo.numel()
    odd_states = math.prod(2 ** model.layers[i].n for i in range(1, model.n_layers, 2))
    out: dict[str, Any] = {"n_samples": n, "mf_steps": mf_steps}
    if log_z is None and (exact or (exact is None and odd_states <= 2**20)):
        lz = model.exact_log_z()
        out.update(method="exact", log_z=lz, log_z_lower=lz, log_z_upper=lz)
    else:
        if log_z is None:
            gen = torch.Generator(device=model.device).manual_seed(seed)
            log_z = model.ais_log_z(ais_chains, ais_steps, data=train_data if train_data
                                    is not None else v, generator=gen, precision=precision)
        if isinstance(log_z, AISResult):
            out.update(method="ais", log_z=log_z.log_z,
                       log_z_lower=log_z.log_z_lower if math.isfinite(log_z.log_z_lower)
                       else None, log_z_upper=log_z.log_z_upper, ais_chains=log_z.n_chains,
                       ais_steps=log_z.n_steps, ais_ess=log_z.ess, ais_reliable=log_z.reliable,
                       ais_warning=log_z.warning, ais_log_z_std=log_z.log_z_std)
        else:
            out.update(method="given", log_z=float(log_z), log_z_lower=float(log_z),
                       log_z_upper=float(log_z))
    mean_elbo = float(elbo.mean())
    out["log_likelihood_lower_bound"] = mean_elbo - out["log_z"]
    out["log_likelihood_lower_bound_low"] = (mean_elbo - out["log_z_upper"])
    out["log_likelihood_lower_bound_high"] = (None if out["log_z_lower"] is None
                                              else mean_elbo - out["log_z_lower"])
    out["log_likelihood_std_err"] = float(elbo.std() / math.sqrt(n)) if n > 1 else 0.0
    return out


# --------------------------------------------------------------------------- pretraining
class ScaledConnection(DenseConnection):
    """Dense weights whose up and down fields are scaled (the pretraining doubling trick).

    ``forward`` returns ``up * x W`` and ``transpose`` ``down * h W^T``.  It is a
    DenseConnection, so boltzkit's fast likelihood gradient applies and gives
    Salakhutdinov & Hinton's update <v h>_data - <v h>_model with h computed
    from the scaled field.
    """

    def __init__(self, n_visible: int, n_hidden: int, up: float = 1.0, down: float = 1.0,
                 init_std: float = 0.01, generator: torch.Generator | None = None) -> None:
        super().__init__(n_visible, n_hidden, init_std=init_std, generator=generator)
        self.up, self.down = float(up), float(down)

    def forward(self, x: Tensor) -> Tensor:
        f = precision.mm(x, self.weights)
        return f if self.up == 1.0 else f * self.up

    def transpose(self, h: Tensor) -> Tensor:
        f = precision.mm_t(h, self.weights)
        return f if self.down == 1.0 else f * self.down


def pretrain(model: DBM, data: Tensor, epochs: int = 10, batch_size: int = 100,
             lr: float = 0.05, momentum: float = 0.5, weight_decay: float = 0.0,
             k: int = 1, method: str = "cd", seed: int = 0,
             callback: Callable[[int, dict], None] | None = None,
             make_trainer: Callable | None = None, resume: bool = False,
             init_std: float = 0.01) -> list[dict]:
    """Greedy layer-wise pretraining with the doubling trick; writes into ``model``.

    Layer l's RBM (layers l, l+1) is trained by :class:`boltzkit.training.Trainer`
    on binary samples of the layer below's hidden means.  With two or more
    hidden layers the bottom RBM doubles its visible-to-hidden input, the top
    RBM its hidden-to-visible input, and middle RBMs are trained plainly and
    their weights halved when composed (Salakhutdinov & Hinton 2009, 2012).
    Each hidden layer takes its bias from the RBM below it.  Returns one
    history record per RBM epoch (with the RBM index).  ``make_trainer(rbm, sampler,
    objective, stage=..., **options)`` builds each RBM's Trainer (default
    :class:`~boltzkit.training.Trainer`); ``resume`` continues each from its checkpoint.
    """
    from ..objectives import LikelihoodGradient
    from ..sampling import make_sampler
    from ..training import Trainer

    x = model.prepare(data, "training data")
    L = model.n_layers
    gen = torch.Generator(device=model.device).manual_seed(seed + 101)
    history: list[dict] = []
    for i in range(L - 1):
        lower, upper = model.layers[i], model.layers[i + 1]
        up = 2.0 if (i == 0 and L > 2) else 1.0
        down = 2.0 if (i == L - 2 and L > 2) else 1.0
        conn = ScaledConnection(lower.n, upper.n, up, down, init_std=init_std,
                                generator=torch.Generator().manual_seed(seed + i))
        rbm = RBM(copy.deepcopy(lower), copy.deepcopy(upper), conn).to(model.device, model.dtype)
        options = dict(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                       weight_decay=weight_decay, seed=seed + i, init_visible_bias=(i == 0),
                       monitor_size=500)
        if make_trainer is None:
            trainer = Trainer(rbm, make_sampler(method, k, None), LikelihoodGradient(),
                              progress=False, **options)
        else:
            trainer = make_trainer(rbm, make_sampler(method, k, None), LikelihoodGradient(),
                                   stage=f"pretrain{i}", **options)
        for rec in trainer.fit(x, resume=resume):
            rec = {"stage": "pretrain", "rbm": i, **rec}
            history.append(rec)
            if callback is not None:
                callback(i, rec)
        scale = 0.5 if (0 < i < L - 2) else 1.0
        with torch.no_grad():
            model.connections[i].weights.copy_(conn.weights * scale)
            if i == 0:
                model.layers[0].bias.copy_(rbm.visible.bias)
            model.layers[i + 1].bias.copy_(rbm.hidden.bias)
            if i < L - 2:
                means = torch.cat([rbm.hidden_mean(b) for b in x.split(1000)])
                x = torch.rand(means.shape, generator=gen, dtype=means.dtype,
                               device=means.device).lt_(means).to(means.dtype)
    return history


# --------------------------------------------------------------------------- joint training
class DBMChains(Sampler):
    """The model phase of DBM training: Gibbs chains over every layer.

    ``persistent=True`` (PCD, Salakhutdinov & Hinton 2009): ``n_chains`` chains kept
    across updates, ``k`` sweeps each per update; they start at data rows with hidden
    states drawn from their mean-field posterior (``init="data"``) or at random states,
    then run 10 warm-up sweeps.  ``persistent=False`` (CD-k): every update starts the
    chains at the batch's rows (hidden states from the mean field) and runs k sweeps.
    ``negative`` returns the chains' states of every layer (a list).
    """

    def __init__(self, k: int = 5, n_chains: int | None = 100, persistent: bool = True,
                 init: str = "data", mf_steps: int = 10) -> None:
        self.k = _check_k(k)
        if n_chains is not None:
            _positive_int("n_chains", n_chains)
        if init not in ("data", "random"):
            raise ConfigError(f"unknown chain_init {init!r}: use 'data' or 'random'")
        self.n_chains, self.persistent, self.init, self.mf_steps = (
            n_chains, persistent, init, mf_steps)
        self.name = "pcd" if persistent else "cd"
        self.chains: list[Tensor] | None = None

    def _from_data(self, model: DBM, v: Tensor, n: int, generator) -> list[Tensor]:
        v0 = v.repeat(math.ceil(n / v.shape[0]), 1)[:n]
        mus = model.mean_field(v0, self.mf_steps)
        return [v0.clone()] + [u.sample(torch.zeros_like(mu), generator=generator, mean=mu)
                               for u, mu in zip(model.layers[1:], mus, strict=True)]

    @torch.no_grad()
    def negative(self, model, v_data, field_data, generator=None):
        if not self.persistent:
            states = self._from_data(model, v_data, v_data.shape[0], generator)
        elif self.chains is None:
            n = self.n_chains or v_data.shape[0]
            states = (self._from_data(model, v_data, n, generator) if self.init == "data"
                      else model.init_states(n, generator))
            for _ in range(10):
                states = model.gibbs_step(states, generator=generator)
        else:
            states = self.chains
        for _ in range(self.k):
            states = model.gibbs_step(states, generator=generator)
        if self.persistent:
            self.chains = states
        return states, None

    def state_dict(self):
        return {} if self.chains is None else {f"chains.{i}": c for i, c in
                                               enumerate(self.chains)}

    def load_state_dict(self, state):
        if state:
            self.chains = [state[f"chains.{i}"].clone() for i in range(len(state))]


class MeanFieldLikelihood(Objective):
    """The DBM's data phase: statistics under the mean-field posterior q(h | v).

    The gradient of the average log-likelihood is the data statistics under q
    (``mf_steps`` sweeps from the bottom-up doubled pass) minus the model statistics of
    the sampler's chains (:class:`DBMChains`); ``.grad`` holds model minus data, a
    descent direction.  Diagnostic ``mean_activation``; monitor: the unnormalised
    variational bound (``elbo_unnormalized_train`` / ``_val``).
    """

    def __init__(self, mf_steps: int = 10) -> None:
        self.mf_steps = _positive_int("mf_steps", mf_steps)

    def setup(self, model, rows, init=True):
        return None  # the biases come from pretraining

    @torch.no_grad()
    def gradient(self, model, v, sampler, generator):
        mus = model.mean_field(v, self.mf_steps)
        data_states = [v, *mus]
        neg, _ = sampler.negative(model, v, None, generator)
        B, M = v.shape[0], neg[0].shape[0]
        grads = []
        for i, u in enumerate(model.layers):
            grads.append(u.coupling(neg[i]).mean(0) - u.coupling(data_states[i]).mean(0))
        for i in range(len(model.connections)):
            lo, hi = model.layers[i], model.layers[i + 1]
            g = precision.mm(lo.coupling(neg[i]).t(), hi.coupling(neg[i + 1])) / M
            g.sub_(precision.mm(lo.coupling(data_states[i]).t(), hi.coupling(mus[i])),
                   alpha=1.0 / B)
            grads.append(g)
        params = [u.bias for u in model.layers] + [c.weights for c in model.connections]
        assign_grads(params, grads)
        return {"mean_activation": torch.stack([m.mean() for m in mus]).mean()}

    @torch.no_grad()
    def monitor(self, model, train, val):
        out = {}
        for name, rows in (("train", train), ("val", val)):
            if rows is not None:
                out[f"elbo_unnormalized_{name}"] = float(
                    model.variational_free_energy(rows, mf_steps=self.mf_steps).mean())
        return out


def fit_dbm(model: DBM, data: Tensor, epochs: int = 10, batch_size: int = 100,
            lr: float = 0.001, momentum: float = 0.9, weight_decay: float = 2e-4,
            optimizer: str = "sgd", mf_steps: int = 10, n_chains: int = 100,
            gibbs_steps: int = 5, lr_decay: bool = True, chain_init: str = "data",
            seed: int = 0, callback: Callable[[dict], None] | None = None,
            **trainer_options: Any) -> list[dict]:
    """Joint DBM training through the one Trainer: :class:`MeanFieldLikelihood` with
    :class:`DBMChains` (``n_chains`` persistent chains, ``gibbs_steps`` sweeps per update).

    ``lr_decay``: linear decay to 10% of ``lr`` over the epochs.  ``weight_decay`` is L2
    on the weight matrices.  Other keyword arguments go to the Trainer (e.g.
    ``checkpoint_dir``).  Returns the history (``mean_activation``,
    ``elbo_unnormalized_train`` on 500 training rows).
    """
    from ..training import Trainer

    callbacks = list(trainer_options.pop("callbacks", ()))
    if callback is not None:
        callbacks.append(lambda trainer, record: callback(record))
    trainer = Trainer(model, DBMChains(gibbs_steps, n_chains, init=chain_init,
                                       mf_steps=mf_steps), MeanFieldLikelihood(mf_steps),
                      optimizer, epochs=epochs, batch_size=batch_size, lr=lr,
                      momentum=momentum, weight_decay=weight_decay,
                      lr_schedule="linear" if lr_decay else "constant", lr_final_factor=0.1,
                      seed=seed, init_visible_bias=False, monitor_size=500,
                      callbacks=callbacks, progress=trainer_options.pop("progress", False),
                      **trainer_options)
    return trainer.fit(model.prepare(data, "training data"))


def train_from_config(run) -> tuple[DBM, list[dict]]:
    """``boltzkit train --model dbm``: greedy pretraining, then joint training, each stage
    through the one loop (checkpoints under ``checkpoint_dir/pretrainN`` and
    ``checkpoint_dir/joint``); ``--epochs``, ``--lr``, ``--k`` and ``--chains`` are the
    joint stage's."""
    train, _, test, _ = run.splits()
    sizes = parse_layers(run["layers"], n_features=int(train.shape[1]))
    model = make_dbm(sizes, visible=run["visible"], visible_std=run["visible_std"],
                     init_std=run["init_std"], seed=run["seed"]).to(run.device)
    history = pretrain(model, train, epochs=int(run["dbm_pretrain_epochs"]),
                       batch_size=int(run["batch_size"]), lr=float(run["dbm_pretrain_lr"]),
                       momentum=float(run["momentum"]), weight_decay=float(run["weight_decay"]),
                       seed=int(run["seed"]), make_trainer=_pretrain_trainer(run),
                       resume=run.resume, init_std=float(run["init_std"]))
    history = [{**r, "stage": f"pretrain{r['rbm']}"} for r in history]
    sampler = DBMChains(run["k"], run["chains"], persistent=run["method"] == "pcd",
                        mf_steps=int(run["dbm_mf_steps"]))
    sampler.k_schedule = run.sampler().k_schedule
    trainer = run.trainer(model, sampler, MeanFieldLikelihood(int(run["dbm_mf_steps"])),
                          stage="joint", init_visible_bias=False, monitor_size=500)
    history += run.fit(trainer, train, test)
    odd = math.prod(2 ** n for n in sizes[1::2])
    if odd <= 2**20:
        run.unused("dbm_ais_steps", f"log Z of this DBM is exact ({odd} odd-layer states)")
    if int(run["dbm_ais_chains"] or 0) > 0:
        res = dbm_log_likelihood_bound(model, test if test is not None else train,
                                       int(run["dbm_ais_chains"]), int(run["dbm_ais_steps"]),
                                       seed=int(run["seed"]), train_data=train)
        if not run.quiet:
            print(f"test log-likelihood lower bound {res['log_likelihood_lower_bound']:.2f} "
                  f"nats (log Z {res['log_z']:.2f} by {res['method']})")
        history.append({"stage": "evaluate", **res})
    return model, history


def _pretrain_trainer(run):
    def make(rbm, sampler, objective, stage, **options):
        # pretraining has its own epochs and lr; the loop's other options apply
        return run.trainer(rbm, sampler, objective, stage=stage, lr_schedule="constant",
                           average_from=0, **options)
    return make
