"""A ranking RBM: which items will a user pick next (implicit feedback, top-N lists).

Rating models (:class:`~.cf_rbm.CFRBM`) predict *how* a user would rate a movie, and a
list sorted by that prediction favours obscure movies with a few high ratings.  A top-N
list should instead hold the items the user is most likely to pick.  :class:`RankRBM`
models exactly that: a plain Bernoulli RBM over the user x item 0/1 matrix of
interactions (one visible unit per item, 1 = the user interacted with it), trained by
the library's :class:`~boltzkit.training.Trainer` like any other RBM, and an item is
scored by its conditional probability of being on given the user's row.  Item-based
(``item_based=True``): items are the cases and users the visible units, and user u's
score of item i is the probability of unit u in item i's row.

**Scoring** (``prediction``), for case row v and target unit i:

* ``"mean-field"``: ``p(v_i = 1 | h = E[h | v]) = sigmoid(b_i + W_i . sigmoid(c + v W))``,
  one reconstruction pass.  For a seen item v_i = 1 feeds its own score.
* ``"exact"``: ``p(v_i = 1 | v_-i)``, the hidden layer summed out, from the free-energy
  difference of the row with unit i off and on: ``logit = F(v_-i, v_i = 0) -
  F(v_-i, v_i = 1) = b_i + sum_j [softplus(a_j + W_ij) - softplus(a_j)]`` with
  ``a = c + v_-i W`` (i's own contribution removed, so seen items are scored fairly too).
  It costs n_items x n_hidden softplus pairs per row.

On a validation split carved from ml-100k's u1.base both gave NDCG@10 within 0.002 of
each other (docs/results/ranking.md); the shipped config uses ``"mean-field"``.

**What the file holds** (:func:`boltzkit.io.save_model`): the weights and biases
(``weights``, ``visible_bias``, ``hidden_bias``), the raw ``user_ids`` / ``item_ids``
and the titles (:class:`~.catalog.Catalog`), and the training interactions
(``interactions``, (n, 2) user and item indices) so a loaded model ranks on its own and
never returns what a user has already seen.  A user with no interactions gets the
most popular items (training interaction counts), marked as a popularity fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from ..connections import DenseConnection
from ..errors import ConfigError, DataError
from ..rbm import RBM
from ..units import BernoulliUnits
from .catalog import Catalog
from .topn import pair_matrix, top_n

PREDICTIONS = ("mean-field", "exact")


class RankRBM(Catalog, RBM):
    """Bernoulli RBM over the user x item interaction matrix, ranking by p(v_i = 1 | ...).

    Parameters
    ----------
    n_users, n_items: size of the index space (raw ids in ``user_ids`` / ``item_ids``).
    n_hidden: binary hidden units.
    item_based: items are the cases, users the visible units.
    prediction: ``"mean-field"`` or ``"exact"`` (module docs).
    init_std, seed: the initial weights' scale and generator seed.
    titles: one per item (optional); n_train: rows of the ``interactions`` buffer (set by
        :meth:`set_interactions`; given when rebuilding from a file); info: JSON-able notes
        (data set, fold, source file), saved with the model.
    """

    def __init__(self, n_users: int, n_items: int, n_hidden: int = 200,
                 item_based: bool = False, prediction: str = "mean-field",
                 init_std: float = 0.01, seed: int | None = 0,
                 user_ids: Sequence[int] | None = None, item_ids: Sequence[int] | None = None,
                 titles: Sequence[str] | None = None, n_train: int = 0,
                 info: dict | None = None) -> None:
        if prediction not in PREDICTIONS:
            raise ConfigError(f"unknown prediction {prediction!r}: choose one of "
                              f"{list(PREDICTIONS)}")
        for name, value in (("n_users", n_users), ("n_items", n_items), ("n_hidden", n_hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        n_cases, n_groups = (n_items, n_users) if item_based else (n_users, n_items)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        super().__init__(BernoulliUnits(n_groups), BernoulliUnits(n_hidden),
                         DenseConnection(n_groups, n_hidden, init_std=init_std, generator=gen))
        self.n_users, self.n_items, self.item_based = n_users, n_items, bool(item_based)
        self.n_cases, self.n_groups = n_cases, n_groups
        self.prediction, self.init_std, self.seed = prediction, init_std, seed
        self.info = dict(info or {})
        self._init_catalog(n_users, n_items, user_ids, item_ids, titles)
        # The training interactions: (user index, item index) rows, distinct, sorted.
        self.register_buffer("interactions", torch.zeros(n_train, 2, dtype=torch.int64))
        self._cache: dict[str, Any] = {}

    # ------------------------------------------------------------------ config / io
    def config(self) -> dict:
        return {"model": "rank-rbm", "n_users": self.n_users, "n_items": self.n_items,
                "n_hidden": self.n_hidden, "item_based": self.item_based,
                "prediction": self.prediction, "init_std": self.init_std, "seed": self.seed,
                "titles": self.titles, "n_train": int(self.interactions.shape[0]),
                "info": self.info}

    @classmethod
    def from_config(cls, cfg: dict) -> RankRBM:
        cfg = dict(cfg)
        if cfg.pop("model", "rank-rbm") != "rank-rbm":
            raise ConfigError("config does not describe a rank-rbm")
        return cls(**cfg)

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache = {}
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):  # .to(device / dtype): cached tensors follow
        self._cache = {}
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------ data
    def set_interactions(self, users, items) -> None:
        """Store the training interactions: (user index, item index) pairs, (n,) each.

        Duplicates are kept once.  These are the rows the model trains on
        (:meth:`case_matrix`) and the items :meth:`recommend` never returns (so with
        ``min_weight`` > 0, a pair below the threshold is neither learnt from nor hidden).
        """
        users, items = np.asarray(users), np.asarray(items)
        if users.shape != items.shape or users.ndim != 1:
            raise DataError(f"users and items must be 1-d arrays of one length, got "
                            f"{users.shape} and {items.shape}")
        if len(users) == 0:
            raise DataError("no training interactions: pass at least one (user, item) pair")
        if users.dtype.kind not in "iu" or items.dtype.kind not in "iu":
            raise DataError("user and item indices must be integers")
        if (users.min() < 0 or users.max() >= self.n_users or items.min() < 0
                or items.max() >= self.n_items):
            raise DataError(f"user/item indices must lie in 0..{self.n_users - 1} / "
                            f"0..{self.n_items - 1}")
        pairs = np.unique(np.stack([users, items], 1).astype(np.int64), axis=0)
        self.interactions = torch.as_tensor(pairs, device=self.interactions.device)
        self._cache = {}

    def _pairs(self) -> tuple[np.ndarray, np.ndarray]:
        t = self.interactions.cpu().numpy()
        if len(t) == 0:
            raise DataError("the model has no training interactions: train it first")
        return t[:, 0], t[:, 1]

    def interaction_matrix(self) -> sp.csr_matrix:
        """Boolean (n_users, n_items) CSR matrix of the training interactions."""
        if "seen" not in self._cache:
            self._cache["seen"] = pair_matrix(*self._pairs(), self.n_users, self.n_items)
        return self._cache["seen"]

    def case_matrix(self) -> Tensor:
        """The training rows, dense 0/1: (n_users, n_items), or (n_items, n_users) item-based.

        This is what the :class:`~boltzkit.training.Trainer` fits.
        """
        if "cases" not in self._cache:
            m = self.interaction_matrix()
            m = m.T if self.item_based else m
            self._cache["cases"] = torch.as_tensor(m.toarray(), dtype=self.dtype,
                                                   device=self.device)
        return self._cache["cases"]

    def item_counts(self) -> np.ndarray:
        """Training interactions per item, (n_items,): the popularity fallback's scores."""
        return np.asarray(self.interaction_matrix().sum(0)).reshape(-1)

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def conditional_logits(self, v: Tensor, units: Tensor | None = None,
                           prediction: str | None = None, chunk: int = 1 << 22) -> Tensor:
        """Logits of p(v_i = 1 | ...) for some visible units of some case rows.

        v: (B, n_visible) 0/1 rows; units: (P,) visible indices (None: all).  Returns
        (B, P).  ``prediction`` (default: the model's) picks mean-field or exact (module
        docs); the exact path works in chunks of about ``chunk`` floats.
        """
        prediction = prediction or self.prediction
        if prediction not in PREDICTIONS:
            raise ConfigError(f"unknown prediction {prediction!r}: choose one of "
                              f"{list(PREDICTIONS)}")
        v = v.to(device=self.device, dtype=self.dtype)
        if units is None:
            units = torch.arange(self.n_visible, device=self.device)
        w = self.connection.weights[units]                      # (P, F)
        b = self.visible.bias[units]                            # (P,)
        field = self.hidden_field(v)                            # (B, F), bias not included
        if prediction == "mean-field":
            return self.hidden.mean(field) @ w.t() + b
        rows = max(1, chunk // max(1, len(units) * self.n_hidden))
        out = []
        for lo in range(0, v.shape[0], rows):
            # the field without unit i's own contribution: a_-i = a - v_i W_i, (b, P, F)
            rest = field[lo:lo + rows, None, :] - v[lo:lo + rows, units, None] * w
            # F(v_-i, v_i = 0) - F(v_-i, v_i = 1) = b_i + logZ_h(a_-i + W_i) - logZ_h(a_-i)
            out.append(b + self.hidden.log_partition(rest + w) - self.hidden.log_partition(rest))
        return torch.cat(out) if out else field.new_zeros(0, len(units))

    @torch.no_grad()
    def scores_index(self, users, prediction: str | None = None) -> np.ndarray:
        """p(item on | the user's training row) of every item: (len(users), n_items), float64.

        users: user indices.  Item-based models read each item's row at the users' units.
        """
        users = np.asarray(users, np.int64)
        cases = self.case_matrix()
        u = torch.as_tensor(users, device=self.device)
        if self.item_based:
            logits = self.conditional_logits(cases, u, prediction).t()
        else:
            logits = self.conditional_logits(cases[u], None, prediction)
        return torch.sigmoid(logits.double()).cpu().numpy()

    def predict_all(self) -> np.ndarray:
        """Scores of every (user, item) pair, shape (n_users, n_items) (for evaluation)."""
        return self.scores_index(np.arange(self.n_users))

    # ------------------------------------------------------------------ recommending
    def recommend_index(self, users, top: int = 10, include_seen: bool = False,
                        prediction: str | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-``top`` lists of some user indices: (items, scores, fallback).

        items: (U, top) item indices, best first, -1 where fewer items are left; scores:
        (U, top) the items' probabilities (NaN in empty slots); fallback: (U,) True for
        users with no training interactions, whose lists are the most popular items
        (scores: the share of users who interacted with the item).  Seen items are never
        returned unless ``include_seen``.  Ties go to the lower item index.
        """
        if not isinstance(top, int) or isinstance(top, bool) or top <= 0:
            raise ConfigError(f"top must be a positive integer, got {top!r}")
        users = np.asarray(users, np.int64)
        seen = self.interaction_matrix()[users]
        empty = np.asarray(seen.sum(1)).reshape(-1) == 0
        scores = np.empty((len(users), self.n_items))
        if (~empty).any():
            scores[~empty] = self.scores_index(users[~empty], prediction)
        if empty.any():
            scores[empty] = self.item_counts() / self.n_users
        items = top_n(scores, top, exclude=None if include_seen else seen)
        picked = np.take_along_axis(scores, np.maximum(items, 0), 1)
        picked[items < 0] = np.nan
        return items, picked, empty

    def recommend(self, user_id: int, top: int = 10, include_seen: bool = False,
                  explain: bool = False) -> list[dict]:
        """The ``top`` best items for a raw user id, as dicts (item, title, score, seen).

        ``explain``: each entry also gets ``because`` (the user's seen items most like
        it, :meth:`explain`).  A user without interactions gets the most popular items,
        each marked ``"fallback": "popularity"``.
        """
        u = int(self._user_index(user_id)[0])
        items, scores, empty = self.recommend_index([u], top, include_seen)
        seen = self.interaction_matrix()[u]
        ids = self.item_ids.cpu().numpy()
        out = []
        for i, s in zip(items[0], scores[0], strict=True):
            if i < 0:
                break
            rec = {"item": int(ids[i]), "title": self.title(int(i)), "score": float(s),
                   "seen": bool(seen[0, i])}
            if empty[0]:
                rec["fallback"] = "popularity"
            elif explain:
                rec["because"] = self.explain(user_id, int(ids[i]))
            out.append(rec)
        return out

    @torch.no_grad()
    def item_embeddings(self) -> Tensor:
        """One vector per item, (n_items, n_hidden): what the model knows of each item.

        User-based: the item's weight row (items with similar rows are picked by the same
        users); item-based: E[h | the item's row].
        """
        if self.item_based:
            return self.hidden_mean(self.case_matrix())
        return self.connection.weights

    @torch.no_grad()
    def explain(self, user_id: int, item_id: int, n: int = 3) -> list[dict]:
        """The user's seen items most similar to ``item_id`` in the model's own terms: the
        cosine of their :meth:`item_embeddings`, largest first (at most ``n``)."""
        u = int(self._user_index(user_id)[0])
        i = int(self._item_index(item_id)[0])
        seen = self.interaction_matrix()[u].indices
        seen = seen[seen != i]
        if len(seen) == 0:
            return []
        emb = torch.nn.functional.normalize(self.item_embeddings().double(), dim=1)
        sim = (emb[torch.as_tensor(seen)] @ emb[i]).cpu().numpy()
        order = np.lexsort((seen, -sim))[:n]
        ids = self.item_ids.cpu().numpy()
        return [{"item": int(ids[seen[j]]), "title": self.title(int(seen[j])),
                 "similarity": round(float(sim[j]), 4)} for j in order]


# ----------------------------------------------------------------------------- training
#: ``boltzkit train --model rank-rbm`` options this kind reads besides the plain RBM's.
#: (fold, item_based and prediction are shared with cf-rbm: same defaults, same meaning.)
def interactions_for(cfg: dict) -> tuple[Any, dict]:
    """The interactions a config names, and the notes to save with the model.

    ``dataset``: a MovieLens name (its ``fold``'s training ratings; weight = rating) or
    the path of a ``user,item[,weight]`` CSV file (:mod:`boltzkit.data.interactions`).
    """
    from ..data.interactions import Interactions, load_interactions_csv
    from ..data.movielens import MOVIELENS_DATASETS, load_movielens

    dataset = str(cfg["dataset"])
    if dataset in MOVIELENS_DATASETS:
        data = load_movielens(dataset, cfg.get("data_dir"), str(cfg.get("fold", "1")),
                              seed=cfg.get("seed", 0))
        return (Interactions.from_movielens(data),
                {"dataset": data.name, "fold": data.split})
    if not dataset.lower().endswith(".csv"):
        raise ConfigError(f"rank-rbm trains on MovieLens ({list(MOVIELENS_DATASETS)}) or an "
                          f"interaction CSV file (user,item[,weight]), got --dataset {dataset!r}")
    if str(cfg.get("fold", "1")) != "1":
        raise ConfigError("--fold picks a MovieLens split; an interaction CSV is used whole: "
                          "drop --fold")
    return load_interactions_csv(dataset), {"source": dataset}


def fit_rank_rbm(data, cfg: dict, info: dict | None = None, quiet: bool = True,
                 callbacks: Sequence = ()) -> tuple[RankRBM, list[dict]]:
    """Train a rank-rbm on ``data`` (:class:`~boltzkit.data.interactions.Interactions`).

    ``cfg``: ``boltzkit train`` options by their registry names, checked by
    :func:`boltzkit.training.run.api_run`.  Returns (model, history).
    """
    from ..training.run import api_run

    return _fit(api_run("rank-rbm", cfg, quiet), data, info or {}, callbacks)


def _fit(run, data, info: dict, callbacks: Sequence = ()) -> tuple[RankRBM, list[dict]]:
    """The model the run's options describe, trained by the run's Trainer."""
    min_weight = float(run["min_weight"])
    users, items = data.pairs(min_weight)
    model = RankRBM(data.n_users, data.n_items, n_hidden=int(run["n_hidden"]),
                    item_based=bool(run["item_based"]), prediction=run["prediction"],
                    init_std=float(run["init_std"]), seed=run["seed"], user_ids=data.user_ids,
                    item_ids=data.item_ids, titles=data.titles,
                    info={**info, "min_weight": min_weight})
    model.set_interactions(users, items)
    model = model.to(run.device)
    trainer = run.trainer(model, run.sampler(), run.likelihood(), callbacks=list(callbacks))
    return model, run.fit(trainer, model.case_matrix())


def train_from_config(run) -> tuple[RankRBM, list[dict]]:
    """``boltzkit train --model rank-rbm``: the interactions the run names, through the
    one loop."""
    data, info = interactions_for(run.cfg)
    return _fit(run, data, info)


MODEL_CLASSES = {"rank-rbm": RankRBM}

__all__ = ["PREDICTIONS", "RankRBM", "fit_rank_rbm", "interactions_for", "train_from_config"]
