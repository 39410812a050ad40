"""Discriminative and hybrid discriminative RBMs (Larochelle & Bengio, 2008).

A ``DiscriminativeRBM`` models the joint p(y, x) of an input x and a class y
with one hidden layer h connected to both: the visible units (any boltzkit
units type, Bernoulli by default) through weights W and a softmax group of
``n_classes`` one-hot label units (bias d) through weights U::

    E(x, y, h) = E_v(x) - d . y + E_h(h) - c_v(x)^T W c_h(h) - y^T U c_h(h)

It is composed from the same parts as :class:`boltzkit.RBM`: ``visible``
(:class:`~boltzkit.units.Units`), ``label`` (:class:`~boltzkit.units.SoftmaxUnits`
with one group of ``n_classes``), ``hidden`` and two
:class:`~boltzkit.connections.DenseConnection` objects.  Summing h out gives
the free energy F(x, y) = E_v(x) - d_y - log_partition_h(c_v(x) W + U_y), so
the class posterior is exact and cheap::

    log p(y | x) = -F(x, y) - logsumexp_y' -F(x, y')

(E_v(x) cancels; for Bernoulli hidden units log_partition_h is a sum of
softplus terms).  All classes are scored at once as a (batch, classes,
hidden) field, with no Python loop per sample or class.

Objectives (``objective=``):

- ``"discriminative"``: mean -log p(y | x); autograd on the closed form gives
  its exact gradient.
- ``"generative"``: maximum likelihood of the joint (x, y) by CD-k or PCD-k:
  autograd on ``mean F(data) - mean F(negative particles)`` with the particles
  held fixed, which is the exact CD/PCD estimator for every units type (the
  same identity :mod:`boltzkit.objectives` uses).  The boltzkit samplers take
  an RBM with a single visible layer, so the joint block-Gibbs chain over
  (x, y) is the small :meth:`DiscriminativeRBM.gibbs` here.
- ``"hybrid"``: discriminative + ``alpha`` x generative (the paper: alpha ~ 0.01).

Tensor names in a saved file: ``weights`` (n_visible x n_hidden),
``label_weights`` (n_classes x n_hidden), ``visible_bias``, ``label_bias``,
``hidden_bias``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..connections import DenseConnection
from ..errors import ConfigError, DataError, TrainingDiverged
from ..training import ParameterAverage
from ..units import BernoulliUnits, SoftmaxUnits, Units, make_units, units_from_config

log = logging.getLogger(__name__)

OBJECTIVES = ("discriminative", "hybrid", "generative")
SAMPLERS = ("cd", "pcd")


class DiscriminativeRBM(nn.Module):
    """An RBM over (x, one-hot y) with an exact, batched class posterior p(y | x)."""

    def __init__(self, n_visible: int, n_classes: int, n_hidden: int,
                 visible: Units | None = None, hidden: Units | None = None,
                 init_std: float = 0.01, generator: torch.Generator | None = None) -> None:
        super().__init__()
        for name, value, low in (("n_visible", n_visible, 1), ("n_classes", n_classes, 2),
                                 ("n_hidden", n_hidden, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (init_std >= 0 and math.isfinite(init_std)):
            raise ConfigError(f"init_std must be a finite number >= 0, got {init_std!r}")
        visible = BernoulliUnits(n_visible) if visible is None else visible
        hidden = BernoulliUnits(n_hidden) if hidden is None else hidden
        if (visible.n, hidden.n) != (n_visible, n_hidden):
            raise ConfigError(f"layers have {visible.n} visible and {hidden.n} hidden units, "
                              f"expected {n_visible} and {n_hidden}")
        self.n_classes = n_classes
        self.init_std = float(init_std)
        self.visible = visible
        self.label = SoftmaxUnits(n_classes, group_size=n_classes)
        self.hidden = hidden
        self.connection = DenseConnection(n_visible, n_hidden, init_std, generator)
        self.label_connection = DenseConnection(n_classes, n_hidden, init_std, generator)

    # --- description -----------------------------------------------------------
    @property
    def n_visible(self) -> int:
        return self.visible.n

    @property
    def n_hidden(self) -> int:
        return self.hidden.n

    @property
    def device(self) -> torch.device:
        return self.visible.bias.device

    @property
    def dtype(self) -> torch.dtype:
        return self.visible.bias.dtype

    def config(self) -> dict:
        """JSON description that, with the tensors, rebuilds the model."""
        return {"model": "drbm", "n_classes": self.n_classes, "visible": self.visible.config(),
                "hidden": self.hidden.config(), "init_std": self.init_std}

    @classmethod
    def from_config(cls, cfg: dict) -> DiscriminativeRBM:
        if cfg.get("model") != "drbm":
            raise ConfigError(f"config describes a {cfg.get('model')!r}, not a drbm")
        vis, hid = units_from_config(cfg["visible"]), units_from_config(cfg["hidden"])
        return cls(vis.n, int(cfg["n_classes"]), hid.n, vis, hid,
                   init_std=float(cfg.get("init_std", 0.01)))

    # --- input checks ------------------------------------------------------------
    def prepare(self, x: Any, name: str = "data", strict: bool = True) -> Tensor:
        """Inputs as a tensor on the model's device/dtype, checked against the visible layer.

        ``strict=False`` checks only the shape and finiteness, not the units' value range:
        p(y | x) does not involve the visible energy, so it is defined for any real x
        (fractional [0, 1] inputs also make sense for the generative term's statistics).
        """
        if not isinstance(x, Tensor):
            x = torch.as_tensor(np.asarray(x))
        x = x.to(device=self.device, dtype=self.dtype)
        if strict:
            self.visible.validate(x, name)
        else:
            Units.validate(self.visible, x, name)
        return x

    def prepare_labels(self, y: Any, n: int | None = None, name: str = "labels") -> Tensor:
        """Integer class indices in [0, n_classes) as int64; DataError otherwise."""
        arr = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
        if arr.ndim != 1:
            raise DataError(f"{name} must be a 1-D array of class indices, got shape "
                            f"{arr.shape}")
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"{name} must be integer class indices 0..{self.n_classes - 1}, "
                            f"got dtype {arr.dtype}: map the classes to integers first")
        if n is not None and arr.shape[0] != n:
            raise DataError(f"{name} has {arr.shape[0]} entries but the data has {n} rows: "
                            "pass one label per sample")
        if arr.size and (arr.min() < 0 or arr.max() >= self.n_classes):
            bad = arr[(arr < 0) | (arr >= self.n_classes)][0]
            raise DataError(f"{name} contain {int(bad)}, outside 0..{self.n_classes - 1}: this "
                            f"model has {self.n_classes} classes")
        return torch.as_tensor(arr.astype(np.int64), device=self.device)

    def one_hot(self, y: Tensor) -> Tensor:
        """One-hot label states (batch, n_classes) from class indices (or pass-through)."""
        if y.ndim == 2:
            return y.to(self.dtype)
        return nn.functional.one_hot(y, self.n_classes).to(self.dtype)

    # --- energies and the class posterior ---------------------------------------------
    def hidden_field(self, x: Tensor) -> Tensor:
        """Input to the hidden layer from x alone (no label, no hidden bias)."""
        return self.connection(self.visible.coupling(x))

    def free_energy(self, x: Tensor, y: Tensor, field: Tensor | None = None) -> Tensor:
        """F(x, y) = -log sum_h exp(-E(x, y, h)); y as indices or one-hot rows, (batch,).

        ``field`` is :meth:`hidden_field` of ``x`` when the caller already has it.
        """
        y1 = self.one_hot(y)
        if field is None:
            field = self.hidden_field(x)
        field = field + self.label_connection(y1)
        return self.visible.energy(x) + self.label.energy(y1) - self.hidden.log_partition(field)

    def class_logits(self, x: Tensor, field: Tensor | None = None,
                     hidden_mask: Tensor | None = None) -> Tensor:
        """-F(x, y) + E_v(x) for every class y, shape (batch, n_classes).

        Differences between columns are exact log-odds: the softmax over classes is p(y | x).
        ``hidden_mask`` (batch, n_hidden) weights each hidden unit's term of the sum over h
        (dropout; Bernoulli hidden units only): 0 drops the unit for that row.
        """
        if field is None:
            field = self.hidden_field(x)
        per_class = field.unsqueeze(1) + self.label_connection.weights.unsqueeze(0)
        if hidden_mask is None:
            return self.label.bias + self.hidden.log_partition(per_class)
        if not isinstance(self.hidden, BernoulliUnits):
            raise ConfigError("hidden dropout needs Bernoulli hidden units")
        terms = nn.functional.softplus(self.hidden.activation(per_class))
        return self.label.bias + (terms * hidden_mask.unsqueeze(1)).sum(-1)

    def discriminative_loss(self, x: Tensor, y: Tensor, field: Tensor | None = None,
                            hidden_mask: Tensor | None = None) -> Tensor:
        """Mean -log p(y | x) over the batch (y: class indices)."""
        return nn.functional.cross_entropy(self.class_logits(x, field, hidden_mask), y)

    @torch.no_grad()
    def predict_log_proba(self, x: Any, batch_size: int = 1000, strict: bool = True) -> Tensor:
        """log p(y | x) for every class, shape (n, n_classes)."""
        x = self.prepare(x, strict=strict)
        return torch.cat([torch.log_softmax(self.class_logits(b), dim=1)
                          for b in x.split(batch_size)])

    def predict_proba(self, x: Any, batch_size: int = 1000, strict: bool = True) -> Tensor:
        """p(y | x), shape (n, n_classes); rows sum to one."""
        return self.predict_log_proba(x, batch_size, strict).exp()

    def predict(self, x: Any, batch_size: int = 1000, strict: bool = True) -> Tensor:
        """The most probable class index for each row."""
        return self.predict_log_proba(x, batch_size, strict).argmax(1)

    @torch.no_grad()
    def error_rate(self, x: Any, y: Any, batch_size: int = 1000,
                   strict: bool = True) -> tuple[float, float]:
        """(classification error, mean -log p(y | x)) on a labelled set."""
        x = self.prepare(x, strict=strict)
        y = self.prepare_labels(y, x.shape[0])
        lp = self.predict_log_proba(x, batch_size, strict)
        err = float((lp.argmax(1) != y).double().mean())
        nll = float(-lp.gather(1, y[:, None]).double().mean())
        return err, nll

    # --- the joint model: Gibbs chain and generative objective ---------------------
    @torch.no_grad()
    def gibbs(self, x: Tensor, y: Tensor, steps: int = 1,
              generator: torch.Generator | None = None,
              field: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``steps`` block-Gibbs sweeps (x, y) -> h -> (x, y) of the joint; y one-hot.

        ``field`` is :meth:`hidden_field` of the starting ``x`` when the caller has it
        (used by the first sweep only).
        """
        y = self.one_hot(y)
        for step in range(steps):
            vis_field = self.hidden_field(x) if step or field is None else field.detach()
            field_h = vis_field + self.label_connection(y)
            h = self.hidden.coupling(self.hidden.sample(field_h, generator=generator))
            x = self.visible.sample(self.connection.transpose(h), generator=generator)
            y = self.label.sample(self.label_connection.transpose(h), generator=generator)
        return x, y

    @torch.no_grad()
    def sample(self, n: int, steps: int = 1000, generator: torch.Generator | None = None,
               labels: Any = None, return_mean: bool = True) -> Tensor:
        """Draw ``n`` inputs from the joint by ``steps`` Gibbs sweeps from random states.

        With ``labels`` (``n`` class indices) the label units stay clamped: class-conditional
        samples of p(x | y).  ``return_mean`` returns E[x | h] of the last sweep (images).
        """
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
        x = self.visible.init_state(n, generator)
        if labels is None:
            y = self.label.init_state(n, generator)
            y_fixed = None
        else:
            y_fixed = self.one_hot(self.prepare_labels(labels, n))
            y = y_fixed
        for _ in range(steps):
            field = self.hidden_field(x) + self.label_connection(y)
            h = self.hidden.coupling(self.hidden.sample(field, generator=generator))
            vis_field = self.connection.transpose(h)
            x = self.visible.sample(vis_field, generator=generator)
            if y_fixed is None:
                y = self.label.sample(self.label_connection.transpose(h), generator=generator)
        return self.visible.mean(vis_field) if return_mean else x

    def generative_loss(self, x: Tensor, y: Tensor, x_neg: Tensor, y_neg: Tensor,
                        field: Tensor | None = None) -> Tensor:
        """Surrogate whose gradient is the CD/PCD estimate of -d log p(x, y) / d theta.

        ``field``: :meth:`hidden_field` of the data ``x`` if already computed (saves a pass).
        """
        return (self.free_energy(x, y, field).mean()
                - self.free_energy(x_neg.detach(), y_neg.detach()).mean())

    def parameters_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.parameters())


# ------------------------------------------------------------------------------ training
def fit_drbm(model: DiscriminativeRBM, x: Any, y: Any, *, objective: str = "discriminative",
             alpha: float = 0.01, epochs: int = 10, batch_size: int = 100, lr: float = 0.05,
             optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0,
             lr_schedule: str = "constant", lr_final_factor: float = 0.01,
             k: int = 1, sampler: str = "cd", seed: int = 0,
             val: tuple[Any, Any] | None = None, test: tuple[Any, Any] | None = None,
             patience: int | None = None, restore_best: bool = True, strict: bool = True,
             dropout: float = 0.0, input_dropout: float = 0.0, average_from: int = 0,
             callback: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` in place by minibatch gradient descent; returns per-epoch history.

    Each record has ``epoch``, ``time``, ``train_loss`` (the objective's mean over the
    epoch's batches) and ``train_nll`` (mean -log p(y|x) on the batches, where computed),
    plus ``val_error``/``val_nll`` and ``test_error``/``test_nll`` when those sets are
    given.  With ``val``, the parameters of the epoch with the lowest validation error
    (ties: lowest validation NLL) are restored at the end (``restore_best``; the last
    record then also holds ``best_epoch`` and that epoch's ``best_val_error``,
    ``best_test_error``, ...) and
    training stops after ``patience`` epochs without improvement (None: never).
    ``strict=False`` accepts inputs outside the visible units' values (see
    :meth:`DiscriminativeRBM.prepare`).
    ``weight_decay`` is L2 on the two weight matrices only.  ``dropout`` drops each hidden
    unit from the discriminative term's sum over h with this probability, per row and batch,
    scaling the kept ones by 1 / (1 - dropout) ("inverted" dropout, Bernoulli hidden units).
    The class log-odds are linear in the mask, so the unmasked model used at test time
    gives exactly the normalised geometric mean of the dropped-out models' p(y | x).
    ``input_dropout`` likewise zeroes each input value of the discriminative term with
    this probability, scaling the kept ones by 1 / (1 - input_dropout) (so the hidden
    field keeps its mean); the generative term always sees the whole input.
    ``lr_schedule`` decays the learning rate per epoch as in
    :class:`boltzkit.training.Trainer` ("constant", "linear" or "cosine" to
    ``lr_final_factor`` x lr, "exponential" by ``lr_final_factor**(1/epochs)``).
    ``average_from`` (> 0): from that epoch on the mean of the parameters after every
    step (:class:`~boltzkit.training.ParameterAverage`) is what each epoch's validation and
    test scores see, what ``restore_best`` keeps and, without ``val``, what the model ends
    with; training itself continues from the live parameters.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown drbm objective {objective!r}: choose one of "
                          f"{list(OBJECTIVES)}")
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown drbm sampler {sampler!r}: choose one of {list(SAMPLERS)}")
    for name, value, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1), ("k", k, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ConfigError(f"patience must be an integer >= 1 or None, got {patience!r}")
    if (not isinstance(average_from, int) or isinstance(average_from, bool)
            or not 0 <= average_from <= epochs):
        raise ConfigError(f"average_from must be an epoch 1..{epochs} (0: no averaging), "
                          f"got {average_from!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"learning rate must be a positive number, got {lr!r}")
    if not (alpha >= 0 and math.isfinite(alpha)):
        raise ConfigError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if not 0 <= momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), got {momentum!r}")
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
    if dropout and not isinstance(model.hidden, BernoulliUnits):
        raise ConfigError("drbm dropout needs Bernoulli hidden units")
    if not 0 <= input_dropout < 1:
        raise ConfigError(f"input_dropout must be in [0, 1), got {input_dropout!r}")
    x = model.prepare(x, "training data", strict)
    y = model.prepare_labels(y, x.shape[0], "training labels")
    sets = {}
    for key, pair in (("val", val), ("test", test)):
        if pair is not None:
            sx = model.prepare(pair[0], f"{key} data", strict)
            sets[key] = (sx, model.prepare_labels(pair[1], sx.shape[0], f"{key} labels"))
    decayed = [model.connection.weights, model.label_connection.weights]
    plain = [p for p in model.parameters() if all(p is not d for d in decayed)]
    groups = [{"params": decayed, "weight_decay": weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum)
    elif optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=lr, betas=(momentum or 0.9, 0.999))
    else:
        raise ConfigError(f"unknown optimizer {optimizer!r}: choose 'sgd' or 'adam'")
    sched = _scheduler(opt, lr_schedule, lr_final_factor, max(epochs, 1))
    gen = torch.Generator(device=model.device).manual_seed(seed)
    use_disc = objective in ("discriminative", "hybrid")
    gen_weight = alpha if objective == "hybrid" else 1.0
    use_gen = objective == "generative" or (objective == "hybrid" and alpha > 0)
    chains: tuple[Tensor, Tensor] | None = None
    n = x.shape[0]
    n_batches = math.ceil(n / batch_size)
    history: list[dict] = []
    best: tuple[float, float] | None = None
    best_state: dict[str, Tensor] | None = None
    best_epoch, stale = 0, 0
    params = list(model.parameters())
    averager = ParameterAverage()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        averaging = bool(average_from) and epoch >= average_from
        perm = torch.randperm(n, generator=gen, device=model.device)
        total = torch.zeros((), dtype=torch.float64)
        total_nll = torch.zeros((), dtype=torch.float64)
        for i in range(n_batches):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            field = model.hidden_field(xb)
            loss = field.new_zeros(())
            if use_disc:
                mask, disc_field = None, field
                if input_dropout:
                    kept = torch.rand(xb.shape, generator=gen, device=model.device,
                                      dtype=model.dtype) >= input_dropout
                    disc_field = model.hidden_field(xb * kept / (1.0 - input_dropout))
                if dropout:
                    keep = torch.rand(xb.shape[0], model.n_hidden, generator=gen,
                                      device=model.device, dtype=model.dtype) >= dropout
                    mask = keep.to(model.dtype) / (1.0 - dropout)
                nll = model.discriminative_loss(xb, yb, disc_field, mask)
                total_nll += nll.detach()
                loss = loss + nll
            if use_gen:
                if sampler == "pcd":
                    if chains is None or chains[0].shape[0] != xb.shape[0]:
                        chains = (xb, model.one_hot(yb))
                    start = chains
                else:
                    start = (xb, model.one_hot(yb))
                # CD starts at the data, whose hidden field is already computed
                xn, yn = model.gibbs(start[0], start[1], k, gen,
                                     field=field if sampler == "cd" else None)
                if sampler == "pcd":
                    chains = (xn, yn)
                loss = loss + gen_weight * model.generative_loss(xb, yb, xn, yn, field)
            opt.zero_grad(set_to_none=False)
            loss.backward()
            opt.step()
            if averaging:
                averager.update(params)
            total += loss.detach()
        if not model.parameters_finite() or not math.isfinite(float(total)):
            raise TrainingDiverged(
                f"drbm parameters became NaN/inf in epoch {epoch}: lower the learning rate "
                "(--lr), alpha (--drbm-alpha) or add weight decay")
        record: dict[str, Any] = {"epoch": epoch, "time": time.perf_counter() - t0,
                                  "lr": opt.param_groups[0]["lr"],
                                  "train_loss": float(total) / n_batches}
        if sched is not None:
            sched.step()
        if use_disc:
            record["train_nll"] = float(total_nll) / n_batches
        if averaging:
            record["averaged_steps"] = averager.n
        with averager.applied(params):  # the scores (and a kept best) see the mean
            for key, (sx, sy) in sets.items():
                err, nll = model.error_rate(sx, sy, strict=strict)
                record[f"{key}_error"], record[f"{key}_nll"] = err, nll
            history.append(record)
            if callback is not None:
                callback(record)
            improved = False
            if "val" in sets:
                score = (record["val_error"], record["val_nll"])
                if best is None or score < best:
                    best, best_epoch, stale, improved = score, epoch, 0, True
                    best_state = copy.deepcopy(model.state_dict())
        if "val" in sets and not improved:
            stale += 1
            if patience is not None and stale >= patience:
                log.info("drbm: no validation improvement for %d epochs, stopping", stale)
                break
    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
        chosen = history[best_epoch - 1]
        history[-1].update({f"best_{k}": chosen[k] for k in
                            ("epoch", "val_error", "val_nll", "test_error", "test_nll")
                            if k in chosen})
    else:
        averager.copy_to(params)
    return history


def _scheduler(opt: torch.optim.Optimizer, name: str, final: float, n: int):
    sched = torch.optim.lr_scheduler
    if name == "constant":
        return None
    if name not in ("linear", "exponential", "cosine"):
        raise ConfigError(f"unknown lr schedule {name!r}: choose constant, linear, exponential "
                          "or cosine")
    if not 0 < final <= 1:
        raise ConfigError(f"lr_final_factor must be in (0, 1], got {final}")
    if name == "linear":
        return sched.LinearLR(opt, 1.0, final, total_iters=n)
    if name == "exponential":
        return sched.ExponentialLR(opt, final ** (1.0 / n))
    return sched.CosineAnnealingLR(opt, n, eta_min=opt.defaults["lr"] * final)


# ------------------------------------------------------------------------------ the CLI
TRAIN_OPTIONS: dict[str, tuple[object, str]] = {
    "drbm_objective": ("discriminative", "drbm: discriminative | hybrid | generative"),
    "drbm_alpha": (0.01, "drbm: weight of the generative term in the hybrid objective"),
    "drbm_sampler": ("cd", "drbm: negative phase of the generative term, cd | pcd (uses --k)"),
    "drbm_val_size": (10000, "drbm: hold out the last N training rows for validation / "
                             "early stopping (0: none)"),
    "drbm_patience": (0, "drbm: stop after N epochs without validation improvement (0: never)"),
    "drbm_dropout": (0.0, "drbm: drop each hidden unit from the discriminative term with "
                          "this probability (training only)"),
    "drbm_input_dropout": (0.0, "drbm: drop each input value from the discriminative term "
                                "with this probability (training only)"),
}


def _labels_or_error(labels: Any, split: str, n: int) -> np.ndarray:
    if labels is None:
        raise DataError(f"the {split} split has no labels: a drbm needs a labelled data set "
                        "(e.g. --dataset mnist or digits, or an .npz file with 'y')")
    arr = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if arr.shape != (n,):
        raise DataError(f"the {split} split has {arr.shape} labels for {n} rows")
    return arr


def train_from_config(cfg: dict, load: Callable[[str], tuple[Any, Any]],
                      quiet: bool = False) -> tuple[DiscriminativeRBM, list[dict]]:
    """Train a drbm from a resolved ``boltzkit train`` config (see :data:`TRAIN_OPTIONS`)."""
    x, labels = load("train")
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(f"training data must be a non-empty 2-D array, got {tuple(x.shape)}")
    y = _labels_or_error(labels, "train", x.shape[0])
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"training labels must be integers, got dtype {y.dtype}")
    if y.min() < 0:
        raise DataError(f"training labels must be >= 0, found {int(y.min())}")
    n_classes = max(int(y.max()) + 1, 2)
    try:
        tx, tl = load("test")
        test = (torch.as_tensor(tx, dtype=torch.float32),
                _labels_or_error(tl, "test", len(tx)))
    except DataError:
        test = None
    n_val = int(cfg.get("drbm_val_size") or 0)
    val = None
    if n_val:
        if not 0 < n_val < x.shape[0]:
            raise ConfigError(f"drbm_val_size {n_val} must be smaller than the {x.shape[0]} "
                              "training rows (or 0 for no validation set)")
        val = (x[-n_val:], y[-n_val:])
        x, y = x[:-n_val], y[:-n_val]
    vis_opts: dict[str, Any] = {}
    if cfg.get("visible") == "gaussian":
        vis_opts = {"std": cfg.get("visible_std", 1.0),
                    "learn_variance": bool(cfg.get("learn_variance"))}
    if cfg.get("group_size") and cfg.get("visible") == "softmax":
        vis_opts = {"group_size": int(cfg["group_size"])}
    seed = int(cfg.get("seed") or 0)
    gen = torch.Generator().manual_seed(seed)
    model = DiscriminativeRBM(
        x.shape[1], n_classes, int(cfg["n_hidden"]),
        visible=make_units(cfg.get("visible", "bernoulli"), x.shape[1], **vis_opts),
        hidden=make_units(cfg.get("hidden", "bernoulli"), int(cfg["n_hidden"])),
        init_std=float(cfg.get("init_std", 0.01)), generator=gen)
    device = cfg.get("device") or "cpu"
    model = model.to(device)

    def show(rec: dict) -> None:
        if not quiet:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in rec.items()), flush=True)

    history = fit_drbm(
        model, x, y, objective=cfg.get("drbm_objective", "discriminative"),
        alpha=float(cfg.get("drbm_alpha", 0.01)), epochs=int(cfg["epochs"]),
        batch_size=int(cfg["batch_size"]), lr=float(cfg["lr"]),
        optimizer=cfg.get("optimizer", "sgd"), momentum=float(cfg.get("momentum", 0.0)),
        weight_decay=float(cfg.get("weight_decay", 0.0)),
        lr_schedule=cfg.get("lr_schedule", "constant"),
        lr_final_factor=float(cfg.get("lr_final_factor", 0.01)), k=int(cfg.get("k", 1)),
        sampler=cfg.get("drbm_sampler", "cd"), seed=seed, val=val, test=test,
        patience=int(cfg.get("drbm_patience") or 0) or None,
        dropout=float(cfg.get("drbm_dropout") or 0.0),
        input_dropout=float(cfg.get("drbm_input_dropout") or 0.0),
        average_from=int(cfg.get("average_from") or 0), callback=show)
    if history and "best_epoch" in history[-1]:
        show({k: v for k, v in history[-1].items() if k.startswith("best_")})
    return model, history


MODEL_CLASSES = {"drbm": DiscriminativeRBM}
