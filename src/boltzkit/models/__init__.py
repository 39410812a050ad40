"""Model kinds beyond the plain RBM, and where each one lives.

Each kind maps to the module that implements it. A kind's module exposes:

- ``MODEL_CLASSES``: ``{kind: class}``; each class has ``config()`` (a JSON-able dict whose
  ``"model"`` key is the kind) and ``from_config(cfg)``, so :func:`boltzkit.io.load_model`
  can rebuild it from a file without pickle.
- optionally ``TRAIN_OPTIONS``: ``{option: (default, help)}``, extra ``boltzkit train`` options
  (flags ``--option-name`` and TOML keys) that only this kind reads;
- optionally ``train_from_config(cfg, load, quiet) -> (model, history)``, which trains the kind
  from a resolved config.  ``load(split)`` returns ``(data, labels)`` for ``"train"`` or
  ``"test"`` (raising :class:`boltzkit.DataError` when the split does not exist).  The CLI
  saves the returned model, its config and history.
- optionally ``DATA_PARALLEL = True``: the kind trains through :class:`boltzkit.Trainer`, so
  ``boltzkit train`` launched by torchrun trains it data-parallel; other kinds refuse torchrun.

The plain ``rbm`` kind is built into :mod:`boltzkit.cli` and :mod:`boltzkit.rbm`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

# kind -> module implementing it (one line per kind; keep sorted by module).
KINDS: dict[str, str] = {
    "crbm": "boltzkit.models.conditional",
    "conv-rbm": "boltzkit.models.conv",
    "drbm": "boltzkit.models.discriminative",
    "dropout-rbm": "boltzkit.models.dropout", "edropout-rbm": "boltzkit.models.dropout",
    "ising": "boltzkit.models.lateral",
    "potts": "boltzkit.models.lateral",
    "srbm": "boltzkit.models.lateral",
    "cf-rbm": "boltzkit.recommend.cf_rbm",
    "rank-rbm": "boltzkit.recommend.rank_rbm",
    "dbm": "boltzkit.stacks.dbm",
    "dbn": "boltzkit.stacks.dbn", "dbn-classifier": "boltzkit.stacks.dbn",
}


def load_splits(load: Callable[[str], tuple[Any, Any]]) -> tuple[Any, Any, Any, Any]:
    """``(train, train_labels, test, test_labels)`` from a ``train_from_config`` loader.

    The training split must exist and be non-empty (DataError otherwise); a missing
    test split gives ``None, None``.
    """
    from ..errors import DataError

    train, train_labels = load("train")
    if len(train) == 0:
        raise DataError("training data is empty: pass at least one sample")
    try:
        test, test_labels = load("test")
    except DataError:
        test, test_labels = None, None
    return train, train_labels, test, test_labels


def kind_module(kind: str) -> ModuleType:
    """The module implementing ``kind`` (KeyError for unknown kinds)."""
    return importlib.import_module(KINDS[kind])


def model_class(kind: str) -> type:
    """The class that rebuilds models of ``kind`` from their saved config."""
    return kind_module(kind).MODEL_CLASSES[kind]


def trainable_kinds() -> list[str]:
    """Kinds that ``boltzkit train --model`` can train (besides ``rbm``)."""
    return sorted(k for k in KINDS if hasattr(kind_module(k), "train_from_config"))


def train_options() -> dict[str, tuple[object, str]]:
    """Extra train options declared by every kind's module, merged."""
    merged: dict[str, tuple[object, str]] = {}
    for kind in sorted(KINDS):
        for name, spec in getattr(kind_module(kind), "TRAIN_OPTIONS", {}).items():
            if name in merged and merged[name][0] != spec[0]:
                raise RuntimeError(f"train option {name!r} declared twice with different "
                                   f"defaults ({merged[name][0]!r}, {spec[0]!r})")
            merged[name] = spec
    return merged
