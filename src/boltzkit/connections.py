"""Connections: how two layers talk (dense weights, or convolutions with shared filters)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import precision
from .errors import ConfigError, DataError


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
        return precision.mm(x, self.weights)

    def transpose(self, h: Tensor) -> Tensor:
        return precision.mm_t(h, self.weights)

    def interaction(self, x: Tensor, h: Tensor) -> Tensor:
        """x^T W h per sample, shape (batch,)."""
        return (self.forward(x) * h).sum(-1)

    def weight_gradient(self, x: Tensor, h: Tensor) -> Tensor:
        """d(sum over batch of x^T W h)/dW: one GEMM for a whole (stacked) batch."""
        return precision.mm(x.t(), h)


class ConvConnection(nn.Module):
    """Shared convolutional filters between an image layer and K feature maps.

    States stay flattened, so every generic piece (RBM energies, Gibbs steps,
    autograd gradients, AIS and exact log Z) works unchanged: visible rows are
    ``channels x height x width`` images in C order, hidden rows are ``filters``
    maps of ``(height - filter_size + 1) x (width - filter_size + 1)`` ("valid"
    convolution), also in C order.  ``forward`` is the cross-correlation
    (``conv2d``) and ``transpose`` its adjoint (``conv_transpose2d``), so
    ``<forward(x), h> == <x, transpose(h)>``: the connection is the dense matrix
    whose column for hidden unit (k, i, j) holds filter k placed at (i, j).
    The tensor ``weights`` has shape (filters, channels, filter_size, filter_size).
    """

    kind = "conv"

    def __init__(self, channels: int, height: int, width: int, filters: int, filter_size: int,
                 init_std: float = 0.01, generator: torch.Generator | None = None) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("height", height), ("width", width),
                            ("filters", filters), ("filter_size", filter_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"conv connection: {name} must be a positive integer, "
                                  f"got {value!r}")
        if filter_size > min(height, width):
            raise ConfigError(f"conv connection: filter_size {filter_size} is larger than the "
                              f"{height}x{width} image: use a filter of at most "
                              f"{min(height, width)} pixels")
        self.channels, self.height, self.width = channels, height, width
        self.filters, self.filter_size = filters, filter_size
        self.out_height = height - filter_size + 1
        self.out_width = width - filter_size + 1
        self.n_visible = channels * height * width
        self.n_hidden = filters * self.out_height * self.out_width
        w = torch.randn(filters, channels, filter_size, filter_size, generator=generator)
        self.weights = nn.Parameter(w * init_std)

    def config(self) -> dict:
        return {"kind": self.kind, "channels": self.channels, "height": self.height,
                "width": self.width, "filters": self.filters, "filter_size": self.filter_size}

    def _images(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.n_visible:
            raise DataError(f"conv connection expects rows of {self.n_visible} = "
                            f"{self.channels}x{self.height}x{self.width} values, got shape "
                            f"{tuple(x.shape)}")
        return x.reshape(-1, self.channels, self.height, self.width)

    def _maps(self, h: Tensor) -> Tensor:
        if h.ndim != 2 or h.shape[1] != self.n_hidden:
            raise DataError(f"conv connection expects hidden rows of {self.n_hidden} = "
                            f"{self.filters}x{self.out_height}x{self.out_width} values, got "
                            f"shape {tuple(h.shape)}")
        return h.reshape(-1, self.filters, self.out_height, self.out_width)

    def forward(self, x: Tensor) -> Tensor:
        return precision.call(F.conv2d, self._images(x), self.weights).flatten(1)

    def transpose(self, h: Tensor) -> Tensor:
        return precision.call(F.conv_transpose2d, self._maps(h), self.weights).flatten(1)

    def interaction(self, x: Tensor, h: Tensor) -> Tensor:
        """x^T W h per sample, shape (batch,)."""
        return (self.forward(x) * h).sum(-1)

    def weight_gradient(self, x: Tensor, h: Tensor) -> Tensor:
        """d(sum over batch of x^T W h)/dW, shaped like ``weights``."""
        return precision.call(torch.nn.grad.conv2d_weight, self._images(x), self.weights.shape,
                              self._maps(h))

    def dense_weights(self) -> Tensor:
        """The equivalent (n_visible, n_hidden) matrix (for small models and pictures)."""
        eye = torch.eye(self.n_visible, dtype=self.weights.dtype, device=self.weights.device)
        return self.forward(eye)


class StackedConnection(nn.Module):
    """Several connections from consecutive blocks of one visible layer to one hidden layer.

    The visible row is the concatenation of the blocks' rows (as in
    :class:`~boltzkit.units.ConcatUnits`); the hidden field is the sum of every block's
    field and ``transpose`` the concatenation of their transposes.  A discriminative
    RBM's joint (input, label) model is the RBM of ``StackedConnection([W, U])``.  The
    parts stay the owner's parameters (this holds references, it saves nothing itself).
    """

    kind = "stacked"

    def __init__(self, parts: list[nn.Module]) -> None:
        super().__init__()
        hidden = {p.n_hidden for p in parts}
        if len(hidden) != 1:
            raise ConfigError(f"stacked connections must share one hidden layer, got sizes "
                              f"{sorted(hidden)}")
        self.parts = nn.ModuleList(parts)
        self.sizes = [p.n_visible for p in parts]
        self.n_visible = sum(self.sizes)
        self.n_hidden = hidden.pop()

    def config(self) -> dict:
        return {"kind": self.kind, "parts": [p.config() for p in self.parts]}

    def forward(self, x: Tensor) -> Tensor:
        blocks = x.split(self.sizes, dim=-1)
        out = self.parts[0](blocks[0])
        for conn, xb in zip(self.parts[1:], blocks[1:], strict=True):
            out = out + conn(xb)
        return out

    def transpose(self, h: Tensor) -> Tensor:
        return torch.cat([conn.transpose(h) for conn in self.parts], dim=-1)

    def interaction(self, x: Tensor, h: Tensor) -> Tensor:
        """x^T W h per sample, shape (batch,)."""
        return (self.forward(x) * h).sum(-1)


CONNECTION_TYPES: dict[str, type[nn.Module]] = {"dense": DenseConnection, "conv": ConvConnection}


def connection_from_config(cfg: dict) -> nn.Module:
    """Rebuild a connection from its ``config()``."""
    cfg = dict(cfg)
    kind = cfg.pop("kind", "dense")
    if kind not in CONNECTION_TYPES:
        raise ConfigError(f"unknown connection {kind!r}: choose one of {sorted(CONNECTION_TYPES)}")
    return CONNECTION_TYPES[kind](**cfg)
