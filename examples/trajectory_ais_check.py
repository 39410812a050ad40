"""Trajectory AIS against the exact log Z, epoch by epoch, on a model small enough to enumerate.

Runs ``boltzkit train`` with the arguments given (add ``--trajectory-ais``) in this
process, with one more callback that enumerates the exact log Z at the epochs of
``--exact-at`` (every hidden state: keep ``--n-hidden`` at 20 or so), and prints a table of
``log_z`` +/- ``log_z_err`` (trajectory AIS) beside the exact value, the leg's ESS and the
monitor's share of the training time.

    python examples/trajectory_ais_check.py --exact-at 1,2,5,10,20 -- \\
        --config examples/configs/rbm-mnist-25.toml --n-hidden 20 --data-dir DIR \\
        --trajectory-ais --threads 1 --no-plots --out rbm20.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exact-at", default="1,2,5,10,20", help="epochs to enumerate log Z at")
    p.add_argument("train", nargs=argparse.REMAINDER, help="-- then boltzkit train's arguments")
    args = p.parse_args(argv)
    train = [a for a in args.train if a != "--"]
    at = {int(e) for e in args.exact_at.split(",") if e}

    from boltzkit.cli import main as cli
    from boltzkit.metrics.likelihood import exact_log_z
    from boltzkit.training import run as run_module

    def exact(trainer, record: dict) -> None:
        if record["epoch"] in at:
            t0 = time.perf_counter()
            record["exact_log_z"] = exact_log_z(trainer.model, dtype=torch.float32)
            record["exact_seconds"] = time.perf_counter() - t0

    callbacks = run_module.Run.callbacks

    def with_exact(self, *a, **kw):
        return [exact, *callbacks(self, *a, **kw)]

    run_module.Run.callbacks = with_exact
    try:
        code = cli(["train", *train])
    finally:
        run_module.Run.callbacks = callbacks
    if code:
        raise SystemExit(code)
    out = Path(train[train.index("--out") + 1]) if "--out" in train else Path("model.safetensors")
    history = json.loads(out.with_suffix(".history.json").read_text())
    monitor = sum(r.get("trajectory_ais_time", 0.0) for r in history)
    training = sum(r["time"] for r in history)
    print(f"\ntrajectory AIS took {monitor:.1f} s beside {training:.1f} s of training epochs "
          f"({100 * monitor / training:.1f}%)\n")
    print("| epoch | log Z (trajectory AIS) | exact log Z | difference | leg ESS | reliable |")
    print("|---|---|---|---|---|---|")
    rows = [r for r in history if "exact_log_z" in r]
    for r in rows:
        print(f"| {r['epoch']} | {r['log_z']:.2f} +/- {r['log_z_err']:.2f} | "
              f"{r['exact_log_z']:.2f} | {r['log_z'] - r['exact_log_z']:+.2f} | "
              f"{r['trajectory_ais_ess']:.1f} | {r['trajectory_ais_reliable']} |")
    return rows


if __name__ == "__main__":
    main()
