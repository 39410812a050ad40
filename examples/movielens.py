"""Rating prediction on MovieLens: CF-RBM / I-RBM / like-RBM against baselines.

Reports RMSE and MAE on held-out ratings for one fold or all five u-folds (mean and std),
next to a global mean, regularised user+item biases and biased matrix factorisation.

    OMP_NUM_THREADS=1 python examples/movielens.py --data-dir ../shared/data --folds 1
    python examples/movielens.py --data-dir ../shared/data --folds 1 2 3 4 5 --item-based
    python examples/movielens.py --data-dir ../shared/data --model like-rbm --folds 1
"""

from __future__ import annotations

import argparse
import time

from boltzkit.data.movielens import load_movielens
from boltzkit.recommend import CFRBM, BiasBaseline, GlobalMean, MatrixFactorization
from boltzkit.recommend.cli import MODEL_DEFAULTS, parse_schedule
from boltzkit.recommend.evaluate import evaluate_model, summarize


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--folds", nargs="+", default=["1"])
    p.add_argument("--model", choices=sorted(MODEL_DEFAULTS), default="cf-rbm")
    p.add_argument("--item-based", action="store_true")
    p.add_argument("--n-hidden", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--cd-schedule", default=None)
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--mf-rank", type=int, default=10)
    p.add_argument("--mf-reg", type=float, default=0.15)
    args = p.parse_args()
    o = dict(MODEL_DEFAULTS[args.model])
    for k in ("n_hidden", "epochs", "batch_size", "lr", "cd_schedule"):
        if getattr(args, k) is not None:
            o[k] = getattr(args, k)
    sched = parse_schedule(o["cd_schedule"])
    results: dict[str, list[dict]] = {}
    for fold in args.folds:
        data = load_movielens(args.dataset, args.data_dir, fold)
        tr, te = data.train, data.test
        lo, hi = data.scale[0], data.scale[-1]
        models = {}
        if not args.no_baselines and args.model == "cf-rbm":
            models = {"global-mean": GlobalMean(), "biases": BiasBaseline(lo=lo, hi=hi),
                      "biased-MF": MatrixFactorization(args.mf_rank, args.mf_reg, lo=lo, hi=hi)}
        for name, b in models.items():
            t = time.perf_counter()
            b.fit(tr.users, tr.items, tr.ratings, n_users=data.n_users, n_items=data.n_items)
            res = {**evaluate_model(b, te), "seconds": time.perf_counter() - t}
            results.setdefault(name, []).append(res)
            print(f"fold {fold} {name:12s} {res}", flush=True)
        name = ("I-RBM" if args.item_based else "U-RBM") if args.model == "cf-rbm" else "like-RBM"
        m = CFRBM(data.n_users, data.n_items, n_hidden=o["n_hidden"], scale=data.scale,
                  mode=o["mode"], item_based=args.item_based, titles=data.titles)
        t = time.perf_counter()
        m.fit(tr.users, tr.items, tr.ratings, epochs=o["epochs"], batch_size=o["batch_size"],
              lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"],
              cd_schedule=sched)
        res = {**evaluate_model(m, te), "seconds": time.perf_counter() - t}
        results.setdefault(name, []).append(res)
        print(f"fold {fold} {name:12s} {res}", flush=True)
    print(f"\nsummary over folds {args.folds} (mean ± std):")
    for name, rows in results.items():
        parts = []
        for key in ("rmse", "mae", "like_error", "seconds"):
            if key in rows[0]:
                mean, std = summarize([r[key] for r in rows])
                parts.append(f"{key} {mean:.4f} ± {std:.4f}")
        print(f"  {name:12s} " + "  ".join(parts))


if __name__ == "__main__":
    main()
