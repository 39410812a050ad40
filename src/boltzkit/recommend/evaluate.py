"""Held-out evaluation of recommenders: RMSE/MAE, like/dislike error, top-N ranking metrics
(precision, recall, NDCG, MAP and coverage at N, defined in :mod:`.topn`), k-fold summaries.

Every model here predicts with ``predict_index(users, items)``; models that can score the
whole users x items grid faster (``predict_all()``) are used through it for ranking.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError
from .cf_rbm import like_error, rmse_mae
from .topn import pair_matrix, top_n, topn_metrics

#: Metric names :func:`evaluate_recommender` understands.
RATING_METRICS = ("rmse", "mae", "like_error")
RANKING_METRICS = ("precision", "recall", "ndcg", "map", "coverage")


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
                    threshold: float | None = 4.0, ap_normaliser: str = "min") -> dict:
    """Precision, recall, NDCG, MAP and coverage at ``n`` of the top-``n`` lists the
    scores give (definitions: :mod:`boltzkit.recommend.topn`).

    ``scores``: (n_users, n_items).  For each user, items rated in ``train`` are never
    ranked; the test items rated >= ``threshold`` are the relevant ones (``None``: every
    test item); users with no relevant test item are skipped (``n_skipped_users``).
    Ties rank the lower item index first; ``ap_normaliser``: see
    :func:`~boltzkit.recommend.topn.topn_metrics`.
    """
    if not isinstance(n, int) or n <= 0:
        raise ConfigError(f"the ranking cut-off n must be a positive integer, got {n!r}")
    if len(test) == 0:
        raise DataError("the test set is empty: nothing to rank against")
    s = np.asarray(scores)
    if s.shape != (train.n_users, train.n_items):
        raise DataError(f"scores have shape {s.shape}, the data {train.n_users} x "
                        f"{train.n_items}")
    rel = np.ones(len(test), bool) if threshold is None else test.ratings >= threshold
    if not rel.any():
        raise DataError(f"no test rating is >= {threshold:g}: no user has a relevant item")
    seen = pair_matrix(train.users, train.items, train.n_users, train.n_items)
    relevant = pair_matrix(test.users[rel], test.items[rel], test.n_users, test.n_items)
    return topn_metrics(top_n(s, n, exclude=seen), relevant, ap_normaliser)


def evaluate_recommender(model, train, test, metrics=("rmse", "mae"), n: int = 10,
                         threshold: float | None = 4.0) -> dict:
    """The named metrics (rmse, mae, like_error, precision, recall, ndcg, map, coverage)
    on a test set; ``threshold``: the least relevant test rating (None: every test item)."""
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
                    if k.split("@")[0] in metrics or k.startswith("n_")})
    return res


def summarize(values) -> tuple[float, float]:
    """(mean, sample std) of per-fold values."""
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0
