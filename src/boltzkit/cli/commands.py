"""The ``boltzkit`` subcommands; each returns an exit code (errors raise BoltzkitError)."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from .. import precision
from ..errors import ConfigError
from ..training.run import device_of


def cmd_train(args: argparse.Namespace) -> int:
    """Resolve the options, train the kind through the one loop, write the files."""
    from .. import distributed, kinds
    from ..io import atomic_write, save_model
    from ..training.run import train_from_config
    from ..visual import write_training_plots
    from .config import resolve_train_config, write_config

    cfg, given = resolve_train_config(args)
    try:
        start = time.perf_counter()
        model, history, extra = train_from_config(cfg, given, resume=args.resume,
                                                  quiet=args.quiet)
        wall = time.perf_counter() - start
        if distributed.is_main():  # every rank holds the same model: rank 0 writes it
            out = Path(cfg["out"])
            used = kinds.relevant(cfg)
            save_model(model, out, extra={"train_config": used, "history": history,
                                          "wall_time": wall, **extra})
            write_config(cfg, out.with_suffix(".config.toml"))
            atomic_write(out.with_suffix(".history.json"),
                         lambda tmp: Path(tmp).write_text(json.dumps(history, indent=1)))
            if cfg["plots"]:
                write_training_plots(model, history, out.with_suffix(""), seed=cfg["seed"])
            final = dict(history[-1]) if history else {}
            print(json.dumps({"model": str(out), "epochs": len(history),
                              "wall_time_s": round(wall, 2), "final": final}))
        # Under torchrun every rank leaves together, after rank 0 has written the model,
        # and leaves the group before exiting: a rank that exited with its gloo group
        # still alive was sometimes aborted by a C++ std::terminate during teardown.
        distributed.barrier()
    finally:
        distributed.shutdown()
    return 0


def _is_file(name) -> bool:
    from ..data.arrays import ARRAY_SUFFIXES

    return Path(str(name)).suffix.lower() in ARRAY_SUFFIXES


def _scored_data(args: argparse.Namespace, with_train: bool = False):
    """The rows evaluate / reconstruct / score work on, prepared as the model's were.

    Returns ``(data, labels, train, train_labels, source)``.  Defaults come from the model
    file (the data set, data folder and binarisation it was trained with, and its held-out
    file when it had one); a named data set gives its ``--split``; ``--dataset FILE`` is
    scored itself, or with ``--test-data`` that file is scored and FILE is the training rows.
    """
    from ..data import load_dataset
    from ..io import read_header

    stored = read_header(args.model_path).get("train_config") or {}
    dataset = args.dataset or stored.get("dataset")
    if dataset is None:
        raise ConfigError("this model file does not say what it was trained on: name the "
                          "data with --dataset")
    binarize = args.binarize or stored.get("binarize") or "none"
    data_dir = args.data_dir or (stored.get("data_dir") if dataset == stored.get("dataset")
                                 else None)
    common = dict(binarize=binarize, seed=args.seed, limit=args.limit)
    if _is_file(dataset):
        if args.split:
            raise ConfigError(f"--split is for a named data set; the file {dataset} is scored "
                              "as it is (drop --split)")
        test_data = args.test_data or (stored.get("test_data") if args.dataset is None
                                       else None)
        scored = test_data or dataset
        data, labels = load_dataset(scored, split="train", **common)
        train, train_labels = (load_dataset(dataset, split="train", **common)
                               if test_data and with_train else (None, None))
        return data, labels, train, train_labels, {"dataset": str(scored), "binarize": binarize}
    if args.test_data:
        raise ConfigError(f"--test-data is for --dataset FILE; {dataset} has its own splits "
                          "(--split)")
    split = args.split or "test"
    data, labels = load_dataset(dataset, split=split, data_dir=data_dir, **common)
    train, train_labels = (load_dataset(dataset, split="train", data_dir=data_dir, **common)
                           if with_train else (None, None))
    return data, labels, train, train_labels, {"dataset": str(dataset), "split": split,
                                               "binarize": binarize}


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


def _emit(result: dict, as_json: bool) -> None:
    """Print a command's result as indented JSON or as aligned ``key value`` lines."""
    if as_json:
        print(json.dumps(result, indent=1))
    else:
        for k, v in result.items():
            print(f"{k:28s} {v}")


def _standardizer(path):
    """The Standardizer a model was trained behind (``train --standardize``), or None."""
    from ..data import Standardizer
    from ..io import read_header

    stored = read_header(path).get("standardizer")
    return None if stored is None else Standardizer.from_dict(stored)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..io import load_model
    from ..metrics import evaluate_model
    from ..rbm import RBM

    model = load_model(args.model_path, device_of(args.device))
    from .recommend import evaluate_recommender_command

    recommended = evaluate_recommender_command(model, args)
    if recommended is not None:  # a MovieLens recommender (cf-rbm)
        if args.precision != "float32":
            raise ConfigError("--precision applies to sampling (AIS, model samples); a "
                              "recommender's evaluation samples nothing: drop --precision")
        _emit(recommended, args.json)
        return 0
    data, labels, train, train_labels, source = _scored_data(args, with_train=True)
    metrics = None if args.metrics is None else [
        m.strip() for m in args.metrics.split(",") if m.strip()]
    rbm_options = {}
    if isinstance(model, RBM):
        rbm_options = {"method": args.method, "ais_reverse": args.ais_reverse,
                       "exact_dtype": getattr(torch, args.exact_dtype)}
        std = _standardizer(args.model_path)
        if std is not None:  # the model saw z = (x - mean) / scale: score x's density
            data = std.transform(data)
            train = None if train is None else std.transform(train)
            rbm_options["log_jacobian"] = std.log_jacobian
    result = evaluate_model(model, data, metrics=metrics, train_data=train, labels=labels,
                            train_labels=train_labels, ais_chains=args.ais_chains,
                            ais_steps=args.ais_steps, seed=args.seed, precision=args.precision,
                            **rbm_options)
    result.update({"model": str(args.model_path), **source})
    _emit(result, args.json)
    return 0


def _training_rows(model_path, model, n: int, generator: torch.Generator):
    """``n`` rows of the data a model file says it was trained on, prepared as they were
    (binarisation, standardisation): random rows, with replacement only when n exceeds
    them.  DataError / ConfigError when the file names no data or the data is not there."""
    from ..data import load_dataset
    from ..io import read_header

    stored = read_header(model_path).get("train_config") or {}
    dataset = stored.get("dataset")
    if not dataset:
        raise ConfigError("the model file names no training data (train_config.dataset)")
    rows, _ = load_dataset(dataset, split="train", data_dir=stored.get("data_dir"),
                           binarize=stored.get("binarize") or "none",
                           seed=stored.get("seed") or 0, limit=stored.get("limit"),
                           mixture_size=stored.get("mixture_size"))
    std = _standardizer(model_path)
    if std is not None:
        rows = std.transform(rows)
    one_hot = getattr(model, "one_hot", None)  # a Potts model stores integer labels one-hot
    if one_hot is not None and rows.shape[1] == getattr(model, "n_sites", -1):
        rows = one_hot(rows)
    rows = model.prepare(rows, "the training data") if hasattr(model, "prepare") else rows
    if n <= rows.shape[0]:
        idx = torch.randperm(rows.shape[0], generator=generator, device=generator.device)[:n]
    else:
        idx = torch.randint(rows.shape[0], (n,), generator=generator, device=generator.device)
    return rows[idx.to(rows.device)]


def _sample_init(args, model, gen: torch.Generator) -> tuple[torch.Tensor | None, str, str | None]:
    """(starting states or None, the init used, a note when the default fell back)."""
    from ..errors import BoltzkitError
    from ..sampling import _takes
    from ..trajectory import base_sample, base_state, set_state, snapshot

    asked = args.init
    # chains of visible states (a DBM's sample starts from every layer's states instead)
    takes_init = args.method != "gibbs" or (_takes(model.sample, "init")
                                            and not hasattr(model, "init_states"))
    if asked is None:
        if not takes_init:
            return None, "noise", None
        try:
            return _training_rows(args.model_path, model, args.n, gen), "data", None
        except BoltzkitError as exc:
            return None, "noise", f"no training data to start from ({exc}): started at noise"
    if asked == "noise":
        return None, "noise", None
    if not takes_init:
        raise ConfigError(f"a {type(model).__name__} starts its own chains: drop --init")
    if asked == "data":
        return _training_rows(args.model_path, model, args.n, gen), "data", None
    return base_sample(set_state(snapshot(model), base_state(model)), args.n, gen), "base", None


def cmd_sample(args: argparse.Namespace) -> int:
    """Draw samples by Gibbs sweeps, parallel tempering or trajectory tempering, from data,
    noise or the coupling-free base model."""
    from .. import visual
    from ..io import load_model
    from ..sampling import draw

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    if not args.out and not args.npy:
        raise ConfigError("say where to write the samples: --out samples.png and/or --npy FILE")
    for flag, value, methods in (("--n-temperatures", args.n_temperatures, ("pt",)),
                                 ("--beta-min", args.beta_min, ("pt",)),
                                 ("--swap-target", args.swap_target, ("pt", "ptt")),
                                 ("--max-replicas", args.max_replicas, ("pt", "ptt")),
                                 ("--trajectory", args.trajectory, ("ptt",))):
        if value is not None and args.method not in methods:
            raise ConfigError(f"{flag} applies to --method {' or '.join(methods)}, not "
                              f"{args.method}: drop it")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model_path, device_of(args.device))
    from ..kinds import KINDS

    kind = KINDS[model.config()["model"]]
    if kind.sample:
        raise ConfigError(f"cannot sample a {kind.name}: {kind.sample}")
    from ..models.lateral import FullyVisibleBM

    if args.precision != "float32" and isinstance(model, FullyVisibleBM):
        raise ConfigError(f"a {kind.name} model's sweeps are one matrix-vector product per "
                          "site, which --precision does not change: drop --precision")
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    init, used, note = _sample_init(args, model, gen)
    path = None
    if args.method == "ptt":
        from ..trajectory import TrajectoryPath, float_state, load_trajectory, trajectory_path

        source = args.trajectory or trajectory_path(args.model_path)
        template, states, _ = load_trajectory(source, model.device)
        last, own = states[-1], float_state(model)
        if last.keys() != own.keys() or not all(torch.equal(last[k], own[k]) for k in own):
            raise ConfigError(f"the trajectory {source} does not end at {args.model_path}: "
                              "give the trajectory file of this model's run (--trajectory)")
        path = TrajectoryPath(template, states)
    with precision.computing(args.precision, model.device) as prec:
        samples, info = draw(model, args.n, args.steps, args.method, init, gen, beta=args.beta,
                             return_mean=args.mean,
                             n_temperatures=args.n_temperatures or 10,
                             beta_min=args.beta_min or 0.01,
                             swap_target=args.swap_target if args.swap_target else 0.25,
                             max_replicas=args.max_replicas or 32, trajectory=path)
    std = _standardizer(args.model_path)
    if std is not None:  # back to the data's own units
        samples = std.inverse_transform(samples.cpu())
    if args.npy:
        import numpy as np

        from ..io import atomic_write

        arr = samples.cpu().numpy()
        atomic_write(args.npy, lambda tmp: np.save(open(tmp, "wb"), arr))
    if args.out:
        visual.sample_grid(samples, args.out,
                           image_shape=_image_shape(args.image_shape, model.n_visible))
    result = {"n": args.n, "steps": args.steps, "method": args.method, "init": used,
              "png": args.out, "npy": args.npy, "precision": prec.name, **info}
    if note:
        result["init_note"] = note
    print(json.dumps(result))
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from .. import visual
    from ..io import load_model

    model = load_model(args.model_path)
    data = _scored_data(args)[0]
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
    from ..io import load_model

    model = load_model(args.model_path)
    data = _scored_data(args)[0]
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
    from ..io import load_model, model_tensors, read_header

    header = read_header(args.model_path)
    model = load_model(args.model_path)
    history = header.get("history")
    history = history if isinstance(history, list) else []
    info = {"config": header.get("config"),
            "tensors": {k: list(v.shape) for k, v in model_tensors(model).items()},
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "train_config": header.get("train_config"),
            "epochs_trained": len(history),
            "last_epoch": history[-1] if history else None,
            "wall_time_s": header.get("wall_time"),
            "precision_auto": precision.describe(model.device)}
    _emit(info, args.json)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ..data import download_mnist, download_movielens
    from ..data.mnist import MNIST_MIRRORS
    from ..data.paths import ENV_VAR

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
    from ..demo import run_demo

    run_demo(Path(args.out_dir), epochs=args.epochs, seed=args.seed, quiet=args.quiet)
    return 0


