"""The buffered AIS annealing pass of a dense Bernoulli-Bernoulli RBM.

Chosen by :func:`boltzkit.kernels.plan_anneal`; tested against the general pass.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from .. import precision
from ..rbm import RBM
from ..units import uniform_filler


def anneal_bernoulli(rbm: RBM, v: Tensor, betas: list[float], d: Tensor,
                      generator: torch.Generator | None, bar=None) -> tuple[Tensor, Tensor]:
    """The AIS annealing pass of a dense Bernoulli-Bernoulli RBM on preallocated buffers.

    The same weights and the same draws in the same order (``uniform_`` and a
    compare, as the units' ``sample``); the biases ride in the GEMMs (``addmm``) and
    the hidden field at beta 1 is formed once per step, so only float rounding differs
    from the general loop (``tests/test_metrics_likelihood.py`` compares the two).  Under
    mixed precision (:func:`boltzkit.precision.computing`) the two products per step take
    bfloat16 operands, as :func:`boltzkit.precision.mm` does; the log-weights stay float64.
    """
    W = rbm.connection.weights.detach()
    b_v, c = rbm.visible.bias.detach(), rbm.hidden.bias.detach()
    b_a = d + b_v  # the base model's visible bias
    n, (nv, nh) = v.shape[0], W.shape
    kw = {"dtype": W.dtype, "device": W.device}
    field, h = torch.empty(n, nh, **kw), torch.empty(n, nh, **kw)
    both = torch.empty(2, n, nh, **kw)  # the activations at beta_k and beta_{k-1}
    tmp = both[0]
    pv = torch.empty(n, nv, **kw)
    v = v.to(**kw).clone()
    fill_h, fill_v = uniform_filler(h), uniform_filler(v)
    log_w = torch.zeros(n, dtype=torch.float64, device=W.device)
    # (beta_k, beta_{k-1}) of every step as a (2, 1, 1) factor: one mul, softplus and sum
    # give both log-partitions
    pairs = torch.tensor(betas, **kw).unfold(0, 2, 1).flip(1).reshape(-1, 2, 1, 1)
    sp, Wt, last = F.softplus, W.t(), len(betas) - 1
    low = precision.gemm_dtype() if W.dtype == torch.float32 else None
    if low is not None:
        Wl = W.to(low)
        Wlt, lk = Wl.t(), {"dtype": low, "device": W.device}
        vl, pvl = torch.empty(n, nv, **lk), torch.empty(n, nv, **lk)
        hl, fl = torch.empty(n, nh, **lk), torch.empty(n, nh, **lk)
    for k in range(1, last + 1):
        bk, bp = betas[k], betas[k - 1]
        if low is None:
            torch.addmm(c, v, W, out=field)  # bias + hidden field, at beta = 1
        else:
            torch.add(torch.mm(vl.copy_(v), Wl, out=fl), c, out=field)
        # log f_k(v) - log f_{k-1}(v), as in the general pass
        lp = sp(torch.mul(field, pairs[k - 1], out=both)).sum(2)
        step = torch.sub(lp[0], lp[1])
        if bk != bp:
            step.sub_(torch.mv(v, d), alpha=bk - bp)
        log_w += step
        if k < last:
            torch.mul(field, bk, out=tmp).sigmoid_()
            fill_h(generator=generator).lt_(tmp)
            # beta (b_v + h W^T) + (1 - beta) b_a, the general loop's visible activation
            if low is None:
                torch.addmm(b_v, h, Wt, out=pv)
            else:
                torch.add(torch.mm(hl.copy_(h), Wlt, out=pvl), b_v, out=pv)
            pv.mul_(bk).add_(b_a, alpha=1.0 - bk).sigmoid_()
            fill_v(generator=generator).lt_(pv)
        if bar is not None and k % 256 == 0:  # metrics.ais.PROGRESS_EVERY
            bar.update(256)
    return log_w, v
