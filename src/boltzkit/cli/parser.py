"""The ``boltzkit`` argument parser; ``train``'s options come from :mod:`boltzkit.kinds`."""

from __future__ import annotations

import argparse
import sys

from .. import kinds

_GROUPS = {"data": "data", "model": "model", "sampler": "model phase (sampler)",
           "objective": "objective", "loop": "training loop", "monitor": "monitors"}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one short line (and exit code 2)."""

    def error(self, message: str):  # noqa: D102 - argparse's contract
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _kinds_reading(name: str) -> list[str]:
    if name in kinds.LOOP:
        return []
    return [k for k in kinds.trainable() if name in kinds.KINDS[k].reads]


def _add_train_options(p: argparse.ArgumentParser) -> None:
    groups = {g: p.add_argument_group(title) for g, title in _GROUPS.items()}
    for name, opt in kinds.OPTIONS.items():
        who = _kinds_reading(name)
        scope = "" if not who or len(who) == len(kinds.trainable()) else f"[{', '.join(who)}] "
        default = opt.default
        shown = {None: "unset", True: "on", False: "off"}.get(default, default) \
            if not isinstance(default, int | float) or isinstance(default, bool) else default
        text = f"{scope}{opt.help} (default: {shown})".replace("%", "%%")
        g = groups[opt.group]
        choices = tuple(kinds.trainable()) if name == "model" else opt.choices
        if opt.type is bool:
            g.add_argument(kinds.flag(name), dest=name, default=None,
                           action=argparse.BooleanOptionalAction, help=text)
        else:
            cast = opt.type or str
            if opt.low is not None and cast in (int, float):
                cast = _number(cast, opt.low, False)
            g.add_argument(kinds.flag(name), dest=name, default=None, type=cast,
                           choices=choices, metavar=None if choices else name.upper(),
                           help=text)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    """The data options of evaluate / reconstruct / score: by default the model's own."""
    p.add_argument("--dataset", default=None,
                   help="digits | mnist | mog-... | a .npy/.npz/.csv file to score (default: "
                        "the data set the model was trained on, from its file)")
    p.add_argument("--data-dir", default=None,
                   help="folder of a named data set's files (default: the model's, else "
                        "$BOLTZKIT_DATA)")
    p.add_argument("--test-data", default=None,
                   help="with --dataset FILE: score this file, FILE being the training rows "
                        "(AIS base model, features); without it FILE itself is scored")
    p.add_argument("--binarize", default=None, choices=("threshold", "stochastic", "none"),
                   help="how grey levels become 0/1 (default: as the model was trained)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="use only the first N samples")
    p.add_argument("--split", default=None, choices=("train", "test"),
                   help="split of a named data set (default: test)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")


def _add_compute_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice)")


def _add_precision_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--precision", default="float32",
                   choices=("float32", "bfloat16", "tf32", "auto"),
                   help=f"GEMM precision of {what}: bfloat16 operands where the hardware has "
                        "them natively (auto picks; `boltzkit info` says which); tf32 on CUDA "
                        "(default: float32)")


def _number(cast, low, strict: bool):
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, "
                                             f"got {text}")
        return value
    parse.__name__ = cast.__name__
    return parse


positive_int = _number(int, 0, True)
non_negative_int = _number(int, 0, False)
positive_float = _number(float, 0.0, True)


def build_parser() -> argparse.ArgumentParser:
    """The ``boltzkit`` command's parser, every subcommand included."""
    from .. import __version__
    from .recommend import add_parsers as add_recommend_parsers

    parser = Parser(prog="boltzkit",
                    description="Boltzmann machines on PyTorch: train, evaluate, sample, "
                                "reconstruct, score and inspect models.")
    parser.add_argument("--version", action="version", version=f"boltzkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser,
                                metavar="COMMAND")

    t = sub.add_parser("train", help="train a model (any kind: --model)",
                       description="Train a model.  Options: built-in defaults, then --config "
                                   "FILE.toml, then flags.  An option the chosen --model does "
                                   "not use is refused.")
    t.add_argument("--config", help="TOML file with any of the options below")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --checkpoint-dir exactly where it stopped")
    t.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    _add_train_options(t)
    t.set_defaults(model=None)

    e = sub.add_parser("evaluate", help="measure a model on a data set (default: its own)")
    e.add_argument("model_path", metavar="MODEL")
    _add_data_args(e)
    e.add_argument("--fold", default=None,
                   help="recommenders: MovieLens split, ml-100k 1..5, a, b (default: the "
                        "model's)")
    e.add_argument("--metrics", default=None,
                   help="comma list (default: the model's, see docs/guides/capabilities.md). "
                        "RBMs: loglik, pl, recon, knn, modes, features; classifiers (drbm, "
                        "fine-tuned dbn): error; dbm: loglik (variational bound), features; "
                        "dbn: features; ising/potts/srbm: loglik, pl; crbm: rmse, loglik; "
                        "recommenders: rmse, mae, like_error, precision, recall, ndcg (@10)")
    e.add_argument("--method", default="auto", choices=("auto", "exact", "ais"),
                   help="log Z: exact enumeration, AIS, or exact when a layer has at most "
                        "2^20 states (default: auto)")
    e.add_argument("--ais-chains", type=positive_int, default=100,
                   help="AIS chains (default: 100)")
    e.add_argument("--ais-steps", type=positive_int, default=14500,
                   help="AIS intermediate distributions (default: 14500)")
    e.add_argument("--ais-reverse", action="store_true",
                   help="also run reverse AIS from data: a second, bracketing estimate of log Z")
    e.add_argument("--exact-dtype", default="float64", choices=("float64", "float32"),
                   help="precision of an exact enumeration (float32: ~2x faster, ~1e-4 nats; "
                        "default: float64)")
    _add_compute_args(e)
    _add_precision_arg(e, "the sampling (AIS annealing, model samples; free energies stay "
                          "float64)")
    e.add_argument("--json", action="store_true", help="print JSON")

    s = sub.add_parser("sample", help="draw samples from a model",
                       description="Draw samples.  Chains start from the model's training "
                                   "data by default (when its file names a data set that is "
                                   "there), so every mode the data has is visited; --method pt "
                                   "or ptt also crosses between modes.")
    s.add_argument("model_path", metavar="MODEL")
    s.add_argument("--n", type=positive_int, default=100, help="number of samples (default: 100)")
    s.add_argument("--steps", type=non_negative_int, default=1000,
                   help="Gibbs sweeps, or updates of every replica (default: 1000)")
    s.add_argument("--method", default="gibbs", choices=("gibbs", "pt", "ptt"),
                   help="gibbs: plain sweeps; pt: parallel tempering (temperatures placed "
                        "automatically); ptt: parallel trajectory tempering along the run's "
                        "saved trajectory (train --save-trajectory) (default: gibbs)")
    s.add_argument("--init", default=None, choices=("data", "noise", "base"),
                   help="where chains start: rows of the training data, noise (the layer at "
                        "beta = 0), or exact draws of the coupling-free base model (default: "
                        "data when the model file names a data set that is there, else noise)")
    s.add_argument("--n-temperatures", type=_number(int, 2, False), default=None,
                   help="pt: temperatures to start the ladder with (default: 10)")
    s.add_argument("--beta-min", type=_number(float, 0.0, True), default=None,
                   help="pt: the lowest inverse temperature (default: 0.01)")
    s.add_argument("--swap-target", type=_number(float, 0.0, True), default=None,
                   help="pt, ptt: neighbouring swap rate the ladder aims at (default: 0.25)")
    s.add_argument("--max-replicas", type=_number(int, 2, False), default=None,
                   help="pt, ptt: the most temperatures / models in the ladder (default: 32)")
    s.add_argument("--trajectory", default=None,
                   help="ptt: the trajectory file (default: MODEL.trajectory.safetensors)")
    s.add_argument("--beta", type=positive_float, default=1.0,
                   help="gibbs: inverse temperature, the whole energy tempered (default: 1)")
    s.add_argument("--mean", action="store_true",
                   help="write E[v | h] of the last sweep (grey images) instead of sampled "
                        "states")
    s.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    s.add_argument("--out", default=None, help="PNG of the samples")
    s.add_argument("--npy", default=None, help="write the samples as .npy")
    s.add_argument("--image-shape", default=None,
                   help="HxW of a PNG tile, e.g. 28x28 (default: square)")
    _add_compute_args(s)
    _add_precision_arg(s, "the Gibbs sweeps")

    r = sub.add_parser("reconstruct", help="show reconstructions beside originals")
    r.add_argument("model_path", metavar="MODEL")
    _add_data_args(r)
    r.add_argument("--n", type=positive_int, default=10,
                   help="rows to reconstruct (default: 10)")
    r.add_argument("--out", required=True, help="PNG path")
    r.add_argument("--image-shape", default=None,
                   help="HxW of a PNG tile, e.g. 28x28 (default: square)")
    _add_compute_args(r)

    sc = sub.add_parser("score", help="per-sample free energies (anomaly scores)")
    sc.add_argument("model_path", metavar="MODEL")
    _add_data_args(sc)
    _add_compute_args(sc)
    sc.add_argument("--json", action="store_true", help="print JSON")

    i = sub.add_parser("info", help="describe a model file")
    i.add_argument("model_path", metavar="MODEL")
    i.add_argument("--json", action="store_true", help="print JSON")

    dl = sub.add_parser("download", help="fetch a public data set (needs internet; MD5-checked)")
    dl.add_argument("dataset", choices=["mnist", "ml-100k", "ml-1m", "ml-latest-small"])
    dl.add_argument("--data-dir", default=None,
                    help="where to put it (default: $BOLTZKIT_DATA)")
    dl.add_argument("--url", default=None,
                    help="MovieLens: the archive's URL (default: GroupLens'); "
                         "MNIST: a mirror folder's URL")
    dl.add_argument("--md5", default=None, help="MovieLens: the archive's expected MD5")
    dl.add_argument("--timeout", type=positive_float, default=60.0,
                    help="seconds per request (default: 60)")

    d = sub.add_parser("demo", help="offline demo on scikit-learn's 8x8 digits")
    d.add_argument("--out-dir", default="boltzkit-demo",
                   help="where the files go (default: boltzkit-demo)")
    d.add_argument("--epochs", type=positive_int, default=30, help="epochs (default: 30)")
    d.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    d.add_argument("--quiet", action="store_true", help="no progress lines")
    add_recommend_parsers(sub)
    return parser
