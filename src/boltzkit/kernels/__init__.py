"""Fused fast paths, chosen in one place.

A kernel here does exactly what the general code does (the same update, the same
random draws in the same order; only float rounding differs) with fewer, larger torch
calls.  Callers never pick one themselves: they ask the planner once with the parts they
have, and take the general path when it answers None.

* :func:`plan_step`: the fused CD-k/PCD-k + SGD step of a dense Bernoulli RBM
  (:class:`~boltzkit.kernels.fused.FusedBernoulliSGD`), used by the Trainer (and so by
  every estimator and model kind that trains through it).
* :func:`plan_anneal`: the buffered annealing pass of AIS for the same models
  (:func:`~boltzkit.kernels.ais.anneal_bernoulli`).

Every test of "is this the plain case" lives in this module: which classes, which
optimizer rules, which torch internals (optimizer hooks).  Each kernel is tested
against the general path it replaces (tests/test_fused_step.py,
tests/test_metrics_likelihood.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..connections import DenseConnection
from ..rbm import RBM
from ..units import BernoulliUnits
from .fused import FusedBernoulliSGD

__all__ = ["FusedBernoulliSGD", "is_dense_bernoulli", "plan_anneal", "plan_step"]


def is_dense_bernoulli(rbm: object) -> bool:
    """Exactly an :class:`RBM` of Bernoulli units on a dense connection (no subclass).

    The models the kernels serve; anything else, subclasses included (they may override
    any field or conditional), takes the general path.
    """
    return (type(rbm) is RBM and type(rbm.visible) is BernoulliUnits
            and type(rbm.hidden) is BernoulliUnits and type(rbm.connection) is DenseConnection)


def _plain_sgd_rule(optimizer, params: tuple[Tensor, ...]) -> tuple[float, float] | None:
    """(momentum, weight decay of the weights) when ``optimizer`` applies torch's plain SGD
    rule to exactly ``params`` (weights first, biases undecayed, one lr), else None."""
    if not isinstance(optimizer, torch.optim.SGD):
        return None
    # Hooks would run around optimizer.step(), which the fused step does not call.
    if optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks:
        return None
    rule = {}
    for g in optimizer.param_groups:
        if (g["nesterov"] or g["dampening"] or g.get("maximize") or g.get("differentiable")
                or isinstance(g["lr"], Tensor)):
            return None
        for p in g["params"]:
            rule[p] = (g["lr"], g["momentum"], g["weight_decay"])
    if len(rule) != len(params) or any(p not in rule for p in params):
        return None
    lr, momentum, wd = rule[params[0]]
    if any(rule[p] != (lr, momentum, 0.0) for p in params[1:]):
        return None
    return float(momentum), float(wd)


def plan_step(model, sampler, objective, optimizer, generator: torch.Generator | None = None,
              sync=None, low: torch.dtype | None = None) -> FusedBernoulliSGD | None:
    """The fused training step for these parts, or None where it would not be the same update.

    It applies to a dense Bernoulli-Bernoulli :class:`RBM` trained by plain CD-k, PCD-k or
    scikit-learn's hidden-state PCD-k (the last in one process) with the plain likelihood
    gradient (either ``model_norm``; no sparsity, no centering, not forced onto
    autograd) and SGD (any momentum; weight decay on the weights only).  ``sync``: the
    data-parallel gradient sum (:class:`boltzkit.distributed.GradientSync`).  ``low``: the
    GEMM dtype of mixed precision (float32 models, boltzkit's own chains only).
    """
    from ..objectives import LikelihoodGradient
    from ..sampling import ContrastiveDivergence, HiddenPersistentCD, PersistentCD

    hidden = type(sampler) is HiddenPersistentCD
    if not (is_dense_bernoulli(model)
            and type(sampler) in (ContrastiveDivergence, PersistentCD, HiddenPersistentCD)
            and type(objective) is LikelihoodGradient and objective.fast_path(model)
            and not objective.centering and not objective.sparsity_cost
            and not (hidden and sync is not None)
            and not (low is not None and (hidden or model.dtype != torch.float32))):
        return None
    params = (model.connection.weights, model.visible.bias, model.hidden.bias)
    if not all(p.requires_grad for p in params) or len(list(model.parameters())) != 3:
        return None
    rule = _plain_sgd_rule(optimizer, params)
    if rule is None:
        return None
    if sync is not None and ({id(p) for p in sync.params} != {id(p) for p in params}
                             or sync.n_extra < 1):
        return None
    momentum, wd = rule
    return FusedBernoulliSGD(model, sampler, optimizer, generator, momentum, wd,
                             persistent=type(sampler) is PersistentCD, sync=sync,
                             hidden_chains=hidden, model_norm=objective.model_norm, low=low)


def plan_anneal(model) -> Callable | None:
    """The buffered AIS annealing pass for ``model``, or None (take the general pass)."""
    if not is_dense_bernoulli(model):
        return None
    from .ais import anneal_bernoulli

    return anneal_bernoulli
