"""Data-parallel throughput: 1 process x T threads against T processes x 1 thread.

CD-1 on a 784 x 500 Bernoulli RBM, global batch 100, MNIST (thresholded; the first
``--limit`` training images), trained by the library's own ``Trainer``.  The first epoch
is a warm-up and is not timed.  Prints samples/s of both set-ups and their ratio (the
processes summing gradients through shared memory (BOLTZKIT_ALLREDUCE=shm) and through
gloo's TCP all-reduce), the same processes trained side by side with no communication at
all (the bound), the measured compute time and all-reduce time per step
(``Trainer(profile=True)``), an isolated gloo all-reduce micro-benchmark at several message
sizes (fitted to the alpha-beta model t = alpha + bytes / bandwidth), and a projection to
8 workers from those numbers.

    python benchmarks/bench_distributed.py --limit 10000 --epochs 3 --json dist.json

On a machine that is busy with other work the timings are noisy: rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

N_VISIBLE, N_HIDDEN, BATCH, LR, MOMENTUM, SEED = 784, 500, 100, 0.05, 0.5, 0
MICRO_SIZES = (1_000, 10_000, 100_000, N_VISIBLE * N_HIDDEN + N_VISIBLE + N_HIDDEN + 1)


def _load(args: dict) -> torch.Tensor:
    from boltzkit.data import load_dataset

    data, _ = load_dataset("mnist", split="train", data_dir=args["data_dir"],
                           binarize="threshold", seed=0, limit=args["limit"])
    return data


def _micro_allreduce(reps: int = 30) -> dict[str, float]:
    """Median seconds of one all-reduce of float32 buffers of several sizes."""
    import torch.distributed as dist

    out = {}
    for n in MICRO_SIZES:
        buf = torch.ones(n)
        for _ in range(5):
            dist.all_reduce(buf)
        times = []
        for _ in range(reps):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(buf)
            times.append(time.perf_counter() - t0)
        out[str(n)] = statistics.median(times)
    return out


def _worker(rank: int, world: int, port: int, args: dict, out_dir: str) -> None:
    """Train once (with ``world`` ranks) and write this rank's timings as JSON.

    ``args["independent"]``: ``world`` processes train side by side WITHOUT a process
    group, each on its own 1/world of the rows at batch B/world: the same compute per
    step as a data-parallel rank and no communication, the bound any data-parallel
    scheme on these cores can reach.
    """
    torch.set_num_threads(args["threads_per_proc"])
    independent = args.get("independent", False)
    from boltzkit import distributed
    from boltzkit.rbm import make_rbm
    from boltzkit.sampling import ContrastiveDivergence
    from boltzkit.training import Trainer

    if args.get("transport"):
        os.environ[distributed.ALLREDUCE_ENV] = args["transport"]
    if world > 1 and not independent:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                          LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
        distributed.init_from_env("cpu")
    try:
        data = _load(args)
        batch = BATCH
        if independent:
            lo, hi = distributed.shard_bounds(data.shape[0], rank, world)
            data = data[lo:hi]
            batch = BATCH // world
        model = make_rbm(N_VISIBLE, N_HIDDEN, seed=SEED)
        trainer = Trainer(model, ContrastiveDivergence(1), epochs=args["epochs"] + 1,
                          batch_size=batch, lr=LR, momentum=MOMENTUM, seed=SEED,
                          profile=True, progress=False)
        trainer.fit(data)
        timed = trainer.history[1:]  # epoch 1 is the warm-up
        res = {"rank": rank, "world": world, "threads": torch.get_num_threads(),
               "n_train": int(data.shape[0]), "epochs_timed": len(timed),
               "epoch_times": [h["time"] for h in timed],
               "compute_time_per_step": statistics.mean(h["compute_time"] for h in timed),
               "allreduce_time_per_step": statistics.mean(h["allreduce_time"] for h in timed),
               "recon_error": timed[-1]["recon_error"]}
        if world > 1 and not independent:
            res["micro_allreduce_s"] = _micro_allreduce()
        Path(out_dir, f"w{world}-r{rank}.json").write_text(json.dumps(res))
    finally:
        distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(world: int, threads_per_proc: int, args: dict, independent: bool = False,
         transport: str | None = None) -> list[dict]:
    cfg = {**args, "threads_per_proc": threads_per_proc, "independent": independent,
           "transport": transport}
    with tempfile.TemporaryDirectory() as tmp:
        if world == 1:
            _worker(0, 1, 0, cfg, tmp)
        else:
            torch.multiprocessing.spawn(_worker, args=(world, _free_port(), cfg, tmp),
                                        nprocs=world, join=True)
        return [json.loads(Path(tmp, f"w{world}-r{r}.json").read_text()) for r in range(world)]


def _fit_alpha_beta(micro: dict[str, float]) -> tuple[float, float]:
    """Least-squares t = alpha + beta * bytes over the micro-benchmark sizes."""
    xs = [4.0 * int(k) for k in micro]
    ys = list(micro.values())
    mx, my = statistics.mean(xs), statistics.mean(ys)
    beta = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs)
    return max(my - beta * mx, 0.0), max(beta, 0.0)


def project(P: int, compute_per_sample: float, overhead: float, alpha: float, beta: float,
            n_bytes: float, batch: int) -> dict[str, float]:
    """Seconds per global step on P workers (ring all-reduce model, see main's docs)."""
    ring = 2 * (P - 1) * alpha + 2 * (P - 1) / P * n_bytes * beta if P > 1 else 0.0
    strong = overhead + compute_per_sample * batch / P + ring  # global batch fixed
    weak = overhead + compute_per_sample * batch + ring  # batch per worker fixed
    return {"strong_step_s": strong, "weak_step_s": weak, "allreduce_s": ring}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="MNIST directory (else $BOLTZKIT_DATA)")
    p.add_argument("--limit", type=int, default=10_000, help="training images used")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (after 1 warm-up)")
    p.add_argument("--procs", type=int, default=2, help="processes (= cores) compared")
    p.add_argument("--project-workers", type=int, default=8)
    p.add_argument("--gpu-step-ms", type=float, default=None,
                   help="measured ms of one CD-1 step (B=100) on ONE GPU (e.g. from "
                        "bench_speed.py --device cuda): adds an 8-GPU projection")
    p.add_argument("--gpu-overhead-ms", type=float, default=0.1,
                   help="part of --gpu-step-ms that does not shrink with the batch (kernel "
                        "launches; assumption)")
    p.add_argument("--link-alpha-us", type=float, default=10.0,
                   help="NCCL all-reduce latency per ring step (assumption)")
    p.add_argument("--link-GBps", type=float, default=100.0,
                   help="NCCL bus bandwidth between GPUs (assumption; NVLink-class)")
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds of all set-ups, taken in turn; each keeps its best")
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error("--repeats must be >= 1")
    args = {"data_dir": a.data_dir, "limit": a.limit, "epochs": a.epochs}
    P = a.procs
    # The set-ups take turns, --repeats rounds, and each keeps its best round: on a
    # shared VM one OpenMP run can lose a third of its speed to a neighbour.
    setups = {"single": lambda: _run(1, P, args), "shm": lambda: _run(P, 1, args, transport="shm"),
              "gloo": lambda: _run(P, 1, args, transport="collective"),
              "alone": lambda: _run(P, 1, args, independent=True)}
    rounds: dict[str, list[tuple[float, list[dict]]]] = {k: [] for k in setups}
    for _ in range(a.repeats):
        for key, start in setups.items():
            runs = start()
            # data-parallel ranks share the rows; independent processes each train their own
            shares = runs if key == "alone" else runs[:1]
            rows = sum(r["n_train"] * r["epochs_timed"] for r in shares)
            rounds[key].append((rows / max(sum(r["epoch_times"]) for r in runs), runs))
    best = {k: max(v, key=lambda t: t[0]) for k, v in rounds.items()}
    single, multi, gloo, alone = (best[k][1] for k in ("single", "shm", "gloo", "alone"))
    single = single[0]
    tp_single, tp_multi, tp_gloo, tp_alone = (best[k][0] for k in ("single", "shm", "gloo",
                                                                     "alone"))
    steps = single["n_train"] / BATCH
    compute_multi = statistics.mean(r["compute_time_per_step"] for r in multi)
    ar_multi = statistics.mean(r["allreduce_time_per_step"] for r in multi)
    ar_gloo = statistics.mean(r["allreduce_time_per_step"] for r in gloo)
    compute_gloo = statistics.mean(r["compute_time_per_step"] for r in gloo)
    micro = gloo[0]["micro_allreduce_s"]
    alpha, beta = _fit_alpha_beta(micro)
    n_bytes = 4.0 * MICRO_SIZES[-1]
    # Compute per step on one 1-thread worker is overhead + per-sample cost x local batch;
    # two points (local batch 100 on T threads is not one 1-thread worker) are not
    # available, so the per-step compute of a 1-thread worker is treated as all
    # batch-proportional (an optimistic projection for small local batches).
    per_sample = compute_multi / (BATCH / P)
    proj = {str(k): project(k, per_sample, 0.0, alpha, beta, n_bytes, BATCH)
            for k in (1, P, a.project_workers)}
    base = proj["1"]["strong_step_s"]
    for k, v in proj.items():
        v["strong_speedup"] = base / v["strong_step_s"]  # global batch 100 on k workers
        v["weak_speedup"] = int(k) * base / v["weak_step_s"]  # 100 per worker: samples/s
    gpu = None
    if a.gpu_step_ms is not None:
        over = a.gpu_overhead_ms * 1e-3
        per = max(a.gpu_step_ms * 1e-3 - over, 0.0) / BATCH
        gpu = {str(k): project(k, per, over, a.link_alpha_us * 1e-6, 1e-9 / a.link_GBps,
                               n_bytes, BATCH) for k in (1, a.project_workers)}
        for k, v in gpu.items():
            v["strong_speedup"] = gpu["1"]["strong_step_s"] / v["strong_step_s"]
            v["weak_speedup"] = int(k) * gpu["1"]["strong_step_s"] / v["weak_step_s"]
    report = {
        "meta": {"job": f"CD-1 {N_VISIBLE}x{N_HIDDEN} B={BATCH} (global), MNIST first "
                        f"{single['n_train']} train images, threshold-binarised, "
                        f"{single['epochs_timed']} timed epochs after 1 warm-up",
                 "procs": P, "cpu_count": os.cpu_count(), "torch": torch.__version__,
                 "platform": platform.platform(), "load_avg": os.getloadavg()},
        "single": {"threads": single["threads"], "samples_per_s": tp_single,
                   "step_s": 1.0 / tp_single * BATCH,
                   "compute_time_per_step": single["compute_time_per_step"]},
        "multi": {"procs": P, "threads_each": multi[0]["threads"], "samples_per_s": tp_multi,
                  "step_s": 1.0 / tp_multi * BATCH, "compute_time_per_step": compute_multi,
                  "allreduce_time_per_step": ar_multi,
                  "allreduce_fraction": ar_multi / (compute_multi + ar_multi),
                  "recon_error": multi[0]["recon_error"]},
        "ratio_multi_over_single": tp_multi / tp_single,
        "samples_per_s_each_round": {k: [t for t, _ in v] for k, v in rounds.items()},
        "multi_gloo_tcp": {"samples_per_s": tp_gloo, "step_s": 1.0 / tp_gloo * BATCH,
                           "compute_time_per_step": compute_gloo,
                           "allreduce_time_per_step": ar_gloo,
                           "ratio_over_single": tp_gloo / tp_single},
        "no_communication_bound": {"samples_per_s": tp_alone,
                                   "step_s": 1.0 / tp_alone * BATCH,
                                   "ratio_over_single": tp_alone / tp_single},
        "micro_allreduce_s": micro,
        "alpha_beta": {"alpha_s": alpha, "bandwidth_GBps": (1e-9 / beta) if beta else None},
        "projection": proj,
        "gpu_projection": gpu and {"inputs": {"gpu_step_ms": a.gpu_step_ms,
                                              "gpu_overhead_ms": a.gpu_overhead_ms,
                                              "link_alpha_us": a.link_alpha_us,
                                              "link_GBps": a.link_GBps}, **gpu},
        "steps_per_epoch": steps,
    }
    s, m = report["single"], report["multi"]
    print(f"job: {report['meta']['job']}; best of {a.repeats} rounds; load average "
          f"{report['meta']['load_avg']}")
    print("samples/s each round: " + "; ".join(
        f"{k} " + ", ".join(f"{t:.0f}" for t in v)
        for k, v in report["samples_per_s_each_round"].items()))
    print(f"1 process x {s['threads']} threads : {s['samples_per_s']:9.0f} samples/s "
          f"({s['step_s'] * 1e3:.2f} ms/step)")
    print(f"{P} processes x 1 thread, shared-memory sum (BOLTZKIT_ALLREDUCE=shm): "
          f"{m['samples_per_s']:9.0f} samples/s ({m['step_s'] * 1e3:.2f} ms/step: compute "
          f"{m['compute_time_per_step'] * 1e3:.2f} ms, all-reduce "
          f"{m['allreduce_time_per_step'] * 1e3:.2f} ms incl. waiting)")
    print(f"ratio (multi / single)   : {report['ratio_multi_over_single']:.3f} (target >= 0.8)")
    g = report["multi_gloo_tcp"]
    print(f"{P} processes x 1 thread, gloo all-reduce (BOLTZKIT_ALLREDUCE=collective): "
          f"{g['samples_per_s']:9.0f} samples/s ({g['step_s'] * 1e3:.2f} ms/step: compute "
          f"{g['compute_time_per_step'] * 1e3:.2f} ms, all-reduce "
          f"{g['allreduce_time_per_step'] * 1e3:.2f} ms), ratio {g['ratio_over_single']:.3f}")
    b = report["no_communication_bound"]
    print(f"{P} independent processes x 1 thread, B={BATCH // P} each, no communication: "
          f"{b['samples_per_s']:9.0f} samples/s ({b['step_s'] * 1e3:.2f} ms per {BATCH} "
          f"samples), ratio {b['ratio_over_single']:.3f}: the bound of any data-parallel "
          "scheme on these cores")
    print("isolated all-reduce (gloo): " + ", ".join(
        f"{int(k) * 4 / 1e6:.3g} MB {v * 1e3:.3f} ms" for k, v in micro.items()))
    bw = report["alpha_beta"]["bandwidth_GBps"]
    print(f"alpha-beta fit: alpha {alpha * 1e6:.1f} us, bandwidth "
          f"{bw:.2f} GB/s" if bw else f"alpha-beta fit: alpha {alpha * 1e6:.1f} us")
    print(f"projection (ring all-reduce of {n_bytes / 1e6:.2f} MB per step, "
          "t = compute(local batch) + 2(P-1) alpha + 2(P-1)/P bytes/bandwidth):")
    for k, v in proj.items():
        print(f"  {k:>2} workers: global B=100 {v['strong_step_s'] * 1e3:7.2f} ms/step "
              f"(x{v['strong_speedup']:.2f}); B=100 per worker {v['weak_step_s'] * 1e3:7.2f} "
              f"ms/step (x{v['weak_speedup']:.2f} samples/s)")
    if gpu is None:
        print("8-GPU projection: pass --gpu-step-ms (one GPU's measured CD-1 step) to add it")
    else:
        print(f"GPU projection (measured {a.gpu_step_ms} ms/step on one GPU; assumed "
              f"{a.gpu_overhead_ms} ms fixed per step, NCCL {a.link_alpha_us} us per ring step, "
              f"{a.link_GBps} GB/s):")
        for k, v in gpu.items():
            print(f"  {k:>2} GPUs: global B=100 {v['strong_step_s'] * 1e3:7.3f} ms/step "
                  f"(x{v['strong_speedup']:.2f}); B=100 per GPU {v['weak_step_s'] * 1e3:7.3f} "
                  f"ms/step (x{v['weak_speedup']:.2f} samples/s)")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
