"""Gradient estimators: fill ``.grad`` of a model's parameters for a ``torch.optim`` step.

The maximum-likelihood gradient of an RBM is the data statistics minus the
model statistics.  It equals the gradient of::

    mean F(v_data) - mean F(v_model)

with the model particles held fixed, so autograd on free energies is exact
for every unit type and connection (the *autograd path*).  For the common
case where every parameter is a bias or a dense weight, the same gradient is
written out as sufficient statistics (the *fast path*: two GEMMs straight
into the weight gradient, no autograd graph); ``tests/test_objectives.py``
checks the two agree.  Gradients are for *descent* (they point uphill on
the negative log-likelihood), as ``torch.optim`` expects.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .connections import DenseConnection
from .errors import ConfigError
from .rbm import RBM


class LikelihoodGradient:
    """Maximum-likelihood (CD/PCD/PT) gradient, with optional sparsity and centering.

    ``sparsity_target`` p and ``sparsity_cost`` lambda add the gradient of
    lambda * cross-entropy(p, q_j) for each hidden unit's mean activation q_j
    on the batch (Lee et al. 2008; Hinton's practical guide), applied to the
    hidden biases and the weights.  ``centering=True`` uses the centered
    gradient of Melchior et al. (2016): offsets are the data mean of the
    visible statistics and a running mean (``centering_decay``) of the hidden
    means; the stored parameters stay in ordinary form.
    """

    def __init__(self, sparsity_target: float | None = None, sparsity_cost: float = 0.0,
                 centering: bool = False, centering_decay: float = 0.01,
                 force_autograd: bool = False) -> None:
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
        self.force_autograd = force_autograd
        self.visible_offset: Tensor | None = None
        self.hidden_offset: Tensor | None = None

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

    def setup(self, rbm: RBM, data: Tensor) -> None:
        """Called once before training: sets centering offsets from the data."""
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
        if field_data is None:
            field_data = rbm.hidden_field(v_data)
        cv_d, cv_m = vis.coupling(v_data), vis.coupling(v_model)
        mu_d = hid.mean(field_data)
        mh_d = hid.coupling(mu_d)
        if field_model is None:
            field_model = rbm.hidden_field(v_model)
        mh_m = hid.coupling(hid.mean(field_model))
        if self.centering:
            mu_v, lam = self.visible_offset, self.hidden_offset
            lam.mul_(1 - self.centering_decay).add_(mh_d.mean(0), alpha=self.centering_decay)
            cd_, cm_ = cv_d - mu_v, cv_m - mu_v
            hd_, hm_ = mh_d - lam, mh_m - lam
        else:
            cd_, cm_, hd_, hm_ = cv_d, cv_m, mh_d, mh_m
        gW = _grad_buffer(W)
        # gW = <c_v c_h>_model - <c_v c_h>_data  (descent direction)
        torch.mm(cm_.t(), hm_, out=gW)
        gW.mul_(1.0 / M).addmm_(cd_.t(), hd_, alpha=-1.0 / B)
        gb = _grad_buffer(vis.bias)
        torch.sub(cv_m.mean(0), cv_d.mean(0), out=gb)
        gc = _grad_buffer(hid.bias)
        torch.sub(mh_m.mean(0), mh_d.mean(0), out=gc)
        if self.centering:
            # Melchior et al.: b <- b + grad_b - grad_W lam ; c <- c + grad_c - grad_W^T mu.
            gb.sub_(gW @ lam)
            gc.sub_(gW.t() @ mu_v)
        q = mu_d.mean(0)
        if self.sparsity_cost:
            d = (q - self.sparsity_target) * self.sparsity_cost
            gc.add_(d)
            gW.addr_(cv_d.mean(0), d)
        return {"hidden_activation": q.mean()}

    def _autograd(self, rbm, v_data, v_model):
        if self.centering:
            raise ConfigError("centering is only available on the fast path")
        params = [p for p in rbm.parameters() if p.requires_grad]
        with torch.enable_grad():
            loss = rbm.free_energy(v_data).mean() - rbm.free_energy(v_model.detach()).mean()
            field = rbm.hidden_field(v_data)
            q = rbm.hidden.mean(field).mean(0)
            if self.sparsity_cost:
                # Surrogate whose gradient is the fast path's: (q - p) on each unit's input.
                d = (q.detach() - self.sparsity_target) * self.sparsity_cost
                loss = loss + (d * (field.mean(0) + rbm.hidden.bias)).sum()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads, strict=True):
            if g is None:
                g = torch.zeros_like(p)
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad.copy_(g)
        return {"hidden_activation": q.detach().mean()}


def _grad_buffer(p: Tensor) -> Tensor:
    if p.grad is None:
        p.grad = torch.empty_like(p)
    return p.grad
