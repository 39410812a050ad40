"""``boltzkit recommend-train``, ``recommend`` and ``recommend-eval`` subcommands."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .cf_rbm import parse_schedule

_COMMON = {"conditional": False, "prediction": "mean-field", "lr_schedule": "constant",
           "lr_final_factor": 0.1, "average_from": 0}
MODEL_DEFAULTS = {
    # chosen on a validation split of u1.base (see examples/configs/cf-rbm-ml100k.toml)
    "cf-rbm": {**_COMMON, "mode": "softmax", "n_hidden": 200, "epochs": 60, "batch_size": 20,
               "lr": 0.03, "momentum": 0.9, "weight_decay": 0.005, "cd_schedule": "0:1",
               "lr_schedule": "linear", "lr_final_factor": 0.1, "average_from": 30},
    "like-rbm": {**_COMMON, "mode": "like", "n_hidden": 100, "epochs": 10, "batch_size": 100,
                 "lr": 0.1, "momentum": 0.5, "weight_decay": 0.0, "cd_schedule": "0:10"},
}
# ``boltzkit train`` config keys that mean the same here (so one TOML serves both commands).
_ALIASES = {"cf_mode": "mode", "k_schedule": "cd_schedule"}

__all__ = ["MODEL_DEFAULTS", "add_parsers", "parse_schedule", "COMMANDS",
           "evaluate_recommender_command", "is_recommender", "options_from_file", "top_lists",
           "write_lists_csv"]


def add_parsers(sub) -> None:
    """Register the recommendation subcommands on the main parser's subparsers."""
    t = sub.add_parser("recommend-train", help="train a recommender RBM on MovieLens")
    t.add_argument("--config", default=None, help="TOML file of options (flags override it)")
    t.add_argument("--model", choices=sorted(MODEL_DEFAULTS), default=None)
    t.add_argument("--dataset", default=None, help="ml-100k | ml-1m | ml-latest-small")
    t.add_argument("--data-dir", default=None, help="data directory (else $BOLTZKIT_DATA)")
    t.add_argument("--fold", default=None, help="ml-100k: 1..5, u1..u5, ua, ub; others 1..5")
    t.add_argument("--item-based", action="store_true", default=None,
                   help="I-RBM: items are cases, users the visible groups")
    t.add_argument("--n-hidden", type=int, default=None)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--momentum", type=float, default=None)
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--cd-schedule", default=None, help="EPOCH:STEPS,... e.g. 0:1,15:3,24:5")
    t.add_argument("--lr-schedule", default=None,
                   choices=("constant", "linear", "exponential", "cosine"))
    t.add_argument("--lr-final-factor", type=float, default=None)
    t.add_argument("--conditional", action="store_true", default=None,
                   help="condition the hidden units on which movies were rated (test pairs "
                        "included), the paper's conditional RBM")
    t.add_argument("--prediction", default=None, choices=("mean-field", "exact"))
    t.add_argument("--average-from", type=int, default=None,
                   help="end with the mean of the parameters after each epoch from this one")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--out", default=None, help="model file (.safetensors)")
    t.add_argument("--quiet", action="store_true")

    r = sub.add_parser("recommend", help="top-N list for a user, or for every user (CSV)",
                       description="Rank items for a user with a ranking model (rank-rbm: "
                       "p(the user picks the item)) or a rating model (cf-rbm: by predicted "
                       "rating). Items the user has seen are left out unless --include-seen.")
    r.add_argument("model")
    who = r.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, help="user id (as in the training file)")
    who.add_argument("--all-users", action="store_true",
                     help="every user's list, written to --out as user_id,rank,item_id,score")
    r.add_argument("--top", type=int, default=10)
    r.add_argument("--include-seen", action="store_true",
                   help="also rank the items the user interacted with in training")
    r.add_argument("--explain", action="store_true",
                   help="rank-rbm: show the seen items most like each recommendation")
    r.add_argument("--ratings", default=None, metavar="RATING_MODEL",
                   help="a cf-rbm file: show its predicted rating beside each title")
    r.add_argument("--out", default=None, help="with --all-users: the CSV file to write")
    r.add_argument("--json", action="store_true")

    e = sub.add_parser("recommend-eval", help="RMSE/MAE (or like error) on held-out ratings; "
                       "a rank-rbm: precision, recall, NDCG, MAP, coverage @10")
    e.add_argument("model")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--fold", default=None, help="default: the fold the model was trained on")
    e.add_argument("--json", action="store_true")


def _options(args: argparse.Namespace) -> dict:
    import tomllib
    from pathlib import Path

    from ..errors import ConfigError

    opts: dict = {"model": "cf-rbm", "dataset": "ml-100k", "data_dir": None, "fold": "1",
                  "item_based": False, "seed": 0, "out": "recommender.safetensors"}
    file_opts = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        with path.open("rb") as f:
            file_opts = {k.replace("-", "_"): v for k, v in tomllib.load(f).items()}
        file_opts = {_ALIASES.get(k, k): v for k, v in file_opts.items()}
    model = args.model or file_opts.get("model", "cf-rbm")
    if model == "cf-rbm" and file_opts.get("mode") == "like" and not args.model:
        model = "like-rbm"
    if model == "rank-rbm":
        raise ConfigError("rank-rbm trains through boltzkit train: boltzkit train --config "
                          f"{args.config or 'examples/configs/rank-rbm-ml100k.toml'} "
                          "--data-dir DIR")
    if model not in MODEL_DEFAULTS:
        raise ConfigError(f"unknown model {model!r}: choose one of {sorted(MODEL_DEFAULTS)}")
    opts.update(MODEL_DEFAULTS[model])
    known = set(opts)
    unknown = sorted(set(file_opts) - known)
    if unknown:
        raise ConfigError(f"unknown keys {unknown} in {args.config}: known keys are "
                          f"{sorted(known)}")
    opts.update(file_opts)
    for key in known:
        value = getattr(args, key, None)
        if value is not None:
            opts[key] = value
    opts["model"] = model
    opts["cd_schedule"] = parse_schedule(opts["cd_schedule"])
    opts["fold"] = str(opts["fold"])
    return opts


def options_from_file(path: str | None = None, model: str | None = None, **overrides) -> dict:
    """Resolved recommend-train options from a TOML config (as ``--config`` reads it)."""
    args = argparse.Namespace(config=path, model=model, **overrides)
    return _options(args)


def cmd_recommend_train(args: argparse.Namespace) -> int:
    from ..data.movielens import load_movielens
    from ..io import save_model
    from .cf_rbm import fit_movielens
    from .evaluate import evaluate_model

    o = _options(args)
    data = load_movielens(o["dataset"], o["data_dir"], o["fold"], seed=o["seed"])
    start = time.perf_counter()
    model, _ = fit_movielens(data, o, verbose=not args.quiet)
    seconds = time.perf_counter() - start
    save_model(model, o["out"])
    res = evaluate_model(model, data.test)
    print(json.dumps({"out": str(o["out"]), "train_seconds": round(seconds, 1), **res}))
    return 0


def _load(path):
    from ..errors import ModelFileError
    from ..io import load_model

    model = load_model(path)
    if not is_recommender(model):
        raise ModelFileError(f"{path} is not a recommender model: train one with "
                             "boltzkit train --model rank-rbm (top-N lists) or "
                             "boltzkit recommend-train (ratings)")
    return model


def is_recommender(model) -> bool:
    """Whether ``model`` is a recommender (a :class:`~.cf_rbm.CFRBM` or
    :class:`~.rank_rbm.RankRBM`)."""
    from .cf_rbm import CFRBM
    from .rank_rbm import RankRBM

    return isinstance(model, CFRBM | RankRBM)


def _is_ranker(model) -> bool:
    from .rank_rbm import RankRBM

    return isinstance(model, RankRBM)


def top_lists(model, users, top: int, include_seen: bool = False):
    """(items, scores) top-``top`` lists, (U, top) each, of user indices for any recommender.

    A rank-rbm ranks by p(pick) (popularity for users without interactions); a rating
    model by predicted rating.  Seen items are left out unless ``include_seen``; empty
    slots are -1 / NaN.
    """
    from .topn import pair_matrix, top_n

    users = np.asarray(users, np.int64)
    if _is_ranker(model):
        items, scores, _ = model.recommend_index(users, top, include_seen)
        return items, scores
    if not isinstance(top, int) or top <= 0:
        from ..errors import ConfigError

        raise ConfigError(f"top must be a positive integer, got {top!r}")
    t = model.train_ratings.cpu().numpy()
    seen = pair_matrix(t[:, 0], t[:, 1], model.n_users, model.n_items)[users]
    scores = np.concatenate([model.predict_index(np.repeat(chunk, model.n_items),
                                                 np.tile(np.arange(model.n_items), len(chunk)))
                             .reshape(len(chunk), model.n_items)
                             for chunk in np.array_split(users, max(1, len(users) // 200))])
    items = top_n(scores, top, exclude=None if include_seen else seen)
    picked = np.take_along_axis(scores, np.maximum(items, 0), 1).astype(np.float64)
    picked[items < 0] = np.nan
    return items, picked


def write_lists_csv(model, path, top: int = 10, include_seen: bool = False) -> int:
    """Every user's top-``top`` list as CSV ``user_id,rank,item_id,score`` (a header line,
    then rank 1..top per user, raw ids as in the training file); returns the row count."""
    from ..io import atomic_write

    uids, iids = model.user_ids.cpu().numpy(), model.item_ids.cpu().numpy()
    rows = ["user_id,rank,item_id,score"]
    for lo in range(0, model.n_users, 1024):  # bounded memory: 1024 users' scores at a time
        users = np.arange(lo, min(lo + 1024, model.n_users))
        items, scores = top_lists(model, users, top, include_seen)
        for u, its, scs in zip(users, items, scores, strict=True):
            for rank, (i, sc) in enumerate(zip(its, scs, strict=True), start=1):
                if i >= 0:
                    rows.append(f"{int(uids[u])},{rank},{int(iids[i])},{sc:.6g}")
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(rows) + "\n"))
    return len(rows) - 1


def cmd_recommend(args: argparse.Namespace) -> int:
    import sys

    from ..errors import ConfigError

    model = _load(args.model)
    if args.explain and not _is_ranker(model):
        raise ConfigError("--explain needs a ranking model (rank-rbm)")
    if args.all_users:
        if not args.out:
            raise ConfigError("--all-users writes a CSV file: add --out recs.csv")
        if args.ratings or args.explain:
            raise ConfigError("--ratings and --explain are for one user's list (--user)")
        n = write_lists_csv(model, args.out, args.top, args.include_seen)
        print(json.dumps({"out": str(args.out), "users": model.n_users, "rows": n}))
        return 0
    if args.out:
        raise ConfigError("--out is for --all-users; one user's list goes to the screen")
    if _is_ranker(model):
        recs = model.recommend(args.user, top=args.top, include_seen=args.include_seen,
                               explain=args.explain)
    else:
        items, scores = top_lists(model, model._user_index(args.user), args.top,
                                  args.include_seen)
        ids = model.item_ids.cpu().numpy()
        recs = [{"item": int(ids[i]), "title": model.title(int(i)), "prediction": float(sc)}
                for i, sc in zip(items[0], scores[0], strict=True) if i >= 0]
    if args.ratings:
        rater = _load(args.ratings)
        if _is_ranker(rater):
            raise ConfigError(f"--ratings wants a rating model (cf-rbm); {args.ratings} is a "
                              "rank-rbm")
        if recs:
            pred = rater.predict([args.user] * len(recs), [r["item"] for r in recs])
            for r, p in zip(recs, pred, strict=True):
                r["predicted_rating"] = round(float(p), 3)
    if args.json:
        print(json.dumps(recs))
        return 0
    if recs and recs[0].get("fallback"):
        print(f"user {args.user} has no interactions in the training data: showing the most "
              "popular items", file=sys.stderr)
    if _is_ranker(model):
        what = "p(pick)"
    else:
        what = "p(like)" if model.mode == "like" else "predicted"
    print(f"top {len(recs)} for user {args.user} ({what}):")
    for n, rec in enumerate(recs, 1):
        score = rec.get("score", rec.get("prediction"))
        extra = f"  [rating {rec['predicted_rating']:.2f}]" if "predicted_rating" in rec else ""
        seen = "  (seen)" if rec.get("seen") else ""
        print(f"{n:3d}. {score:.3f}  {rec['title']}  (item {rec['item']}){extra}{seen}")
        for b in rec.get("because", []):
            print(f"       like {b['title']} (item {b['item']}, similarity {b['similarity']})")
    return 0


def _model_data(model, dataset: str | None, data_dir, fold: str | None):
    """The MovieLens split to score ``model`` on (default: the one it was trained on)."""
    from ..data.movielens import load_movielens
    from ..errors import DataError

    info = model.info
    if "source" in info and dataset is None:
        from ..errors import ConfigError

        raise ConfigError(f"this model was trained on {info['source']}, not a MovieLens split: "
                          "write its lists with boltzkit recommend MODEL --all-users --out "
                          "recs.csv and score them against your held-out interactions")
    data = load_movielens(dataset or info.get("dataset", "ml-100k"), data_dir,
                          fold or info.get("fold", "1"))
    if data.n_users != model.n_users or data.n_items != model.n_items:
        raise DataError(f"the data ({data.n_users} users, {data.n_items} items) do not match the "
                        f"model ({model.n_users}, {model.n_items}): use the model's data set")
    return data


def _evaluate(model, data, metrics) -> dict:
    from .evaluate import evaluate_recommender

    trained_on = model.info.get("fold")
    if getattr(model, "conditional", False) and data.split != trained_on:
        from ..errors import DataError

        raise DataError(f"this conditional model learned from the test pairs of {trained_on}; "
                        f"it cannot be scored on {data.split}: train one on that fold")
    # the quick-start protocol (a stratified split) counts every held-out item as relevant
    threshold = None if data.split.startswith("stratified") else 4.0
    res = evaluate_recommender(model, data.train, data.test, metrics, threshold=threshold)
    if trained_on is not None and data.split != trained_on:
        res["warning"] = (f"model was trained on {trained_on}; test ratings of {data.split} may "
                          "overlap its training data")
    return res


def _default_metrics(model) -> list[str]:
    if _is_ranker(model):
        return ["precision", "recall", "ndcg", "map", "coverage"]
    return ["like_error"] if model.mode == "like" else ["rmse", "mae"]


def cmd_recommend_eval(args: argparse.Namespace) -> int:
    model = _load(args.model)
    data = _model_data(model, None, args.data_dir, args.fold)
    res = _evaluate(model, data, _default_metrics(model))
    print(json.dumps(res) if args.json else "  ".join(f"{k}={v}" for k, v in res.items()))
    return 0


#: ``boltzkit evaluate``'s default --metrics (for plain RBMs); recommenders then get theirs.
_RBM_DEFAULT_METRICS = "loglik,pl,recon"


def evaluate_recommender_command(model, args: argparse.Namespace) -> dict | None:
    """``boltzkit evaluate MODEL`` for a recommender (None when ``model`` is not one).

    ``--dataset`` (default: the model's), ``--fold`` (default: the model's), ``--metrics``
    from rmse, mae, like_error, precision, recall, ndcg (@10; test ratings >= 4 relevant).
    """
    from ..data.movielens import MOVIELENS_DATASETS
    from ..errors import ConfigError

    if not is_recommender(model):
        return None
    dataset = getattr(args, "dataset", None)
    if dataset == "digits":  # the evaluate parser's default: use the model's data set
        dataset = None
    if dataset is not None and dataset not in MOVIELENS_DATASETS:
        raise ConfigError(f"{args.model_path} is a recommender: evaluate it on a MovieLens "
                          f"data set {list(MOVIELENS_DATASETS)}, not {dataset!r}")
    if getattr(args, "split", None) not in (None, "test"):
        raise ConfigError("recommenders are evaluated on a fold's test ratings: drop --split")
    text = args.metrics or _RBM_DEFAULT_METRICS
    metrics = (_default_metrics(model) if text == _RBM_DEFAULT_METRICS
               else [m for m in text.split(",") if m.strip()])
    data = _model_data(model, dataset, args.data_dir, getattr(args, "fold", None))
    return {**_evaluate(model, data, metrics), "model": str(args.model_path),
            "dataset": data.name, "fold": data.split}


COMMANDS = {"recommend-train": cmd_recommend_train, "recommend": cmd_recommend,
            "recommend-eval": cmd_recommend_eval}
