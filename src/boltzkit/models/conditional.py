"""Conditional RBM for multivariate sequences (Taylor, Hinton & Roweis 2007).

A CRBM models frame ``v_t`` given its history ``u_t = [v_{t-1}, ..., v_{t-n}]`` (the previous
``order`` = n frames, most recent first).  It is an ordinary :class:`~boltzkit.rbm.RBM`
whose biases are offset per sample: the history adds ``A u`` to the visible bias and
``B u`` to the hidden bias (``A``, ``B`` are :class:`~boltzkit.connections.DenseConnection`
weights of shape ``(order * d, d)`` and ``(order * d, n_hidden)``)::

    E(v, h | u) = E_rbm(v, h) - (A u) . c_v(v) - (B u) . c_h(h)
    F(v | u)    = E_v(v) - (A u) . c_v(v) - log_partition_h(c_v(v) W + B u)

The units already take an additive input field, so every conditional is the units' own
``mean``/``sample`` with the dynamic bias added to the field: no unit math is copied here.

Training is CD-k through the one loop (:class:`boltzkit.training.Trainer`): batches
are (frame, history) pairs, the objective is :class:`ConditionalLikelihood`, the gradient
of ``mean F(v_data | u) - mean F(v_neg | u)`` with the negative frames ``v_neg`` held
fixed, so autograd gives the exact CD update for every parameter, ``A`` and ``B``
included.  The negative frames come from the ordinary CD sampler run on
:meth:`ConditionalRBM.conditioned` (the RBM whose biases carry each row's history), k
Gibbs sweeps from the data, each row with its own history held fixed.  Persistent
chains would carry no history, so a CRBM trains with CD.

Data: the model takes sequences ``(T, d)`` (or a list of them, or an array ``(N, T, d)``)
in the data's own units and builds the ``(history, frame)`` windows itself; windows never
cross from one sequence into the next.  A sequence needs at least ``order + 1`` frames.
Real-valued data is standardised with a stored per-feature ``data_mean`` / ``data_std``
(buffers saved with the model): :meth:`ConditionalRBM.set_standardization` sets them from
training sequences, and :meth:`ConditionalRBM.fit` calls it first when
``standardize=True`` (the default for Gaussian visibles; pass ``standardize=False`` to keep
stored statistics, e.g. when training further).  Every public method takes and returns data
in original units; the ``*_std`` helpers work in standardised units.

Prediction (the mean of ``v_t`` given its history) has three methods:

* ``"mean-field"`` (default): start at the previous frame and alternate
  ``mu_h = E[h | v, u]``, ``v = E[v | mu_h, u]`` for ``steps`` iterations (Taylor et al.'s
  deterministic reconstruction; an approximation of the conditional mean);
* ``"gibbs"``: the average of ``n_samples`` Gibbs chains run ``steps`` sweeps from the
  previous frame (a Monte Carlo estimate of the true conditional mean);
* ``"exact"``: the true conditional mean by enumerating the hidden layer (or a discrete
  visible layer); only for small layers (at most ``2**16`` states).

Generation (:meth:`ConditionalRBM.generate`) runs free: each new frame is drawn by
``gibbs_steps`` alternating Gibbs sweeps from the previous frame with the history held
fixed; the emitted frame is ``E[v | h, u]`` for the last sampled ``h`` (Taylor et al.'s
choice: the randomness comes from the hidden units), then it joins the history.

Reference: G. W. Taylor, G. E. Hinton and S. T. Roweis, "Modeling human motion using binary
latent variables", NIPS 2007.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..connections import DenseConnection, connection_from_config
from ..errors import ConfigError, DataError
from ..model import Model
from ..objectives import Objective, autograd_step
from ..rbm import RBM
from ..units import Beta, Units, make_units, units_from_config

log = logging.getLogger(__name__)

PREDICT_METHODS = ("mean-field", "gibbs", "exact")
#: Largest layer that "exact" prediction and the exact log-likelihood enumerate.
MAX_EXACT_STATES = 2**16

SequenceInput = np.ndarray | Tensor | Sequence[np.ndarray | Tensor]


class ConditionalRBM(Model):
    """An RBM whose visible and hidden biases depend on the previous ``order`` frames."""

    def __init__(self, visible: Units, hidden: Units, order: int = 2,
                 connection: nn.Module | None = None, init_std: float = 0.01,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ConfigError(f"CRBM order (number of past frames) must be an integer >= 1, "
                              f"got {order!r}")
        if connection is None:
            connection = DenseConnection(visible.n, hidden.n, init_std, generator)
        self.rbm = RBM(visible, hidden, connection)
        self.order = order
        n_hist = order * visible.n
        # history (batch, order*d) @ weights -> dynamic bias offsets.
        self.visible_history = DenseConnection(n_hist, visible.n, init_std, generator)
        self.hidden_history = DenseConnection(n_hist, hidden.n, init_std, generator)
        self.register_buffer("data_mean", torch.zeros(visible.n))
        self.register_buffer("data_std", torch.ones(visible.n))

    # --- description -------------------------------------------------------
    visible = property(lambda self: self.rbm.visible, doc="The frames' units.")
    hidden = property(lambda self: self.rbm.hidden, doc="The hidden units.")

    def config(self) -> dict:
        """JSON description that, with the tensors, rebuilds the model."""
        return {"model": "crbm", "order": self.order, "visible": self.visible.config(),
                "hidden": self.hidden.config(), "connection": self.rbm.connection.config()}

    @classmethod
    def from_config(cls, cfg: dict) -> ConditionalRBM:
        if cfg.get("model") != "crbm":
            raise ConfigError(f"config describes a {cfg.get('model')!r}, not a crbm")
        vis, hid = units_from_config(cfg["visible"]), units_from_config(cfg["hidden"])
        default = {"kind": "dense", "n_visible": vis.n, "n_hidden": hid.n}
        return cls(vis, hid, int(cfg["order"]),
                   connection=connection_from_config(cfg.get("connection", default)))

    def extra_repr(self) -> str:
        return f"order={self.order}"

    # --- data handling -----------------------------------------------------
    def _sequences(self, sequences: SequenceInput, name: str = "sequence",
                   min_length: int | None = None) -> list[Tensor]:
        """Validate and convert input to a list of (T, d) tensors (original units)."""
        min_length = self.order + 1 if min_length is None else min_length
        if isinstance(sequences, np.ndarray | Tensor):
            arr = torch.as_tensor(np.asarray(sequences) if isinstance(sequences, np.ndarray)
                                  else sequences)
            if arr.ndim == 3:
                seqs = list(arr.unbind(0))
            elif arr.ndim == 1 and self.n_visible == 1:
                seqs = [arr[:, None]]
            else:
                seqs = [arr]
        elif isinstance(sequences, Sequence) and not isinstance(sequences, str):
            seqs = [torch.as_tensor(np.asarray(s) if not isinstance(s, Tensor) else s)
                    for s in sequences]
        else:
            raise DataError(f"{name} must be an array (T, d), a list of such arrays or an "
                            f"array (N, T, d), got {type(sequences).__name__}")
        if not seqs:
            raise DataError(f"no {name}s given: pass at least one array of shape (T, d)")
        out = []
        for i, s in enumerate(seqs):
            label = name if len(seqs) == 1 else f"{name} {i}"
            if s.ndim == 1 and self.n_visible == 1:
                s = s[:, None]
            if s.ndim != 2 or s.shape[1] != self.n_visible:
                raise DataError(f"{label} has shape {tuple(s.shape)} but this CRBM has "
                                f"{self.n_visible} features per frame: pass an array "
                                f"(T, {self.n_visible}), time along the first axis")
            if s.shape[0] < min_length:
                raise DataError(f"{label} has {s.shape[0]} frames but a CRBM of order "
                                f"{self.order} needs at least {min_length} (the history "
                                f"of {self.order} frames plus one)")
            s = s.to(device=self.device, dtype=self.dtype)
            if not bool(torch.isfinite(s).all()):
                raise DataError(f"{label} contains NaN/inf values: clean or impute the "
                                "sequence first")
            out.append(s)
        return out

    def standardize(self, x: Tensor) -> Tensor:
        """Original units -> the model's standardised units ((x - data_mean) / data_std)."""
        return (x - self.data_mean) / self.data_std

    def unstandardize(self, z: Tensor) -> Tensor:
        """Standardised units -> original units."""
        return z * self.data_std + self.data_mean

    @torch.no_grad()
    def set_standardization(self, sequences: SequenceInput) -> None:
        """Store the per-feature mean and std of ``sequences`` (saved with the model)."""
        if self.visible.discrete:
            raise ConfigError(f"{self.visible.kind} visible units need discrete frames: do "
                              "not standardise them (standardize=False)")
        x = torch.cat(self._sequences(sequences, min_length=1))
        std = x.std(0) if x.shape[0] > 1 else torch.ones_like(x[0])
        self.data_mean.copy_(x.mean(0))
        self.data_std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def windows(self, sequences: SequenceInput, name: str = "sequence") -> tuple[Tensor, Tensor]:
        """(history, frame) pairs in standardised units: shapes (N, order*d) and (N, d).

        ``history[j]`` is ``[v_{t-1}, ..., v_{t-order}]`` for ``frame[j] = v_t``; windows
        never span two sequences.
        """
        hists, frames = [], []
        for s in self._sequences(sequences, name):
            z = self.standardize(s)
            T, n = z.shape[0], self.order
            hists.append(torch.cat([z[n - i - 1:T - i - 1] for i in range(n)], dim=1))
            frames.append(z[n:])
        frames_t = torch.cat(frames)
        self.visible.validate(frames_t, name)
        return torch.cat(hists), frames_t

    def _history(self, history: Tensor) -> Tensor:
        if history.ndim != 2 or history.shape[1] != self.order * self.n_visible:
            raise DataError(f"history has shape {tuple(history.shape)}, expected (batch, "
                            f"{self.order * self.n_visible}) = order x features")
        return history

    # --- the model: conditionals and energies (standardised units) ----------
    def dynamic_biases(self, history: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample offsets (A u, B u) added to the visible and hidden biases."""
        history = self._history(history)
        return self.visible_history(history), self.hidden_history(history)

    def energy(self, v: Tensor, h: Tensor, history: Tensor) -> Tensor:
        """E(v, h | u), shape (batch,)."""
        voff, hoff = self.dynamic_biases(history)
        return (self.rbm.energy(v, h) - (voff * self.visible.coupling(v)).sum(-1)
                - (hoff * self.hidden.coupling(h)).sum(-1))

    def free_energy(self, v: Tensor, history: Tensor) -> Tensor:
        """F(v | u) = -log sum_h exp(-E(v, h | u)), shape (batch,)."""
        voff, hoff = self.dynamic_biases(history)
        return (self.visible.energy(v) - (voff * self.visible.coupling(v)).sum(-1)
                - self.hidden.log_partition(self.rbm.hidden_field(v) + hoff))

    def forward(self, v: Tensor, history: Tensor) -> Tensor:
        """The module's output is the conditional free energy F(v | u)."""
        return self.free_energy(v, history)

    def conditioned(self, history: Tensor) -> RBM:
        """The RBM of p(v, h | u) for each row's history u: this model's parameters, with
        the biases offset by (A u, B u) row by row (rows of ``history`` match the states
        it is used on)."""
        voff, hoff = self.dynamic_biases(history)
        return _Conditioned(self.rbm, voff, hoff)

    def hidden_mean(self, v: Tensor, history: Tensor) -> Tensor:
        return self.hidden.mean(self.rbm.hidden_field(v) + self.dynamic_biases(history)[1])

    def visible_mean(self, h: Tensor, history: Tensor) -> Tensor:
        return self.visible.mean(self.rbm.visible_field(h) + self.dynamic_biases(history)[0])

    @torch.no_grad()
    def gibbs(self, v: Tensor, history: Tensor, steps: int = 1,
              generator: torch.Generator | None = None, mean_last: bool = False) -> Tensor:
        """``steps`` block-Gibbs sweeps v -> h -> v with each row's history held fixed.

        ``mean_last`` returns E[v | h, u] for the last sampled h instead of a sample.
        """
        voff, hoff = self.dynamic_biases(history)
        for i in range(steps):
            h = self.hidden.sample(self.rbm.hidden_field(v) + hoff, generator=generator)
            field = self.rbm.visible_field(h) + voff
            if mean_last and i == steps - 1:
                return self.visible.mean(field)
            v = self.visible.sample(field, generator=generator)
        return v

    # --- exact quantities on small layers -------------------------------------
    def _enumerated_layer(self) -> str:
        for name, units in (("hidden", self.hidden), ("visible", self.visible)):
            if units.discrete and units.n_states is not None and (
                    units.n_states <= MAX_EXACT_STATES):
                return name
        raise ConfigError(f"exact CRBM quantities need a discrete layer with at most "
                          f"{MAX_EXACT_STATES} states (e.g. <= 16 Bernoulli hidden units); "
                          f"this model has {self.n_hidden} {self.hidden.kind} hidden units: "
                          "use method='mean-field' or 'gibbs'")

    def _state_logits(self, history: Tensor, chunk: int = 1024):
        """Yield (states, log-weights (batch, S)) over every state of the enumerated layer.

        Hidden enumeration: weight exp(-F(h | u)) with the visible layer summed out;
        visible enumeration: exp(-F(v | u)).  Their logsumexp is log Z(u) either way.
        """
        layer = self._enumerated_layer()
        voff, hoff = self.dynamic_biases(history)
        units = self.hidden if layer == "hidden" else self.visible
        for states in units.enumerate_states(chunk):
            states = states.to(self.dtype)
            if layer == "hidden":
                vfield = self.rbm.visible_field(states)[None] + voff[:, None]
                logits = (-self.hidden.energy(states)[None] + hoff @ self.hidden.coupling(
                    states).t() + self.visible.log_partition(vfield))
            else:
                hfield = self.rbm.hidden_field(states)[None] + hoff[:, None]
                logits = (-self.visible.energy(states)[None] + voff @ self.visible.coupling(
                    states).t() + self.hidden.log_partition(hfield))
            yield layer, states, logits

    def log_partition(self, history: Tensor, rows: int = 256) -> Tensor:
        """log Z(u) = log of the integral of exp(-F(v | u)) over v, exact, shape (batch,).

        Works through ``rows`` histories at a time so memory stays bounded.
        """
        out = []
        for u in self._history(history).split(rows):
            parts = [logits for _, _, logits in self._state_logits(u)]
            out.append(torch.logsumexp(torch.cat(parts, dim=1), dim=1))
        return torch.cat(out)

    def conditional_log_likelihood(self, v: Tensor, history: Tensor) -> Tensor:
        """Exact log p(v | u) = -F(v | u) - log Z(u) per row (small layers only)."""
        return -self.free_energy(v, history) - self.log_partition(history)

    @torch.no_grad()
    def _exact_mean(self, history: Tensor) -> Tensor:
        parts = list(self._state_logits(history))
        log_z = torch.logsumexp(torch.cat([p[2] for p in parts], dim=1), dim=1, keepdim=True)
        voff = self.dynamic_biases(history)[0]
        mean = torch.zeros(history.shape[0], self.n_visible, dtype=self.dtype,
                           device=self.device)
        for layer, states, logits in parts:
            w = torch.exp(logits - log_z)  # (batch, S)
            if layer == "hidden":
                # E[v | u] = sum_h p(h | u) E[v | h, u], per batch row.
                vfield = self.rbm.visible_field(states)[None] + voff[:, None]
                mean += (w[..., None] * self.visible.mean(vfield)).sum(1)
            else:
                mean += w @ states
        return mean

    # --- prediction and generation -----------------------------------------
    @torch.no_grad()
    def predict_std(self, history: Tensor, method: str = "mean-field", steps: int = 10,
                    n_samples: int = 100, generator: torch.Generator | None = None) -> Tensor:
        """E[v_t | history] in standardised units (see the module docs for the methods)."""
        history = self._history(history.to(device=self.device, dtype=self.dtype))
        if method not in PREDICT_METHODS:
            raise ConfigError(f"unknown prediction method {method!r}: choose one of "
                              f"{list(PREDICT_METHODS)}")
        if steps < 1:
            raise ConfigError(f"prediction needs steps >= 1, got {steps}")
        if method == "exact":
            return torch.cat([self._exact_mean(u) for u in history.split(256)])
        last = history[:, :self.n_visible]
        if method == "gibbs":
            if n_samples < 1:
                raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
            rep = history.repeat(n_samples, 1)
            v = self.gibbs(last.repeat(n_samples, 1), rep, steps, generator, mean_last=True)
            return v.reshape(n_samples, -1, self.n_visible).mean(0)
        voff, hoff = self.dynamic_biases(history)
        v = last
        if self.visible.kind == "bernoulli":
            v = v.clamp(0, 1)
        for _ in range(steps):
            mh = self.hidden.mean(self.rbm.hidden_field(v) + hoff)
            v = self.visible.mean(self.rbm.visible_field(mh) + voff)
        return v

    @torch.no_grad()
    def predict(self, sequences: SequenceInput, method: str = "mean-field", steps: int = 10,
                n_samples: int = 100, generator: torch.Generator | None = None) -> Tensor:
        """One-step-ahead predictions of frames ``order..T-1`` of each sequence.

        Returns (sum of T_i - order, d) in original units: row j predicts the frame that
        ``windows`` pairs with history j, from the true previous frames.
        """
        history, _ = self.windows(sequences)
        z = self.predict_std(history, method, steps, n_samples, generator)
        return self.unstandardize(z)

    @torch.no_grad()
    def generate(self, seed: np.ndarray | Tensor, n_steps: int, n_chains: int = 1,
                 gibbs_steps: int = 30, sample: bool = True,
                 generator: torch.Generator | None = None) -> Tensor:
        """Free-running continuation of ``seed`` (its last ``order`` frames are the history).

        Returns (n_chains, n_steps, d) in original units.  ``sample=False`` emits the
        deterministic mean-field prediction instead of Gibbs draws (then all chains agree).
        """
        (s,) = self._sequences([seed], "seed", min_length=self.order)
        if n_steps < 1 or n_chains < 1 or gibbs_steps < 1:
            raise ConfigError("generate needs n_steps, n_chains and gibbs_steps >= 1")
        z = self.standardize(s[-self.order:])
        # history row: most recent frame first
        hist = z.flip(0).reshape(1, -1).repeat(n_chains, 1)
        out = []
        for _ in range(n_steps):
            if sample:
                v = self.gibbs(hist[:, :self.n_visible], hist, gibbs_steps, generator,
                               mean_last=True)
            else:
                v = self.predict_std(hist, "mean-field", gibbs_steps)
            out.append(v)
            hist = torch.cat([v, hist[:, :-self.n_visible]], dim=1)
        return self.unstandardize(torch.stack(out, dim=1))

    # --- training -------------------------------------------------------------
    def fit(self, sequences: SequenceInput, epochs: int = 50, batch_size: int = 32,
            lr: float = 1e-3, k: int = 1, optimizer: str = "adam", momentum: float = 0.9,
            weight_decay: float = 0.0, standardize: bool | None = None, seed: int = 0,
            validation: SequenceInput | None = None, predict_steps: int = 10,
            callback: Callable[[dict], None] | None = None,
            **trainer_options: Any) -> list[dict[str, Any]]:
        """Train by CD-k through :class:`~boltzkit.training.Trainer`; returns its history.

        ``standardize`` (default: True for real-valued visibles, False for Bernoulli) first
        stores the training sequences' mean/std in the model.  ``weight_decay`` is L2 on the
        three weight matrices (not the biases).  Each epoch records the mean free-energy
        gap (data minus CD negatives), and the one-step-ahead RMSE (mean-field prediction,
        standardised units) on the training windows and, if given, ``validation`` next to
        the persistence baseline (v_t = v_{t-1}).  Other keyword arguments go to the
        Trainer (e.g. ``checkpoint_dir``, ``lr_schedule``).
        """
        from ..sampling import ContrastiveDivergence
        from ..training import Trainer

        if standardize is None:
            standardize = not self.visible.discrete
        if standardize:
            self.set_standardization(sequences)
        rows = self.windows(sequences)[::-1]  # (frames, histories)
        val = (self.windows(validation, "validation sequence")[::-1]
               if validation is not None else None)
        callbacks = list(trainer_options.pop("callbacks", ()))
        if callback is not None:
            callbacks.append(lambda trainer, record: callback(record))
        trainer = Trainer(self, ContrastiveDivergence(k), ConditionalLikelihood(predict_steps),
                          optimizer, epochs=epochs, batch_size=batch_size, lr=lr,
                          momentum=momentum, weight_decay=weight_decay, seed=seed,
                          callbacks=callbacks, progress=trainer_options.pop("progress", False),
                          **trainer_options)
        return trainer.fit(rows, val)


class _Conditioned(RBM):
    """An RBM whose biases are offset row by row: p(v, h | u) of a CRBM (not saved)."""

    def __init__(self, rbm: RBM, voff: Tensor, hoff: Tensor) -> None:
        super().__init__(rbm.visible, rbm.hidden, rbm.connection)
        self.voff, self.hoff = voff, hoff

    def hidden_field(self, v: Tensor) -> Tensor:
        return super().hidden_field(v) + self.hoff

    def visible_field(self, h: Tensor) -> Tensor:
        return super().visible_field(h) + self.voff

    def free_energy(self, v: Tensor, beta: Beta = 1.0, field: Tensor | None = None) -> Tensor:
        lin = (self.voff * self.visible.coupling(v)).sum(-1)
        lin = lin * beta.reshape(-1) if isinstance(beta, Tensor) else lin * beta
        return super().free_energy(v, beta, field) - lin


class ConditionalLikelihood(Objective):
    """The CRBM's part for the training loop: a likelihood conditioned on each row's history.

    Batches are (frame, history) pairs: frames (batch, d), histories (batch, order * d),
    both in the model's standardised units (:meth:`ConditionalRBM.windows`).  The
    negative frames come from the sampler run on :meth:`ConditionalRBM.conditioned`;
    monitors: one-step-ahead RMSE (``train_rmse``, ``val_rmse``) with ``predict_steps``
    mean-field steps, and the persistence baseline ``val_persistence_rmse``.
    """

    def __init__(self, predict_steps: int = 10) -> None:
        if not isinstance(predict_steps, int) or predict_steps < 1:
            raise ConfigError(f"predict_steps must be an integer >= 1, got {predict_steps!r}")
        self.predict_steps = predict_steps

    def prepare(self, model, data, name="data"):
        if not (isinstance(data, tuple | list) and len(data) == 2):
            raise DataError(f"{name}: a crbm trains on (frames, histories) pairs (windows of "
                            "its sequences: ConditionalRBM.windows)")
        frames = torch.as_tensor(data[0]).to(device=model.device, dtype=model.dtype)
        history = model._history(torch.as_tensor(data[1]).to(device=model.device,
                                                              dtype=model.dtype))
        if frames.ndim != 2 or frames.shape[0] != history.shape[0]:
            raise DataError(f"{name}: {tuple(frames.shape)} frames for {history.shape[0]} "
                            "histories: pass one history row per frame")
        model.visible.validate(frames, name)
        return frames, history

    def setup(self, model, rows, init=True):
        if init:
            with torch.no_grad():
                model.visible.bias.copy_(model.visible.fit_bias(rows[0]))

    def gradient(self, model, batch, sampler, generator):
        v, u = batch
        view = model.conditioned(u)
        with torch.no_grad():
            field = view.hidden_field(v)
            negative, _ = sampler.negative(view, v, field, generator)
        params = [p for p in model.parameters() if p.requires_grad]
        gap = autograd_step(lambda: model.free_energy(v, u).mean()
                            - model.free_energy(negative.detach(), u).mean(), params)
        return {"free_energy_gap": gap}

    @torch.no_grad()
    def monitor(self, model, train, val):
        out = {}
        if train is not None:
            out["train_rmse"] = _rmse(model.predict_std(train[1], steps=self.predict_steps),
                                      train[0])
        if val is not None:
            out["val_rmse"] = _rmse(model.predict_std(val[1], steps=self.predict_steps), val[0])
            out["val_persistence_rmse"] = _rmse(val[1][:, :model.n_visible], val[0])
        return out


def _rmse(pred: Tensor, truth: Tensor) -> float:
    return float(torch.sqrt(((pred - truth) ** 2).mean()))


# --- baselines and data --------------------------------------------------------
def linear_ar_fit(history: np.ndarray, frames: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """Least-squares linear autoregression ``frame ~ [1, history] @ coef``; returns coef.

    ``history``/``frames`` are the CRBM's windows (e.g. from ``model.windows``), so the
    baseline sees exactly the same (history, frame) pairs and order.
    """
    x = np.hstack([np.ones((history.shape[0], 1)), np.asarray(history, dtype=np.float64)])
    y = np.asarray(frames, dtype=np.float64)
    if ridge > 0:
        reg = ridge * np.eye(x.shape[1])
        reg[0, 0] = 0.0
        return np.linalg.solve(x.T @ x + reg, x.T @ y)
    return np.linalg.lstsq(x, y, rcond=None)[0]


def linear_ar_predict(coef: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Predictions of a :func:`linear_ar_fit` model."""
    history = np.asarray(history, dtype=np.float64)
    return coef[0] + history @ coef[1:]


def chronological_split(seq: np.ndarray | Tensor, test_fraction: float,
                        order: int) -> tuple[Tensor, Tensor]:
    """Split one sequence in time: (train, test), the test part being the final segment.

    The last ``round(test_fraction * T)`` frames are the targets held out; the test array
    also carries the ``order`` frames before them as context (history only, never a
    target), so every held-out frame is predicted from its true past.
    """
    x = torch.as_tensor(np.asarray(seq) if not isinstance(seq, Tensor) else seq)
    if x.ndim != 2:
        raise DataError(f"a sequence must be 2-D (T, d), got shape {tuple(x.shape)}")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test fraction must be in (0, 1), got {test_fraction}")
    T = x.shape[0]
    n_test = max(1, round(test_fraction * T))
    if T - n_test < order + 1:
        raise DataError(f"a sequence of {T} frames leaves {T - n_test} for training after "
                        f"holding out {n_test}; order {order} needs at least {order + 1}: "
                        "use a longer sequence or a smaller test fraction")
    return x[:T - n_test], x[T - n_test - order:]


#: macrodata series used by the "macrodata" data set (quarterly % growth of each).
MACRO_COLUMNS = ("realgdp", "realcons", "realinv", "cpi")


def load_macrodata(columns: Sequence[str] = MACRO_COLUMNS) -> np.ndarray:
    """US quarterly macro series 1959Q1-2009Q3 (statsmodels' bundled ``macrodata``).

    Returns float32 (202, len(columns)): quarter-on-quarter growth in percent,
    ``100 * diff(log(x))`` (for ``cpi`` that is quarterly inflation).  Needs statsmodels
    (offline: the CSV ships inside the package).
    """
    try:
        from statsmodels.datasets import macrodata
    except ImportError:
        raise DataError("the macrodata data set needs statsmodels: pip install statsmodels"
                        ) from None
    df = macrodata.load_pandas().data
    unknown = [c for c in columns if c not in df.columns]
    if unknown:
        raise DataError(f"macrodata has no column(s) {unknown}; it has {list(df.columns)}")
    x = df[list(columns)].to_numpy(dtype=np.float64)
    if np.any(x <= 0):
        raise DataError("growth rates need positive series; pick other macrodata columns")
    return (100.0 * np.diff(np.log(x), axis=0)).astype(np.float32)


# --- CLI hook ------------------------------------------------------------------
def _load_sequence(run, split: str) -> Tensor:
    """A (T, d) sequence: binarised as asked for Bernoulli frames, read as it is otherwise."""
    if run["visible"] == "bernoulli":
        return run.load(split)[0]
    from ..data import load_dataset

    path = run["dataset"] if split == "train" else run["test_data"]
    return load_dataset(path, split="train", binarize="none", limit=run["limit"])[0]


def train_from_config(run):
    """``boltzkit train --model crbm``: train on a sequence file or ``macrodata``.

    ``--dataset macrodata`` or ``PATH`` (.npy/.csv, one sequence of shape (T, d)).  Without
    ``--test-data`` the final ``crbm_test_fraction`` of the sequence is held out in time
    (:func:`chronological_split`).  The loop's options apply as for every kind; the model
    phase is CD-k (``--k``).
    """
    order = int(run["crbm_order"])
    visible = run["visible"]
    if visible not in ("gaussian", "bernoulli"):
        raise ConfigError(f"--model crbm takes --visible gaussian or bernoulli, not {visible!r}")
    if str(run["dataset"]).lower() == "macrodata":
        run.unused("binarize", "macrodata is real-valued")
        train, test = chronological_split(load_macrodata(), run["crbm_test_fraction"], order)
    else:
        seq = _load_sequence(run, "train")
        if run["test_data"]:
            run.unused("crbm_test_fraction", "--test-data is the held-out sequence")
            train, test = seq, _load_sequence(run, "test")
        else:
            train, test = chronological_split(seq, run["crbm_test_fraction"], order)
    if visible == "gaussian":
        run.unused("binarize", "gaussian frames are used as they are")
    gen = torch.Generator().manual_seed(int(run["seed"]))
    opts = {"learn_variance": bool(run["learn_variance"]), "std": run["visible_std"]} \
        if visible == "gaussian" else {}
    model = ConditionalRBM(make_units(visible, int(train.shape[1]), **opts),
                           make_units("bernoulli", int(run["n_hidden"])), order,
                           init_std=float(run["init_std"]), generator=gen).to(run.device)
    if not model.visible.discrete:
        model.set_standardization(train)
    rows = model.windows(train)[::-1]  # (frames, histories)
    val = model.windows(test, "test sequence")[::-1]
    trainer = run.trainer(model, run.sampler(), ConditionalLikelihood(run["crbm_predict_steps"]))
    history = run.fit(trainer, rows, val)
    # The linear AR baseline of the same order on the same windows, for comparison.
    coef = linear_ar_fit(rows[1].cpu().numpy(), rows[0].cpu().numpy())
    ar = float(np.sqrt(((linear_ar_predict(coef, val[1].cpu().numpy())
                         - val[0].cpu().numpy()) ** 2).mean()))
    if history:
        history[-1]["val_linear_ar_rmse"] = ar
    if not run.quiet:
        print(f"linear AR({order}) baseline test RMSE {ar:.4f} (standardised units)")
    return model, history
