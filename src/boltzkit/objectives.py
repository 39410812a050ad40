"""Gradient estimators: fill ``.grad`` of a model's parameters for a ``torch.optim`` step.

The maximum-likelihood gradient of an RBM is the data statistics minus the
model statistics.  It equals the gradient of::

    mean F(v_data) - mean F(v_model)

with the model particles held fixed, so autograd on free energies is exact
for every unit type and connection (the *autograd path*).  For the common
case where every parameter is a bias or a dense weight, the same gradient is
written out as sufficient statistics (the *fast path*, no autograd graph): the
data and model statistics are stacked in preallocated buffers, each with a
constant extra column, so that ONE GEMM yields the weight and both bias
gradients, and the parameters' ``.grad`` are views of its result (no copy, no
allocation per step); ``tests/test_objectives.py`` checks the fast path against
the autograd path and the reused buffers against fresh ones.  Gradients are for
*descent* (they point uphill on the negative log-likelihood), as ``torch.optim``
expects.

Every estimator is an :class:`Objective`: the part a model kind brings to the one
training loop (:class:`boltzkit.training.Trainer`).  Besides the gradient it says
what a batch is (``prepare``: a tensor of visible states, or a tuple of aligned
tensors when the rows carry labels or a history), how training starts from the data
(``setup``) and what the cheap per-epoch monitors are (``monitor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from . import precision
from .connections import DenseConnection
from .errors import ConfigError, DataError
from .rbm import RBM
from .units import BernoulliUnits, Units

#: A batch: visible states (n_rows, n_visible), or a tuple of aligned tensors.
Batch = Tensor | tuple[Tensor, ...]

#: What :class:`LikelihoodGradient` divides the model statistics by (``model_norm``).
MODEL_NORMS = ("particles", "rows")


def assign_grads(params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    """Write ``grads`` into the parameters' ``.grad`` (zeros for None).

    Copies into an existing ``.grad`` (which a distributed run binds to its all-reduce
    buffer) instead of replacing it.
    """
    for p, g in zip(params, grads, strict=True):
        g = torch.zeros_like(p) if g is None else g.detach()
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)


def autograd_step(loss_fn, params: Sequence[Tensor]) -> Tensor:
    """Fill ``.grad`` of ``params`` with d loss_fn() / d params; returns the loss (detached).

    For surrogate losses (e.g. mean F(data) - mean F(particles) with the particles held
    fixed) whose gradient is the estimator.
    """
    with torch.enable_grad():
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    assign_grads(params, grads)
    return loss.detach()


class Objective:
    """What a model kind brings to the training loop besides its sampler.

    ``gradient(model, batch, sampler, generator)`` fills ``.grad`` of every trainable
    parameter with a *descent* direction and returns batch diagnostics (0-d tensors;
    the Trainer reports their epoch means).  The defaults here are the RBM's: a batch
    is a tensor of visible states, the negative particles come from the sampler, the
    visible bias starts at the data's marginals, and the monitors are the
    reconstruction error and the free energies of fixed train/validation subsets.
    ``needs_sampler``: False for objectives without a model phase (pseudo-likelihood,
    a purely discriminative loss); the Trainer then refuses a sampler instead of
    ignoring it.
    """

    needs_sampler = True

    def prepare(self, model: Any, data: Any, name: str = "data") -> Batch:
        """``data`` as a batch on the model's device, checked (DataError when it cannot be)."""
        if isinstance(data, tuple):
            raise DataError(f"{name}: this model trains on one array of visible states, got "
                            f"a tuple of {len(data)}")
        return model.prepare(data, name)

    def setup(self, model: Any, rows: Batch, init: bool = True) -> None:
        """Called once before the first epoch (not on resume); ``init``: start the
        visible bias at the data's marginals."""
        if init:
            model.init_visible_bias(rows)

    def begin_epoch(self, epoch: int) -> None:
        """Called before each epoch (0-based), for schedules kept by the objective."""

    def gradient(self, model: Any, batch: Batch, sampler: Any,
                 generator: torch.Generator | None) -> dict[str, Tensor]:
        """Fill ``.grad``; the default asks ``sampler`` for negative particles of an RBM."""
        with torch.no_grad():
            field = model.hidden_field(batch)
            negative, neg_field = sampler.negative(model, batch, field, generator)
        return self.compute(model, batch, negative, field, neg_field)

    def compute(self, rbm: RBM, v_data: Tensor, v_model: Tensor,
                field_data: Tensor | None = None,
                field_model: Tensor | None = None) -> dict[str, Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def monitor(self, model: Any, train: Batch | None, val: Batch | None) -> dict[str, float]:
        """Cheap per-epoch monitors on a fixed training subset and the validation rows."""
        if train is None:
            return {}
        out = {"recon_error": float(((model.reconstruct(train, 1000) - train) ** 2).mean()),
               "free_energy_train": float(model.free_energy(train).mean())}
        if val is not None:
            out["free_energy_val"] = float(model.free_energy(val).mean())
            out["free_energy_gap"] = out["free_energy_val"] - out["free_energy_train"]
        return out

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        return None


class _DuckObjective(Objective):
    """An objective written against the older protocol (``compute``, optional ``setup(rbm,
    data)``, state dicts) seen through :class:`Objective`'s defaults."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.needs_sampler = getattr(inner, "needs_sampler", True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["inner"], name)

    def setup(self, model: Any, rows: Batch, init: bool = True) -> None:
        super().setup(model, rows, init)
        if hasattr(self.inner, "setup"):
            self.inner.setup(model, rows)

    def compute(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        return self.inner.compute(*args, **kwargs)

    def state_dict(self) -> dict[str, Tensor]:
        return self.inner.state_dict() if hasattr(self.inner, "state_dict") else {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if hasattr(self.inner, "load_state_dict"):
            self.inner.load_state_dict(state)


def as_objective(objective: Any) -> Objective:
    """``objective`` itself when it is an :class:`Objective`, else a view of a duck-typed
    one (anything with ``compute(rbm, v_data, v_model, field_data, field_model)``)."""
    if isinstance(objective, Objective):
        return objective
    if not callable(getattr(objective, "compute", None)):
        raise ConfigError(f"{type(objective).__name__} is not an objective: subclass "
                          "boltzkit.objectives.Objective (gradient) or give it a compute method")
    return _DuckObjective(objective)


class LikelihoodGradient(Objective):
    """Maximum-likelihood (CD/PCD/PT) gradient, with optional sparsity and centering.

    ``sparsity_target`` p and ``sparsity_cost`` lambda add the gradient of
    lambda * cross-entropy(p, q_j) for each hidden unit's mean activation q_j
    on the batch (Lee et al. 2008; Hinton's practical guide), applied to the
    hidden biases and the weights.  ``centering=True`` uses the centered
    gradient of Melchior et al. (2016): offsets are the data mean of the
    visible statistics and a running mean (``centering_decay``) of the hidden
    means; the stored parameters stay in ordinary form.

    ``model_norm`` says what the model statistics are divided by: the number of
    particles M ("particles", the default: their mean, an estimate of the model
    expectation) or the number of data rows B of the batch ("rows": each particle
    weighs as much as one data row, scikit-learn's ``BernoulliRBM``, whose update is
    lr / B (sum over data - sum over its M chains)).  The two agree when M = B;
    otherwise "rows" scales the model phase by M / B (scikit-learn's last, shorter
    batch of a pass), so it is for reproducing scikit-learn, not a better estimate.
    """

    def __init__(self, sparsity_target: float | None = None, sparsity_cost: float = 0.0,
                 centering: bool = False, centering_decay: float = 0.01,
                 force_autograd: bool = False, model_norm: str = "particles") -> None:
        if sparsity_target is not None and not 0 < sparsity_target < 1:
            raise ConfigError(f"sparsity_target must be in (0, 1), got {sparsity_target}")
        if sparsity_cost < 0:
            raise ConfigError(f"sparsity_cost must be >= 0, got {sparsity_cost}")
        if not 0 < centering_decay <= 1:
            raise ConfigError(f"centering_decay must be in (0, 1], got {centering_decay}")
        self.sparsity_target = sparsity_target
        self.sparsity_cost = sparsity_cost if sparsity_target is not None else 0.0
        self.centering = centering
        self.centering_decay = centering_decay
        if model_norm not in MODEL_NORMS:
            raise ConfigError(f"unknown model_norm {model_norm!r}: choose one of "
                              f"{list(MODEL_NORMS)}")
        if centering and model_norm != "particles":
            raise ConfigError("centering needs model_norm='particles' (its offsets cancel only "
                              "when the data and model phases weigh the same)")
        self.force_autograd = force_autograd
        self.model_norm = model_norm
        self.visible_offset: Tensor | None = None
        self.hidden_offset: Tensor | None = None
        self._buffers: dict[tuple, _Workspace] = {}

    # -- checkpoint state --------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        out = {}
        if self.visible_offset is not None:
            out["visible_offset"] = self.visible_offset
        if self.hidden_offset is not None:
            out["hidden_offset"] = self.hidden_offset
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.visible_offset = state.get("visible_offset")
        self.hidden_offset = state.get("hidden_offset")

    def setup(self, rbm: RBM, data: Tensor, init: bool = True) -> None:
        """Called once before training: the visible bias (``init``), centering offsets."""
        super().setup(rbm, data, init)
        if self.centering:
            if not self.fast_path(rbm):
                raise ConfigError("centering needs bias-only units and a dense connection "
                                  "(learned variances are not supported with centering)")
            if self.visible_offset is None:
                with torch.no_grad():
                    self.visible_offset = rbm.visible.coupling(data.to(rbm.device)).mean(0)
                    self.hidden_offset = rbm.hidden.coupling(
                        rbm.hidden.mean(rbm.hidden_field(data[:10000].to(rbm.device)))).mean(0)

    def fast_path(self, rbm: RBM) -> bool:
        return (not self.force_autograd and rbm.visible.bias_only and rbm.hidden.bias_only
                and isinstance(rbm.connection, DenseConnection))

    # -- the estimator -------------------------------------------------------
    def compute(self, rbm: RBM, v_data: Tensor, v_model: Tensor,
                field_data: Tensor | None = None,
                field_model: Tensor | None = None) -> dict[str, Tensor]:
        """Set ``p.grad`` for every parameter of ``rbm``; returns batch diagnostics.

        ``field_data``/``field_model`` are the hidden fields of the two batches
        under the current parameters, when the caller already has them.
        """
        if self.fast_path(rbm):
            return self._fast(rbm, v_data, v_model, field_data, field_model)
        return self._autograd(rbm, v_data, v_model)

    @torch.no_grad()
    def _fast(self, rbm, v_data, v_model, field_data, field_model):
        vis, hid, W = rbm.visible, rbm.hidden, rbm.connection.weights
        B, M = v_data.shape[0], v_model.shape[0]
        ws = self._workspace(rbm, B, M)
        # Stacked statistics, rows [0, B) data and [B, B + M) model (n = nv, m = nh):
        #   V = [[-c_v(v_d), -1, 1], [c_v(v_m), 1, 0]]       (B + M) x (n + 2)
        #   H = [[c_h(mu_d), 1], [w c_h(mu_m), w]]           (B + M) x (m + 1), + zeros
        # with w = B/M (or 1 for model_norm="rows"; centering subtracts the offsets
        # from c_v and c_h first).  ONE GEMM,
        # G = V^T H / B, gives [[gW, gb], [gc, .], [q, 1]]: the descent direction
        # (model - data) for the weights and both biases, and the mean hidden
        # activation q of the data, with no other pass over the batch.
        mu_v = self.visible_offset if self.centering else None
        lam = self.hidden_offset if self.centering else None
        cv_d, cv_m = ws.v_data, ws.v_model
        mh_d, mh_m = ws.h_data, ws.h_model
        cd = v_data if type(vis).coupling is Units.coupling else vis.coupling(v_data)
        cm = v_model if type(vis).coupling is Units.coupling else vis.coupling(v_model)
        if mu_v is None:
            torch.neg(cd, out=cv_d)
            cv_m.copy_(cm)
        else:
            torch.sub(mu_v, cd, out=cv_d)
            torch.sub(cm, mu_v, out=cv_m)
        mu_d = self._hidden_stats(rbm, v_data, field_data, mh_d)
        self._hidden_stats(rbm, v_model, field_model, mh_m)
        q = None
        if lam is not None or mu_d is not mh_d:  # the GEMM row would not hold q
            q = mu_d.mean(0)
        if lam is not None:
            lam.mul_(1 - self.centering_decay).add_(mh_d.mean(0), alpha=self.centering_decay)
            mh_d.sub_(lam)
            mh_m.sub_(lam)
        if M != B and self.model_norm == "particles":
            mh_m.mul_(B / M)
        if precision.gemm_dtype() is None:
            torch.addmm(ws.G, ws.V.t(), ws.H, beta=0.0, alpha=1.0 / B, out=ws.G)
        else:
            # mixed precision: the weight block from the low-precision GEMM, the bias and
            # activation sums (the last column and rows) in float32, as the fused step
            nv, nh = W.shape
            torch.mul(precision.mm(ws.V[:, :nv].t(), ws.H[:, :nh]), 1.0 / B, out=ws.gW)
            torch.mm(ws.V.t(), ws.H[:, nh:nh + 1], out=ws.G[:, nh:nh + 1]).mul_(1.0 / B)
            torch.mm(ws.V[:, nv:].t(), ws.H[:, :nh], out=ws.G[nv:, :nh]).mul_(1.0 / B)
        gW, gb, gc = ws.gW, ws.gb, ws.gc
        if q is None:
            q = ws.q
        act = q.mean()
        if lam is not None:
            # Melchior et al.: b <- b + grad_b - grad_W lam ; c <- c + grad_c - grad_W^T mu.
            gb.sub_(gW @ lam)
            gc.sub_(gW.t() @ mu_v)
        if self.sparsity_cost:
            d = (q - self.sparsity_target) * self.sparsity_cost
            gc.add_(d)
            gW.addr_(cd.mean(0), d)
        _bind_grad(W, gW)
        _bind_grad(vis.bias, gb)
        _bind_grad(hid.bias, gc)
        return {"hidden_activation": act}

    @staticmethod
    def _hidden_stats(rbm, v, field, out) -> Tensor:
        """out <- c_h(E[h | v]), the hidden statistics of rows ``v``; returns E[h | v]
        (``out`` itself when the coupling is the identity)."""
        hid = rbm.hidden
        if type(hid) is BernoulliUnits:
            if field is None:
                if rbm.fused_activation(v, out=out) is None:
                    out.copy_(rbm.hidden_field(v)).add_(hid.bias)
            else:
                torch.add(field, hid.bias, out=out)
            return out.sigmoid_()
        if field is None:
            field = rbm.hidden_field(v)
        mu = hid.mean(field)
        out.copy_(hid.coupling(mu))
        return mu

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_buffers", None)  # scratch space: rebuilt on the next step
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._buffers = {}

    def model_weight(self, B: int, M: int) -> float:
        """The factor on the sum of the M particles' statistics, relative to the data's
        1 per row: B / M ("particles") or 1 ("rows"); see ``model_norm``."""
        return B / M if getattr(self, "model_norm", "particles") == "particles" else 1.0

    def _workspace(self, rbm, B: int, M: int) -> _Workspace:
        W = rbm.connection.weights
        weight = self.model_weight(B, M)
        key = (B, M, weight, tuple(W.shape), W.dtype, W.device)
        buffers = self.__dict__.setdefault("_buffers", {})  # subclasses may skip __init__
        ws = buffers.get(key)
        if ws is None:
            if len(buffers) >= 4:  # e.g. a short last batch: keep a few shapes
                buffers.clear()
            ws = buffers[key] = _Workspace(B, M, W, weight)
        return ws

    def _autograd(self, rbm, v_data, v_model):
        if self.centering:
            raise ConfigError("centering is only available on the fast path")
        params = [p for p in rbm.parameters() if p.requires_grad]
        B, M = v_data.shape[0], v_model.shape[0]
        with torch.enable_grad():
            loss = (rbm.free_energy(v_data).mean()
                    - rbm.free_energy(v_model.detach()).sum() * (self.model_weight(B, M) / B))
            field = rbm.hidden_field(v_data)
            q = rbm.hidden.mean(field).mean(0)
            if self.sparsity_cost:
                # Surrogate whose gradient is the fast path's: (q - p) on each unit's input.
                d = (q.detach() - self.sparsity_target) * self.sparsity_cost
                loss = loss + (d * (field.mean(0) + rbm.hidden.bias)).sum()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        assign_grads(params, grads)
        return {"hidden_activation": q.detach().mean()}


class _Workspace:
    """Preallocated buffers of the fast path for one (B, M, weight shape); see ``_fast``."""

    def __init__(self, B: int, M: int, W: Tensor, model_weight: float) -> None:
        nv, nh = W.shape
        kw = {"dtype": W.dtype, "device": W.device}
        # H's width is padded (zero columns) to a multiple of 8: an odd GEMM width such
        # as 501 runs measurably slower than 504 in MKL's CPU kernels.
        wh = -(-(nh + 1) // 8) * 8
        self.V = torch.empty(B + M, nv + 2, **kw)
        self.H = torch.zeros(B + M, wh, **kw)
        self.G = torch.empty(nv + 2, wh, **kw)
        self.V[:B, nv], self.V[B:, nv] = -1.0, 1.0
        self.V[:B, nv + 1], self.V[B:, nv + 1] = 1.0, 0.0
        self.H[:B, nh], self.H[B:, nh] = 1.0, model_weight
        self.v_data, self.v_model = self.V[:B, :nv], self.V[B:, :nv]
        self.h_data, self.h_model = self.H[:B, :nh], self.H[B:, :nh]
        self.gW, self.gb, self.gc = self.G[:nv, :nh], self.G[:nv, nh], self.G[nv, :nh]
        self.q = self.G[nv + 1, :nh]
        for g in (self.gW, self.gb, self.gc):
            g._boltzkit_workspace = True  # lets a later workspace take the .grad slot over


def _bind_grad(p: Tensor, g: Tensor) -> None:
    """Make ``g`` the gradient of ``p``: bound as ``p.grad`` (no copy) when the slot is
    free or holds a workspace view, copied into it when something else owns it (e.g.
    the flat all-reduce buffer of a distributed run, or a user's tensor)."""
    if p.grad is None or p.grad is g or getattr(p.grad, "_boltzkit_workspace", False):
        p.grad = g
    else:
        p.grad.copy_(g)
