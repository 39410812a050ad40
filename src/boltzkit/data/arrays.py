"""User data from .npy / .npz / .csv files, validation, and binarisation.

Everything a model trains on passes through here as a float32 2-D tensor of shape
(samples, features), so loaders and models agree on one layout and one dtype.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from boltzkit.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: Binarisation modes understood by every loader.
BINARIZE_MODES: tuple[str, ...] = ("threshold", "stochastic", "none")
#: Value kinds understood by :func:`validate_data`.
DATA_KINDS: tuple[str, ...] = ("binary", "unit_interval", "onehot_groups")
#: File suffixes :func:`load_array` can read.
ARRAY_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".csv", ".tsv", ".txt")

_CHUNK_ROWS = 8192


def check_binarize(mode: str) -> str:
    """Return ``mode`` if it is a known binarisation mode, else raise ConfigError."""
    if mode not in BINARIZE_MODES:
        raise ConfigError(
            f"unknown binarize mode {mode!r}; use one of {', '.join(BINARIZE_MODES)} "
            "(e.g. --binarize threshold)"
        )
    return mode


def check_seed(seed: int | Sequence[int]) -> None:
    """Raise ConfigError unless ``seed`` is a non-negative int (or a sequence of them)."""
    seeds = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    for s in seeds:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0:
            raise ConfigError(
                f"seed must be a non-negative integer, got {seed!r}; pass e.g. seed=0"
            )


def _at(row: int, col: int) -> str:
    """A 0-based (row, column) position as users count it: from 1, as in their files."""
    return f"row {row + 1}, column {col + 1} (1-based)"


def check_finite(x: torch.Tensor | np.ndarray, name: str = "data") -> None:
    """Raise DataError unless every value of ``x`` is finite (no NaN, no +-inf).

    ``x``: array (samples, ...); the message gives the count and the first bad value's
    sample row and (flattened) column, counted from 1.  Integer and boolean arrays pass
    without a look.  Rows are checked in chunks, so a memory-mapped file is read once
    and never copied whole.
    """
    if isinstance(x, torch.Tensor):
        if not (x.is_floating_point() or x.is_complex()) or x.numel() == 0:
            return
        finite, first = torch.isfinite, lambda m: torch.nonzero(m)[0].tolist()
    else:
        x = np.asarray(x)
        if x.dtype.kind not in "fc" or x.size == 0:
            return
        finite, first = np.isfinite, lambda m: np.argwhere(m)[0].tolist()
    rows = x.reshape(x.shape[0] if x.ndim else 1, -1)
    where, count = None, 0
    for start in range(0, rows.shape[0], _CHUNK_ROWS):
        bad = ~finite(rows[start : start + _CHUNK_ROWS])
        if bool(bad.any()):
            if where is None:
                r, c = first(bad)
                where = (start + r, c)
            count += int(bad.sum())
    if where is not None:
        raise DataError(
            f"{name}: {count} NaN/inf value(s), first at {_at(*where)}, value "
            f"{rows[where].item()}; remove or impute those values first"
        )


def binarize_array(
    x: np.ndarray,
    mode: str = "threshold",
    seed: int | Sequence[int] = 0,
    scale: float = 1.0,
    name: str = "data",
) -> np.ndarray:
    """Map ``x / scale`` (values in [0, 1]) to a float32 array according to ``mode``.

    * ``"threshold"``: 1 where ``x / scale > 0.5``, else 0.
    * ``"stochastic"``: each entry drawn once as Bernoulli(``x / scale``) from
      ``numpy.random.default_rng(seed)``; draws are made row by row in C order, so the
      first k rows are the same whether or not later rows are binarised too.
    * ``"none"``: ``x / scale`` as float32.

    Stochastic draws are made in row chunks, so large uint8 image arrays never need a full
    float64 copy. The result is always a new array.  NaN/inf values are refused
    (DataError naming ``name`` and the first one's position), never binarised away.
    """
    check_binarize(mode)
    x = np.asarray(x)
    check_finite(x, name)
    if mode == "threshold":
        # Compare before casting, so float64 input is thresholded exactly.
        return np.greater(x, 0.5 * scale).astype(np.float32)
    if mode == "none":
        out = x.astype(np.float32)  # always a fresh copy: never aliases the caller's array
        if scale != 1.0:
            out /= np.float32(scale)
        return out
    check_seed(seed)
    rng = np.random.default_rng(seed)
    out = np.empty(x.shape, dtype=np.float32)
    n = x.shape[0] if x.ndim else 1
    flat_in = x.reshape(n, -1)
    flat_out = out.reshape(n, -1)
    # Row chunks keep the float64 work arrays small; uniforms are drawn in C order, so the
    # stream (and the result) does not depend on the chunk size.
    for start in range(0, n, _CHUNK_ROWS):
        p = flat_in[start : start + _CHUNK_ROWS].astype(np.float64) / scale
        flat_out[start : start + _CHUNK_ROWS] = rng.random(p.shape) < p
    return out


def binarize(
    x: torch.Tensor | np.ndarray,
    mode: str = "threshold",
    seed: int | Sequence[int] = 0,
    scale: float = 1.0,
    name: str = "data",
) -> torch.Tensor:
    """Tensor front end of :func:`binarize_array`; returns a float32 tensor."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return torch.from_numpy(binarize_array(x, mode, seed=seed, scale=scale, name=name))


def _to_2d_float32(arr: np.ndarray, source: str) -> np.ndarray:
    """Reshape to (samples, features) and cast to float32 (a view when already float32)."""
    if arr.dtype.kind not in "biuf":
        raise DataError(
            f"{source}: array has non-numeric dtype {arr.dtype}; "
            "save numbers only (e.g. numpy.save(path, x.astype('float32')))"
        )
    if arr.ndim == 0:
        raise DataError(
            f"{source}: holds a single scalar, not a data set; save an array of shape "
            "(samples, features)"
        )
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    elif arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.dtype != np.float32:
        if isinstance(arr, np.memmap):
            logger.warning(
                "%s: dtype %s is converted to float32, which reads the whole file into "
                "memory; save the array as float32 to stream it with mmap=True",
                source,
                arr.dtype,
            )
        arr = arr.astype(np.float32)
    return arr


def _detect_delimiter(lines: list[str]) -> str | None:
    """Return ',' when the sample lines are comma separated, else None (whitespace)."""
    if any("," in line for line in lines):
        return ","
    if any(";" in line for line in lines):
        return ";"
    return None


def _is_numeric_row(line: str, delimiter: str | None) -> bool:
    fields = [f.strip() for f in line.split(delimiter)]
    fields = [f for f in fields if f]
    if not fields:
        return False
    try:
        for f in fields:
            float(f)
    except ValueError:
        return False
    return True


def _load_text(path: Path) -> np.ndarray:
    """Read a delimited text file (comma, semicolon or whitespace), skipping one header row."""
    sample: list[str] = []
    try:
        with path.open("r", encoding="utf-8-sig") as fh:
            for line in fh:
                if line.strip() and not line.lstrip().startswith("#"):
                    sample.append(line)
                if len(sample) >= 5:
                    break
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not a UTF-8 text file ({exc}); save it as plain CSV or as .npy"
        ) from exc
    if not sample:
        raise DataError(f"{path}: file has no data rows; check that the right file was given")
    delimiter = _detect_delimiter(sample)
    skip = 0 if _is_numeric_row(sample[0], delimiter) else 1
    # Comments and blank lines are ignored by loadtxt, but skiprows counts raw lines:
    # find the raw index of the header line so that exactly it is skipped.
    if skip:
        with path.open("r", encoding="utf-8-sig") as fh:
            for i, line in enumerate(fh):
                if line.strip() and not line.lstrip().startswith("#"):
                    skip = i + 1
                    break
    try:
        arr = np.loadtxt(
            path,
            delimiter=delimiter,
            skiprows=skip,
            ndmin=2,
            dtype=np.float64,
            encoding="utf-8-sig",
        )
    except ValueError as exc:
        raise DataError(
            f"{path}: could not parse as numeric text ({exc}); every row must have the same "
            "number of numeric fields separated by ',' or whitespace (one header row is allowed)"
        ) from exc
    if arr.size == 0:
        raise DataError(f"{path}: file has no data rows; check that the right file was given")
    logger.debug(
        "read %s: delimiter=%r, header=%s, shape=%s", path, delimiter, bool(skip), arr.shape
    )
    return arr


def load_array(
    path: str | os.PathLike[str], key: str | None = None, mmap: bool = False
) -> torch.Tensor:
    """Load user data from ``.npy``, ``.npz`` or ``.csv`` as a float32 (samples, features) tensor.

    * ``.npy``: with ``mmap=True`` the file is memory-mapped copy-on-write
      (``numpy.load(mmap_mode="c")``: pages are read lazily, the file itself is never
      modified and in-place tensor operations stay private), so data sets bigger than
      memory can stream; this works without a copy only when the file is float32 and
      C-ordered.
    * ``.npz``: the array named ``key``, or the only array in the archive.
    * ``.csv`` (also ``.tsv``/``.txt``): comma, semicolon or whitespace separated;
      one non-numeric header row is skipped; ``#`` lines are comments.

    A 1-D array becomes (N, 1); arrays with more than two dimensions are flattened per
    sample (first axis = samples). Values are not checked here: see :func:`validate_data`.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        hint = "it is a directory, not a file" if p.is_dir() else "no such file"
        raise DataError(
            f"data file {p} cannot be read: {hint}; pass the path of an existing "
            f"{'/'.join(ARRAY_SUFFIXES)} file"
        )
    suffix = p.suffix.lower()
    source = str(p)
    if suffix == ".npy":
        try:
            arr = np.load(p, mmap_mode="c" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(
                f"{p}: not a valid .npy file ({exc}); re-save it with numpy.save"
            ) from exc
    elif suffix == ".npz":
        if mmap:
            logger.info("%s: .npz archives cannot be memory-mapped; loading into memory", p)
        try:
            with np.load(p, allow_pickle=False) as archive:
                keys = list(archive.files)
                if key is None:
                    if len(keys) != 1:
                        raise DataError(
                            f"{p}: archive holds {len(keys)} arrays ({', '.join(keys) or 'none'}); "
                            "choose one with key=NAME (e.g. --data-key)"
                        )
                    key = keys[0]
                elif key not in keys:
                    raise DataError(
                        f"{p}: no array named {key!r}; available keys: {', '.join(keys)}; "
                        "pass one of them as key"
                    )
                arr = archive[key]
                source = f"{p}[{key}]"
        except DataError:
            raise
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(
                f"{p}: not a valid .npz archive ({exc}); re-save it with numpy.savez"
            ) from exc
    elif suffix in (".csv", ".tsv", ".txt"):
        arr = _load_text(p)
    else:
        raise DataError(
            f"{p}: unsupported file type {suffix or '(no suffix)'!r}; convert the data to one "
            f"of {', '.join(ARRAY_SUFFIXES)}"
        )
    out = _to_2d_float32(arr, source)
    if not out.flags.c_contiguous:
        out = np.ascontiguousarray(out)
    return torch.from_numpy(out)


def _first_bad_row(mask: torch.Tensor) -> tuple[int, int]:
    """Return (row, col) of the first True entry of a 2-D boolean mask."""
    idx = torch.nonzero(mask, as_tuple=False)[0]
    return int(idx[0]), int(idx[1])


def validate_data(
    x: torch.Tensor | np.ndarray,
    name: str = "data",
    kind: str | None = None,
    group_size: int | None = None,
) -> torch.Tensor:
    """Check that ``x`` is usable training data and return it as a float32 contiguous tensor.

    Raises DataError, naming the problem and the fix, when ``x`` is not 2-D, has no rows or
    columns, or holds NaN/inf. ``kind`` adds a value check:

    * ``"binary"``: every value is 0 or 1.
    * ``"unit_interval"``: every value lies in [0, 1].
    * ``"onehot_groups"``: the columns form consecutive groups of ``group_size`` columns,
      each one-hot or all zero (all zero = missing value).
    """
    if kind is not None and kind not in DATA_KINDS:
        raise ConfigError(f"unknown data kind {kind!r}; use one of {', '.join(DATA_KINDS)}")
    if isinstance(x, np.ndarray) and not x.flags.writeable:
        x = np.array(x)  # torch cannot wrap read-only memory safely
    try:
        t = torch.as_tensor(x)
    except (TypeError, RuntimeError) as exc:
        raise DataError(
            f"{name}: cannot be converted to a numeric tensor ({exc}); pass numbers only"
        ) from exc
    if t.dtype.is_complex:
        raise DataError(f"{name}: complex values are not supported; pass real numbers")
    if t.dim() != 2:
        raise DataError(
            f"{name}: expected a 2-D array (samples, features), got shape {tuple(t.shape)}; "
            "reshape it, e.g. x.reshape(len(x), -1)"
        )
    if t.shape[0] == 0:
        raise DataError(
            f"{name}: has no rows (shape {tuple(t.shape)}); check the file or the limit"
        )
    if t.shape[1] == 0:
        raise DataError(f"{name}: has no columns (shape {tuple(t.shape)}); check the file")
    t = t.to(torch.float32).contiguous()
    check_finite(t, name)
    if kind == "binary":
        bad = (t != 0) & (t != 1)
        if bool(bad.any()):
            row, col = _first_bad_row(bad)
            raise DataError(
                f"{name}: expected binary 0/1 values, found {float(t[row, col]):g} at "
                f"{_at(row, col)} ({int(bad.sum())} non-binary values); binarise the data, e.g. "
                "--binarize threshold, or use a model with real-valued visible units"
            )
    elif kind == "unit_interval":
        bad = (t < 0) | (t > 1)
        if bool(bad.any()):
            row, col = _first_bad_row(bad)
            raise DataError(
                f"{name}: expected values in [0, 1], found {float(t[row, col]):g} at "
                f"{_at(row, col)} ({int(bad.sum())} values outside); rescale the data "
                "(e.g. divide by its maximum) or binarise it with --binarize threshold"
            )
    elif kind == "onehot_groups":
        if group_size is None or int(group_size) < 1:
            raise ConfigError(
                f"{name}: kind='onehot_groups' needs group_size K >= 1 (got {group_size!r}); "
                "pass the number of categories per variable"
            )
        k = int(group_size)
        n, d = t.shape
        if d % k != 0:
            raise DataError(
                f"{name}: {d} columns cannot be split into groups of {k}; the number of "
                "columns must be a multiple of group_size (check the one-hot encoding)"
            )
        bad_val = (t != 0) & (t != 1)
        if bool(bad_val.any()):
            row, col = _first_bad_row(bad_val)
            raise DataError(
                f"{name}: one-hot groups must hold 0/1 values, found {float(t[row, col]):g} at "
                f"{_at(row, col)}; encode each variable as one-hot columns"
            )
        sums = t.reshape(n, d // k, k).sum(dim=2)
        bad = sums > 1
        if bool(bad.any()):
            row, group = _first_bad_row(bad)
            raise DataError(
                f"{name}: group {group + 1} (columns {group * k + 1}-{group * k + k}) of row "
                f"{row + 1} (all 1-based) has "
                f"{int(sums[row, group])} ones; each group of {k} columns must be one-hot "
                "(exactly one 1) or all zero for a missing value"
            )
    return t
