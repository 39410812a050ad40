"""Peer adapters for ``bench_speed.py``: the libraries a user would pick instead of boltzkit.

Each function builds the peer's model outside the timed region, runs the peer's own public
call for the job, and returns the wall-clock seconds of that call alone.  A peer that cannot
run here raises :class:`PeerUnavailable` with the reason; the benchmark reports it and goes on.

* scikit-learn ``BernoulliRBM``: ``fit`` with ``n_iter=1`` is one epoch of **PCD-1**
  (persistent hidden states, 5 GEMMs per batch, batches taken in file order, no momentum);
  ``gibbs`` is one v -> h -> v sweep in NumPy.  Its BLAS threads are limited to the
  benchmark's ``--threads`` with threadpoolctl.
* learnergy ``models.bernoulli.RBM``: ``fit`` with ``steps=1`` (CD-1) on a
  ``torch.utils.data.TensorDataset``, which ``fit`` wraps in a shuffling ``DataLoader``.  Its
  ``fit`` also computes a per-batch pseudo-likelihood and reconstruction error and uses
  autograd on free energies for the gradient: that is what its ``fit`` costs a user.
"""

from __future__ import annotations

import time

import numpy as np
import torch


class PeerUnavailable(RuntimeError):
    """The peer cannot run in this environment (not installed, or an import fails)."""


# ----------------------------------------------------------------------------- scikit-learn
def _sklearn():
    try:
        from sklearn.neural_network import BernoulliRBM
        from threadpoolctl import threadpool_limits
    except ImportError as exc:  # pragma: no cover - sklearn is a boltzkit dependency
        raise PeerUnavailable(f"scikit-learn is not importable: {exc}") from exc
    return BernoulliRBM, threadpool_limits


def sklearn_pcd1_epoch(data: np.ndarray, n_hidden: int, batch_size: int, lr: float,
                       seed: int, threads: int) -> float:
    """One epoch of scikit-learn's BernoulliRBM.fit (PCD-1, n_iter=1) on float32 ``data``."""
    BernoulliRBM, threadpool_limits = _sklearn()
    x = np.ascontiguousarray(data, dtype=np.float32)
    rbm = BernoulliRBM(n_components=n_hidden, learning_rate=lr, batch_size=batch_size,
                       n_iter=1, verbose=0, random_state=seed)
    with threadpool_limits(limits=threads, user_api="blas"):
        t0 = time.perf_counter()
        rbm.fit(x)
        return time.perf_counter() - t0


def sklearn_gibbs(weights: torch.Tensor, visible_bias: torch.Tensor, hidden_bias: torch.Tensor,
                  v0: torch.Tensor, sweeps: int, seed: int, threads: int) -> float:
    """``sweeps`` calls of BernoulliRBM.gibbs (one v -> h -> v sweep each) from ``v0``.

    The model's parameters are set from boltzkit's layout: ``weights`` is
    (n_visible, n_hidden), scikit-learn's ``components_`` is its transpose.
    """
    BernoulliRBM, threadpool_limits = _sklearn()
    rbm = BernoulliRBM(n_components=weights.shape[1], random_state=seed)
    rbm.components_ = np.ascontiguousarray(weights.detach().numpy().T, dtype=np.float32)
    rbm.intercept_hidden_ = hidden_bias.detach().numpy().astype(np.float32)
    rbm.intercept_visible_ = visible_bias.detach().numpy().astype(np.float32)
    rbm.n_features_in_ = weights.shape[0]
    v = np.ascontiguousarray(v0.numpy(), dtype=np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        t0 = time.perf_counter()
        for _ in range(sweeps):
            v = rbm.gibbs(v)
        return time.perf_counter() - t0


# -------------------------------------------------------------------------------- learnergy
def learnergy_version() -> str | None:
    try:
        import learnergy
    except ImportError:
        return None
    return getattr(learnergy, "__version__", "unknown")


def _learnergy_rbm():
    try:
        from learnergy.models.bernoulli import RBM
    except ImportError as exc:
        raise PeerUnavailable(
            f"learnergy is not importable ({exc}); install it with "
            "`pip install --no-deps learnergy` (its Bernoulli RBM needs only torch)") from exc
    return RBM


def learnergy_cd1_epoch(data: torch.Tensor, n_hidden: int, batch_size: int, lr: float,
                        momentum: float, seed: int) -> float:
    """One epoch of learnergy's Bernoulli RBM ``fit`` (CD-1: ``steps=1``)."""
    RBM = _learnergy_rbm()
    torch.manual_seed(seed)
    model = RBM(n_visible=data.shape[1], n_hidden=n_hidden, steps=1, learning_rate=lr,
                momentum=momentum, use_gpu=False)
    dataset = torch.utils.data.TensorDataset(data, torch.zeros(data.shape[0]))
    t0 = time.perf_counter()
    model.fit(dataset, batch_size=batch_size, epochs=1)
    return time.perf_counter() - t0
