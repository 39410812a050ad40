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
- ``"generative"``: maximum likelihood of the joint (x, y): autograd on
  ``mean F(data) - mean F(negative particles)`` with the particles held fixed,
  which is the exact CD/PCD estimator for every units type (the same identity
  :mod:`boltzkit.objectives` uses).  The joint is an ordinary
  :class:`~boltzkit.rbm.RBM` (:attr:`DiscriminativeRBM.joint`: visible layer
  ``ConcatUnits([inputs, labels])``, connection ``StackedConnection([W, U])``,
  sharing this model's parameters), so every sampler (CD, PCD, parallel tempering,
  temperature-driven) draws its negative particles.
- ``"hybrid"``: discriminative + ``alpha`` x generative (the paper: alpha ~ 0.01).

Training runs through the one loop: :class:`DiscriminativeObjective` is the part this
kind brings to :class:`boltzkit.training.Trainer`; batches are (inputs, labels) pairs.

Tensor names in a saved file: ``weights`` (n_visible x n_hidden),
``label_weights`` (n_classes x n_hidden), ``visible_bias``, ``label_bias``,
``hidden_bias``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..connections import DenseConnection, StackedConnection
from ..errors import ConfigError, DataError
from ..model import Model
from ..objectives import Objective, assign_grads
from ..rbm import RBM
from ..units import BernoulliUnits, ConcatUnits, SoftmaxUnits, Units, units_from_config

log = logging.getLogger(__name__)

OBJECTIVES = ("discriminative", "hybrid", "generative")
SAMPLERS = ("cd", "pcd")


class DiscriminativeRBM(Model):
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
        # The joint model over [x, one-hot y] as a plain RBM made of this model's own
        # parts (not a submodule: no second copy of any tensor in state_dict or files).
        object.__setattr__(self, "_joint", RBM(ConcatUnits([visible, self.label]), hidden,
                                               StackedConnection([self.connection,
                                                                  self.label_connection])))

    # --- description -----------------------------------------------------------
    @property
    def joint(self) -> RBM:
        """The RBM of the joint p(x, y) over rows [x, one-hot y], sharing these parameters."""
        return self._joint

    def joint_state(self, x: Tensor, y: Tensor) -> Tensor:
        """Rows [x, one-hot y] of the joint RBM, shape (batch, n_visible + n_classes)."""
        return torch.cat([x, self.one_hot(y)], 1)

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

    # --- the joint model ---------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, steps: int = 1000, generator: torch.Generator | None = None,
               labels: Any = None, return_mean: bool = True, beta: float = 1.0) -> Tensor:
        """Draw ``n`` inputs from the joint by ``steps`` Gibbs sweeps (at inverse temperature
        ``beta``) from random states.

        With ``labels`` (``n`` class indices) the label units stay clamped: class-conditional
        samples of p(x | y).  ``return_mean`` returns E[x | h] of the last sweep (images).
        Returns (n, n_visible).
        """
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
        joint, nv = self.joint, self.n_visible
        mask = values = None
        if labels is not None:
            y = self.one_hot(self.prepare_labels(labels, n))
            values = torch.cat([torch.zeros(n, nv, dtype=self.dtype, device=self.device), y], 1)
            mask = torch.zeros(joint.n_visible, dtype=torch.bool, device=self.device)
            mask[nv:] = True
        v = joint.sample(n, steps, beta, generator=generator, clamp_mask=mask,
                         clamp_values=values, return_mean=return_mean)
        return v[:, :nv]


# ------------------------------------------------------------------------------ training
class DiscriminativeObjective(Objective):
    """The DRBM's part for the training loop: batches are (inputs, labels) pairs.

    ``objective``: "discriminative" (mean -log p(y | x)), "generative" (the joint's
    likelihood, negative particles from the sampler run on :attr:`DiscriminativeRBM.joint`)
    or "hybrid" (discriminative + ``alpha`` x generative).  ``dropout`` drops each hidden
    unit from the discriminative term's sum over h with this probability, per row and
    batch, scaling the kept ones by 1 / (1 - dropout) (Bernoulli hidden units).  The class
    log-odds are linear in the mask, so the unmasked model used at test time gives exactly
    the normalised geometric mean of the dropped-out models' p(y | x).  ``input_dropout``
    likewise zeroes each input value of the discriminative term, scaling the kept ones by
    1 / (1 - input_dropout); the generative term always sees the whole input.
    ``strict=False`` accepts inputs outside the visible units' values (see
    :meth:`DiscriminativeRBM.prepare`).  Monitors: ``val_error`` and ``val_nll`` on the
    validation pairs.  Diagnostics: ``train_loss`` (the objective) and ``train_nll``.
    """

    def __init__(self, objective: str = "discriminative", alpha: float = 0.01,
                 dropout: float = 0.0, input_dropout: float = 0.0, strict: bool = True) -> None:
        if objective not in OBJECTIVES:
            raise ConfigError(f"unknown drbm objective {objective!r}: choose one of "
                              f"{list(OBJECTIVES)}")
        if not (isinstance(alpha, int | float) and alpha >= 0 and math.isfinite(alpha)):
            raise ConfigError(f"alpha must be a finite number >= 0, got {alpha!r}")
        for name, rate in (("dropout", dropout), ("input_dropout", input_dropout)):
            if not 0 <= rate < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {rate!r}")
        self.objective, self.alpha = objective, float(alpha)
        self.dropout, self.input_dropout, self.strict = dropout, input_dropout, strict
        self.use_disc = objective in ("discriminative", "hybrid")
        self.gen_weight = self.alpha if objective == "hybrid" else 1.0
        self.use_gen = objective == "generative" or (objective == "hybrid" and self.alpha > 0)
        self.needs_sampler = self.use_gen

    def prepare(self, model, data, name="data"):
        if not (isinstance(data, tuple | list) and len(data) == 2):
            raise DataError(f"{name}: a drbm trains on (inputs, labels) pairs")
        x = model.prepare(data[0], name, self.strict)
        return x, model.prepare_labels(data[1], x.shape[0], f"{name} labels")

    def setup(self, model, rows, init=True):
        if self.dropout and not isinstance(model.hidden, BernoulliUnits):
            raise ConfigError("drbm dropout needs Bernoulli hidden units")

    def gradient(self, model, batch, sampler, generator):
        x, y = batch
        params = [p for p in model.parameters() if p.requires_grad]
        out: dict[str, Tensor] = {}
        with torch.enable_grad():
            field = model.hidden_field(x)
            loss = field.new_zeros(())
            if self.use_disc:
                mask, disc_field = None, field
                if self.input_dropout:
                    kept = torch.rand(x.shape, generator=generator, device=x.device,
                                      dtype=x.dtype) >= self.input_dropout
                    disc_field = model.hidden_field(x * kept / (1.0 - self.input_dropout))
                if self.dropout:
                    keep = torch.rand(x.shape[0], model.n_hidden, generator=generator,
                                      device=x.device, dtype=x.dtype) >= self.dropout
                    mask = keep.to(x.dtype) / (1.0 - self.dropout)
                nll = model.discriminative_loss(x, y, disc_field, mask)
                out["train_nll"] = nll.detach()
                loss = loss + nll
            if self.use_gen:
                joint, state = model.joint, model.joint_state(x, y)
                with torch.no_grad():
                    # the joint's hidden field of the data: W x (already here) + U y
                    jfield = field.detach() + model.label_connection(model.one_hot(y))
                    negative, _ = sampler.negative(joint, state, jfield, generator)
                gen = (joint.free_energy(state, field=field + model.label_connection(
                    model.one_hot(y))).mean() - joint.free_energy(negative.detach()).mean())
                loss = loss + self.gen_weight * gen
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        assign_grads(params, grads)
        out["train_loss"] = loss.detach()
        return out

    @torch.no_grad()
    def monitor(self, model, train, val):
        if val is None:
            return {}
        from ..metrics.evaluate import classification_scores

        err, nll = classification_scores(model, *val)
        return {"val_error": err, "val_nll": nll}


def drbm_trainer(model: DiscriminativeRBM, objective: DiscriminativeObjective,
                 sampler: Any = None, *, val: bool = False, patience: int | None = None,
                 test: tuple[Any, Any] | None = None, trainer_factory=None, **options):
    """The Trainer of a DRBM: model selection on validation pairs (``val_error``, then
    ``val_nll``), the test pairs recorded each epoch, no visible-bias initialisation.

    ``trainer_factory`` (default :class:`~boltzkit.training.Trainer`) is called as
    ``factory(model, sampler, objective, **options)``.
    """
    from ..metrics.evaluate import ClassificationMonitor
    from ..training import Trainer

    callbacks = list(options.pop("callbacks", ()))
    if test is not None:
        callbacks.append(ClassificationMonitor(test[0], np.asarray(test[1]), "test"))
    factory = Trainer if trainer_factory is None else trainer_factory
    return factory(model, sampler, objective, callbacks=callbacks, monitor_size=0,
                   init_visible_bias=False, best_by=("val_error", "val_nll") if val else None,
                   patience=patience if val else None, **options)


def fit_drbm(model: DiscriminativeRBM, x: Any, y: Any, *, objective: str = "discriminative",
             alpha: float = 0.01, epochs: int = 10, batch_size: int = 100, lr: float = 0.05,
             optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0,
             lr_schedule: str = "constant", lr_final_factor: float = 0.01,
             k: int = 1, sampler: str = "cd", seed: int = 0,
             val: tuple[Any, Any] | None = None, test: tuple[Any, Any] | None = None,
             patience: int | None = None, restore_best: bool = True, strict: bool = True,
             dropout: float = 0.0, input_dropout: float = 0.0, average_from: int = 0,
             callback: Callable[[dict], None] | None = None, **trainer_options) -> list[dict]:
    """Train ``model`` in place through :class:`~boltzkit.training.Trainer`; returns the history.

    The parts are :class:`DiscriminativeObjective` and, for the generative term, the
    sampler ``sampler`` ("cd", "pcd", "pt" or "tds", ``k`` sweeps) on the joint RBM.  Each
    record has ``epoch``, ``time``, ``train_loss``, ``train_nll`` (where computed) and,
    given ``val`` / ``test`` (inputs, labels), ``val_error``, ``val_nll``, ``test_error``,
    ``test_nll``.  With ``val`` the parameters of the epoch with the lowest validation
    error (ties: NLL) are restored at the end (``restore_best``; the last record then
    also holds ``best_epoch`` and that epoch's ``best_val_error``, ...) and training stops
    after ``patience`` epochs without improvement (None: never).  ``test`` is only
    recorded, never used for a decision.  ``average_from`` (> 0): the mean of the
    parameters after every step from that epoch on is what the scores see, what
    ``restore_best`` keeps and what the model ends with.  Other keyword arguments go to
    the Trainer (e.g. ``checkpoint_dir``).
    """
    from ..sampling import make_sampler

    obj = DiscriminativeObjective(objective, alpha, dropout, input_dropout, strict)
    sampler_ = make_sampler(sampler, k) if obj.needs_sampler else None
    callbacks = list(trainer_options.pop("callbacks", ()))
    if callback is not None:
        callbacks.append(lambda trainer, record: callback(record))
    trainer = drbm_trainer(model, obj, sampler_, val=val is not None, patience=patience,
                           test=test, epochs=epochs, batch_size=batch_size, lr=lr,
                           optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
                           lr_schedule=lr_schedule, lr_final_factor=lr_final_factor, seed=seed,
                           average_from=average_from, restore_best=restore_best,
                           progress=trainer_options.pop("progress", False), callbacks=callbacks,
                           **trainer_options)
    return trainer.fit((x, y), None if val is None else tuple(val))


# ------------------------------------------------------------------------------ the CLI
def _labels_or_error(labels: Any, split: str, n: int) -> np.ndarray:
    if labels is None:
        raise DataError(f"the {split} split has no labels: a drbm needs a labelled data set "
                        "(e.g. --dataset mnist or digits, or an .npz file with 'y')")
    arr = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if arr.shape != (n,):
        raise DataError(f"the {split} split has {arr.shape} labels for {n} rows")
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{split} labels must be integers, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise DataError(f"{split} labels must be >= 0, found {int(arr.min())}")
    return arr


def train_from_config(run) -> tuple[DiscriminativeRBM, list[dict]]:
    """``boltzkit train --model drbm``: the DRBM's objective through the one loop."""
    from .rbm import units_from_options

    x, labels, tx, tl = run.splits()
    x = torch.as_tensor(x, dtype=torch.float32)
    y = _labels_or_error(labels, "train", x.shape[0])
    n_classes = max(int(y.max()) + 1, 2)
    test = None if tx is None else (torch.as_tensor(tx, dtype=torch.float32),
                                    _labels_or_error(tl, "test", len(tx)))
    n_val = int(run["drbm_val_size"] or 0)
    val = None
    if n_val:
        if not 0 < n_val < x.shape[0]:
            raise ConfigError(f"drbm_val_size {n_val} must be smaller than the {x.shape[0]} "
                              "training rows (or 0 for no validation set)")
        val = (x[-n_val:], y[-n_val:])
        x, y = x[:-n_val], y[:-n_val]
    visible, hidden = units_from_options(run.cfg, x.shape[1])
    gen = torch.Generator().manual_seed(int(run["seed"]))
    model = DiscriminativeRBM(x.shape[1], n_classes, hidden.n, visible, hidden,
                              init_std=float(run["init_std"]), generator=gen).to(run.device)
    objective = DiscriminativeObjective(run["drbm_objective"], run["drbm_alpha"],
                                        run["drbm_dropout"], run["drbm_input_dropout"])
    sampler = run.sampler() if objective.needs_sampler else None
    trainer = drbm_trainer(model, objective, sampler, val=val is not None,
                           patience=int(run["drbm_patience"] or 0) or None, test=test,
                           trainer_factory=run.trainer)
    return model, run.fit(trainer, (x, y), val)
