"""``boltzkit recommend``: top-N lists from a recommender, and ``boltzkit evaluate`` for them.

Recommenders train like every kind (``boltzkit train --model cf-rbm`` or ``rank-rbm``)
and are scored by ``boltzkit evaluate MODEL``; this module adds the lists.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

__all__ = ["add_parsers", "COMMANDS", "evaluate_recommender_command", "is_recommender",
           "top_lists", "write_lists_csv"]


def add_parsers(sub) -> None:
    """Register the recommendation subcommands on the main parser's subparsers."""
    from .parser import positive_int

    r = sub.add_parser("recommend", help="top-N list for a user, or for every user (CSV)",
                       description="Rank items for a user with a ranking model (rank-rbm: "
                       "p(the user picks the item)) or a rating model (cf-rbm: by predicted "
                       "rating). Items the user has seen are left out unless --include-seen.")
    r.add_argument("model", metavar="MODEL")
    who = r.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, help="user id (as in the training file)")
    who.add_argument("--all-users", action="store_true",
                     help="every user's list, written to --out as user_id,rank,item_id,score")
    r.add_argument("--top", type=positive_int, default=10,
                   help="length of each list (default: 10)")
    r.add_argument("--include-seen", action="store_true",
                   help="also rank the items the user interacted with in training")
    r.add_argument("--explain", action="store_true",
                   help="rank-rbm: show the seen items most like each recommendation")
    r.add_argument("--ratings", default=None, metavar="RATING_MODEL",
                   help="a cf-rbm file: show its predicted rating beside each title")
    r.add_argument("--out", default=None, help="with --all-users: the CSV file to write")
    r.add_argument("--json", action="store_true", help="print JSON")


def _load(path):
    from ..errors import ModelFileError
    from ..io import load_model

    model = load_model(path)
    if not is_recommender(model):
        raise ModelFileError(f"{path} is not a recommender model: train one with "
                             "boltzkit train --model rank-rbm (top-N lists) or "
                             "--model cf-rbm (ratings)")
    return model


def is_recommender(model) -> bool:
    """Whether ``model`` is a recommender (a :class:`~.cf_rbm.CFRBM` or
    :class:`~.rank_rbm.RankRBM`)."""
    from ..recommend.cf_rbm import CFRBM
    from ..recommend.rank_rbm import RankRBM

    return isinstance(model, CFRBM | RankRBM)


def _is_ranker(model) -> bool:
    from ..recommend.rank_rbm import RankRBM

    return isinstance(model, RankRBM)


def top_lists(model, users, top: int, include_seen: bool = False):
    """(items, scores) top-``top`` lists, (U, top) each, of user indices for any recommender.

    A rank-rbm ranks by p(pick) (popularity for users without interactions); a rating
    model by predicted rating.  Seen items are left out unless ``include_seen``; empty
    slots are -1 / NaN.
    """
    from ..recommend.topn import pair_matrix, top_n

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
    from ..recommend.evaluate import evaluate_recommender

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
    data_dir = args.data_dir
    if data_dir is None:  # where the model's own data set was, as for every kind
        from ..io import read_header

        data_dir = (read_header(args.model_path).get("train_config") or {}).get("data_dir")
    data = _model_data(model, dataset, data_dir, getattr(args, "fold", None))
    return {**_evaluate(model, data, metrics), "model": str(args.model_path),
            "dataset": data.name, "fold": data.split}


COMMANDS = {"recommend": cmd_recommend}
