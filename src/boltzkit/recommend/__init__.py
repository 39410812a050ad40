"""Collaborative filtering with RBMs: the CF-RBM, the like/dislike RBM, baselines, evaluation."""

from .baselines import BiasBaseline, GlobalMean, MatrixFactorization
from .cf_rbm import CFRBM, like_error, rmse_mae

__all__ = ["CFRBM", "BiasBaseline", "GlobalMean", "MatrixFactorization", "like_error",
           "rmse_mae"]
