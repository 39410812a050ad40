"""Per-feature standardisation with a stored mean, scale and the change-of-variables term.

Gaussian visible units with a fixed unit variance want each feature at zero mean and
unit variance.  :class:`Standardizer` does that explicitly and keeps what it did, so a
model's density of standardised data z = (x - mean) / scale can be turned back into
a density of the original values::

    log p_x(x) = log p_z(z) + log_jacobian,   log_jacobian = -sum_i log scale_i

(the standardisation is an affine map, so the Jacobian is constant).  Features whose
standard deviation is below ``eps`` (constant MNIST border pixels have std 0) are
scaled by ``eps`` instead: the map stays invertible, standardised values stay bounded
(|z| <= range / eps) and the Jacobian stays finite.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from boltzkit.errors import ConfigError, DataError


class Standardizer:
    """z = (x - mean) / scale with scale_i = max(std_i, eps), fitted on training data.

    ``eps`` is in the data's own units (for [0, 1] grey levels the default 0.05 is
    about 13 of 255 grey levels; it bounds standardised [0, 1] values by 1 / eps = 20).
    The standard deviation is the population one (``ddof=0``), as scikit-learn's
    ``StandardScaler``.  ``to_dict`` / ``from_dict`` store it as plain lists (JSON).
    """

    def __init__(self, eps: float = 0.05) -> None:
        if not (isinstance(eps, int | float) and eps > 0 and math.isfinite(eps)):
            raise ConfigError(f"Standardizer eps must be a positive number, got {eps!r}")
        self.eps = float(eps)
        self.mean: Tensor | None = None
        self.scale: Tensor | None = None
        self.n_floored = 0

    # --- fitting --------------------------------------------------------------
    def fit(self, x) -> Standardizer:
        """Store the per-feature mean and floored std of ``x`` (rows are samples)."""
        x = self._as_2d(x, "data")
        if x.shape[0] < 1:
            raise DataError("cannot fit a Standardizer on an empty data set")
        x64 = x.double()
        mean = x64.mean(0)
        std = x64.std(0, unbiased=False) if x.shape[0] > 1 else torch.zeros_like(mean)
        self.n_floored = int((std < self.eps).sum())
        self.mean = mean.float()
        self.scale = std.clamp_min(self.eps).float()
        return self

    def _check_fitted(self) -> tuple[Tensor, Tensor]:
        if self.mean is None or self.scale is None:
            raise ConfigError("the Standardizer is not fitted: call fit(train_data) first")
        return self.mean, self.scale

    def _as_2d(self, x, name: str) -> Tensor:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
        if t.ndim != 2:
            raise DataError(f"{name} must be a 2-D array (samples x features), got shape "
                            f"{tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise DataError(f"{name} contains NaN/inf values: clean them before standardising")
        if self.mean is not None and t.shape[1] != self.mean.numel():
            raise DataError(f"{name} has {t.shape[1]} features but the Standardizer was fitted "
                            f"on {self.mean.numel()}")
        return t.float() if not t.is_floating_point() else t

    # --- the map ----------------------------------------------------------------
    def transform(self, x) -> Tensor:
        """(x - mean) / scale as float32."""
        mean, scale = self._check_fitted()
        t = self._as_2d(x, "data")
        return ((t.float() - mean.to(t.device)) / scale.to(t.device)).float()

    def fit_transform(self, x) -> Tensor:
        return self.fit(x).transform(x)

    def inverse_transform(self, z) -> Tensor:
        """mean + scale * z: back to the original units."""
        mean, scale = self._check_fitted()
        t = self._as_2d(z, "standardised data")
        return t.float() * scale.to(t.device) + mean.to(t.device)

    @property
    def log_jacobian(self) -> float:
        """log |dz/dx| = -sum_i log scale_i: add it to log p(z) to get log p(x) (nats)."""
        _, scale = self._check_fitted()
        return float(-torch.log(scale.double()).sum())

    # --- storage ------------------------------------------------------------------
    def to_dict(self) -> dict:
        mean, scale = self._check_fitted()
        return {"eps": self.eps, "mean": mean.tolist(), "scale": scale.tolist(),
                "n_floored": self.n_floored}

    @classmethod
    def from_dict(cls, d: dict) -> Standardizer:
        try:
            out = cls(float(d["eps"]))
            out.mean = torch.tensor(d["mean"], dtype=torch.float32)
            out.scale = torch.tensor(d["scale"], dtype=torch.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a Standardizer description ({exc}): expected keys eps, "
                              "mean, scale") from None
        if out.mean.shape != out.scale.shape or out.mean.ndim != 1 or bool(
                (out.scale <= 0).any()):
            raise ConfigError("a Standardizer needs 1-D mean and scale of equal length, "
                              "scale > 0")
        out.n_floored = int(d.get("n_floored", 0))
        return out

    def __repr__(self) -> str:
        n = None if self.mean is None else self.mean.numel()
        return f"Standardizer(eps={self.eps}, features={n}, floored={self.n_floored})"
