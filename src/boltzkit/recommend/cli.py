"""``boltzkit recommend-train``, ``recommend`` and ``recommend-eval`` subcommands."""

from __future__ import annotations

import argparse
import json
import time

MODEL_DEFAULTS = {
    "cf-rbm": {"mode": "softmax", "n_hidden": 100, "epochs": 20, "batch_size": 20, "lr": 0.05,
               "momentum": 0.9, "weight_decay": 0.001, "cd_schedule": "0:1,10:3,16:5"},
    "like-rbm": {"mode": "like", "n_hidden": 100, "epochs": 10, "batch_size": 100, "lr": 0.1,
                 "momentum": 0.5, "weight_decay": 0.0, "cd_schedule": "0:10"},
}


def parse_schedule(text: str) -> list[list[int]]:
    """``"0:1,15:3"`` -> [[0, 1], [15, 3]] (epoch: CD steps)."""
    from ..errors import ConfigError

    try:
        return [[int(a), int(b)] for a, b in (p.split(":") for p in text.split(",") if p)]
    except ValueError:
        raise ConfigError(f"--cd-schedule {text!r} is not EPOCH:STEPS[,EPOCH:STEPS...], "
                          "e.g. 0:1,15:3,24:5") from None


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
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--out", default=None, help="model file (.safetensors)")
    t.add_argument("--quiet", action="store_true")

    r = sub.add_parser("recommend", help="top-N unrated movies for a user")
    r.add_argument("model")
    r.add_argument("--user", type=int, required=True, help="MovieLens user id")
    r.add_argument("--top", type=int, default=10)
    r.add_argument("--json", action="store_true")

    e = sub.add_parser("recommend-eval", help="RMSE/MAE (or like error) on held-out ratings")
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
    model = args.model or file_opts.get("model", "cf-rbm")
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
    if isinstance(opts["cd_schedule"], str):
        opts["cd_schedule"] = parse_schedule(opts["cd_schedule"])
    opts["fold"] = str(opts["fold"])
    return opts


def cmd_recommend_train(args: argparse.Namespace) -> int:
    from ..data.movielens import load_movielens
    from ..io import save_model
    from .cf_rbm import CFRBM
    from .evaluate import evaluate_model

    o = _options(args)
    data = load_movielens(o["dataset"], o["data_dir"], o["fold"], seed=o["seed"])
    tr = data.train
    model = CFRBM(data.n_users, data.n_items, n_hidden=o["n_hidden"], scale=data.scale,
                  mode=o["mode"], item_based=bool(o["item_based"]), seed=o["seed"],
                  user_ids=data.user_ids, item_ids=data.item_ids, titles=data.titles,
                  info={"dataset": data.name, "fold": data.split, "model": o["model"]})
    start = time.perf_counter()
    model.fit(tr.users, tr.items, tr.ratings, epochs=o["epochs"], batch_size=o["batch_size"],
              lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"],
              cd_schedule=o["cd_schedule"], seed=o["seed"], verbose=not args.quiet)
    seconds = time.perf_counter() - start
    save_model(model, o["out"])
    res = evaluate_model(model, data.test)
    print(json.dumps({"out": str(o["out"]), "train_seconds": round(seconds, 1), **res}))
    return 0


def _load(path):
    from ..errors import ModelFileError
    from ..io import load_model
    from .cf_rbm import CFRBM

    model = load_model(path)
    if not isinstance(model, CFRBM):
        raise ModelFileError(f"{path} is not a recommender model: train one with "
                             "boltzkit recommend-train")
    return model


def cmd_recommend(args: argparse.Namespace) -> int:
    model = _load(args.model)
    recs = model.recommend(args.user, top=args.top)
    if args.json:
        print(json.dumps(recs))
        return 0
    what = "p(like)" if model.mode == "like" else "predicted"
    print(f"top {len(recs)} for user {args.user} ({what}):")
    for n, rec in enumerate(recs, 1):
        print(f"{n:3d}. {rec['prediction']:.3f}  {rec['title']}  (item {rec['item']})")
    return 0


def cmd_recommend_eval(args: argparse.Namespace) -> int:
    from ..data.movielens import load_movielens
    from .evaluate import evaluate_model

    model = _load(args.model)
    info = model.info
    fold = args.fold or info.get("fold", "1")
    data = load_movielens(info.get("dataset", "ml-100k"), args.data_dir, fold)
    if data.n_users != model.n_users or data.n_items != model.n_items:
        from ..errors import DataError

        raise DataError(f"the data ({data.n_users} users, {data.n_items} items) do not match the "
                        f"model ({model.n_users}, {model.n_items}): use the model's data set")
    res = evaluate_model(model, data.test)
    if fold != info.get("fold"):
        res["warning"] = (f"model was trained on {info.get('fold')}; test ratings of {fold} may "
                          "overlap its training data")
    print(json.dumps(res) if args.json else "  ".join(f"{k}={v}" for k, v in res.items()))
    return 0


COMMANDS = {"recommend-train": cmd_recommend_train, "recommend": cmd_recommend,
            "recommend-eval": cmd_recommend_eval}
