"""RBMs for collaborative filtering (Salakhutdinov, Mnih & Hinton, ICML 2007).

:class:`CFRBM` is a :class:`boltzkit.rbm.RBM` whose visible layer is
:class:`~boltzkit.units.SoftmaxUnits` (one group of K rating levels per movie) or,
for the like/dislike model of the common PyTorch tutorial, :class:`~boltzkit.units.BernoulliUnits`
(ratings 1-2 -> 0, 3-5 -> 1), with binary hidden units and a dense connection.

**Missing ratings.**  The paper gives every user an RBM with only the movies that user
rated, all sharing weights.  That is the full RBM with the unrated groups *masked*: a
missing group is all zeros in the data (so it contributes nothing to the hidden field),
the negative-phase reconstruction is multiplied by the same mask (so it is never sampled
into the field and never enters the statistics), and therefore its weights and bias get
no gradient from that user.  Placeholders in masked positions never matter: the data
are multiplied by the mask first.

**Training** is CD-T with T increasing during training (``cd_schedule``, e.g.
``[[0, 1], [20, 3], [35, 5]]``: T=1 from epoch 0, 3 from epoch 20, 5 from 35), SGD with
momentum and weight decay on the weights, an optional learning-rate decay
(``lr_schedule``) and optional Polyak averaging of the parameters over the last epochs
(``average_from``).  The hand-written gradient is the exact CD gradient for these units
(data minus model statistics); the negative phase samples only the P rated groups of a
batch, so a step costs O(P K F) rather than O(batch x all visibles x F).

**Conditional RBM** (``conditional=True``, section 4 of the paper): which movies a user
rated is information even where the rating is unknown (the paper uses the Netflix
qualifying pairs).  A binary indicator ``r`` over the visible groups (1 = rated, in the
training data *or* among the extra pairs passed to :meth:`CFRBM.fit` as ``implicit``, e.g.
the test pairs without their ratings) adds ``r @ D`` to the hidden field; ``D`` is a
second :class:`~boltzkit.connections.DenseConnection` (groups x hidden, starting at zero)
and learns by ``dD = r^T (h_data - h_model)``.

**Prediction** of user u's rating of item i: ``h = E[h | v_u]`` (mean field), then
``p(v_i = k | h)``; the prediction is ``sum_k p_k * scale_k`` (like mode: ``p(like)``).
``prediction="exact"`` sums the hidden units out instead, ``p(v_i = k | v_u)`` proportional to
``exp(b_ik) prod_j (1 + exp(a_j + W_ikj))`` (a = the hidden input from v_u), as cheap.

**Item-based** (``item_based=True``, the I-RBM): items are the cases and users are the
visible softmax groups; predicting (u, i) runs item i's ratings up and reads user u's
group.  It is often stronger on ml-100k (fewer cases, more ratings per case).

The training ratings are stored in the model (buffers) so a loaded model can predict and
recommend on its own: a prediction needs the user's (or item's) rating vector.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .. import precision
from ..connections import DenseConnection
from ..errors import ConfigError, DataError
from ..objectives import Objective
from ..rbm import RBM
from ..sampling import check_k_schedule
from ..units import BernoulliUnits, SoftmaxUnits
from .catalog import Catalog

log = logging.getLogger(__name__)

MODES = ("softmax", "like")
PREDICTIONS = ("mean-field", "exact")


class CFRBM(Catalog, RBM):
    """Collaborative-filtering RBM (softmax ratings or binary like/dislike), masked.

    Parameters
    ----------
    n_users, n_items: size of the index space (see :mod:`boltzkit.data.movielens`).
    n_hidden: number of binary hidden units.
    scale: the rating values (level k has value ``scale[k]``); K = len(scale).
    mode: ``"softmax"`` (K-level groups) or ``"like"`` (one Bernoulli unit per movie,
        rating >= ``like_threshold`` is a like).
    item_based: items are the cases, users the visible groups (I-RBM).
    conditional: condition the hidden units on which groups a case rated (matrix ``D``).
    prediction: ``"mean-field"`` (h = E[h | v], then p(v_i | h)) or ``"exact"`` (p(v_i | v)
        with the hidden units summed out); both cost one pass.
    """

    def __init__(self, n_users: int, n_items: int, n_hidden: int = 100,
                 scale: Sequence[float] = (1, 2, 3, 4, 5), mode: str = "softmax",
                 item_based: bool = False, like_threshold: float = 3.0,
                 init_std: float = 0.01, seed: int | None = 0,
                 user_ids: Sequence[int] | None = None, item_ids: Sequence[int] | None = None,
                 titles: Sequence[str] | None = None, n_train: int = 0,
                 conditional: bool = False, n_implicit: int = 0,
                 prediction: str = "mean-field", info: dict | None = None) -> None:
        if prediction not in PREDICTIONS:
            raise ConfigError(f"unknown prediction {prediction!r}: choose one of "
                              f"{list(PREDICTIONS)}")
        if mode not in MODES:
            raise ConfigError(f"unknown CF-RBM mode {mode!r}: choose one of {list(MODES)}")
        for name, value in (("n_users", n_users), ("n_items", n_items), ("n_hidden", n_hidden)):
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        scale = tuple(float(s) for s in scale)
        if len(scale) < 2 or any(b <= a for a, b in zip(scale, scale[1:], strict=False)):
            raise ConfigError(f"scale must be >= 2 increasing rating values, got {scale}")
        n_cases, n_groups = (n_items, n_users) if item_based else (n_users, n_items)
        k = len(scale) if mode == "softmax" else 1
        visible = SoftmaxUnits(n_groups * k, k) if mode == "softmax" else BernoulliUnits(n_groups)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        super().__init__(visible, BernoulliUnits(n_hidden),
                         DenseConnection(visible.n, n_hidden, init_std=init_std, generator=gen))
        self.n_users, self.n_items, self.mode = n_users, n_items, mode
        self.item_based, self.like_threshold, self.scale = item_based, float(like_threshold), scale
        self.n_cases, self.n_groups, self.k = n_cases, n_groups, k
        self.seed, self.init_std, self.prediction = seed, init_std, prediction
        self.info = dict(info or {})
        self._init_catalog(n_users, n_items, user_ids, item_ids, titles)
        # The training ratings: (user index, item index, level index) triples.
        self.register_buffer("train_ratings", torch.zeros(n_train, 3, dtype=torch.int64))
        self.conditional = bool(conditional)
        if self.conditional:  # D: rated-indicator over the groups -> hidden field
            self.implicit = DenseConnection(n_groups, n_hidden, init_std=0.0)
            # Extra (user index, item index) pairs known to be rated, rating unknown.
            self.register_buffer("implicit_pairs", torch.zeros(n_implicit, 2, dtype=torch.int64))
        self._cache: tuple | None = None

    # ------------------------------------------------------------------ config / io
    def config(self) -> dict:
        return {"model": "cf-rbm", "n_users": self.n_users, "n_items": self.n_items,
                "n_hidden": self.n_hidden, "scale": list(self.scale), "mode": self.mode,
                "item_based": self.item_based, "like_threshold": self.like_threshold,
                "init_std": self.init_std, "seed": self.seed, "titles": self.titles,
                "n_train": int(self.train_ratings.shape[0]), "conditional": self.conditional,
                "n_implicit": int(self.implicit_pairs.shape[0]) if self.conditional else 0,
                "prediction": self.prediction, "info": self.info}

    @classmethod
    def from_config(cls, cfg: dict) -> CFRBM:
        cfg = dict(cfg)
        if cfg.pop("model", "cf-rbm") != "cf-rbm":
            raise ConfigError("config does not describe a cf-rbm")
        return cls(**cfg)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._cache = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ data
    def levels(self, ratings: np.ndarray | Tensor) -> np.ndarray:
        """Map rating values to level indices 0..K-1 (DataError for values off the scale)."""
        r = np.asarray(ratings, dtype=np.float64)
        scale = np.asarray(self.scale)
        idx = np.abs(r[:, None] - scale[None, :]).argmin(1)
        bad = ~np.isclose(scale[idx], r)
        if bad.any():
            raise DataError(f"rating {r[bad][0]:g} is not on the model's scale {list(self.scale)}")
        return idx

    def _split(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (items, users) if self.item_based else (users, items)

    def _check_pairs(self, users, items, what: str) -> tuple[np.ndarray, np.ndarray]:
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        if users.shape != items.shape or users.ndim != 1:
            raise DataError(f"{what}: users and items must be 1-d arrays of one length, got "
                            f"{users.shape} and {items.shape}")
        if len(users) and (users.min() < 0 or users.max() >= self.n_users or items.min() < 0
                           or items.max() >= self.n_items):
            raise DataError(f"{what}: user/item indices must lie in 0..{self.n_users - 1} / "
                            f"0..{self.n_items - 1}: load train and test from the same "
                            "MovieLens object")
        return users, items

    def set_training_ratings(self, users, items, ratings, implicit=None) -> None:
        """Store the ratings the model conditions on (called by :meth:`fit`).

        ``implicit``: optional ``(users, items)`` pairs known to be rated whose ratings are
        not given (conditional model only; e.g. the test pairs).
        """
        users, items = self._check_pairs(users, items, "training ratings")
        if len(users) == 0:
            raise DataError("no training ratings: pass a non-empty fold")
        if len(np.asarray(ratings)) != len(users):
            raise DataError(f"{len(users)} training pairs but {len(np.asarray(ratings))} ratings")
        lv = self.levels(ratings)
        self.train_ratings = torch.as_tensor(np.stack([users, items, lv], 1), dtype=torch.int64)
        if implicit is not None:
            if not self.conditional:
                raise ConfigError("implicit (rated, rating unknown) pairs need a conditional "
                                  "model: CFRBM(..., conditional=True)")
            iu, ii = self._check_pairs(*implicit, "implicit pairs")
            self.implicit_pairs = torch.as_tensor(np.stack([iu, ii], 1), dtype=torch.int64)
        self._cache = None

    def _matrices(self) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix | None]:
        """(values, mask, rated indicator or None) as CSR over cases, built once."""
        if self._cache is None:
            t = self.train_ratings.cpu().numpy()
            cases, groups = self._split(t[:, 0], t[:, 1])
            lv = t[:, 2]
            shape = (self.n_cases, self.visible.n)
            if self.mode == "softmax":
                cols = groups * self.k + lv
                values = sp.csr_matrix((np.ones(len(lv), np.float32), (cases, cols)), shape=shape)
                mask = sp.csr_matrix((np.ones(len(lv), np.float32), (cases, groups)),
                                     shape=(self.n_cases, self.n_groups))
            else:
                like = (np.asarray(self.scale)[lv] >= self.like_threshold).astype(np.float32)
                values = sp.csr_matrix((like, (cases, groups)), shape=shape)
                mask = sp.csr_matrix((np.ones(len(lv), np.float32), (cases, groups)), shape=shape)
            rated = None
            if self.conditional:
                extra = self.implicit_pairs.cpu().numpy()
                ec, eg = self._split(extra[:, 0], extra[:, 1])
                rated = sp.csr_matrix((np.ones(len(lv) + len(ec), np.float32),
                                       (np.concatenate([cases, ec]), np.concatenate([groups, eg]))),
                                      shape=(self.n_cases, self.n_groups))
                rated.data[:] = 1.0  # duplicates (a pair in both lists) were summed
            self._cache = (values, mask, rated)
        return self._cache

    def _dense(self, m: sp.csr_matrix, case_index: np.ndarray) -> Tensor:
        return torch.from_numpy(m[case_index].toarray()).to(self.device, self.dtype)

    def batch(self, case_index: np.ndarray) -> tuple[Tensor, Tensor]:
        """Dense (values, group mask) for some cases; mask is (B, n_groups)."""
        values, mask, _ = self._matrices()
        return self._dense(values, case_index), self._dense(mask, case_index)

    def rated_batch(self, case_index: np.ndarray) -> Tensor | None:
        """Dense rated indicator (B, n_groups) of the conditional model (None otherwise)."""
        rated = self._matrices()[2]
        return None if rated is None else self._dense(rated, case_index)

    def case_hidden_mean(self, v: Tensor, rated: Tensor | None = None) -> Tensor:
        """E[h | v] with the conditional model's ``rated @ D`` added to the hidden field."""
        field = self.hidden_field(v)
        if rated is not None:
            field = field + self.implicit(rated)
        return self.hidden.mean(field)

    def _expand(self, mask: Tensor) -> Tensor:
        """Group mask (B, n_groups) -> unit mask (B, n_visible)."""
        return mask.repeat_interleave(self.k, dim=1) if self.k > 1 else mask

    # ------------------------------------------------------------------ learning
    @torch.no_grad()
    def gradients(self, v: Tensor, mask: Tensor, steps: int = 1,
                  generator: torch.Generator | None = None,
                  rated: Tensor | None = None) -> dict[str, Tensor]:
        """CD-``steps`` ascent directions (data minus model statistics), batch-averaged.

        ``v``: (B, n_visible) data, anything in masked positions (it is ignored);
        ``mask``: (B, n_groups) 1 where rated; ``rated``: the conditional model's indicator
        (B, n_groups).  Returns ``weights``, ``visible_bias``, ``hidden_bias`` (and
        ``implicit`` for D) directions; masked visibles contribute exactly nothing.
        """
        # Only the rated groups take part (unrated ones are 0 in data and reconstruction),
        # so the phases work on the P rated (case, group) pairs: sparse and cheap.
        b = v.shape[0]
        rows, groups = mask.nonzero(as_tuple=True)
        cols = self._columns(groups)                      # (P, K) visible columns
        wc = self.connection.weights[cols]                # (P, K, F)
        extra = self.implicit(rated) if rated is not None else 0.0

        def up(vals: Tensor) -> Tensor:                   # (P, K) states -> E[h] (B, F)
            field = torch.zeros(b, self.n_hidden, dtype=wc.dtype, device=wc.device)
            field.index_add_(0, rows, precision.call(torch.einsum, "pk,pkf->pf", vals, wc))
            return self.hidden.mean(field + extra)

        vals0 = v[rows[:, None], cols]
        h0 = up(vals0)
        valsk, hk = vals0, h0
        for _ in range(steps):
            hs = self.hidden.sample(None, mean=hk, generator=generator)
            logits = self._logits(hs[rows], cols, wc=wc)
            if self.mode == "softmax":
                pick = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
                valsk = torch.zeros_like(logits).scatter_(1, pick, 1.0)
            else:
                p = torch.sigmoid(logits)
                valsk = (torch.rand(p.shape, generator=generator, device=p.device) < p).to(p.dtype)
            hk = up(valsk)
        flat = cols.reshape(-1)
        stats = (vals0[:, :, None] * h0[rows][:, None, :]
                 - valsk[:, :, None] * hk[rows][:, None, :]).reshape(len(flat), -1)
        g = {"weights": torch.zeros_like(self.connection.weights).index_add_(0, flat, stats) / b,
             "visible_bias": torch.zeros_like(self.visible.bias).index_add_(
                 0, flat, (vals0 - valsk).reshape(-1)) / b,
             "hidden_bias": (h0 - hk).sum(0) / b}
        if rated is not None:
            g["implicit"] = precision.mm(rated.t(), h0 - hk) / b
        return g

    @torch.no_grad()
    def _assign(self, values: dict[str, Tensor]) -> None:
        for name, p in self._parameter_of().items():
            p.copy_(values[name])

    def _parameter_of(self) -> dict[str, Tensor]:
        """Gradient name -> parameter."""
        p = {"weights": self.connection.weights, "visible_bias": self.visible.bias,
             "hidden_bias": self.hidden.bias}
        if self.conditional:
            p["implicit"] = self.implicit.weights
        return p

    def fit(self, users, items, ratings, epochs: int = 50, batch_size: int = 10,
            lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.001,
            cd_schedule: Sequence[Sequence[int]] = ((0, 1),), seed: int = 0,
            lr_schedule: str = "constant", lr_final_factor: float = 0.1,
            average_from: int = 0, implicit=None, eval_fn=None, eval_every: int = 0,
            verbose: bool = False, **trainer_options) -> list[dict]:
        """Train by CD-T on the given ratings (indices + raw values) through the one
        :class:`~boltzkit.training.Trainer`.  Returns its history.

        ``cd_schedule``: [(from_epoch, T), ...], CD-T from that epoch (0-based) on.
        ``lr_schedule`` (constant, linear, exponential, cosine) decays the learning rate per
        epoch towards ``lr_final_factor * lr``; ``average_from`` (> 0): the model ends with
        (and ``eval_fn`` sees) the mean of the parameters after every step from that epoch
        (1-based) on, Polyak averaging that damps the CD noise; ``implicit``: ``(users,
        items)`` pairs known to be rated, ratings unknown (conditional model).  ``eval_fn``
        (model -> dict) adds its entries to the record every ``eval_every`` epochs and at
        the last one.  Other keyword arguments go to the Trainer (e.g. ``checkpoint_dir``).
        """
        from ..sampling import ContrastiveDivergence
        from ..training import Trainer

        self.set_training_ratings(users, items, ratings, implicit)
        sampler = ContrastiveDivergence(1)
        sampler.k_schedule = check_k_schedule(cd_schedule)
        callbacks = list(trainer_options.pop("callbacks", ()))
        if eval_fn is not None and eval_every:
            callbacks.append(_EvalEvery(eval_fn, eval_every))
        if verbose:
            from ..training.run import print_epoch

            callbacks.append(print_epoch)
        trainer = Trainer(self, sampler, RatedLikelihood(), "sgd", epochs=epochs,
                          batch_size=batch_size, lr=lr, momentum=momentum,
                          weight_decay=weight_decay, lr_schedule=lr_schedule,
                          lr_final_factor=lr_final_factor, average_from=average_from,
                          seed=seed, monitor_size=0, callbacks=callbacks,
                          progress=trainer_options.pop("progress", False), **trainer_options)
        return trainer.fit(CaseRows(self))

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def case_hidden(self, cases: np.ndarray, batch_size: int = 1024,
                    activation: bool = False) -> Tensor:
        """Mean-field hidden activations E[h | v_case] for some cases (``activation``: the
        hidden units' total input, bias included, instead)."""
        out = []
        for lo in range(0, len(cases), batch_size):
            idx = cases[lo:lo + batch_size]
            v, m = self.batch(idx)
            field = self.hidden_field(v * self._expand(m))
            rated = self.rated_batch(idx)
            if rated is not None:
                field = field + self.implicit(rated)
            out.append(self.hidden.activation(field) if activation else self.hidden.mean(field))
        return torch.cat(out) if out else torch.zeros(0, self.n_hidden)

    def _columns(self, groups: Tensor) -> Tensor:
        """Visible columns (P, K) of some groups."""
        return groups[:, None] * self.k + torch.arange(self.k, device=groups.device)

    def _logits(self, x: Tensor, cols: Tensor, exact: bool = False,
                wc: Tensor | None = None) -> Tensor:
        """Visible logits (P, K) of one group per row given hidden states / means ``x``
        (``exact``: given the hidden input, with the hidden units summed out); ``wc`` is
        ``weights[cols]`` when the caller has it."""
        wc = self.connection.weights[cols] if wc is None else wc
        b = self.visible.bias[cols]
        if exact:
            return torch.nn.functional.softplus(x[:, None, :] + wc).sum(-1) + b
        return precision.call(torch.einsum, "pf,pkf->pk", x, wc) + b

    def _group_prediction(self, x: Tensor, groups: Tensor) -> Tensor:
        """Expected rating (like mode: p(like)) of one visible group per row.

        Mean field: ``x`` = E[h | v], ``p(k) ~ exp(b_k + x . W_k)``.  Exact: ``x`` = the
        hidden input a, ``p(k) ~ exp(b_k) prod_j (1 + exp(a_j + W_jk))`` (the hidden units
        summed out; eq. 3 of the paper), for a group the case has not rated.
        """
        logits = self._logits(x, self._columns(groups), exact=self.prediction == "exact")
        if self.mode == "softmax":
            return torch.softmax(logits, -1) @ torch.as_tensor(self.scale, dtype=logits.dtype)
        if self.prediction == "exact":  # against the all-off state of the unit
            logits = logits - torch.nn.functional.softplus(x).sum(-1, keepdim=True)
        return torch.sigmoid(logits[:, 0])

    @torch.no_grad()
    def _predict_index(self, users: np.ndarray, items: np.ndarray,
                       chunk: int = 4096) -> np.ndarray:
        cases, groups = self._split(users, items)
        uniq, inv = np.unique(cases, return_inverse=True)
        x_all = self.case_hidden(uniq, activation=self.prediction == "exact")
        out = []
        for lo in range(0, len(cases), chunk):
            x = x_all[torch.as_tensor(inv[lo:lo + chunk])]
            out.append(self._group_prediction(x, torch.as_tensor(groups[lo:lo + chunk])))
        return torch.cat(out).cpu().numpy() if out else np.zeros(0, np.float32)

    def predict_all(self) -> np.ndarray:
        """Predictions for every (user index, item index) pair, shape (n_users, n_items)."""
        users = np.repeat(np.arange(self.n_users), self.n_items)
        items = np.tile(np.arange(self.n_items), self.n_users)
        return self._predict_index(users, items).reshape(self.n_users, self.n_items)

    def predict_index(self, users, items) -> np.ndarray:
        """Predictions for (user index, item index) pairs: expected rating, or p(like)."""
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        if users.shape != items.shape:
            raise DataError(f"users and items must have the same length, got {users.shape} "
                            f"and {items.shape}")
        if len(users) and (users.min() < 0 or users.max() >= self.n_users or items.min() < 0
                           or items.max() >= self.n_items):
            raise DataError("user/item index out of range for this model")
        return self._predict_index(users, items)

    def predict(self, user_ids, item_ids) -> np.ndarray:
        """Predicted ratings (like mode: p(like)) for raw MovieLens user and item ids."""
        return self.predict_index(self._user_index(user_ids), self._item_index(item_ids))

    def rated_items(self, user_id: int) -> np.ndarray:
        """Item indices the user rated in the training data."""
        u = int(self._user_index(user_id)[0])
        t = self.train_ratings
        return t[t[:, 0] == u, 1].cpu().numpy()

    def recommend(self, user_id: int, top: int = 10) -> list[dict]:
        """The ``top`` unrated items with the highest predicted rating for a raw user id."""
        if not isinstance(top, int) or top <= 0:
            raise ConfigError(f"top must be a positive integer, got {top!r}")
        if self.train_ratings.shape[0] == 0:
            raise DataError("the model has no training ratings: fit it first")
        u = int(self._user_index(user_id)[0])
        items = np.setdiff1d(np.arange(self.n_items), self.rated_items(user_id))
        pred = self.predict_index(np.full(len(items), u), items)
        order = np.argsort(-pred, kind="stable")[:top]
        ids = self.item_ids.cpu().numpy()
        return [{"item": int(ids[items[j]]), "title": self.title(items[j]),
                 "prediction": float(pred[j])} for j in order]


class CaseRows:
    """The Trainer's rows of a CF-RBM: its cases (users, or items for an I-RBM) that rated
    anything; ``take(idx)`` is the dense batch (values (B, n_visible), group mask
    (B, n_groups), rated indicator or None) built from the sparse rating matrices."""

    def __init__(self, model: CFRBM) -> None:
        _, mask, _ = model._matrices()
        self.model = model
        self.active = np.flatnonzero(np.asarray(mask.sum(1)).reshape(-1) > 0)
        self.n = len(self.active)
        if self.n == 0:
            raise DataError("no training ratings: pass a non-empty fold")

    def take(self, idx: Tensor):
        cases = self.active[idx.cpu().numpy()]
        v, m = self.model.batch(cases)
        return v, m, self.model.rated_batch(cases)

    def full(self) -> CaseRows:
        return self

    def release(self) -> None:
        return None


class RatedLikelihood(Objective):
    """The CF-RBM's part for the training loop: CD on each case's rated groups only.

    A batch is (values, group mask, rated indicator) of some cases (:class:`CaseRows`).
    The model phase is CD-k of the masked per-case RBMs of the paper (unrated groups are
    never sampled and get no gradient), run by :meth:`CFRBM.gradients` with the sampler's
    k (and its ``k_schedule``): persistent chains would belong to no user.  Setup starts
    the visible biases at the smoothed log rating frequencies.
    """

    def setup(self, model, rows, init=True):
        if not init:
            return
        values, mask, _ = model._matrices()
        with torch.no_grad():
            counts = np.asarray(values.sum(0)).reshape(-1)
            if model.mode == "softmax":
                c = torch.as_tensor(counts.reshape(model.n_groups, model.k) + 1.0)
                model.visible.bias.copy_(torch.log(c / c.sum(1, keepdim=True)).reshape(-1))
            else:
                n = np.asarray(mask.sum(0)).reshape(-1)
                p = np.clip((counts + 1.0) / (n + 2.0), 1e-3, 1 - 1e-3)
                model.visible.bias.copy_(torch.as_tensor(np.log(p / (1 - p))))

    def gradient(self, model, batch, sampler, generator):
        v, mask, rated = batch
        g = model.gradients(v, mask, sampler.k, generator, rated)
        for name, p in model._parameter_of().items():
            if p.grad is None:
                p.grad = -g[name]
            else:
                torch.neg(g[name], out=p.grad)
        return {}

    def monitor(self, model, train, val):
        return {}


class _EvalEvery:
    """Callback: ``eval_fn(model)``'s entries in the record every ``every`` epochs and at the
    last one (the model as it would be saved: the running mean while averaging)."""

    def __init__(self, eval_fn, every: int) -> None:
        self.eval_fn, self.every = eval_fn, every

    def __call__(self, trainer, record: dict) -> None:
        if record["epoch"] % self.every == 0 or record["epoch"] == trainer.epochs:
            record.update(self.eval_fn(trainer.model))


def rmse_mae(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    err = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    return float(math.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))


def like_error(p_like: np.ndarray, truth: np.ndarray, threshold: float = 3.0) -> float:
    """Fraction of wrong like/dislike predictions (p > 0.5 vs rating >= threshold)."""
    return float(np.mean((np.asarray(p_like) > 0.5) != (np.asarray(truth) >= threshold)))


def fit_movielens(data, cfg: dict, quiet: bool = True) -> tuple[CFRBM, list[dict]]:
    """Train a CF-RBM on a MovieLens split (:func:`boltzkit.data.movielens.load_movielens`)
    and score its test ratings (in the last history row).

    ``cfg``: ``boltzkit train`` options by their registry names (e.g. ``cf_mode``,
    ``k_schedule``), checked by :func:`boltzkit.training.run.api_run`.
    """
    from ..training.run import api_run

    return _fit(api_run("cf-rbm", cfg, quiet), data)


def train_from_config(run) -> tuple[CFRBM, list[dict]]:
    """``boltzkit train --model cf-rbm``: a CF-RBM on a MovieLens split through the one loop.

    MovieLens splits share one index space and are read by
    :func:`boltzkit.data.movielens.load_movielens`.
    """
    from ..data.movielens import MOVIELENS_DATASETS, load_movielens

    if run["dataset"] not in MOVIELENS_DATASETS:
        raise ConfigError(f"cf-rbm trains on MovieLens ratings: pass --dataset one of "
                          f"{list(MOVIELENS_DATASETS)}, got {run['dataset']!r}")
    data = load_movielens(run["dataset"], run["data_dir"], str(run["fold"]), seed=run["seed"])
    return _fit(run, data)


def _fit(run, data) -> tuple[CFRBM, list[dict]]:
    """The CF-RBM the run's options describe, trained on ``data``'s training ratings; the
    conditional model learns from which pairs the test set holds (not their ratings), as
    in the paper.  The last record holds the test RMSE / MAE (or like error)."""
    from .evaluate import evaluate_model

    conditional = bool(run["conditional"])
    model = CFRBM(data.n_users, data.n_items, n_hidden=int(run["n_hidden"]), scale=data.scale,
                  mode=run["cf_mode"], item_based=bool(run["item_based"]),
                  conditional=conditional, prediction=run["prediction"], seed=run["seed"],
                  init_std=float(run["init_std"]), user_ids=data.user_ids,
                  item_ids=data.item_ids, titles=data.titles,
                  info={"dataset": data.name, "fold": data.split, "model": "cf-rbm",
                        **({"implicit": "test pairs"} if conditional else {})}).to(run.device)
    tr = data.train
    model.set_training_ratings(tr.users, tr.items, tr.ratings,
                               (data.test.users, data.test.items) if conditional else None)

    def score(m: CFRBM) -> dict:
        return {f"test_{k}": v for k, v in evaluate_model(m, data.test).items()}

    trainer = run.trainer(model, run.sampler(), RatedLikelihood(), monitor_size=0,
                          callbacks=[_EvalEvery(score, run["epochs"])])
    return model, run.fit(trainer, CaseRows(model))
