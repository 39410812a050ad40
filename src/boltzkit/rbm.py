"""The restricted Boltzmann machine: visible units + hidden units + a connection.

Energy::

    E(v, h; beta) = E_v(v; beta) + E_h(h; beta) - beta * c_v(v)^T W c_h(h)

and the free energy (hidden layer summed or integrated out)::

    F(v; beta) = E_v(v; beta) - log_partition_h(c_v(v) W; beta)

Every named model (Gaussian RBM, softmax RBM, ...) is this class with other
units; see ``boltzkit.models`` for presets.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import precision
from .connections import DenseConnection, connection_from_config
from .errors import ConfigError, DataError
from .model import Model
from .units import BernoulliUnits, Beta, Units, make_units, units_from_config


class RBM(Model):
    """A restricted Boltzmann machine composed of two layers and a connection."""

    def __init__(self, visible: Units, hidden: Units, connection: nn.Module | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if connection is None:
            connection = DenseConnection(visible.n, hidden.n, generator=generator)
        if (connection.n_visible, connection.n_hidden) != (visible.n, hidden.n):
            raise ConfigError(
                f"connection is {connection.n_visible}x{connection.n_hidden} but the layers "
                f"have {visible.n} visible and {hidden.n} hidden units")
        self.visible = visible
        self.hidden = hidden
        self.connection = connection

    # --- shape -----------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.visible.bias.device

    @property
    def dtype(self) -> torch.dtype:
        return self.visible.bias.dtype

    def config(self) -> dict:
        """JSON description that, with the tensors, rebuilds the model."""
        return {"model": "rbm", "visible": self.visible.config(),
                "hidden": self.hidden.config(), "connection": self.connection.config()}

    @classmethod
    def from_config(cls, cfg: dict) -> RBM:
        if cfg.get("model", "rbm") != "rbm":
            raise ConfigError(f"config describes a {cfg.get('model')!r}, not an rbm")
        vis, hid = units_from_config(cfg["visible"]), units_from_config(cfg["hidden"])
        default = {"kind": "dense", "n_visible": vis.n, "n_hidden": hid.n}
        return cls(vis, hid, connection_from_config(cfg.get("connection", default)))

    # --- fields and conditionals ------------------------------------------
    def hidden_field(self, v: Tensor) -> Tensor:
        """Input to the hidden layer from visible states (without the hidden bias)."""
        return self.connection(self.visible.coupling(v))

    def visible_field(self, h: Tensor) -> Tensor:
        """Input to the visible layer from hidden states (without the visible bias)."""
        return self.connection.transpose(self.hidden.coupling(h))

    def fused_activation(self, x: Tensor, to_hidden: bool = True, beta: Beta = 1.0,
                         out: Tensor | None = None) -> Tensor | None:
        """beta * (bias + field) of the target layer in one ``addmm``, or None.

        Applies when the connection is a plain :class:`DenseConnection`, the source
        layer's coupling is the identity, the target layer computes its activation
        the default way and nothing overrides the field; otherwise None and callers
        take the generic route (field, then ``units.activation``).  ``out``: an
        optional preallocated result (it may be a strided view; not differentiable,
        so under ``torch.no_grad()`` when the parameters require grad).
        """
        if isinstance(beta, Tensor) or type(self.connection) is not DenseConnection:
            return None
        cls = type(self)
        if to_hidden:
            src, dst, same = self.visible, self.hidden, cls.hidden_field is RBM.hidden_field
            w = self.connection.weights
        else:
            src, dst, same = self.hidden, self.visible, cls.visible_field is RBM.visible_field
            w = self.connection.weights.t()
        if not (same and type(src).coupling is Units.coupling
                and type(dst).activation is Units.activation):
            return None
        if precision.gemm_dtype() is not None and x.dtype == torch.float32:
            # mixed precision: the product in the GEMM dtype, the bias added in float32
            weights = self.connection.weights
            f = precision.mm(x, weights) if to_hidden else precision.mm_t(x, weights)
            a = torch.add(f, dst.bias, out=out)
            return a if beta == 1.0 else a.mul_(beta)
        if beta == 1.0:
            return torch.addmm(dst.bias, x, w, out=out)
        return torch.addmm(dst.bias, x, w, beta=beta, alpha=beta, out=out)

    def _fused_bernoulli_mean(self, x: Tensor, to_hidden: bool, beta: Beta) -> Tensor | None:
        dst = self.hidden if to_hidden else self.visible
        if type(dst) is not BernoulliUnits:
            return None
        a = self.fused_activation(x, to_hidden, beta)
        return None if a is None else a.sigmoid_()

    def hidden_mean(self, v: Tensor, beta: Beta = 1.0) -> Tensor:
        p = self._fused_bernoulli_mean(v, True, beta)
        return self.hidden.mean(self.hidden_field(v), beta) if p is None else p

    def visible_mean(self, h: Tensor, beta: Beta = 1.0) -> Tensor:
        p = self._fused_bernoulli_mean(h, False, beta)
        return self.visible.mean(self.visible_field(h), beta) if p is None else p

    def sample_hidden(self, v: Tensor, beta: Beta = 1.0,
                      generator: torch.Generator | None = None) -> Tensor:
        p = self._fused_bernoulli_mean(v, True, beta)
        if p is None:
            return self.hidden.sample(self.hidden_field(v), beta, generator)
        return self.hidden.sample(p, beta, generator, mean=p)

    def sample_visible(self, h: Tensor, beta: Beta = 1.0,
                       generator: torch.Generator | None = None) -> Tensor:
        p = self._fused_bernoulli_mean(h, False, beta)
        if p is None:
            return self.visible.sample(self.visible_field(h), beta, generator)
        return self.visible.sample(p, beta, generator, mean=p)

    # --- energies ----------------------------------------------------------
    def energy(self, v: Tensor, h: Tensor, beta: Beta = 1.0) -> Tensor:
        """Joint energy E(v, h), shape (batch,)."""
        inter = self.connection.interaction(self.visible.coupling(v), self.hidden.coupling(h))
        beta_inter = inter * beta.reshape(-1) if isinstance(beta, Tensor) else inter * beta
        return self.visible.energy(v, beta) + self.hidden.energy(h, beta) - beta_inter

    def free_energy(self, v: Tensor, beta: Beta = 1.0, field: Tensor | None = None) -> Tensor:
        """F(v) = -log sum_h exp(-E(v, h)), shape (batch,).

        ``field``: ``hidden_field(v)`` when the caller already has it (e.g. the free
        energies of one state at two temperatures share it).
        """
        if field is None:
            field = self.hidden_field(v)
        return self.visible.energy(v, beta) - self.hidden.log_partition(field, beta)

    def free_energy_hidden(self, h: Tensor, beta: Beta = 1.0) -> Tensor:
        """The free energy of hidden states with the visible layer summed out."""
        return self.hidden.energy(h, beta) - self.visible.log_partition(self.visible_field(h), beta)

    # --- sampling ----------------------------------------------------------
    @torch.no_grad()
    def gibbs(self, v: Tensor, steps: int = 1, beta: Beta = 1.0,
              generator: torch.Generator | None = None,
              clamp_mask: Tensor | None = None, clamp_values: Tensor | None = None) -> Tensor:
        """Run ``steps`` block-Gibbs sweeps v -> h -> v; clamped visibles are held fixed."""
        clamp = _clamp_fn(clamp_mask, clamp_values, v)
        v = clamp(v)
        for _ in range(steps):
            h = self.sample_hidden(v, beta, generator)
            v = clamp(self.sample_visible(h, beta, generator))
        return v

    @torch.no_grad()
    def sample(self, n: int, steps: int = 1000, beta: Beta = 1.0,
               generator: torch.Generator | None = None, init: Tensor | None = None,
               clamp_mask: Tensor | None = None, clamp_values: Tensor | None = None,
               return_mean: bool = True) -> Tensor:
        """Draw ``n`` visible samples by ``steps`` Gibbs sweeps from random (or ``init``) states.

        With ``clamp_mask`` (bool, shape (n_visible,) or (n, n_visible)) the
        masked visibles keep ``clamp_values``: conditional sampling, e.g.
        inpainting.  ``return_mean`` returns E[v | h] of the last sweep, the
        usual way to show samples as images.
        """
        if steps < 0:
            raise ConfigError(f"steps must be >= 0, got {steps}")
        if init is None:
            v = self.visible.init_state(n, generator)
        else:
            v = init.to(device=self.device, dtype=self.dtype)
            if v.shape != (n, self.n_visible):
                raise DataError(f"init has shape {tuple(v.shape)}, expected {(n, self.n_visible)}")
        clamp = _clamp_fn(clamp_mask, clamp_values, v)
        v = self.gibbs(v, max(steps - 1, 0), beta, generator, clamp_mask, clamp_values)
        if steps == 0:
            return v
        h = self.sample_hidden(v, beta, generator)
        if return_mean:
            return clamp(self.visible_mean(h, beta))
        return clamp(self.sample_visible(h, beta, generator))

    # --- uses --------------------------------------------------------------
    @torch.no_grad()
    def transform(self, v: Tensor, batch_size: int = 4096) -> Tensor:
        """Hidden means E[h | v]: the features for a downstream model."""
        v = self.prepare(v)
        return torch.cat([self.hidden_mean(b) for b in v.split(batch_size)])

    @torch.no_grad()
    def reconstruct(self, v: Tensor, batch_size: int = 4096) -> Tensor:
        """E[v | h = E[h | v]]: one deterministic up-down pass, batched."""
        v = self.prepare(v)
        return torch.cat([self.visible_mean(self.hidden_mean(b)) for b in v.split(batch_size)])

    def prepare(self, v: Tensor, name: str = "data", check: bool = True) -> Tensor:
        """Move data to the model's device/dtype and check it fits the visible layer."""
        if not isinstance(v, Tensor):
            v = torch.as_tensor(v)
        v = v.to(device=self.device, dtype=self.dtype)
        if check:
            self.visible.validate(v, name)
        return v

    @torch.no_grad()
    def init_visible_bias(self, data: Tensor) -> None:
        """Set the visible bias so the model's marginals start at the data's."""
        self.visible.bias.copy_(self.visible.fit_bias(data.to(self.device)))


def _clamp_fn(mask: Tensor | None, values: Tensor | None, like: Tensor):
    if mask is None:
        return lambda x: x
    if values is None:
        raise ConfigError("clamp_mask needs clamp_values (the states to hold fixed)")
    mask = mask.to(device=like.device, dtype=torch.bool)
    values = values.to(device=like.device, dtype=like.dtype)
    return lambda x: torch.where(mask, values, x)


def make_rbm(n_visible: int, n_hidden: int, visible: str = "bernoulli",
             hidden: str = "bernoulli", visible_options: dict | None = None,
             hidden_options: dict | None = None, seed: int | None = None) -> RBM:
    """Build a dense RBM from unit-type names, e.g. ``make_rbm(784, 500)``."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return RBM(make_units(visible, n_visible, **(visible_options or {})),
               make_units(hidden, n_hidden, **(hidden_options or {})), generator=gen)
