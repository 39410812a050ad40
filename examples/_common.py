"""Shared argument handling for the examples (data set, image shape, output folder)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from boltzkit.data import load_dataset


def add_data_args(p: argparse.ArgumentParser, dataset: str = "mnist") -> None:
    p.add_argument("--dataset", default=dataset, help="mnist | digits (offline, 8x8)")
    p.add_argument("--data-dir", default=None, help="data directory (else $BOLTZKIT_DATA)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--out-dir", default="example-out", help="where pictures and models go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def load(args, split: str, binarize: str = "threshold"):
    """(images, labels) of a split; ``--limit`` applies to the training split only."""
    limit = args.limit if split == "train" else None
    return load_dataset(args.dataset, split=split, data_dir=args.data_dir, binarize=binarize,
                        seed=args.seed, limit=limit)


def image_shape(n_visible: int) -> tuple[int, int]:
    side = math.isqrt(n_visible)
    return side, side


def out_dir(args) -> Path:
    path = Path(args.out_dir)
    path.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    return path
