"""The one training loop and its parts: :class:`Trainer`, optimizers, averaging, row sources."""

from .averaging import ParameterAverage
from .optim import LeanSGD, make_optimizer, make_scheduler
from .rows import StreamedRows, TensorRows
from .trainer import CHECKPOINT_NAME, Trainer

__all__ = ["CHECKPOINT_NAME", "LeanSGD", "ParameterAverage", "StreamedRows", "TensorRows",
           "Trainer", "make_optimizer", "make_scheduler"]
