"""Log lines that stay short: long lists of names are capped unless -v asked for everything."""

from __future__ import annotations

import logging
from collections.abc import Sequence

LIST_LIMIT = 6  # names shown before "... and N more"


def name_list(names: Sequence[str], *, limit: int = LIST_LIMIT, logger: logging.Logger | None = None) -> str:
    """``"a, b, c"``; beyond ``limit`` names ``"a, b, ... and 30 more (-v lists all)"``.

    The whole list is returned when ``logger`` (default: the root logger) is at DEBUG level: the
    command line's -v, or ``logging.DEBUG`` for a library caller.
    """
    names = [str(n) for n in names]
    verbose = (logger or logging.getLogger()).isEnabledFor(logging.DEBUG)
    if verbose or len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])}, ... and {len(names) - limit} more (-v lists all)"
