"""Discriminative / hybrid RBM classifier on threshold-binarised MNIST (Larochelle & Bengio 2008).

Trains a :class:`boltzkit.models.discriminative.DiscriminativeRBM` on the first 50,000
training images, keeps the epoch with the lowest error on the last 10,000 (validation,
early stopping), prints the test error of that model, and writes a PNG of hidden-unit
filters and a confusion matrix of the test set.

Run (MNIST files in $BOLTZKIT_DATA or --data-dir)::

    python examples/drbm_mnist.py                          # DRBM, 500 hidden
    python examples/drbm_mnist.py --n-hidden 1000 --dropout 0.5 \
        --epochs 30                                        # configs/drbm-mnist.toml
    python examples/drbm_mnist.py --objective hybrid --alpha 0.01 --n-hidden 1500 \
        --patience 5 --dropout 0.5                         # configs/hybrid-drbm-mnist.toml
    python examples/drbm_mnist.py --limit 5000 --epochs 2  # a quick look
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from boltzkit import visual
from boltzkit.data import load_dataset
from boltzkit.io import save_model
from boltzkit.models.discriminative import DiscriminativeRBM, fit_drbm


def confusion_png(true: np.ndarray, pred: np.ndarray, path: Path, title: str) -> Path:
    """A 10x10 confusion matrix (rows: true class) with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = int(max(true.max(), pred.max())) + 1
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (true, pred), 1)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    off = cm.astype(float)
    np.fill_diagonal(off, 0)
    ax.imshow(off, cmap="Reds")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="black" if i != j else "tab:blue")
    ax.set(xlabel="predicted", ylabel="true", xticks=range(k), yticks=range(k), title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--objective", default="discriminative",
                   choices=("discriminative", "hybrid", "generative"))
    p.add_argument("--alpha", type=float, default=0.01, help="hybrid: generative weight")
    p.add_argument("--n-hidden", type=int, default=500)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum / Adam beta1")
    p.add_argument("--lr", type=float, default=0.005, help="learning rate")
    p.add_argument("--lr-schedule", default="linear",
                   choices=("constant", "linear", "cosine", "exponential"))
    p.add_argument("--lr-final-factor", type=float, default=0.02, help="decay to this x lr")
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 on the weights")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="hidden-unit dropout in the discriminative term")
    p.add_argument("--init-std", type=float, default=0.05)
    p.add_argument("--patience", type=int, default=None,
                   help="stop after N epochs without validation improvement")
    p.add_argument("--val-size", type=int, default=10000)
    p.add_argument("--limit", type=int, default=None, help="use only the first N train rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default="drbm-mnist")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = load_dataset("mnist", split="train", data_dir=args.data_dir, binarize="threshold",
                        limit=args.limit)
    xt, yt = load_dataset("mnist", split="test", data_dir=args.data_dir, binarize="threshold")
    n_val = min(args.val_size, x.shape[0] // 5)
    val = (x[-n_val:], y[-n_val:]) if n_val else None
    if n_val:
        x, y = x[:-n_val], y[:-n_val]
    model = DiscriminativeRBM(784, 10, args.n_hidden, init_std=args.init_std,
                              generator=torch.Generator().manual_seed(args.seed))
    start = time.perf_counter()
    history = fit_drbm(model, x, y, objective=args.objective, alpha=args.alpha,
                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       optimizer=args.optimizer, momentum=args.momentum,
                       weight_decay=args.weight_decay, dropout=args.dropout,
                       lr_schedule=args.lr_schedule, lr_final_factor=args.lr_final_factor,
                       seed=args.seed, val=val, patience=args.patience,
                       callback=lambda r: print(json.dumps(r), flush=True))
    wall = time.perf_counter() - start
    err, nll = model.error_rate(xt, yt)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out / "drbm.safetensors", extra={"history": history})
    visual.weight_mosaic(model.connection.weights, out / "filters.png", image_shape=(28, 28),
                         title=f"{args.objective} RBM: first 100 filters")
    pred = model.predict(xt).numpy()
    confusion_png(yt.numpy(), pred, out / "confusion.png",
                  f"{args.objective}, {args.n_hidden} hidden: test error {100 * err:.2f}%")
    result = {"objective": args.objective, "n_hidden": args.n_hidden,
              "epochs_run": len(history), "best_epoch": history[-1].get("best_epoch"),
              "test_error": err, "test_nll": nll, "train_wall_s": round(wall, 1),
              "out_dir": str(out)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
