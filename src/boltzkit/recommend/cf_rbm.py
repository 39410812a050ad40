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
momentum and weight decay on the weights.  The hand-written gradient is the exact
CD gradient for these units (data minus model statistics).

**Prediction** of user u's rating of item i: ``h = E[h | v_u]`` (mean field), then
``p(v_i = k | h)``; the prediction is ``sum_k p_k * scale_k`` (like mode: ``p(like)``).

**Item-based** (``item_based=True``, the I-RBM): items are the cases and users are the
visible softmax groups; predicting (u, i) runs item i's ratings up and reads user u's
group.  It is often stronger on ml-100k (fewer cases, more ratings per case).

The training ratings are stored in the model (buffers) so a loaded model can predict and
recommend on its own: a prediction needs the user's (or item's) rating vector.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from ..connections import DenseConnection
from ..errors import ConfigError, DataError, TrainingDiverged
from ..rbm import RBM
from ..units import BernoulliUnits, SoftmaxUnits

log = logging.getLogger(__name__)

MODES = ("softmax", "like")


class CFRBM(RBM):
    """Collaborative-filtering RBM (softmax ratings or binary like/dislike), masked.

    Parameters
    ----------
    n_users, n_items: size of the index space (see :mod:`boltzkit.data.movielens`).
    n_hidden: number of binary hidden units.
    scale: the rating values (level k has value ``scale[k]``); K = len(scale).
    mode: ``"softmax"`` (K-level groups) or ``"like"`` (one Bernoulli unit per movie,
        rating >= ``like_threshold`` is a like).
    item_based: items are the cases, users the visible groups (I-RBM).
    """

    def __init__(self, n_users: int, n_items: int, n_hidden: int = 100,
                 scale: Sequence[float] = (1, 2, 3, 4, 5), mode: str = "softmax",
                 item_based: bool = False, like_threshold: float = 3.0,
                 init_std: float = 0.01, seed: int | None = 0,
                 user_ids: Sequence[int] | None = None, item_ids: Sequence[int] | None = None,
                 titles: Sequence[str] | None = None, n_train: int = 0,
                 info: dict | None = None) -> None:
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
        self.seed, self.init_std = seed, init_std
        self.titles = list(titles) if titles is not None else []
        self.info = dict(info or {})
        uids = np.arange(1, n_users + 1) if user_ids is None else np.asarray(user_ids)
        iids = np.arange(1, n_items + 1) if item_ids is None else np.asarray(item_ids)
        self.register_buffer("user_ids", torch.as_tensor(uids, dtype=torch.int64))
        self.register_buffer("item_ids", torch.as_tensor(iids, dtype=torch.int64))
        if self.user_ids.shape != (n_users,) or self.item_ids.shape != (n_items,):
            raise ConfigError("user_ids / item_ids must have n_users / n_items entries")
        # The training ratings: (user index, item index, level index) triples.
        self.register_buffer("train_ratings", torch.zeros(n_train, 3, dtype=torch.int64))
        self._cache: tuple | None = None

    # ------------------------------------------------------------------ config / io
    def config(self) -> dict:
        return {"model": "cf-rbm", "n_users": self.n_users, "n_items": self.n_items,
                "n_hidden": self.n_hidden, "scale": list(self.scale), "mode": self.mode,
                "item_based": self.item_based, "like_threshold": self.like_threshold,
                "init_std": self.init_std, "seed": self.seed, "titles": self.titles,
                "n_train": int(self.train_ratings.shape[0]), "info": self.info}

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

    def set_training_ratings(self, users, items, ratings) -> None:
        """Store the ratings the model conditions on (called by :meth:`fit`)."""
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        if len(users) == 0:
            raise DataError("no training ratings: pass a non-empty fold")
        if users.min() < 0 or users.max() >= self.n_users or items.min() < 0 \
                or items.max() >= self.n_items:
            raise DataError(f"user/item indices must lie in 0..{self.n_users - 1} / "
                            f"0..{self.n_items - 1}: load train and test from the same "
                            "MovieLens object")
        lv = self.levels(ratings)
        self.train_ratings = torch.as_tensor(np.stack([users, items, lv], 1), dtype=torch.int64)
        self._cache = None

    def _matrices(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(values, mask) as CSR over cases x visible columns, built once."""
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
            self._cache = (values, mask)
        return self._cache

    def batch(self, case_index: np.ndarray) -> tuple[Tensor, Tensor]:
        """Dense (values, group mask) for some cases; mask is (B, n_groups)."""
        values, mask = self._matrices()
        v = torch.from_numpy(values[case_index].toarray()).to(self.device, self.dtype)
        m = torch.from_numpy(mask[case_index].toarray()).to(self.device, self.dtype)
        return v, m

    def _expand(self, mask: Tensor) -> Tensor:
        """Group mask (B, n_groups) -> unit mask (B, n_visible)."""
        return mask.repeat_interleave(self.k, dim=1) if self.k > 1 else mask

    # ------------------------------------------------------------------ learning
    @torch.no_grad()
    def gradients(self, v: Tensor, mask: Tensor, steps: int = 1,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """CD-``steps`` ascent directions (data minus model statistics), batch-averaged.

        ``v``: (B, n_visible) data, anything in masked positions (it is ignored);
        ``mask``: (B, n_groups) 1 where rated.  Returns ``weights``, ``visible_bias``,
        ``hidden_bias`` directions; masked visibles contribute exactly nothing.
        """
        um = self._expand(mask)
        v0 = v * um
        h0 = self.hidden_mean(v0)
        vk, hk = v0, h0
        for _ in range(steps):
            hs = self.hidden.sample(None, mean=hk, generator=generator)
            vk = self.visible.sample(self.visible_field(hs), generator=generator) * um
            hk = self.hidden_mean(vk)
        b = v.shape[0]
        return {"weights": (v0.t() @ h0 - vk.t() @ hk) / b,
                "visible_bias": (v0 - vk).sum(0) / b,
                "hidden_bias": (h0 - hk).sum(0) / b}

    def fit(self, users, items, ratings, epochs: int = 50, batch_size: int = 10,
            lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.001,
            cd_schedule: Sequence[Sequence[int]] = ((0, 1),), seed: int = 0,
            eval_fn=None, eval_every: int = 0, verbose: bool = False) -> list[dict]:
        """Train by CD-T on the given ratings (indices + raw values).  Returns a history."""
        for name, value in (("epochs", epochs), ("batch_size", batch_size)):
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not lr > 0:
            raise ConfigError(f"lr must be positive, got {lr}")
        schedule = sorted((int(e), int(t)) for e, t in cd_schedule)
        if not schedule or schedule[0][0] != 0 or any(t < 1 for _, t in schedule):
            raise ConfigError(f"cd_schedule must start at epoch 0 with steps >= 1, e.g. "
                              f"[[0, 1], [20, 3]], got {cd_schedule!r}")
        self.set_training_ratings(users, items, ratings)
        values, mask = self._matrices()
        with torch.no_grad():  # visible biases start at the (smoothed) log rating frequencies
            counts = np.asarray(values.sum(0)).reshape(-1)
            if self.mode == "softmax":
                c = torch.as_tensor(counts.reshape(self.n_groups, self.k) + 1.0)
                self.visible.bias.copy_(torch.log(c / c.sum(1, keepdim=True)).reshape(-1))
            else:
                n = np.asarray(mask.sum(0)).reshape(-1)
                p = np.clip((counts + 1.0) / (n + 2.0), 1e-3, 1 - 1e-3)
                self.visible.bias.copy_(torch.as_tensor(np.log(p / (1 - p))))
        opt = torch.optim.SGD([{"params": [self.connection.weights], "weight_decay": weight_decay},
                               {"params": [self.visible.bias, self.hidden.bias]}],
                              lr=lr, momentum=momentum)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        rng = np.random.default_rng(seed)
        active = np.flatnonzero(np.asarray(mask.sum(1)).reshape(-1) > 0)
        history = []
        for epoch in range(epochs):
            steps = [t for e, t in schedule if e <= epoch][-1]
            start = time.perf_counter()
            order = rng.permutation(active)
            for lo in range(0, len(order), batch_size):
                v, m = self.batch(order[lo:lo + batch_size])
                g = self.gradients(v, m, steps, gen)
                self.connection.weights.grad = -g["weights"]
                self.visible.bias.grad = -g["visible_bias"]
                self.hidden.bias.grad = -g["hidden_bias"]
                opt.step()
            if not self.parameters_finite():
                raise TrainingDiverged(f"CF-RBM parameters became NaN/inf in epoch {epoch + 1}: "
                                       "lower lr (e.g. halve it) or raise weight_decay")
            row = {"epoch": epoch + 1, "cd_steps": steps, "seconds": time.perf_counter() - start}
            if eval_fn is not None and eval_every and ((epoch + 1) % eval_every == 0
                                                      or epoch + 1 == epochs):
                row.update(eval_fn(self))
            history.append(row)
            if verbose:
                print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items()), flush=True)
        return history

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def case_hidden(self, cases: np.ndarray, batch_size: int = 1024) -> Tensor:
        """Mean-field hidden activations E[h | v_case] for some cases."""
        out = []
        for lo in range(0, len(cases), batch_size):
            v, m = self.batch(cases[lo:lo + batch_size])
            out.append(self.hidden_mean(v * self._expand(m)))
        return torch.cat(out) if out else torch.zeros(0, self.n_hidden)

    @torch.no_grad()
    def _predict_index(self, users: np.ndarray, items: np.ndarray,
                       chunk: int = 4096) -> np.ndarray:
        cases, groups = self._split(users, items)
        uniq, inv = np.unique(cases, return_inverse=True)
        h_all = self.case_hidden(uniq)
        w = self.connection.weights
        out = []
        for lo in range(0, len(cases), chunk):
            h = h_all[torch.as_tensor(inv[lo:lo + chunk])]
            g = torch.as_tensor(groups[lo:lo + chunk])
            if self.mode == "softmax":
                cols = g[:, None] * self.k + torch.arange(self.k)
                logits = torch.einsum("pf,pkf->pk", h, w[cols]) + self.visible.bias[cols]
                p = torch.softmax(logits, -1)
                out.append(p @ torch.as_tensor(self.scale, dtype=p.dtype))
            else:
                out.append(torch.sigmoid((h * w[g]).sum(-1) + self.visible.bias[g]))
        return torch.cat(out).cpu().numpy() if out else np.zeros(0, np.float32)

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

    @staticmethod
    def _positions(known: Tensor, raw_ids, what: str) -> np.ndarray:
        """Rows of raw MovieLens ids among the model's sorted ``known`` ids."""
        ids = known.cpu().numpy()
        raw = np.atleast_1d(np.asarray(raw_ids, np.int64))
        pos = np.clip(np.searchsorted(ids, raw), 0, len(ids) - 1)
        bad = ids[pos] != raw
        if bad.any():
            raise DataError(f"unknown {what} {int(raw[bad][0])}: the model knows {what} ids "
                            f"{int(ids.min())}..{int(ids.max())} from its training data")
        return pos

    def _user_index(self, user_ids) -> np.ndarray:
        return self._positions(self.user_ids, user_ids, "user")

    def _item_index(self, item_ids) -> np.ndarray:
        return self._positions(self.item_ids, item_ids, "item")

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
        return [{"item": int(ids[items[j]]),
                 "title": self.titles[items[j]] if self.titles else str(int(ids[items[j]])),
                 "prediction": float(pred[j])} for j in order]


def rmse_mae(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    err = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    return float(math.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))


def like_error(p_like: np.ndarray, truth: np.ndarray, threshold: float = 3.0) -> float:
    """Fraction of wrong like/dislike predictions (p > 0.5 vs rating >= threshold)."""
    return float(np.mean((np.asarray(p_like) > 0.5) != (np.asarray(truth) >= threshold)))


MODEL_CLASSES = {"cf-rbm": CFRBM}
