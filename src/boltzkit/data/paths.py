"""Where data sets live: a directory the user names, or ``$BOLTZKIT_DATA``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from boltzkit.errors import DataError

ENV_VAR = "BOLTZKIT_DATA"


def resolve_data_dir(label: str, data_dir: str | os.PathLike[str] | None, subdir: str,
                     contains: Callable[[Path], bool], hint: str) -> Path:
    """The folder of data set ``label``: ``data_dir`` if given, else ``$BOLTZKIT_DATA``.

    Either may name the folder itself or a parent holding ``subdir/``; the
    parent's ``subdir`` is chosen when only it ``contains`` the files.  A
    missing setting or folder raises DataError with ``hint`` (the fix).
    """
    if data_dir is not None:
        base, origin = Path(data_dir).expanduser(), "data_dir"
    elif os.environ.get(ENV_VAR):
        base, origin = Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    else:
        raise DataError(f"no {label} data directory given; {hint}")
    if not base.is_dir():
        raise DataError(f"{label} directory {base} (from {origin}) does not exist; {hint}")
    if not contains(base) and contains(base / subdir):
        return base / subdir
    return base
