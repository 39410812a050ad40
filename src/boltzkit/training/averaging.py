"""Iterate (Polyak-Ruppert) averaging of a model's parameters during training."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor


class ParameterAverage:
    """The uniform running mean of a list of parameters (Polyak-Ruppert averaging).

    ``update`` folds in the parameters' current values; ``applied`` swaps the
    mean in for a block (evaluation) and the live values back after it;
    ``copy_to`` writes the mean into the parameters for good.
    """

    def __init__(self) -> None:
        self.mean: list[Tensor] | None = None
        self.n = 0

    @torch.no_grad()
    def update(self, params: Sequence[Tensor]) -> None:
        """Add the parameters' current values to the mean."""
        if self.mean is None:
            self.mean = [p.detach().clone() for p in params]
            self.n = 1
            return
        self.n += 1
        for p, a in zip(params, self.mean, strict=True):
            a.lerp_(p.detach(), 1.0 / self.n)

    def tensors(self) -> dict[str, Tensor]:
        """The mean as named tensors ("0", "1", ...) for a checkpoint; empty before any update."""
        return {str(i): a for i, a in enumerate(self.mean or ())}

    def load(self, tensors: dict[str, Tensor], n: int, device: torch.device) -> None:
        """Restore what :meth:`tensors` gave, with the number of iterates ``n`` it holds."""
        self.mean = [tensors[str(i)].to(device) for i in range(len(tensors))] or None
        self.n = n

    @torch.no_grad()
    def copy_to(self, params: Sequence[Tensor]) -> None:
        """Overwrite the parameters with the mean (a no-op before the first update)."""
        if self.mean is not None:
            for p, a in zip(params, self.mean, strict=True):
                p.copy_(a)

    @contextlib.contextmanager
    def applied(self, params: Sequence[Tensor]):
        """The mean in place of the parameters inside the block, the live values after."""
        if self.mean is None:
            yield
            return
        live = [p.detach().clone() for p in params]
        self.copy_to(params)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(params, live, strict=True):
                    p.copy_(v)
