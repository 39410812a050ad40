"""Tiny data and short settings for every trainable kind (shared by the capability and the
data-parallel tests): each kind trains in well under a second on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_data(root: Path) -> Path:
    """Write the tiny data sets into ``root``; returns it."""
    rng = np.random.default_rng(0)
    proto = rng.random((3, 16))
    rows = proto[rng.integers(0, 3, 50)] * 0.8 + 0.2 * rng.random((50, 16))
    np.save(root / "grey.npy", rows[:40].astype(np.float32))
    np.save(root / "grey_test.npy", rows[40:].astype(np.float32))
    np.save(root / "grey_test2.npy", rows[30:40].astype(np.float32))
    np.save(root / "grey2.npy", (1 - rows[:40]).astype(np.float32))
    labels = rng.integers(0, 3, (40, 5)).astype(np.float32)
    np.save(root / "labels.npy", labels)
    np.save(root / "labels_test.npy", rng.integers(0, 3, (10, 5)).astype(np.float32))
    np.save(root / "labels2.npy", np.roll(labels, 1, axis=1))
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    np.savez(root / "digits2.npz", x=(x[100:160] / 16.0).astype(np.float32), y=y[100:160])
    walk = np.cumsum(rng.normal(size=(60, 3)), 0) * 0.1
    np.save(root / "seq.npy", walk.astype(np.float32))
    np.save(root / "seq_test.npy", walk[::-1].copy().astype(np.float32))
    np.save(root / "seq2.npy", (walk * 2).astype(np.float32))
    for name, seed in (("ml", 1), ("ml2", 2)):
        _fake_movielens(root / name / "ml-100k", np.random.default_rng(seed))
    return root


def _fake_movielens(folder: Path, rng) -> None:
    """A tiny ml-100k in GroupLens' format: u.data and the u1, u2 folds (80/20)."""
    folder.mkdir(parents=True)
    pairs = [(u, i) for u in range(1, 13) for i in range(1, 16) if rng.random() < 0.5]
    lines = [f"{u}\t{i}\t{int(rng.integers(1, 6))}\t881250949" for u, i in pairs]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    for fold in (1, 2):
        order = rng.permutation(len(lines))
        cut = int(0.8 * len(lines))
        (folder / f"u{fold}.base").write_text("\n".join(lines[j] for j in order[:cut]) + "\n")
        (folder / f"u{fold}.test").write_text("\n".join(lines[j] for j in order[cut:]) + "\n")


def base_args(kind: str, d: Path) -> list[str]:
    """A short, fast run of ``kind`` on the tiny data."""
    grey = ["--dataset", str(d / "grey.npy"), "--test-data", str(d / "grey_test.npy"),
            "--binarize", "threshold"]
    common = ["--epochs", "1", "--batch-size", "10"]
    return common + {
        "rbm": [*grey, "--n-hidden", "5", "--method", "cd"],
        "conv-rbm": [*grey, "--conv-filters", "2", "--conv-filter-size", "2", "--conv-pool",
                     "1", "--method", "cd", "--lr", "0.01"],
        "dropout-rbm": [*grey, "--n-hidden", "5", "--method", "cd"],
        "edropout-rbm": [*grey, "--n-hidden", "5"],
        "drbm": ["--dataset", "digits", "--binarize", "threshold", "--limit", "60",
                 "--n-hidden", "6", "--drbm-val-size", "20", "--drbm-objective", "hybrid",
                 "--drbm-alpha", "0.5"],
        "crbm": ["--dataset", str(d / "seq.npy"), "--n-hidden", "4"],
        "ising": [*grey, "--lr", "0.1"],
        "potts": ["--dataset", str(d / "labels.npy"), "--test-data",
                  str(d / "labels_test.npy"), "--binarize", "none", "--lr", "0.1"],
        "srbm": [*grey, "--n-hidden", "3", "--lr", "0.1"],
        "cf-rbm": ["--dataset", "ml-100k", "--data-dir", str(d / "ml"), "--n-hidden", "4",
                   "--batch-size", "4"],
        "rank-rbm": ["--dataset", "ml-100k", "--data-dir", str(d / "ml"), "--n-hidden", "4",
                     "--init-std", "0.5", "--batch-size", "4"],
        "dbn": ["--dataset", "digits", "--binarize", "threshold", "--limit", "60",
                "--layers", "64,8,4", "--finetune-epochs", "1"],
        "dbm": [*grey, "--layers", "16,5,4", "--dbm-pretrain-epochs", "1"],
    }[kind]
