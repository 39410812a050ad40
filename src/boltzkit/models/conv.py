"""Convolutional RBM with probabilistic max-pooling (Lee, Grosse, Ranganath & Ng 2009).

A :class:`ConvRBM` is the ordinary :class:`boltzkit.RBM` composed of

* visible units: Bernoulli (binary images) or Gaussian (real images; standardise them),
  one bias per pixel;
* a :class:`~boltzkit.connections.ConvConnection`: K shared ``f x f`` filters, "valid"
  convolution, so the hidden layer is K feature maps of ``(H - f + 1) x (W - f + 1)``;
* :class:`~boltzkit.units.PooledBernoulliUnits`: binary detection units, one bias per
  filter (shared over positions), grouped into ``pool x pool`` blocks with
  probabilistic max-pooling (``pool=1``: no pooling).

States stay flattened (rows of C*H*W visible and K*h*w hidden values), so energies,
free energies, Gibbs sampling, the autograd likelihood gradient (with sparsity), exact
log Z on tiny models and AIS all come from the generic code.  The features for a
downstream classifier are the pooling units' probabilities (:meth:`ConvRBM.pooled_features`).

``boltzkit train --model conv-rbm --dataset mnist --conv-filters 24 --conv-filter-size 7``
trains one with the one Trainer, any sampler and :class:`~boltzkit.LikelihoodGradient`.
Note the filter gradient is a *sum* over all ``h x w`` positions (the exact likelihood
gradient), so useful learning rates are smaller than for a dense RBM (about 1/(h w)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..connections import ConvConnection
from ..errors import ConfigError, DataError
from ..objectives import LikelihoodGradient
from ..rbm import RBM
from ..units import BernoulliUnits, GaussianUnits, PooledBernoulliUnits

VISIBLE_TYPES = ("bernoulli", "gaussian")


class ConvRBM(RBM):
    """A convolutional RBM: image visibles, shared filters, max-pooled binary hiddens.

    ``image_shape`` is (height, width); ``channels`` images are stacked channel-first in
    each row.  ``input_mean``/``input_std`` record the scalar standardisation applied to
    the training data (Gaussian visibles); :meth:`preprocess` applies it to new data.
    """

    def __init__(self, image_shape: tuple[int, int] | list[int], filters: int = 24,
                 filter_size: int = 7, pool: int = 2, channels: int = 1,
                 visible: str = "bernoulli", visible_std: float = 1.0, init_std: float = 0.01,
                 input_mean: float = 0.0, input_std: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        if (not isinstance(image_shape, tuple | list) or len(image_shape) != 2
                or not all(isinstance(s, int) and s > 0 for s in image_shape)):
            raise ConfigError(f"image_shape must be (height, width) of positive integers, "
                              f"got {image_shape!r}")
        if visible not in VISIBLE_TYPES:
            raise ConfigError(f"conv-rbm visible units must be one of {list(VISIBLE_TYPES)}, "
                              f"got {visible!r}")
        if not (input_std > 0 and math.isfinite(input_std) and math.isfinite(input_mean)):
            raise ConfigError(f"input_std must be > 0 and finite, got {input_std!r}")
        height, width = int(image_shape[0]), int(image_shape[1])
        conn = ConvConnection(channels, height, width, filters, filter_size, init_std, generator)
        hid = PooledBernoulliUnits(filters=filters, height=conn.out_height,
                                   width=conn.out_width, block=pool)
        n_vis = conn.n_visible
        vis = (BernoulliUnits(n_vis) if visible == "bernoulli"
               else GaussianUnits(n_vis, std=visible_std))
        super().__init__(vis, hid, conn)
        self.image_shape = (height, width)
        self.channels, self.filters, self.filter_size, self.pool = (
            channels, filters, filter_size, pool)
        self.visible_kind, self.visible_std, self.init_std = visible, float(visible_std), init_std
        self.input_mean, self.input_std = float(input_mean), float(input_std)

    # --- description -------------------------------------------------------
    def config(self) -> dict:
        return {"model": "conv-rbm", "image_shape": list(self.image_shape),
                "channels": self.channels, "filters": self.filters,
                "filter_size": self.filter_size, "pool": self.pool,
                "visible": self.visible_kind, "visible_std": self.visible_std,
                "input_mean": self.input_mean, "input_std": self.input_std}

    @classmethod
    def from_config(cls, cfg: dict) -> ConvRBM:
        if cfg.get("model") != "conv-rbm":
            raise ConfigError(f"config describes a {cfg.get('model')!r}, not a conv-rbm")
        try:
            return cls(tuple(int(s) for s in cfg["image_shape"]), filters=int(cfg["filters"]),
                       filter_size=int(cfg["filter_size"]), pool=int(cfg["pool"]),
                       channels=int(cfg.get("channels", 1)),
                       visible=cfg.get("visible", "bernoulli"),
                       visible_std=float(cfg.get("visible_std", 1.0)),
                       input_mean=float(cfg.get("input_mean", 0.0)),
                       input_std=float(cfg.get("input_std", 1.0)))
        except KeyError as exc:
            raise ConfigError(f"conv-rbm config lacks {exc.args[0]!r}") from None

    # --- uses ----------------------------------------------------------------
    def preprocess(self, x: Tensor) -> Tensor:
        """Apply the training data's scalar standardisation to raw data."""
        x = torch.as_tensor(x)
        return (x - self.input_mean) / self.input_std

    @torch.no_grad()
    def pooled_features(self, v: Tensor, batch_size: int = 1000) -> Tensor:
        """P(pooling unit on | v) for every row: (N, filters * pooled h * pooled w) features."""
        v = self.prepare(v)
        return torch.cat([self.hidden.pool_mean(self.hidden_field(b))
                          for b in v.split(batch_size)])

    def filter_images(self) -> Tensor:
        """The filters as (filter_size^2 * channels, filters), the layout of weight mosaics."""
        return self.connection.weights.detach().flatten(1).t()


class FilterSparsityGradient(LikelihoodGradient):
    """The likelihood gradient with sparsity applied to the per-filter hidden biases only.

    :class:`~boltzkit.LikelihoodGradient` applies its sparsity surrogate to the weights
    too (``conv_sparsity_on="all"``, the default).  Lee, Ekanadham & Ng (2008) update only
    the hidden biases, which is what this does (``"bias"``): filter k's bias gradient gets
    ``cost * sum over positions of (q - target)`` (q: the detection units' mean activation
    on the batch), the same term the generic surrogate puts on the bias, and the weights
    get the plain likelihood gradient.  The filter gradient sums over all positions, so
    the step must be small: at lr 0.01 (5,000 MNIST images, 2 epochs) this variant let
    all filters collapse to one negative pattern while ``"all"`` learned centre-off
    blobs; at lr 0.001 (20,000 images, 3 epochs, ``examples/conv_rbm_mnist.py``) it
    learns about ten oriented stroke segments among the 24 filters and the better
    pooled features (97.12% against 96.95% for ``"all"`` at the same lr).
    """

    def compute(self, rbm, v_data, v_model, field_data=None, field_model=None):
        cost, self.sparsity_cost = self.sparsity_cost, 0.0
        try:
            diag = super().compute(rbm, v_data, v_model, field_data, field_model)
        finally:
            self.sparsity_cost = cost
        if cost:
            with torch.no_grad():
                fld = rbm.hidden_field(v_data) if field_data is None else field_data
                q = rbm.hidden.mean(fld).mean(0).view(rbm.hidden.filters, -1)
                rbm.hidden.filter_bias.grad.add_((q - self.sparsity_target).sum(1) * cost)
        return diag


def make_objective(target: float | None, cost: float, on: str = "all") -> LikelihoodGradient:
    """Sparsity on the filter biases only (``on="bias"``) or also the weights ("all")."""
    if on not in ("bias", "all"):
        raise ConfigError(f"conv sparsity must apply to 'bias' or 'all', got {on!r}")
    cls = FilterSparsityGradient if on == "bias" else LikelihoodGradient
    return cls(target, cost)


def parse_image_shape(text: str | None, n: int, channels: int = 1) -> tuple[int, int]:
    """(height, width) from "HxW", or the square that fits ``n / channels`` values."""
    if n % channels:
        raise DataError(f"rows of {n} values are not {channels} whole channels")
    pixels = n // channels
    if text:
        try:
            a, b = (int(x) for x in str(text).lower().split("x"))
        except ValueError:
            raise ConfigError(f"image shape must look like 28x28, got {text!r}") from None
        if a * b != pixels:
            raise DataError(f"image shape {text} has {a * b} pixels but the data rows have "
                            f"{pixels} per channel: pass the right --conv-image-shape")
        return a, b
    side = math.isqrt(pixels)
    if side * side != pixels:
        raise DataError(f"data rows have {pixels} pixels per channel, not a square image: "
                        "pass --conv-image-shape HxW")
    return side, side


def standardize(train: Tensor, *others: Tensor | None) -> tuple[float, float, list]:
    """Scalar (global) standardisation: one mean and std over all pixels of ``train``.

    A single shift and scale keeps images translation-equivariant (per-pixel
    standardisation would not), which shared filters assume.
    """
    mean, std = float(train.mean()), float(train.std())
    if not std > 0:
        raise DataError("training data is constant: cannot standardise it")
    return mean, std, [(train - mean) / std] + [None if o is None else (o - mean) / std
                                               for o in others]


def train_from_config(run) -> tuple[ConvRBM, list[dict]]:
    """``boltzkit train --model conv-rbm``: a conv RBM trained by the one loop."""
    train, _, test, _ = run.splits()
    channels = int(run["conv_channels"])
    shape = parse_image_shape(run["conv_image_shape"], train.shape[1], channels)
    mean, std = 0.0, 1.0
    if run["visible"] == "gaussian":
        mean, std, (train, test) = standardize(train, test)
    elif run["visible"] != "bernoulli":
        raise ConfigError(f"--model conv-rbm supports --visible {' or '.join(VISIBLE_TYPES)}, "
                          f"got {run['visible']!r}")
    gen = torch.Generator().manual_seed(int(run["seed"]))
    model = ConvRBM(shape, filters=int(run["conv_filters"]),
                    filter_size=int(run["conv_filter_size"]), pool=int(run["conv_pool"]),
                    channels=channels, visible=run["visible"],
                    visible_std=float(run["visible_std"]), init_std=float(run["init_std"]),
                    input_mean=mean, input_std=std, generator=gen).to(run.device)
    objective = make_objective(run["sparsity_target"], run["sparsity_cost"],
                               run["conv_sparsity_on"])
    trainer = run.trainer(model, run.sampler(), objective,
                          monitor_data=(test if test is not None else train, train))
    return model, run.fit(trainer, train, test)
