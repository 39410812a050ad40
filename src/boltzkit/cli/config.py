"""``boltzkit train``'s configuration: defaults, then ``--config FILE.toml``, then flags.

Which options were *given* (a flag, or a key of the file) is kept with the result, so
an option the kind would not use is refused (:func:`boltzkit.kinds.check_given`) rather
than ignored.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from .. import kinds
from ..errors import ConfigError


def _norm_key(key: str) -> str:
    return key.replace("-", "_")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config; keys may use dashes or underscores; unknown keys are errors.

    Values are checked against each option's type and choices; ``[train]``-style tables
    are flattened.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):  # allow [train] / [model] tables
            flat.update({_norm_key(k): v for k, v in value.items()})
        else:
            flat[_norm_key(key)] = value
    unknown = sorted(set(flat) - set(kinds.OPTIONS))
    if unknown:
        raise ConfigError(f"{path}: {kinds.unknown_option(unknown[0])}")
    return {k: kinds.coerce(k, v, f"{path}: ") for k, v in flat.items()}


def resolve_train_config(args: argparse.Namespace) -> tuple[dict[str, Any], set[str]]:
    """(config, given): the kind's defaults, then the TOML file, then the flags given."""
    from_file = load_config_file(args.config) if getattr(args, "config", None) else {}
    flags = {k: getattr(args, k) for k in kinds.OPTIONS if getattr(args, k, None) is not None}
    model = flags.get("model", from_file.get("model", kinds.OPTIONS["model"].default))
    if model not in kinds.trainable():
        raise ConfigError(f"unknown model kind {model!r}: choose one of {kinds.trainable()}")
    cfg = kinds.defaults(model)
    cfg.update(from_file)
    cfg.update(flags)
    return cfg, set(from_file) | set(flags)


def write_config(cfg: dict[str, Any], path: Path) -> None:
    """The settings the run used, as TOML (``train --config`` reruns it)."""
    import tomli_w

    from ..io import atomic_write

    clean = {k: v for k, v in kinds.relevant(cfg).items() if v is not None}
    atomic_write(path, lambda tmp: Path(tmp).write_text(tomli_w.dumps(clean)))
