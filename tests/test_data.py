"""Tests of boltzkit.data: MNIST/IDX files, digits, user arrays, validation, mixtures, registry."""

from __future__ import annotations

import gzip
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from boltzkit.data import (
    DATASETS,
    MIXTURES,
    binarize,
    load_array,
    load_dataset,
    load_digits,
    load_mnist,
    make_mixture,
    mixture_spec,
    read_idx,
    validate_data,
)
from boltzkit.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


def _mnist_dir() -> Path | None:
    env = os.environ.get("BOLTZKIT_DATA")
    candidates = [Path(env), Path(env) / "mnist"] if env else []
    candidates.append(REPO.parent / "shared" / "data" / "mnist")
    for c in candidates:
        if (c / "t10k-images-idx3-ubyte.gz").is_file() or (c / "t10k-images-idx3-ubyte").is_file():
            return c
    return None


@pytest.fixture(scope="module")
def mnist_dir() -> Path:
    d = _mnist_dir()
    if d is None:
        pytest.skip("MNIST files not available (set BOLTZKIT_DATA to the MNIST folder)")
    return d


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose the data directory explicitly; a user's BOLTZKIT_DATA must not leak in."""
    monkeypatch.delenv("BOLTZKIT_DATA", raising=False)


def _idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX buffer."""
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def _write_fake_mnist(folder: Path, n: int = 20, gz: bool = True, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            raw = _idx_bytes(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)


# --------------------------------------------------------------------------- MNIST, real files


def test_mnist_train_shapes_and_threshold(mnist_dir: Path) -> None:
    x, y = load_mnist(mnist_dir, split="train", binarize="threshold")
    assert x.shape == (60000, 784) and x.dtype == torch.float32
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert int(y.min()) == 0 and int(y.max()) == 9
    assert bool(((x == 0) | (x == 1)).all())
    assert torch.bincount(y, minlength=10).min() > 5000
    assert 0.1 < float(x.mean()) < 0.16


def test_mnist_test_split(mnist_dir: Path) -> None:
    x, y = load_mnist(mnist_dir, split="test", binarize="threshold")
    assert x.shape == (10000, 784) and y.shape == (10000,)
    assert set(torch.unique(y).tolist()) == set(range(10))
    assert set(torch.unique(x).tolist()) == {0.0, 1.0}


def test_mnist_grey_levels(mnist_dir: Path) -> None:
    x, _ = load_mnist(mnist_dir, split="test", binarize="none")
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert len(torch.unique(x)) > 2
    t, _ = load_mnist(mnist_dir, split="test", binarize="threshold")
    assert torch.equal(t, (x > 0.5).float())


def test_mnist_stochastic_reproducible(mnist_dir: Path) -> None:
    a, _ = load_mnist(mnist_dir, split="test", binarize="stochastic", seed=3, limit=500)
    b, _ = load_mnist(mnist_dir, split="test", binarize="stochastic", seed=3, limit=500)
    c, _ = load_mnist(mnist_dir, split="test", binarize="stochastic", seed=4, limit=500)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert set(torch.unique(a).tolist()) == {0.0, 1.0}
    grey, _ = load_mnist(mnist_dir, split="test", binarize="none", limit=500)
    # Bernoulli(p) mean matches the grey mean: 392000 pixels, std of the mean < 1e-3.
    assert abs(float(a.mean()) - float(grey.mean())) < 5e-3
    # limit=k gives exactly the first k rows of a longer stochastic load.
    d, _ = load_mnist(mnist_dir, split="test", binarize="stochastic", seed=3, limit=100)
    assert torch.equal(d, a[:100])


def test_mnist_limit(mnist_dir: Path) -> None:
    x, y = load_mnist(mnist_dir, split="test", limit=123)
    full_x, full_y = load_mnist(mnist_dir, split="test")
    assert x.shape == (123, 784) and y.shape == (123,)
    assert torch.equal(x, full_x[:123]) and torch.equal(y, full_y[:123])


def test_mnist_env_var_folder_or_parent(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOLTZKIT_DATA", str(mnist_dir))
    x1, _ = load_mnist(split="test", limit=5)
    monkeypatch.setenv("BOLTZKIT_DATA", str(mnist_dir.parent))
    if (mnist_dir.parent / "mnist") == mnist_dir:
        x2, _ = load_mnist(split="test", limit=5)
        assert torch.equal(x1, x2)
    assert x1.shape == (5, 784)


# --------------------------------------------------------------------------- MNIST, synthetic


@pytest.mark.parametrize("gz", [True, False])
def test_fake_mnist_plain_and_gzip(tmp_path: Path, gz: bool) -> None:
    _write_fake_mnist(tmp_path, n=20, gz=gz)
    x, y = load_mnist(tmp_path, split="train", binarize="none")
    raw = read_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    assert x.shape == (20, 784)
    np.testing.assert_allclose(x.numpy(), raw.reshape(20, -1) / 255.0, rtol=1e-6)
    assert y.dtype == torch.int64 and int(y.max()) <= 9


def test_parent_dir_with_mnist_subfolder(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path / "mnist", n=7)
    x, _ = load_mnist(tmp_path, split="test")
    assert x.shape == (7, 784)


def test_truncated_idx_is_data_error(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path, n=10, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        load_mnist(tmp_path)


def test_wrong_magic_is_data_error(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path, n=10, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[0] = 7
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz.*magic"):
        load_mnist(tmp_path)


def test_truncated_gzip_is_data_error(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path, n=10, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(tmp_path, split="test")


def test_mismatched_counts_is_data_error(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path, n=10, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(9, np.uint8)))
    with pytest.raises(DataError, match="10 images but .* 9 labels"):
        load_mnist(tmp_path)


def test_missing_dir_mentions_env_var(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="BOLTZKIT_DATA"):
        load_mnist(tmp_path / "does-not-exist")
    with pytest.raises(DataError, match="BOLTZKIT_DATA"):
        load_mnist()  # no argument, no environment variable


def test_missing_files_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*BOLTZKIT_DATA"):
        load_mnist(tmp_path)


def test_read_idx_cache_sees_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(_idx_bytes(np.arange(5, dtype=np.uint8)))
    first = read_idx(path)
    assert read_idx(path) is first  # cached
    assert not first.flags.writeable
    path.write_bytes(_idx_bytes(np.arange(6, dtype=np.uint8)))
    assert read_idx(path).shape == (6,)


def test_mnist_bad_options(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path, n=3)
    with pytest.raises(ConfigError, match="split"):
        load_mnist(tmp_path, split="validation")
    with pytest.raises(ConfigError, match="threshold"):
        load_mnist(tmp_path, binarize="otsu")
    with pytest.raises(ConfigError, match="limit"):
        load_mnist(tmp_path, limit=0)


# --------------------------------------------------------------------------- digits


def test_digits_split_disjoint_and_deterministic() -> None:
    from sklearn.datasets import load_digits as sk_digits

    tr, ytr = load_digits("train", binarize="none")
    te, yte = load_digits("test", binarize="none")
    assert tr.shape == (1438, 64) and te.shape == (359, 64)
    assert float(tr.max()) == 1.0 and float(tr.min()) == 0.0
    # train + test is exactly a partition of the 1797 images (as a multiset of rows+labels)
    rows = Counter(
        r.tobytes() + bytes([int(t)]) for r, t in zip(tr.numpy(), ytr.numpy(), strict=True)
    )
    rows.update(r.tobytes() + bytes([int(t)]) for r, t in zip(te.numpy(), yte.numpy(), strict=True))
    sk = sk_digits()
    full = (sk.data / 16.0).astype(np.float32)
    expected = Counter(r.tobytes() + bytes([int(t)]) for r, t in zip(full, sk.target, strict=True))
    assert rows == expected
    tr2, ytr2 = load_digits("train", binarize="none")
    assert torch.equal(tr, tr2) and torch.equal(ytr, ytr2)
    assert torch.equal(load_digits("train")[0], tr)  # grey levels unless asked
    b, _ = load_digits("train", binarize="threshold")
    assert torch.equal(b, (tr > 0.5).float())
    s1, _ = load_digits("test", binarize="stochastic", seed=1)
    s2, _ = load_digits("test", binarize="stochastic", seed=1)
    assert torch.equal(s1, s2) and set(torch.unique(s1).tolist()) <= {0.0, 1.0}


# --------------------------------------------------------------------------- load_array


def test_load_npy_shapes(tmp_path: Path) -> None:
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.save(tmp_path / "a.npy", a)
    x = load_array(tmp_path / "a.npy")
    assert x.dtype == torch.float32 and x.shape == (3, 4)
    np.testing.assert_array_equal(x.numpy(), a)
    np.save(tmp_path / "v.npy", np.arange(5))
    assert load_array(tmp_path / "v.npy").shape == (5, 1)
    np.save(tmp_path / "img.npy", np.zeros((4, 3, 2, 2), dtype=np.uint8))
    assert load_array(tmp_path / "img.npy").shape == (4, 12)


def test_load_npy_mmap(tmp_path: Path) -> None:
    a = np.random.default_rng(0).random((50, 6)).astype(np.float32)
    path = tmp_path / "big.npy"
    np.save(path, a)
    x = load_array(path, mmap=True)
    np.testing.assert_array_equal(x.numpy(), a)
    x.mul_(0)  # copy-on-write: the file on disk is untouched
    np.testing.assert_array_equal(np.load(path), a)


def test_load_npz_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "one.npz", data=np.ones((2, 3)))
    assert load_array(tmp_path / "one.npz").shape == (2, 3)
    np.savez(tmp_path / "two.npz", train=np.ones((2, 3)), test=np.zeros((4, 3)))
    with pytest.raises(DataError, match="train.*test|test.*train"):
        load_array(tmp_path / "two.npz")
    assert load_array(tmp_path / "two.npz", key="test").shape == (4, 3)
    with pytest.raises(DataError, match="available keys"):
        load_array(tmp_path / "two.npz", key="valid")


def test_load_csv_header_and_delimiters(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("a,b,c\n1,0,1\n0,1,0.5\n")
    x = load_array(tmp_path / "h.csv")
    np.testing.assert_array_equal(x.numpy(), [[1, 0, 1], [0, 1, 0.5]])
    (tmp_path / "w.csv").write_text("# comment\n1 2\n3 4\n5 6\n")
    assert load_array(tmp_path / "w.csv").shape == (3, 2)
    (tmp_path / "one.csv").write_text("x\n1\n2\n3\n")
    assert load_array(tmp_path / "one.csv").shape == (3, 1)
    (tmp_path / "bad.csv").write_text("1,2\n3,x\n")
    with pytest.raises(DataError, match="bad.csv"):
        load_array(tmp_path / "bad.csv")


def test_load_array_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_array(tmp_path / "missing.npy")
    (tmp_path / "data.parquet").write_bytes(b"x")
    with pytest.raises(DataError, match="unsupported"):
        load_array(tmp_path / "data.parquet")
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="broken.npy"):
        load_array(tmp_path / "broken.npy")


# --------------------------------------------------------------------------- validate_data


def test_validate_ok_returns_float32_contiguous() -> None:
    x = validate_data(np.array([[0, 1], [1, 0]], dtype=np.int64), kind="binary")
    assert x.dtype == torch.float32 and x.is_contiguous()
    t = torch.rand(4, 3)
    assert validate_data(t, kind="unit_interval") is t


def test_validate_shape_errors() -> None:
    with pytest.raises(DataError, match="no rows"):
        validate_data(torch.zeros(0, 5))
    with pytest.raises(DataError, match="2-D"):
        validate_data(torch.zeros(5))


def test_validate_nan_reports_count_and_row() -> None:
    x = torch.zeros(6, 3)
    x[3, 1] = float("nan")
    x[5, 0] = float("inf")
    with pytest.raises(DataError, match=r"2 NaN/inf.*row 4, column 2 \(1-based\), value nan"):
        validate_data(x, name="train")


def test_validate_binary_and_unit_interval() -> None:
    x = torch.tensor([[0.0, 1.0], [0.7, 1.0]])
    with pytest.raises(DataError, match=r"0\.7.*--binarize threshold"):
        validate_data(x, kind="binary")
    validate_data(x, kind="unit_interval")
    with pytest.raises(DataError, match=r"\[0, 1\].*1\.5"):
        validate_data(torch.tensor([[0.0, 1.5]]), kind="unit_interval")
    with pytest.raises(ConfigError, match="binary"):
        validate_data(x, kind="ternary")


def test_validate_onehot_groups() -> None:
    ok = torch.tensor([[1, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.float32)
    validate_data(ok, kind="onehot_groups", group_size=3)  # all-zero group = missing
    bad = ok.clone()
    bad[1, 3] = 1.0
    with pytest.raises(DataError, match=r"group 2 \(columns 4-6\) of row 2 .*has 2 ones"):
        validate_data(bad, kind="onehot_groups", group_size=3)
    with pytest.raises(DataError, match="multiple of group_size"):
        validate_data(ok, kind="onehot_groups", group_size=4)
    with pytest.raises(ConfigError, match="group_size"):
        validate_data(ok, kind="onehot_groups")


def test_binarize_helper() -> None:
    x = torch.tensor([[0.2, 0.5, 0.9]])
    assert binarize(x).tolist() == [[0.0, 0.0, 1.0]]
    assert torch.equal(binarize(x, "none"), x)


# --------------------------------------------------------------------------- mixtures


@pytest.mark.parametrize(
    ("name", "modes", "dim"), [("mog-1d", 2, 1), ("mog-ring8", 8, 2), ("mog-grid25", 25, 2)]
)
def test_mixture_samples_match_spec(name: str, modes: int, dim: int) -> None:
    n = 20000
    x, y = make_mixture(name, n, seed=0)
    spec = mixture_spec(name)
    assert x.shape == (n, dim) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert spec["means"].shape == (modes, dim)
    assert set(torch.unique(y).tolist()) == set(range(modes))
    std = spec["std"]
    for k in range(modes):
        xk = x[y == k]
        # 5 standard errors of the mean: fails by chance with probability < 1e-6 per axis.
        tol = 5 * std / np.sqrt(len(xk))
        assert torch.all((xk.mean(0) - spec["means"][k]).abs() < tol), (name, k)
        assert torch.all((xk.std(0) - std).abs() < 0.1 * std), (name, k)
    # modes are well separated relative to the cover radius
    d = torch.cdist(spec["means"], spec["means"]) + torch.eye(modes) * 1e9
    assert float(d.min()) > 2 * spec["cover_radius"]


def test_mixture_seed_and_errors() -> None:
    a, _ = make_mixture("mog-ring8", 100, seed=1)
    b, _ = make_mixture("mog-ring8", 100, seed=1)
    c, _ = make_mixture("mog-ring8", 100, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    np.testing.assert_allclose(mixture_spec("mog-ring8")["means"].norm(dim=1), 2.0, rtol=1e-6)
    with pytest.raises(ConfigError, match="mog-ring8"):
        make_mixture("mog-ring9", 10, seed=0)
    with pytest.raises(ConfigError):
        make_mixture("mog-1d", 0, seed=0)


# --------------------------------------------------------------------------- registry


def test_registry_names() -> None:
    assert DATASETS == ("mnist", "digits", *MIXTURES)
    with pytest.raises(ConfigError, match="mnist.*digits.*mog-ring8"):
        load_dataset("cifar10")


def test_registry_mixtures_and_digits() -> None:
    tr, ytr = load_dataset("mog-grid25")
    te, yte = load_dataset("mog-grid25", split="test")
    assert tr.shape == (10000, 2) and te.shape == (2000, 2)
    assert ytr is not None and yte is not None
    assert not torch.equal(tr[:2000], te)
    again, _ = load_dataset("mog-grid25", split="test")
    assert torch.equal(te, again)
    x, y = load_dataset("digits", split="test", limit=10)
    assert x.shape == (10, 64) and y is not None and y.shape == (10,)


def test_registry_paths(tmp_path: Path) -> None:
    train = np.random.default_rng(0).random((30, 4))
    np.save(tmp_path / "train.npy", train)
    np.savetxt(tmp_path / "test.csv", train[:5], delimiter=",")
    x, y = load_dataset(tmp_path / "train.npy", binarize="threshold")
    assert y is None and set(torch.unique(x).tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(x.numpy(), (train > 0.5).astype(np.float32))
    grey, _ = load_dataset(str(tmp_path / "train.npy"), binarize="none", limit=7)
    np.testing.assert_allclose(grey.numpy(), train[:7], rtol=1e-6)
    with pytest.raises(DataError, match="test_path"):
        load_dataset(tmp_path / "train.npy", split="test")
    xt, _ = load_dataset(tmp_path / "train.npy", split="test", test_path=tmp_path / "test.csv")
    assert xt.shape == (5, 4)
    s1, _ = load_dataset(tmp_path / "train.npy", binarize="stochastic", seed=5)
    s2, _ = load_dataset(tmp_path / "train.npy", binarize="stochastic", seed=5)
    assert torch.equal(s1, s2)
    np.save(tmp_path / "wide.npy", train * 3)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_dataset(tmp_path / "wide.npy", binarize="stochastic")
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "nope.npy")


def test_registry_mnist(mnist_dir: Path) -> None:
    x, y = load_dataset("mnist", split="test", data_dir=mnist_dir, limit=50)
    assert x.shape == (50, 784) and y is not None and y.shape == (50,)


# --- NaN/inf are refused on every path of load_dataset, never binarised away ---------------
def _write_bad(tmp_path: Path, suffix: str, value: float = float("nan")) -> Path:
    """A 5 x 4 file of values in [0, 1] with ``value`` at (row 3, column 2), 0-based (2, 1)."""
    x = np.random.default_rng(0).random((5, 4))
    x[2, 1] = value
    path = tmp_path / f"bad{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    elif suffix == ".npz":
        np.savez(path, x=x)
    else:
        np.savetxt(path, x, delimiter=",", header="a,b,c,d", comments="")
    return path


@pytest.mark.parametrize("binarize_mode", ["threshold", "stochastic", "none"])
@pytest.mark.parametrize("suffix", [".csv", ".npy", ".npz"])
def test_nan_in_a_file_is_refused_in_every_binarize_mode(
    tmp_path: Path, suffix: str, binarize_mode: str
) -> None:
    path = _write_bad(tmp_path, suffix)
    with pytest.raises(DataError, match=r"1 NaN/inf value.*row 3, column 2 \(1-based\)") as info:
        load_dataset(path, binarize=binarize_mode)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_inf_in_the_test_file_and_a_memory_map_is_refused(tmp_path: Path, value: float) -> None:
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((3, 4), dtype=np.float32))
    bad = _write_bad(tmp_path, ".npy", value)
    with pytest.raises(DataError, match=r"row 3, column 2 .*value -?inf"):
        load_dataset(good, split="test", test_path=bad)
    np.save(bad, np.load(bad).astype(np.float32))  # float32: streamed, not copied
    with pytest.raises(DataError, match=r"row 3, column 2"):
        load_dataset(bad, binarize="none", mmap=True)
    # rows past ``limit`` are not used, so they are not looked at
    assert load_dataset(bad, binarize="none", limit=2)[0].shape == (2, 4)


def test_check_finite_counts_across_row_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import boltzkit.data.arrays as arrays

    monkeypatch.setattr(arrays, "_CHUNK_ROWS", 2)  # the first bad value is in a later chunk
    x = np.zeros((7, 3), dtype=np.float32)
    x[4, 2] = np.nan
    x[6, 0] = np.inf
    for data in (x, torch.from_numpy(x)):
        with pytest.raises(DataError, match=r"x: 2 NaN/inf.*row 5, column 3 \(1-based\)"):
            arrays.check_finite(data, "x")
    arrays.check_finite(np.full((3, 2), 7, dtype=np.int64), "x")  # integers are always finite


def test_binarize_helper_refuses_nan() -> None:
    with pytest.raises(DataError, match=r"row 1, column 2"):
        binarize(torch.tensor([[0.2, float("nan"), 0.9]]))


@pytest.mark.parametrize("binarize_mode", ["threshold", "stochastic", "none"])
def test_nan_in_a_built_in_data_set_is_refused(
    monkeypatch: pytest.MonkeyPatch, binarize_mode: str
) -> None:
    """The built-in sets go through the same checks (their sources are made NaN here)."""
    import boltzkit.data.mnist as mnist
    import boltzkit.data.registry as registry

    data = np.full((1797, 64), 8.0)
    data[:, 5] = np.nan  # every row: whichever rows the split takes, row 1 is bad
    labels = np.zeros(1797, dtype=np.int64)
    monkeypatch.setattr(mnist, "_digits_arrays", lambda: (data, labels))
    with pytest.raises(DataError, match=r"digits: 3\d\d NaN/inf.*row 1, column 6"):
        load_dataset("digits", split="test", binarize=binarize_mode)

    def nan_mixture(name, n, seed):
        return torch.full((n, 2), float("nan")), torch.zeros(n, dtype=torch.int64)

    monkeypatch.setattr(registry, "make_mixture", nan_mixture)
    with pytest.raises(DataError, match=r"mog-ring8: .*row 1, column 1"):
        load_dataset("mog-ring8")  # real-valued: only binarize "none" applies
