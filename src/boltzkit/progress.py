"""Progress bars for long computations (training epochs, AIS, pseudo-likelihood).

Shown on a terminal only (``show=None``: when stderr is a TTY), so logs and pipes stay
clean; tqdm draws them.
"""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, unit: str, show: bool | None = None):
    """A tqdm bar of ``total`` ``unit``s, or None when it is not to be shown."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit=unit)
