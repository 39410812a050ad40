"""Held-out evaluation of recommenders: RMSE/MAE, like/dislike error, k-fold summaries."""

from __future__ import annotations

import numpy as np

from .cf_rbm import like_error, rmse_mae


def evaluate_model(model, test) -> dict:
    """Scores of a fitted model on a :class:`~boltzkit.data.movielens.Ratings` test set."""
    pred = model.predict_index(test.users, test.items)
    if getattr(model, "mode", "softmax") == "like":
        return {"like_error": round(like_error(pred, test.ratings, model.like_threshold), 4),
                "n_test": len(test)}
    rmse, mae = rmse_mae(pred, test.ratings)
    return {"rmse": round(rmse, 4), "mae": round(mae, 4), "n_test": len(test)}


def summarize(values) -> tuple[float, float]:
    """(mean, sample std) of per-fold values."""
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0
