"""Collaborative filtering with RBMs: the CF-RBM (also conditional), the like/dislike RBM,
baselines (biases, biased MF, item-kNN, popularity) and evaluation (RMSE/MAE, top-N)."""

from .baselines import BiasBaseline, GlobalMean, ItemKNN, MatrixFactorization, Popularity
from .cf_rbm import CFRBM, like_error, rmse_mae

__all__ = ["CFRBM", "BiasBaseline", "GlobalMean", "ItemKNN", "MatrixFactorization",
           "Popularity", "like_error", "rmse_mae"]
