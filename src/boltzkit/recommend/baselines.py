"""Baselines for rating prediction: global mean, regularised biases, biased MF (torch).

All take index arrays (users, items) and raw ratings like :class:`~.cf_rbm.CFRBM` and
predict with ``predict_index(users, items)``; predictions are clipped to the scale.
"""

from __future__ import annotations

import numpy as np
import torch


class GlobalMean:
    """Predict the mean training rating for everything."""

    def fit(self, users, items, ratings, **_):
        self.mu = float(np.mean(ratings))
        return self

    def predict_index(self, users, items):
        return np.full(len(users), self.mu, np.float32)


class BiasBaseline:
    """r = mu + b_u + b_i with L2 penalties, fitted by alternating exact least squares."""

    def __init__(self, reg_user: float = 5.0, reg_item: float = 5.0, iters: int = 10,
                 lo: float = 1.0, hi: float = 5.0) -> None:
        self.reg_user, self.reg_item, self.iters, self.lo, self.hi = (reg_user, reg_item, iters,
                                                                      lo, hi)

    def fit(self, users, items, ratings, n_users=None, n_items=None):
        users, items = np.asarray(users), np.asarray(items)
        r = np.asarray(ratings, np.float64)
        nu = n_users or int(users.max()) + 1
        ni = n_items or int(items.max()) + 1
        self.mu = r.mean()
        bu, bi = np.zeros(nu), np.zeros(ni)
        cu = np.bincount(users, minlength=nu)
        ci = np.bincount(items, minlength=ni)
        for _ in range(self.iters):
            bi = np.bincount(items, r - self.mu - bu[users], ni) / (ci + self.reg_item)
            bu = np.bincount(users, r - self.mu - bi[items], nu) / (cu + self.reg_user)
        self.bu, self.bi = bu, bi
        return self

    def predict_index(self, users, items):
        p = self.mu + self.bu[np.asarray(users)] + self.bi[np.asarray(items)]
        return np.clip(p, self.lo, self.hi).astype(np.float32)


class MatrixFactorization:
    """Biased MF r = mu + b_u + b_i + p_u . q_i, full-batch Adam on L2-regularised MSE."""

    def __init__(self, rank: int = 10, reg: float = 0.15, lr: float = 0.01, epochs: int = 150,
                 seed: int = 0, lo: float = 1.0, hi: float = 5.0) -> None:
        self.rank, self.reg, self.lr, self.epochs, self.seed = rank, reg, lr, epochs, seed
        self.lo, self.hi = lo, hi

    def fit(self, users, items, ratings, n_users=None, n_items=None):
        u = torch.as_tensor(np.asarray(users), dtype=torch.int64)
        i = torch.as_tensor(np.asarray(items), dtype=torch.int64)
        r = torch.as_tensor(np.asarray(ratings), dtype=torch.float32)
        nu = n_users or int(u.max()) + 1
        ni = n_items or int(i.max()) + 1
        g = torch.Generator().manual_seed(self.seed)
        self.mu = float(r.mean())
        self.P = (torch.randn(nu, self.rank, generator=g) * 0.1).requires_grad_()
        self.Q = (torch.randn(ni, self.rank, generator=g) * 0.1).requires_grad_()
        self.bu = torch.zeros(nu, requires_grad=True)
        self.bi = torch.zeros(ni, requires_grad=True)
        params = [self.P, self.Q, self.bu, self.bi]
        opt = torch.optim.Adam(params, lr=self.lr)
        n = len(r)
        for _ in range(self.epochs):
            opt.zero_grad()
            pred = self.mu + self.bu[u] + self.bi[i] + (self.P[u] * self.Q[i]).sum(-1)
            loss = ((pred - r) ** 2).sum() + self.reg * (
                (self.P[u] ** 2).sum() + (self.Q[i] ** 2).sum()
                + (self.bu[u] ** 2).sum() + (self.bi[i] ** 2).sum())
            (loss / n).backward()
            opt.step()
        return self

    @torch.no_grad()
    def predict_index(self, users, items):
        u = torch.as_tensor(np.asarray(users), dtype=torch.int64)
        i = torch.as_tensor(np.asarray(items), dtype=torch.int64)
        p = self.mu + self.bu[u] + self.bi[i] + (self.P[u] * self.Q[i]).sum(-1)
        return p.clamp(self.lo, self.hi).numpy()
