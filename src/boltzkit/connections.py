"""Connections: how two layers talk (dense weights; convolutions come later)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .errors import ConfigError


class DenseConnection(nn.Module):
    """All-to-all weights W of shape (n_visible, n_hidden).

    ``forward`` maps visible coupling statistics to the hidden field (x @ W),
    ``transpose`` maps hidden statistics back (h @ W^T).
    """

    kind = "dense"

    def __init__(self, n_visible: int, n_hidden: int, init_std: float = 0.01,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        for name, value in (("n_visible", n_visible), ("n_hidden", n_hidden)):
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        self.n_visible = n_visible
        self.n_hidden = n_hidden
        w = torch.randn(n_visible, n_hidden, generator=generator) * init_std
        self.weights = nn.Parameter(w)

    def config(self) -> dict:
        return {"kind": self.kind, "n_visible": self.n_visible, "n_hidden": self.n_hidden}

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weights

    def transpose(self, h: Tensor) -> Tensor:
        return h @ self.weights.t()

    def interaction(self, x: Tensor, h: Tensor) -> Tensor:
        """x^T W h per sample, shape (batch,)."""
        return ((x @ self.weights) * h).sum(-1)

    def weight_gradient(self, x: Tensor, h: Tensor) -> Tensor:
        """d(sum over batch of x^T W h)/dW: one GEMM for a whole (stacked) batch."""
        return x.t() @ h


CONNECTION_TYPES: dict[str, type[nn.Module]] = {"dense": DenseConnection}


def connection_from_config(cfg: dict) -> nn.Module:
    """Rebuild a connection from its ``config()``."""
    cfg = dict(cfg)
    kind = cfg.pop("kind", "dense")
    if kind not in CONNECTION_TYPES:
        raise ConfigError(f"unknown connection {kind!r}: choose one of {sorted(CONNECTION_TYPES)}")
    return CONNECTION_TYPES[kind](**cfg)
