"""The catalogue of a recommender: raw user and item ids, item titles, id lookups.

Every recommender model (:class:`~boltzkit.recommend.cf_rbm.CFRBM`,
:class:`~boltzkit.recommend.rank_rbm.RankRBM`) works on 0-based indices but talks to
people in the ids of their files (MovieLens ids, or the ids of an interaction CSV).
:class:`Catalog` is the one place that maps between the two: the ids are stored as
``int64`` buffers ``user_ids`` (n_users,) and ``item_ids`` (n_items,), sorted and unique
(so a lookup is a binary search), and the titles as a plain list saved in the model's
JSON config.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError


def positions(known: np.ndarray | torch.Tensor, raw_ids, what: str) -> np.ndarray:
    """Rows of raw ids among the sorted ``known`` ids; DataError naming the first unknown.

    known: (n,) sorted unique ids; raw_ids: an id or an array of ids; what: "user" or
    "item" (for the message).  Returns an int64 array with one row per raw id.
    """
    ids = known.cpu().numpy() if isinstance(known, torch.Tensor) else np.asarray(known)
    raw = np.atleast_1d(np.asarray(raw_ids))
    if raw.dtype.kind not in "iu":
        raise DataError(f"{what} ids must be integers, got {raw[:1].tolist()}")
    raw = raw.astype(np.int64)
    if len(ids) == 0:
        raise DataError(f"unknown {what} {int(raw[0])}: the model knows no {what}s")
    pos = np.clip(np.searchsorted(ids, raw), 0, len(ids) - 1)
    bad = ids[pos] != raw
    if bad.any():
        raise DataError(f"unknown {what} {int(raw[bad][0])}: the model knows {what} ids "
                        f"{int(ids.min())}..{int(ids.max())} from its training data")
    return pos


class Catalog:
    """Mixin for a recommender ``nn.Module``: raw ids as buffers, titles, lookups.

    Call :meth:`_init_catalog` in ``__init__`` after ``nn.Module.__init__``.
    """

    user_ids: torch.Tensor
    item_ids: torch.Tensor
    titles: list[str]

    def _init_catalog(self, n_users: int, n_items: int, user_ids: Sequence[int] | None,
                      item_ids: Sequence[int] | None, titles: Sequence[str] | None) -> None:
        """Register ``user_ids`` / ``item_ids`` (default 1..n, as in MovieLens) and titles."""
        uids = np.arange(1, n_users + 1) if user_ids is None else np.asarray(user_ids)
        iids = np.arange(1, n_items + 1) if item_ids is None else np.asarray(item_ids)
        self.register_buffer("user_ids", torch.as_tensor(uids, dtype=torch.int64))
        self.register_buffer("item_ids", torch.as_tensor(iids, dtype=torch.int64))
        if self.user_ids.shape != (n_users,) or self.item_ids.shape != (n_items,):
            raise ConfigError("user_ids / item_ids must have n_users / n_items entries")
        for what, ids in (("user_ids", self.user_ids), ("item_ids", self.item_ids)):
            if len(ids) > 1 and not bool((ids[1:] > ids[:-1]).all()):
                raise ConfigError(f"{what} must be sorted and unique (ids are looked up by "
                                  "binary search)")
        self.titles = list(titles) if titles is not None else []
        if self.titles and len(self.titles) != n_items:
            raise ConfigError(f"{len(self.titles)} titles for {n_items} items: give one title "
                              "per item or none")

    def _user_index(self, user_ids) -> np.ndarray:
        """Indices of raw user ids (DataError for an unknown one)."""
        return positions(self.user_ids, user_ids, "user")

    def _item_index(self, item_ids) -> np.ndarray:
        """Indices of raw item ids (DataError for an unknown one)."""
        return positions(self.item_ids, item_ids, "item")

    def title(self, item_index: int) -> str:
        """The title of an item index (its raw id as text when the model has no titles)."""
        return self.titles[item_index] if self.titles else str(int(self.item_ids[item_index]))
