"""Boltzmann machines with lateral (within-layer) couplings: Ising, Potts, semi-restricted RBM.

Three kinds share one piece of machinery, a layer of discrete units with
symmetric pairwise couplings ``J`` (zero within a site):

* :class:`IsingModel` (kind ``"ising"``): a fully visible Boltzmann machine on
  ``n`` binary spins, ``E(s) = -h.s - sum_{i<j} J_ij s_i s_j``.  Spins take the
  values ``{0, 1}`` (``spins="01"``, the Boltzmann-machine convention, data as
  for Bernoulli units) or ``{-1, +1}`` (``spins="pm1"``, the physics
  convention).  The two describe the same family of distributions (an affine
  change of variables), but the parameters differ: J_01 = 4 J_pm1.
* :class:`PottsModel` (kind ``"potts"``): ``n_sites`` sites with ``q`` states,
  stored one-hot exactly as :class:`boltzkit.units.SoftmaxUnits` stores a
  layer (columns site by site, ``q`` per site); ``J`` is ``(n q) x (n q)`` with
  zero ``q x q`` blocks on the diagonal, ``E(x) = -h.x - x^T J x / 2``.  The
  parameters have the usual Potts gauge freedom (adding a constant to a site's
  fields changes nothing); no gauge is imposed.
* :class:`SemiRestrictedRBM` (kind ``"srbm"``, Osindero & Hinton 2008): an
  :class:`boltzkit.rbm.RBM` plus symmetric visible-visible couplings ``L``,
  ``E(v, h) = E_rbm(v, h) - v^T L v / 2``.  Hidden units stay conditionally
  independent given ``v``, so the free energy is still closed form:
  ``F(v) = F_rbm(v) - v^T L v / 2``.  Visible units are no longer independent
  given ``h``: :meth:`SemiRestrictedRBM.gibbs` samples ``h | v`` exactly and
  then runs one *sequential* Gibbs sweep over the visible units given ``h``
  (each unit from its exact conditional given ``h`` and the other visibles).
  That is a valid MCMC kernel for the joint distribution, not the damped
  mean-field reconstruction Osindero & Hinton used inside CD.

Gibbs sampling updates sites one block at a time, vectorised over chains.
``scan="sequential"`` updates sites in order, ``"random"`` in a fresh random
order each sweep, and ``"colored"`` updates all sites of one colour of a greedy
colouring of the coupling graph at once (valid because sites of one colour are
not coupled): a 2D lattice needs 2 blocks (checkerboard) instead of ``n``.

Training: :func:`fit_pseudo_likelihood` maximises Besag's exact pseudo-likelihood
(sum over sites of log p(x_i | x_-i), all sites, autograd) with a ``torch.optim``
optimizer; :func:`fit_pcd` follows the likelihood gradient with persistent Gibbs
chains (Tieleman 2008) through autograd on ``mean F(data) - mean F(chains)``.
Evaluation: :func:`exact_log_z` enumerates the visible states (up to 2^25) and
:func:`ais_log_z` anneals (Salakhutdinov & Murray's schedule) for the
semi-restricted RBM when that is too many.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import precision
from ..connections import DenseConnection, connection_from_config
from ..errors import ConfigError, DataError, ModelFileError
from ..metrics.ais import DEFAULT_AIS_STEPS, AISResult, betas_from, run_ais
from ..metrics.likelihood import MAX_EXACT_STATES
from ..model import Model
from ..objectives import Objective, autograd_step
from ..rbm import RBM
from ..units import BernoulliUnits, Beta, SoftmaxUnits, Units, make_units, units_from_config

SPINS: dict[str, tuple[float, float]] = {"01": (0.0, 1.0), "pm1": (-1.0, 1.0)}
SCANS = ("sequential", "random", "colored")


def _check_choice(name: str, value: str, choices) -> str:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}: choose one of {list(choices)}")
    return value


# --------------------------------------------------------------------------- shared machinery
class _LateralLayer(Model):
    """Base class: a discrete layer ``self.visible`` with symmetric couplings over its sites.

    Subclasses define ``visible`` (Bernoulli or softmax units), ``spins`` and the
    coupling parameter named by ``_coupling_name``; the effective coupling
    matrix is ``(A + A^T) / 2`` with the within-site blocks zeroed, so every
    gradient (likelihood or pseudo-likelihood) is symmetric and leaves the
    diagonal at zero: an elementwise optimizer keeps a symmetric ``A`` symmetric.
    """

    _coupling_name = "couplings"
    visible: Units
    spins: str = "01"

    def _init_lateral(self, scan: str) -> None:
        self.scan = _check_choice("scan", scan, SCANS)
        g = self.group_size
        sites = torch.arange(self.visible.n) // g
        mask = (sites[:, None] != sites[None, :]).to(self.visible.bias.dtype)
        self.register_buffer("coupling_mask", mask, persistent=False)

    # --- shape ------------------------------------------------------------
    @property
    def group_size(self) -> int:
        """Units per site: 1 for binary units, q for softmax (Potts) units."""
        return getattr(self.visible, "group_size", 1)

    @property
    def n_sites(self) -> int:
        return self.visible.n // self.group_size

    @property
    def _raw_couplings(self) -> Tensor:
        return getattr(self, self._coupling_name)

    def coupling_matrix(self) -> Tensor:
        """The effective symmetric coupling matrix, zero within each site."""
        a = self._raw_couplings
        return 0.5 * (a + a.t()) * self.coupling_mask

    def _check_couplings(self, j: Tensor, error=ConfigError) -> None:
        n = self.visible.n
        if tuple(j.shape) != (n, n):
            raise error(f"{self._coupling_name} must be a {n}x{n} matrix, got shape "
                        f"{tuple(j.shape)}")
        if not bool(torch.isfinite(j).all()):
            raise error(f"{self._coupling_name} contains NaN/inf values")
        if not torch.allclose(j, j.t(), atol=1e-6, rtol=1e-5):
            gap = float((j - j.t()).abs().max())
            raise error(f"{self._coupling_name} must be symmetric (J_ij = J_ji), but differs "
                        f"from its transpose by up to {gap:.3g}: pass (J + J.T) / 2")
        inside = j * (1 - self.coupling_mask.to(j.dtype))
        if bool((inside != 0).any()):
            what = "diagonal" if self.group_size == 1 else "within-site q x q blocks"
            raise error(f"{self._coupling_name} must be zero on the {what} (a unit is not "
                        "coupled to itself): zero them")

    @torch.no_grad()
    def set_couplings(self, j: Tensor) -> None:
        """Set the couplings, checking they are symmetric with a zero diagonal (blocks)."""
        j = torch.as_tensor(j, dtype=self.dtype, device=self.device)
        self._check_couplings(j)
        self._raw_couplings.copy_(j)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        key = self._coupling_name
        if key in state_dict:
            self._check_couplings(torch.as_tensor(state_dict[key]).to(self.dtype),
                                  error=ModelFileError)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # --- data ---------------------------------------------------------------
    def validate(self, x: Tensor, name: str = "data") -> None:
        """DataError unless ``x`` is a 2-D batch of valid states (spin values / one-hot sites)."""
        Units.validate(self.visible, x, name)
        if self.group_size > 1:
            g = x.reshape(x.shape[0], self.n_sites, self.group_size)
            ok = ((g == 0) | (g == 1)).all(-1) & (g.sum(-1) == 1)
            if not bool(ok.all()):
                row = int((~ok).any(-1).nonzero()[0])
                raise DataError(f"{name} row {row + 1} (1-based) is not one-hot in groups of "
                                f"q = {self.group_size} (each site needs exactly one 1): "
                                "pass integer states (the CLI one-hot encodes them), and "
                                "check q (--lateral-q)")
            return
        lo, hi = SPINS[self.spins]
        bad = (x != lo) & (x != hi)
        if bool(bad.any()):
            example = float(x[bad][0])
            hint = (" (this data looks like {0,1}: use spins='01')" if self.spins == "pm1"
                    and bool(((x == 0) | (x == 1)).all()) else "")
            raise DataError(f"{name} must contain only the spin values {lo:g} and {hi:g} "
                            f"(spins={self.spins!r}), found {example!r}{hint}: binarize the "
                            "data or pick the other spin convention")

    def prepare(self, x, name: str = "data", check: bool = True) -> Tensor:
        """Move data to the model's device/dtype and validate it."""
        if not isinstance(x, Tensor):
            x = torch.as_tensor(x)
        x = x.to(device=self.device, dtype=self.dtype)
        if check:
            self.validate(x, name)
        return x

    # --- states ----------------------------------------------------------------
    def _spin_bits(self, bits: Tensor) -> Tensor:
        lo, hi = SPINS[self.spins]
        return bits if (lo, hi) == (0.0, 1.0) else lo + (hi - lo) * bits

    def random_states(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` uniformly random states (independent sites)."""
        return self._spin_bits(self.visible.init_state(n, generator).to(self.dtype))

    def init_chains(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Starting states of ``n`` sampler chains (uniformly random), (n, n_units)."""
        return self.random_states(n, generator)

    def enumerate_states(self, chunk: int = 65536):
        """Yield every state of the layer in chunks (2^n or q^n of them)."""
        for s in self.visible.enumerate_states(chunk):
            yield self._spin_bits(s)

    @property
    def n_states(self) -> int:
        return int(self.visible.n_states)

    # --- conditionals and Gibbs sweeps -------------------------------------------
    def _site_columns(self, sites: Tensor) -> Tensor:
        g = self.group_size
        return (sites[:, None] * g + torch.arange(g, device=sites.device)).reshape(-1)

    def blocks(self, generator: torch.Generator | None = None,
               j: Tensor | None = None) -> list[Tensor | int]:
        """Column-index blocks for one sweep, in update order (see the module doc)."""
        n = self.n_sites
        dev = self.device
        if self.scan == "random":
            gdev = generator.device if generator is not None else "cpu"
            order = torch.randperm(n, generator=generator, device=gdev).tolist()
            seq = self._sequential_blocks()
            return [seq[i] for i in order]
        if self.scan == "sequential":
            return self._sequential_blocks()
        j = self.coupling_matrix().detach() if j is None else j
        g = self.group_size
        adj = (j.reshape(n, g, n, g).abs().amax(dim=(1, 3)) > 0).cpu()
        colors: list[int] = []
        for i in range(n):
            used = {colors[k] for k in adj[i, :i].nonzero().flatten().tolist()}
            colors.append(next(c for c in range(n) if c not in used))
        groups = [[i for i in range(n) if colors[i] == c] for c in range(max(colors) + 1)]
        return [self._site_columns(torch.tensor(s, device=dev)) for s in groups]

    def _sequential_blocks(self) -> list[Tensor | int]:
        if self.group_size == 1:
            return list(range(self.n_sites))
        cache = getattr(self, "_seq_cache", None)
        if cache is None or cache[0].device != self.device:
            cache = [self._site_columns(torch.tensor([i], device=self.device))
                     for i in range(self.n_sites)]
            object.__setattr__(self, "_seq_cache", cache)
        return cache

    def _sample_columns(self, phi: Tensor, generator: torch.Generator | None) -> Tensor:
        """Sample the sites whose natural parameters are ``phi`` (B, k*g)."""
        if self.group_size == 1:
            lo, hi = SPINS[self.spins]
            p = torch.sigmoid((hi - lo) * phi)
            u = torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device)
            return torch.where(u < p, hi, lo).to(phi.dtype)
        q = self.group_size
        p = torch.softmax(phi.reshape(phi.shape[0], -1, q), -1)
        u = torch.rand(p.shape[:-1] + (1,), generator=generator, dtype=p.dtype, device=p.device)
        idx = (p.cumsum(-1) < u).sum(-1, keepdim=True).clamp_max(q - 1)
        return torch.zeros_like(p).scatter_(-1, idx, 1.0).reshape(phi.shape)

    @torch.no_grad()
    def _sweep(self, x: Tensor, const: Tensor, j: Tensor, blocks: list[Tensor | int],
               generator: torch.Generator | None, beta: Beta = 1.0) -> Tensor:
        """One Gibbs sweep at inverse temperature ``beta`` (a number, or a column (B, 1)
        per chain): each block's natural parameters are beta (const + x @ J) (in place).

        A block is a tensor of columns, or an int for a single binary unit: the
        fast path (one matrix-vector product, uniforms drawn once per sweep),
        since a sequential sweep is Python-bound at a few torch calls per unit.
        """
        u = None
        lo, hi = SPINS[self.spins]
        const = const.expand(x.shape[0], -1) if const.ndim == 1 else const
        hot = isinstance(beta, Tensor) or beta != 1.0
        col = beta.reshape(-1) if isinstance(beta, Tensor) else beta
        for cols in blocks:
            if isinstance(cols, int):
                if u is None:
                    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                phi = const[:, cols] + x @ j[:, cols]
                p = torch.sigmoid(phi.mul_(col * (hi - lo)) if hot else phi.mul_(hi - lo))
                on = u[:, cols] < p
                x[:, cols] = on if lo == 0.0 else on * (hi - lo) + lo
            else:
                phi = const[:, cols] + x @ j[:, cols]
                if hot:
                    phi = phi * (beta if isinstance(beta, Tensor) else beta)
                x[:, cols] = self._sample_columns(phi, generator)
        return x

    def _log_conditionals(self, x: Tensor, phi: Tensor) -> Tensor:
        """log p(x_i | x_-i) of each site (B, n_sites) from the natural parameters phi (B, N)."""
        if self.group_size == 1:
            lo, hi = SPINS[self.spins]
            t = (x - lo) / (hi - lo)
            return -F.binary_cross_entropy_with_logits((hi - lo) * phi, t, reduction="none")
        q = self.group_size
        logp = torch.log_softmax(phi.reshape(phi.shape[0], -1, q), -1)
        return (logp * x.reshape(logp.shape)).sum(-1)

    def _conditional_probs(self, phi: Tensor) -> Tensor:
        if self.group_size == 1:
            lo, hi = SPINS[self.spins]
            return torch.sigmoid((hi - lo) * phi)
        q = self.group_size
        return torch.softmax(phi.reshape(phi.shape[0], -1, q), -1).reshape(phi.shape)


# --------------------------------------------------------------------------- fully visible
class FullyVisibleBM(_LateralLayer):
    """A fully visible Boltzmann machine: fields ``visible.bias`` and couplings ``couplings``.

    Use the named kinds :class:`IsingModel` and :class:`PottsModel`.  The energy
    is ``E(x) = -h.x - x^T J x / 2``; :meth:`free_energy` is the same (there is
    no hidden layer), so generic code written for free energies applies.
    """

    kind = "fvbm"

    def __init__(self, visible: Units, spins: str = "01", scan: str = "sequential",
                 init_std: float = 0.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.visible = visible
        self.spins = _check_choice("spins", spins, SPINS)
        if spins != "01" and not isinstance(visible, BernoulliUnits):
            raise ConfigError("spins='pm1' applies to binary (Ising) units only")
        n = visible.n
        a = torch.randn(n, n, generator=generator) * init_std if init_std else torch.zeros(n, n)
        self.couplings = nn.Parameter(torch.triu(a, 1) + torch.triu(a, 1).t())
        self._init_lateral(scan)
        with torch.no_grad():
            self.couplings.mul_(self.coupling_mask)

    @property
    def fields(self) -> Tensor:
        """The external fields h (the visible units' bias)."""
        return self.visible.bias

    def local_field(self, x: Tensor) -> Tensor:
        """Natural parameters of every unit's conditional: h + x @ J, shape (B, N)."""
        return self.visible.bias + precision.mm(x, self.coupling_matrix())

    def energy(self, x: Tensor) -> Tensor:
        """E(x) = -h.x - x^T J x / 2, shape (batch,)."""
        return (-(x @ self.visible.bias)
                - 0.5 * (precision.mm(x, self.coupling_matrix()) * x).sum(-1))

    def free_energy(self, x: Tensor, beta: Beta = 1.0) -> Tensor:
        """beta E(x): the energy (all units are visible), every term scaled by beta."""
        e = self.energy(x)
        return e * beta.reshape(-1) if isinstance(beta, Tensor) else e * beta

    def log_conditionals(self, x: Tensor) -> Tensor:
        """log p(x_i | x_-i) of the observed value of each site, shape (B, n_sites)."""
        return self._log_conditionals(x, self.local_field(x))

    def conditional_probs(self, x: Tensor) -> Tensor:
        """p(unit on | rest) per unit: P(s_i = high spin) for Ising, P(site i = a) for Potts."""
        return self._conditional_probs(self.local_field(x))

    @torch.no_grad()
    def gibbs(self, x: Tensor, steps: int = 1, generator: torch.Generator | None = None,
              beta: Beta = 1.0) -> Tensor:
        """``steps`` Gibbs sweeps over all sites of every chain (rows of ``x``) at ``beta``."""
        x = x.clone()
        j = self.coupling_matrix()
        for _ in range(steps):
            x = self._sweep(x, self.visible.bias, j, self.blocks(generator, j), generator, beta)
        return x

    @torch.no_grad()
    def sample(self, n: int, steps: int = 1000, generator: torch.Generator | None = None,
               init: Tensor | None = None, beta: Beta = 1.0) -> Tensor:
        """``n`` samples after ``steps`` sweeps (at ``beta``) from random (or ``init``) states."""
        x = self.random_states(n, generator) if init is None else self.prepare(init, "init")
        return self.gibbs(x, steps, generator, beta)

    @torch.no_grad()
    def init_fields(self, data: Tensor) -> None:
        """Fields of the independent-site model with the data's marginals (couplings kept)."""
        if self.group_size > 1:
            self.visible.bias.copy_(self.visible.fit_bias(data))
            return
        lo, hi = SPINS[self.spins]
        p = ((data - lo) / (hi - lo)).mean(0).clamp(1e-3, 1 - 1e-3)
        self.visible.bias.copy_((torch.log(p) - torch.log1p(-p)) / (hi - lo))


class IsingModel(FullyVisibleBM):
    """Ising model / fully visible Boltzmann machine on ``n`` binary spins ({0,1} or {-1,+1})."""

    kind = "ising"

    def __init__(self, n: int, spins: str = "01", scan: str = "sequential",
                 init_std: float = 0.0, generator: torch.Generator | None = None) -> None:
        super().__init__(BernoulliUnits(n), spins, scan, init_std, generator)

    def config(self) -> dict:
        return {"model": self.kind, "n": self.visible.n, "spins": self.spins, "scan": self.scan}

    @classmethod
    def from_config(cls, cfg: dict) -> IsingModel:
        _check_kind(cfg, cls.kind)
        return cls(int(cfg["n"]), cfg.get("spins", "01"), cfg.get("scan", "sequential"))


class PottsModel(FullyVisibleBM):
    """Potts model: ``n_sites`` sites with ``q`` states each, one-hot (SoftmaxUnits layout)."""

    kind = "potts"

    def __init__(self, n_sites: int, q: int, scan: str = "sequential", init_std: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        if not isinstance(n_sites, int) or n_sites < 1:
            raise ConfigError(f"n_sites must be a positive integer, got {n_sites!r}")
        if not isinstance(q, int) or q < 2:
            raise ConfigError(f"a Potts model needs q >= 2 states per site, got {q!r}")
        super().__init__(SoftmaxUnits(n_sites * q, q), "01", scan, init_std, generator)
        self.q = q

    def config(self) -> dict:
        return {"model": self.kind, "n_sites": self.n_sites, "q": self.q, "scan": self.scan}

    @classmethod
    def from_config(cls, cfg: dict) -> PottsModel:
        _check_kind(cfg, cls.kind)
        return cls(int(cfg["n_sites"]), int(cfg["q"]), cfg.get("scan", "sequential"))

    def one_hot(self, labels) -> Tensor:
        """Integer states (B, n_sites) with values 0..q-1 -> one-hot rows (B, n_sites * q)."""
        return potts_one_hot(labels, self.q, self.n_sites).to(self.dtype)

    @staticmethod
    def labels(x: Tensor, q: int) -> Tensor:
        """One-hot rows -> integer states (B, n_sites)."""
        return x.reshape(x.shape[0], -1, q).argmax(-1)

    def validate(self, x: Tensor, name: str = "data") -> None:
        if x.ndim == 2 and x.shape[1] != self.visible.n:
            extra = (f" (it has {x.shape[1]} columns: {x.shape[1] // self.q} sites if q = "
                     f"{self.q})" if x.shape[1] % self.q == 0 else
                     f" ({x.shape[1]} columns are not a multiple of q = {self.q}: wrong q?)")
            raise DataError(f"{name} has shape {tuple(x.shape)} but this Potts model has "
                            f"{self.n_sites} sites x q = {self.q} one-hot columns = "
                            f"{self.visible.n}{extra}")
        super().validate(x, name)


def potts_one_hot(labels, q: int, n_sites: int | None = None) -> Tensor:
    """Integer states 0..q-1, shape (B, n_sites) -> float one-hot rows (B, n_sites * q)."""
    y = torch.as_tensor(labels)
    if y.ndim != 2:
        raise DataError(f"Potts labels must be a 2-D (samples, sites) array, got shape "
                        f"{tuple(y.shape)}")
    if n_sites is not None and y.shape[1] != n_sites:
        raise DataError(f"Potts labels have {y.shape[1]} sites, the model has {n_sites}")
    if y.numel() and (not bool(torch.isfinite(y.double()).all())
                      or bool((y.double() != y.double().round()).any())):
        raise DataError("Potts labels must be integers 0..q-1 (found non-integer values)")
    y = y.long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= q):
        raise DataError(f"Potts labels must lie in 0..{q - 1} for q = {q}, found values "
                        f"{int(y.min())}..{int(y.max())}: wrong q? (q must exceed the largest "
                        "label)")
    return F.one_hot(y, q).reshape(y.shape[0], -1).float()


# --------------------------------------------------------------------------- semi-restricted RBM
class SemiRestrictedRBM(_LateralLayer):
    """An RBM with symmetric lateral couplings ``lateral`` between its visible units.

    The RBM's units and connection are this model's own submodules (file
    tensors ``visible_bias``, ``hidden_bias``, ``weights``, ``lateral``);
    :attr:`rbm` is a plain :class:`boltzkit.rbm.RBM` view of them (the model
    with ``L`` dropped), handy for initialising from a trained RBM.
    """

    kind = "srbm"
    _coupling_name = "lateral"

    def __init__(self, visible: Units, hidden: Units, connection: nn.Module | None = None,
                 scan: str = "sequential", generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(visible, BernoulliUnits | SoftmaxUnits):
            raise ConfigError(f"a semi-restricted RBM needs discrete visible units (bernoulli or "
                              f"softmax), not {visible.kind}")
        rbm = RBM(visible, hidden, connection, generator=generator)
        self.visible, self.hidden, self.connection = rbm.visible, rbm.hidden, rbm.connection
        object.__setattr__(self, "_rbm", rbm)  # a view, not a submodule: no duplicate tensors
        self.spins = "01"
        self.lateral = nn.Parameter(torch.zeros(visible.n, visible.n))
        self._init_lateral(scan)

    @property
    def rbm(self) -> RBM:
        """The RBM part (same parameter tensors, no lateral couplings)."""
        return self._rbm

    def config(self) -> dict:
        return {"model": self.kind, "visible": self.visible.config(),
                "hidden": self.hidden.config(), "connection": self.connection.config(),
                "scan": self.scan}

    @classmethod
    def from_config(cls, cfg: dict) -> SemiRestrictedRBM:
        _check_kind(cfg, cls.kind)
        return cls(units_from_config(cfg["visible"]), units_from_config(cfg["hidden"]),
                   connection_from_config(cfg["connection"]), cfg.get("scan", "sequential"))

    @classmethod
    def from_rbm(cls, rbm: RBM, scan: str = "sequential") -> SemiRestrictedRBM:
        """A semi-restricted RBM equal to ``rbm`` (zero lateral couplings); copies the tensors."""
        rbm = copy.deepcopy(rbm)
        model = cls(rbm.visible, rbm.hidden, rbm.connection, scan)
        return model.to(rbm.dtype)

    # --- energies -----------------------------------------------------------------
    def _lateral_energy(self, v: Tensor, beta=1.0) -> Tensor:
        return -0.5 * (precision.mm(v, self.coupling_matrix()) * v).sum(-1) * beta

    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        """Joint energy E(v, h) = E_rbm(v, h) - v^T L v / 2."""
        return self.rbm.energy(v, h) + self._lateral_energy(v)

    def free_energy(self, v: Tensor, beta: Beta = 1.0) -> Tensor:
        """F(v) = F_rbm(v) - v^T L v / 2 (hidden units summed out in closed form), at beta."""
        lat = self._lateral_energy(v)
        lat = lat * beta.reshape(-1) if isinstance(beta, Tensor) else lat * beta
        return self.rbm.free_energy(v, beta) + lat

    def log_conditionals(self, v: Tensor, chunk: int = 2**22) -> Tensor:
        """log p(v_i | v_-i) (hidden summed out) per site, shape (B, n_sites).

        Bernoulli visibles: F(v) - F(v with unit i flipped) = s_i (b_i + (L v)_i)
        + lp_h(field + s_i W_i) - lp_h(field) with s_i = 1 - 2 v_i, and
        log p(v_i | rest) = -softplus of it.  Softmax visibles: each site's q
        alternatives are scored the same way.
        """
        vis, hid = self.visible, self.hidden
        eye = torch.eye(vis.n, dtype=v.dtype, device=v.device)
        rows = self.connection(eye) - self.connection(torch.zeros_like(eye[:1]))  # (N, H)
        fld = self.rbm.hidden_field(v)
        lat = precision.mm(v, self.coupling_matrix())  # (B, N)
        lp = hid.log_partition(fld)  # (B,)
        B, g = v.shape[0], self.group_size
        step = max(1, chunk // max(1, B * hid.n * g))
        out = []
        for start in range(0, self.n_sites, step):
            sites = torch.arange(start, min(start + step, self.n_sites), device=v.device)
            cols = self._site_columns(sites)  # (k*g,)
            k = sites.numel()
            x = v[:, cols].reshape(B, k, g)
            w = rows[cols].reshape(k, g, -1)
            if g == 1:
                s = 1.0 - 2.0 * x[..., 0]  # (B, k)
                flipped = fld[:, None, :] + s[..., None] * w[:, 0][None]
                lp_flip = hid.log_partition(flipped.reshape(B * k, -1)).reshape(B, k)
                diff = s * (vis.bias[cols] + lat[:, cols]) + lp_flip - lp[:, None]
                out.append(-F.softplus(diff))
            else:
                base = fld[:, None, :] - (x[..., None] * w[None]).sum(2)  # (B, k, H)
                cand = base[:, :, None, :] + w[None]  # (B, k, g, H)
                lpc = hid.log_partition(cand.reshape(B * k * g, -1)).reshape(B, k, g)
                scores = (vis.bias[cols] + lat[:, cols]).reshape(B, k, g) + lpc
                out.append((torch.log_softmax(scores, -1) * x).sum(-1))
        return torch.cat(out, 1)

    # --- sampling -------------------------------------------------------------------
    @torch.no_grad()
    def gibbs(self, v: Tensor, steps: int = 1, generator: torch.Generator | None = None,
              beta: Beta = 1.0) -> Tensor:
        """``steps`` sweeps at ``beta``: h ~ p(h | v), then one sequential (or colored)
        sweep of v | h."""
        v = v.clone()
        j = self.coupling_matrix()
        for _ in range(steps):
            h = self.rbm.sample_hidden(v, beta, generator=generator)
            const = self.visible.bias + self.rbm.visible_field(h)
            v = self._sweep(v, const, j, self.blocks(generator, j), generator, beta)
        return v

    @torch.no_grad()
    def sample(self, n: int, steps: int = 1000, generator: torch.Generator | None = None,
               init: Tensor | None = None, beta: Beta = 1.0) -> Tensor:
        """``n`` visible samples after ``steps`` sweeps (at ``beta``) from random (or
        ``init``) states."""
        v = self.random_states(n, generator) if init is None else self.prepare(init, "init")
        return self.gibbs(v, steps, generator, beta)

    @torch.no_grad()
    def init_fields(self, data: Tensor) -> None:
        """Visible bias from the data's marginals (as RBM.init_visible_bias)."""
        self.rbm.init_visible_bias(data)


LateralModel = FullyVisibleBM | SemiRestrictedRBM


def _check_kind(cfg: dict, kind: str) -> None:
    if cfg.get("model") != kind:
        raise ConfigError(f"config describes a {cfg.get('model')!r}, not a {kind!r} model")


def _check_model(model: object) -> LateralModel:
    if not isinstance(model, _LateralLayer):
        raise ConfigError(f"expected an ising, potts or srbm model, got {type(model).__name__}")
    return model


# --------------------------------------------------------------------------- likelihoods
def pseudo_log_likelihood(model: LateralModel, data: Tensor, reduce: bool = True
                          ) -> Tensor:
    """Besag's log pseudo-likelihood: per sample the SUM over sites of log p(x_i | x_-i).

    Differentiable (training uses it).  The mean over samples, or per-sample
    values with ``reduce=False``.  Same scale as
    :func:`boltzkit.metrics.pseudo_likelihood` (per sample, summed over units).
    """
    per = _check_model(model).log_conditionals(data).sum(1)
    return per.mean() if reduce else per


@torch.no_grad()
def exact_log_z(model: LateralModel, chunk: int = 65536, max_states: int = MAX_EXACT_STATES,
                dtype: torch.dtype = torch.float64) -> float:
    """log Z by enumerating every visible state (float64), hidden units summed in closed form."""
    model = _check_model(model)
    if model.n_states > max_states:
        raise ConfigError(f"exact log Z would enumerate {model.n_states:,} states (limit "
                          f"{max_states:,}): use ais_log_z (semi-restricted RBM) or a smaller "
                          "model")
    m = copy.deepcopy(model).to(dtype)
    rows = max(1, min(chunk, 2**22 // max(1, m.visible.n + getattr(m, "n_hidden", 0))))
    parts = [torch.logsumexp(-m.free_energy(s), 0) for s in m.enumerate_states(rows)]
    return float(torch.logsumexp(torch.stack(parts), 0))


@torch.no_grad()
def exact_probabilities(model: LateralModel, dtype: torch.dtype = torch.float64
                        ) -> tuple[Tensor, Tensor]:
    """(every state, its probability) by enumeration: for tests and exact sampling."""
    model = _check_model(model)
    if model.n_states > 2**22:
        raise ConfigError(f"{model.n_states:,} states are too many to tabulate (limit 2^22)")
    m = copy.deepcopy(model).to(dtype)
    states = torch.cat(list(m.enumerate_states()))
    logp = -m.free_energy(states)
    return states, torch.softmax(logp, 0)


@torch.no_grad()
def exact_sample(model: LateralModel, n: int, generator: torch.Generator | None = None
                 ) -> Tensor:
    """``n`` independent exact samples by enumeration (at most 2^22 states)."""
    states, p = exact_probabilities(model)
    idx = torch.multinomial(p, n, replacement=True, generator=generator)
    return states[idx].to(model.dtype)


@torch.no_grad()
def log_likelihood(model: LateralModel, data: Tensor, log_z: float | None = None) -> float:
    """Mean log p(x) in nats per sample (exact log Z unless ``log_z`` is given)."""
    model = _check_model(model)
    x = model.prepare(data)
    lz = exact_log_z(model) if log_z is None else float(log_z)
    m = copy.deepcopy(model).to(torch.float64)
    fe = torch.cat([m.free_energy(b.double()) for b in x.split(4096)])
    return float(-fe.mean()) - lz


@torch.no_grad()
def ais_log_z(model: SemiRestrictedRBM, data: Tensor | None = None, n_chains: int = 100,
              n_steps: int = DEFAULT_AIS_STEPS, generator: torch.Generator | None = None,
              min_ess_fraction: float = 0.1, max_log_weight_std: float = 2.0,
              reverse: bool = False, precision: str | None = None) -> AISResult:
    """AIS estimate of log Z for a semi-restricted RBM (Salakhutdinov & Murray's path).

    Base model A: independent visibles with bias b_A fitted to ``data``, hidden
    units at beta = 0.  Intermediate distributions
    f_beta(v) = exp((1 - beta) b_A.v + beta (b.v + v^T L v / 2)) * Z_h(beta field(v))
    (the hidden layer summed out at inverse temperature beta); each transition
    samples h | v at beta, then sweeps the visibles sequentially at beta.
    Returns :class:`boltzkit.metrics.AISResult` from the one AIS engine
    (:func:`boltzkit.metrics.ais.run_ais`: log weights in float64, ESS, reliability flag,
    ``reverse`` AIS from ``data``); with ``lateral = 0`` it estimates the plain RBM's
    log Z.
    """
    if not isinstance(model, SemiRestrictedRBM):
        raise ConfigError("ais_log_z here is for semi-restricted RBMs; use exact_log_z for "
                          "ising/potts models and boltzkit.metrics.ais_log_z for RBMs")
    data = None if data is None else model.prepare(data)
    return run_ais(_SRBMPath(model, data, generator), n_chains, betas_from(None, n_steps),
                   generator, reverse, data, min_ess_fraction, max_log_weight_std,
                   precision=precision)


class _SRBMPath:
    """The semi-restricted RBM's annealing path (see :func:`ais_log_z`)."""

    def __init__(self, model: SemiRestrictedRBM, data: Tensor | None, generator) -> None:
        vis, hid = model.visible, model.hidden
        dev, dt = model.device, model.dtype
        self.model, self.b = model, vis.bias.detach()
        b_a = vis.fit_bias(data) if data is not None else torch.zeros_like(self.b)
        self.d = b_a.to(device=dev, dtype=dt) - self.b
        self.log_z_base = float(vis.log_partition(self.d.unsqueeze(0).double(), 1.0)[0]
                                + hid.log_partition(torch.zeros(1, hid.n, dtype=dt, device=dev),
                                                    0.0)[0].double())
        self.j = model.coupling_matrix().detach()
        self.blocks = model.blocks(generator, self.j)

    def _log_f(self, v: Tensor, fld: Tensor, beta: float) -> Tensor:
        lin = v @ (self.b + (1.0 - beta) * self.d)
        lat = 0.5 * (precision.mm(v, self.j) * v).sum(-1)
        return (lin + beta * lat + self.model.hidden.log_partition(fld, beta)).double()

    def sample_base(self, n, generator):
        return self.model.visible.sample(self.d.expand(n, -1), 1.0, generator).to(self.b.dtype)

    def step(self, v, beta, beta_prev, generator, transition):
        model = self.model
        fld = model.rbm.hidden_field(v)
        inc = self._log_f(v, fld, beta) - self._log_f(v, fld, beta_prev)
        if transition:
            h = model.hidden.sample(fld, beta, generator)
            const = self.b + (1.0 - beta) * self.d + beta * model.rbm.visible_field(h)
            v = model._sweep(v, const, beta * self.j, self.blocks, generator)
        return inc, v

    def from_data(self, data, n, generator):
        idx = torch.randint(data.shape[0], (n,), generator=generator, device=data.device)
        return data.index_select(0, idx).clone()

    def fused(self):
        return None


# --------------------------------------------------------------------------- training
def _coupling_penalty(model: LateralModel, l2: float) -> Tensor | float:
    if not l2:
        return 0.0
    pen = 0.5 * l2 * (model.coupling_matrix() ** 2).sum()
    if isinstance(model, SemiRestrictedRBM):
        pen = pen + 0.5 * l2 * (model.connection.weights ** 2).sum()
    return pen


class _LateralObjective(Objective):
    """What both lateral objectives share: rows are states, the fields start at the data's
    marginals, the monitor is the pseudo-log-likelihood of (up to 2000) training rows."""

    def __init__(self, l2: float = 0.0) -> None:
        if not (l2 >= 0 and math.isfinite(l2)):
            raise ConfigError(f"l2 must be a finite number >= 0, got {l2!r}")
        self.l2 = float(l2)

    def prepare(self, model, data, name="data"):
        return _check_model(model).prepare(data, name)

    def setup(self, model, rows, init=True):
        if init:
            model.init_fields(rows)

    @torch.no_grad()
    def monitor(self, model, train, val):
        if train is None:
            return {}
        out = {"pseudo_log_likelihood": float(pseudo_log_likelihood(model, train))}
        if val is not None:
            out["val_pseudo_log_likelihood"] = float(pseudo_log_likelihood(model, val))
        return out


class PseudoLikelihood(_LateralObjective):
    """Besag's exact pseudo-likelihood (all sites) plus ``l2``/2 ||J||^2 (and ||W||^2 for a
    semi-restricted RBM): no model phase, so no sampler.  Diagnostic ``loss``."""

    needs_sampler = False

    def gradient(self, model, batch, sampler, generator):
        params = [p for p in model.parameters() if p.requires_grad]
        loss = autograd_step(lambda: -pseudo_log_likelihood(model, batch)
                             + _coupling_penalty(model, self.l2), params)
        return {"loss": loss}


class LateralLikelihood(_LateralObjective):
    """The likelihood gradient (data minus model statistics) of a lateral model: autograd of
    mean F(data) - mean F(particles) with the sampler's particles held fixed, plus the
    ``l2`` penalty.  Diagnostic ``loss`` (the free-energy gap plus penalty)."""

    def gradient(self, model, batch, sampler, generator):
        with torch.no_grad():
            negative, _ = sampler.negative(model, batch, None, generator)
        params = [p for p in model.parameters() if p.requires_grad]
        loss = autograd_step(lambda: model.free_energy(batch).mean()
                             - model.free_energy(negative.detach()).mean()
                             + _coupling_penalty(model, self.l2), params)
        return {"loss": loss}


def fit_pseudo_likelihood(model: LateralModel, data: Tensor, epochs: int = 100,
                          batch_size: int | None = None, lr: float = 0.05,
                          optimizer: str = "adam", momentum: float = 0.0, l2: float = 0.0,
                          seed: int = 0, init_fields: bool = True, lr_final_factor: float = 1.0,
                          callback: Callable[[dict], None] | None = None,
                          **trainer_options) -> list[dict]:
    """Maximise the exact pseudo-likelihood (all sites) through the one Trainer.

    ``batch_size=None`` is full-batch.  ``optimizer`` is "adam", "sgd", any
    ``torch.optim`` class or, full-batch only, "lbfgs" (each epoch up to 20 L-BFGS
    iterations with a strong-Wolfe line search, ``lr`` 1 is its natural step): the
    Ising pseudo-likelihood is concave, so L-BFGS reaches the exact
    maximum-pseudo-likelihood estimate in a few epochs.  ``l2`` adds l2/2 * ||J||^2 (and
    ||W||^2); the learning rate decays linearly to ``lr_final_factor`` x ``lr`` over the
    epochs (1: constant).  Returns per-epoch history: ``loss`` (negative mean PL plus
    penalty, averaged over batches) and ``pseudo_log_likelihood`` on (up to 2000 rows
    of) the data.
    """
    return _fit(model, data, PseudoLikelihood(l2), None, epochs, batch_size, lr, optimizer,
                momentum, seed, init_fields, lr_final_factor, callback, trainer_options)


def fit_pcd(model: LateralModel, data: Tensor, epochs: int = 100, batch_size: int = 100,
            lr: float = 0.05, optimizer: str = "adam", momentum: float = 0.0, l2: float = 0.0,
            chains: int | None = None, sweeps: int = 1, seed: int = 0,
            init_fields: bool = True, lr_final_factor: float = 1.0,
            callback: Callable[[dict], None] | None = None, **trainer_options) -> list[dict]:
    """Persistent contrastive divergence: ``chains`` persistent Gibbs chains, ``sweeps`` each.

    The gradient is autograd of mean F(batch) - mean F(chains) with the chains held fixed
    (data minus model statistics); chains start at random states.  History as
    :func:`fit_pseudo_likelihood` (``loss`` is the free-energy gap).
    """
    from ..sampling import PersistentCD

    if not isinstance(sweeps, int) or sweeps < 1:
        raise ConfigError(f"sweeps (k) must be a positive integer, got {sweeps!r}")
    sampler = PersistentCD(sweeps, int(chains or batch_size or 100))
    return _fit(model, data, LateralLikelihood(l2), sampler, epochs, batch_size, lr, optimizer,
                momentum, seed + 1, init_fields, lr_final_factor, callback, trainer_options)


def _fit(model, data, objective, sampler, epochs, batch_size, lr, optimizer, momentum, seed,
         init_fields, lr_final_factor, callback, trainer_options) -> list[dict]:
    from ..training import Trainer

    model = _check_model(model)
    x = model.prepare(data, "training data")
    if optimizer == "lbfgs":
        if batch_size and batch_size < x.shape[0]:
            raise ConfigError("optimizer 'lbfgs' is full-batch: leave batch_size unset")
        optimizer = functools.partial(torch.optim.LBFGS, lr=lr, max_iter=20, history_size=20,
                                      line_search_fn="strong_wolfe")
        lr = None
    callbacks = list(trainer_options.pop("callbacks", ()))
    if callback is not None:
        callbacks.append(lambda trainer, record: callback(record))
    schedule = ("linear", lr_final_factor) if lr_final_factor != 1.0 else ("constant", 0.01)
    trainer = Trainer(model, sampler, objective, optimizer, epochs=epochs,
                      batch_size=int(batch_size or x.shape[0]), lr=lr, momentum=momentum,
                      seed=seed, lr_schedule=schedule[0], lr_final_factor=schedule[1],
                      init_visible_bias=init_fields, monitor_size=2000, callbacks=callbacks,
                      progress=trainer_options.pop("progress", False), **trainer_options)
    return trainer.fit(x)


# --------------------------------------------------------------------------- CLI
def _build(run, data: Tensor) -> tuple[LateralModel, Tensor]:
    kind, scan = run["model"], run["lateral_scan"]
    gen = torch.Generator().manual_seed(int(run["seed"]))
    if kind == "ising":
        return IsingModel(data.shape[1], run["lateral_spins"], scan), data
    if kind == "potts":
        q = int(run["lateral_q"] or 0) or int(data.max()) + 1
        model = PottsModel(data.shape[1], q, scan)
        return model, model.one_hot(data)
    vis = make_units("bernoulli", data.shape[1])
    hid = make_units("bernoulli", int(run["n_hidden"]))
    conn = DenseConnection(data.shape[1], hid.n, float(run["init_std"]), gen)
    return SemiRestrictedRBM(vis, hid, conn, scan), data


def train_from_config(run) -> tuple[LateralModel, list[dict]]:
    """``boltzkit train --model ising|potts|srbm``: pseudo-likelihood (``--objective pl``)
    or the likelihood with any sampler (``--objective ml --method pcd``, ...)."""
    train, _, test, _ = run.splits()
    model, x = _build(run, train)
    if test is not None and isinstance(model, PottsModel):
        test = model.one_hot(test)
    model = model.to(run.device)
    if run["objective"] == "pl":
        objective, sampler = PseudoLikelihood(), None
    else:
        objective, sampler = LateralLikelihood(), run.sampler()
    trainer = run.trainer(model, sampler, objective, monitor_size=2000)
    history = run.fit(trainer, x, None if test is None else model.prepare(test, "test data"))
    if history and model.n_states <= 2**20:
        final = history[-1]
        lz = exact_log_z(model)
        final["log_z"] = lz
        final["train_log_likelihood"] = log_likelihood(model, x, lz)
        if test is not None:
            final["test_log_likelihood"] = log_likelihood(model, test, lz)
    return model, history
