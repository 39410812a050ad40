"""The download path, exercised offline: file:// mirrors built from the shared data."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from boltzkit.cli import main
from boltzkit.data import download_mnist, download_movielens, load_mnist
from boltzkit.data.download import md5_file, parse_md5
from boltzkit.data.mnist import MNIST_MD5
from boltzkit.data.movielens import load_movielens
from boltzkit.errors import DataError

DATA = Path(os.environ.get("BOLTZKIT_DATA", Path(__file__).parents[2] / "shared" / "data"))
ML100K = DATA / "ml-100k"
MNIST = DATA / "mnist"


def _zip_ml100k(path: Path, extra: dict[str, bytes] | None = None, drop: str = "") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(ML100K.iterdir()):
            if f.name != drop:
                zf.write(f, f"ml-100k/{f.name}")
        for name, content in (extra or {}).items():
            zf.writestr(name, content)
    return path


@pytest.fixture(scope="module")
def ml_zip(tmp_path_factory) -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip("ml-100k not in the data directory")
    return _zip_ml100k(tmp_path_factory.mktemp("mirror") / "ml-100k.zip")


def test_movielens_download_unpacks_verifies_and_loads(ml_zip, tmp_path):
    folder = download_movielens("ml-100k", tmp_path, url=ml_zip.as_uri(), md5=md5_file(ml_zip))
    assert folder == tmp_path / "ml-100k"
    data = load_movielens("ml-100k", folder, fold="u1")
    assert data.n_users == 943 and data.n_items == 1682
    assert len(data.train.ratings) + len(data.test.ratings) == 100_000
    assert not list(tmp_path.glob("*.zip")) and not list(tmp_path.glob(".*"))
    # Present and loading: kept, nothing fetched (the URL does not exist).
    again = download_movielens("ml-100k", tmp_path, url=(tmp_path / "nope.zip").as_uri())
    assert again == folder


def test_movielens_md5_mismatch_leaves_nothing(ml_zip, tmp_path):
    with pytest.raises(DataError, match="MD5 mismatch"):
        download_movielens("ml-100k", tmp_path, url=ml_zip.as_uri(), md5="0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_movielens_default_md5_is_the_published_one(ml_zip, tmp_path):
    # Our re-zipped copy is not GroupLens' archive, so the published digest refuses it.
    with pytest.raises(DataError, match="0e33842e24a9c977be4e0107933c0723"):
        download_movielens("ml-100k", tmp_path, url=ml_zip.as_uri())


def test_movielens_refuses_zip_slip(tmp_path):
    if not (ML100K / "u.data").is_file():
        pytest.skip("ml-100k not in the data directory")
    evil = _zip_ml100k(tmp_path / "evil.zip", extra={"ml-100k/../../escape.txt": b"x"})
    out = tmp_path / "out"
    with pytest.raises(DataError, match="outside"):
        download_movielens("ml-100k", out, url=evil.as_uri(), md5=md5_file(evil))
    assert not (tmp_path / "escape.txt").exists() and not (out / "ml-100k").exists()


def test_movielens_refuses_archive_that_does_not_load(tmp_path):
    if not (ML100K / "u.data").is_file():
        pytest.skip("ml-100k not in the data directory")
    broken = _zip_ml100k(tmp_path / "broken.zip", drop="u1.test",
                         extra={"ml-100k/u1.test": b"1\t2\tfive\t881250949\n"})
    out = tmp_path / "out"
    with pytest.raises(DataError, match="do not load.*line 1"):
        download_movielens("ml-100k", out, url=broken.as_uri(), md5=md5_file(broken))
    assert not (out / "ml-100k").exists()


def test_movielens_not_a_zip(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="not a zip"):
        download_movielens("ml-1m", tmp_path / "out", url=junk.as_uri(), md5=md5_file(junk))


def test_movielens_reads_published_md5_file(ml_zip, tmp_path):
    # ml-latest-small has no fixed digest: it is read from URL + ".md5" (md5sum format).
    with pytest.raises(DataError, match="could not read"):
        download_movielens("ml-latest-small", tmp_path, url=(tmp_path / "x.zip").as_uri())
    assert parse_md5("MD5 (ml-latest-small.zip) = ABCDEF0123456789abcdef0123456789\n",
                     "f") == "abcdef0123456789abcdef0123456789"
    with pytest.raises(DataError, match="no MD5"):
        parse_md5("<html>", "f")


def _mnist_mirror(tmp_path: Path) -> Path:
    if not all((MNIST / n).is_file() for n in MNIST_MD5):
        pytest.skip("MNIST not in the data directory")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in MNIST_MD5:
        (mirror / name).symlink_to(MNIST / name)
    return mirror


def test_mnist_download_checks_md5_and_falls_back(tmp_path):
    mirror = _mnist_mirror(tmp_path)
    # The shared training images are the official set in another order, so their MD5 is
    # not the published one: the published digests refuse that file and say so.
    out = tmp_path / "official"
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*MD5 mismatch"):
        download_mnist(out, (mirror.as_uri(),))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        n for n in MNIST_MD5 if n != "train-images-idx3-ubyte.gz")
    # With this copy's own digests, a dead first mirror falls back to the second.
    sums = {n: md5_file(MNIST / n) for n in MNIST_MD5}
    out = tmp_path / "ok"
    download_mnist(out, ((tmp_path / "dead").as_uri(), mirror.as_uri()), checksums=sums)
    x, y = load_mnist(out, "test", limit=5)
    assert tuple(x.shape) == (5, 784) and len(y) == 5


def test_cli_download(ml_zip, tmp_path, capsys):
    assert main(["download", "ml-100k", "--data-dir", str(tmp_path), "--url", ml_zip.as_uri(),
                 "--md5", md5_file(ml_zip)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "ml-100k")
    assert main(["download", "ml-1m", "--data-dir", str(tmp_path / "x"),
                 "--url", ml_zip.as_uri(), "--md5", "1" * 32]) == 2
    assert "MD5 mismatch" in capsys.readouterr().err
