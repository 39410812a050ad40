"""The GPU check: CUDA tests, the speed table in float32 / TF32 / bfloat16, quality parity.

One command on a machine with a CUDA GPU, under 8 minutes on one H100:

    python benchmarks/gpu_check.py --data-dir ../shared/data --out gpu_check.json

1. the test suite's CUDA tests (``pytest -m "not slow" -k cuda``; the rest of the suite
   runs on any machine);
2. speed, each precision side by side in this process: one CD-1 and one PCD-1 epoch of
   MNIST 784x500 (60,000 rows, batches of 100) through ``Trainer.fit``, Gibbs sampling of
   10,000 chains (200 sweeps) and AIS log Z (100 chains x 14,500 steps), with the GEMM
   rate of the same shapes in each precision;
3. quality parity: ``rbm-mnist-500.toml``'s model (threshold MNIST, PCD-1 + centering)
   trained ``--parity-epochs`` epochs in float32 and in bfloat16 from the same seed, both
   scored by float32 AIS (float64 log-weights).

``--device cpu --smoke`` runs the same script in seconds on a CPU, to check it before a
GPU is at hand (tests/test_benchmarks_smoke.py does).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_rate(device: torch.device, precision: str, m=100, k=784, n=500, calls=50) -> float:
    """GFLOP/s of (m x k) @ (k x n) in ``precision`` (tf32: float32 with TF32 allowed)."""
    from boltzkit.precision import computing

    with computing(precision, device) as p:
        dtype = p.gemm_dtype or torch.float32
        a = (torch.rand(m, k, device=device) < 0.3).to(dtype)
        b = (torch.randn(k, n, device=device) * 0.01).to(dtype)
        torch.mm(a, b)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b)
        _sync(device)
    return 2 * m * k * n * calls / (time.perf_counter() - t0) / 1e9


def train_epoch(data, method: str, precision: str, device, seed: int = 0) -> dict:
    from boltzkit import LikelihoodGradient, Trainer, make_rbm, make_sampler

    model = make_rbm(data.shape[1], 500, seed=seed).to(device)
    sampler = make_sampler(method, k=1, chains=100 if method == "pcd" else None)
    trainer = Trainer(model, sampler, LikelihoodGradient(), epochs=1, batch_size=100,
                      lr=0.05, momentum=0.5, seed=seed, progress=False, monitor_size=0,
                      precision=precision)
    _sync(device)
    t0 = time.perf_counter()
    trainer.fit(data)
    _sync(device)
    return {"seconds": time.perf_counter() - t0, "precision": trainer.precision.name}


def gibbs(model, chains: int, sweeps: int, precision: str, device) -> float:
    from boltzkit.precision import computing

    v0 = model.visible.init_state(chains, torch.Generator(device=device).manual_seed(1))
    gen = torch.Generator(device=device).manual_seed(2)
    with computing(precision, device), torch.no_grad():
        model.gibbs(v0, 2, generator=gen)
        _sync(device)
        t0 = time.perf_counter()
        model.gibbs(v0, sweeps, generator=gen)
        _sync(device)
    return time.perf_counter() - t0


def ais(model, data, chains: int, steps: int, precision: str, device) -> dict:
    from boltzkit.metrics.likelihood import ais_log_z

    _sync(device)
    t0 = time.perf_counter()
    res = ais_log_z(model, data=data, n_chains=chains, n_steps=steps, precision=precision,
                    generator=torch.Generator(device=device).manual_seed(0))
    _sync(device)
    return {"seconds": time.perf_counter() - t0, "log_z": res.log_z,
            "log_z_lower": res.log_z_lower, "log_z_upper": res.log_z_upper}


def parity(train, test, epochs: int, ais_steps: int, device, precisions) -> dict:
    """rbm-mnist-500.toml's model for ``epochs`` epochs per precision, scored in float32."""
    from boltzkit import kinds
    from boltzkit.cli import load_config_file
    from boltzkit.metrics.likelihood import log_likelihood
    from boltzkit.models.rbm import train_from_config
    from boltzkit.training.run import Run

    cfg = load_config_file(REPO / "examples" / "configs" / "rbm-mnist-500.toml")
    cfg = {k: v for k, v in cfg.items() if k not in ("dataset", "plots")}
    cfg.update(epochs=epochs, average_from=min(cfg["average_from"], epochs),
               device=str(device))
    out = {}
    for p in precisions:
        full = {**kinds.defaults("rbm"), **cfg, "precision": p, "model": "rbm"}
        run = Run(full, set(cfg) | {"precision"}, quiet=True,
                  data=(train.cpu().numpy(), None, test.cpu().numpy(), None))
        t0 = time.perf_counter()
        model = train_from_config(run)[0]
        seconds = time.perf_counter() - t0
        ll = log_likelihood(model, test.to(device), method="ais", ais_chains=100,
                            ais_steps=ais_steps, train_data=train.to(device),
                            generator=torch.Generator(device=device).manual_seed(0))
        out[p] = {"train_seconds": seconds, "log_likelihood": ll["log_likelihood"],
                  "lower": ll["log_likelihood_lower"], "upper": ll["log_likelihood_upper"],
                  "ais_reliable": ll["ais_reliable"]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("BOLTZKIT_DATA",
                                                        str(REPO.parent / "shared" / "data")))
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="gpu_check.json", help="the results as JSON")
    p.add_argument("--parity-epochs", type=int, default=20)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes: checks the script, measures nothing")
    p.add_argument("--skip-tests", action="store_true", help="skip the CUDA tests")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --device cpu --smoke to check the script)",
              file=sys.stderr)
        return 2
    from boltzkit.data import load_mnist
    from boltzkit.rbm import make_rbm

    limit = 300 if args.smoke else None
    train, _ = load_mnist(args.data_dir, "train", "threshold", limit=limit)
    test, _ = load_mnist(args.data_dir, "test", "threshold", limit=100 if args.smoke else None)
    train, test = train.to(device), test.to(device)
    precisions = ["float32", "tf32", "bfloat16"] if device.type == "cuda" else [
        "float32", "bfloat16"]
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
                    else "cpu", "torch": torch.__version__, "smoke": args.smoke}
    if not args.skip_tests and device.type == "cuda":
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-k", "cuda or gpu or device", str(REPO / "tests")],
                              capture_output=True, text=True, cwd=REPO)
        report["tests"] = {"returncode": proc.returncode, "seconds": time.perf_counter() - t0,
                           "tail": proc.stdout[-2000:]}
        print(proc.stdout[-600:], flush=True)
    steps, chains, sweeps = (20, 5, 2) if args.smoke else (14500, 100, 200)
    rbm = make_rbm(784, 500, seed=0).to(device)
    rbm.init_visible_bias(train[:10000])
    rbm.requires_grad_(False)
    speed = {}
    for prec in precisions:
        row = {"gemm_gflops": gemm_rate(device, prec)}
        for method in ("cd", "pcd"):
            row[f"{method}1_epoch_s"] = train_epoch(train, method, prec, device)["seconds"]
        row["gibbs_10k_s"] = gibbs(rbm, 10000 if not args.smoke else 200, sweeps, prec, device)
        row["ais"] = ais(rbm, train[:10000], chains, steps, prec, device)
        speed[prec] = row
        print(f"{prec:9s} " + json.dumps(row), flush=True)
    report["speed"] = speed
    report["parity"] = parity(train, test, 1 if args.smoke else args.parity_epochs,
                              20 if args.smoke else 14500, device, ["float32", "bfloat16"])
    print(json.dumps(report["parity"], indent=1), flush=True)
    out = Path(os.environ.get("OUT", ".")) / args.out if not Path(args.out).is_absolute() \
        else Path(args.out)
    out.write_text(json.dumps(report, indent=1))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
