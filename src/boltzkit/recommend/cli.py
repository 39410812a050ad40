"""``boltzkit recommend-train``, ``recommend`` and ``recommend-eval`` subcommands."""

from __future__ import annotations

import argparse
import json
import time

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
           "evaluate_recommender_command", "options_from_file"]


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
        file_opts = {_ALIASES.get(k, k): v for k, v in file_opts.items()}
    model = args.model or file_opts.get("model", "cf-rbm")
    if model == "cf-rbm" and file_opts.get("mode") == "like" and not args.model:
        model = "like-rbm"
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


def is_recommender(model) -> bool:
    """Whether ``model`` is a recommender (a :class:`~.cf_rbm.CFRBM`)."""
    from .cf_rbm import CFRBM

    return isinstance(model, CFRBM)


def _model_data(model, dataset: str | None, data_dir, fold: str | None):
    """The MovieLens split to score ``model`` on (default: the one it was trained on)."""
    from ..data.movielens import load_movielens
    from ..errors import DataError

    info = model.info
    data = load_movielens(dataset or info.get("dataset", "ml-100k"), data_dir,
                          fold or info.get("fold", "1"))
    if data.n_users != model.n_users or data.n_items != model.n_items:
        raise DataError(f"the data ({data.n_users} users, {data.n_items} items) do not match the "
                        f"model ({model.n_users}, {model.n_items}): use the model's data set")
    return data


def _evaluate(model, data, metrics) -> dict:
    from .evaluate import evaluate_recommender

    trained_on = model.info.get("fold")
    if model.conditional and data.split != trained_on:
        from ..errors import DataError

        raise DataError(f"this conditional model learned from the test pairs of {trained_on}; "
                        f"it cannot be scored on {data.split}: train one on that fold")
    res = evaluate_recommender(model, data.train, data.test, metrics)
    if trained_on is not None and data.split != trained_on:
        res["warning"] = (f"model was trained on {trained_on}; test ratings of {data.split} may "
                          "overlap its training data")
    return res


def _default_metrics(model) -> list[str]:
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
