"""Baselines for rating prediction: global mean, regularised biases, biased MF (torch),
item-kNN on baseline residuals; and item popularity for top-N ranking.

All take index arrays (users, items) and raw ratings like :class:`~.cf_rbm.CFRBM` and
predict with ``predict_index(users, items)``; predictions are clipped to the scale.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import ConfigError


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
    """Biased MF r = mu + b_u + b_i + p_u . q_i minimising the squared error plus
    ``reg`` x (|p_u|^2 + |q_i|^2 + b_u^2 + b_i^2) summed over the ratings.

    ``solver="adam"``: ``epochs`` full-batch Adam steps; ``solver="als"``: ``epochs``
    sweeps of alternating least squares, each half-sweep the exact ridge solution for one
    side (so it converges in a few sweeps: the fair, fully fitted baseline).
    """

    def __init__(self, rank: int = 10, reg: float = 0.15, lr: float = 0.01, epochs: int = 150,
                 seed: int = 0, lo: float = 1.0, hi: float = 5.0, solver: str = "adam") -> None:
        if solver not in ("adam", "als"):
            raise ConfigError(f"unknown MF solver {solver!r}: choose adam or als")
        self.rank, self.reg, self.lr, self.epochs, self.seed = rank, reg, lr, epochs, seed
        self.lo, self.hi, self.solver = lo, hi, solver

    def _ridge(self, rows, cols, target, n_rows, feats) -> tuple[np.ndarray, np.ndarray]:
        """Exact (factors, biases) of one side given the other side's factors ``feats``."""
        x = np.hstack([feats, np.ones((len(feats), 1))])          # (n_cols, rank + 1)
        d = x.shape[1]
        m = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_rows, len(feats)))
        gram = (m @ (x[:, :, None] * x[:, None, :]).reshape(len(x), d * d)).reshape(-1, d, d)
        n = np.asarray(m.sum(1)).reshape(-1)
        gram += (self.reg * n + 1e-9)[:, None, None] * np.eye(d)
        rhs = sp.csr_matrix((target, (rows, cols)), shape=(n_rows, len(feats))) @ x
        sol = np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]
        return sol[:, :-1], sol[:, -1]

    def _fit_als(self, u, i, r, nu, ni):
        rng = np.random.default_rng(self.seed)
        self.mu = float(r.mean())
        P = rng.normal(0, 0.1, (nu, self.rank))
        Q = rng.normal(0, 0.1, (ni, self.rank))
        bu, bi = np.zeros(nu), np.zeros(ni)
        for _ in range(self.epochs):
            P, bu = self._ridge(u, i, r - self.mu - bi[i], nu, Q)
            Q, bi = self._ridge(i, u, r - self.mu - bu[u], ni, P)
        f = torch.float32
        self.P, self.Q = torch.as_tensor(P, dtype=f), torch.as_tensor(Q, dtype=f)
        self.bu, self.bi = torch.as_tensor(bu, dtype=f), torch.as_tensor(bi, dtype=f)
        return self

    def fit(self, users, items, ratings, n_users=None, n_items=None):
        if self.solver == "als":
            u, i = np.asarray(users, np.int64), np.asarray(items, np.int64)
            return self._fit_als(u, i, np.asarray(ratings, np.float64),
                                 n_users or int(u.max()) + 1, n_items or int(i.max()) + 1)
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


class ItemKNN:
    """Item-based k-nearest-neighbour CF on top of :class:`BiasBaseline` (Koren 2008 style).

    The similarity of items i and j is the cosine of their baseline residuals
    ``r_ui - (mu + b_u + b_i)`` over the users who rated both (an adjusted cosine), shrunk
    towards 0 by ``n_ij / (n_ij + shrinkage)`` so that pairs with few co-raters count less.
    ``r_ui = b_ui + sum_j s_ij (r_uj - b_uj) / (reg + sum_j s_ij)`` over the ``k`` most
    similar items j the user rated (positive similarities only); ``reg`` pulls predictions
    with little neighbourhood evidence back to the baseline.
    """

    def __init__(self, k: int = 40, shrinkage: float = 100.0, reg: float = 0.5,
                 reg_user: float = 5.0, reg_item: float = 5.0, lo: float = 1.0,
                 hi: float = 5.0) -> None:
        if not isinstance(k, int) or k <= 0:
            raise ConfigError(f"ItemKNN k must be a positive integer, got {k!r}")
        if shrinkage < 0:
            raise ConfigError(f"ItemKNN shrinkage must be >= 0, got {shrinkage}")
        if reg < 0:
            raise ConfigError(f"ItemKNN reg must be >= 0, got {reg}")
        self.k, self.shrinkage, self.reg, self.lo, self.hi = k, float(shrinkage), reg, lo, hi
        self.base = BiasBaseline(reg_user, reg_item, lo=-np.inf, hi=np.inf)

    def fit(self, users, items, ratings, n_users=None, n_items=None):
        users, items = np.asarray(users), np.asarray(items)
        nu = n_users or int(users.max()) + 1
        ni = n_items or int(items.max()) + 1
        self.base.fit(users, items, ratings, nu, ni)
        res = np.asarray(ratings, np.float64) - self.base.predict_index(users, items)
        resid = sp.csr_matrix((res, (users, items)), shape=(nu, ni))
        rated = sp.csr_matrix((np.ones(len(res)), (users, items)), shape=(nu, ni))
        sq = resid.multiply(resid)
        dot = (resid.T @ resid).toarray()
        # squared norms of i's residuals over the users who also rated j, and vice versa
        norm_i = (sq.T @ rated).toarray()
        co = (rated.T @ rated).toarray()
        with np.errstate(divide="ignore", invalid="ignore"):
            sim = np.where(co > 0, dot / np.sqrt(norm_i * norm_i.T), 0.0)
        sim = np.nan_to_num(sim) * co / (co + self.shrinkage)
        np.fill_diagonal(sim, 0.0)
        self.sim, self.resid, self.nu, self.ni = sim, resid, nu, ni
        return self

    def _user_scores(self, u: int, items: np.ndarray) -> np.ndarray:
        row = self.resid[u]
        js, rj = row.indices, row.data
        b = self.base.predict_index(np.full(len(items), u), items).astype(np.float64)
        if len(js) == 0:
            return b
        s = self.sim[np.ix_(items, js)]
        s = np.where(s > 0, s, 0.0)
        if len(js) > self.k:  # keep each item's k most similar rated items
            cut = np.partition(s, len(js) - self.k, axis=1)[:, len(js) - self.k][:, None]
            s = np.where(s >= cut, s, 0.0)
        den = s.sum(1) + self.reg
        with np.errstate(divide="ignore", invalid="ignore"):
            adj = np.where(den > 0, (s @ rj) / den, 0.0)
        return b + adj

    def predict_index(self, users, items):
        users, items = np.asarray(users), np.asarray(items)
        out = np.empty(len(users), np.float64)
        order = np.argsort(users, kind="stable")
        bounds = np.flatnonzero(np.diff(users[order])) + 1
        for group in np.split(order, bounds) if len(order) else []:
            out[group] = self._user_scores(int(users[group[0]]), items[group])
        return np.clip(out, self.lo, self.hi).astype(np.float32)

    def predict_all(self) -> np.ndarray:
        """Predictions for every (user, item) pair, shape (n_users, n_items)."""
        items = np.arange(self.ni)
        return np.clip(np.stack([self._user_scores(u, items) for u in range(self.nu)]),
                       self.lo, self.hi)


class Popularity:
    """Top-N baseline: score an item by how many training ratings it has (no ratings)."""

    predicts_ratings = False

    def fit(self, users, items, ratings, n_users=None, n_items=None):
        items = np.asarray(items)
        self.counts = np.bincount(items, minlength=n_items or int(items.max()) + 1)
        self.nu = n_users or int(np.asarray(users).max()) + 1
        return self

    def predict_index(self, users, items):
        return self.counts[np.asarray(items)].astype(np.float32)

    def predict_all(self) -> np.ndarray:
        return np.broadcast_to(self.counts.astype(np.float64), (self.nu, len(self.counts)))


# ----------------------------------------------------------------------------- top-N
def _binary(users, items, n_users, n_items) -> np.ndarray:
    """Dense 0/1 user x item matrix (float64) of the given pairs."""
    x = np.zeros((n_users, n_items))
    x[np.asarray(users, np.int64), np.asarray(items, np.int64)] = 1.0
    return x


class EASE:
    """EASE (Steck, WWW 2019): a linear item-to-item model for top-N ranking.

    With X the binary user x item matrix of interactions, the item weights B minimise
    ``|X - X B|^2 + lam |B|^2`` subject to ``diag(B) = 0``.  The closed form is one
    regularised Gram-matrix inverse: ``P = (X^T X + lam I)^-1``, ``B_ij = -P_ij / P_jj``
    (``B_jj = 0``); a user's scores are ``x_u B``.  ``lam`` is the one setting; the
    benchmark chooses it on a validation split (``benchmarks/bench_ranking.py``).
    """

    predicts_ratings = False

    def __init__(self, lam: float = 400.0) -> None:
        if not lam > 0:
            raise ConfigError(f"EASE lam must be positive, got {lam}")
        self.lam = float(lam)

    def fit(self, users, items, n_users: int, n_items: int) -> EASE:
        self.x = _binary(users, items, n_users, n_items)
        p = np.linalg.inv(self.x.T @ self.x + self.lam * np.eye(n_items))
        self.b = -p / np.diag(p)[None, :]
        np.fill_diagonal(self.b, 0.0)
        return self

    def predict_all(self) -> np.ndarray:
        """Scores of every (user, item) pair, shape (n_users, n_items)."""
        return self.x @ self.b


class CosineItemKNN:
    """Item-kNN for top-N on the binary matrix (Deshpande & Karypis 2004 style).

    sim(i, j) = cosine of items i and j's 0/1 user columns; each candidate item i keeps
    its ``k`` most similar items (``k=None``: all; ties: the lower index); the score of i
    for user u is the sum of sim(i, j) over the items j in i's neighbourhood that u
    interacted with.
    """

    predicts_ratings = False

    def __init__(self, k: int | None = 50) -> None:
        if k is not None and (not isinstance(k, int) or k <= 0):
            raise ConfigError(f"CosineItemKNN k must be a positive integer or None, got {k!r}")
        self.k = k

    def fit(self, users, items, n_users: int, n_items: int) -> CosineItemKNN:
        self.x = _binary(users, items, n_users, n_items)
        co = self.x.T @ self.x
        norm = np.sqrt(np.diag(co))
        with np.errstate(divide="ignore", invalid="ignore"):
            sim = np.where(norm[:, None] * norm[None, :] > 0, co / np.outer(norm, norm), 0.0)
        np.fill_diagonal(sim, 0.0)
        if self.k is not None and self.k < n_items:
            # each row keeps its k largest similarities (ties: the lower item index)
            keep = np.argsort(-sim, axis=1, kind="stable")[:, :self.k]
            kept = np.zeros_like(sim)
            np.put_along_axis(kept, keep, np.take_along_axis(sim, keep, 1), 1)
            sim = kept
        self.sim = sim
        return self

    def predict_all(self) -> np.ndarray:
        """Scores of every (user, item) pair, shape (n_users, n_items)."""
        return self.x @ self.sim.T
