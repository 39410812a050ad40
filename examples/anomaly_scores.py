"""Anomaly detection with an RBM's free energy as the score.

An RBM is trained on some digit classes only ("normal", default 0-4).  On the test
set, images of those classes should get a low free energy F(v) (high unnormalised
log-probability) and images of the unseen classes (5-9) a high one.  The example
reports the AUROC of F(v) for telling unseen-class test images from normal ones,
beside two baselines that need no model: the distance to the mean normal training
image, and the reconstruction error of the same RBM.

The same scores come from the command line:
``boltzkit score MODEL --dataset mnist --split test --json`` (per-sample free energies).

Run: ``python examples/anomaly_scores.py --data-dir ../shared/data``
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import add_data_args, load, out_dir
from sklearn.metrics import roc_auc_score

from boltzkit import PersistentCD, Trainer, make_rbm, save_model
from boltzkit.objectives import LikelihoodGradient


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    p.add_argument("--normal", default="0,1,2,3,4", help="classes seen in training")
    p.add_argument("--n-hidden", type=int, default=200)
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args(argv)
    out = out_dir(args)
    normal = sorted({int(c) for c in args.normal.split(",")})
    x, y = load(args, "train")
    test, y_test = load(args, "test")
    if y is None or y_test is None:
        p.error(f"{args.dataset} has no labels")
    seen = torch.isin(y, torch.tensor(normal))
    train = x[seen]
    if len(train) == 0 or bool(seen.all()):
        p.error(f"--normal {args.normal} must name some, but not all, classes of the data")

    model = make_rbm(train.shape[1], args.n_hidden, seed=args.seed)
    Trainer(model, PersistentCD(k=1, n_chains=100), LikelihoodGradient(centering=True),
            epochs=args.epochs, batch_size=100, lr=0.01, momentum=0.9,
            seed=args.seed).fit(train)
    save_model(model, out / "anomaly-rbm.safetensors")

    anomalous = (~torch.isin(y_test, torch.tensor(normal))).numpy()
    with torch.no_grad():
        v = model.prepare(test)
        scores = {
            "free_energy": model.free_energy(v),
            "reconstruction_error": ((model.reconstruct(v) - v) ** 2).sum(1),
            "distance_to_mean_image": ((v - train.mean(0).to(v)) ** 2).sum(1),
        }
    auroc = {k: round(float(roc_auc_score(anomalous, s.numpy())), 4) for k, s in scores.items()}
    summary = {"dataset": args.dataset, "normal_classes": normal, "n_train": len(train),
               "n_test_normal": int((~anomalous).sum()), "n_test_unseen": int(anomalous.sum()),
               "auroc": auroc}
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
