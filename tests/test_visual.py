"""Tests for boltzkit.visual: grids, PNG output, atomic writes and error messages."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from boltzkit import visual
from boltzkit.errors import ConfigError, DataError
from boltzkit.visual import (
    curves_from_json,
    reconstruction_grid,
    sample_grid,
    tile_images,
    training_curves,
    weight_mosaic,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path: Path) -> np.ndarray:
    """Check the PNG signature and return the decoded pixels."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 10 and img.shape[1] > 10
    return img


def aspect(img: np.ndarray) -> float:
    return img.shape[1] / img.shape[0]


def only_file(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- tile_images


def test_tile_images_shape_square_inferred() -> None:
    images = np.random.default_rng(0).random((10, 16))
    grid = tile_images(images)  # 4x4 tiles, 4 columns -> 3 rows
    assert grid.shape == (3 * 4 + 2, 4 * 4 + 3)
    grid = tile_images(images, n_cols=5, pad=0)
    assert grid.shape == (2 * 4, 5 * 4)


def test_tile_images_explicit_shape_and_torch_input() -> None:
    images = torch.rand(6, 12, requires_grad=True)
    grid = tile_images(images, image_shape=(3, 4), n_cols=3, pad=2)
    assert grid.shape == (2 * 3 + 2, 3 * 4 + 2 * 2)
    # (N, H, W) input and a single flat vector are accepted too
    assert tile_images(torch.rand(4, 5, 7), pad=0).shape == (10, 14)
    assert tile_images(np.zeros(9)).shape == (3, 3)


def test_tile_images_fewer_images_than_columns() -> None:
    grid = tile_images(np.ones((2, 4)), n_cols=8, pad=1)
    assert grid.shape == (2, 5)  # only as many columns as images


def test_tile_images_normalize_each() -> None:
    a = np.array([[0.0, 1.0, 2.0, 4.0], [-10.0, -10.0, 10.0, 10.0]])
    grid = tile_images(a, n_cols=2, pad=1, normalize="each")
    np.testing.assert_allclose(grid[:, :2], [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(grid[:, 3:], [[0.0, 0.0], [1.0, 1.0]])
    assert grid.min() == 0.0 and grid.max() == 1.0


def test_tile_images_normalize_global_and_none() -> None:
    a = np.array([[0.0, 1.0, 2.0, 4.0], [-4.0, -4.0, 4.0, 4.0]])
    grid = tile_images(a, n_cols=2, pad=0, normalize="global")
    np.testing.assert_allclose(grid[:, :2], [[0.5, 0.625], [0.75, 1.0]])
    np.testing.assert_allclose(grid[:, 2:], [[0.0, 0.0], [1.0, 1.0]])
    clipped = tile_images(np.array([[-0.5, 0.3, 0.7, 1.5]]), normalize="none")
    np.testing.assert_allclose(clipped, [[0.0, 0.3], [0.7, 1.0]])


def test_tile_images_normalize_symmetric_and_constant() -> None:
    grid = tile_images(np.array([[-2.0, 0.0, 1.0, 2.0]]), normalize="symmetric")
    np.testing.assert_allclose(grid, [[0.0, 0.5], [0.75, 1.0]])
    flat = tile_images(np.full((1, 4), 3.0), normalize="each")
    np.testing.assert_allclose(flat, 0.5)


def test_tile_images_pad_value() -> None:
    grid = tile_images(np.ones((2, 1)), n_cols=2, pad=1, pad_value=0.25, normalize="none")
    np.testing.assert_allclose(grid, [[1.0, 0.25, 1.0]])


def test_tile_images_non_square_without_shape_raises() -> None:
    with pytest.raises(DataError, match="image_shape"):
        tile_images(np.zeros((3, 10)))


def test_tile_images_bad_inputs() -> None:
    with pytest.raises(DataError, match="height \\* width == 10"):
        tile_images(np.zeros((3, 10)), image_shape=(3, 3))
    with pytest.raises(ConfigError, match="normalize"):
        tile_images(np.zeros((1, 4)), normalize="bogus")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_cols"):
        tile_images(np.zeros((1, 4)), n_cols=0)
    with pytest.raises(ConfigError, match="pad"):
        tile_images(np.zeros((1, 4)), pad=-1)
    with pytest.raises(DataError, match="NaN"):
        tile_images(np.array([[0.0, np.nan, 0.0, 0.0]]))
    with pytest.raises(DataError, match="empty"):
        tile_images(np.zeros((0, 4)))
    with pytest.raises(DataError, match="shape"):
        tile_images(np.zeros((2, 2, 2, 2)))


# --------------------------------------------------------------------------- images to files


def test_weight_mosaic_writes_png(tmp_path: Path) -> None:
    weights = torch.randn(64, 30, requires_grad=True)  # (n_visible, n_hidden)
    out = weight_mosaic(weights, tmp_path / "w.png", title="filters")
    assert out == tmp_path / "w.png"
    img = read_png(out)
    assert 0.7 < aspect(img) < 1.3  # 30 tiles -> 6 x 5 grid, roughly square


def test_weight_mosaic_tiles_are_columns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, np.ndarray] = {}
    real = visual._image_figure

    def spy(grid: np.ndarray, *args: object, **kwargs: object) -> Figure:
        seen["grid"] = grid
        return real(grid, *args, **kwargs)

    monkeypatch.setattr(visual, "_image_figure", spy)
    w = np.zeros((4, 3))
    w[:, 1] = [1.0, -1.0, 0.5, 0.0]  # hidden unit 1
    weight_mosaic(w, tmp_path / "w.png", n=2)
    grid = seen["grid"]
    assert grid.shape == (2, 5)  # two 2x2 tiles (n=2 of 3 units), one padding column
    np.testing.assert_allclose(grid[:, :2], 0.5)  # all-zero unit is mid grey
    np.testing.assert_allclose(grid[:, 3:], [[1.0, 0.0], [0.75, 0.5]])


def test_weight_mosaic_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image_shape"):
        weight_mosaic(np.zeros((10, 4)), tmp_path / "w.png")
    with pytest.raises(DataError, match="n_visible, n_hidden"):
        weight_mosaic(np.zeros(16), tmp_path / "w.png")
    with pytest.raises(ConfigError, match="format"):
        weight_mosaic(np.zeros((16, 4)), tmp_path / "w.notanimage")
    assert only_file(tmp_path) == []


def test_weight_mosaic_non_square_with_shape(tmp_path: Path) -> None:
    img = read_png(weight_mosaic(np.random.randn(10, 3), tmp_path / "w.png", image_shape=(2, 5)))
    assert aspect(img) > 1.5  # three 2x5 tiles in one row is wide


def test_sample_grid_images(tmp_path: Path) -> None:
    samples = torch.bernoulli(torch.full((20, 49), 0.3))
    img = read_png(sample_grid(samples, tmp_path / "s.png", n_cols=10, title="samples"))
    assert 2.5 < aspect(img) < 6  # 10 x 2 grid of 7x7 tiles, plus a title strip
    # values outside [0, 1] are rescaled rather than clipped, and n limits the count
    img = read_png(sample_grid(np.random.randn(500, 16), tmp_path / "g.png", n=4))
    assert 0.8 < aspect(img) < 1.25


def test_sample_grid_histogram_with_reference(tmp_path: Path) -> None:
    out = sample_grid(torch.randn(300), tmp_path / "h.png", reference=np.random.randn(200, 1))
    img = read_png(out)
    assert aspect(img) > 1.2  # a landscape histogram
    read_png(sample_grid(np.full((5, 1), 2.0), tmp_path / "const.png"))  # constant data


def test_sample_grid_scatter_with_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    out = sample_grid(
        rng.normal(size=(400, 2)), tmp_path / "sc.png", reference=torch.randn(300, 2), title="2-D"
    )
    img = read_png(out)
    assert 0.8 < aspect(img) < 1.5
    # the reference colour is present somewhere (orange), as are the samples (blue)
    rgb = img[..., :3]
    orange = (rgb[..., 0] > 0.8) & (rgb[..., 1] > 0.4) & (rgb[..., 2] < 0.4)
    blue = (rgb[..., 2] > 0.6) & (rgb[..., 0] < 0.4)
    assert orange.any() and blue.any()


def test_sample_grid_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="reference"):
        sample_grid(np.zeros((5, 2)), tmp_path / "s.png", reference=np.zeros((5, 3)))
    with pytest.raises(ConfigError, match="reference"):
        sample_grid(np.zeros((5, 16)), tmp_path / "s.png", reference=np.zeros((5, 16)))
    with pytest.raises(DataError, match="image_shape"):
        sample_grid(np.zeros((5, 7)), tmp_path / "s.png")
    with pytest.raises(DataError, match="NaN"):
        sample_grid(np.array([[0.0, np.inf]]), tmp_path / "s.png")


def test_reconstruction_grid(tmp_path: Path) -> None:
    orig = torch.rand(12, 64)
    recon = orig.clamp(0.1, 0.9)
    img = read_png(reconstruction_grid(orig, recon, tmp_path / "r.png", n=5))
    # one pair of rows of five 8x8 tiles plus a label margin: wide
    assert 2.0 < aspect(img) < 5.0
    img = read_png(reconstruction_grid(orig, recon, tmp_path / "r2.png", n=12, n_cols=4))
    assert 0.4 < aspect(img) < 1.5  # 3 pairs of rows of 4 tiles


def test_reconstruction_grid_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, np.ndarray] = {}
    real = visual._image_figure

    def spy(grid: np.ndarray, *args: object, **kwargs: object) -> Figure:
        seen["grid"] = grid
        return real(grid, *args, **kwargs)

    monkeypatch.setattr(visual, "_image_figure", spy)
    orig = np.array([[1.0], [0.0], [1.0]])
    recon = np.array([[0.2], [0.4], [0.6]])
    reconstruction_grid(orig, recon, tmp_path / "r.png", image_shape=(1, 1), n_cols=2)
    # rows: originals 0-1, their reconstructions, original 2 (+grey blank), its reconstruction
    np.testing.assert_allclose(
        seen["grid"][::2, ::2], [[1.0, 0.0], [0.2, 0.4], [1.0, 0.5], [0.6, 0.5]]
    )


def test_reconstruction_grid_shape_mismatch(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="reconstructions"):
        reconstruction_grid(np.zeros((4, 16)), np.zeros((3, 16)), tmp_path / "r.png")


# --------------------------------------------------------------------------- curves


HISTORY = [
    {"epoch": 1, "recon_error": 0.30, "free_energy_gap": 2.0, "time": 1.2, "note": "warmup"},
    {
        "epoch": 2,
        "recon_error": 0.20,
        "free_energy_gap": 1.5,
        "log_likelihood": -95.0,
        "log_likelihood_err": 0.5,
        "time": 1.1,
    },
    {"epoch": 3, "recon_error": 0.15, "free_energy_gap": float("nan"), "time": 1.1},
    {
        "epoch": 4,
        "recon_error": 0.12,
        "free_energy_gap": 1.1,
        "log_likelihood": -90.0,
        "log_likelihood_err": 0.3,
        "time": 1.0,
    },
]


def test_training_curves_missing_keys(tmp_path: Path) -> None:
    img = read_png(training_curves(HISTORY, tmp_path / "c.png"))
    assert 2.0 < aspect(img) < 6.0  # three panels in one row


def test_training_curves_panels(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    titles: list[str] = []
    real_save = visual._save

    def spy(fig: Figure, path: Path, dpi: int) -> Path:
        titles.extend(ax.get_title() for ax in fig.axes if ax.get_visible())
        return real_save(fig, path, dpi)

    monkeypatch.setattr(visual, "_save", spy)
    training_curves(HISTORY, tmp_path / "c.png")
    # epoch/time, strings and *_err companions are not panels of their own
    assert titles == ["recon error", "free energy gap", "log likelihood"]
    titles.clear()
    training_curves(HISTORY, tmp_path / "k.png", keys=["log_likelihood"])
    assert titles == ["log likelihood"]


def test_training_curves_filter_and_tensors(tmp_path: Path) -> None:
    hist = [{"loss": torch.tensor(1.0 / (i + 1)), "lr": np.float32(0.1)} for i in range(50)]
    img = read_png(training_curves(hist, tmp_path / "c.png", keys=["loss"]))
    assert 1.0 < aspect(img) < 2.0  # a single panel
    with pytest.raises(ConfigError, match="choose from"):
        training_curves(hist, tmp_path / "c.png", keys=["nope"])


def test_training_curves_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty"):
        training_curves([], tmp_path / "c.png")
    with pytest.raises(DataError, match="no numeric metric"):
        training_curves([{"epoch": 1, "time": 2.0}], tmp_path / "c.png")
    with pytest.raises(DataError, match="dict"):
        training_curves([1, 2], tmp_path / "c.png")  # type: ignore[list-item]


def test_curves_from_json(tmp_path: Path) -> None:
    listed = tmp_path / "h1.json"
    listed.write_text(json.dumps(HISTORY[:2]))
    read_png(curves_from_json(listed, tmp_path / "out" / "nested" / "c1.png"))
    wrapped = tmp_path / "h2.json"
    wrapped.write_text(json.dumps({"history": HISTORY[:2], "config": {}}))
    read_png(curves_from_json(wrapped, tmp_path / "c2.png", keys=["recon_error"]))
    with pytest.raises(DataError, match="does not exist"):
        curves_from_json(tmp_path / "missing.json", tmp_path / "c.png")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        curves_from_json(tmp_path / "bad.json", tmp_path / "c.png")


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "w.png"
    target.parent.mkdir()
    target.write_bytes(b"old")
    weight_mosaic(np.random.randn(16, 4), target)
    assert only_file(target.parent) == ["w.png"]
    assert target.read_bytes()[:8] == PNG_SIGNATURE


def test_failed_write_keeps_old_file_and_cleans_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "w.png"
    target.write_bytes(b"old")

    def boom(self: Figure, *args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(OSError, match="disk full"):
        weight_mosaic(np.random.randn(16, 4), target)
    assert only_file(tmp_path) == ["w.png"]
    assert target.read_bytes() == b"old"


def test_threads_write_concurrently(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            sample_grid(np.random.rand(9, 16), tmp_path / f"s{i}.png")
            weight_mosaic(np.random.randn(16, 9), tmp_path / f"c{i}.png")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(3):
        read_png(tmp_path / f"s{i}.png")
        read_png(tmp_path / f"c{i}.png")


def test_no_pyplot_import() -> None:
    import ast

    tree = ast.parse(Path(visual.__file__).read_text())
    names = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ] + [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not any("pyplot" in n for n in names)
