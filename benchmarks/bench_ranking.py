"""Top-N ranking on MovieLens 100K: the ranking RBM against top-N baselines and the rating
models ranked by predicted rating, under two protocols, in one run.

Protocols (docs/results/ranking.md):

* ``folds`` - the official u1..u5 splits; test ratings >= 4 are relevant; a user's
  training items are never ranked; users without a relevant test item are skipped.
* ``stratified`` - Microsoft recommenders' RBM quick-start protocol: 25 % of every user's
  ratings held out at random (seed ``--split-seed``), every held-out item relevant.

Models: popularity, item-kNN (cosine on the 0/1 matrix), EASE, the rank-RBM of
``examples/configs/rank-rbm-ml100k.toml`` (one training, scored both by mean field and
exactly), and the rating models ranked by predicted rating: the CF-RBM of
``examples/configs/cf-rbm-ml100k.toml``, biased MF (ALS) and item-kNN on baseline
residuals (their RMSE is printed too: it must not move).  Metrics: precision, recall,
NDCG, MAP and coverage at 10 (:mod:`boltzkit.recommend.topn`).  Every model is trained
on one thread (``torch.set_num_threads(1)``); ``train_s`` is its training time.

``--validate`` carves a validation split from u1.base (20 % of its ratings, seed 0;
ratings >= 4 relevant) and never reads a test file: the settings of the rank-RBM
(``--grid KEY=V1,V2 ...`` over its config), EASE's lambda and item-kNN's k were chosen
there.

    python benchmarks/bench_ranking.py --data-dir ../shared/data            # the full table
    python benchmarks/bench_ranking.py --data-dir ../shared/data --skip cf-rbm   # minutes
    python benchmarks/bench_ranking.py --data-dir ../shared/data --validate \\
        --grid n_hidden=100,200,400 lr=0.01,0.02,0.03
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
import tomllib
from pathlib import Path

import numpy as np
import torch

from boltzkit.cli import load_config_file
from boltzkit.data.interactions import Interactions
from boltzkit.data.movielens import load_movielens
from boltzkit.recommend import (
    EASE,
    CosineItemKNN,
    ItemKNN,
    MatrixFactorization,
    Popularity,
    rank_rbm,
)
from boltzkit.recommend.cf_rbm import fit_movielens
from boltzkit.recommend.evaluate import evaluate_model, ranking_metrics, score_matrix, summarize

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
RANK_CONFIG = CONFIGS / "rank-rbm-ml100k.toml"
CF_CONFIG = CONFIGS / "cf-rbm-ml100k.toml"
#: Chosen on the u1.base validation split (--validate); see docs/results/ranking.md.
EASE_LAMBDA = 400.0
KNN_K = 200
MODELS = ("popularity", "item-knn", "ease", "rank-rbm", "cf-rbm", "biased-mf", "item-knn-rating")
METRICS = ("precision@10", "recall@10", "ndcg@10", "map@10", "coverage@10")
#: The quick-start's own figures (RBM, 600 hidden, 30 epochs) for the stratified table.
ANCHOR = {"ndcg@10": 0.4158, "precision@10": 0.3419, "recall@10": 0.2144,
          "map_by_relevant@10": 0.1440}


def rank_config(path: Path = RANK_CONFIG, **overrides) -> dict:
    """The shipped rank-RBM config's training options (``fit_rank_rbm`` adds the kind's
    defaults; the data comes from this script)."""
    where = ("model", "dataset", "data_dir", "fold", "out")
    return {**{k: v for k, v in load_config_file(path).items() if k not in where},
            **overrides}


def score(scores: np.ndarray, data, threshold) -> dict:
    """Top-10 metrics (and the MAP that divides by all relevant items, for the anchor)."""
    res = ranking_metrics(scores, data.train, data.test, n=10, threshold=threshold)
    by_rel = ranking_metrics(scores, data.train, data.test, n=10, threshold=threshold,
                             ap_normaliser="relevant")
    return {**res, "map_by_relevant@10": by_rel["map@10"]}


def run_split(data, threshold, args, rank_cfg: dict) -> dict[str, dict]:
    """Every model on one split: {row name: metrics + train_s (+ rmse)}."""
    tr = data.train
    nu, ni = data.n_users, data.n_items
    out: dict[str, dict] = {}

    def report(name: str, scores: np.ndarray, seconds: float, **extra) -> None:
        out[name] = {**score(scores, data, threshold), "train_s": round(seconds, 1), **extra}
        cells = "  ".join(f"{k}={out[name][k]:.4f}" for k in METRICS)
        more = "  ".join(f"{k}={v}" for k, v in extra.items())
        print(f"{data.split:14s} {name:26s} {cells}  train_s={seconds:.1f} {more}", flush=True)

    def timed(fn):
        t = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - t

    if "popularity" in args.models:
        m, s = timed(lambda: Popularity().fit(tr.users, tr.items, tr.ratings, nu, ni))
        report("popularity", m.predict_all(), s)
    if "item-knn" in args.models:
        m, s = timed(lambda: CosineItemKNN(args.knn_k).fit(tr.users, tr.items, nu, ni))
        report(f"item-kNN top-N (k={args.knn_k})", m.predict_all(), s)
    if "ease" in args.models:
        m, s = timed(lambda: EASE(args.ease_lambda).fit(tr.users, tr.items, nu, ni))
        report(f"EASE (lambda={args.ease_lambda:g})", m.predict_all(), s)
    if "rank-rbm" in args.models:
        inter = Interactions.from_movielens(data)
        (m, _), s = timed(lambda: rank_rbm.fit_rank_rbm(inter, rank_cfg))
        for how in rank_rbm.PREDICTIONS:
            tag = " (shipped)" if how == rank_cfg.get("prediction", "mean-field") else ""
            report(f"rank-RBM {how}{tag}", m.scores_index(np.arange(nu), how), s)
    rating_models = []
    if "cf-rbm" in args.models:
        o = rank_config(CF_CONFIG)
        name = "CF-RBM by rating" + (" (conditional)" if o.get("conditional") else "")
        rating_models.append((name, lambda: fit_movielens(data, o)[0]))
    if "biased-mf" in args.models:
        rating_models.append(("biased MF by rating", lambda: MatrixFactorization(
            20, 0.15, epochs=15, solver="als").fit(tr.users, tr.items, tr.ratings, nu, ni)))
    if "item-knn-rating" in args.models:
        rating_models.append(("item-kNN by rating", lambda: ItemKNN().fit(
            tr.users, tr.items, tr.ratings, nu, ni)))
    for name, fit in rating_models:
        m, s = timed(fit)
        rmse = evaluate_model(m, data.test)["rmse"]
        report(name, score_matrix(m, nu, ni), s, rmse=rmse)
    return out


def table(per_split: dict[str, dict[str, dict]], title: str, anchor: bool = False) -> None:
    """Mean +/- std over the splits, one row per model, as a Markdown table."""
    splits = list(per_split)
    names = list(per_split[splits[0]])
    keys = [*METRICS, *(["map_by_relevant@10"] if anchor else []), "train_s"]
    if any("rmse" in r for s in per_split.values() for r in s.values()):
        keys.append("rmse")
    print(f"\n{title}\n")
    print("| model | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name in names:
        cells = []
        for k in keys:
            vals = [per_split[s][name][k] for s in splits if k in per_split[s][name]]
            if not vals:
                cells.append("")
                continue
            mean, std = summarize(vals)
            fmt = "{:.1f}" if k == "train_s" else "{:.4f}"
            cells.append(fmt.format(mean) + (f" ± {fmt.format(std)}" if len(vals) > 1 else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")
    if anchor:
        print("| recommenders quick-start RBM (their published run) | "
              + " | ".join(f"{ANCHOR[k]:.4f}" if k in ANCHOR else "" for k in keys) + " |")


def validate(args) -> None:
    """Settings sweep on a validation split of u1.base (no test file is read)."""
    data = load_movielens("ml-100k", args.data_dir, "u1")
    train, val = data.train.holdout(0.2, seed=0)
    data = dataclasses.replace(data, train=train, test=val, split="u1.base-val")
    tr, nu, ni = data.train, data.n_users, data.n_items
    print(f"validation split of u1.base: {len(train)} training, {len(val)} held-out ratings "
          "(>= 4 relevant)\n", flush=True)
    rows = []
    if not args.grid:
        pop = Popularity().fit(tr.users, tr.items, tr.ratings, nu, ni)
        rows.append(("popularity", score(pop.predict_all(), data, 4.0)))
        for lam in (50, 100, 200, 400, 800, 1600):
            m = EASE(lam).fit(tr.users, tr.items, nu, ni)
            rows.append((f"EASE lambda={lam}", score(m.predict_all(), data, 4.0)))
        for k in (20, 50, 100, 200, None):
            m = CosineItemKNN(k).fit(tr.users, tr.items, nu, ni)
            rows.append((f"item-kNN top-N k={k}", score(m.predict_all(), data, 4.0)))
        for name, res in rows:
            print(f"{name:40s} " + "  ".join(f"{k}={res[k]:.4f}" for k in METRICS), flush=True)
    keys = [g.split("=", 1)[0] for g in args.grid]
    values = [[_parse(v) for v in g.split("=", 1)[1].split(",")] for g in args.grid]
    inter = Interactions.from_movielens(data)
    for combo in itertools.product(*values) if args.grid else [()]:
        cfg = rank_config(args.config, **dict(zip(keys, combo, strict=True)))
        t = time.perf_counter()
        model, _ = rank_rbm.fit_rank_rbm(inter, cfg)
        seconds = time.perf_counter() - t
        label = " ".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True)) or "shipped"
        for how in args.predictions:
            res = score(model.scores_index(np.arange(nu), how), data, 4.0)
            print(f"rank-RBM {label} [{how}] {seconds:.1f}s  "
                  + "  ".join(f"{k}={res[k]:.4f}" for k in METRICS), flush=True)


def _parse(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--protocols", nargs="+", default=["folds", "stratified"],
                   choices=("folds", "stratified"))
    p.add_argument("--folds", nargs="+", default=["1", "2", "3", "4", "5"])
    p.add_argument("--split-seed", type=int, default=42, help="stratified split's seed")
    p.add_argument("--skip", nargs="*", default=[], choices=MODELS, help="models to leave out")
    p.add_argument("--config", type=Path, default=RANK_CONFIG, help="the rank-RBM's TOML")
    p.add_argument("--ease-lambda", type=float, default=EASE_LAMBDA)
    p.add_argument("--knn-k", type=int, default=KNN_K)
    p.add_argument("--validate", action="store_true",
                   help="sweep settings on a validation split of u1.base instead")
    p.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2",
                   help="with --validate: rank-RBM config values to try (Cartesian product)")
    p.add_argument("--predictions", nargs="+", default=list(rank_rbm.PREDICTIONS),
                   choices=rank_rbm.PREDICTIONS, help="with --validate: how to score")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write every number here")
    args = p.parse_args()
    args.models = [m for m in MODELS if m not in args.skip]
    torch.set_num_threads(args.threads)
    if args.validate:
        validate(args)
        return
    rank_cfg = rank_config(args.config)
    start = time.perf_counter()
    results: dict[str, dict] = {}
    if "folds" in args.protocols:
        results["folds"] = {f: run_split(load_movielens("ml-100k", args.data_dir, f), 4.0, args,
                                         rank_cfg) for f in args.folds}
    if "stratified" in args.protocols:
        data = load_movielens("ml-100k", args.data_dir, f"stratified-{args.split_seed}")
        results["stratified"] = {data.split: run_split(data, None, args, rank_cfg)}
    wall = time.perf_counter() - start
    print(f"\nml-100k, {args.threads} thread(s), total {wall:.0f} s; rank-RBM config "
          f"{args.config.name}: " + json.dumps({k: v for k, v in tomllib.loads(
              args.config.read_text()).items() if k not in ("out",)}))
    if "folds" in results:
        table(results["folds"], f"Protocol folds: u{'/u'.join(args.folds)} test ratings >= 4 "
              "relevant, training items not ranked; mean ± std over folds")
    if "stratified" in results:
        table(results["stratified"], "Protocol stratified (recommenders quick-start): 25 % of "
              f"each user's ratings held out (seed {args.split_seed}), every held-out item "
              "relevant", anchor=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "wall_s": wall}, indent=1))


if __name__ == "__main__":
    main()
