"""Held-out evaluation of recommenders: RMSE/MAE, like/dislike error, top-N ranking metrics
(precision, recall and NDCG at N), k-fold summaries.

Every model here predicts with ``predict_index(users, items)``; models that can score the
whole users x items grid faster (``predict_all()``) are used through it for ranking.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError
from .cf_rbm import like_error, rmse_mae

#: Metric names :func:`evaluate_recommender` understands.
RATING_METRICS = ("rmse", "mae", "like_error")
RANKING_METRICS = ("precision", "recall", "ndcg")


def evaluate_model(model, test) -> dict:
    """Scores of a fitted model on a :class:`~boltzkit.data.movielens.Ratings` test set."""
    if len(test) == 0:
        raise DataError("the test set is empty: nothing to evaluate")
    pred = model.predict_index(test.users, test.items)
    if getattr(model, "mode", "softmax") == "like":
        return {"like_error": round(like_error(pred, test.ratings, model.like_threshold), 4),
                "n_test": len(test)}
    rmse, mae = rmse_mae(pred, test.ratings)
    return {"rmse": round(rmse, 4), "mae": round(mae, 4), "n_test": len(test)}


def score_matrix(model, n_users: int, n_items: int, chunk: int = 200) -> np.ndarray:
    """Scores of every (user, item) pair, shape (n_users, n_items)."""
    if hasattr(model, "predict_all"):
        return np.asarray(model.predict_all(), np.float64)
    out = np.empty((n_users, n_items), np.float64)
    items = np.arange(n_items)
    for lo in range(0, n_users, chunk):
        users = np.arange(lo, min(lo + chunk, n_users))
        u = np.repeat(users, n_items)
        out[users] = np.asarray(model.predict_index(u, np.tile(items, len(users)))).reshape(
            len(users), n_items)
    return out


def ranking_metrics(scores: np.ndarray, train, test, n: int = 10,
                    threshold: float = 4.0) -> dict:
    """Precision@n, recall@n and NDCG@n (binary relevance) averaged over users.

    ``scores``: (n_users, n_items).  For each user, items rated in ``train`` are removed
    from the ranking; the test items rated >= ``threshold`` are the relevant ones; users
    with no relevant test item are skipped.  Recall divides by the number of relevant
    items, NDCG by the ideal DCG of min(n, #relevant) hits.  Ties rank lower item first.
    """
    if not isinstance(n, int) or n <= 0:
        raise ConfigError(f"the ranking cut-off n must be a positive integer, got {n!r}")
    if len(test) == 0:
        raise DataError("the test set is empty: nothing to rank against")
    s = np.array(scores, np.float64, copy=True)
    if s.shape != (train.n_users, train.n_items):
        raise DataError(f"scores have shape {s.shape}, the data {train.n_users} x "
                        f"{train.n_items}")
    s[train.users, train.items] = -np.inf
    rel = test.ratings >= threshold
    relevant = np.zeros(s.shape, bool)
    relevant[test.users[rel], test.items[rel]] = True
    users = np.flatnonzero(relevant.any(1))
    if len(users) == 0:
        raise DataError(f"no test rating is >= {threshold:g}: no user has a relevant item")
    s = s[users]
    top = np.argpartition(-s, n - 1, axis=1)[:, :n]
    # order the n picks by score (stable: lower item index first on ties)
    picked = np.take_along_axis(s, top, 1)
    order = np.lexsort((top, -picked), axis=1)
    top = np.take_along_axis(top, order, 1)
    hits = relevant[users[:, None], top]
    n_rel = relevant[users].sum(1)
    discount = 1.0 / np.log2(np.arange(2, n + 2))
    dcg = (hits * discount).sum(1)
    idcg = np.cumsum(discount)[np.minimum(n_rel, n) - 1]
    return {f"precision@{n}": float(hits.sum(1).mean() / n),
            f"recall@{n}": float((hits.sum(1) / n_rel).mean()),
            f"ndcg@{n}": float((dcg / idcg).mean()), "n_ranked_users": int(len(users))}


def evaluate_recommender(model, train, test, metrics=("rmse", "mae"), n: int = 10,
                         threshold: float = 4.0) -> dict:
    """The named metrics (rmse, mae, like_error, precision, recall, ndcg) on a test set."""
    metrics = [m.strip().lower() for m in metrics if m.strip()]
    unknown = sorted(set(metrics) - set(RATING_METRICS) - set(RANKING_METRICS))
    if unknown:
        raise ConfigError(f"unknown recommender metric(s) {unknown}: choose from "
                          f"{[*RATING_METRICS, *RANKING_METRICS]}")
    res: dict = {}
    if set(metrics) & set(RATING_METRICS):
        scores = evaluate_model(model, test)
        res.update({k: v for k, v in scores.items() if k in metrics or k == "n_test"})
        if "like_error" in metrics and "like_error" not in scores:
            raise ConfigError("like_error applies to like/dislike models; use rmse, mae")
        if set(metrics) & {"rmse", "mae"} and "rmse" not in scores:
            raise ConfigError("a like/dislike model predicts p(like), not ratings: use "
                              "like_error (or precision, recall, ndcg)")
    if set(metrics) & set(RANKING_METRICS):
        rank = ranking_metrics(score_matrix(model, train.n_users, train.n_items), train, test,
                               n=n, threshold=threshold)
        res.update({k: round(v, 4) if isinstance(v, float) else v for k, v in rank.items()
                    if k.split("@")[0] in metrics or k == "n_ranked_users"})
    return res


def summarize(values) -> tuple[float, float]:
    """(mean, sample std) of per-fold values."""
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0
