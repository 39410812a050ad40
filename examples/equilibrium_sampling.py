"""Sampling that mixes: the 5x5 grid's hand-built RBM, and MNIST 0s and 1s by PTT.

Two experiments of issue 28, each through ``boltzkit train`` / ``boltzkit sample`` (so the
numbers are what a user of the command line gets):

* ``grid``: the hand-built 8-hidden-unit RBM of the 5x5 grid of Gaussians
  (:func:`beam_mixtures.hand_built_grid_rbm`, whose own density covers all 25 modes),
  written as a model file that names its data set (mog-grid25), then sampled with
  ``boltzkit sample``'s defaults (chains start at the training data), from noise, and by
  parallel tempering from noise (beta from 1 down to 0.01, the ladder placed
  automatically).  Scored by modes covered and the fraction of samples within 3 std of a
  mode.
* ``mnist01``: an RBM trained on the MNIST training images of digits 0 and 1 only
  (threshold-binarised; the paper's clustered example), with ``--save-trajectory``; then
  ``--n-samples`` samples by Gibbs sweeps from noise (what persistent chains of a
  non-mixing sampler see), by Gibbs sweeps from the data, by parallel trajectory
  tempering (``--method ptt``) along the saved trajectory and by parallel tempering.
  A logistic regression trained on the same images (test accuracy printed) labels every
  sample 0 or 1; the table compares the fraction of 1s with the data's.

    python examples/equilibrium_sampling.py --experiments grid,mnist01 --data-dir DIR \
        --out-dir eq-out

Prints one Markdown table per experiment, with the command of each row and its seconds.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def boltzkit(*args: str) -> tuple[dict, float, str]:
    """Run the ``boltzkit`` command line in a subprocess: (its JSON line, seconds, command)."""
    cmd = [sys.executable, "-m", "boltzkit.cli", *args]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"boltzkit {' '.join(args)} failed:\n{out.stderr}")
    last = [line for line in out.stdout.splitlines() if line.startswith("{")][-1]
    return json.loads(last), seconds, "boltzkit " + " ".join(shlex.quote(a) for a in args)


def grid(args: argparse.Namespace, out: Path) -> list[dict]:
    """The hand-built grid RBM sampled three ways by ``boltzkit sample``."""
    sys.path.insert(0, str(HERE))
    from beam_mixtures import hand_built_grid_rbm

    from boltzkit.data import mixture_spec
    from boltzkit.io import save_model
    from boltzkit.metrics.divergence import mode_coverage

    spec = mixture_spec("mog-grid25")
    path = out / "hand-grid.safetensors"
    save_model(hand_built_grid_rbm(), path, extra={"train_config": {
        "model": "rbm", "dataset": "mog-grid25", "visible": "gaussian",
        "visible_std": spec["std"], "n_hidden": 8}})
    rows = []
    for name, extra in (("default (init data, gibbs)", []),
                        ("init noise, gibbs", ["--init", "noise"]),
                        ("init noise, pt", ["--init", "noise", "--method", "pt"])):
        npy = out / "grid.npy"
        res, sec, cmd = boltzkit("sample", str(path), "--n", str(args.n_samples), "--seed",
                                 str(args.seed), "--threads", "1", "--npy", str(npy), *extra)
        cov = mode_coverage(np.load(npy), spec["means"], spec["std"])
        rows.append({"sampler": name, "modes": f"{cov['modes_covered']}/25",
                     "high quality": f"{cov['high_quality_fraction']:.3f}",
                     "largest mode share": f"{max(cov['counts']) / args.n_samples:.3f}",
                     "ladder": res.get("n_temperatures", ""), "s": f"{sec:.0f}",
                     "command": cmd})
    return rows


def mnist01(args: argparse.Namespace, out: Path) -> list[dict]:
    """Train on MNIST 0s and 1s, then compare the class proportions of three samplers."""
    from sklearn.linear_model import LogisticRegression

    from boltzkit.data import load_dataset

    x, y = load_dataset("mnist", "train", data_dir=args.data_dir, binarize="threshold")
    keep = (y == 0) | (y == 1)
    x, y = x[keep].numpy(), y[keep].numpy()
    xt, yt = load_dataset("mnist", "test", data_dir=args.data_dir, binarize="threshold")
    keep_t = (yt == 0) | (yt == 1)
    xt, yt = xt[keep_t].numpy(), yt[keep_t].numpy()
    data = out / "mnist01.npz"
    np.savez(data, x=x.astype(np.float32), y=y.astype(np.int64))
    np.savez(out / "mnist01-test.npz", x=xt.astype(np.float32), y=yt.astype(np.int64))
    clf = LogisticRegression(max_iter=2000).fit(x, y)
    acc = float(clf.score(xt, yt))
    share = float(y.mean())
    model = out / "mnist01.safetensors"
    train_args = ["train", "--dataset", str(data), "--test-data", str(out / "mnist01-test.npz"),
                  "--binarize", "none", "--n-hidden", str(args.n_hidden), "--method", "pcd",
                  "--chains", "100", "--epochs", str(args.epochs), "--lr", "0.01",
                  "--momentum", "0.9", "--centering", "--lr-schedule", "linear",
                  "--lr-final-factor", "0.05", "--seed", str(args.seed), "--threads", "1",
                  "--save-trajectory", "--trajectory-updates", str(args.trajectory_updates),
                  "--quiet", "--out", str(model)]
    _, train_s, train_cmd = boltzkit(*train_args)
    rows = [{"sampler": "data (training images)", "share of 1s": f"{share:.3f}",
             "replicas": "", "swap rate (min)": "", "s": f"{train_s:.0f} (training)",
             "command": train_cmd}]
    replicas = ["--max-replicas", str(args.max_replicas)]
    samplers = {"gibbs-noise": ("gibbs from noise", ["--init", "noise"]),
                "gibbs-data": ("gibbs from data (default)", []),
                "ptt": ("ptt from noise", ["--method", "ptt", "--init", "noise", *replicas]),
                "pt": ("pt from noise", ["--method", "pt", "--init", "noise",
                                         "--beta-min", "0.01", *replicas])}
    for key in args.samplers.split(","):
        if key not in samplers:
            raise SystemExit(f"unknown sampler {key!r}: choose from {', '.join(samplers)}")
        name, extra = samplers[key]
        npy = out / "mnist01-samples.npy"
        res, sec, cmd = boltzkit("sample", str(model), "--n", str(args.n_samples), "--steps",
                                 str(args.steps), "--seed", str(args.seed), "--threads", "1",
                                 "--npy", str(npy), *extra)
        samples = np.load(npy)
        rows.append({"sampler": name, "share of 1s": f"{float(clf.predict(samples).mean()):.3f}",
                     "replicas": res.get("n_replicas", res.get("n_temperatures", "")),
                     "swap rate (min)": (f"{res['swap_rate_min']:.2f}" if "swap_rate_min" in res
                                         else ""), "s": f"{sec:.0f}", "command": cmd})
    print(f"logistic regression 0 vs 1: test accuracy {acc:.4f}")
    return rows


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(f"`{r[k]}`" if k == "command" else str(r[k]) for k in keys)
              + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiments", default="grid,mnist01")
    p.add_argument("--data-dir", default=None, help="folder of the MNIST files")
    p.add_argument("--out-dir", default="eq-out")
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--n-hidden", type=int, default=100)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samplers", default="gibbs-noise,gibbs-data,ptt,pt",
                   help="mnist01: which samplers to run")
    p.add_argument("--max-replicas", type=int, default=32,
                   help="mnist01: replicas / temperatures at most (ptt, pt)")
    p.add_argument("--trajectory-updates", type=int, default=64,
                   help="mnist01: log-spaced updates kept besides the epoch ends")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.experiments.split(","):
        rows = {"grid": grid, "mnist01": mnist01}[name](args, out)
        print(f"\n{name}\n\n{table(rows)}\n", flush=True)


if __name__ == "__main__":
    main()
