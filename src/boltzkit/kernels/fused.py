"""The fused training step of the plain case: dense Bernoulli RBM, CD-k/PCD-k, SGD.

Chosen by :func:`boltzkit.kernels.plan_step`, never built directly by the loop.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..rbm import RBM
from ..units import uniform_filler


class FusedBernoulliSGD:
    """The whole training step of the plain case fused: CD-k/PCD-k, likelihood, SGD.

    For a dense Bernoulli-Bernoulli :class:`RBM` trained by
    :class:`~boltzkit.sampling.ContrastiveDivergence`,
    :class:`~boltzkit.sampling.PersistentCD` or
    :class:`~boltzkit.sampling.HiddenPersistentCD` (scikit-learn's hidden-state chains,
    ``hidden_chains``) with a plain :class:`LikelihoodGradient` (either ``model_norm``)
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
    and a compare; for hidden-state chains the sampler's own ``uniforms``), the
    persistent chains kept in the sampler as before (visible states and their hidden
    field, or hidden states, so the two paths can take turns and
    checkpoints are unchanged), the hyperparameters and momentum buffers read
    from and written to the optimizer; only float rounding differs
    (``tests/test_fused_step.py`` checks both against each other).  The planner
    (:func:`boltzkit.kernels.plan_step`) returns None whenever any part is not the plain
    one, and the caller keeps the general path.  Each ``run`` reads the learning rate
    and the sampler's k then (schedules change them between passes).

    Mixed precision (``low``, the GEMM dtype of :mod:`boltzkit.precision`): every product
    takes a low-precision copy of W (renewed after each update) and of the states, and its
    result meets the float32 biases in one add, as the general path does it under
    :func:`boltzkit.precision.computing`; W, the biases, momentum and draws stay float32.

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
                 generator: torch.Generator | None, momentum: float,
                 weight_decay: float, persistent: bool, sync=None, hidden_chains: bool = False,
                 model_norm: str = "particles", low: torch.dtype | None = None) -> None:
        if hidden_chains and (persistent or sync is not None):
            raise ValueError("hidden_chains is its own kind of persistence, in one process")
        if low is not None and (hidden_chains or rbm.connection.weights.dtype != torch.float32):
            raise ValueError("the mixed-precision step is for float32 models and boltzkit's "
                             "chains")
        self.low = low  # the GEMM operands' dtype (mixed precision), or None
        self.rbm, self.sampler, self.generator = rbm, sampler, generator
        self.optimizer, self.sync = optimizer, sync
        self.momentum, self.weight_decay = momentum, weight_decay
        self.persistent, self.hidden_chains = persistent, hidden_chains
        self.rows_norm = model_norm == "rows"  # LikelihoodGradient's model_norm
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
        # The compiled elementwise loops of the bfloat16 step (kernels.native), on the CPU
        # in one process; None: the torch calls below.
        self.native = None
        if (low is torch.bfloat16 and sync is None and not hidden_chains
                and self._W.device.type == "cpu"):
            from . import native

            self.native = native.load()
        self._Wl: Tensor | None = None  # the low-precision copy of W (mixed precision)
        self._WT: tuple[Tensor, Tensor, Tensor] | None = None  # (see _steps_native)
        self._last: _FusedWorkspace | None = None
        self._grads: tuple[Tensor, Tensor, Tensor] | None = None
        if sync is not None:
            views = {id(p): view for p, view in zip(sync.params, sync.views, strict=True)}
            self._grads = tuple(views[id(p)] for p in params)

    @property
    def gathers(self) -> bool:
        """Whether ``run`` takes :class:`IndexedRows` batches (the compiled pass gathers)."""
        return self.native is not None

    def _workspace(self, B: int, M: int, W: Tensor) -> _FusedWorkspace:
        ws = self._ws.get((B, M))
        if ws is None:
            ws = self._ws[(B, M)] = _FusedWorkspace(B, M, W, 1.0 if self.rows_norm else B / M,
                                                    wide_visible_step=self.rows_norm,
                                                    low=self.low)
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

    def _steps(self, batches: Iterable, activation: Tensor | None,
               native: bool = True) -> None:
        if native and self.native is not None:
            return self._steps_native(batches, activation)
        sampler, gen, rbm, sync = self.sampler, self.generator, self.rbm, self.sync
        W, b, c, Wt = self._W, self._b, self._c, self._Wt
        # The learning rate and k are read per pass: schedules change them between epochs.
        lr = float(self.optimizer.param_groups[0]["lr"])
        wd, momentum, bufs, persistent, k = (self.weight_decay, self.momentum, self.bufs,
                                             self.persistent, sampler.k)
        hidden, low = self.hidden_chains, self.low
        nv, nh = W.shape
        weight = 1.0
        ws = None  # the first batch binds the workspace (and its buffers) below
        # This step applies the optimizer's rule without calling its step(), which torch's
        # lr schedulers would otherwise take for a wrong call order and warn about.
        self.optimizer._opt_called = True
        # Inference mode skips the autograd dispatch, ~10% of a step at this size;
        # buffers and chains are made outside it (they must stay normal tensors).
        with torch.inference_mode():
            if low is not None:
                # Mixed precision: the GEMMs take a low-precision copy of W, renewed after
                # every update (and here: W may have changed between passes), and low
                # copies of the states; products come back in the GEMM dtype and meet
                # the float32 biases in one add, as boltzkit.precision.mm does it.
                with torch.inference_mode(False):
                    if self._Wl is None:
                        self._Wl = torch.empty_like(W, dtype=low)
                Wl = self._Wl
                Wl.copy_(W)
                Wlt = Wl.t()
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
                                sampler.chains = sampler.start(rbm, v_data, gen)
                            # (in the caller's precision block, as the general path)
                            sampler.field = rbm.hidden_field(sampler.chains)
                    M = sampler.chains.shape[0]
                elif hidden:
                    if sampler.chains is None:
                        with torch.inference_mode(False):
                            sampler.chains = sampler.start(rbm, v_data)
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
                    sv, sv64, b64 = ws.sv, ws.sv64, ws.b64
                    scale, signs, ones = ws.model_scale, ws.signs, ws.ones
                    if low is not None:
                        Vl, Vdl, Vml, Fl, Fdl, Fml = ws.Vl, ws.Vdl, ws.Vml, ws.Fl, ws.Fdl, ws.Fml
                        Hl, hsl, pvl, G, G32, Vlt = ws.Hl, ws.hsl, ws.pvl, ws.G, ws.G32, ws.Vlt
                if hidden:
                    # HiddenPersistentCD: its uniforms (one NumPy call), compared in float64
                    # with the probabilities: v from the chains, k - 1 more sweeps, the
                    # model's hidden means and, from them, the chains' next hidden states.
                    u = sampler.uniforms(M, nv, nh, W.device)
                    Vd.copy_(v_data)
                    torch.addmm(c, Vd, W, out=Hd).sigmoid_()
                    torch.addmm(b, sampler.chains, Wt, out=pv).sigmoid_()
                    torch.lt(u[0], pv, out=Vm)
                    for i in range(1, 2 * k - 1, 2):
                        torch.addmm(c, Vm, W, out=ph).sigmoid_()
                        torch.lt(u[i], ph, out=hs)
                        torch.addmm(b, hs, Wt, out=pv).sigmoid_()
                        torch.lt(u[i + 1], pv, out=Vm)
                    torch.addmm(c, Vm, W, out=Hm).sigmoid_()
                    torch.lt(u[-1], Hm, out=hs)
                elif persistent:
                    # First half-sweep from the field kept from the last update (PersistentCD).
                    torch.add(sampler.field, c, out=ph).sigmoid_()
                    Vd.copy_(v_data)
                    fill_hs(generator=gen).lt_(ph)
                else:  # CD: the data's hidden means go straight into H, used twice
                    Vd.copy_(v_data)
                    if low is None:
                        torch.addmm(c, Vd, W, out=Hd).sigmoid_()
                    else:
                        torch.mm(Vdl.copy_(Vd), Wl, out=Fdl)
                        torch.add(Fdl, c, out=Hd).sigmoid_()
                    fill_hs(generator=gen).lt_(Hd)
                if not hidden:
                    for i in range(k):
                        if i:
                            if low is None:
                                torch.addmm(c, Vm, W, out=ph).sigmoid_()
                            else:
                                torch.mm(Vml.copy_(Vm), Wl, out=Fml)
                                torch.add(Fml, c, out=ph).sigmoid_()
                            fill_hs(generator=gen).lt_(ph)
                        if low is None:
                            torch.addmm(b, hs, Wt, out=pv).sigmoid_()
                        else:
                            torch.mm(hsl.copy_(hs), Wlt, out=pvl)
                            torch.add(pvl, b, out=pv).sigmoid_()
                        fill_vm(generator=gen).lt_(pv)
                if persistent:
                    # both hidden fields, before the update
                    if low is None:
                        torch.mm(V, W, out=F)
                        torch.add(F, c, out=H).sigmoid_()
                    else:
                        torch.mm(Vl.copy_(V), Wl, out=Fl)
                        Fm.copy_(Fml)
                        torch.add(Fl, c, out=H).sigmoid_()
                elif not hidden:
                    if low is None:
                        torch.addmm(c, Vm, W, out=Hm).sigmoid_()
                    else:
                        torch.mm(Vml.copy_(Vm), Wl, out=Fml)
                        torch.add(Fml, c, out=Hm).sigmoid_()
                if activation is not None and sync is None:  # a dot with 1/(B nh)
                    activation.add_(torch.dot(Hd_flat, mean_w))
                # H = [h_d; -w h_m], w = B/M (or 1, model_norm="rows"): V^T H = B (data -
                # model).  A 0-d tensor factor: a Python float costs a scalar-to-tensor
                # wrap per call, 1-3 us at this size.
                torch.mul(Hm, scale, out=Hm)
                if low is not None:
                    # V^T H in the GEMM dtype (the states' low copies are current: the
                    # chains' from the last sweep, the data's from above)
                    torch.mm(Vlt, Hl.copy_(H), out=G)
                if sync is not None:
                    # This rank's share of the new momentum buffer, w (momentum buf + wd W)
                    # - (w / B) V^T H, in the views the ranks sum (no momentum: beta=0,
                    # the view is overwritten).
                    a, mw = -weight / B, momentum * weight
                    gW, gb, gc = self._grads
                    if low is None:
                        gW.addmm_(Vt, H, beta=mw, alpha=a)
                    elif mw:
                        gW.mul_(mw).add_(G32.copy_(G), alpha=a)
                    else:
                        torch.mul(G32.copy_(G), a, out=gW)
                    if wd:
                        gW.add_(W, alpha=wd * weight)
                    gb.addmv_(Vt, signs, beta=mw, alpha=a)
                    gc.addmv_(Ht, ones, beta=mw, alpha=a)
                    self._synced_update(activation, torch.dot(Hd_flat, mean_w) * weight)
                elif bufs is None:
                    a = lr / B
                    if low is None:
                        W.addmm_(Vt, H, beta=1.0 - lr * wd, alpha=a)
                    else:
                        if wd:
                            W.mul_(1.0 - lr * wd)
                        W.add_(G32.copy_(G), alpha=a)
                    if b64 is None:
                        b.addmv_(Vt, signs, alpha=a)
                    else:
                        # model_norm="rows" below float64: the visible bias steps in float64,
                        # rounded once into b, as scikit-learn's float32 fit does it (its sums
                        # of 0/1 states are integers), whose results it reproduces so.
                        torch.mv(Vt, signs, out=sv)
                        b64.copy_(b).add_(sv64.copy_(sv), alpha=a)
                        b.copy_(b64)
                    c.addmv_(Ht, ones, alpha=a)
                else:
                    gW, gb, gc = bufs
                    # buf = m buf + grad (+ wd W)
                    if low is None:
                        gW.addmm_(Vt, H, beta=momentum, alpha=-1.0 / B)
                    else:
                        gW.mul_(momentum).add_(G32.copy_(G), alpha=-1.0 / B)
                    if wd:
                        gW.add_(W, alpha=wd)
                    gb.addmv_(Vt, signs, beta=momentum, alpha=-1.0 / B)
                    gc.addmv_(Ht, ones, beta=momentum, alpha=-1.0 / B)
                    W.sub_(gW, alpha=lr)
                    b.sub_(gb, alpha=lr)
                    c.sub_(gc, alpha=lr)
                if low is not None:
                    Wl.copy_(W)
                if persistent:
                    sampler.chains, sampler.field = Vm, Fm
                elif hidden:
                    sampler.chains = hs

    def _steps_native(self, batches: Iterable, activation: Tensor | None) -> None:
        """``_steps`` under bfloat16 through the compiled pass of :mod:`.native`: the same
        products, the same draws (keyed by the same words of the generator, in the same
        order) and the same update, with each sigmoid-and-draw and the weight step one
        loop, and no Python between the calls of a run of batches.

        For the pass the weights live transposed, W^T (n_hidden, n_visible) with its
        momentum and its bfloat16 copy: the hidden fields are then ``V (W^T)^T``, the
        visible fields ``h W^T`` and the weight gradient ``(H^T) V`` (H^T written so by
        the sampling loop), layouts whose bfloat16 GEMMs run about a third faster here
        than ``V^T H`` on row-major states; the model's W and the optimizer's momentum are
        written back when the pass ends.  Batches whose buffers are too small for the
        bulk draws (:func:`boltzkit.units.bulk_uniform`) take the torch calls.
        """
        from ..units import bulk_uniform
        from .native import empty

        nat, sampler, gen, rbm = self.native, self.sampler, self.generator, self.rbm
        W, b, c, bufs = self._W, self._b, self._c, self.bufs
        persistent, k = self.persistent, sampler.k
        nv, nh = W.shape
        e32 = empty(torch.float32)
        lr = float(self.optimizer.param_groups[0]["lr"])
        if self._WT is None:
            self._WT = (torch.empty(nh, nv), torch.empty(nh, nv) if bufs else e32,
                        torch.empty(nh, nv, dtype=torch.bfloat16))
        WT, bufT, WlT = self._WT
        gb, gc = (bufs[1], bufs[2]) if bufs else (e32, e32)
        act = activation if activation is not None else e32
        entered = False

        def enter() -> None:
            nat.transpose_copy(W, WT)
            WlT.copy_(WT)
            if bufs:
                nat.transpose_copy(bufs[0], bufT)

        def leave() -> None:
            nat.transpose_copy(WT, W)
            if bufs:
                nat.transpose_copy(bufT, bufs[0])

        def flush(group: list) -> None:
            nonlocal entered
            B = group[0].shape[0]
            rows = e32
            if isinstance(group[0], IndexedRows):  # (the same rows for every batch of a pass)
                rows = group[0].rows
                indexed = [g.idx for g in group]
            if persistent and sampler.field is None:
                if entered:
                    leave()
                    entered = False
                with torch.inference_mode(False), torch.no_grad():  # (the caller's precision)
                    if sampler.chains is None:
                        sampler.chains = sampler.start(rbm, _rows(group[0]), gen)
                    sampler.field = rbm.hidden_field(sampler.chains)
            M = sampler.chains.shape[0] if persistent else B
            with torch.inference_mode(False):
                ws = self._workspace(B, M, W)
            if not (bulk_uniform(ws.hs) and bulk_uniform(ws.Vm)):
                if entered:  # the torch calls read and write the model's W
                    leave()
                    entered = False
                return self._steps([_rows(g) for g in group], activation, native=False)
            if not entered:
                enter()
                entered = True
            keys = torch.empty(len(group) * 2 * k, dtype=torch.int64)
            keys.random_(-(2**63), None, generator=gen)  # draw_key's words, in one call
            buffers = [ws.V, ws.Vl, ws.Fl, ws.HlT, ws.hsl, ws.pvl, ws.GT, ws.F]
            field = sampler.field if persistent else e32
            nat.bernoulli_pass(indexed if rows.numel() else group, keys, WT, bufT, WlT, b, c,
                               gb, gc, buffers, field, persistent, k, lr, self.momentum,
                               self.weight_decay, -float(ws.model_scale), ws.b64 is not None,
                               act, rows)
            if persistent:
                sampler.chains, sampler.field = ws.Vm, ws.Fm

        self.optimizer._opt_called = True  # (see _steps)
        group: list[Tensor] = []
        try:
            with torch.inference_mode():
                for v_data in batches:
                    if isinstance(v_data, Tensor) and v_data.requires_grad:
                        v_data = v_data.detach()
                    if group and (v_data.shape[0] != group[0].shape[0] or len(group) == 32
                                  or type(v_data) is not type(group[0])):
                        flush(group)
                        group = []
                    group.append(v_data)
                if group:
                    flush(group)
        finally:
            if entered:
                with torch.inference_mode():
                    leave()

    def _synced_update(self, activation: Tensor | None, share: Tensor | float) -> None:
        """Sum the ranks' shares (the new momentum buffer, or the gradient), then step."""
        extra = self.sync.reduce(1.0, [share])
        if activation is not None:
            activation.add_(extra[0])
        lr = float(self.optimizer.param_groups[0]["lr"])
        torch._foreach_add_((self._W, self._b, self._c), self._grads, alpha=-lr)


class IndexedRows:
    """A batch given as ``rows[idx]`` (rows: (n, n_visible) float32 on the CPU, idx: int64):
    the compiled pass gathers it straight into its buffers; ``shape`` is the batch's."""

    __slots__ = ("rows", "idx", "shape")

    def __init__(self, rows: Tensor, idx: Tensor) -> None:
        self.rows, self.idx = rows, idx.contiguous()
        self.shape = (idx.numel(), rows.shape[1])


def _rows(batch) -> Tensor:
    return batch.rows.index_select(0, batch.idx) if isinstance(batch, IndexedRows) else batch


class _FusedWorkspace:
    """Buffers of :class:`FusedBernoulliSGD` for B data rows and M chains whose statistics
    weigh ``model_weight`` each (a data row: 1); ``wide_visible_step``: below float64, step
    the visible bias in float64 (scikit-learn's rounding, for model_norm="rows")."""

    def __init__(self, B: int, M: int, W: Tensor, model_weight: float,
                 wide_visible_step: bool = False, low: torch.dtype | None = None) -> None:
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
        self.model_scale = torch.tensor(-model_weight, **kw)
        self.signs = torch.cat([torch.ones(B, **kw), torch.full((M,), -model_weight, **kw)])
        self.ones = torch.ones(B + M, **kw)
        self.mean_weights = torch.full((B * nh,), 1.0 / (B * nh), **kw)
        # the visible bias's step, and both in float64 (below float64, when asked)
        self.sv = torch.empty(nv, **kw)
        wide = wide_visible_step and W.dtype != torch.float64
        self.sv64 = torch.empty(nv, dtype=torch.float64, device=W.device) if wide else None
        self.b64 = torch.empty(nv, dtype=torch.float64, device=W.device) if wide else None
        if low is not None:  # the GEMM operands and products in the low dtype
            lk = {"dtype": low, "device": W.device}
            self.Vl, self.Fl, self.Hl = (torch.empty(B + M, n, **lk) for n in (nv, nh, nh))
            self.Vdl, self.Vml = self.Vl[:B], self.Vl[B:]
            self.Fdl, self.Fml = self.Fl[:B], self.Fl[B:]
            self.Vlt = self.Vl.t()
            self.hsl, self.pvl = torch.empty(M, nh, **lk), torch.empty(M, nv, **lk)
            # V^T H: the GEMM's low-precision product, and in float32 (one cast: a
            # mixed-dtype update would convert it inside every pass that reads it)
            self.G, self.G32 = torch.empty(nv, nh, **lk), torch.empty(nv, nh, **kw)
        if low is torch.bfloat16:  # the compiled step's transposed products
            self.HlT = torch.empty(nh, B + M, dtype=low, device=W.device)
            self.GT = torch.empty(nh, nv, dtype=low, device=W.device)
        # The draws of boltzkit.units.uniform_ (the general path's), its branch chosen once.
        self.fill_hs, self.fill_vm = uniform_filler(self.hs), uniform_filler(self.Vm)
