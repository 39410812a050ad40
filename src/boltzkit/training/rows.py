"""Where the Trainer's mini-batches come from: rows in memory, or rows streamed from a file.

A *row source* has ``n`` (the number of rows), ``take(idx)`` (the batch of those rows),
``full()`` (every row, for one-off statistics such as bias initialisation) and
``release()``.  A batch is a tensor (n_rows, n_visible), or a tuple of aligned tensors
when a model's rows carry more than the visible states (labels for a discriminative RBM,
the history of a conditional RBM); the objective says which (``Objective.prepare``).
Anything with those four members can be passed to :meth:`Trainer.fit` as it is, e.g.
the case index of a collaborative-filtering RBM whose batches are built from sparse
rating matrices.
"""

from __future__ import annotations

import mmap
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError

Batch = Tensor | tuple[Tensor, ...]


def take_rows(rows: Batch, idx: Tensor) -> Batch:
    """The rows ``idx`` of a tensor or of each tensor of a tuple."""
    if isinstance(rows, tuple):
        return tuple(r.index_select(0, idx.to(r.device)) for r in rows)
    return rows.index_select(0, idx.to(rows.device))


def n_rows(rows: Batch) -> int:
    """Number of rows of a batch (the first tensor's, for a tuple)."""
    return int((rows[0] if isinstance(rows, tuple) else rows).shape[0])


def head(x: Any, n: int) -> Any:
    """The first ``n`` rows (of each tensor of a tuple); a NumPy map is read only that far."""
    if isinstance(x, tuple):
        return tuple(head(t, n) for t in x)
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.array(x[:n]))
    return x[:n]


class TensorRows:
    """Training rows held in memory on the model's device (already prepared)."""

    def __init__(self, rows: Batch) -> None:
        self.rows = rows
        self.n = n_rows(rows)
        if self.n == 0:
            raise DataError("training data is empty: pass at least one sample")

    def full(self) -> Batch:
        return self.rows

    def take(self, idx: Tensor) -> Batch:
        return take_rows(self.rows, idx)

    def release(self) -> None:
        return None


class StreamedRows:
    """Training rows read batch by batch from a NumPy array or memory map (streaming).

    Only the rows of one batch are copied (gathered in sorted order, then put back in
    the requested order) and moved to the device.  Each batch is checked by
    ``prepare`` as it is read, so bad values far into a file stop training with a
    clear error.  Pages of a read-only map are released every ~64 MiB read, so the
    resident set stays near one batch instead of growing to the file size.
    """

    RELEASE_BYTES = 64 << 20

    def __init__(self, data: Tensor | np.ndarray, n_visible: int, dtype: torch.dtype,
                 device: torch.device, prepare: Callable[[Tensor, str], Tensor]) -> None:
        if isinstance(data, Tensor):
            if data.device.type != "cpu":
                raise DataError("streaming reads rows from host memory or a file: pass a CPU "
                                "tensor, a NumPy array or numpy.load(path, mmap_mode='r')")
            data = data.detach().numpy()
        if not isinstance(data, np.ndarray):
            raise DataError(f"cannot stream training data of type {type(data).__name__}: "
                            "pass a NumPy array or numpy.load(path, mmap_mode='r')")
        if data.ndim != 2 or data.shape[1] != n_visible:
            raise DataError(f"training data has shape {data.shape} but the model has "
                            f"{n_visible} visible units: pass a 2-D array with "
                            f"{n_visible} columns")
        if data.shape[0] == 0:
            raise DataError("training data is empty: pass at least one sample")
        want = np.dtype(str(dtype).removeprefix("torch."))
        if data.dtype != want:
            raise DataError(f"streamed training data must be {want} like the model, got "
                            f"{data.dtype}: save it once as {want} (e.g. numpy.save(path, "
                            f"x.astype('{want}'))) so batches can be read without conversion")
        self.data, self.device, self.dtype, self.prepare = data, device, dtype, prepare
        self.n = data.shape[0]
        self._row_bytes = data.strides[0] if data.strides[0] > 0 else data.itemsize
        self._read = 0
        base = data
        while base is not None and not isinstance(getattr(base, "_mmap", None), mmap.mmap):
            base = base.base if isinstance(base.base, np.ndarray) else None
        # Only a read-only map may drop its pages: a copy-on-write map ("c") would lose
        # the user's private changes, an anonymous array its contents.
        self._mmap = base._mmap if base is not None and getattr(base, "mode", "") == "r" else None

    def full(self) -> Tensor:
        """A zero-copy CPU tensor over all rows (for one-off statistics: bias init,
        centering offsets); the map pages it touches are released afterwards."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only memory: we only read it
            return torch.from_numpy(self.data)

    def take(self, idx: Tensor) -> Tensor:
        idx_np = idx.cpu().numpy()
        order = np.argsort(idx_np, kind="stable")
        rows = torch.from_numpy(np.asarray(self.data[idx_np[order]]))
        batch = torch.empty_like(rows)
        batch[torch.from_numpy(order)] = rows
        batch = batch.to(device=self.device, dtype=self.dtype, non_blocking=True)
        batch = self.prepare(batch, "training data (streamed batch)")
        self._read += len(idx_np) * self._row_bytes
        if self._read >= self.RELEASE_BYTES:
            self.release()
        return batch

    def release(self) -> None:
        """Drop this process's mapping of the pages read so far (they stay in the page
        cache), so the resident set does not grow to the file's size."""
        self._read = 0
        if self._mmap is not None and hasattr(self._mmap, "madvise"):
            self._mmap.madvise(mmap.MADV_DONTNEED)
