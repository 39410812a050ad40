"""The ``boltzkit`` command line: train, evaluate, sample, reconstruct, score, info, demo.

Options resolve in this order: built-in defaults, then ``--config FILE.toml``,
then flags given on the command line.  The resolved training configuration is
saved beside the model (``MODEL.config.toml``) so ``train --config`` reruns it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

from .errors import BoltzkitError, ConfigError, DataError

log = logging.getLogger("boltzkit")

# Every training option, with its default.  TOML keys use these names (dashes or
# underscores); flags are the same names with dashes.
TRAIN_DEFAULTS: dict[str, Any] = {
    "model": "rbm",
    "dataset": "digits",
    "data_dir": None,
    "test_data": None,
    "binarize": "threshold",
    "limit": None,
    "visible": "bernoulli",
    "hidden": "bernoulli",
    "n_hidden": 64,
    "visible_std": 1.0,
    "learn_variance": False,
    "standardize": False,
    "std_floor": 0.05,
    "max_singular_value": None,
    "group_size": None,
    "method": "pcd",
    "k": 1,
    "chains": None,
    "n_temperatures": 10,
    "beta_min": 0.1,
    "beta_std": 0.5,
    "beta_autocorr": 0.9,
    "readout_steps": 0,
    "epochs": 10,
    "batch_size": 100,
    "lr": 0.05,
    "optimizer": "sgd",
    "momentum": 0.5,
    "weight_decay": 0.0,
    "lr_schedule": "constant",
    "lr_final_factor": 0.01,
    "average_from": 0,
    "sparsity_target": None,
    "sparsity_cost": 0.0,
    "centering": False,
    "objective": "ml",
    "critic": "knn",
    "critic_k": 5,
    "gamma": 0.1,
    "gamma_warmup": 0,
    "init_std": 0.01,
    "seed": 0,
    "device": "cpu",
    "threads": None,
    "out": "model.safetensors",
    "checkpoint_dir": None,
    "checkpoint_every": 1,
    "monitor": None,
    "monitor_every": 5,
    "monitor_ais_steps": 1000,
    "monitor_ais_chains": 100,
    "plots": False,
    "tensorboard": None,
}

# Settings that define a run: resuming with any of them changed is refused.
RUN_SIGNATURE = ("model", "dataset", "binarize", "limit", "visible", "hidden", "n_hidden",
                 "visible_std", "learn_variance", "standardize", "std_floor",
                 "max_singular_value", "group_size", "method", "k", "chains",
                 "n_temperatures", "beta_min", "batch_size", "lr", "optimizer", "momentum",
                 "weight_decay", "lr_schedule", "lr_final_factor", "average_from",
                 "sparsity_target", "sparsity_cost", "centering", "seed", "beta_std",
                 "beta_autocorr", "readout_steps", "objective", "critic", "critic_k", "gamma",
                 "gamma_warmup")

_CHOICES = {"binarize": ("threshold", "stochastic", "none"),
            "method": ("cd", "pcd", "pt", "tds"),
            "optimizer": ("sgd", "adam"), "device": None,
            "lr_schedule": ("constant", "linear", "exponential", "cosine"),
            "objective": ("ml", "beam"), "critic": ("knn", "dwknn")}


# --------------------------------------------------------------------------- parser
def _model_choices() -> tuple[str, ...]:
    from .models import trainable_kinds

    return ("rbm", *trainable_kinds())


def _train_defaults() -> dict[str, Any]:
    """TRAIN_DEFAULTS plus the options declared by the other model kinds."""
    from .models import train_options

    extra = {k: spec[0] for k, spec in train_options().items() if k not in TRAIN_DEFAULTS}
    return {**TRAIN_DEFAULTS, **extra}


def _add_kind_options(p: argparse.ArgumentParser) -> None:
    """Flags for the options that other model kinds declare (``TRAIN_OPTIONS``)."""
    from .models import train_options

    for name, (default, help_text) in train_options().items():
        if name in TRAIN_DEFAULTS:
            continue
        help_text = help_text.replace("%", "%%")  # argparse formats help strings
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, dest=name, action="store_const", const=not default,
                           default=None, help=help_text)
        else:
            kind = type(default) if isinstance(default, int | float) else str
            p.add_argument(flag, dest=name, type=kind, default=None, help=help_text)


def _add_data_args(p: argparse.ArgumentParser, defaults: bool) -> None:
    d = (lambda v: v) if defaults else (lambda v: None)
    p.add_argument("--dataset", default=d("digits"),
                   help="digits | mnist | mog-1d | mog-ring8 | mog-grid25 | PATH (.npy/.npz/.csv)")
    p.add_argument("--data-dir", default=None, help="data directory (else $BOLTZKIT_DATA)")
    p.add_argument("--test-data", default=None, help="test file when --dataset is a PATH")
    p.add_argument("--binarize", default=d("threshold"), choices=_CHOICES["binarize"])
    p.add_argument("--limit", type=int, default=None, help="use only the first N samples")
    p.add_argument("--seed", type=int, default=d(0))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boltzkit", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model")
    t.add_argument("--config", help="TOML file with any of the options below")
    _add_data_args(t, defaults=False)
    t.add_argument("--model", choices=_model_choices(), default=None,
                   help="model kind (rbm, or one of boltzkit.models.KINDS)")
    t.add_argument("--visible", default=None, help="bernoulli|gaussian|relu|sigmoid|softmax")
    t.add_argument("--hidden", default=None, help="bernoulli|relu|gaussian|sigmoid|softmax")
    t.add_argument("--n-hidden", type=int, default=None)
    t.add_argument("--visible-std", type=float, default=None, help="std of Gaussian visibles")
    t.add_argument("--learn-variance", action="store_const", const=True, default=None)
    t.add_argument("--standardize", action="store_const", const=True, default=None,
                   help="gaussian visibles: standardise each feature with the training data's "
                        "mean and std (stored in the model file as 'standardizer')")
    t.add_argument("--std-floor", type=float, default=None,
                   help="with --standardize: features with a smaller std (e.g. constant "
                        "border pixels) are scaled by this instead (default 0.05)")
    t.add_argument("--max-singular-value", type=float, default=None,
                   help="after every step, scale the weights so their largest singular "
                        "value stays <= this (e.g. 0.99: keeps a Gaussian-ReLU RBM proper)")
    t.add_argument("--group-size", type=int, default=None, help="softmax group size K")
    t.add_argument("--method", choices=_CHOICES["method"], default=None)
    t.add_argument("--k", type=int, default=None, help="Gibbs steps per update")
    t.add_argument("--chains", type=int, default=None, help="persistent chains (default: batch)")
    t.add_argument("--n-temperatures", type=int, default=None, help="PT ladder size")
    t.add_argument("--beta-min", type=float, default=None, help="PT lowest inverse temperature")
    t.add_argument("--beta-std", type=float, default=None,
                   help="tds: std of each chain's inverse temperature (mean 1)")
    t.add_argument("--beta-autocorr", type=float, default=None,
                   help="tds: lag-1 autocorrelation of the inverse temperatures")
    t.add_argument("--readout-steps", type=int, default=None,
                   help="tds: beta = 1 Gibbs sweeps of each driven chain before its statistics "
                        "enter the gradient (0: the driven states themselves)")
    t.add_argument("--objective", choices=_CHOICES["objective"], default=None,
                   help="ml (likelihood) or beam (adversarial, Fisher et al. 2018)")
    t.add_argument("--critic", choices=_CHOICES["critic"], default=None, help="beam critic")
    t.add_argument("--critic-k", type=int, default=None, help="beam critic's neighbours")
    t.add_argument("--gamma", type=float, default=None,
                   help="beam: weight of the likelihood (1 - gamma on the critic)")
    t.add_argument("--gamma-warmup", type=int, default=None,
                   help="beam: epochs of pure likelihood before gamma applies")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--optimizer", choices=_CHOICES["optimizer"], default=None)
    t.add_argument("--momentum", type=float, default=None)
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--lr-schedule", choices=_CHOICES["lr_schedule"], default=None)
    t.add_argument("--lr-final-factor", type=float, default=None)
    t.add_argument("--average-from", type=int, default=None,
                   help="end with the mean of the parameters from this epoch on (Polyak "
                        "averaging: over every step; cf-rbm: over epochs; 0: off)")
    t.add_argument("--sparsity-target", type=float, default=None)
    t.add_argument("--sparsity-cost", type=float, default=None)
    t.add_argument("--centering", action="store_const", const=True, default=None)
    t.add_argument("--init-std", type=float, default=None)
    t.add_argument("--device", default=None, help="cpu | cuda | cuda:N")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--out", default=None, help="model file (.safetensors)")
    t.add_argument("--checkpoint-dir", default=None)
    t.add_argument("--checkpoint-every", type=int, default=None)
    t.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    t.add_argument("--monitor", default=None, help="'loglik': log-likelihood every N epochs")
    t.add_argument("--monitor-every", type=int, default=None)
    t.add_argument("--monitor-ais-steps", type=int, default=None)
    t.add_argument("--monitor-ais-chains", type=int, default=None)
    t.add_argument("--plots", action="store_const", const=True, default=None,
                   help="write weight mosaic, samples and training curves beside the model")
    t.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="also write the per-epoch history as TensorBoard scalars to DIR")
    t.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    _add_kind_options(t)

    e = sub.add_parser("evaluate", help="measure a model on a data set")
    e.add_argument("model_path", metavar="MODEL")
    _add_data_args(e, defaults=True)
    e.add_argument("--split", default="test", choices=("train", "test"))
    e.add_argument("--fold", default=None,
                   help="recommenders: MovieLens split, ml-100k 1..5, a, b (default: the "
                        "model's)")
    e.add_argument("--metrics", default=None,
                   help="comma list. RBMs: loglik, pl, recon, knn, modes, features (default "
                        "loglik,pl,recon); classifiers (drbm, fine-tuned dbn): error; dbm: "
                        "loglik (variational bound), features; dbn: features; recommenders: "
                        "rmse, mae, like_error, precision, recall, ndcg (@10)")
    e.add_argument("--method", default="auto", choices=("auto", "exact", "ais"))
    e.add_argument("--ais-chains", type=int, default=100)
    e.add_argument("--ais-steps", type=int, default=14500)
    e.add_argument("--ais-reverse", action="store_true",
                   help="also run reverse AIS from data: a second, bracketing estimate of log Z")
    e.add_argument("--exact-dtype", default="float64", choices=("float64", "float32"),
                   help="precision of an exact enumeration (float32: ~2x faster, ~1e-4 nats)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--json", action="store_true", help="print JSON")

    s = sub.add_parser("sample", help="draw samples by Gibbs sampling")
    s.add_argument("model_path", metavar="MODEL")
    s.add_argument("--n", type=int, default=100)
    s.add_argument("--steps", type=int, default=1000)
    s.add_argument("--beta", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="PNG of the samples")
    s.add_argument("--npy", default=None, help="write the samples as .npy")
    s.add_argument("--image-shape", default=None, help="e.g. 28x28 (default: square)")
    s.add_argument("--device", default="cpu")

    r = sub.add_parser("reconstruct", help="show reconstructions beside originals")
    r.add_argument("model_path", metavar="MODEL")
    _add_data_args(r, defaults=True)
    r.add_argument("--split", default="test", choices=("train", "test"))
    r.add_argument("--n", type=int, default=10)
    r.add_argument("--out", required=True, help="PNG path")
    r.add_argument("--image-shape", default=None)

    sc = sub.add_parser("score", help="per-sample free energies (anomaly scores)")
    sc.add_argument("model_path", metavar="MODEL")
    _add_data_args(sc, defaults=True)
    sc.add_argument("--split", default="test", choices=("train", "test"))
    sc.add_argument("--json", action="store_true")

    i = sub.add_parser("info", help="describe a model file")
    i.add_argument("model_path", metavar="MODEL")
    i.add_argument("--json", action="store_true")

    dl = sub.add_parser("download", help="fetch a public data set (needs internet; MD5-checked)")
    dl.add_argument("dataset", choices=["mnist", "ml-100k", "ml-1m", "ml-latest-small"])
    dl.add_argument("--data-dir", default=None,
                    help="where to put it (default: $BOLTZKIT_DATA)")
    dl.add_argument("--url", default=None,
                    help="MovieLens: the archive's URL (default: GroupLens'); "
                         "MNIST: a mirror folder's URL")
    dl.add_argument("--md5", default=None, help="MovieLens: the archive's expected MD5")
    dl.add_argument("--timeout", type=float, default=60.0)

    d = sub.add_parser("demo", help="offline demo on scikit-learn's 8x8 digits")
    d.add_argument("--out-dir", default="boltzkit-demo")
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    from .recommend.cli import add_parsers as _add_recommend_parsers
    _add_recommend_parsers(sub)
    return parser


# --------------------------------------------------------------------------- config
def _norm_key(key: str) -> str:
    return key.replace("-", "_")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config; keys may use dashes or underscores; unknown keys are errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):  # allow [train] / [model] tables
            flat.update({_norm_key(k): v for k, v in value.items()})
        else:
            flat[_norm_key(key)] = value
    known = _train_defaults()
    unknown = sorted(set(flat) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) {unknown}; valid options: "
                          f"{sorted(known)}")
    return flat


def resolve_train_config(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the TOML file, then the flags that were given."""
    cfg = _train_defaults()
    if args.config:
        cfg.update(load_config_file(args.config))
    for key in list(cfg):
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    for key, choices in {**_CHOICES, "model": _model_choices()}.items():
        if choices and cfg.get(key) not in choices:
            raise ConfigError(f"unknown {key} {cfg.get(key)!r}: choose one of {list(choices)}")
    return cfg


def _write_config(cfg: dict[str, Any], path: Path) -> None:
    import tomli_w

    from .io import atomic_write

    clean = {k: v for k, v in cfg.items() if v is not None}
    atomic_write(path, lambda tmp: Path(tmp).write_text(tomli_w.dumps(clean)))


# --------------------------------------------------------------------------- helpers
def _device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available: "
                          "use --device cpu")
    return dev


def _load_data(args_or_cfg, split: str):
    from .data import load_dataset

    get = (args_or_cfg.get if isinstance(args_or_cfg, dict)
           else lambda k, d=None: getattr(args_or_cfg, k, d))
    return load_dataset(get("dataset"), split=split, data_dir=get("data_dir"),
                        binarize=get("binarize"), seed=get("seed") or 0, limit=get("limit"),
                        test_path=get("test_data"))


def _image_shape(text: str | None, n: int) -> tuple[int, int] | None:
    if text:
        try:
            a, b = (int(x) for x in text.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--image-shape must look like 28x28, got {text!r}") from None
        if a * b != n:
            raise ConfigError(f"--image-shape {text} has {a * b} pixels, the model has {n}")
        return a, b
    side = math.isqrt(n)
    return (side, side) if side * side == n else None


def build_model(cfg: dict[str, Any], n_visible: int):
    """The model a training config describes."""
    from .rbm import RBM
    from .units import make_units

    vis_opts: dict[str, Any] = {}
    if cfg["visible"] == "gaussian":
        vis_opts = {"std": cfg["visible_std"], "learn_variance": bool(cfg["learn_variance"])}
    if cfg["visible"] == "softmax":
        if not cfg["group_size"]:
            raise ConfigError("softmax visible units need --group-size K")
        vis_opts = {"group_size": cfg["group_size"]}
    hid_opts: dict[str, Any] = {}
    if cfg["hidden"] == "softmax":
        if not cfg["group_size"]:
            raise ConfigError("softmax hidden units need --group-size K")
        hid_opts = {"group_size": cfg["group_size"]}
    gen = torch.Generator().manual_seed(cfg["seed"])
    from .connections import DenseConnection

    vis = make_units(cfg["visible"], n_visible, **vis_opts)
    hid = make_units(cfg["hidden"], cfg["n_hidden"], **hid_opts)
    return RBM(vis, hid, DenseConnection(n_visible, cfg["n_hidden"], cfg["init_std"], gen))


def train_from_config(cfg: dict[str, Any], resume: bool = False, quiet: bool = False):
    """Run a training job from a resolved config; returns (model, history, wall seconds)."""
    from . import distributed
    from .io import atomic_write, save_model

    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    _device(cfg["device"])  # a clear error for every kind, before any work
    if distributed.env_world_size() > 1:  # launched by torchrun: data-parallel
        if cfg["model"] != "rbm":
            from .models import kind_module

            if not getattr(kind_module(cfg["model"]), "DATA_PARALLEL", False):
                raise ConfigError(f"--model {cfg['model']} trains in one process only: run it "
                                  "without torchrun (data-parallel kinds: rbm, conv-rbm, "
                                  "dropout-rbm, edropout-rbm)")
        # each rank on its own device (cuda:LOCAL_RANK for GPUs)
        cfg = {**cfg, "device": str(distributed.init_from_env(cfg["device"]))}
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if cfg["model"] == "rbm":
        model, history, extra = _train_rbm(cfg, resume, quiet)
    else:
        if cfg.get("standardize"):
            raise ConfigError(f"--standardize applies to --model rbm, not {cfg['model']}")
        from .models import kind_module

        if resume:
            raise ConfigError(f"--resume is not supported for --model {cfg['model']}")

        def load(split: str):
            return _load_data(cfg, split)

        model, history = kind_module(cfg["model"]).train_from_config(cfg, load, quiet)
    wall = time.perf_counter() - start
    out = Path(cfg["out"])
    if not distributed.is_main():  # every rank holds the same model: rank 0 writes it
        return model, history, wall
    save_model(model, out, extra={"train_config": cfg, "history": history,
                                  "wall_time": wall, **extra})
    _write_config(cfg, out.with_suffix(".config.toml"))
    hist_path = out.with_suffix(".history.json")
    atomic_write(hist_path, lambda tmp: Path(tmp).write_text(json.dumps(history, indent=1)))
    if cfg["plots"] and hasattr(model, "connection"):
        write_plots(model, history, out.with_suffix(""), seed=cfg["seed"])
    return model, history, wall


def _train_rbm(cfg: dict[str, Any], resume: bool, quiet: bool):
    """Train the plain RBM kind (any units, sampler and objective)."""
    from .objectives import LikelihoodGradient
    from .sampling import make_sampler
    from .training import Trainer

    device = _device(cfg["device"])
    train, _ = _load_data(cfg, "train")
    try:
        test, _ = _load_data(cfg, "test")
    except DataError:
        test = None
    if train.shape[0] == 0:
        raise DataError("training data is empty")
    extra: dict[str, Any] = {}
    if cfg.get("standardize"):
        if cfg["visible"] != "gaussian":
            raise ConfigError(f"--standardize is for gaussian visible units, not "
                              f"{cfg['visible']!r}")
        from .data import Standardizer

        std = Standardizer(float(cfg["std_floor"])).fit(train)
        train = std.transform(train)
        test = None if test is None else std.transform(test)
        # the model sees z = (x - mean) / scale: log p(x) = log p(z) + log_jacobian
        extra["standardizer"] = {**std.to_dict(), "log_jacobian": std.log_jacobian}
    model = build_model(cfg, train.shape[1]).to(device)
    sampler = make_sampler(cfg["method"], cfg["k"], cfg["chains"], cfg["n_temperatures"],
                           cfg["beta_min"], beta_std=cfg["beta_std"],
                           beta_autocorr=cfg["beta_autocorr"],
                           readout_steps=cfg["readout_steps"])
    objective = LikelihoodGradient(cfg["sparsity_target"], cfg["sparsity_cost"],
                                   centering=bool(cfg["centering"]))
    if cfg["objective"] == "beam":
        from .adversarial import AdversarialGradient

        warm = int(cfg["gamma_warmup"] or 0)
        objective = AdversarialGradient(
            cfg["critic"], gamma=cfg["gamma"], k=cfg["critic_k"], likelihood=objective,
            gamma_schedule=[(0, 1.0), (warm, cfg["gamma"])] if warm else None)
    callbacks = []
    if cfg["monitor"]:
        if cfg["monitor"] not in ("loglik",):
            raise ConfigError(f"unknown monitor {cfg['monitor']!r}: use 'loglik'")
        from .metrics import LikelihoodMonitor

        callbacks.append(LikelihoodMonitor(test if test is not None else train,
                                           every=cfg["monitor_every"],
                                           ais_steps=cfg["monitor_ais_steps"],
                                           ais_chains=cfg["monitor_ais_chains"],
                                           train_data=train, seed=cfg["seed"]))
    if cfg["tensorboard"]:
        from .tracking import TensorBoardLogger

        callbacks.append(TensorBoardLogger(cfg["tensorboard"]))
    if not quiet:
        callbacks.append(_print_epoch)
    ckpt = cfg["checkpoint_dir"]
    if resume and not ckpt:
        raise ConfigError("--resume needs --checkpoint-dir (where the run's checkpoint is)")
    trainer = Trainer(model, sampler, objective, epochs=cfg["epochs"],
                      batch_size=cfg["batch_size"], lr=cfg["lr"], optimizer=cfg["optimizer"],
                      momentum=cfg["momentum"], weight_decay=cfg["weight_decay"],
                      lr_schedule=cfg["lr_schedule"], lr_final_factor=cfg["lr_final_factor"],
                      average_from=cfg["average_from"],
                      seed=cfg["seed"], callbacks=callbacks, checkpoint_dir=ckpt,
                      checkpoint_every=cfg["checkpoint_every"],
                      progress=False if quiet else None,
                      signature={k: cfg[k] for k in RUN_SIGNATURE},
                      signature_defaults={k: TRAIN_DEFAULTS[k] for k in RUN_SIGNATURE})
    limit = None
    if cfg.get("max_singular_value"):
        from .constraints import SpectralNormLimit

        limit = SpectralNormLimit(model.connection.weights, float(cfg["max_singular_value"]))
        limit.attach(trainer.optimizer)
    history = trainer.fit(train, test, resume=resume)
    if limit is not None:
        extra["max_singular_value"] = limit.project()
    return model, history, extra


def write_plots(model, history, stem: Path, seed: int = 0, steps: int = 1000) -> list[Path]:
    """Weight mosaic, samples and training curves as PNG files named after ``stem``."""
    from . import visual

    shape = _image_shape(None, model.n_visible)
    paths = []
    if shape is not None:
        p = Path(f"{stem}.weights.png")
        visual.weight_mosaic(model.connection.weights, p, image_shape=shape)
        paths.append(p)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    samples = model.sample(100, steps=steps, generator=gen)
    p = Path(f"{stem}.samples.png")
    visual.sample_grid(samples, p, image_shape=shape)
    paths.append(p)
    if history:
        p = Path(f"{stem}.curves.png")
        visual.training_curves(history, p)
        paths.append(p)
    return paths


def _emit(result: dict, as_json: bool) -> None:
    """Print a command's result as indented JSON or as aligned ``key value`` lines."""
    if as_json:
        print(json.dumps(result, indent=1))
    else:
        for k, v in result.items():
            print(f"{k:28s} {v}")


def _print_epoch(trainer, record: dict) -> None:
    keys = ("epoch", "time", "recon_error", "free_energy_gap", "log_likelihood",
            "swap_rate_mean")
    parts = [f"{k}={record[k]:.4g}" if isinstance(record[k], float) else f"{k}={record[k]}"
             for k in keys if k in record]
    print("  ".join(parts), file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    from .distributed import barrier, is_main, shutdown

    cfg = resolve_train_config(args)
    try:
        model, history, wall = train_from_config(cfg, resume=args.resume, quiet=args.quiet)
        if is_main():
            final = dict(history[-1]) if history else {}
            print(json.dumps({"model": str(Path(cfg["out"])), "epochs": len(history),
                              "wall_time_s": round(wall, 2), "final": final}))
        # Under torchrun every rank leaves together, after rank 0 has written the model,
        # and leaves the group before exiting: a rank that exited with its gloo group
        # still alive was sometimes aborted by a C++ std::terminate during teardown.
        barrier()
    finally:
        shutdown()
    return 0


def _standardizer(path):
    """The Standardizer a model was trained behind (``train --standardize``), or None."""
    from .data import Standardizer
    from .io import read_header

    stored = read_header(path).get("standardizer")
    return None if stored is None else Standardizer.from_dict(stored)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .io import load_model
    from .metrics import evaluate_model
    from .rbm import RBM

    model = load_model(args.model_path, _device(args.device))
    from .recommend.cli import evaluate_recommender_command

    recommended = evaluate_recommender_command(model, args)
    if recommended is not None:  # a MovieLens recommender (cf-rbm)
        _emit(recommended, args.json)
        return 0
    data, labels = _load_data(args, args.split)
    train, train_labels = _load_data(args, "train")
    metrics = None if args.metrics is None else [
        m.strip() for m in args.metrics.split(",") if m.strip()]
    rbm_options = {}
    if isinstance(model, RBM):
        rbm_options = {"method": args.method, "ais_reverse": args.ais_reverse,
                       "exact_dtype": getattr(torch, args.exact_dtype)}
        std = _standardizer(args.model_path)
        if std is not None:  # the model saw z = (x - mean) / scale: score x's density
            data, train = std.transform(data), std.transform(train)
            rbm_options["log_jacobian"] = std.log_jacobian
    result = evaluate_model(model, data, metrics=metrics, train_data=train, labels=labels,
                            train_labels=train_labels, ais_chains=args.ais_chains,
                            ais_steps=args.ais_steps, seed=args.seed, **rbm_options)
    result.update({"model": str(args.model_path), "dataset": str(args.dataset),
                   "split": args.split, "binarize": args.binarize})
    _emit(result, args.json)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from . import visual
    from .io import load_model

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    if not args.out and not args.npy:
        raise ConfigError("say where to write the samples: --out samples.png and/or --npy FILE")
    model = load_model(args.model_path, _device(args.device))
    if not callable(getattr(model, "sample", None)):
        raise ConfigError(f"a {type(model).__name__} has no generative model to sample from"
                          + (": sample from the DBN it was fine-tuned from "
                             "(MODEL.pretrained.safetensors)" if "DBN" in type(model).__name__
                             else ""))
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    if "beta" in inspect.signature(model.sample).parameters:
        samples = model.sample(args.n, steps=args.steps, beta=args.beta, generator=gen)
    elif args.beta != 1.0:
        raise ConfigError(f"a {type(model).__name__} samples at its own temperature only: "
                          "drop --beta")
    else:
        samples = model.sample(args.n, steps=args.steps, generator=gen)
    std = _standardizer(args.model_path)
    if std is not None:  # back to the data's own units
        samples = std.inverse_transform(samples.cpu())
    if args.npy:
        import numpy as np

        from .io import atomic_write

        arr = samples.cpu().numpy()
        atomic_write(args.npy, lambda tmp: np.save(open(tmp, "wb"), arr))
    if args.out:
        visual.sample_grid(samples, args.out,
                           image_shape=_image_shape(args.image_shape, model.n_visible))
    print(json.dumps({"n": args.n, "steps": args.steps, "png": args.out, "npy": args.npy}))
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from . import visual
    from .io import load_model

    model = load_model(args.model_path)
    data, _ = _load_data(args, args.split)
    std = _standardizer(args.model_path)
    data = data[: args.n]
    if std is not None:  # reconstruct in the model's space, show and score in the data's
        recon = std.inverse_transform(model.reconstruct(model.prepare(std.transform(data))))
        data = torch.as_tensor(data, dtype=recon.dtype)
    else:
        data = model.prepare(data)
        recon = model.reconstruct(data)
    visual.reconstruction_grid(data, recon, args.out,
                               image_shape=_image_shape(args.image_shape, model.n_visible),
                               n=args.n)
    err = float(((recon - data) ** 2).mean())
    print(json.dumps({"png": args.out, "n": int(data.shape[0]), "recon_error": err}))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from .io import load_model

    model = load_model(args.model_path)
    data, _ = _load_data(args, args.split)
    std = _standardizer(args.model_path)
    data = model.prepare(data if std is None else std.transform(data))
    with torch.no_grad():
        scores = torch.cat([model.free_energy(b) for b in data.split(4096)]).tolist()
    if args.json:
        print(json.dumps({"free_energy": scores, "n_samples": len(scores)}))
    else:
        print("\n".join(f"{s:.6g}" for s in scores))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .io import load_model, read_header

    header = read_header(args.model_path)
    model = load_model(args.model_path)
    info = {"config": header.get("config"),
            "parameters": {k: list(v.shape) for k, v in model.state_dict().items()},
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "train_config": header.get("train_config"),
            "epochs_trained": len(header.get("history", [])),
            "last_epoch": (header.get("history") or [None])[-1],
            "wall_time_s": header.get("wall_time")}
    _emit(info, args.json)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .data import download_mnist, download_movielens
    from .data.mnist import MNIST_MIRRORS
    from .data.paths import ENV_VAR

    data_dir = args.data_dir or os.environ.get(ENV_VAR)
    if not data_dir:
        raise ConfigError(f"say where to put the data: --data-dir DIR or set {ENV_VAR}")
    if args.dataset == "mnist":
        if args.md5:
            raise ConfigError("--md5 is for a MovieLens archive; MNIST files are checked "
                              "against their published digests")
        mirrors = (args.url,) if args.url else MNIST_MIRRORS
        folder = download_mnist(data_dir, mirrors, timeout=args.timeout)
    else:
        folder = download_movielens(args.dataset, data_dir, url=args.url, md5=args.md5,
                                    timeout=args.timeout)
    print(folder)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out_dir), epochs=args.epochs, seed=args.seed, quiet=args.quiet)
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample,
            "reconstruct": cmd_reconstruct, "score": cmd_score, "info": cmd_info,
            "download": cmd_download, "demo": cmd_demo}

from .recommend.cli import COMMANDS as _RECOMMEND_COMMANDS  # noqa: E402

COMMANDS.update(_RECOMMEND_COMMANDS)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``boltzkit`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except BoltzkitError as exc:
        print(f"boltzkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint (if any) is intact; rerun with --resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
