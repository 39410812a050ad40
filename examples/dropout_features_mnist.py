"""RBM vs Dropout RBM vs Energy-based Dropout RBM features on MNIST, scored by logistic regression.

Three models with the SAME hidden size, initial weights, sampler (CD-k), optimiser
and epochs are trained on threshold-binarised MNIST (train split); their hidden
means E[h | v] (the test-time model: the dropout RBM's weights scaled by its keep
probability p) feed a scikit-learn ``LogisticRegression`` fitted on the train
features and scored on the test split.  Accuracies and wall times are printed
side by side.

Run (MNIST in $BOLTZKIT_DATA or --data-dir)::

    python examples/dropout_features_mnist.py --n-hidden 500 --epochs 10 --threads 1

``--limit N`` uses the first N training images (for a quick look).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from sklearn.linear_model import LogisticRegression

from boltzkit.data import load_dataset
from boltzkit.models.dropout import DropoutRBM, EDropoutRBM, training_parts
from boltzkit.objectives import LikelihoodGradient
from boltzkit.rbm import make_rbm
from boltzkit.sampling import make_sampler
from boltzkit.training import Trainer


def build(kind: str, n_hidden: int, seed: int, dropout_rate: float):
    """Model ``kind`` ("rbm", "dropout-rbm", "edropout-rbm") from the same initial weights."""
    plain = make_rbm(784, n_hidden, seed=seed)
    if kind == "rbm":
        return plain
    if kind == "dropout-rbm":
        return DropoutRBM(plain.visible, plain.hidden, plain.connection,
                          dropout_rate=dropout_rate)
    return EDropoutRBM(plain.visible, plain.hidden, plain.connection)


def run(kind: str, train: torch.Tensor, y_train, test: torch.Tensor, y_test, args) -> dict:
    model = build(kind, args.n_hidden, args.seed, args.dropout_rate)
    sampler, objective = make_sampler("cd", args.k), LikelihoodGradient()
    if kind != "rbm":
        sampler, objective = training_parts(sampler, objective)
    trainer = Trainer(model, sampler, objective, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, momentum=args.momentum, seed=args.seed, progress=False)
    t0 = time.perf_counter()
    history = trainer.fit(train, test)
    fit_time = time.perf_counter() - t0
    f_train, f_test = model.transform(train).numpy(), model.transform(test).numpy()
    t1 = time.perf_counter()
    clf = LogisticRegression(C=args.C, max_iter=args.max_iter)
    clf.fit(f_train, y_train.numpy())
    lr_time = time.perf_counter() - t1
    last = history[-1]
    return {"model": kind, "accuracy": float(clf.score(f_test, y_test.numpy())),
            "train_accuracy": float(clf.score(f_train, y_train.numpy())),
            "rbm_fit_s": fit_time, "logreg_fit_s": lr_time,
            "recon_error": last["recon_error"], "free_energy_gap": last.get("free_energy_gap"),
            "mean_hidden_activation": float(f_test.mean())}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n-hidden", type=int, default=500)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.5)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--dropout-rate", type=float, default=0.5)
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the classifier")
    p.add_argument("--max-iter", type=int, default=500)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--models", default="rbm,dropout-rbm,edropout-rbm")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train, y_train = load_dataset("mnist", "train", args.data_dir, "threshold", limit=args.limit)
    test, y_test = load_dataset("mnist", "test", args.data_dir, "threshold")
    results = []
    for kind in args.models.split(","):
        res = run(kind, train, y_train, test, y_test, args)
        results.append(res)
        print(json.dumps(res), flush=True)
    print(f"\nMNIST, {train.shape[0]} train / {test.shape[0]} test images, {args.n_hidden} hidden, "
          f"CD-{args.k}, {args.epochs} epochs, lr {args.lr}, momentum {args.momentum}, "
          f"dropout rate {args.dropout_rate}")
    print(f"{'model':14s} {'test acc':>9s} {'train acc':>9s} {'RBM fit s':>10s} "
          f"{'logreg s':>9s} {'recon err':>10s}")
    for r in results:
        print(f"{r['model']:14s} {r['accuracy']:9.4f} {r['train_accuracy']:9.4f} "
              f"{r['rbm_fit_s']:10.1f} {r['logreg_fit_s']:9.1f} {r['recon_error']:10.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": results}, fh, indent=1)
    return results


if __name__ == "__main__":
    main()
