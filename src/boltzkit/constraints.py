"""Parameter constraints applied after every optimizer step.

:class:`SpectralNormLimit` keeps the largest singular value of a dense weight matrix at
or below a bound.  For an RBM with unit-variance Gaussian visible units and ReLU (or
Gaussian) hidden units the energy |v|^2/2 + |h|^2/2 - v^T W h - ... is a quadratic form
that is bounded below only while W is small enough: sigma_max(W) < 1 guarantees it
(|v^T W h| <= sigma_max |v| |h| <= sigma_max (|v|^2 + |h|^2) / 2), so the model is a
proper density with finite Z, its Gibbs chains cannot run off to infinity and AIS
applies.  Contrastive divergence does not enforce this by itself (a 784-500 Gaussian-ReLU
RBM on standardised MNIST passes sigma_max = 1.5 within one epoch at lr 0.01, and its
samples then grow without bound).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .errors import ConfigError


class SpectralNormLimit:
    """After each optimizer step, scale ``weights`` down so that sigma_max(W) <= ``max_value``.

    sigma_max is tracked by power iteration with a persistent vector (``iterations``
    matrix-vector pairs per step, cheap next to a training step); power iteration
    approaches sigma_max from below, so :meth:`project` (an exact SVD norm) should be
    called once at the end of training: :meth:`attach` returns the hook handle and the
    CLI and ``examples/grey_mnist.py`` call ``project()`` after ``Trainer.fit``.
    """

    def __init__(self, weights: nn.Parameter | Tensor, max_value: float = 0.99,
                 iterations: int = 1, seed: int = 0) -> None:
        if not (isinstance(max_value, int | float) and max_value > 0
                and math.isfinite(max_value)):
            raise ConfigError(f"the spectral-norm limit must be a positive number, got "
                              f"{max_value!r}")
        if weights.ndim != 2:
            raise ConfigError(f"SpectralNormLimit needs a 2-D weight matrix, got shape "
                              f"{tuple(weights.shape)}")
        if not isinstance(iterations, int) or iterations < 1:
            raise ConfigError(f"iterations must be a positive integer, got {iterations!r}")
        self.weights = weights
        self.max_value = float(max_value)
        self.iterations = iterations
        gen = torch.Generator().manual_seed(seed)
        u = torch.randn(weights.shape[0], generator=gen, dtype=torch.float64)
        self._u = (u / u.norm()).to(device=weights.device, dtype=weights.dtype)
        self.n_scaled = 0

    @torch.no_grad()
    def estimate(self) -> float:
        """Power-iteration estimate of sigma_max (a lower bound; refines on every call)."""
        w = self.weights.detach()
        u = self._u
        sigma = 0.0
        for _ in range(self.iterations):
            v = w.t() @ u
            v = v / v.norm().clamp_min(1e-30)
            u = w @ v
            sigma = float(u.norm())
            u = u / max(sigma, 1e-30)
        self._u = u
        return sigma

    @torch.no_grad()
    def _scale_to(self, sigma: float) -> None:
        if sigma > self.max_value:
            self.weights.mul_(self.max_value / sigma)
            self.n_scaled += 1

    def __call__(self, *_args, **_kwargs) -> None:
        """The optimizer step post-hook: estimate sigma_max and scale W down if above."""
        self._scale_to(self.estimate())

    def attach(self, optimizer: torch.optim.Optimizer):
        """Run after every ``optimizer.step()``; returns the removable hook handle."""
        return optimizer.register_step_post_hook(self)

    @torch.no_grad()
    def project(self) -> float:
        """Exact projection: scale W so that its largest singular value (SVD) is <= the limit.

        Returns sigma_max after the projection.
        """
        sigma = float(torch.linalg.matrix_norm(self.weights.detach().double(), 2))
        self._scale_to(sigma)
        return min(sigma, self.max_value)


def spectral_norm(weights: Tensor) -> float:
    """The largest singular value of a 2-D weight matrix (float64 SVD)."""
    return float(torch.linalg.matrix_norm(weights.detach().double(), 2))
