"""Implicit feedback: which user interacted with which item (clicks, plays, purchases, ratings).

An interaction file is CSV with one ``user,item`` or ``user,item,weight`` row per event:
integer ids, an optional finite numeric weight (a count, a rating; 1 when absent).  The
first line is taken as a header when its first field is not an integer.  Blank lines are
skipped; every other malformed line is a :class:`~boltzkit.errors.DataError` naming the
file and its 1-based line number.

:class:`Interactions` keeps every row as read (indices into sorted unique ``user_ids`` /
``item_ids``, and the weights).  :meth:`Interactions.pairs` reduces them to the
user x item 0/1 matrix a Bernoulli model sees, and says exactly how: the weights of
repeated (user, item) rows are summed, and a pair counts as an interaction when that
sum is positive and at least ``min_weight`` (e.g. ``min_weight=4`` keeps 4- and 5-star
ratings).  Users and items whose rows all fall below the threshold stay in the catalogue
(a recommender then knows them, with no interactions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError


@dataclass
class Interactions:
    """Interaction rows over a shared index space.

    users, items: (n_rows,) int64 indices into ``user_ids`` / ``item_ids`` (sorted raw
    ids); weights: (n_rows,) float64; titles: one per item, or empty.
    """

    users: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    titles: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @classmethod
    def from_movielens(cls, data) -> Interactions:
        """The training ratings of a :class:`~boltzkit.data.movielens.MovieLens` split as
        interactions (weight = the rating), in the split's own index space (so test
        ratings line up)."""
        tr = data.train
        return cls(tr.users.astype(np.int64), tr.items.astype(np.int64),
                   tr.ratings.astype(np.float64), np.asarray(data.user_ids),
                   np.asarray(data.item_ids), list(data.titles), f"{data.name} {data.split}")

    def pairs(self, min_weight: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """The distinct (user index, item index) pairs that count as interactions.

        Repeated rows of one pair have their weights summed; a pair counts when the sum
        is > 0 and >= ``min_weight``.  Returns two int64 arrays sorted by user, then item.
        """
        if not math.isfinite(min_weight):
            raise ConfigError(f"min_weight must be a finite number, got {min_weight!r}")
        key = self.users * self.n_items + self.items
        uniq, inv = np.unique(key, return_inverse=True)
        total = np.bincount(inv, weights=self.weights, minlength=len(uniq))
        keep = (total > 0) & (total >= min_weight)
        if not keep.any():
            raise DataError(f"{self.source or 'the data'}: no (user, item) pair has a positive "
                            f"weight >= {min_weight:g}: lower min_weight")
        return uniq[keep] // self.n_items, uniq[keep] % self.n_items


def interactions_from_arrays(user_ids, item_ids, weights=None, titles: dict | None = None,
                             source: str = "") -> Interactions:
    """:class:`Interactions` from raw id arrays (n_rows,), optional weights and titles
    (``{raw item id: title}``)."""
    u = np.asarray(user_ids, np.int64)
    i = np.asarray(item_ids, np.int64)
    w = np.ones(len(u)) if weights is None else np.asarray(weights, np.float64)
    if not (u.shape == i.shape == w.shape) or u.ndim != 1:
        raise DataError(f"users, items and weights must be 1-d arrays of one length, got "
                        f"{u.shape}, {i.shape}, {w.shape}")
    if len(u) == 0:
        raise DataError(f"{source or 'the data'} holds no interactions")
    if not np.isfinite(w).all():
        raise DataError(f"{source or 'the data'}: weights must be finite numbers")
    uids, uidx = np.unique(u, return_inverse=True)
    iids, iidx = np.unique(i, return_inverse=True)
    names = [titles.get(int(x), str(int(x))) for x in iids] if titles else []
    return Interactions(uidx.astype(np.int64), iidx.astype(np.int64), w, uids, iids, names,
                        source)


def load_interactions_csv(path: str | Path) -> Interactions:
    """Read a ``user,item[,weight]`` CSV file (module docs) into :class:`Interactions`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"interaction file {path} does not exist: check the path")
    text = path.read_bytes().decode("utf-8", errors="replace")
    users: list[int] = []
    items: list[int] = []
    weights: list[float] = []
    n_fields = None
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if no == 1 and not _is_int(parts[0]):
            continue  # a header such as user,item,weight
        if len(parts) not in (2, 3):
            raise DataError(f"{path}, line {no}: expected user,item or user,item,weight "
                            f"(2 or 3 comma-separated fields), found {len(parts)}: "
                            f"{line[:80]!r}")
        if n_fields is None:
            n_fields = len(parts)
        elif len(parts) != n_fields:
            raise DataError(f"{path}, line {no}: {len(parts)} fields, but earlier rows have "
                            f"{n_fields}: give every row a weight or none")
        if not (_is_int(parts[0]) and _is_int(parts[1])):
            raise DataError(f"{path}, line {no}: user and item must be integer ids, got "
                            f"{line[:80]!r}")
        weight = 1.0
        if len(parts) == 3:
            try:
                weight = float(parts[2])
            except ValueError:
                weight = math.nan
            if not math.isfinite(weight):
                raise DataError(f"{path}, line {no}: weight {parts[2]!r} is not a finite "
                                "number")
        users.append(int(parts[0]))
        items.append(int(parts[1]))
        weights.append(weight)
    if not users:
        raise DataError(f"{path} holds no interactions: the file is empty or only a header")
    return interactions_from_arrays(users, items, weights, source=str(path))


def _is_int(text: str) -> bool:
    return text.lstrip("+-").isdigit()
