"""Experiment tracking: the training history as TensorBoard scalars.

A :class:`TensorBoardLogger` is a trainer callback (``callbacks=[...]`` in
:class:`boltzkit.training.Trainer`, ``--tensorboard DIR`` on the command line).
It writes every numeric entry of each epoch's history record under its own tag,
so the curves in TensorBoard are the same numbers as in ``MODEL.history.json``.
TensorBoard itself is optional: without the ``tensorboard`` package the logger
refuses to start with a message saying how to install it.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

from .errors import ConfigError


class TensorBoardLogger:
    """Write each epoch's numeric history entries to a TensorBoard log directory."""

    def __init__(self, log_dir: str | os.PathLike, prefix: str = "train/") -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - depends on the environment
            raise ConfigError("TensorBoard logging needs the tensorboard package: "
                              "pip install tensorboard") from None
        self.log_dir = str(log_dir)
        self.prefix = prefix
        self.writer = SummaryWriter(log_dir=self.log_dir)

    def __call__(self, trainer: Any, record: dict[str, Any]) -> None:
        step = int(record.get("epoch", len(getattr(trainer, "history", [])) + 1))
        for key, value in record.items():
            if key == "epoch" or isinstance(value, bool):
                continue
            if isinstance(value, numbers.Real) and math.isfinite(float(value)):
                self.writer.add_scalar(self.prefix + key, float(value), step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
