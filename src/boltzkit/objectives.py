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
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from .connections import DenseConnection
from .errors import ConfigError
from .rbm import RBM, is_dense_bernoulli
from .sampling import ContrastiveDivergence, PersistentCD
from .units import BernoulliUnits, Units, uniform_filler


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
        ws = self._workspace(rbm, B, M)
        # Stacked statistics, rows [0, B) data and [B, B + M) model (n = nv, m = nh):
        #   V = [[-c_v(v_d), -1, 1], [c_v(v_m), 1, 0]]       (B + M) x (n + 2)
        #   H = [[c_h(mu_d), 1], [(B/M) c_h(mu_m), B/M]]     (B + M) x (m + 1), + zeros
        # (centering subtracts the offsets from c_v and c_h first).  ONE GEMM,
        # G = V^T H / B, gives [[gW, gb], [gc, 0], [q, 1]]: the descent direction
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
        if M != B:
            mh_m.mul_(B / M)
        torch.addmm(ws.G, ws.V.t(), ws.H, beta=0.0, alpha=1.0 / B, out=ws.G)
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

    def _workspace(self, rbm, B: int, M: int) -> _Workspace:
        W = rbm.connection.weights
        key = (B, M, tuple(W.shape), W.dtype, W.device)
        buffers = self.__dict__.setdefault("_buffers", {})  # subclasses may skip __init__
        ws = buffers.get(key)
        if ws is None:
            if len(buffers) >= 4:  # e.g. a short last batch: keep a few shapes
                buffers.clear()
            ws = buffers[key] = _Workspace(B, M, W)
        return ws

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


class _Workspace:
    """Preallocated buffers of the fast path for one (B, M, weight shape); see ``_fast``."""

    def __init__(self, B: int, M: int, W: Tensor) -> None:
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
        self.H[:B, nh], self.H[B:, nh] = 1.0, B / M
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


class FusedBernoulliSGD:
    """The whole training step of the plain case fused: CD-k/PCD-k, likelihood, SGD.

    For a dense Bernoulli-Bernoulli :class:`RBM` trained by
    :class:`~boltzkit.sampling.ContrastiveDivergence` or
    :class:`~boltzkit.sampling.PersistentCD` with a plain :class:`LikelihoodGradient`
    and ``torch.optim.SGD`` (with or without momentum; weight decay on the weights
    only), the general step (``hidden_field``, ``sampler.negative``,
    ``LikelihoodGradient.compute``, ``optimizer.step``) costs about 40 small torch
    calls, and at mini-batches of ~10 rows their dispatch, not the arithmetic, is
    the time.  This step does the same update in about 16 in-place calls on
    preallocated buffers: the data and chain rows stacked as ``V = [v_d; v_m]``
    and their hidden means as ``H = [h_d; -(B/M) h_m]``, so ONE GEMM
    ``V^T H`` gives the weight update (data minus model statistics), ONE GEMM
    ``V W`` both hidden fields, and one ``addmv`` each bias update.

    It is the same update as the general path, draw for draw: the same
    generator calls in the same order (the ``uniform_`` of :mod:`boltzkit.units`
    and a compare), the persistent chains kept in the sampler as before (visible
    states and their hidden field, so the two paths can take turns and
    checkpoints are unchanged), the hyperparameters and momentum buffers read
    from and written to the optimizer; only float rounding differs
    (``tests/test_fused_step.py`` checks both against each other).  ``build``
    returns None whenever any part is not the plain one, and the caller keeps the
    general path.  Build it per pass (it reads the learning rate then).

    Data-parallel (``sync``, a :class:`boltzkit.distributed.GradientSync`): each rank
    writes its weighted share w of the new momentum buffer, ``w (momentum * buf + wd W)``
    plus its share of the gradient, straight into the sync buffer's views (one GEMM
    with the buffer as its input), the ranks sum the shares (the w add up to 1), and
    the parameters step by the sum: the general path's ``sync.reduce`` and
    ``optimizer.step()`` with one pass over the weights after the sum instead of
    three.  During a ``run`` the views hold the momentum buffers (copied back to the
    optimizer's state at its end).  ``run`` then takes ``(rows, weight)`` pairs: this
    rank's rows of a global batch (None when its share is empty) and w.
    """

    def __init__(self, rbm: RBM, sampler, optimizer: torch.optim.SGD,
                 generator: torch.Generator | None, lr: float, momentum: float,
                 weight_decay: float, sync=None) -> None:
        self.rbm, self.sampler, self.generator = rbm, sampler, generator
        self.optimizer, self.sync = optimizer, sync
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.persistent = not isinstance(sampler, ContrastiveDivergence)
        self.k = sampler.k
        params = (rbm.connection.weights, rbm.visible.bias, rbm.hidden.bias)
        # Detached aliases (same storage): in-place updates without autograd's checks
        # or a no_grad context per step, and no nn.Module attribute lookups.
        self._W, self._b, self._c = (p.detach() for p in params)
        self._Wt = self._W.t()
        self.bufs = None
        if momentum:
            # LeanSGD's first step sets buf = grad; momentum * 0 + grad is the same.
            self.bufs = tuple(optimizer.state[p].setdefault(
                "momentum_buffer", torch.zeros_like(p, memory_format=torch.contiguous_format))
                for p in params)
        self._ws: dict[tuple[int, int], _FusedWorkspace] = {}
        self._last: _FusedWorkspace | None = None
        self._grads: tuple[Tensor, Tensor, Tensor] | None = None
        if sync is not None:
            views = {id(p): view for p, view in zip(sync.params, sync.views, strict=True)}
            self._grads = tuple(views[id(p)] for p in params)

    @classmethod
    def build(cls, rbm: RBM, sampler, objective, optimizer,
              generator: torch.Generator | None = None,
              previous: FusedBernoulliSGD | None = None,
              sync=None) -> FusedBernoulliSGD | None:
        """The fused step for these parts, or None where it would not be the same update.

        ``previous``, the step built for the last pass, hands over its buffers
        when it served the same model and sampler (one allocation per fit, not
        per pass).  ``sync``: the data-parallel gradient sum (see the class).
        """
        if not (is_dense_bernoulli(rbm)
                and type(sampler) in (ContrastiveDivergence, PersistentCD)
                and type(objective) is LikelihoodGradient and objective.fast_path(rbm)
                and not objective.centering and not objective.sparsity_cost
                and isinstance(optimizer, torch.optim.SGD)
                and not optimizer._optimizer_step_pre_hooks
                and not optimizer._optimizer_step_post_hooks):
            return None
        W, b, c = rbm.connection.weights, rbm.visible.bias, rbm.hidden.bias
        if not all(p.requires_grad for p in (W, b, c)) or len(list(rbm.parameters())) != 3:
            return None
        rule = {}
        for g in optimizer.param_groups:
            if (g["nesterov"] or g["dampening"] or g.get("maximize") or g.get("differentiable")
                    or isinstance(g["lr"], Tensor)):
                return None
            for p in g["params"]:
                rule[p] = (g["lr"], g["momentum"], g["weight_decay"])
        if any(p not in rule for p in (W, b, c)) or len(rule) != 3:
            return None
        (lr, momentum, wd), rb, rc = rule[W], rule[b], rule[c]
        if rb != (lr, momentum, 0.0) or rc != (lr, momentum, 0.0):
            return None
        if sync is not None and ({id(p) for p in sync.params} != {id(W), id(b), id(c)}
                                 or sync.n_extra < 1):
            return None
        step = cls(rbm, sampler, optimizer, generator, float(lr), float(momentum), float(wd),
                   sync)
        if previous is not None and previous.rbm is rbm and previous.sampler is sampler:
            step._ws, step._last = previous._ws, previous._last
        return step

    def _workspace(self, B: int, M: int, W: Tensor) -> _FusedWorkspace:
        ws = self._ws.get((B, M))
        if ws is None:
            ws = self._ws[(B, M)] = _FusedWorkspace(B, M, W)
        self._last = ws
        return ws

    def __call__(self, v_data: Tensor, activation: Tensor | None = None) -> None:
        """One update on the batch ``v_data`` (rows in [0, 1], the model's dtype and device).

        ``activation`` (a 0-d tensor), if given, gets the batch's mean hidden activation
        of the data added to it: the general path's ``hidden_activation`` diagnostic.
        """
        self.run((v_data,), activation)

    def run(self, batches: Iterable[Tensor], activation: Tensor | None = None) -> None:
        """One update per batch, in order: ``__call__`` over a pass, its lookups made once.

        At ~10-row batches the Python work per step (attribute and buffer
        lookups) is ~10% of the step, so a pass binds them to locals here, the
        buffers again only when the batch shape changes workspace.
        """
        sync, bufs = self.sync, self.bufs
        if sync is None:
            return self._steps(batches, activation)
        sync.rebind()  # every .grad is its view again (a copy into it would overwrite)
        if bufs is not None:
            torch._foreach_copy_(self._grads, bufs)  # the views carry the momentum
        try:
            self._steps(batches, activation)
        finally:
            if bufs is not None:
                torch._foreach_copy_(bufs, self._grads)  # the optimizer's state again

    def _steps(self, batches: Iterable, activation: Tensor | None) -> None:
        sampler, gen, rbm, sync = self.sampler, self.generator, self.rbm, self.sync
        W, b, c, Wt = self._W, self._b, self._c, self._Wt
        lr, wd, momentum, bufs, persistent, k = (self.lr, self.weight_decay, self.momentum,
                                                 self.bufs, self.persistent, self.k)
        weight = 1.0
        ws = None  # the first batch binds the workspace (and its buffers) below
        # This step applies the optimizer's rule without calling its step(), which torch's
        # lr schedulers would otherwise take for a wrong call order and warn about.
        self.optimizer._opt_called = True
        # Inference mode skips the autograd dispatch, ~10% of a step at this size;
        # buffers and chains are made outside it (they must stay normal tensors).
        with torch.inference_mode():
            for v_data in batches:
                if sync is not None:
                    v_data, weight = v_data
                    if v_data is None:  # this rank's share of a short last batch is empty
                        for g in self._grads:
                            g.zero_()
                        self._synced_update(activation, 0.0)
                        continue
                if v_data.requires_grad:
                    v_data = v_data.detach()
                B = v_data.shape[0]
                if persistent:
                    if sampler.field is None:
                        with torch.inference_mode(False), torch.no_grad():
                            if sampler.chains is None:
                                sampler.chains = sampler._start(rbm, v_data, gen)
                            sampler.field = rbm.hidden_field(sampler.chains)
                    M = sampler.chains.shape[0]
                else:
                    M = B
                if ws is None or ws.B != B or ws.M != M:
                    with torch.inference_mode(False):
                        ws = self._workspace(B, M, W)
                    hs, ph, pv, Vm, Vd, Hd = ws.hs, ws.ph, ws.pv, ws.Vm, ws.Vd, ws.Hd
                    Hd_flat, mean_w = Hd.view(-1), ws.mean_weights
                    V, F, H, Vt, Ht, Hm, Fm = ws.V, ws.F, ws.H, ws.Vt, ws.Ht, ws.Hm, ws.Fm
                    fill_hs, fill_vm = ws.fill_hs, ws.fill_vm
                    scale, signs, ones = ws.model_scale, ws.signs, ws.ones
                if persistent:
                    # First half-sweep from the field kept from the last update (PersistentCD).
                    torch.add(sampler.field, c, out=ph).sigmoid_()
                    Vd.copy_(v_data)
                    fill_hs(generator=gen).lt_(ph)
                else:  # CD: the data's hidden means go straight into H, used twice
                    Vd.copy_(v_data)
                    torch.addmm(c, Vd, W, out=Hd).sigmoid_()
                    fill_hs(generator=gen).lt_(Hd)
                torch.addmm(b, hs, Wt, out=pv).sigmoid_()
                fill_vm(generator=gen).lt_(pv)
                for _ in range(k - 1):
                    torch.addmm(c, Vm, W, out=ph).sigmoid_()
                    fill_hs(generator=gen).lt_(ph)
                    torch.addmm(b, hs, Wt, out=pv).sigmoid_()
                    fill_vm(generator=gen).lt_(pv)
                if persistent:
                    torch.mm(V, W, out=F)  # both hidden fields, before the update
                    torch.add(F, c, out=H).sigmoid_()
                else:
                    torch.addmm(c, Vm, W, out=Hm).sigmoid_()
                if activation is not None and sync is None:  # a dot with 1/(B nh)
                    activation.add_(torch.dot(Hd_flat, mean_w))
                # H = [h_d; -(B/M) h_m]: V^T H = B (data - model).  A 0-d tensor factor: a
                # Python float costs a scalar-to-tensor wrap per call, 1-3 us at this size.
                torch.mul(Hm, scale, out=Hm)
                if sync is not None:
                    # This rank's share of the new momentum buffer, w (momentum buf + wd W)
                    # - (w / B) V^T H, in the views the ranks sum (no momentum: beta=0,
                    # the view is overwritten).
                    a, mw = -weight / B, momentum * weight
                    gW, gb, gc = self._grads
                    gW.addmm_(Vt, H, beta=mw, alpha=a)
                    if wd:
                        gW.add_(W, alpha=wd * weight)
                    gb.addmv_(Vt, signs, beta=mw, alpha=a)
                    gc.addmv_(Ht, ones, beta=mw, alpha=a)
                    self._synced_update(activation, torch.dot(Hd_flat, mean_w) * weight)
                elif bufs is None:
                    a = lr / B
                    W.addmm_(Vt, H, beta=1.0 - lr * wd, alpha=a)
                    b.addmv_(Vt, signs, alpha=a)
                    c.addmv_(Ht, ones, alpha=a)
                else:
                    gW, gb, gc = bufs
                    gW.addmm_(Vt, H, beta=momentum, alpha=-1.0 / B)  # buf = m buf + grad (+ wd W)
                    if wd:
                        gW.add_(W, alpha=wd)
                    gb.addmv_(Vt, signs, beta=momentum, alpha=-1.0 / B)
                    gc.addmv_(Ht, ones, beta=momentum, alpha=-1.0 / B)
                    W.sub_(gW, alpha=lr)
                    b.sub_(gb, alpha=lr)
                    c.sub_(gc, alpha=lr)
                if persistent:
                    sampler.chains, sampler.field = Vm, Fm

    def _synced_update(self, activation: Tensor | None, share: Tensor | float) -> None:
        """Sum the ranks' shares (the new momentum buffer, or the gradient), then step."""
        extra = self.sync.reduce(1.0, [share])
        if activation is not None:
            activation.add_(extra[0])
        torch._foreach_add_((self._W, self._b, self._c), self._grads, alpha=-self.lr)


class _FusedWorkspace:
    """Buffers of :class:`FusedBernoulliSGD` for B data rows and M chains."""

    def __init__(self, B: int, M: int, W: Tensor) -> None:
        nv, nh = W.shape
        kw = {"dtype": W.dtype, "device": W.device}
        self.B, self.M = B, M
        self.V = torch.empty(B + M, nv, **kw)
        self.F = torch.empty(B + M, nh, **kw)
        self.H = torch.empty(B + M, nh, **kw)
        self.Vd, self.Vm = self.V[:B], self.V[B:]
        self.Fm, self.Hd, self.Hm = self.F[B:], self.H[:B], self.H[B:]
        self.Vt, self.Ht = self.V.t(), self.H.t()  # views made once, not per step
        self.ph = torch.empty(M, nh, **kw)
        self.hs = torch.empty(M, nh, **kw)
        self.pv = torch.empty(M, nv, **kw)
        self.model_scale = torch.tensor(-B / M, **kw)
        self.signs = torch.cat([torch.ones(B, **kw), torch.full((M,), -B / M, **kw)])
        self.ones = torch.ones(B + M, **kw)
        self.mean_weights = torch.full((B * nh,), 1.0 / (B * nh), **kw)
        # The draws of boltzkit.units.uniform_ (the general path's), its branch chosen once.
        self.fill_hs, self.fill_vm = uniform_filler(self.hs), uniform_filler(self.Vm)
