"""Pictures of models and training runs, written as image files.

Everything here draws on a private ``matplotlib.figure.Figure`` with the Agg canvas, never
pyplot's global state, so it works headless and from several threads at once. Files are
written atomically: a temporary file in the target directory is renamed over the target, so a
reader never sees half a PNG and a crash never leaves a truncated one.

Inputs may be torch tensors (any device, with or without grad) or numpy arrays.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from boltzkit.errors import ConfigError, DataError
from boltzkit.io import atomic_write

__all__ = [
    "tile_images",
    "weight_mosaic",
    "sample_grid",
    "reconstruction_grid",
    "training_curves",
    "curves_from_json",
    "write_training_plots",
]

Normalize = Literal["each", "global", "none", "symmetric"]
_NORMALIZE_MODES = ("each", "global", "none", "symmetric")
_SKIP_KEYS = frozenset({"epoch", "time"})
_SAMPLE_COLOR = "tab:blue"
_REFERENCE_COLOR = "tab:orange"
_GRID_PAD = 0.5  # grey gaps stay visible between black- and white-background images alike


# --------------------------------------------------------------------------- helpers


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a float64 numpy array on the CPU (torch tensors are detached)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if x.is_complex():
            raise DataError(f"{name} is complex; pass a real-valued tensor")
        x = (x.double() if x.is_floating_point() else x).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{name} could not be converted to a numeric array ({exc}); "
            "pass a torch tensor or numpy array of numbers"
        ) from exc
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise DataError(
            f"{name} contains {bad} NaN or infinite value(s); "
            "remove them (or check the model for divergence) before plotting"
        )


def _check_positive_int(value: Any, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _infer_shape(d: int, image_shape: Sequence[int] | None, name: str) -> tuple[int, int]:
    """Return (height, width) for flat vectors of length ``d``."""
    if image_shape is None:
        side = math.isqrt(d)
        if side * side != d:
            raise DataError(
                f"{name} has {d} values per image, which is not a perfect square, so the image "
                f"shape cannot be guessed; give the image shape (--image-shape HxW; "
                f"image_shape=(height, width) in Python) with height * width == {d}"
            )
        return side, side
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"image_shape must be a (height, width) pair of integers, got {image_shape!r}"
        ) from exc
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        raise ConfigError(
            f"image_shape must be a (height, width) pair of positive integers, got {image_shape!r}"
        )
    if shape[0] * shape[1] != d:
        raise DataError(
            f"image_shape={shape} holds {shape[0] * shape[1]} pixels but {name} has {d} values "
            f"per image; pass an image_shape whose height * width == {d}"
        )
    return shape[0], shape[1]


def _as_tiles(images: Any, image_shape: Sequence[int] | None, name: str) -> np.ndarray:
    """Turn (N, D), (D,) or (N, H, W) input into a finite (N, H, W) float array."""
    arr = _to_numpy(images, name)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim == 3:
        if image_shape is not None and tuple(image_shape) != arr.shape[1:]:
            raise DataError(
                f"{name} has image shape {arr.shape[1:]} but image_shape={tuple(image_shape)}; "
                "drop image_shape or pass flat (N, D) vectors"
            )
        image_shape = arr.shape[1:]
        arr = arr.reshape(arr.shape[0], -1)
    if arr.ndim != 2:
        raise DataError(
            f"{name} must be (N, D) flat vectors, a single (D,) vector or (N, H, W) images, "
            f"got shape {arr.shape}"
        )
    n, d = arr.shape
    if n == 0 or d == 0:
        raise DataError(f"{name} is empty (shape {arr.shape}); pass at least one image")
    _check_finite(arr, name)
    h, w = _infer_shape(d, image_shape, name)
    return arr.reshape(n, h, w)


def _rescale(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Map [lo, hi] to [0, 1]; constant ranges map to 0.5."""
    span = hi - lo
    flat = span <= 0
    out = (x - lo) / np.where(flat, 1.0, span)
    return np.where(flat, 0.5, out)


def _normalize(tiles: np.ndarray, mode: str) -> np.ndarray:
    """Scale (N, H, W) tiles to [0, 1] according to ``mode``."""
    if mode not in _NORMALIZE_MODES:
        raise ConfigError(f"normalize must be one of {_NORMALIZE_MODES}, got {mode!r}")
    if mode == "each":
        lo = tiles.min(axis=(1, 2), keepdims=True)
        hi = tiles.max(axis=(1, 2), keepdims=True)
        return _rescale(tiles, lo, hi)
    if mode == "global":
        return _rescale(tiles, np.asarray(tiles.min()), np.asarray(tiles.max()))
    if mode == "symmetric":
        scale = np.abs(tiles).max(axis=(1, 2), keepdims=True)
        return 0.5 + 0.5 * tiles / np.where(scale > 0, scale, 1.0)
    return np.clip(tiles, 0.0, 1.0)


def _auto_normalize(tiles: np.ndarray, normalize: str | None) -> str:
    """``None`` means: clip if the values already live in [0, 1], else rescale globally."""
    if normalize is not None:
        return normalize
    return "none" if tiles.min() >= 0.0 and tiles.max() <= 1.0 else "global"


def _assemble(tiles: np.ndarray, n_cols: int, pad: int, pad_value: float) -> np.ndarray:
    """Lay out (N, H, W) tiles row by row, ``pad`` pixels apart."""
    n, h, w = tiles.shape
    n_cols = min(n_cols, n)
    n_rows = -(-n // n_cols)
    grid = np.full(
        (n_rows * h + (n_rows - 1) * pad, n_cols * w + (n_cols - 1) * pad),
        pad_value,
        dtype=np.float64,
    )
    for i in range(n):
        r, c = divmod(i, n_cols)
        top, left = r * (h + pad), c * (w + pad)
        grid[top : top + h, left : left + w] = tiles[i]
    return grid


def _resolve_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    supported = FigureCanvasAgg.get_supported_filetypes()
    if suffix not in supported:
        raise ConfigError(
            f"cannot write {path.name!r}: unknown image format {suffix!r}; "
            f"use one of {sorted(supported)} (e.g. a .png file name)"
        )
    return suffix


def _save(fig: Figure, path: str | os.PathLike[str], dpi: int) -> Path:
    """Render ``fig`` to ``path`` atomically (temp file in the same directory, then rename)."""
    target = Path(path)
    fmt = _resolve_format(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    atomic_write(target, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
    return target


def _image_figure(
    grid: np.ndarray,
    title: str | None,
    dpi: int,
    row_labels: Sequence[tuple[float, str]] = (),
    target_px: int = 800,
) -> Figure:
    """A figure showing ``grid`` (values in [0, 1], grey) at a whole number of screen pixels
    per grid pixel, so tiles stay crisp; optional title on top and row labels on the left."""
    gh, gw = grid.shape
    px = max(1, target_px // max(gh, gw))
    img_w, img_h = gw * px / dpi, gh * px / dpi
    left = 1.25 if row_labels else 0.0
    top = 0.45 if title else 0.0
    fig_w, fig_h = img_w + left, img_h + top
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    ax = fig.add_axes((left / fig_w, 0.0, img_w / fig_w, img_h / fig_h))
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    ax.set_xticks([])
    if row_labels:
        ax.set_yticks([pos for pos, _ in row_labels], [label for _, label in row_labels])
        ax.tick_params(axis="y", length=0, labelsize=9)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title, y=1.0 - 0.08 / fig_h, va="top")
    return fig


# --------------------------------------------------------------------------- images


def tile_images(
    images: Any,
    image_shape: Sequence[int] | None = None,
    n_cols: int | None = None,
    pad: int = 1,
    normalize: Normalize = "each",
    pad_value: float = 0.0,
) -> np.ndarray:
    """Arrange N flat images (N, D) into one 2-D grid array with values in [0, 1].

    ``image_shape`` is inferred as square when D is a perfect square and is required
    otherwise. ``normalize``: ``"each"`` rescales every tile to [0, 1] on its own (good for
    weights), ``"global"`` rescales the whole set together, ``"symmetric"`` maps each tile's
    zero to 0.5 and its largest magnitude to 0 or 1 (diverging, for signed weights), and
    ``"none"`` only clips to [0, 1] (for samples and probabilities). Constant tiles become 0.5.
    ``n_cols`` defaults to ceil(sqrt(N)); gaps of ``pad`` pixels are filled with ``pad_value``.
    """
    _check_positive_int(n_cols, "n_cols", allow_none=True)
    if isinstance(pad, bool) or not isinstance(pad, numbers.Integral) or pad < 0:
        raise ConfigError(f"pad must be a non-negative integer, got {pad!r}")
    if normalize not in _NORMALIZE_MODES:
        raise ConfigError(f"normalize must be one of {_NORMALIZE_MODES}, got {normalize!r}")
    tiles = _normalize(_as_tiles(images, image_shape, "images"), normalize)
    if n_cols is None:
        n_cols = math.ceil(math.sqrt(tiles.shape[0]))
    return _assemble(tiles, int(n_cols), int(pad), float(pad_value))


def weight_mosaic(
    weights: Any,
    path: str | os.PathLike[str],
    image_shape: Sequence[int] | None = None,
    n: int = 100,
    title: str | None = None,
    *,
    n_cols: int | None = None,
    dpi: int = 100,
) -> Path:
    """Draw each hidden unit's incoming weights as one grey tile; returns the written path.

    ``weights`` has boltzkit's (n_visible, n_hidden) layout. The first ``n`` hidden units are
    shown (all of them if fewer). Each tile is scaled symmetrically: mid grey is zero weight,
    white the tile's largest positive and black its largest negative weight, so receptive
    fields of very different strength are all visible.
    """
    _check_positive_int(n, "n")
    w = _to_numpy(weights, "weights")
    if w.ndim != 2:
        raise DataError(
            f"weights must be a 2-D (n_visible, n_hidden) matrix, got shape {w.shape}; "
            "pass the model's weight matrix W"
        )
    filters = w.T[:n]
    tiles = _normalize(_as_tiles(filters, image_shape, "weights (per hidden unit)"), "symmetric")
    if n_cols is None:
        n_cols = math.ceil(math.sqrt(tiles.shape[0]))
    _check_positive_int(n_cols, "n_cols")
    grid = _assemble(tiles, int(n_cols), 1, 0.0)
    return _save(_image_figure(grid, title, dpi), path, dpi)


def sample_grid(
    samples: Any,
    path: str | os.PathLike[str],
    image_shape: Sequence[int] | None = None,
    n_cols: int | None = None,
    title: str | None = None,
    *,
    reference: Any = None,
    n: int | None = 100,
    normalize: Normalize | None = None,
    dpi: int = 100,
) -> Path:
    """Picture samples: a grid of images, or a histogram/scatter for 1-D/2-D data.

    With D > 2 (or any ``image_shape``) the first ``n`` samples (``None``: all) are tiled as
    images; ``normalize=None`` clips when values lie in [0, 1] and rescales globally otherwise.
    With D == 1 a density histogram is drawn, with D == 2 a scatter plot; ``reference`` data
    (e.g. the training set) is overlaid in another colour to compare against. A 1-D array is
    read as N scalar samples. Returns the written path.
    """
    _check_positive_int(n, "n", allow_none=True)
    arr = _to_numpy(samples, "samples")
    if arr.ndim == 0:
        raise DataError("samples is a single number; pass an (N, D) array of samples")
    if arr.ndim == 1:  # N scalar samples, or one flat image when image_shape is given
        arr = arr[None, :] if image_shape is not None else arr[:, None]
    low_dim = arr.ndim == 2 and arr.shape[1] in (1, 2) and image_shape is None
    if not low_dim:
        if reference is not None:
            raise ConfigError(
                "reference is only drawn for 1-D or 2-D samples; drop reference=, or plot the "
                "reference images with their own sample_grid call"
            )
        if n is not None:
            arr = arr[:n]
        tiles = _as_tiles(arr, image_shape, "samples")
        tiles = _normalize(tiles, _auto_normalize(tiles, normalize))
        if n_cols is None:
            n_cols = math.ceil(math.sqrt(tiles.shape[0]))
        _check_positive_int(n_cols, "n_cols")
        grid = _assemble(tiles, int(n_cols), 1, _GRID_PAD)
        return _save(_image_figure(grid, title, dpi), path, dpi)

    if arr.shape[0] == 0:
        raise DataError("samples is empty; pass at least one sample")
    _check_finite(arr, "samples")
    ref = None
    if reference is not None:
        ref = _to_numpy(reference, "reference")
        if ref.ndim == 1:
            ref = ref[:, None]
        if ref.ndim != 2 or ref.shape[1] != arr.shape[1] or ref.shape[0] == 0:
            raise DataError(
                f"reference has shape {ref.shape} but samples are {arr.shape[1]}-D; pass "
                f"reference as a non-empty (M, {arr.shape[1]}) array"
            )
        _check_finite(ref, "reference")

    d = arr.shape[1]
    fig = Figure(figsize=(5.5, 5.0) if d == 2 else (6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    legend_scale = 1.0
    if d == 1:
        pooled = arr[:, 0] if ref is None else np.concatenate([arr[:, 0], ref[:, 0]])
        lo, hi = float(pooled.min()), float(pooled.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, int(np.clip(np.sqrt(pooled.size), 10, 60)) + 1)
        if ref is not None:
            ax.hist(
                ref[:, 0],
                bins=bins,
                density=True,
                color=_REFERENCE_COLOR,
                alpha=0.45,
                label="reference",
            )
        ax.hist(
            arr[:, 0],
            bins=bins,
            density=True,
            histtype="step",
            linewidth=1.8,
            color=_SAMPLE_COLOR,
            label="samples",
        )
        ax.set_xlabel("value")
        ax.set_ylabel("density")
    else:
        size = float(np.clip(2000.0 / max(arr.shape[0], 1), 1.0, 20.0))
        legend_scale = max(1.0, 5.0 / math.sqrt(size))  # keep legend dots readable
        if ref is not None:
            ax.scatter(
                ref[:, 0],
                ref[:, 1],
                s=size,
                color=_REFERENCE_COLOR,
                alpha=0.4,
                linewidths=0,
                label="reference",
                rasterized=True,
            )
        ax.scatter(
            arr[:, 0],
            arr[:, 1],
            s=size,
            color=_SAMPLE_COLOR,
            alpha=0.6,
            linewidths=0,
            label="samples",
            rasterized=True,
        )
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
    if ref is not None:
        ax.legend(loc="best", frameon=False, markerscale=legend_scale)
    if title:
        ax.set_title(title)
    return _save(fig, path, dpi)


def reconstruction_grid(
    originals: Any,
    reconstructions: Any,
    path: str | os.PathLike[str],
    image_shape: Sequence[int] | None = None,
    n: int = 10,
    *,
    n_cols: int | None = None,
    normalize: Normalize | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Show originals with their reconstructions directly beneath, column by column.

    The first ``n`` pairs are drawn in rows of ``n_cols`` (default: ``min(n, 10)``): a row of
    originals, then the matching row of reconstructions. Both share one normalisation
    (``None``: clip when values lie in [0, 1], else rescale globally) so they are comparable.
    Returns the written path.
    """
    _check_positive_int(n, "n")
    _check_positive_int(n_cols, "n_cols", allow_none=True)
    orig = _to_numpy(originals, "originals")
    recon = _to_numpy(reconstructions, "reconstructions")
    if orig.shape != recon.shape:
        raise DataError(
            f"originals have shape {orig.shape} but reconstructions {recon.shape}; pass one "
            "reconstruction per original, in the same order"
        )
    if orig.ndim in (2, 3):
        orig, recon = orig[:n], recon[:n]
    o = _as_tiles(orig, image_shape, "originals")
    r = _as_tiles(recon, image_shape, "reconstructions")
    both = _normalize(np.concatenate([o, r]), _auto_normalize(np.concatenate([o, r]), normalize))
    o, r = both[: len(o)], both[len(o) :]
    count, h, w = o.shape
    cols = min(n_cols if n_cols is not None else min(n, 10), count)
    pairs = -(-count // cols)
    layout = np.full((2 * pairs * cols, h, w), _GRID_PAD)
    for i in range(count):
        pr, c = divmod(i, cols)
        layout[(2 * pr) * cols + c] = o[i]
        layout[(2 * pr + 1) * cols + c] = r[i]
    grid = _assemble(layout, cols, 1, _GRID_PAD)
    labels = []
    for pr in range(pairs):
        labels.append(((2 * pr) * (h + 1) + (h - 1) / 2, "original"))
        labels.append(((2 * pr + 1) * (h + 1) + (h - 1) / 2, "reconstruction"))
    return _save(_image_figure(grid, title, dpi, row_labels=labels), path, dpi)


# --------------------------------------------------------------------------- curves


def _as_number(value: Any) -> float | None:
    """A finite-or-NaN float for numeric values (incl. 0-d tensors/arrays), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        item = value.item()
        if isinstance(item, numbers.Real) and not isinstance(item, bool):
            return float(item)
    return None


def training_curves(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    keys: Sequence[str] | None = None,
    *,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Plot every numeric metric in a per-epoch history as its own small panel vs epoch.

    ``history`` is a list of dicts, one per epoch (e.g. ``{"epoch": 1, "recon_error": 0.1,
    "log_likelihood": -90.0, "log_likelihood_err": 0.3, "time": 1.2}``). "epoch" is the x axis
    (the position in the list when absent); "time" is not plotted. A metric missing (or NaN)
    in some epochs is drawn where present. When ``<key>_err`` exists it becomes error bars on
    ``<key>``. ``keys`` restricts and orders the panels. Returns the written path.
    """
    if isinstance(history, Mapping) or not isinstance(history, Sequence):
        raise DataError(
            f"history must be a list of per-epoch dicts, got {type(history).__name__}; "
            "for a saved run use curves_from_json"
        )
    if len(history) == 0:
        raise DataError("history is empty; train for at least one epoch before plotting curves")
    for i, row in enumerate(history):
        if not isinstance(row, Mapping):
            raise DataError(
                f"history[{i}] is a {type(row).__name__}, not a dict; each entry must map "
                "metric names to numbers"
            )

    xs: list[float] = []
    for i, row in enumerate(history):
        ep = _as_number(row.get("epoch"))
        xs.append(ep if ep is not None and math.isfinite(ep) else float(i + 1))

    numeric: dict[str, list[float | None]] = {}
    for i, row in enumerate(history):
        for key, value in row.items():
            num = _as_number(value)
            if num is None:
                continue
            numeric.setdefault(str(key), [None] * len(history))[i] = num

    err_of = {k: f"{k}_err" for k in numeric if f"{k}_err" in numeric}
    err_keys = set(err_of.values())
    candidates = [k for k in numeric if k not in _SKIP_KEYS and k not in err_keys]
    if keys is not None:
        if isinstance(keys, str):
            keys = [keys]
        unknown = [k for k in keys if k not in numeric or k in _SKIP_KEYS]
        if unknown:
            raise ConfigError(
                f"keys {unknown} are not numeric metrics in history; choose from {candidates}"
            )
        candidates = list(dict.fromkeys(keys))
    plotted = [k for k in candidates if any(v is not None and math.isfinite(v) for v in numeric[k])]
    if not plotted:
        raise DataError(
            "history has no numeric metric with a finite value to plot (epoch and time are "
            "not plotted); record metrics such as recon_error per epoch"
        )

    n_panels = len(plotted)
    n_cols = min(3, n_panels)
    n_rows = -(-n_panels // n_cols)
    fig = Figure(figsize=(4.2 * n_cols, 3.0 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    x_all = np.asarray(xs)
    for idx, key in enumerate(plotted):
        ax = axes[idx // n_cols][idx % n_cols]
        ys = np.array([np.nan if v is None else v for v in numeric[key]], dtype=np.float64)
        keep = np.isfinite(ys)
        x, y = x_all[keep], ys[keep]
        marker = "o" if keep.sum() <= 30 else None
        if key in err_of:
            errs = np.array(
                [np.nan if v is None else v for v in numeric[err_of[key]]], dtype=np.float64
            )[keep]
            errs = np.where(np.isfinite(errs), np.abs(errs), 0.0)
            ax.errorbar(x, y, yerr=errs, marker=marker, markersize=3, capsize=2, linewidth=1.4)
        else:
            ax.plot(x, y, marker=marker, markersize=3, linewidth=1.4)
        ax.set_title(key.replace("_", " "), fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    for idx in range(n_panels, n_rows * n_cols):
        axes[idx // n_cols][idx % n_cols].set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)


def curves_from_json(
    history_path: str | os.PathLike[str],
    path: str | os.PathLike[str],
    keys: Sequence[str] | None = None,
    **kwargs: Any,
) -> Path:
    """Read a saved history (a JSON list, or ``{"history": [...]}``) and plot it.

    Extra keyword arguments go to :func:`training_curves`. Returns the written path.
    """
    src = Path(history_path)
    try:
        text = src.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(
            f"history file {str(src)!r} does not exist; pass the JSON file the trainer wrote"
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"history file {str(src)!r} is not valid JSON ({exc.msg} at line {exc.lineno}); "
            "pass a JSON list of per-epoch dicts"
        ) from exc
    if isinstance(data, Mapping):
        if "history" not in data:
            raise DataError(
                f"history file {str(src)!r} holds an object without a 'history' entry; "
                'expected a JSON list or {"history": [...]}'
            )
        data = data["history"]
    if not isinstance(data, list):
        raise DataError(
            f"history file {str(src)!r} holds a {type(data).__name__}, not a list of "
            "per-epoch dicts"
        )
    return training_curves(data, path, keys=keys, **kwargs)


# --------------------------------------------------------------------------- training runs
def _first_layer(model: Any):
    """The weight matrix (n_visible, n_hidden) whose columns are pictures of the input, or
    None: a dense RBM's weights, a stack's bottom layer, a conv RBM's filters."""
    filters = getattr(model, "filter_images", None)
    if callable(filters):
        return filters()
    for holder in (model, getattr(model, "rbm", None),
                   next(iter(getattr(model, "layers", ()) or ()), None)):
        w = getattr(getattr(holder, "connection", None), "weights", None)
        if w is not None and w.ndim == 2:
            return w.detach()
    conns = getattr(model, "connections", None)
    if conns:
        return conns[0].weights.detach()
    return None


def write_training_plots(model: Any, history: Sequence[Mapping[str, Any]], stem: Path,
                         seed: int = 0, steps: int = 1000) -> list[Path]:
    """The pictures of a training run, named after ``stem``: the first layer's weights as a
    mosaic (when its rows are square images), 100 samples (when the model samples) and the
    training curves.  Returns the paths written."""
    import torch

    paths = []
    n = getattr(model, "n_visible", None)
    side = math.isqrt(n) if isinstance(n, int) else 0
    shape = (side, side) if side and side * side == n else None
    weights = _first_layer(model)
    if weights is not None:
        if getattr(model, "filter_images", None) is not None:
            fs = int(getattr(model, "filter_size", 0))
            shape = (fs, fs) if fs * fs == weights.shape[0] else None
        if shape is not None and weights.shape[0] == shape[0] * shape[1]:
            p = Path(f"{stem}.weights.png")
            weight_mosaic(weights, p, image_shape=shape)
            paths.append(p)
    sample = getattr(model, "sample", None)
    if callable(sample):
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        samples = sample(100, steps=steps, generator=gen)
        p = Path(f"{stem}.samples.png")
        n_in = samples.shape[1]
        side = math.isqrt(n_in)
        sample_grid(samples, p, image_shape=(side, side) if side * side == n_in else None)
        paths.append(p)
    if history:
        p = Path(f"{stem}.curves.png")
        training_curves(list(history), p)
        paths.append(p)
    return paths
