"""The ``boltzkit`` command line: train, evaluate, sample, reconstruct, score, info, download, demo.

``train``'s options come from the registry of model kinds (:mod:`boltzkit.kinds`) and
resolve in this order: the kind's defaults, then ``--config FILE.toml``, then the flags
given; the settings the run used are saved beside the model (``MODEL.config.toml``) so
``train --config`` reruns it.  Every error boltzkit raises on purpose ends the command
with a one-line message and exit code 2.
"""

from __future__ import annotations

import logging
import sys

from ..errors import BoltzkitError
from .commands import (
    cmd_demo,
    cmd_download,
    cmd_evaluate,
    cmd_info,
    cmd_reconstruct,
    cmd_sample,
    cmd_score,
    cmd_train,
)
from .config import load_config_file, resolve_train_config
from .parser import build_parser

__all__ = ["COMMANDS", "build_parser", "load_config_file", "main", "resolve_train_config"]

COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample,
            "reconstruct": cmd_reconstruct, "score": cmd_score, "info": cmd_info,
            "download": cmd_download, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``boltzkit`` command."""
    from .recommend import COMMANDS as recommend_commands

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (one line) and --help / --version
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    command = {**COMMANDS, **recommend_commands}[args.command]
    if getattr(args, "threads", None) and args.command != "train":
        import torch

        torch.set_num_threads(args.threads)
    try:
        return command(args)
    except BoltzkitError as exc:
        print(f"boltzkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint (if any) is intact; rerun with --resume",
              file=sys.stderr)
        return 130
