"""Where a benchmark writes its results: a new file each run, the tracked one only when asked."""

from __future__ import annotations

import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def add_output_arguments(parser, stem: str) -> None:
    """``--out PATH`` (no suffix) and ``--update`` (overwrite the tracked ``results/STEM.*``)."""
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results file stem (default: results/{stem}-YYYYmmdd-HHMMSS, a new file)")
    parser.add_argument("--update", action="store_true",
                        help=f"overwrite the tracked results/{stem}.json and .md (the published numbers)")


def output_stem(args, stem: str) -> Path:
    """The stem to write: ``--out``, the tracked file under ``--update``, else a new time-stamped one."""
    if args.out is not None:
        return args.out
    if args.update:
        return RESULTS / stem
    return RESULTS / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
