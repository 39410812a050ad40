"""Fetching public data sets for users with internet: checked, atomic, never in tests.

:func:`fetch` is the one download routine: it tries each URL in turn, checks the
file's MD5 against the published value and a caller's structural check, and only
then renames it into place, so a failed or interrupted download never leaves a
file that looks complete.  The data-set modules (MNIST, MovieLens) call it.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import shutil
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from boltzkit.errors import DataError
from boltzkit.io import atomic_write

logger = logging.getLogger(__name__)


def md5_file(path: str | Path) -> str:
    """Hex MD5 of a file, read in 1 MiB blocks."""
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_url_text(url: str, timeout: float = 60.0, limit: int = 1 << 16) -> str:
    """The first ``limit`` bytes at ``url`` as text (e.g. a published ``.md5`` file)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read(limit).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        raise DataError(f"could not read {url}: {exc}") from exc


def parse_md5(text: str, source: str) -> str:
    """The hex digest in an ``md5sum``/BSD-style checksum file's text."""
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if match is None:
        raise DataError(f"{source} holds no MD5 digest")
    return match.group(0).lower()


def fetch(urls: Sequence[str], target: str | Path, md5: str | None,
          check: Callable[[Path], None] | None = None, timeout: float = 60.0) -> Path:
    """Download ``target`` from the first of ``urls`` that gives a file passing the checks.

    ``md5`` is the published digest (None: not checked, for callers that check
    the content otherwise); ``check(path)`` raises DataError for a file that is
    not what it should be.  A download failing either is discarded and the next
    URL tried; DataError lists every URL's failure.  Returns ``target``.
    """
    target = Path(target)
    errors: list[str] = []
    for url in urls:

        def write(tmp: str, url: str = url) -> None:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                shutil.copyfileobj(r, out)
            if md5 is not None and (got := md5_file(tmp)) != md5.lower():
                raise DataError(f"MD5 mismatch: got {got}, expected {md5}")
            if check is not None:
                check(Path(tmp))

        try:
            atomic_write(target, write)
        except (OSError, http.client.HTTPException, DataError) as exc:
            errors.append(f"{url}: {exc}")
            logger.warning("download of %s failed: %s", url, exc)
            continue
        logger.info("downloaded %s to %s", url, target)
        return target
    raise DataError(f"could not download {target.name} ({'; '.join(errors) or 'no URL given'})")
