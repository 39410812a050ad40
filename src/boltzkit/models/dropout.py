"""Dropout RBM, DropConnect and the energy-based dropout RBM, composed on :class:`boltzkit.RBM`.

**Dropout RBM** (Srivastava et al. 2014, JMLR 15, "Dropout", section 8): each
training case gets a Bernoulli mask r over the hidden units, r_j = 1 with the
*keep probability* ``p = 1 - dropout_rate`` (the p of Srivastava's paper and of
Eq. 6 in the Learnergy paper).  A dropped unit is clamped at h_j = 0: it has no
activation, no coupling and no gradient, i.e. the batch trains the sub-network
the mask leaves.  The mask is drawn **once per mini-batch** and used in **both**
phases of that batch.  (Learnergy's ``DropoutRBM`` redraws it every time it
samples the hidden layer, so its positive and negative phases see different
networks, and its loss uses the unmasked free energy: that is a bug, not the
method.)  For the negative phase of CD the chains start at the data, so chain i
keeps data row i's mask; persistent chains (PCD) belong to no training case and
get their own mask per chain, redrawn every batch.  The batch's gradient is then
an unbiased estimate of E_r[grad log p(v | r)] over data *and* masks.

**DropConnect** (Wan et al. 2013, ICML): a Bernoulli mask M on the weights,
M_ij = 1 with probability ``q = 1 - dropconnect_rate``, one mask per mini-batch
shared by the data and every negative chain of that batch (the batch trains the
network with weights W * M).  It combines with hidden dropout.

**Test time** (outside a training batch: ``transform``, ``free_energy``,
``sample``, the likelihood metrics, saving): the dropout RBM is the full RBM
with weights scaled by ``p * q`` -- Srivastava's "scale the weights by p" rule;
for DropConnect it is the mean-field version of Wan et al.'s inference.

**Energy-based dropout RBM** (Roder, de Rosa, de Albuquerque, Rossi & Papa,
"Energy-based Dropout in Restricted Boltzmann Machines: Why not go random",
IEEE TETCI 2020, doi:10.1109/TETCI.2020.3043764): the mask of each batch comes
from an *importance level* instead of a fixed rate.  With one Gibbs step on the
full network, v -> h -> v~ -> h~ (h, h~ sampled)::

    I_ij = [P(h_j = 1 | v~_i) / P(h_j = 1 | v_i)] / |dE|,
    dE   = mean_i E(v~_i, h~_i) - mean_i E(v_i, h_i)        (one number per batch)
    I_ij <- I_ij / max_i I_ij                                 (per hidden unit)
    keep unit j of case i  iff  I_ij < U_ij,  U ~ Uniform(0, 1)

as in the authors' reference code (Learnergy's ``EDropoutRBM``).  Note that a
batch-level ``|dE|`` cancels exactly in the per-unit normalisation, so the mask
depends only on the probability ratios; we compute dE anyway and expose it as
``last_energy_gap``.  We use the correct RBM energy (Learnergy averages the
coupling term over pairs of cases), work in log space (no 0/0), and train the
masked network exactly (Learnergy's loss ignores the mask).  The importance is
defined per training case, so E-dropout trains with CD; at test time the full,
unscaled RBM is used (as the reference code does).

**How it plugs into training.**  :class:`MaskedLikelihood` calls
``model.begin_batch(batch, generator)`` at the start of each batch's gradient: the
model draws that batch's masks from the trainer's generator (so runs are
reproducible and resume exactly) and turns into the unscaled, masked training
network.  :class:`MaskedSampler` runs the wrapped sampler's negative phase under the
chains' masks, and
:class:`MaskedLikelihood` fills the gradient of::

    mean_i F(v_data_i | r_i) - mean_c F(v_model_c | r'_c)

(negatives held fixed) and closes the batch, which turns the model back into
the test-time RBM.  :func:`training_parts` wraps a sampler and an objective.
For bias-only units and dense weights the gradient takes the fast path of
:class:`boltzkit.objectives.LikelihoodGradient` with the masked fields
(-inf for dropped units: mean 0, log-partition 0) and, for DropConnect, the
weight gradient multiplied by M; this is exactly the gradient above (tested
against autograd and finite differences in ``tests/test_dropout.py``).
Otherwise the gradient is autograd on the masked free energies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from .. import precision
from ..connections import DenseConnection, connection_from_config
from ..errors import ConfigError
from ..objectives import LikelihoodGradient, Objective, assign_grads
from ..rbm import RBM
from ..sampling import ContrastiveDivergence, Sampler
from ..units import BernoulliUnits, Beta, Units, units_from_config

__all__ = ["DropoutRBM", "EDropoutRBM", "MaskableBernoulliUnits", "MaskableDenseConnection",
           "MaskedLikelihood", "MaskedSampler", "training_parts"]


# --------------------------------------------------------------------------- parts
class MaskableBernoulliUnits(BernoulliUnits):
    """Bernoulli units that the owning dropout model can switch off per case.

    ``mask_fn(rows)`` (set by the model) returns a bool mask (rows, n) or None.
    A unit whose entry is False gets activation -inf: mean 0, sample 0,
    log-partition 0 and zero gradient -- it is clamped at h = 0, removed from
    the network.  Saved exactly like plain Bernoulli units.
    """

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.mask_fn: Callable[[int], Tensor | None] | None = None

    def activation(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        a = super().activation(field, beta)
        mask = self.mask_fn(a.shape[0]) if self.mask_fn is not None else None
        return a if mask is None else a.masked_fill(~mask, -math.inf)


class MaskableDenseConnection(DenseConnection):
    """Dense weights with an optional DropConnect mask and a test-time scale.

    Every map (field, transpose, interaction) uses ``W * weight_mask * scale``;
    the stored parameter stays ``W`` (saved as ``weights``, like any dense RBM).
    """

    def __init__(self, n_visible: int, n_hidden: int) -> None:
        super().__init__(n_visible, n_hidden, init_std=0.0)
        # Plain holder: set per batch without nn.Module.__setattr__'s overhead.
        self.view = _WeightView()

    @property
    def weight_mask(self) -> Tensor | None:
        return self.view.mask

    @property
    def scale(self) -> float:
        return self.view.scale

    def effective_weights(self) -> Tensor:
        w = self.weights
        if self.view.mask is not None:
            w = w * self.view.mask
        return w if self.view.scale == 1.0 else w * self.view.scale

    def forward(self, x: Tensor) -> Tensor:
        return precision.mm(x, self.effective_weights())

    def transpose(self, h: Tensor) -> Tensor:
        return precision.mm_t(h, self.effective_weights())

    def interaction(self, x: Tensor, h: Tensor) -> Tensor:
        return (self.forward(x) * h).sum(-1)

    def weight_gradient(self, x: Tensor, h: Tensor) -> Tensor:
        g = precision.mm(x.t(), h)
        if self.view.mask is not None:
            g = g * self.view.mask
        return g if self.view.scale == 1.0 else g * self.view.scale


@dataclass
class _WeightView:
    mask: Tensor | None = None
    scale: float = 1.0


@dataclass
class _BatchState:
    """A dropout model's per-batch state (a plain object: cheap to update every batch)."""

    masks: dict[str, Tensor | None] | None = None
    role: str | None = "data"
    negative_role: str = "data"
    generator: torch.Generator | None = None


def _check_rate(name: str, rate: Any) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
        raise ConfigError(f"{name} must be a number in [0, 1) (the probability of dropping), "
                          f"got {rate!r}")
    return float(rate)


def _bernoulli(shape: tuple[int, ...], keep: float, like: Tensor,
               generator: torch.Generator | None) -> Tensor:
    u = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    return u < keep


# --------------------------------------------------------------------------- models
class _MaskedRBM(RBM):
    """Machinery shared by the dropout kinds: batch masks, roles, test-time scale."""

    kind = "masked-rbm"

    def __init__(self, visible: Units, hidden: Units, connection: DenseConnection | None = None,
                 generator: torch.Generator | None = None) -> None:
        if type(hidden) is not BernoulliUnits and not isinstance(hidden, MaskableBernoulliUnits):
            raise ConfigError(f"{self.kind} needs Bernoulli hidden units (a dropped unit is "
                              f"clamped at 0), got {hidden.kind} units")
        if connection is None:
            connection = DenseConnection(visible.n, hidden.n, generator=generator)
        if not isinstance(connection, DenseConnection):
            raise ConfigError(f"{self.kind} needs a dense connection, got "
                              f"{getattr(connection, 'kind', type(connection).__name__)}")
        if not isinstance(hidden, MaskableBernoulliUnits):
            maskable = MaskableBernoulliUnits(hidden.n)
            maskable.bias = hidden.bias
            hidden = maskable
        if not isinstance(connection, MaskableDenseConnection):
            dense = MaskableDenseConnection(connection.n_visible, connection.n_hidden)
            dense.weights = connection.weights
            connection = dense
        super().__init__(visible, hidden, connection)
        self.hidden.mask_fn = self._current_mask
        self.batch_state = _BatchState()

    # --- what subclasses define --------------------------------------------
    @property
    def test_scale(self) -> float:
        """Factor on the weights outside training batches."""
        return 1.0

    def _data_mask(self, batch: Tensor, generator: torch.Generator | None) -> Tensor | None:
        return None

    def _chain_mask(self, rows: int, generator: torch.Generator | None) -> Tensor | None:
        return None

    def _weight_mask(self, generator: torch.Generator | None) -> Tensor | None:
        return None

    def _extra_config(self) -> dict:
        return {}

    # --- description ---------------------------------------------------------
    def config(self) -> dict:
        cfg = super().config()
        cfg["model"] = self.kind
        cfg.update(self._extra_config())
        return cfg

    @classmethod
    def from_config(cls, cfg: dict) -> _MaskedRBM:
        if cfg.get("model") != cls.kind:
            raise ConfigError(f"config describes a {cfg.get('model')!r}, not a {cls.kind}")
        vis, hid = units_from_config(cfg["visible"]), units_from_config(cfg["hidden"])
        default = {"kind": "dense", "n_visible": vis.n, "n_hidden": hid.n}
        conn = connection_from_config(cfg.get("connection", default))
        extra = {k: cfg[k] for k in cls._config_keys() if k in cfg}
        return cls(vis, hid, conn, **extra)

    @classmethod
    def _config_keys(cls) -> tuple[str, ...]:
        return ()

    # --- the batch context -----------------------------------------------------
    @property
    def in_batch(self) -> bool:
        """True between ``begin_batch`` and the end of that batch's gradient."""
        return self.batch_state.masks is not None

    def begin_batch(self, batch: Tensor, generator: torch.Generator | None = None) -> None:
        """Start a training mini-batch: draw its masks; the model becomes the masked network."""
        self.end_batch()
        st, view = self.batch_state, self.connection.view
        view.scale = 1.0
        st.generator = generator
        st.masks = {}
        st.role = None
        with torch.no_grad():
            view.mask = self._weight_mask(generator)
            st.masks["data"] = self._data_mask(batch, generator)
        st.role = "data"
        st.negative_role = "data"

    def end_batch(self) -> None:
        """Leave the batch: the model is the full RBM with weights scaled by ``test_scale``."""
        st, view = self.batch_state, self.connection.view
        st.masks = None
        st.generator = None
        st.role = "data"
        st.negative_role = "data"
        view.mask = None
        view.scale = self.test_scale

    @contextmanager
    def role(self, name: str | None) -> Iterator[None]:
        """Hidden masks of ``name`` ("data", "chains", or None: unmasked) inside the block."""
        st = self.batch_state
        previous, st.role = st.role, name
        try:
            yield
        finally:
            st.role = previous

    def batch_mask(self, role: str = "data") -> Tensor | None:
        """The current batch's hidden mask for ``role`` (None: no hidden units dropped)."""
        masks = self.batch_state.masks
        return None if masks is None else masks.get(role)

    def _current_mask(self, rows: int) -> Tensor | None:
        st = self.batch_state
        if st.masks is None or st.role is None:
            return None
        if st.role not in st.masks:  # persistent chains: one mask per chain per batch
            st.masks[st.role] = self._chain_mask(rows, st.generator)
        mask = st.masks[st.role]
        if mask is not None and mask.shape[0] != rows:
            raise ConfigError(
                f"{self.kind}: the {st.role} mask of this batch has {mask.shape[0]} rows but "
                f"the hidden layer got {rows}; train dropout models with the sampler and "
                "objective of boltzkit.models.dropout.training_parts (cd or pcd)")
        return mask


class DropoutRBM(_MaskedRBM):
    """RBM with hidden-unit dropout and/or DropConnect (see the module docs).

    ``dropout_rate`` = 1 - p is the probability of dropping a hidden unit (per
    case, per batch); ``dropconnect_rate`` = 1 - q of dropping a weight (per
    batch).  Outside training batches the weights are scaled by ``p * q``.
    """

    kind = "dropout-rbm"

    def __init__(self, visible: Units, hidden: Units, connection: DenseConnection | None = None,
                 dropout_rate: float = 0.5, dropconnect_rate: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        self.dropout_rate = _check_rate("dropout_rate", dropout_rate)
        self.dropconnect_rate = _check_rate("dropconnect_rate", dropconnect_rate)
        super().__init__(visible, hidden, connection, generator)
        self.end_batch()

    @property
    def keep_prob(self) -> float:
        """p: the probability that a hidden unit is kept."""
        return 1.0 - self.dropout_rate

    @property
    def connect_keep_prob(self) -> float:
        """q: the probability that a weight is kept."""
        return 1.0 - self.dropconnect_rate

    @property
    def test_scale(self) -> float:
        return self.keep_prob * self.connect_keep_prob

    @classmethod
    def _config_keys(cls) -> tuple[str, ...]:
        return ("dropout_rate", "dropconnect_rate")

    def _extra_config(self) -> dict:
        return {"dropout_rate": self.dropout_rate, "dropconnect_rate": self.dropconnect_rate}

    def _data_mask(self, batch, generator):
        return self._chain_mask(batch.shape[0], generator)

    def _chain_mask(self, rows, generator):
        if self.dropout_rate == 0.0:
            return None
        return _bernoulli((rows, self.n_hidden), self.keep_prob, self.visible.bias, generator)

    def _weight_mask(self, generator):
        if self.dropconnect_rate == 0.0:
            return None
        w = self.connection.weights
        return _bernoulli(tuple(w.shape), self.connect_keep_prob, w, generator).to(w.dtype)


class EDropoutRBM(_MaskedRBM):
    """Energy-based dropout RBM (Roder et al. 2020): masks from an importance level.

    ``importance(v, generator)`` returns the normalised importance (batch,
    n_hidden) in (0, 1]; each batch keeps unit j of case i when I_ij < U_ij.
    ``last_energy_gap`` is the batch's dE (see the module docs).  Train with CD;
    outside training batches the model is the full, unscaled RBM.
    """

    kind = "edropout-rbm"

    def __init__(self, visible: Units, hidden: Units, connection: DenseConnection | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(visible, hidden, connection, generator)
        self.last_energy_gap = float("nan")
        self.last_keep_fraction = float("nan")
        self.end_batch()

    def importance_terms(self, v: Tensor, generator: torch.Generator | None = None
                         ) -> dict[str, Tensor]:
        """One Gibbs step on the full network and the pieces of the importance level.

        Returns ``h``, ``v_neg``, ``h_neg`` (the samples), ``log_ratio`` =
        log P(h=1|v~) - log P(h=1|v) (batch, n_hidden), ``energy_gap`` (dE) and
        ``importance`` (the normalised I).
        """
        with self.role(None), torch.no_grad():
            field = self.hidden_field(v)
            act = self.hidden.activation(field)
            h = self.hidden.sample(field, generator=generator, mean=torch.sigmoid(act))
            v_neg = self.sample_visible(h, generator=generator)
            field_neg = self.hidden_field(v_neg)
            act_neg = self.hidden.activation(field_neg)
            h_neg = self.hidden.sample(field_neg, generator=generator,
                                       mean=torch.sigmoid(act_neg))
            log_ratio = F.logsigmoid(act_neg) - F.logsigmoid(act)
            gap = self.energy(v_neg, h_neg).mean() - self.energy(v, h).mean()
            log_i = log_ratio - torch.log(gap.abs().clamp_min(torch.finfo(v.dtype).tiny))
            # I / max_i I per hidden unit, in log space (the 1/|dE| factor cancels here).
            importance = torch.exp(log_i - log_i.max(0, keepdim=True).values)
        return {"h": h, "v_neg": v_neg, "h_neg": h_neg, "log_ratio": log_ratio,
                "energy_gap": gap, "importance": importance}

    def importance(self, v: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Normalised importance level I (batch, n_hidden), in (0, 1]."""
        return self.importance_terms(v, generator)["importance"]

    def _data_mask(self, batch, generator):
        terms = self.importance_terms(batch, generator)
        imp = terms["importance"]
        u = torch.rand(imp.shape, generator=generator, dtype=imp.dtype, device=imp.device)
        mask = imp < u
        self.last_energy_gap = float(terms["energy_gap"])
        self.last_keep_fraction = float(mask.float().mean())
        return mask

    def _chain_mask(self, rows, generator):
        raise ConfigError("edropout-rbm computes its masks from the training cases, so it trains "
                          "with CD (method 'cd'): persistent chains have no importance level")


# --------------------------------------------------------------------------- training
class MaskedSampler(Sampler):
    """Runs a sampler's negative phase under the batch's masks.

    CD chains start at the data, so they keep the data's hidden mask; any other
    sampler's chains (PCD) get their own mask per chain, drawn once per batch.
    Outside a dropout batch (or with a plain RBM) it is the wrapped sampler.
    """

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner
        self.name = inner.name
        self.chains_share_data_mask = isinstance(inner, ContrastiveDivergence)

    def negative(self, rbm, v_data, field_data, generator=None):
        if not getattr(rbm, "in_batch", False):
            return self.inner.negative(rbm, v_data, field_data, generator)
        role = "data" if self.chains_share_data_mask else "chains"
        rbm.batch_state.negative_role = role
        with rbm.role(role):
            return self.inner.negative(rbm, v_data, field_data, generator)

    @property
    def k(self) -> int:  # type: ignore[override]
        return self.inner.k

    @property
    def k_schedule(self):  # type: ignore[override]
        return self.inner.k_schedule

    def begin_epoch(self, epoch: int) -> None:
        self.inner.begin_epoch(epoch)

    def state_dict(self) -> dict[str, Tensor]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.inner.load_state_dict(state)

    def stats(self) -> dict[str, float]:
        return self.inner.stats()


def _masked_field(field: Tensor, mask: Tensor | None) -> Tensor:
    return field if mask is None else field.masked_fill(~mask, -math.inf)


class MaskedLikelihood(Objective):
    """Likelihood gradient of the network a batch's masks leave; opens and closes the batch.

    Fills ``.grad`` with the gradient of mean F(v_data | r) - mean F(v_model | r')
    (see the module docs) through ``base``'s fast path when it applies, else by
    autograd on the masked free energies.  ``base`` keeps its sparsity settings;
    centering is refused (the centred offsets would move the dropped units).
    """

    def __init__(self, base: LikelihoodGradient | None = None) -> None:
        base = base or LikelihoodGradient()
        if base.centering:
            raise ConfigError("centering is not supported with dropout: the centred gradient "
                              "would move the weights of dropped units; leave --centering off")
        self.base = base

    def setup(self, rbm: RBM, data: Tensor, init: bool = True) -> None:
        self.base.setup(rbm, data, init)

    def state_dict(self) -> dict[str, Tensor]:
        return self.base.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.base.load_state_dict(state)

    def fast_path(self, rbm: RBM) -> bool:
        return self.base.fast_path(rbm)

    def gradient(self, model, batch, sampler, generator):
        """Draw the batch's masks (``model.begin_batch``), then the masked gradient."""
        begin = getattr(model, "begin_batch", None)
        if begin is not None:
            begin(batch, generator)
        return super().gradient(model, batch, sampler, generator)

    def compute(self, rbm: RBM, v_data: Tensor, v_model: Tensor,
                field_data: Tensor | None = None,
                field_model: Tensor | None = None) -> dict[str, Tensor]:
        if not getattr(rbm, "in_batch", False):
            return self.base.compute(rbm, v_data, v_model, field_data, field_model)
        try:
            neg_role = rbm.batch_state.negative_role
            if self.base.fast_path(rbm):
                with rbm.role(None), torch.no_grad():
                    if field_data is None:
                        field_data = rbm.hidden_field(v_data)
                    if field_model is None:
                        field_model = rbm.hidden_field(v_model)
                    diag = self.base.compute(
                        rbm, v_data, v_model,
                        _masked_field(field_data, rbm.batch_mask("data")),
                        _masked_field(field_model, rbm.batch_mask(neg_role)))
                    mask = rbm.connection.weight_mask
                    if mask is not None:
                        rbm.connection.weights.grad.mul_(mask)
            else:
                diag = self._autograd(rbm, v_data, v_model, neg_role)
        finally:
            rbm.end_batch()
        return diag

    def _autograd(self, rbm, v_data, v_model, neg_role):
        if self.base.sparsity_cost:
            raise ConfigError("sparsity with dropout needs the fast path (bias-only visible "
                              "units); drop --sparsity-target or use other visible units")
        params = [p for p in rbm.parameters() if p.requires_grad]
        with torch.enable_grad():
            with rbm.role("data"):
                f_data = rbm.free_energy(v_data)
            with rbm.role(neg_role):
                f_model = rbm.free_energy(v_model.detach())
            loss = f_data.mean() - f_model.mean()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        assign_grads(params, grads)
        with torch.no_grad(), rbm.role("data"):
            q = rbm.hidden_mean(v_data).mean()
        return {"hidden_activation": q}


def training_parts(sampler: Sampler, objective: LikelihoodGradient | None = None
                   ) -> tuple[MaskedSampler, MaskedLikelihood]:
    """Wrap a sampler and a likelihood objective for training a dropout model."""
    return MaskedSampler(sampler), MaskedLikelihood(objective)


# --------------------------------------------------------------------------- CLI
def train_from_config(run) -> tuple[_MaskedRBM, list[dict]]:
    """``boltzkit train --model dropout-rbm`` / ``edropout-rbm`` through the one loop."""
    from .rbm import rbm_from_options

    kind = run["model"]
    train, _, test, _ = run.splits()
    plain = rbm_from_options(run.cfg, train.shape[1])
    if kind == "dropout-rbm":
        model: _MaskedRBM = DropoutRBM(plain.visible, plain.hidden, plain.connection,
                                       dropout_rate=run["dropout_rate"],
                                       dropconnect_rate=run["dropconnect_rate"])
    else:
        model = EDropoutRBM(plain.visible, plain.hidden, plain.connection)
    model = model.to(run.device)
    sampler, objective = training_parts(run.sampler(), run.likelihood())
    trainer = run.trainer(model, sampler, objective,
                          monitor_data=(test if test is not None else train, train))
    return model, run.fit(trainer, train, test)
