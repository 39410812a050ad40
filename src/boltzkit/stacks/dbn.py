"""Deep belief networks: stacks of RBMs trained greedily, then fine-tuned as classifiers.

A :class:`DBN` is a list of any boltzkit :class:`~boltzkit.rbm.RBM` objects whose
sizes chain (layer ``i``'s hidden layer is layer ``i + 1``'s visible layer).
Heterogeneous stacks are first-class: a Gaussian-Bernoulli bottom layer under
Bernoulli layers, ReLU hidden units, ... each layer keeps its own units.

Training is greedy and layer-wise (Hinton, Osindero & Teh 2006): layer ``i`` is
trained by the ordinary :class:`~boltzkit.training.Trainer` (any sampler, the
likelihood objective, per-layer settings) on the *hidden means* E[h | x] of the
layer below.  Bernoulli visible units of upper layers therefore see
probabilities in [0, 1] rather than bits; the CD/PCD gradient and the free
energy are linear in ``v`` for Bernoulli units, so this is the usual
mean-field treatment, and only the 0/1 data check is relaxed to [0, 1] while
such a layer trains.

Generation runs Gibbs sampling in the top RBM and one down pass through the
lower layers' p(x | h) (samples in between, means at the bottom).
:meth:`DBN.to_classifier` turns the stack into a :class:`DBNClassifier`
(``torch.nn.Module``: one linear layer per RBM, initialised from its weights,
followed by the hidden units' mean function -- a sigmoid for Bernoulli units --
and a softmax head); :func:`fine_tune` trains it by backprop.

**Residual DBN** (``residual=True``): Roder, Passos, Ribeiro, Pereira & Papa,
"A Layer-Wise Information Reinforcement Approach to Improve Learning in Deep
Belief Networks" (ICAISC 2020), as in learnergy's ``ResidualDBN``.  The input
that layer ``i`` passes up is::

    x_next = normalise(z1 * E[h | x] + z2 * normalise(relu(b + field(x))))

where ``b + field`` is the pre-activation of the hidden units and
``normalise`` divides by a maximum.  learnergy divides by the maximum over the
whole tensor it has at hand (the full training set while fitting, the batch at
inference), so a sample's features depend on the other rows; here the maximum
is taken **per sample** (row), which keeps the transform deterministic for a
given input, keeps every value in [0, 1] for the next layer and gives the same
result whatever the batch.  Residual stacks need hidden units with non-negative
means (Bernoulli, sigmoid, ReLU, softmax).  The down pass used for generation
ignores the residual term (the residual DBN is a feature extractor; its
generative model is the plain stack's).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..model import Model
from ..objectives import LikelihoodGradient, Objective, assign_grads
from ..rbm import RBM
from ..sampling import make_sampler
from ..training import Trainer
from ..units import BernoulliUnits, GaussianUnits, Units, make_units, units_from_config

log = logging.getLogger(__name__)

#: Per-layer training settings and their defaults (keys of ``DBN.fit``'s ``settings``).
LAYER_DEFAULTS: dict[str, Any] = {
    "method": "cd", "k": 1, "chains": None, "n_temperatures": 10, "beta_min": 0.1,
    "epochs": 10, "batch_size": 100, "lr": 0.05, "optimizer": "sgd", "momentum": 0.5,
    "weight_decay": 0.0, "lr_schedule": "constant", "lr_final_factor": 0.01,
    "sparsity_target": None, "sparsity_cost": 0.0, "centering": False, "seed": 0,
    "monitor_size": 1000, "init_visible_bias": True,
}

_TINY = 1e-12


# --------------------------------------------------------------------------- helpers
def _up(units: Units, field: Tensor, residual: bool, weights: tuple[float, float]) -> Tensor:
    """What a layer passes up: E[h | field], plus the residual term in a residual DBN."""
    mean = units.mean(field)
    if not residual:
        return mean
    pre = units.activation(field)
    r = torch.relu(pre)
    r = r / r.amax(dim=-1, keepdim=True).clamp_min(_TINY)
    out = weights[0] * mean + weights[1] * r
    return out / out.amax(dim=-1, keepdim=True).clamp_min(_TINY)


def _check_residual_units(units: Units, where: str) -> None:
    if isinstance(units, GaussianUnits):
        raise ConfigError(f"{where}: a residual DBN normalises non-negative activations, but "
                          "Gaussian hidden units have signed means: use bernoulli, sigmoid, "
                          "relu or softmax hidden units, or residual=False")


def _residual_weights(weights: Sequence[float]) -> tuple[float, float]:
    try:
        z1, z2 = (float(w) for w in weights)
    except (TypeError, ValueError):
        raise ConfigError(f"residual_weights must be two numbers (z1, z2), got {weights!r}"
                          ) from None
    if not (z1 >= 0 and z2 >= 0 and math.isfinite(z1 + z2) and z1 + z2 > 0):
        raise ConfigError(f"residual_weights must be finite, >= 0 and not both 0, got {weights!r}")
    return z1, z2


@contextmanager
def _accepts_means(rbm: RBM):
    """Let Bernoulli visible units of an upper layer take probabilities in [0, 1].

    Greedy training feeds the hidden *means* of the layer below; the Bernoulli
    free energy and CD gradient are linear in v, so fractional inputs are the
    standard mean-field treatment.  Only the 0/1 check is relaxed, to [0, 1].
    """
    vis = rbm.visible
    if not isinstance(vis, BernoulliUnits):
        yield
        return

    def validate(x: Tensor, name: str = "data") -> None:
        Units.validate(vis, x, name)
        if bool(((x < 0) | (x > 1)).any()):
            raise DataError(f"{name} for a Bernoulli layer of the stack must lie in [0, 1], "
                            f"found values in [{float(x.min()):.3g}, {float(x.max()):.3g}]: "
                            "the layer below has unbounded hidden units; give this layer "
                            "relu or gaussian visible units")

    vis.validate = validate
    try:
        yield
    finally:
        del vis.validate


def layer_settings(settings: dict | Sequence[dict] | None, n_layers: int) -> list[dict]:
    """Per-layer training settings: one dict broadcast to every layer, or one per layer."""
    if settings is None:
        settings = {}
    if isinstance(settings, dict):
        settings = [settings] * n_layers
    settings = list(settings)
    if len(settings) != n_layers:
        raise ConfigError(f"got {len(settings)} per-layer settings for {n_layers} layers: give "
                          "one dict per layer or a single dict for all")
    out = []
    for i, s in enumerate(settings):
        if not isinstance(s, dict):
            raise ConfigError(f"settings for layer {i} must be a dict, got {type(s).__name__}")
        unknown = sorted(set(s) - set(LAYER_DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown} for layer {i}; valid: "
                              f"{sorted(LAYER_DEFAULTS)}")
        out.append({**LAYER_DEFAULTS, **s})
    return out


def parse_layer_sizes(spec: str | Sequence[int] | None, n_features: int | None = None
                      ) -> list[int]:
    """Parse ``"784,500,500,2000"`` (or a list) into layer sizes, visible size first.

    With ``n_features`` (the data's width) the first entry may be omitted: a spec
    that does not start with ``n_features`` is read as hidden sizes only.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        raise ConfigError("the DBN needs layer sizes, e.g. --layers 784,500,500,2000")
    tokens = spec.split(",") if isinstance(spec, str) else list(spec)
    sizes = []
    for tok in tokens:
        try:
            n = int(str(tok).strip())
            if str(tok).strip() != str(n) and not isinstance(tok, int):
                raise ValueError
        except ValueError:
            raise ConfigError(f"layer size {tok!r} in {spec!r} is not an integer: write sizes "
                              "as 784,500,500,2000") from None
        if n <= 0:
            raise ConfigError(f"layer size {n} in {spec!r} must be a positive integer")
        sizes.append(n)
    if n_features is not None and sizes[0] != n_features:
        sizes = [n_features, *sizes]
    if len(sizes) < 2:
        raise ConfigError(f"layers {spec!r} describe no hidden layer: give the visible size "
                          "and at least one hidden size, e.g. 784,500")
    return sizes


# --------------------------------------------------------------------------- the stack
class DBN(Model):
    """A deep belief network: RBMs stacked so each one's hidden layer feeds the next."""

    kind = "dbn"

    def __init__(self, layers: Sequence[RBM], residual: bool = False,
                 residual_weights: Sequence[float] = (1.0, 1.0)) -> None:
        super().__init__()
        layers = list(layers)
        if not layers:
            raise ConfigError("a DBN needs at least one RBM layer")
        for i, rbm in enumerate(layers):
            if not isinstance(rbm, RBM):
                raise ConfigError(f"layer {i} is a {type(rbm).__name__}, not a boltzkit RBM")
        for i, (lo, hi) in enumerate(zip(layers[:-1], layers[1:], strict=False)):
            if lo.n_hidden != hi.n_visible:
                raise ConfigError(f"layer sizes do not chain: layer {i} has {lo.n_hidden} hidden "
                                  f"units but layer {i + 1} has {hi.n_visible} visible units")
        self.residual = bool(residual)
        self.residual_weights = _residual_weights(residual_weights)
        if self.residual:
            for i, rbm in enumerate(layers):
                _check_residual_units(rbm.hidden, f"layer {i}")
        self.layers = nn.ModuleList(layers)

    # -- shape and description ------------------------------------------------
    @property
    def sizes(self) -> list[int]:
        return [self.layers[0].n_visible, *(rbm.n_hidden for rbm in self.layers)]

    @property
    def n_visible(self) -> int:
        return self.layers[0].n_visible

    def config(self) -> dict:
        return {"model": self.kind, "layers": [rbm.config() for rbm in self.layers],
                "residual": self.residual, "residual_weights": list(self.residual_weights)}

    @classmethod
    def from_config(cls, cfg: dict) -> DBN:
        if cfg.get("model") != cls.kind:
            raise ConfigError(f"config describes a {cfg.get('model')!r}, not a dbn")
        layers = cfg.get("layers")
        if not isinstance(layers, list) or not layers:
            raise ConfigError("dbn config needs a non-empty list 'layers' of RBM configs")
        return cls([RBM.from_config(c) for c in layers], residual=cfg.get("residual", False),
                   residual_weights=cfg.get("residual_weights", (1.0, 1.0)))

    def _layer_index(self, layer: int) -> int:
        n = len(self.layers)
        if not isinstance(layer, int) or not -n <= layer < n:
            raise ConfigError(f"layer must be an integer in [{-n}, {n - 1}], got {layer!r}")
        return layer % n

    # -- the deterministic up pass ----------------------------------------------
    def propagate(self, i: int, x: Tensor) -> Tensor:
        """What layer ``i`` passes to layer ``i + 1`` for its input ``x`` (no checks)."""
        rbm = self.layers[i]
        return _up(rbm.hidden, rbm.hidden_field(x), self.residual, self.residual_weights)

    @torch.no_grad()
    def transform(self, x: Tensor, layer: int = -1, batch_size: int = 4096,
                  fractional: bool = False) -> Tensor:
        """Features of ``layer`` (default: the top): the deterministic up pass of means.

        ``fractional=True`` accepts values in [0, 1] for a Bernoulli bottom layer.
        """
        top = self._layer_index(layer)
        with _accepts_means(self.layers[0]) if fractional else nullcontext():
            x = self.layers[0].prepare(x)
        outs = []
        for b in x.split(batch_size):
            for i in range(top + 1):
                b = self.propagate(i, b)
            outs.append(b)
        return torch.cat(outs)

    # -- greedy training ------------------------------------------------------------
    def fit(self, data: Tensor, settings: dict | Sequence[dict] | None = None,
            val: Tensor | None = None, callbacks: Sequence[Callable] = (),
            quiet: bool = True, train_layers: Sequence[int] | None = None,
            fractional: bool = False, make_trainer: Callable | None = None,
            resume: bool = False) -> list[dict]:
        """Greedy layer-wise training; returns one history record per layer-epoch.

        ``settings``: one dict (for every layer) or one per layer, with keys from
        :data:`LAYER_DEFAULTS` (sampler ``method``/``k``/``chains``, ``epochs``,
        ``lr``, ``optimizer``, ...).  Each layer trains on the previous layer's
        hidden means; records carry a ``"layer"`` key.  ``callbacks`` are
        Trainer callbacks ``cb(trainer, record)``; ``trainer.dbn_layer`` says
        which layer is training.  ``train_layers`` (indices) trains only those
        layers, e.g. ``[1]`` to add a layer on top of a trained one.
        ``fractional=True`` lets a Bernoulli bottom layer take values in [0, 1]
        (grey levels as probabilities) instead of requiring 0/1 data.
        ``make_trainer(rbm, layer, settings)`` (default: a Trainer from ``settings``)
        builds each layer's Trainer; ``resume`` continues each from its checkpoint.
        """
        per_layer = layer_settings(settings, len(self.layers))
        todo = set(range(len(self.layers)) if train_layers is None else
                   (self._layer_index(i) for i in train_layers))
        last = max(todo) if todo else -1
        with _accepts_means(self.layers[0]) if fractional else nullcontext():
            x = self.layers[0].prepare(data, "training data")
            v = None if val is None else self.layers[0].prepare(val, "validation data")
        history: list[dict] = []
        for i, (rbm, s) in enumerate(zip(self.layers, per_layer, strict=True)):
            if i > last:
                break
            if i not in todo:
                x, v = self._propagate_all(i, x), self._propagate_all(i, v)
                continue
            trainer = (make_trainer or _layer_trainer)(rbm, i, s, callbacks, quiet)
            trainer.dbn_layer = i
            t0 = time.perf_counter()
            ctx = _accepts_means(rbm) if i > 0 or fractional else nullcontext()
            with ctx:
                records = trainer.fit(x, v, resume=resume)
            log.info("dbn layer %d (%d -> %d) trained in %.1f s", i, rbm.n_visible,
                     rbm.n_hidden, time.perf_counter() - t0)
            history.extend({"layer": i, **r} for r in records)
            if i < last:
                x, v = self._propagate_all(i, x), self._propagate_all(i, v)
        return history

    @torch.no_grad()
    def _propagate_all(self, i: int, x: Tensor | None) -> Tensor | None:
        """What layer ``i`` passes up for every row of ``x`` (batched)."""
        if x is None:
            return None
        return torch.cat([self.propagate(i, b) for b in x.split(4096)])

    # -- generation ------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, steps: int = 1000, generator: torch.Generator | None = None,
               init: Tensor | None = None, return_mean: bool = True,
               beta: float = 1.0) -> Tensor:
        """Gibbs sampling in the top RBM for ``steps`` sweeps (at inverse temperature
        ``beta``), then one down pass.

        ``init`` (optional) starts the top-level chains from data: visible data
        of the *bottom* layer, sent up deterministically.  Returns bottom-layer
        visible means (``return_mean``) or samples.
        """
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"n must be a positive integer, got {n!r}")
        top = self.layers[-1]
        top_init = None
        if init is not None:
            init = self.layers[0].prepare(init, "init")
            if init.shape[0] != n:
                raise DataError(f"init has {init.shape[0]} rows, expected n={n}")
            top_init = init
            for i in range(len(self.layers) - 1):
                top_init = self.layers[i].hidden.sample(self.layers[i].hidden_field(top_init),
                                                        generator=generator)
        if len(self.layers) == 1:
            return top.sample(n, steps, beta, generator=generator, init=top_init,
                              return_mean=return_mean)
        h = top.sample(n, steps, beta, generator=generator, init=top_init, return_mean=False)
        for i in range(len(self.layers) - 2, -1, -1):
            rbm = self.layers[i]
            if i == 0 and return_mean:
                h = rbm.visible_mean(h)
            else:
                h = rbm.sample_visible(h, generator=generator)
        return h

    # -- classification --------------------------------------------------------------
    def to_classifier(self, n_classes: int, dropout: float = 0.0,
                      generator: torch.Generator | None = None,
                      input_dropout: float = 0.0) -> DBNClassifier:
        """A feed-forward classifier whose hidden layers start as this stack's up pass."""
        clf = DBNClassifier(self.n_visible, [copy.deepcopy(r.hidden) for r in self.layers],
                            n_classes, residual=self.residual,
                            residual_weights=self.residual_weights, dropout=dropout,
                            generator=generator, input_dropout=input_dropout)
        clf = clf.to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            for layer, rbm in zip(clf.features, self.layers, strict=True):
                layer.linear.weight.copy_((rbm.connection.weights * _coupling_scale(rbm)).t())
        return clf


def _layer_trainer(rbm: RBM, i: int, s: dict, callbacks, quiet: bool) -> Trainer:
    """Layer ``i``'s Trainer from its settings (:data:`LAYER_DEFAULTS` keys)."""
    sampler = make_sampler(s["method"], s["k"], s["chains"], s["n_temperatures"],
                           s["beta_min"])
    objective = LikelihoodGradient(s["sparsity_target"], s["sparsity_cost"],
                                   centering=bool(s["centering"]))
    return Trainer(rbm, sampler, objective, epochs=s["epochs"], batch_size=s["batch_size"],
                   lr=s["lr"], optimizer=s["optimizer"], momentum=s["momentum"],
                   weight_decay=s["weight_decay"], lr_schedule=s["lr_schedule"],
                   lr_final_factor=s["lr_final_factor"], seed=s["seed"] + i,
                   callbacks=callbacks, progress=False if quiet else None,
                   monitor_size=s["monitor_size"], init_visible_bias=s["init_visible_bias"])


def _coupling_scale(rbm: RBM) -> Tensor:
    """Per-unit factor of the visible coupling c(v) = s * v (1, or 1/sigma^2 for Gaussians)."""
    if not hasattr(rbm.connection, "weights"):
        raise ConfigError("to_classifier needs dense connections")
    ones = torch.ones(1, rbm.n_visible, device=rbm.device, dtype=rbm.dtype)
    s = rbm.visible.coupling(ones)
    if not torch.allclose(rbm.visible.coupling(2 * ones), 2 * s):
        raise ConfigError(f"{rbm.visible.kind} visible units have a non-linear coupling: "
                          "to_classifier cannot fold them into a linear layer")
    return s.reshape(-1, 1)


# --------------------------------------------------------------------------- classifier
class FeatureLayer(nn.Module):
    """One hidden layer of the classifier: a linear map then the units' mean function."""

    def __init__(self, n_in: int, units: Units, residual: bool = False,
                 residual_weights: Sequence[float] = (1.0, 1.0)) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, units.n, bias=False)
        self.units = units
        self.residual = residual
        self.residual_weights = tuple(residual_weights)

    def forward(self, x: Tensor) -> Tensor:
        return _up(self.units, self.linear(x), self.residual, self.residual_weights)


class DBNClassifier(Model):
    """Feed-forward net built from a DBN: feature layers + a linear softmax head.

    ``forward`` returns logits; :meth:`predict_proba` the softmax.  Each feature
    layer holds a copy of an RBM's hidden units (their bias is the layer's bias,
    their mean function the non-linearity: a sigmoid for Bernoulli units), so the
    untrained classifier's features equal :meth:`DBN.transform` exactly.
    ``dropout`` is applied to every hidden layer's output while training,
    ``input_dropout`` to the inputs (Srivastava et al. 2014 use 0.5 and 0.2).
    """

    kind = "dbn-classifier"

    def __init__(self, n_inputs: int, hidden_units: Sequence[Units], n_classes: int,
                 residual: bool = False, residual_weights: Sequence[float] = (1.0, 1.0),
                 dropout: float = 0.0, generator: torch.Generator | None = None,
                 input_dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(n_inputs, int) or n_inputs < 1:
            raise ConfigError(f"n_inputs must be a positive integer, got {n_inputs!r}")
        if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2:
            raise ConfigError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        if not (isinstance(dropout, int | float) and 0 <= dropout < 1):
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        if not (isinstance(input_dropout, int | float) and 0 <= input_dropout < 1):
            raise ConfigError(f"input_dropout must be in [0, 1), got {input_dropout!r}")
        hidden_units = list(hidden_units)
        if not hidden_units:
            raise ConfigError("a DBN classifier needs at least one hidden layer")
        self.n_inputs = n_inputs
        self.n_classes = n_classes
        self.residual = bool(residual)
        self.residual_weights = _residual_weights(residual_weights)
        self.dropout = float(dropout)
        self.input_dropout = float(input_dropout)
        sizes = [n_inputs, *(u.n for u in hidden_units)]
        self.features = nn.ModuleList(
            FeatureLayer(sizes[i], u, self.residual, self.residual_weights)
            for i, u in enumerate(hidden_units))
        self.head = nn.Linear(sizes[-1], n_classes)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=generator) * 0.01)
            self.head.bias.zero_()

    def config(self) -> dict:
        return {"model": self.kind, "n_inputs": self.n_inputs,
                "hidden_units": [f.units.config() for f in self.features],
                "n_classes": self.n_classes, "residual": self.residual,
                "residual_weights": list(self.residual_weights), "dropout": self.dropout,
                "input_dropout": self.input_dropout}

    @classmethod
    def from_config(cls, cfg: dict) -> DBNClassifier:
        if cfg.get("model") != cls.kind:
            raise ConfigError(f"config describes a {cfg.get('model')!r}, not a dbn-classifier")
        return cls(int(cfg["n_inputs"]), [units_from_config(u) for u in cfg["hidden_units"]],
                   int(cfg["n_classes"]), residual=cfg.get("residual", False),
                   residual_weights=cfg.get("residual_weights", (1.0, 1.0)),
                   dropout=float(cfg.get("dropout", 0.0)),
                   input_dropout=float(cfg.get("input_dropout", 0.0)))

    def prepare(self, x: Tensor, name: str = "data") -> Tensor:
        """Move inputs to the model and check their shape and values."""
        if not isinstance(x, Tensor):
            x = torch.as_tensor(x)
        x = x.to(device=self.device, dtype=self.dtype)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise DataError(f"{name} has shape {tuple(x.shape)}, the classifier takes "
                            f"{self.n_inputs} features per row")
        if x.shape[0] == 0:
            raise DataError(f"{name} is empty")
        if not bool(torch.isfinite(x).all()):
            raise DataError(f"{name} contains NaN/inf values: clean the data first")
        return x

    def hidden(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Top hidden-layer features; in training mode with dropout, its masks are drawn
        from ``generator`` (inverted dropout: kept values scaled by 1 / (1 - p))."""
        x = self._drop(x, self.input_dropout, generator)
        for layer in self.features:
            x = self._drop(layer(x), self.dropout, generator)
        return x

    def _drop(self, x: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
        if not (self.training and p):
            return x
        keep = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) >= p
        return x * keep / (1.0 - p)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Logits (batch, n_classes)."""
        return self.head(self.hidden(x, generator))

    @torch.no_grad()
    def predict_proba(self, x: Tensor, batch_size: int = 4096) -> Tensor:
        was = self.training
        self.eval()
        try:
            x = self.prepare(x)
            return torch.cat([torch.softmax(self(b), -1) for b in x.split(batch_size)])
        finally:
            self.train(was)

    def predict(self, x: Tensor, batch_size: int = 4096) -> Tensor:
        return self.predict_proba(x, batch_size).argmax(-1)

    def error_rate(self, x: Tensor, y: Tensor) -> float:
        """Fraction of rows whose predicted class differs from ``y``."""
        y = _labels(y, x.shape[0], self.n_classes).to(self.device)
        return float((self.predict(x) != y).float().mean())


def _labels(y, n: int, n_classes: int | None = None, name: str = "labels") -> Tensor:
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{name} must be a 1-D array with one label per row ({n}), got shape "
                        f"{tuple(y.shape)}")
    if y.is_floating_point():
        if not bool((y == y.round()).all()):
            raise DataError(f"{name} must be integer class indices")
    y = y.long()
    if bool((y < 0).any()) or (n_classes is not None and bool((y >= n_classes).any())):
        raise DataError(f"{name} must be class indices in [0, {n_classes}), found "
                        f"[{int(y.min())}, {int(y.max())}]")
    return y


class CrossEntropy(Objective):
    """Supervised fine-tuning of a :class:`DBNClassifier` as a part of the one loop.

    Batches are (inputs, labels) pairs; the gradient is backprop of the mean
    cross-entropy (dropout masks from the trainer's generator, so runs resume exactly);
    no model phase.  Diagnostics ``train_loss``, ``train_error``; monitor ``val_error``.
    """

    needs_sampler = False

    def prepare(self, model, data, name="data"):
        if not (isinstance(data, tuple | list) and len(data) == 2):
            raise DataError(f"{name}: fine-tuning takes (inputs, labels) pairs")
        x = model.prepare(data[0], name)
        return x, _labels(data[1], x.shape[0], model.n_classes, f"{name} labels").to(x.device)

    def setup(self, model, rows, init=True):
        return None

    def gradient(self, model, batch, sampler, generator):
        x, y = batch
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.enable_grad():
            logits = model(x, generator)
            loss = nn.functional.cross_entropy(logits, y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        assign_grads(params, grads)
        model.eval()
        return {"train_loss": loss.detach(),
                "train_error": (logits.detach().argmax(-1) != y).to(x.dtype).mean()}

    @torch.no_grad()
    def monitor(self, model, train, val):
        return {} if val is None else {"val_error": model.error_rate(*val)}


def fine_tune(clf: DBNClassifier, x: Tensor, y: Tensor, *, epochs: int = 10, lr: float = 0.1,
              optimizer: str = "sgd", momentum: float = 0.9, batch_size: int = 100,
              weight_decay: float = 0.0, schedule: str = "constant",
              val_fraction: float = 0.0, val: tuple[Tensor, Tensor] | None = None,
              patience: int = 0, test: tuple[Tensor, Tensor] | None = None, seed: int = 0,
              quiet: bool = True, make_trainer: Callable | None = None,
              resume: bool = False) -> tuple[DBNClassifier, list[dict]]:
    """Backprop fine-tuning with cross-entropy through the one Trainer.

    Returns the fitted classifier and its history.  ``val`` (or ``val_fraction`` of the
    training rows, held out by a seeded shuffle) selects the epoch with the lowest
    validation error: its weights are restored at the end; ``patience > 0`` stops after
    that many epochs without improvement.  ``test`` is only measured and recorded
    (``test_error``), never used for a decision.  ``schedule``: "constant" or "cosine"
    (to 0 at the end).  ``weight_decay`` is L2 on the weight matrices.
    ``make_trainer(model, sampler, objective, **options)`` builds the Trainer (default
    :class:`~boltzkit.training.Trainer`; the CLI's adds checkpoints and resume).
    """
    from ..metrics.evaluate import ClassificationMonitor

    if schedule not in ("constant", "cosine"):
        raise ConfigError(f"unknown fine-tuning schedule {schedule!r}: choose constant or cosine")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    x = clf.prepare(x, "training data")
    y = _labels(y, x.shape[0], clf.n_classes).to(clf.device)
    if val is None and val_fraction > 0:
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
        perm = perm.to(x.device)
        n_val = max(1, int(round(val_fraction * x.shape[0])))
        val = (x[perm[:n_val]], y[perm[:n_val]])
        x, y = x[perm[n_val:]], y[perm[n_val:]]
    callbacks = [] if test is None else [ClassificationMonitor(test[0], test[1], "test")]
    factory = make_trainer or Trainer
    trainer = factory(clf, None, CrossEntropy(), optimizer, epochs=epochs, lr=lr,
                      momentum=momentum, batch_size=batch_size, weight_decay=weight_decay,
                      lr_schedule=schedule, lr_final_factor=0.0, seed=seed, monitor_size=0,
                      init_visible_bias=False, best_by="val_error" if val is not None else None,
                      patience=(patience or None) if val is not None else None,
                      callbacks=callbacks, progress=False if quiet else None)
    history = trainer.fit((x, y), val, resume=resume)
    clf.eval()
    return clf, history


# --------------------------------------------------------------------------- building
def _visible_for(hidden_kind: str) -> tuple[str, dict]:
    """Visible units of an upper layer that match the hidden units below."""
    if hidden_kind in ("bernoulli", "sigmoid"):
        return "bernoulli", {}
    if hidden_kind == "relu":
        return "relu", {}
    if hidden_kind == "gaussian":
        return "gaussian", {}
    raise ConfigError(f"no visible units match {hidden_kind!r} hidden units in a stack: use "
                      "bernoulli, sigmoid, relu or gaussian hidden units")


def make_dbn(sizes: Sequence[int], visible: str = "bernoulli", hidden: str = "bernoulli",
             visible_options: dict | None = None, residual: bool = False,
             residual_weights: Sequence[float] = (1.0, 1.0), init_std: float = 0.01,
             seed: int | None = None) -> DBN:
    """A DBN of dense RBMs: ``sizes`` = [n_visible, n_hidden_1, ...].

    The bottom layer has ``visible`` units (with ``visible_options``, e.g. a
    Gaussian ``std``), every hidden layer ``hidden`` units, and upper layers take
    visible units that match the hidden units below.
    """
    from ..connections import DenseConnection

    sizes = parse_layer_sizes(list(sizes))
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    layers = []
    vis_kind, vis_opts = visible, dict(visible_options or {})
    for a, b in zip(sizes[:-1], sizes[1:], strict=False):
        vis = make_units(vis_kind, a, **vis_opts)
        hid = make_units(hidden, b)
        layers.append(RBM(vis, hid, DenseConnection(a, b, init_std, gen)))
        vis_kind, vis_opts = _visible_for(hidden)
    return DBN(layers, residual=residual, residual_weights=residual_weights)


# --------------------------------------------------------------------------- CLI
def _per_layer(text: str | None, n: int, cast, name: str) -> list | None:
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    tokens = str(text).split(",") if not isinstance(text, list | tuple) else list(text)
    try:
        values = [cast(str(t).strip()) for t in tokens]
    except ValueError:
        raise ConfigError(f"{name} must be a comma list of numbers, got {text!r}") from None
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise ConfigError(f"{name} has {len(values)} entries but the DBN has {n} layers")
    return values


def _cfg_layers(cfg: dict, n_features: int) -> DBN:
    sizes = parse_layer_sizes(cfg.get("layers"), n_features)
    if cfg.get("layers") and sizes[0] != int(str(cfg["layers"]).split(",")[0]):
        log.info("layers %s read as hidden sizes: stack %s", cfg["layers"], sizes)
    vis_opts: dict[str, Any] = {}
    if cfg["visible"] == "gaussian":
        vis_opts = {"std": cfg["visible_std"], "learn_variance": bool(cfg["learn_variance"])}
    elif cfg["visible"] == "softmax":
        if not cfg.get("group_size"):
            raise ConfigError("softmax visible units need --group-size K")
        vis_opts = {"group_size": cfg["group_size"]}
    weights = _per_layer(cfg.get("dbn_residual_weights") or "1,1", 2, float,
                         "dbn_residual_weights")
    return make_dbn(sizes, cfg["visible"], cfg["hidden"], vis_opts,
                    residual=bool(cfg.get("dbn_residual")), residual_weights=weights,
                    init_std=cfg.get("init_std", 0.01), seed=cfg.get("seed", 0))


def train_from_config(run):
    """Pretrain a DBN layer by layer (and fine-tune it if ``finetune_epochs`` > 0), every
    stage through the one loop (checkpoints under ``checkpoint_dir/layerN`` and
    ``checkpoint_dir/finetune``).

    Returns the DBN, or the fine-tuned :class:`DBNClassifier` (the pretrained DBN is then
    also written beside ``out`` as ``*.pretrained.safetensors``).
    """
    from pathlib import Path

    from ..io import save_model

    train, y_train, test, y_test = run.splits()
    dbn = _cfg_layers(run.cfg, train.shape[1]).to(run.device)
    n = len(dbn.layers)
    epochs = _per_layer(run["dbn_layer_epochs"], n, int, "dbn_layer_epochs")
    lrs = _per_layer(run["dbn_layer_lr"], n, float, "dbn_layer_lr")
    if epochs:
        run.unused("epochs", "--dbn-layer-epochs sets every layer's epochs")
    if lrs:
        run.unused("lr", "--dbn-layer-lr sets every layer's learning rate")

    def layer_trainer(rbm, i, settings, callbacks, quiet):
        over = {"init_visible_bias": settings["init_visible_bias"], "seed": run["seed"] + i}
        if epochs:
            over["epochs"] = epochs[i]
        if lrs:
            over["lr"] = lrs[i]
        return run.trainer(rbm, run.sampler(), run.likelihood(), stage=f"layer{i}", **over)

    # binarize = "none" on a Bernoulli bottom layer: grey levels enter as probabilities
    # (Hinton & Salakhutdinov 2006), the stack's own mean-field treatment of inputs.
    history = dbn.fit(train, None, val=test, quiet=run.quiet,
                      fractional=run["binarize"] == "none", make_trainer=layer_trainer,
                      resume=run.resume)
    history = [{"stage": f"layer{r.pop('layer')}", **r} for r in history]
    ft_epochs = int(run["finetune_epochs"] or 0)
    if ft_epochs <= 0:
        return dbn, history
    if y_train is None or len(y_train) != train.shape[0]:
        raise DataError(f"fine-tuning needs class labels, but dataset {run['dataset']!r} "
                        "has none: set finetune_epochs = 0")
    from .. import distributed

    if run["out"] and distributed.world()[0] == 0:  # one writer under torchrun
        save_model(dbn, Path(run["out"]).with_suffix(".pretrained.safetensors"),
                   extra={"history": history})
    y_train = torch.as_tensor(y_train)
    n_classes = max(int(y_train.max()) + 1, 2)
    clf = dbn.to_classifier(n_classes, dropout=float(run["finetune_dropout"]),
                            generator=torch.Generator().manual_seed(int(run["seed"])),
                            input_dropout=float(run["finetune_input_dropout"]))

    def ft_trainer(model, sampler, objective, optimizer, **opts):
        opts.pop("progress", None)
        return run.trainer(model, sampler, objective, stage="finetune", optimizer=optimizer,
                           **opts)

    clf, ft_hist = fine_tune(
        clf, train, y_train, epochs=ft_epochs, lr=float(run["finetune_lr"]),
        optimizer=run["finetune_optimizer"], momentum=float(run["finetune_momentum"]),
        batch_size=int(run["finetune_batch_size"]),
        weight_decay=float(run["finetune_weight_decay"]),
        schedule=run["finetune_schedule"], val_fraction=float(run["finetune_val_fraction"]),
        patience=int(run["finetune_patience"] or 0),
        test=None if test is None or y_test is None else (test, y_test),
        seed=int(run["seed"]), quiet=run.quiet, make_trainer=ft_trainer, resume=run.resume)
    return clf, history + [{"stage": "finetune", **r} for r in ft_hist]
