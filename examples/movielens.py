"""Rating prediction and top-N ranking on MovieLens: RBMs against baselines, k folds.

For each fold the script fits every model on the fold's training ratings and reports RMSE
and MAE on its test ratings, precision@10, recall@10 and NDCG@10 (test ratings >= 4 are
relevant; the user's training items are not ranked) and the training seconds; then the
mean ± std over the folds.  The RBMs' settings come from the shipped TOML configs.

``--validate`` scores on a 10 % validation split carved (seeded) from each fold's
training ratings instead, leaving the test ratings untouched: tune with it on fold 1.

    OMP_NUM_THREADS=1 python examples/movielens.py --data-dir ../shared/data --jobs 2
    OMP_NUM_THREADS=1 python examples/movielens.py --data-dir ../shared/data --folds 1 --validate
    python examples/movielens.py --data-dir ../shared/data --models I-RBM like-RBM --folds 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from boltzkit.cli import load_config_file
from boltzkit.data.movielens import load_movielens
from boltzkit.recommend import BiasBaseline, GlobalMean, ItemKNN, MatrixFactorization, Popularity
from boltzkit.recommend.cf_rbm import fit_movielens
from boltzkit.recommend.evaluate import evaluate_recommender, summarize

CONFIGS = Path(__file__).resolve().parent / "configs"
BASELINES = ("global-mean", "biases", "item-kNN", "biased-MF", "popularity")
RBMS = ("I-RBM", "I-RBM conditional", "U-RBM", "like-RBM")
DEFAULT = ("global-mean", "biases", "item-kNN", "biased-MF", "popularity", "I-RBM",
           "I-RBM conditional")
RANKING = ("precision", "recall", "ndcg")
# Not models of their own: the mean of two rows' predictions (reported separately).
ENSEMBLES = {"mean(I-RBM, item-kNN)": ("I-RBM", "item-kNN"),
             "mean(I-RBM, U-RBM)": ("I-RBM", "U-RBM")}


class Mean:
    """Average of fitted models' predictions (an ensemble, not an RBM variant)."""

    def __init__(self, *models) -> None:
        self.models = models

    def predict_index(self, users, items):
        return sum(m.predict_index(users, items) for m in self.models) / len(self.models)

    def predict_all(self):
        from boltzkit.recommend.evaluate import score_matrix

        return sum(score_matrix(m, *self.shape) for m in self.models) / len(self.models)


def shipped(path: Path) -> dict:
    """A shipped config's training options (the data comes from this script)."""
    where = ("model", "dataset", "data_dir", "fold", "out")
    return {k: v for k, v in load_config_file(path).items() if k not in where}


def rbm_options(name: str, args: argparse.Namespace) -> dict:
    """The shipped config of an RBM row (conditional / user-based as the name says)."""
    if name == "like-RBM":
        return shipped(args.like_config)
    o = shipped(args.config)
    if args.n_hidden:
        o["n_hidden"] = args.n_hidden
    o["conditional"] = name.endswith("conditional")
    o["item_based"] = name.startswith("I-")
    return o


def baseline(name: str, args: argparse.Namespace, lo: float, hi: float):
    return {"global-mean": lambda: GlobalMean(),
            "biases": lambda: BiasBaseline(lo=lo, hi=hi),
            "item-kNN": lambda: ItemKNN(lo=lo, hi=hi),
            "biased-MF": lambda: MatrixFactorization(args.mf_rank, args.mf_reg,
                                                     epochs=args.mf_epochs, lo=lo, hi=hi,
                                                     solver=args.mf_solver),
            "popularity": lambda: Popularity()}[name]()


def run_fold(fold: str, args: argparse.Namespace) -> dict[str, dict]:
    data = load_movielens(args.dataset, args.data_dir, fold)
    if args.validate:  # hold out 10 % of the training ratings; the test set stays unseen
        train, val = data.train.holdout(0.1, seed=0)
        data = dataclasses.replace(data, train=train, test=val, split=f"{data.split}-val")
    tr, te = data.train, data.test
    out, fitted = {}, {}
    ensembles = [e for e, parts in ENSEMBLES.items() if set(parts) <= set(args.models)]
    for name in [*args.models, *ensembles]:
        t = time.perf_counter()
        if name in ENSEMBLES:
            model = Mean(*(fitted[part] for part in ENSEMBLES[name]))
            model.shape = (data.n_users, data.n_items)
        elif name in RBMS:
            model, _ = fit_movielens(data, rbm_options(name, args))
        else:
            model = baseline(name, args, data.scale[0], data.scale[-1])
            model.fit(tr.users, tr.items, tr.ratings, n_users=data.n_users, n_items=data.n_items)
        seconds = time.perf_counter() - t
        fitted[name] = model
        if getattr(model, "mode", "softmax") == "like":
            metrics = ["like_error", *RANKING]
        elif getattr(model, "predicts_ratings", True):
            metrics = ["rmse", "mae", *RANKING]
        else:
            metrics = list(RANKING)
        res = {**evaluate_recommender(model, tr, te, metrics), "train_s": round(seconds, 1)}
        out[name] = res
        print(f"{data.split:7s} {name:18s} " + "  ".join(
            f"{k}={v}" for k, v in res.items() if not k.startswith("n_")),
            flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--folds", nargs="+", default=["1", "2", "3", "4", "5"])
    p.add_argument("--models", nargs="+", default=list(DEFAULT), choices=(*BASELINES, *RBMS),
                   metavar="MODEL", help=f"from {[*BASELINES, *RBMS]}")
    p.add_argument("--validate", action="store_true",
                   help="score on a validation split of each fold's training ratings")
    p.add_argument("--config", default=CONFIGS / "cf-rbm-ml100k.toml")
    p.add_argument("--like-config", default=CONFIGS / "like-rbm-ml100k.toml")
    p.add_argument("--n-hidden", type=int, default=None, help="override the RBM config's")
    # biased MF: ALS to convergence, rank and reg chosen on u1's validation split
    p.add_argument("--mf-solver", default="als", choices=("als", "adam"))
    p.add_argument("--mf-rank", type=int, default=20)
    p.add_argument("--mf-reg", type=float, default=0.15)
    p.add_argument("--mf-epochs", type=int, default=15, help="ALS sweeps / Adam steps")
    p.add_argument("--json", default=None, help="also write the per-fold results here")
    p.add_argument("--jobs", type=int, default=1, help="folds run in parallel processes")
    args = p.parse_args()
    start = time.perf_counter()
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(run_fold, args.folds, [args] * len(args.folds)))
        per_fold = dict(zip(args.folds, results, strict=True))
    else:
        per_fold = {fold: run_fold(fold, args) for fold in args.folds}
    wall = time.perf_counter() - start
    rows = [r for f in args.folds for r in per_fold[f].values()]
    keys = [k for k in ("rmse", "mae", "like_error", "precision@10", "recall@10", "ndcg@10",
                        "train_s") if any(k in r for r in rows)]
    what = "validation split of" if args.validate else "test ratings of"
    print(f"\n{args.dataset}, {what} folds {' '.join(args.folds)}: mean ± std over folds "
          f"(train_s: seconds to train, per fold); total {wall:.0f} s\n")
    print("| model | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name in per_fold[args.folds[0]]:
        cells = []
        for k in keys:
            vals = [per_fold[f][name][k] for f in args.folds if k in per_fold[f][name]]
            if vals:
                mean, std = summarize(vals)
                cells.append(f"{mean:.1f} ± {std:.1f}" if k == "train_s" else
                             f"{mean:.4f} ± {std:.4f}")
            else:
                cells.append("")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"folds": per_fold, "wall_s": wall,
                                               "validate": args.validate}, indent=1))


if __name__ == "__main__":
    main()
