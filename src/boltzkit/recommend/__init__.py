"""Collaborative filtering with RBMs: the CF-RBM (also conditional), the like/dislike RBM,
the ranking RBM (implicit feedback, top-N lists), baselines (biases, biased MF, item-kNN,
popularity, EASE, cosine item-kNN) and evaluation (RMSE/MAE, top-N metrics)."""

from .baselines import (
    EASE,
    BiasBaseline,
    CosineItemKNN,
    GlobalMean,
    ItemKNN,
    MatrixFactorization,
    Popularity,
)
from .cf_rbm import CFRBM, like_error, rmse_mae
from .rank_rbm import RankRBM

__all__ = ["CFRBM", "EASE", "BiasBaseline", "CosineItemKNN", "GlobalMean", "ItemKNN",
           "MatrixFactorization", "Popularity", "RankRBM", "like_error", "rmse_mae"]
