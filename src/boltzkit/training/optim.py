"""Optimizers and learning-rate schedules for the one training loop.

``make_optimizer`` turns "sgd", "adam", any ``torch.optim.Optimizer`` subclass or a
factory into an optimizer over a model's parameters, L2 weight decay on the weight
matrices only (parameters whose name ends in ``weights``; biases and variances are
not decayed).  ``make_scheduler`` does the same for per-epoch learning-rate schedules.
Every training path (the Trainer, the scikit-learn estimators, DBN fine-tuning) builds
its optimizer here, so an option means the same everywhere and is never ignored.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "linear", "exponential", "cosine", "power")

#: What ``optimizer=`` may be: a name, an Optimizer subclass, or ``f(param_groups)``.
OptimizerSpec = str | type | Callable[..., torch.optim.Optimizer]
#: What ``lr_schedule=`` may be: a name, an LRScheduler subclass (``cls(optimizer)``) or
#: ``f(optimizer)`` returning one.
ScheduleSpec = str | type | Callable[..., Any]

DEFAULT_LR = 0.01
#: Names of the parameters weight decay acts on (ends of ``named_parameters`` names).
DECAYED = ("weights", "weight", "couplings", "lateral")


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """[decayed, everything else]: L2 acts on the interactions only: weight matrices
    (parameters named ``...weights``, or ``...weight`` as in ``torch.nn.Linear``) and
    lateral couplings (``...couplings``, ``...lateral``); biases and variances are not
    decayed."""
    decayed, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decayed if name.endswith(DECAYED) else plain).append(p)
    groups = [{"params": decayed, "weight_decay": weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, spec: OptimizerSpec = "sgd", lr: float | None = None,
                   momentum: float = 0.0, weight_decay: float = 0.0,
                   betas: tuple[float, float] | None = None) -> torch.optim.Optimizer:
    """An optimizer over ``model``'s trainable parameters.

    ``spec``: "sgd" (:class:`LeanSGD`, torch's SGD rule), "adam" (``betas``, default
    ``(momentum or 0.9, 0.999)``), a ``torch.optim.Optimizer`` subclass (called with the
    parameter groups, ``lr`` and, where it takes them, ``momentum``/``betas``), or any
    other callable ``f(param_groups)`` that returns an optimizer with its own settings.
    Options the chosen optimizer cannot take are refused, never dropped.
    """
    if not isinstance(weight_decay, int | float) or not weight_decay >= 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if not 0 <= momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), got {momentum!r}")
    if betas is not None:
        if (len(betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1
                                       for b in betas)):
            raise ConfigError(f"adam betas must be two numbers in [0, 1), got {betas!r}")
        betas = (float(betas[0]), float(betas[1]))
    is_class = isinstance(spec, type) and issubclass(spec, torch.optim.Optimizer)
    if isinstance(spec, str) or is_class:
        lr = DEFAULT_LR if lr is None else lr
        if not (isinstance(lr, int | float) and lr > 0 and math.isfinite(lr)):
            raise ConfigError(f"learning rate must be a positive number, got {lr!r}")
    groups = param_groups(model, weight_decay)
    if not groups:
        raise ConfigError("the model has no trainable parameters")
    if isinstance(spec, str):
        if spec == "sgd":
            if betas is not None:
                raise ConfigError("adam betas (--adam-betas) apply to --optimizer adam, not sgd")
            return LeanSGD(groups, lr=lr, momentum=momentum)
        if spec == "adam":
            return torch.optim.Adam(groups, lr=lr, betas=betas or (momentum or 0.9, 0.999))
        raise ConfigError(f"unknown optimizer {spec!r}: choose one of {list(OPTIMIZERS)}, or "
                          "pass a torch.optim.Optimizer class or factory (Python API)")
    if not callable(spec):
        raise ConfigError(f"optimizer must be a name, a torch.optim.Optimizer class or a "
                          f"factory, got {type(spec).__name__}")
    name = getattr(spec, "__name__", type(spec).__name__)
    if not is_class:
        if lr is not None or momentum or betas is not None:
            raise ConfigError(f"the optimizer factory {name} sets its own learning rate and "
                              "momentum: drop lr/momentum/betas, or pass the class instead")
        opt = _call(spec, groups, {}, weight_decay, name)
        if not isinstance(opt, torch.optim.Optimizer):
            raise ConfigError(f"the optimizer factory {name} returned a "
                              f"{type(opt).__name__}, not a torch.optim.Optimizer")
        if weight_decay and any("weight_decay" not in g for g in opt.param_groups):
            raise ConfigError(f"{name} has no weight_decay: drop weight_decay")
        return opt
    kwargs: dict[str, Any] = {"lr": lr}
    for key, value, off in (("momentum", momentum, 0.0), ("betas", betas, None)):
        if value != off:
            if not _accepts(spec, key):
                raise ConfigError(f"{name} takes no {key}: drop it")
            kwargs[key] = value
    if weight_decay and not _accepts(spec, "weight_decay"):
        raise ConfigError(f"{name} has no weight_decay: drop weight_decay")
    return _call(spec, groups, kwargs, weight_decay, name)


def _call(spec, groups: list[dict], kwargs: dict, weight_decay: float, name: str):
    try:
        return spec(groups, **kwargs)
    except ValueError as exc:
        if "per-parameter options" not in str(exc) or weight_decay:
            raise ConfigError(f"{name}: {exc}") from None
        # e.g. LBFGS: one group only (no decay to tell the groups apart)
        return spec([p for g in groups for p in g["params"]], **kwargs)


def make_scheduler(optimizer: torch.optim.Optimizer, spec: ScheduleSpec = "constant",
                   epochs: int = 1, final: float = 0.01, power: float = 1.0):
    """A per-epoch learning-rate schedule (stepped once per epoch), or None for "constant".

    Names: "linear" (to ``final`` x lr at the last epoch), "exponential" (factor
    ``final ** (1/epochs)`` per epoch), "cosine" (to ``final`` x lr), "power"
    (lr / (1 + t)^``power`` after t epochs: the power-law decay of the BEAM paper).
    A ``torch.optim.lr_scheduler.LRScheduler`` subclass is called as ``cls(optimizer)``
    (use a factory such as ``lambda opt: StepLR(opt, 10)`` to pass its settings).
    """
    n = max(int(epochs), 1)
    if isinstance(spec, str):
        if spec == "constant":
            return None
        if spec not in SCHEDULES:
            raise ConfigError(f"unknown lr schedule {spec!r}: choose one of {list(SCHEDULES)}, "
                              "or pass an LRScheduler class or factory (Python API)")
        lrs = torch.optim.lr_scheduler
        if spec == "power":
            if not (power > 0 and math.isfinite(power)):
                raise ConfigError(f"lr_power must be > 0, got {power!r}")
            return lrs.LambdaLR(optimizer, _PowerDecay(power))
        if not (0 < final <= 1 or (final == 0 and spec == "cosine")):
            raise ConfigError(f"lr_final_factor must be in (0, 1] ([0, 1] for cosine), got "
                              f"{final}")
        if spec == "linear":
            return lrs.LinearLR(optimizer, 1.0, final, total_iters=n)
        if spec == "exponential":
            return lrs.ExponentialLR(optimizer, final ** (1.0 / n))
        return lrs.CosineAnnealingLR(optimizer, n, eta_min=optimizer.defaults["lr"] * final)
    if not callable(spec):
        raise ConfigError(f"lr_schedule must be a name, an LRScheduler class or a factory, "
                          f"got {type(spec).__name__}")
    sched = spec(optimizer)
    if not callable(getattr(sched, "step", None)) or not callable(
            getattr(sched, "state_dict", None)):
        raise ConfigError(f"the lr schedule factory returned a {type(sched).__name__}, not a "
                          "torch.optim.lr_scheduler.LRScheduler")
    return sched


class _PowerDecay:
    """lr factor 1 / (1 + t)^power after t epochs (a picklable callable for LambdaLR)."""

    def __init__(self, power: float) -> None:
        self.power = float(power)

    def __call__(self, epoch: int) -> float:
        return (1.0 + epoch) ** -self.power


class LeanSGD(torch.optim.SGD):
    """``torch.optim.SGD`` with a cheaper ``step`` for the plain rule (no Nesterov,
    dampening, ``maximize`` or tensor learning rate; those take the parent's step).

    The update is the parent's, op for op (``buf = momentum * buf + (grad + wd * p)``;
    ``p -= lr * buf``), with one ``torch._foreach_*`` call per operation for all of a
    group's parameters instead of the parent's per-step bookkeeping, so results, state
    dicts and checkpoints are those of ``torch.optim.SGD``.
    """

    def add_param_group(self, param_group):  # noqa: D102 - the parent's contract
        # torch.optim wraps add_param_group in torch._disable_dynamo, whose first call
        # imports torch._dynamo (1.2-1.5 s, once per process: most of the first fit of
        # a small scikit-learn pipeline) only to keep torch.compile from tracing it.
        # Outside torch.compile the wrapped function is the whole behaviour: call it.
        plain = getattr(torch.optim.Optimizer.add_param_group, "__wrapped__", None)
        if plain is None or torch.compiler.is_compiling():
            return super().add_param_group(param_group)
        return plain(self, param_group)

    def step(self, closure=None):  # noqa: D102 - the parent's contract
        groups = self.param_groups
        if closure is not None or any(
                g["nesterov"] or g["dampening"] or g.get("maximize") or g.get("differentiable")
                or isinstance(g["lr"], Tensor) for g in groups):
            return super().step(closure)
        # Groups that differ only in weight decay (the Trainer's weights / biases) share
        # one foreach call per operation: (lr, momentum) -> (params, d_p).
        buckets: dict[tuple[float, float], tuple[list, list]] = {}
        with torch.no_grad():
            for g in groups:
                params = [p for p in g["params"] if p.grad is not None]
                if not params:
                    continue
                grads = [p.grad for p in params]
                if g["weight_decay"]:
                    grads = torch._foreach_add(grads, params, alpha=g["weight_decay"])
                ps, ds = buckets.setdefault((g["lr"], g["momentum"]), ([], []))
                ps += params
                ds += grads
            for (lr, momentum), (params, grads) in buckets.items():
                if momentum:
                    bufs = [self.state[p].get("momentum_buffer") for p in params]
                    if any(b is None for b in bufs):
                        for i, p in enumerate(params):
                            if bufs[i] is None:
                                bufs[i] = self.state[p]["momentum_buffer"] = (
                                    grads[i].detach().clone())
                            else:
                                bufs[i].mul_(momentum).add_(grads[i])
                    else:
                        torch._foreach_mul_(bufs, momentum)
                        torch._foreach_add_(bufs, grads)
                    grads = bufs
                torch._foreach_add_(params, grads, alpha=-lr)
        return None
