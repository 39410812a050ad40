"""Speed benchmark: boltzkit against a hand-written torch loop, scikit-learn and learnergy.

One process, one run, the same data and settings for every contestant.  For each job it
counts the FLOPs of the job's GEMMs, measures this machine's best matmul rate for exactly
those GEMM shapes (same threads, same run) and prints, per contestant, min and median
seconds, the ratio to that roofline and the ratio to boltzkit.  See benchmarks/README.md.

    python benchmarks/bench_speed.py --json bench.json          # the full benchmark
    python benchmarks/bench_speed.py --quick --jobs cd1,gibbs1k  # a fast smoke run
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

try:  # imported as benchmarks.bench_speed
    from . import peers
except ImportError:  # run as a script, or with benchmarks/ on sys.path
    import peers

REPO = Path(__file__).resolve().parents[1]

N_VISIBLE = 784
BATCH = 100
LR = 0.05
MOMENTUM = 0.5
SEED = 0
AIS_CHAINS = 100
AIS_STEPS = 14500
GIBBS_SWEEPS = {1000: 200, 10000: 20}  # the same 200,000 chain-sweeps for both sizes

ALL_JOBS = ("cd1", "pcd1", "pcd10", "cd1_2000", "ais", "gibbs1k", "gibbs10k")
ALL_CONTESTANTS = ("boltzkit", "torch", "sklearn", "learnergy")

#: A runner takes ``warm`` (True: a short untimed warm-up run) and returns seconds, or
#: (seconds, extra-info dict).
Runner = Callable[[bool], "float | tuple[float, dict]"]


# =============================================================================== GEMM roofline
@dataclass(frozen=True)
class Gemm:
    """C(m, n) = op(A) @ op(B) with inner size k; ``layout`` says which operand is transposed.

    "nn": (m x k) @ (k x n), e.g. v @ W; "nt": (m x k) @ (n x k)^T, e.g. h @ W^T;
    "tn": (k x m)^T @ (k x n), e.g. the weight gradient v^T @ h.
    """

    m: int
    k: int
    n: int
    layout: str

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n

    def __str__(self) -> str:
        return f"{self.layout}:{self.m}x{self.k}x{self.n}"


def time_gemm(g: Gemm, budget_s: float, min_calls: int = 10, max_calls: int = 400,
              dtype: torch.dtype = torch.float32) -> float:
    """Minimum seconds of one ``torch.mm`` of this shape in ``dtype`` (into a preallocated
    output)."""
    gen = torch.Generator().manual_seed(1)
    if g.layout == "nn":
        a, b = torch.rand(g.m, g.k, generator=gen), torch.rand(g.k, g.n, generator=gen)
    elif g.layout == "nt":
        a, b = torch.rand(g.m, g.k, generator=gen), torch.rand(g.n, g.k, generator=gen).t()
    elif g.layout == "tn":
        a, b = torch.rand(g.k, g.m, generator=gen).t(), torch.rand(g.k, g.n, generator=gen)
    else:
        raise ValueError(g.layout)
    a, b = a.to(dtype), b.to(dtype)
    out = torch.empty(g.m, g.n, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b, out=out)
    best, spent, calls = math.inf, 0.0, 0
    while calls < min_calls or (spent < budget_s and calls < max_calls):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        dt = time.perf_counter() - t0
        best, spent, calls = min(best, dt), spent + dt, calls + 1
    return best


_GEMM_CACHE: dict[tuple[Gemm, torch.dtype], float] = {}


def gemm_min_time(g: Gemm, budget_s: float, min_calls: int = 10, refresh: bool = False,
                  dtype: torch.dtype = torch.float32) -> float:
    """Cached per shape: jobs that share a shape share its measurement (same run).

    ``refresh=True`` times the shape again and keeps the smaller time: the benchmark
    does that between the rounds of timed runs, so that on a machine whose load
    drifts the roofline is the best rate seen while the job ran, not at its start.
    """
    key = (g, dtype)
    if key not in _GEMM_CACHE or refresh:
        t = time_gemm(g, budget_s, min_calls, dtype=dtype)
        _GEMM_CACHE[key] = min(t, _GEMM_CACHE.get(key, math.inf))
    return _GEMM_CACHE[key]


def train_gemms(rows: int, n_hidden: int, k: int, persistent: bool, chains: int) -> list[Gemm]:
    """The GEMMs boltzkit does for one batch of ``rows`` data rows: 2k + 3 for CD-k and PCD-k.

    v0@W (rows) | h@W^T (m) | (k-1) x [v@W, h@W^T] (m) | vk@W (m) | grad: 2 x tn
    with m = rows model particles for CD and m = ``chains`` for PCD.  The first hidden
    draw needs no GEMM of its own: CD draws it from the data's hidden means (v0@W), PCD
    from the chains' hidden field kept from the last update (vk@W of the previous batch;
    ``PersistentCD`` and ``FusedBernoulliSGD`` both keep it; the first batch of a run
    computes it once, not counted).  The weight gradient counts as two GEMMs, data
    (v0^T @ h0) and model (vk^T @ hk); boltzkit and the tight loop stack them into one
    GEMM of the same FLOPs (boltzkit's also carries one extra row and column for the two
    bias gradients, +0.3 % FLOPs, not counted).  The tight PCD loop recomputes the
    chains' field at the start of each update: 2k + 4, one GEMM more than counted here.
    """
    nv, nh = N_VISIBLE, n_hidden
    m = chains if persistent else rows
    out = [Gemm(rows, nv, nh, "nn"), Gemm(m, nh, nv, "nt")]
    out += [Gemm(m, nv, nh, "nn"), Gemm(m, nh, nv, "nt")] * (k - 1)
    out += [Gemm(m, nv, nh, "nn"), Gemm(nv, rows, nh, "tn"), Gemm(nv, m, nh, "tn")]
    return out


# ================================================================================= the jobs
@dataclass
class Job:
    name: str
    title: str
    flop_note: str
    gemms: list[tuple[Gemm, int]]  # (shape, number of calls in the job)
    contestants: dict[str, tuple[str, Runner]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    unit: str | None = None  # e.g. chain-sweeps, for a throughput column
    units_per_run: float = 0.0

    @property
    def flops(self) -> int:
        return sum(g.flops * n for g, n in self.gemms)


def _count(gemm_lists: list[list[Gemm]]) -> list[tuple[Gemm, int]]:
    counts: dict[Gemm, int] = {}
    for lst in gemm_lists:
        for g in lst:
            counts[g] = counts.get(g, 0) + 1
    return list(counts.items())


def batch_sizes(n: int, batch: int) -> list[int]:
    return [min(batch, n - i) for i in range(0, n, batch)]


def warm_rows(n: int, batch: int) -> int:
    """Rows for a warm-up run: a tenth of the data, at least 5 batches."""
    return min(n, max(5 * batch, n // 10))


# ---------------------------------------------------------------------------------- boltzkit
def boltzkit_train(data: torch.Tensor, n_hidden: int, method: str, k: int, batch: int,
                   lr: float, momentum: float, seed: int, fused: bool = True,
                   precision: str = "float32") -> tuple[float, dict]:
    """Wall time of ``Trainer.fit`` for one epoch (the Trainer is built outside the timing).

    ``fused=False`` times the general path the Trainer takes for every other model, with
    the kernel planner (``boltzkit.kernels.plan_step``) made to decline, to show what the
    fused step buys.
    """
    from boltzkit import LikelihoodGradient, Trainer, kernels, make_rbm, make_sampler

    model = make_rbm(data.shape[1], n_hidden, seed=seed)
    sampler = make_sampler(method, k=k, chains=batch if method == "pcd" else None)
    trainer = Trainer(model, sampler, LikelihoodGradient(), epochs=1, batch_size=batch, lr=lr,
                      momentum=momentum, seed=seed, progress=False, precision=precision)
    plan = kernels.plan_step
    if not fused:
        kernels.plan_step = lambda *a, **kw: None
    try:
        t0 = time.perf_counter()
        history = trainer.fit(data)
        wall = time.perf_counter() - t0
    finally:
        kernels.plan_step = plan
    return wall, {"epoch_loop_s": history[-1]["time"]}


def boltzkit_gibbs(model, v0: torch.Tensor, sweeps: int, seed: int, grad: bool,
                   precision: str = "float32") -> float:
    from boltzkit.precision import computing

    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    with torch.set_grad_enabled(grad), computing(precision):
        model.gibbs(v0, sweeps, generator=gen)
    return time.perf_counter() - t0


def find_ais():
    """boltzkit.metrics.ais_log_z, or a reason why it cannot be used yet."""
    try:
        from boltzkit.metrics import ais_log_z
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available yet"
        return None, f"boltzkit.metrics.ais_log_z is not importable ({type(exc).__name__}: {exc})"
    return ais_log_z, None


_AIS_NAMES = {
    "chains": ("n_chains", "chains", "n_runs", "runs", "num_chains", "n_particles"),
    "steps": ("n_steps", "steps", "n_betas", "num_steps", "n_temperatures", "n_intermediate"),
    "data": ("data", "base_data", "train_data", "base_rate_data"),
    "seed": ("seed",),
    "generator": ("generator",),
}


def ais_kwargs(fn, chains: int, steps: int, data: torch.Tensor, seed: int) -> dict:
    """Map the benchmark's settings onto ais_log_z's parameter names (its API may vary)."""
    params = list(inspect.signature(fn).parameters.values())[1:]  # the first one: the model
    values = {"chains": chains, "steps": steps, "data": data, "seed": seed,
              "generator": torch.Generator().manual_seed(seed)}
    kwargs, seen = {}, set()
    for p in params:
        for key, names in _AIS_NAMES.items():
            if p.name in names:
                kwargs[p.name] = values[key]
                seen.add(key)
        if (p.default is inspect.Parameter.empty and p.name not in kwargs
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)):
            raise TypeError(f"ais_log_z needs {p.name!r}, which the benchmark cannot map")
    if not {"chains", "steps"} <= seen:
        raise TypeError(f"cannot find the chain and step parameters in ais_log_z"
                        f"{inspect.signature(fn)}")
    return kwargs


def boltzkit_ais(fn, model, chains: int, steps: int, data: torch.Tensor,
                 seed: int, precision: str = "float32") -> tuple[float, dict]:
    kwargs = ais_kwargs(fn, chains, steps, data, seed)
    if precision != "float32":
        kwargs["precision"] = precision
    t0 = time.perf_counter()
    with torch.no_grad():
        result = fn(model, **kwargs)
    wall = time.perf_counter() - t0
    log_z = result
    if isinstance(result, tuple):
        log_z = result[0]
    elif isinstance(result, dict):
        log_z = result.get("log_z", result.get("logz"))
    elif hasattr(result, "log_z"):
        log_z = result.log_z
    try:
        return wall, {"log_z": float(log_z)}
    except (TypeError, ValueError):
        return wall, {}


# ------------------------------------------------------------------------- tight torch loops
def tight_train(data: torch.Tensor, n_hidden: int, k: int, persistent: bool, batch: int,
                lr: float, momentum: float, seed: int, chains: int | None = None,
                params_out: dict | None = None, low: torch.dtype | None = None) -> float:
    """CD-k / PCD-k, one epoch, written by hand: preallocated buffers, fused bias adds
    (addmm), rand < p Bernoulli draws in place, one stacked GEMM for the weight gradient
    ([v_data; v_model]^T @ [-h_data / B; h_model / M]), SGD with momentum in place (the
    torch.optim.SGD rule: buf = momentum * buf + grad; W -= lr * buf).
    Shuffled batches like boltzkit's Trainer.  Returns the seconds after the weight init;
    ``params_out`` (a dict), if given, receives the trained W, b, c.  ``low`` (e.g.
    torch.bfloat16): the same loop with every GEMM's operands cast to it (a copy of W made
    once per update) and its products cast back; weights, sigmoids, draws and updates stay
    float32 (the naive mixed-precision loop).
    """
    g = torch.Generator().manual_seed(seed)
    n, nv = data.shape
    nh = n_hidden
    W = torch.randn(nv, nh, generator=g) * 0.01
    t0 = time.perf_counter()
    b, c = torch.zeros(nv), torch.zeros(nh)
    mW, mb, mc = torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(c)
    gW, gb, gc = torch.empty_like(W), torch.empty_like(b), torch.empty_like(c)
    C = (chains or batch) if persistent else batch
    V = torch.empty(batch + C, nv)  # rows [B - bs, B): data; rows [B, B + m): model particles
    H = torch.empty(batch + C, nh)  # hidden means, later scaled for the stacked gradient
    Hs = torch.empty(max(batch, C), nh)  # hidden samples
    Pv = torch.empty(C, nv)  # visible means
    if persistent:
        V[batch:].bernoulli_(0.5, generator=g)  # random start, as boltzkit's init_state
    Wt = W.t()
    Wl = W.to(low) if low is not None else None

    def field(bias, x, w, out):  # bias + x @ w (w: W or W^T), in the GEMM dtype
        if low is None:
            return torch.addmm(bias, x, w, out=out)
        wl = Wl if w is W else Wl.t()
        return torch.add(torch.mm(x.to(low), wl), bias, out=out)

    perm = torch.randperm(n, generator=g)
    start = 0
    for bs in batch_sizes(n, batch):
        idx = perm[start:start + bs]
        start += bs
        m = C if persistent else bs
        vd, hd = V[batch - bs:batch], H[batch - bs:batch]
        vm, hm = V[batch:batch + m], H[batch:batch + m]
        hs, pv = Hs[:m], Pv[:m]
        torch.index_select(data, 0, idx, out=vd)
        field(c, vd, W, hd).sigmoid_()
        if persistent:
            sweeps, h_prob = k, hm
        else:  # CD: the first hidden draw comes from the data's means
            hs.uniform_(generator=g).lt_(hd)
            field(b, hs, Wt, pv).sigmoid_()
            vm.uniform_(generator=g).lt_(pv)
            sweeps, h_prob = k - 1, hm
        for _ in range(sweeps):
            field(c, vm, W, h_prob).sigmoid_()
            hs.uniform_(generator=g).lt_(h_prob)
            field(b, hs, Wt, pv).sigmoid_()
            vm.uniform_(generator=g).lt_(pv)
        field(c, vm, W, hm).sigmoid_()
        # Descent direction (model - data), as torch.optim expects.
        hd.mul_(-1.0 / bs)
        hm.mul_(1.0 / m)
        stacked_v, stacked_h = V[batch - bs:batch + m], H[batch - bs:batch + m]
        if low is None:
            torch.mm(stacked_v.t(), stacked_h, out=gW)
        else:
            gW.copy_(torch.mm(stacked_v.t().to(low), stacked_h.to(low)))
        torch.sum(stacked_h, 0, out=gc)
        torch.mean(vm, 0, out=gb)
        gb.sub_(vd.mean(0))
        for p, buf, grad in ((W, mW, gW), (b, mb, gb), (c, mc, gc)):
            buf.mul_(momentum).add_(grad)
            p.sub_(buf, alpha=lr)
        if low is not None:
            Wl.copy_(W)
    elapsed = time.perf_counter() - t0
    if params_out is not None:
        params_out.update(W=W, b=b, c=c)
    return elapsed


def tight_gibbs(W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, v0: torch.Tensor,
                sweeps: int, seed: int) -> float:
    """``sweeps`` block-Gibbs sweeps v -> h -> v: 2 addmm, 2 sigmoid_, 2 uniform_, 2 lt_."""
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    v = v0.clone()
    ph = torch.empty(v.shape[0], W.shape[1])
    hs = torch.empty_like(ph)
    pv = torch.empty_like(v)
    Wt = W.t()
    for _ in range(sweeps):
        torch.addmm(c, v, W, out=ph).sigmoid_()
        hs.uniform_(generator=g).lt_(ph)
        torch.addmm(b, hs, Wt, out=pv).sigmoid_()
        v.uniform_(generator=g).lt_(pv)
    return time.perf_counter() - t0


def tight_ais(W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, b_base: torch.Tensor,
              chains: int, steps: int, seed: int) -> tuple[float, dict]:
    """AIS from the base-rate model (visible bias ``b_base``, no weights) to (W, b, c).

    Linear beta schedule of ``steps`` steps.  Per step: one GEMM v@W for the hidden input
    (shared by the weight update and the hidden draw) and one h@W^T for the visible draw;
    log-weights accumulate in float64.  Returns seconds and the log Z estimate.
    """
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    nv, nh = W.shape
    betas = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64).tolist()
    db = b - b_base
    pv = torch.sigmoid(b_base).expand(chains, nv).contiguous()
    v = torch.empty(chains, nv).uniform_(generator=g).lt_(pv)
    field = torch.empty(chains, nh)
    tmp = torch.empty(chains, nh)
    hs = torch.empty(chains, nh)
    logw = torch.zeros(chains, dtype=torch.float64)
    sp = torch.nn.functional.softplus
    Wt = W.t()
    for i in range(1, steps + 1):
        b0, b1 = betas[i - 1], betas[i]
        torch.addmm(c, v, W, out=field)
        # log p*_beta(v) = (1 - beta) b_A.v + beta b.v + sum_j softplus(beta (c + vW)_j)
        inc = (v @ db).mul_(b1 - b0)
        inc += sp(torch.mul(field, b1, out=tmp)).sum(1)
        inc -= sp(torch.mul(field, b0, out=tmp)).sum(1)
        logw += inc
        # Transition at beta_i: h ~ p(h | v), v ~ p(v | h).
        torch.mul(field, b1, out=tmp).sigmoid_()
        hs.uniform_(generator=g).lt_(tmp)
        torch.addmm(b, hs, Wt, out=pv).mul_(b1).add_(b_base, alpha=1.0 - b1).sigmoid_()
        v.uniform_(generator=g).lt_(pv)
    log_z_base = float(sp(b_base.double()).sum()) + nh * math.log(2.0)
    log_z = log_z_base + float(torch.logsumexp(logw, 0)) - math.log(chains)
    return time.perf_counter() - t0, {"log_z": log_z}


# ============================================================================ building jobs
def _random_rbm(n_hidden: int, data: torch.Tensor, seed: int):
    """A boltzkit RBM with N(0, 0.01) weights and the data's marginals as visible bias."""
    from boltzkit import make_rbm

    model = make_rbm(N_VISIBLE, n_hidden, seed=seed)
    model.init_visible_bias(data)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _params(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (model.connection.weights.detach(), model.visible.bias.detach(),
            model.hidden.bias.detach())


def make_train_job(name: str, data: torch.Tensor, n_hidden: int, method: str, k: int,
                   args) -> Job:
    n = data.shape[0]
    persistent = method == "pcd"
    label = f"{'PCD' if persistent else 'CD'}-{k}"
    sizes = batch_sizes(n, BATCH)
    gemms = _count([train_gemms(bs, n_hidden, k, persistent, BATCH) for bs in sizes])
    per_batch = len(train_gemms(BATCH, n_hidden, k, persistent, BATCH))
    chains = f", {BATCH} persistent chains" if persistent else ""
    job = Job(
        name=name,
        title=f"{label} {N_VISIBLE}x{n_hidden}, batch {BATCH}{chains}, one epoch of {n} MNIST "
              f"rows (threshold binarised), SGD lr {args.lr} momentum {args.momentum}",
        flop_note=f"{per_batch} GEMMs of {BATCH}x{N_VISIBLE}x{n_hidden} per batch x "
                  f"{len(sizes)} batches (v0@W, " + (
                      "h@W^T from the chains' kept hidden field" if persistent else
                      "h0@W^T") +
                  f", {k - 1} x [v@W, h@W^T], vk@W, weight gradient as 2 GEMMs: data and "
                  "model)",
        gemms=gemms,
    )
    wn = warm_rows(n, BATCH)

    def rows(warm: bool) -> torch.Tensor:
        return data[:wn] if warm else data

    job.contestants["boltzkit"] = ("boltzkit Trainer.fit", lambda warm: boltzkit_train(
        rows(warm), n_hidden, method, k, BATCH, args.lr, args.momentum, args.seed))
    job.contestants["boltzkit_general"] = (
        "boltzkit Trainer.fit, general path", lambda warm: boltzkit_train(
            rows(warm), n_hidden, method, k, BATCH, args.lr, args.momentum, args.seed,
            fused=False))
    job.contestants["torch"] = (f"tight torch {label} loop", lambda warm: tight_train(
        rows(warm), n_hidden, k, persistent, BATCH, args.lr, args.momentum, args.seed))
    if args.bf16:
        job.contestants["boltzkit_bf16"] = (
            "boltzkit Trainer.fit, bfloat16", lambda warm: boltzkit_train(
                rows(warm), n_hidden, method, k, BATCH, args.lr, args.momentum, args.seed,
                precision="bfloat16"))
        job.contestants["torch_bf16"] = (
            f"tight torch {label} loop, bfloat16 GEMMs", lambda warm: tight_train(
                rows(warm), n_hidden, k, persistent, BATCH, args.lr, args.momentum, args.seed,
                low=torch.bfloat16))
    if k == 1:
        np_data = data.numpy()
        job.contestants["sklearn"] = (
            "sklearn BernoulliRBM.fit (PCD-1!)", lambda warm: peers.sklearn_pcd1_epoch(
                np_data[:wn] if warm else np_data, n_hidden, BATCH, args.lr, args.seed,
                args.threads))
    if method == "cd" and k == 1:
        if peers.learnergy_version() is None:
            job.skipped["learnergy"] = ("not installed (pip install --no-deps learnergy; its "
                                        "Bernoulli RBM needs only torch)")
        else:
            job.contestants["learnergy"] = (
                "learnergy RBM.fit (CD-1)", lambda warm: peers.learnergy_cd1_epoch(
                    rows(warm), n_hidden, BATCH, args.lr, args.momentum, args.seed))
    return job


def make_ais_job(data: torch.Tensor, args) -> Job:
    chains, steps = args.ais_chains, args.ais_steps
    job = Job(
        name="ais",
        title=f"AIS log Z, {N_VISIBLE}x500, {chains} chains, {steps} steps, base-rate model",
        flop_note=f"2 GEMMs of {chains}x{N_VISIBLE}x500 per step (v@W for the weights and the "
                  f"hidden draw, h@W^T) x {steps} steps",
        gemms=[(Gemm(chains, N_VISIBLE, 500, "nn"), steps),
               (Gemm(chains, 500, N_VISIBLE, "nt"), steps)],
    )
    model = _random_rbm(500, data, args.seed)
    W, b, c = _params(model)
    b_base = b.clone()  # the base-rate model: the data's marginals
    with torch.no_grad():  # a model that differs from the base: some hidden bias too
        c.copy_(torch.randn(500, generator=torch.Generator().manual_seed(args.seed)) * 0.1)
    warm_steps = max(10, steps // 10)

    def n_steps(warm: bool) -> int:
        return warm_steps if warm else steps

    fn, why = find_ais()
    if fn is None:
        job.skipped["boltzkit"] = why
    else:
        try:
            ais_kwargs(fn, chains, steps, data, args.seed)
        except TypeError as exc:
            job.skipped["boltzkit"] = str(exc)
        else:
            job.contestants["boltzkit"] = ("boltzkit metrics.ais_log_z", lambda warm: boltzkit_ais(
                fn, model, chains, n_steps(warm), data, args.seed))
            if args.bf16:
                job.contestants["boltzkit_bf16"] = (
                    "boltzkit metrics.ais_log_z, bfloat16", lambda warm: boltzkit_ais(
                        fn, model, chains, n_steps(warm), data, args.seed, "bfloat16"))
    job.contestants["torch"] = ("tight torch AIS loop", lambda warm: tight_ais(
        W, b, c, b_base, chains, n_steps(warm), args.seed))
    return job


def make_gibbs_job(name: str, data: torch.Tensor, n_chains: int, args) -> Job:
    sweeps = args.gibbs_sweeps or GIBBS_SWEEPS[n_chains]
    if args.quick and not args.gibbs_sweeps:
        sweeps = max(1, sweeps // 10)
    job = Job(
        name=name,
        title=f"Gibbs sampling, {N_VISIBLE}x500, {n_chains} chains x {sweeps} sweeps",
        flop_note=f"2 GEMMs of {n_chains}x{N_VISIBLE}x500 per sweep (v@W, h@W^T) x {sweeps}",
        gemms=[(Gemm(n_chains, N_VISIBLE, 500, "nn"), sweeps),
               (Gemm(n_chains, 500, N_VISIBLE, "nt"), sweeps)],
        unit="chain-sweeps/s",
        units_per_run=float(n_chains * sweeps),
    )
    model = _random_rbm(500, data, args.seed)
    W, b, c = _params(model)
    v0 = model.visible.init_state(n_chains, torch.Generator().manual_seed(args.seed + 1))
    warm_sweeps = max(1, sweeps // 10)

    def n_sweeps(warm: bool) -> int:
        return warm_sweeps if warm else sweeps

    job.contestants["boltzkit"] = ("boltzkit RBM.gibbs (no_grad)", lambda warm: boltzkit_gibbs(
        model, v0, n_sweeps(warm), args.seed, grad=False))
    job.contestants["boltzkit_grad"] = (
        "boltzkit RBM.gibbs (grad mode on)", lambda warm: boltzkit_gibbs(
            _grad_model(model), v0, n_sweeps(warm), args.seed, grad=True))
    job.contestants["torch"] = ("tight torch Gibbs loop", lambda warm: tight_gibbs(
        W, b, c, v0, n_sweeps(warm), args.seed))
    if args.bf16:
        job.contestants["boltzkit_bf16"] = (
            "boltzkit RBM.gibbs, bfloat16", lambda warm: boltzkit_gibbs(
                model, v0, n_sweeps(warm), args.seed, grad=False, precision="bfloat16"))
    job.contestants["sklearn"] = ("sklearn BernoulliRBM.gibbs", lambda warm: peers.sklearn_gibbs(
        W, b, c, v0, n_sweeps(warm), args.seed, args.threads))
    return job


def _grad_model(model):
    """The same model with requires_grad on, as a freshly built or loaded one has it."""
    import copy

    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(True)
    return m


def build_job(name: str, data: torch.Tensor, args) -> Job:
    if name == "cd1":
        return make_train_job(name, data, 500, "cd", 1, args)
    if name == "pcd1":
        return make_train_job(name, data, 500, "pcd", 1, args)
    if name == "pcd10":
        return make_train_job(name, data, 500, "pcd", 10, args)
    if name == "cd1_2000":
        return make_train_job(name, data, 2000, "cd", 1, args)
    if name == "ais":
        return make_ais_job(data, args)
    if name == "gibbs1k":
        return make_gibbs_job(name, data, 1000, args)
    if name == "gibbs10k":
        return make_gibbs_job(name, data, 10000, args)
    raise ValueError(f"unknown job {name!r}: choose from {', '.join(ALL_JOBS)}")


# ================================================================================ running
def selected(job: Job, contestants: set[str]) -> dict[str, tuple[str, Runner]]:
    base = {"boltzkit_grad": "boltzkit", "boltzkit_general": "boltzkit",
            "boltzkit_bf16": "boltzkit", "torch_bf16": "torch"}
    return {k: v for k, v in job.contestants.items() if base.get(k, k) in contestants}


def _split(res) -> tuple[float, dict]:
    if isinstance(res, tuple):
        return float(res[0]), dict(res[1])
    return float(res), {}


def run_job(job: Job, args, contestants: set[str]) -> dict:
    runners = selected(job, contestants)
    budget, min_calls = (0.05, 3) if args.quick else (0.5, 20)
    dtypes = [torch.float32] + ([torch.bfloat16] if any(k.endswith("_bf16") for k in runners)
                                else [])
    for g, _ in job.gemms:
        for dt in dtypes:
            gemm_min_time(g, budget, min_calls, dtype=dt)
    out = {"title": job.title, "flops": job.flops, "flop_count": job.flop_note,
           "results": {}, "skipped": dict(job.skipped), "errors": {}}
    if job.unit:
        out["throughput_unit"] = job.unit
    times: dict[str, list[float]] = {k: [] for k in runners}
    extras: dict[str, list[dict]] = {k: [] for k in runners}
    for key, (_, fn) in list(runners.items()):
        if args.warmup:
            try:
                fn(True)
            except peers.PeerUnavailable as exc:
                out["skipped"][key] = str(exc)
                del runners[key]
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                out["errors"][key] = f"{type(exc).__name__}: {exc}"
                del runners[key]
    for _ in range(args.repeats):
        for key, (_, fn) in list(runners.items()):  # round-robin: drift hits everyone alike
            try:
                t, extra = _split(fn(False))
            except peers.PeerUnavailable as exc:
                out["skipped"][key] = str(exc)
                del runners[key]
                continue
            except Exception as exc:  # noqa: BLE001
                out["errors"][key] = f"{type(exc).__name__}: {exc}"
                del runners[key]
                continue
            times[key].append(t)
            extras[key].append(extra)
        for g, _ in job.gemms:  # the GEMMs again, between rounds (see gemm_min_time)
            for dt in dtypes:
                gemm_min_time(g, budget / 5, max(3, min_calls // 4), refresh=True, dtype=dt)
    rooflines = {}
    for dt in dtypes:
        shapes = {}
        for g, calls in job.gemms:
            t = gemm_min_time(g, budget, min_calls, dtype=dt)
            shapes[str(g)] = {"calls": calls, "min_s": t, "gflops": g.flops / t / 1e9}
        best_rate = max(s["gflops"] for s in shapes.values()) * 1e9
        rooflines[dt] = job.flops / best_rate
        gemm_sum = sum(s["calls"] * s["min_s"] for s in shapes.values())
        if dt == torch.float32:
            out.update(gemm_shapes=shapes, best_gflops=best_rate / 1e9,
                       roofline_s=rooflines[dt], gemm_sum_s=gemm_sum)
        else:
            out.update(gemm_shapes_bf16=shapes, best_gflops_bf16=best_rate / 1e9,
                       roofline_bf16_s=rooflines[dt], gemm_sum_bf16_s=gemm_sum)
    ref = min(times["boltzkit"]) if times.get("boltzkit") and "boltzkit" in runners else None
    tight = min(times["torch"]) if times.get("torch") and "torch" in runners else None
    for key, (label, _) in runners.items():
        ts = times[key]
        if not ts:
            continue
        best = min(ts)
        dt = torch.bfloat16 if key.endswith("_bf16") else torch.float32
        res = {"label": label, "times_s": ts, "min_s": best, "median_s": statistics.median(ts),
               "gemm_dtype": str(dt).removeprefix("torch."),
               "x_roofline": best / rooflines[dt], "x_boltzkit": best / ref if ref else None,
               "x_torch_float32": best / tight if tight else None}
        if job.unit:
            res["throughput"] = job.units_per_run / best
        merged: dict = {}
        for e in extras[key]:
            for k2, v in e.items():
                merged.setdefault(k2, []).append(v)
        res.update(merged)
        out["results"][key] = res
    out["peak_rss_mib_after"] = peak_rss_mib()
    return out


def peak_rss_mib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def print_job(name: str, res: dict) -> None:
    print(f"\n== {name}: {res['title']}")
    print(f"   GEMM FLOPs {res['flops'] / 1e9:.1f} G = {res['flop_count']}")
    rates = ", ".join(f"{k} {v['gflops']:.1f}" for k, v in res["gemm_shapes"].items())
    print(f"   matmul GFLOP/s by shape: {rates}; roofline {res['roofline_s']:.3f} s "
          f"(FLOPs / best rate {res['best_gflops']:.1f} GFLOP/s); sum of per-shape "
          f"min GEMM times {res['gemm_sum_s']:.3f} s")
    if "roofline_bf16_s" in res:
        rates = ", ".join(f"{k} {v['gflops']:.1f}" for k, v in res["gemm_shapes_bf16"].items())
        print(f"   bfloat16 matmul GFLOP/s by shape: {rates}; bfloat16 roofline "
              f"{res['roofline_bf16_s']:.3f} s (best {res['best_gflops_bf16']:.1f} GFLOP/s)")
    unit = res.get("throughput_unit")
    head = f"   {'contestant':44s} {'min s':>9s} {'median s':>9s} {'x roofline':>10s} " \
           f"{'x boltzkit':>10s} {'x torch f32':>11s}" + (f" {unit:>16s}" if unit else "")
    print(head)
    for r in res["results"].values():
        xb = f"{r['x_boltzkit']:.2f}" if r["x_boltzkit"] else "-"
        xt = f"{r['x_torch_float32']:.2f}" if r.get("x_torch_float32") else "-"
        line = (f"   {r['label']:44s} {r['min_s']:9.3f} {r['median_s']:9.3f} "
                f"{r['x_roofline']:10.2f} {xb:>10s} {xt:>11s}")
        if unit:
            line += f" {r['throughput']:16.0f}"
        if "log_z" in r:
            line += f"   log Z {statistics.median(r['log_z']):.2f}"
        print(line)
    for key, why in res["skipped"].items():
        print(f"   {key:36s} skipped: {why}")
    for key, why in res["errors"].items():
        print(f"   {key:36s} FAILED: {why}")


def default_data_dir() -> str:
    return os.environ.get("BOLTZKIT_DATA") or str(REPO.parent / "shared" / "data")


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None,
                   help="MNIST folder or its parent (default: $BOLTZKIT_DATA, else "
                        "../shared/data relative to the repository)")
    p.add_argument("--jobs", default=",".join(ALL_JOBS),
                   help=f"comma list from {','.join(ALL_JOBS)} (default: all)")
    p.add_argument("--contestants", default=",".join(ALL_CONTESTANTS),
                   help=f"comma list from {','.join(ALL_CONTESTANTS)} (default: all)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch and BLAS threads (default: all cores available)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs per contestant, after one untimed short warm-up (default 3)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="skip the untimed warm-up run")
    p.add_argument("--quick", action="store_true",
                   help="6,000 training rows, 1,450 AIS steps, a tenth of the Gibbs sweeps: "
                        "for smoke tests, not for numbers")
    p.add_argument("--limit", type=int, default=None,
                   help="training rows (default 60,000; 6,000 with --quick)")
    p.add_argument("--ais-chains", type=int, default=AIS_CHAINS)
    p.add_argument("--ais-steps", type=int, default=None,
                   help=f"default {AIS_STEPS} ({AIS_STEPS // 10} with --quick)")
    p.add_argument("--gibbs-sweeps", type=int, default=None,
                   help="sweeps for both Gibbs jobs (default: 200 for 1,000 chains, 20 for "
                        "10,000 chains; a tenth with --quick)")
    p.add_argument("--bf16", action="store_true",
                   help="also run boltzkit and the tight loop with bfloat16 GEMM operands "
                        "(precision='bfloat16'), each against a bfloat16 GEMM roofline")
    p.add_argument("--lr", type=float, default=LR)
    p.add_argument("--momentum", type=float, default=MOMENTUM)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--json", default=None, help="write the results as JSON to this path")
    args = p.parse_args(argv)
    args.threads = args.threads or default_threads()
    if args.ais_steps is None:
        args.ais_steps = AIS_STEPS // 10 if args.quick else AIS_STEPS
    if args.limit is None:
        args.limit = 6000 if args.quick else None
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    args.job_list = [j.strip() for j in args.jobs.split(",") if j.strip()]
    bad = [j for j in args.job_list if j not in ALL_JOBS]
    if bad:
        p.error(f"unknown job(s) {bad}: choose from {', '.join(ALL_JOBS)}")
    args.contestant_set = {c.strip() for c in args.contestants.split(",") if c.strip()}
    bad = sorted(args.contestant_set - set(ALL_CONTESTANTS))
    if bad:
        p.error(f"unknown contestant(s) {bad}: choose from {', '.join(ALL_CONTESTANTS)}")
    return args


def meta(args, n_train: int) -> dict:
    import sklearn

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"argv": sys.argv[1:], "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "sklearn": sklearn.__version__,
            "learnergy": peers.learnergy_version(), "cpu": cpu, "cores": os.cpu_count(),
            "threads": args.threads, "quick": args.quick, "n_train": n_train,
            "repeats": args.repeats, "warmup": args.warmup, "lr": args.lr,
            "momentum": args.momentum, "seed": args.seed, "binarize": "threshold",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "timing": "boltzkit train jobs: wall time around Trainer.fit (epochs=1), which "
                      "includes its data checks and end-of-epoch monitor; epoch_loop_s is "
                      "the Trainer's own epoch time"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from boltzkit.data import load_mnist

    data_dir = args.data_dir or default_data_dir()
    data, _ = load_mnist(data_dir, "train", "threshold", limit=args.limit)
    data = data.contiguous()
    report = {"meta": meta(args, data.shape[0]), "jobs": {}}
    print(f"boltzkit speed benchmark: torch {torch.__version__}, {args.threads} threads, "
          f"{data.shape[0]} MNIST rows, {args.repeats} timed run(s) per contestant"
          + (" after a short warm-up" if args.warmup else "")
          + (" [--quick: not for numbers]" if args.quick else ""), flush=True)
    for name in args.job_list:
        job = build_job(name, data, args)
        res = run_job(job, args, args.contestant_set)
        report["jobs"][name] = res
        print_job(name, res)
        sys.stdout.flush()
    report["peak_rss_mib"] = peak_rss_mib()
    print(f"\npeak RSS of the whole run: {report['peak_rss_mib']:.0f} MiB")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
