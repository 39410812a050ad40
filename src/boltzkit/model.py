"""What every boltzkit model shares, whatever its layers: where its tensors live."""

from __future__ import annotations

import torch
from torch import nn


class Model(nn.Module):
    """Base of boltzkit's models: ``device``, ``dtype``, ``n_visible`` and a finiteness check.

    ``n_visible`` / ``n_hidden`` are the sizes of the ``visible`` / ``hidden`` layers of
    models that have them.
    """

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def n_visible(self) -> int:
        return self.visible.n

    @property
    def n_hidden(self) -> int:
        return self.hidden.n

    def parameters_finite(self) -> bool:
        """True when no parameter holds NaN or inf."""
        return all(bool(torch.isfinite(p).all()) for p in self.parameters())
