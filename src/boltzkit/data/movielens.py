"""MovieLens loaders: ml-100k, ml-1m and ml-latest-small from the GroupLens files.

Each loader reads the standard files from a directory the user names (``data_dir``,
else ``$BOLTZKIT_DATA``; either may be the data set's own folder or a parent holding
``ml-100k/``, ``ml-1m/`` or ``ml-latest-small/``) and returns a :class:`MovieLens`:
a train and a test :class:`Ratings` that share one user and one item index space,
so a train matrix and a test matrix line up cell for cell.

* ml-100k: ``u.data`` (all ratings) and the official splits ``u1``..``u5`` (five
  80/20 folds), ``ua`` and ``ub`` (10 ratings per user held out); titles and genres
  from ``u.item`` (latin-1), demographics from ``u.user``.
* ml-1m: ``ratings.dat``, ``movies.dat``, ``users.dat`` (``::`` separated, latin-1).
* ml-latest-small: ``ratings.csv`` and ``movies.csv`` (ratings 0.5 .. 5 in half stars).

ml-1m and ml-latest-small ship no official splits: ``fold=1..5`` gives a seeded
5-fold split of the ratings (``seed`` fixes it).  On every data set ``fold="stratified"``
holds out a quarter of each user's ratings (seeded): the protocol of top-N quick-starts.
Malformed lines raise :class:`~boltzkit.errors.DataError` naming the file and line
number; ratings outside the data set's scale and empty folds are errors too.  Matrices
are built with ``scipy.sparse`` from index arrays (no Python loop over users).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from boltzkit.data.download import fetch, parse_md5, read_url_text
from boltzkit.data.paths import ENV_VAR, resolve_data_dir
from boltzkit.errors import ConfigError, DataError

#: Names accepted by :func:`load_movielens`.
MOVIELENS_DATASETS = ("ml-100k", "ml-1m", "ml-latest-small")
#: The official ml-100k splits.
ML100K_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
#: ``fold="stratified"`` (or ``"stratified-SEED"``): this share of each user's ratings is
#: held out at random (:meth:`Ratings.split_per_user`), on any data set.
STRATIFIED_TEST_FRACTION = 0.25

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)

_SCALES = {
    "ml-100k": (1.0, 2.0, 3.0, 4.0, 5.0),
    "ml-1m": (1.0, 2.0, 3.0, 4.0, 5.0),
    "ml-latest-small": tuple(float(x) / 2 for x in range(1, 11)),
}
_MARKERS = {"ml-100k": "u.data", "ml-1m": "ratings.dat", "ml-latest-small": "ratings.csv"}

#: Where GroupLens publishes each archive (``NAME.zip`` holding ``NAME/``).
MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
#: Published MD5 of the fixed releases (GroupLens' ``.zip.md5`` files).  ml-latest-small
#: is re-released from time to time, so its digest is read from GroupLens' ``.md5`` file.
MOVIELENS_MD5: dict[str, str] = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
}


@dataclass
class Ratings:
    """Ratings as parallel arrays over a shared index space.

    ``users`` and ``items`` are 0-based indices into :attr:`MovieLens.user_ids` /
    :attr:`MovieLens.item_ids`; ``ratings`` are the raw values (float32).
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    n_users: int
    n_items: int

    def __len__(self) -> int:
        return int(self.ratings.shape[0])

    def matrix(self) -> sp.csr_matrix:
        """Sparse users x items matrix of ratings (0 = unrated)."""
        return sp.csr_matrix((self.ratings.astype(np.float32), (self.users, self.items)),
                             shape=(self.n_users, self.n_items))

    def mean(self) -> float:
        return float(self.ratings.mean())

    def subset(self, index: np.ndarray) -> Ratings:
        """The ratings at positions ``index`` (same index space)."""
        return Ratings(self.users[index], self.items[index], self.ratings[index],
                       self.timestamps[index], self.n_users, self.n_items)

    def holdout(self, fraction: float = 0.1, seed: int = 0) -> tuple[Ratings, Ratings]:
        """Seeded random (rest, held-out) split, e.g. a validation set carved from a fold's
        training ratings so that settings are tuned without touching its test ratings."""
        if not 0 < fraction < 1:
            raise ConfigError(f"holdout fraction must be in (0, 1), got {fraction}")
        perm = np.random.default_rng(seed).permutation(len(self))
        n = int(round(fraction * len(self)))
        if n == 0 or n == len(self):
            raise DataError(f"cannot hold out {fraction:g} of {len(self)} ratings: too few")
        return self.subset(np.sort(perm[n:])), self.subset(np.sort(perm[:n]))

    def split_per_user(self, fraction: float = STRATIFIED_TEST_FRACTION,
                       seed: int = 0) -> tuple[Ratings, Ratings]:
        """Per-user stratified (rest, held-out) split: of a user with ``n`` ratings,
        ``floor(fraction * n + 0.5)`` drawn at random (seeded) are held out, the rest kept.

        Every user keeps most of their ratings and is scored on the others: the split of
        Microsoft recommenders' quick-starts (their ``python_stratified_split``, 75/25).
        """
        if not 0 < fraction < 1:
            raise ConfigError(f"split fraction must be in (0, 1), got {fraction}")
        if len(self) == 0:
            raise DataError("cannot split an empty set of ratings")
        keys = np.random.default_rng(seed).random(len(self))
        order = np.lexsort((keys, self.users))          # by user, random within a user
        counts = np.bincount(self.users, minlength=self.n_users)
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(self)) - start[self.users[order]]  # 0.. within each user
        held = np.zeros(len(self), bool)
        held[order] = rank < np.floor(fraction * counts[self.users[order]] + 0.5)
        if not held.any():
            raise DataError(f"holding out {fraction:g} of each user's ratings leaves nothing "
                            "to test on: the users have too few ratings")
        return self.subset(np.flatnonzero(~held)), self.subset(np.flatnonzero(held))


@dataclass
class MovieLens:
    """A train/test split of a MovieLens data set plus its side information."""

    name: str
    split: str
    train: Ratings
    test: Ratings
    user_ids: np.ndarray
    item_ids: np.ndarray
    titles: list[str]
    scale: tuple[float, ...]
    genres: np.ndarray | None = None
    genre_names: tuple[str, ...] = ()
    users: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def title(self, item_index: int) -> str:
        return self.titles[item_index] if self.titles else str(self.item_ids[item_index])


# ----------------------------------------------------------------------------- files
def resolve_movielens_dir(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding data set ``name``'s files (``data_dir`` or ``$BOLTZKIT_DATA``)."""
    if name not in MOVIELENS_DATASETS:
        raise ConfigError(f"unknown MovieLens data set {name!r}: choose one of "
                          f"{list(MOVIELENS_DATASETS)}")
    hint = (f"pass data_dir (--data-dir DIR) or set {ENV_VAR} to the folder holding "
            f"{_MARKERS[name]} (or to its parent containing {name}/); download it from "
            "https://grouplens.org/datasets/movielens/")
    folder = resolve_data_dir(name, data_dir, name,
                              lambda d: (d / _MARKERS[name]).is_file(), hint)
    if not (folder / _MARKERS[name]).is_file():
        raise DataError(f"{_MARKERS[name]} not found in {folder} or {folder / name}; {hint}")
    return folder


def _read_lines(path: Path, encoding: str = "latin-1") -> list[str]:
    if not path.is_file():
        raise DataError(f"MovieLens file {path} does not exist: check the data directory")
    return path.read_bytes().decode(encoding).splitlines()


def _parse_ratings(path: Path, sep: str, scale: tuple[float, ...], header: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse ``user sep item sep rating sep timestamp`` lines into raw-id arrays."""
    lines = _read_lines(path)
    start = 1 if header else 0
    users, items, ratings, stamps, numbers = [], [], [], [], []
    for no, line in enumerate(lines[start:], start=start + 1):
        parts = line.split(sep)
        if len(parts) != 4:
            if not line.strip():
                continue
            raise DataError(f"{path}, line {no}: expected 4 fields (user, item, rating, "
                            f"timestamp) separated by {sep!r}, found {len(parts)}: {line[:80]!r}")
        try:
            users.append(int(parts[0]))
            items.append(int(parts[1]))
            ratings.append(float(parts[2]))
            stamps.append(int(parts[3]))
        except ValueError:
            raise DataError(f"{path}, line {no}: cannot parse {line[:80]!r} as integer user, "
                            "integer item, numeric rating, integer timestamp") from None
        numbers.append(no)
    if not users:
        raise DataError(f"{path} holds no ratings: the file is empty or truncated")
    r = np.asarray(ratings, np.float64)
    allowed = np.asarray(scale, dtype=np.float64)
    ok = np.isclose(r[:, None], allowed[None, :]).any(1)
    if not ok.all():
        k = int(np.flatnonzero(~ok)[0])
        raise DataError(f"{path}, line {numbers[k]}: rating {r[k]:g} is outside this data "
                        f"set's scale {list(scale)}: fix or drop the line")
    return (np.asarray(users, np.int64), np.asarray(items, np.int64),
            r.astype(np.float32), np.asarray(stamps, np.int64))


def _index(raw: np.ndarray, ids: np.ndarray, what: str, path: Path) -> np.ndarray:
    pos = np.searchsorted(ids, raw)
    pos = np.clip(pos, 0, len(ids) - 1)
    bad = ids[pos] != raw
    if bad.any():
        raise DataError(f"{path}: {what} id {int(raw[bad][0])} does not appear in the data "
                        "set's full ratings file: the split does not belong to this data set")
    return pos


def _make(raw, user_ids, item_ids, path: Path, split: str) -> Ratings:
    u, i, r, t = raw
    if len(r) == 0:
        raise DataError(f"{path}: fold {split!r} is empty: pick another fold or check the file")
    return Ratings(_index(u, user_ids, "user", path), _index(i, item_ids, "item", path), r, t,
                   len(user_ids), len(item_ids))


def _kfold(raw, fold: int, seed: int, n_folds: int = 5):
    if not 1 <= fold <= n_folds:
        raise ConfigError(f"fold must be 1..{n_folds}, got {fold}")
    n = len(raw[0])
    perm = np.random.default_rng(seed).permutation(n)
    test_idx = np.sort(perm[(fold - 1) * n // n_folds: fold * n // n_folds])
    is_test = np.zeros(n, bool)
    is_test[test_idx] = True
    return tuple(a[~is_test] for a in raw), tuple(a[is_test] for a in raw)


# ----------------------------------------------------------------------------- loaders
def load_ml100k(data_dir=None, split: str | int = "u1") -> MovieLens:
    """ml-100k with an official split: ``"u1"``..``"u5"`` (or 1..5), ``"ua"``, ``"ub"`` (a, b)."""
    if isinstance(split, int) or (isinstance(split, str) and split.isdigit()):
        split = f"u{int(split)}"
    elif isinstance(split, str) and split.lower() in ("a", "b"):
        split = f"u{split.lower()}"
    if split not in ML100K_SPLITS:
        raise ConfigError(f"unknown ml-100k split {split!r}: choose one of {list(ML100K_SPLITS)} "
                          "(or fold 1..5, a, b)")
    folder = resolve_movielens_dir("ml-100k", data_dir)
    scale = _SCALES["ml-100k"]
    full = _parse_ratings(folder / "u.data", "\t", scale)
    user_ids, item_ids = np.unique(full[0]), np.unique(full[1])
    titles, genres = _read_ml100k_items(folder / "u.item", item_ids)
    base, test = folder / f"{split}.base", folder / f"{split}.test"
    train = _make(_parse_ratings(base, "\t", scale), user_ids, item_ids, base, split)
    test_r = _make(_parse_ratings(test, "\t", scale), user_ids, item_ids, test, split)
    users = _read_ml100k_users(folder / "u.user")
    return MovieLens("ml-100k", split, train, test_r, user_ids, item_ids, titles, scale,
                     genres, ML100K_GENRES, users)


def load_ml100k_all(data_dir=None) -> Ratings:
    """All of ``u.data`` as one :class:`Ratings` (indices: sorted raw ids)."""
    folder = resolve_movielens_dir("ml-100k", data_dir)
    raw = _parse_ratings(folder / "u.data", "\t", _SCALES["ml-100k"])
    return _make(raw, np.unique(raw[0]), np.unique(raw[1]), folder / "u.data", "all")


def _read_ml100k_items(path: Path, item_ids: np.ndarray):
    titles = {}
    genre_rows = {}
    if not path.is_file():
        return [], None
    for no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 5 + len(ML100K_GENRES):
            raise DataError(f"{path}, line {no}: expected {5 + len(ML100K_GENRES)} '|'-separated "
                            f"fields, found {len(parts)}")
        try:
            iid = int(parts[0])
            flags = [int(x) for x in parts[5:5 + len(ML100K_GENRES)]]
        except ValueError:
            raise DataError(f"{path}, line {no}: cannot parse the item id or genre flags") from None
        titles[iid] = parts[1]
        genre_rows[iid] = flags
    names = [titles.get(int(i), str(int(i))) for i in item_ids]
    genres = np.asarray([genre_rows.get(int(i), [0] * len(ML100K_GENRES)) for i in item_ids],
                        dtype=np.int8)
    return names, genres


def _read_ml100k_users(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    rows = []
    for no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 5:
            raise DataError(f"{path}, line {no}: expected 5 '|'-separated fields, "
                            f"found {len(parts)}")
        try:
            rows.append((int(parts[0]), int(parts[1]), parts[2], parts[3], parts[4]))
        except ValueError:
            raise DataError(f"{path}, line {no}: cannot parse user id or age") from None
    cols = list(zip(*rows, strict=True))
    return {"id": np.asarray(cols[0]), "age": np.asarray(cols[1]), "gender": np.asarray(cols[2]),
            "occupation": np.asarray(cols[3]), "zip": np.asarray(cols[4])}


def load_ml1m(data_dir=None, fold: int = 1, seed: int = 0) -> MovieLens:
    """ml-1m (``::``-separated .dat files) with a seeded 5-fold split, ``fold`` 1..5."""
    folder = resolve_movielens_dir("ml-1m", data_dir)
    scale = _SCALES["ml-1m"]
    path = folder / "ratings.dat"
    full = _parse_ratings(path, "::", scale)
    user_ids, item_ids = np.unique(full[0]), np.unique(full[1])
    tr, te = _kfold(full, fold, seed)
    titles: dict[int, str] = {}
    movies = folder / "movies.dat"
    if movies.is_file():
        for no, line in enumerate(_read_lines(movies), start=1):
            if not line.strip():
                continue
            parts = line.split("::")
            if len(parts) != 3 or not parts[0].strip().isdigit():
                raise DataError(f"{movies}, line {no}: expected 'id::title::genres', "
                                f"found {line[:80]!r}")
            titles[int(parts[0])] = parts[1]
    names = [titles.get(int(i), str(int(i))) for i in item_ids]
    return MovieLens("ml-1m", f"fold{fold}", _make(tr, user_ids, item_ids, path, f"fold{fold}"),
                     _make(te, user_ids, item_ids, path, f"fold{fold}"), user_ids, item_ids,
                     names, scale)


def load_ml_latest_small(data_dir=None, fold: int = 1, seed: int = 0) -> MovieLens:
    """ml-latest-small (``ratings.csv``/``movies.csv``) with a seeded 5-fold split."""
    folder = resolve_movielens_dir("ml-latest-small", data_dir)
    scale = _SCALES["ml-latest-small"]
    path = folder / "ratings.csv"
    full = _parse_ratings(path, ",", scale, header=True)
    user_ids, item_ids = np.unique(full[0]), np.unique(full[1])
    tr, te = _kfold(full, fold, seed)
    titles: dict[int, str] = {}
    movies = folder / "movies.csv"
    if movies.is_file():
        text = movies.read_bytes().decode("utf-8", errors="replace")
        reader = csv.reader(io.StringIO(text))
        next(reader, None)
        for row in reader:
            if len(row) < 2 or not row[0].isdigit():
                raise DataError(f"{movies}, line {reader.line_num}: expected 'movieId,title,"
                                f"genres', found {row!r}")
            titles[int(row[0])] = row[1]
    names = [titles.get(int(i), str(int(i))) for i in item_ids]
    return MovieLens("ml-latest-small", f"fold{fold}",
                     _make(tr, user_ids, item_ids, path, f"fold{fold}"),
                     _make(te, user_ids, item_ids, path, f"fold{fold}"), user_ids, item_ids,
                     names, scale)


def load_movielens(name: str = "ml-100k", data_dir=None, fold: int | str = 1,
                   seed: int = 0) -> MovieLens:
    """Load data set ``name`` and one split (ml-100k: ``u1``..``u5``/``ua``/``ub`` or 1..5).

    ``fold="stratified"`` holds out 25 % of every user's ratings at random, seeded by
    ``seed`` (:meth:`Ratings.split_per_user`); the result's ``split`` is
    ``"stratified-SEED"``, and that name as ``fold`` gives the same split again.
    """
    if isinstance(fold, str) and fold.startswith("stratified"):
        return _stratified(name, data_dir, fold, seed)
    if name == "ml-100k":
        return load_ml100k(data_dir, fold)
    if isinstance(fold, str):
        if not fold.removeprefix("fold").isdigit():
            raise ConfigError(f"{name} has no official splits: pass fold 1..5, got {fold!r}")
        fold = int(fold.removeprefix("fold"))
    if name == "ml-1m":
        return load_ml1m(data_dir, fold, seed)
    if name == "ml-latest-small":
        return load_ml_latest_small(data_dir, fold, seed)
    raise ConfigError(f"unknown MovieLens data set {name!r}: choose one of "
                      f"{list(MOVIELENS_DATASETS)}")


def _stratified(name: str, data_dir, fold: str, seed: int) -> MovieLens:
    """All ratings of data set ``name`` split per user (``fold``: stratified[-SEED])."""
    tail = fold.removeprefix("stratified")
    if tail:
        if not (tail.startswith("-") and tail[1:].isdigit()):
            raise ConfigError(f"fold {fold!r}: write stratified or stratified-SEED, e.g. "
                              "stratified-42")
        seed = int(tail[1:])
    data = load_movielens(name, data_dir, 1, seed=0)  # ids, titles and all ratings
    tr, te = data.train, data.test
    full = Ratings(*(np.concatenate([getattr(tr, k), getattr(te, k)])
                     for k in ("users", "items", "ratings", "timestamps")),
                   tr.n_users, tr.n_items)
    train, test = full.split_per_user(STRATIFIED_TEST_FRACTION, seed)
    return dataclasses.replace(data, split=f"stratified-{seed}", train=train, test=test)


# ----------------------------------------------------------------------------- download
def download_movielens(name: str, data_dir: str | os.PathLike[str], url: str | None = None,
                       md5: str | None = None, timeout: float = 60.0,
                       keep_archive: bool = False) -> Path:
    """Download and unpack MovieLens data set ``name`` into ``data_dir/name`` (needs internet).

    The archive (``url``, default GroupLens' :data:`MOVIELENS_URL`) must match ``md5``
    (default: the published digest, :data:`MOVIELENS_MD5`, or for ml-latest-small the
    one in GroupLens' ``URL.md5`` file); its members must all lie inside ``name/``; the
    unpacked files must load with :func:`load_movielens` (every line parsed) before
    they are moved into place.  A folder that already loads is kept and nothing is
    fetched.  Returns the data set's folder.
    """
    if name not in MOVIELENS_DATASETS:
        raise ConfigError(f"unknown MovieLens data set {name!r}: choose one of "
                          f"{list(MOVIELENS_DATASETS)}")
    base = Path(data_dir).expanduser()
    folder = base / name
    if (folder / _MARKERS[name]).is_file():
        try:
            load_movielens(name, folder)
            return folder
        except DataError as exc:
            raise DataError(f"{folder} exists but does not load ({exc}); move it away and "
                            "download again") from exc
    url = url or MOVIELENS_URL.format(name=name)
    if md5 is None:
        md5 = MOVIELENS_MD5.get(name) or parse_md5(read_url_text(url + ".md5", timeout),
                                                   url + ".md5")
    base.mkdir(parents=True, exist_ok=True)
    archive = fetch([url], base / f"{name}.zip", md5, _check_zip, timeout=timeout)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=base))
    try:
        _extract(archive, name, staging)
        try:
            load_movielens(name, staging / name)
        except DataError as exc:
            raise DataError(f"{url}: the unpacked files do not load: {exc}") from exc
        folder.parent.mkdir(parents=True, exist_ok=True)
        (staging / name).rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not keep_archive:
            archive.unlink(missing_ok=True)
    return folder


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except zipfile.BadZipFile as exc:
        raise DataError(f"not a zip archive ({exc})") from exc
    if bad is not None:
        raise DataError(f"corrupted member {bad!r} in the archive")


def _extract(archive: Path, name: str, dest: Path) -> None:
    """Unpack the members under ``name/`` into ``dest``; refuse any that escape it (zip slip)."""
    with zipfile.ZipFile(archive) as zf:
        members = []
        for member in zf.namelist():
            path = Path(member)
            if path.is_absolute() or ".." in path.parts or "\\" in member:
                raise DataError(f"{archive}: member {member!r} points outside the archive's "
                                "folder; refusing to unpack it")
            if path.parts and path.parts[0] == name:
                members.append(member)
        if not members:
            raise DataError(f"{archive}: no {name}/ folder in the archive")
        zf.extractall(dest, members=members)
