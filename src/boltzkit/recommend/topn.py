"""Top-N lists and the metrics that judge them: precision, recall, NDCG, MAP, coverage.

A recommender is judged by the list a person sees.  For each user ``u`` a model
yields scores over the items; :func:`top_n` turns them into a list
``L_u = (i_1, ..., i_n)`` of the ``n`` best items that are not excluded (the user's
training items), and :func:`topn_metrics` compares the lists with the set ``R_u`` of
the user's relevant held-out items.  With ``hit_k = 1`` when ``i_k`` is in ``R_u``
(binary relevance) and ``m_u = min(n, |R_u|)``:

* **precision@n** = ``sum_k hit_k / n``;
* **recall@n** = ``sum_k hit_k / |R_u|``;
* **NDCG@n** = ``DCG / IDCG`` with ``DCG = sum_k hit_k / log2(k + 1)`` (a hit at rank 1
  counts 1, at rank 2 ``1 / log2(3)``, ...) and ``IDCG = sum_{k=1..m_u} 1 / log2(k + 1)``,
  the DCG of a list whose first ``m_u`` items are all relevant;
* **MAP@n**: the mean over users of ``AP@n = sum_k hit_k * precision@k / m_u``
  (precision@k = hits among the first k, divided by k).  ``ap_normaliser="relevant"``
  divides by ``|R_u|`` instead: the ``map`` of Microsoft's ``recommenders`` (their
  ``map_at_k`` before version 1.2), which is how its RBM quick-start reports MAP@10;
* **coverage@n**: the share of the catalogue's items that appear in at least one
  user's list (every list given, including users skipped by the other metrics).

Precision, recall, NDCG and MAP are averaged over the users with at least one
relevant item; users with none are skipped and counted (``n_skipped_users``).
Ties: items with equal scores are ranked by lower item index first, so a list is
a deterministic function of the scores.  A list shorter than ``n`` (a user with
fewer than ``n`` items left to rank) is padded with ``-1``, which never hits;
precision still divides by ``n``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError, DataError

AP_NORMALISERS = ("min", "relevant")


def _check_n(n: int) -> None:
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n <= 0:
        raise ConfigError(f"the list length n must be a positive integer, got {n!r}")


def pair_matrix(users: np.ndarray, items: np.ndarray, n_users: int,
                n_items: int) -> sp.csr_matrix:
    """Boolean (n_users, n_items) CSR matrix with True at the given (user, item) pairs."""
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    m = sp.csr_matrix((np.ones(len(users), bool), (users, items)), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = True
    return m


def top_n(scores: np.ndarray, n: int, exclude: sp.spmatrix | np.ndarray | None = None
          ) -> np.ndarray:
    """The ``n`` highest-scoring items of each row, best first: (n_rows, n) int64.

    scores: (n_rows, n_items); exclude: boolean (n_rows, n_items), sparse or dense,
    True for items that must never be returned (e.g. the user's training items).
    Ties go to the lower item index; missing slots (fewer than ``n`` eligible items)
    are -1.  A score of -inf counts as excluded.
    """
    _check_n(n)
    s = np.array(scores, np.float64, copy=True)
    if s.ndim != 2:
        raise DataError(f"scores must be 2-d (rows x items), got shape {s.shape}")
    if np.isnan(s).any():
        raise DataError("scores contain NaN: the model produced invalid scores")
    if exclude is not None:
        if exclude.shape != s.shape:
            raise DataError(f"exclude has shape {exclude.shape}, scores {s.shape}")
        if sp.issparse(exclude):
            r, c = exclude.nonzero()
            s[r, c] = -np.inf
        else:
            s[np.asarray(exclude, bool)] = -np.inf
    # a stable sort of -score: equal scores keep the lower item index first
    top = np.argsort(-s, axis=1, kind="stable")[:, :n]
    top[np.take_along_axis(s, top, 1) == -np.inf] = -1
    if top.shape[1] < n:
        top = np.hstack([top, np.full((len(top), n - top.shape[1]), -1, np.int64)])
    return top.astype(np.int64)


def topn_metrics(top: np.ndarray, relevant: sp.spmatrix | np.ndarray,
                 ap_normaliser: str = "min") -> dict:
    """Precision, recall, NDCG, MAP and coverage at n = ``top.shape[1]`` (module docs).

    top: (n_users, n) item indices from :func:`top_n` (-1 = empty slot); relevant:
    boolean (n_users, n_items), sparse or dense.  Returns ``precision@n``, ``recall@n``,
    ``ndcg@n``, ``map@n``, ``coverage@n``, ``n_ranked_users`` and ``n_skipped_users``.
    """
    if ap_normaliser not in AP_NORMALISERS:
        raise ConfigError(f"unknown ap_normaliser {ap_normaliser!r}: choose one of "
                          f"{list(AP_NORMALISERS)}")
    top = np.asarray(top, np.int64)
    if top.ndim != 2 or top.shape[1] == 0:
        raise DataError(f"top must be a 2-d array of item indices, got shape {top.shape}")
    if top.shape[0] != relevant.shape[0]:
        raise DataError(f"{top.shape[0]} lists for {relevant.shape[0]} users")
    n_items = relevant.shape[1]
    if top.max(initial=-1) >= n_items:
        raise DataError(f"item index {int(top.max())} is outside the {n_items} items")
    rel = sp.csr_matrix(relevant, dtype=bool)
    n_rel = np.asarray(rel.sum(1)).reshape(-1).astype(np.int64)
    users = np.flatnonzero(n_rel > 0)
    n = top.shape[1]
    shown = top[top >= 0]
    coverage = len(np.unique(shown)) / n_items if n_items else 0.0
    out = {"n_ranked_users": int(len(users)), "n_skipped_users": int(top.shape[0] - len(users))}
    if len(users) == 0:
        raise DataError("no user has a relevant held-out item: nothing to score the lists on")
    t = top[users]
    hits = np.asarray(rel[users[:, None], np.maximum(t, 0)].todense()) & (t >= 0)
    r = n_rel[users]
    m = np.minimum(r, n)
    discount = 1.0 / np.log2(np.arange(2, n + 2))
    ndcg = (hits * discount).sum(1) / np.cumsum(discount)[m - 1]
    prec_k = np.cumsum(hits, 1) / np.arange(1, n + 1)
    ap = (prec_k * hits).sum(1) / (m if ap_normaliser == "min" else r)
    n_hits = hits.sum(1)
    out.update({f"precision@{n}": float((n_hits / n).mean()),
                f"recall@{n}": float((n_hits / r).mean()),
                f"ndcg@{n}": float(ndcg.mean()), f"map@{n}": float(ap.mean()),
                f"coverage@{n}": float(coverage)})
    return out
