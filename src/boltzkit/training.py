"""The training loop: batches, a ``torch.optim`` step, per-epoch history, checkpoints.

``Trainer.fit`` shuffles the data with its own seeded generator, asks the
sampler for negative particles, lets the objective fill ``.grad`` and steps
the optimizer.  After each epoch it records cheap monitors (reconstruction
error and free energies on fixed subsets), runs callbacks (e.g. a likelihood
estimate), checks that the parameters are finite, and writes a checkpoint
atomically.  A checkpoint holds parameters, optimizer and scheduler state,
sampler chains, objective state and the RNG state, so ``fit(resume=True)``
continues exactly where a run stopped.

Data-parallel training: under ``torchrun`` (a ``torch.distributed`` process
group, see :mod:`boltzkit.distributed`) every rank takes its slice of each
global batch of one shared permutation, its share of the persistent chains,
and the ranks average their gradients with one all-reduce per step; only
rank 0 writes checkpoints.

Streaming: ``fit`` also accepts a NumPy memory map
(``numpy.load(path, mmap_mode="r")``) and then copies only each batch to
the device.  Each batch's rows are gathered in sorted file order (one pass
over the pages it needs) and put back in the permutation's order, so a
streamed run is bit-identical to an in-memory one with the same seed.  The
alternative, shuffling contiguous blocks of rows, reads sequentially (kinder
to spinning disks and network file systems) but correlates the rows of a
batch and changes the trajectory; on SSDs and the page cache the sorted
gather costs little, so it is the one implemented.  Pages of a read-only map
(``mmap_mode="r"``) are released every ~64 MiB read, so the resident set
stays near one batch instead of growing to the file size.
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import distributed as dist_
from .errors import ConfigError, DataError, ModelFileError, TrainingDiverged
from .io import load_model_tensors, model_tensors, read_tensors, save_tensors
from .objectives import FusedBernoulliSGD, LikelihoodGradient
from .rbm import RBM
from .sampling import Sampler

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "linear", "exponential", "cosine")
CHECKPOINT_NAME = "checkpoint.safetensors"

Callback = Callable[["Trainer", dict], None]


class Trainer:
    """Trains an RBM-like model with a sampler and a gradient estimator.

    ``weight_decay`` is L2 on the connection weights only (biases are not
    decayed).  ``lr_schedule`` decays the learning rate per epoch:
    "constant", "linear" (to ``lr_final_factor`` x lr), "exponential"
    (factor ``lr_final_factor ** (1/epochs)`` per epoch) or "cosine".
    ``signature`` (any JSON dict) identifies the run; resuming with a
    different one is refused.  ``signature_defaults`` gives the value a key
    had before it existed, so checkpoints from older versions stay resumable.

    ``average_from`` > 0 turns on iterate (Polyak-Ruppert) averaging: over
    every step from epoch ``average_from`` (1-based) on, a uniform running mean
    of the parameters is kept, and when ``fit`` ends the model holds that mean.
    The persistent chains, the monitors and the callbacks keep using the live
    parameters, so averaging changes neither the trajectory nor its cost
    beyond one ``lerp`` per parameter and step; it removes the lr-sized jitter
    of the last iterate, which a log-likelihood punishes (Swersky et al. 2010).

    ``distributed`` (default: whenever a ``torch.distributed`` group with
    more than one process exists) turns on data-parallel training (module
    docs).  ``profile=True`` adds ``compute_time`` and ``allreduce_time``
    (seconds per step) to each epoch's record.
    """

    def __init__(self, model: RBM, sampler: Sampler, objective: LikelihoodGradient | None = None,
                 *, epochs: int = 10, batch_size: int = 100, lr: float = 0.01,
                 optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0,
                 lr_schedule: str = "constant", lr_final_factor: float = 0.01,
                 seed: int = 0, callbacks: Sequence[Callback] = (),
                 checkpoint_dir: str | Path | None = None, checkpoint_every: int = 1,
                 progress: bool | None = None, monitor_size: int = 1000,
                 init_visible_bias: bool = True, divergence_check_every: int = 50,
                 signature: dict | None = None,
                 signature_defaults: dict | None = None,
                 distributed: bool | None = None, profile: bool = False,
                 average_from: int = 0) -> None:
        _positive_int("epochs", epochs, allow_zero=True)
        _positive_int("average_from", average_from, allow_zero=True)
        if average_from > epochs:
            raise ConfigError(f"average_from ({average_from}) is past the last epoch ({epochs}): "
                              f"give an epoch 1..{epochs}, or 0 for no averaging "
                              "(--average-from)")
        _positive_int("batch_size", batch_size)
        _positive_int("checkpoint_every", checkpoint_every)
        if not (lr > 0 and math.isfinite(lr)):
            raise ConfigError(f"learning rate must be a positive number, got {lr!r}")
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {optimizer!r}: choose one of {list(OPTIMIZERS)}")
        if lr_schedule not in SCHEDULES:
            raise ConfigError(f"unknown lr schedule {lr_schedule!r}: choose one of "
                              f"{list(SCHEDULES)}")
        if not 0 <= momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
        self.model = model
        self.sampler = sampler
        self.objective = objective or LikelihoodGradient()
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.callbacks = list(callbacks)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.monitor_size = monitor_size
        self.init_visible_bias = init_visible_bias
        self.divergence_check_every = divergence_check_every
        self.signature = signature or {}
        self.signature_defaults = signature_defaults or {}
        if distributed is None:
            distributed = dist_.is_distributed()
        self.rank, self.world_size = dist_.world() if distributed else (0, 1)
        self.profile = profile
        self.average_from = average_from
        self.averager = ParameterAverage()  # the running mean of the parameters
        # ``generator`` drives sampling (seed + rank: a different stream per rank);
        # ``shuffle_generator`` the epoch permutations (the shared seed on every rank).
        # In a single process they are one generator, as they always were.
        self.generator = torch.Generator(device=model.device).manual_seed(seed + self.rank)
        self.shuffle_generator = self.generator
        if self.world_size > 1:
            self.shuffle_generator = torch.Generator(device=model.device).manual_seed(seed)
            # the global number of chains (kept on the sampler, so a second Trainer
            # on the same sampler does not split the split)
            chains = getattr(sampler, "global_n_chains", getattr(sampler, "n_chains", None))
            if chains is not None:
                sampler.global_n_chains = chains
                if chains < self.world_size:
                    raise ConfigError(f"{chains} persistent chains cannot be split over "
                                      f"{self.world_size} processes: use at least one chain "
                                      "per process")
                lo, hi = dist_.shard_bounds(chains, self.rank, self.world_size)
                sampler.n_chains = hi - lo
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.optimizer = self._make_optimizer(optimizer, lr, momentum, weight_decay)
        self.scheduler = self._make_scheduler(lr_schedule, lr_final_factor)

    # -- construction ----------------------------------------------------------
    def _make_optimizer(self, name, lr, momentum, weight_decay) -> torch.optim.Optimizer:
        decayed, plain = [], []
        for pname, p in self.model.named_parameters():
            (decayed if pname.endswith("weights") else plain).append(p)
        groups = [{"params": decayed, "weight_decay": weight_decay},
                  {"params": plain, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        if name == "sgd":
            return LeanSGD(groups, lr=lr, momentum=momentum)
        return torch.optim.Adam(groups, lr=lr, betas=(momentum or 0.9, 0.999))

    def _make_scheduler(self, name, final):
        opt, n = self.optimizer, max(self.epochs, 1)
        if name == "constant":
            return None
        if not 0 < final <= 1:
            raise ConfigError(f"lr_final_factor must be in (0, 1], got {final}")
        if name == "linear":
            return torch.optim.lr_scheduler.LinearLR(opt, 1.0, final, total_iters=n)
        if name == "exponential":
            return torch.optim.lr_scheduler.ExponentialLR(opt, final ** (1.0 / n))
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, n, eta_min=opt.defaults["lr"] *
                                                          final)

    # -- the loop --------------------------------------------------------------
    def fit(self, data: Tensor | np.ndarray, val: Tensor | np.ndarray | None = None,
            resume: bool = False, stream: bool | None = None) -> list[dict]:
        """Train on ``data`` (rows are samples); ``val`` feeds the overfitting monitor.

        A NumPy memory map (``numpy.load(..., mmap_mode="r")``) is streamed, each batch
        copied to the device on its own; ``stream=True`` streams a NumPy array or a CPU
        tensor too (e.g. one from ``load_array(..., mmap=True)``), ``stream=False`` loads
        a memory map whole.
        """
        model = self.model
        if stream is None:
            stream = isinstance(data, np.memmap)
        source = _StreamedRows(data, model) if stream else _TensorRows(data, model)
        if val is not None:
            val = model.prepare(_head(val, self.monitor_size), "validation data")
        if resume:
            if not self.load_checkpoint():
                log.info("no checkpoint to resume from in %s: starting fresh", self.checkpoint_dir)
                resume = False
        if not resume:
            full = source.full()
            if self.init_visible_bias:
                model.init_visible_bias(full)
            self.objective.setup(model, full)
            del full
            source.release()
        dist_.broadcast_module(model)
        sync = None
        if self.world_size > 1:
            sync = dist_.GradientSync(list(model.parameters()), n_extra=1, timing=self.profile)
        mon_gen = torch.Generator().manual_seed(self.seed + 7919)
        mon_train = source.take(torch.randperm(source.n, generator=mon_gen)[:self.monitor_size])
        n = source.n
        n_batches = math.ceil(n / self.batch_size)
        main = self.rank == 0
        begin_batch = getattr(model, "begin_batch", None)
        params = list(model.parameters())
        show = main and (self.progress if self.progress is not None else sys.stderr.isatty())
        fused = None
        while self.epoch < self.epochs:
            # The plain case (dense Bernoulli RBM, CD/PCD, plain likelihood, SGD; one
            # process or data-parallel) takes the fused step: the same update, draw for
            # draw, in fewer torch calls (FusedBernoulliSGD).  Built per epoch: it reads
            # the scheduled lr then.
            fused = (FusedBernoulliSGD.build(model, self.sampler, self.objective,
                                             self.optimizer, self.generator, previous=fused,
                                             sync=sync)
                     if begin_batch is None else None)
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=self.shuffle_generator,
                                  device=self.shuffle_generator.device)
            if stream:
                perm = perm.cpu()  # streamed rows are gathered on the host
            bar = _progress(n_batches, f"epoch {self.epoch + 1}/{self.epochs}", show)
            act = torch.zeros((), dtype=model.dtype, device=model.device)
            averaging = self.average_from and self.epoch + 1 >= self.average_from
            comm0 = sync.seconds if sync is not None else 0.0
            if fused is not None:
                self._fused_epoch(fused, source, perm, n_batches, act, bar,
                                  params if averaging else None)
            for i in range(n_batches if fused is None else 0):  # the general path
                idx = perm[i * self.batch_size:(i + 1) * self.batch_size]
                global_n = idx.numel()
                if self.world_size > 1:
                    lo, hi = dist_.shard_bounds(global_n, self.rank, self.world_size)
                    idx = idx[lo:hi]
                if idx.numel():
                    batch = source.take(idx)
                    if begin_batch is not None:
                        begin_batch(batch, self.generator)
                    with torch.no_grad():
                        field = model.hidden_field(batch)
                        negative, neg_field = self.sampler.negative(model, batch, field,
                                                                    self.generator)
                        diag = self.objective.compute(model, batch, negative, field, neg_field)
                    batch_act = diag["hidden_activation"]
                else:  # this rank's share of a short last batch is empty
                    sync.zero_()
                    batch_act = 0.0
                if sync is not None:
                    batch_act = sync.reduce(idx.numel() / global_n, [batch_act])[0]
                self.optimizer.step()
                if averaging:
                    self.averager.update(params)
                act += batch_act
                if self.divergence_check_every and (i + 1) % self.divergence_check_every == 0:
                    self._check_finite()
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            self._check_finite()
            lr_used = self.optimizer.param_groups[0]["lr"]
            if self.scheduler is not None:
                self.scheduler.step()
            self.epoch += 1
            elapsed = time.perf_counter() - t0
            record = {"epoch": self.epoch, "time": elapsed, "lr": lr_used,
                      "hidden_activation": float(act) / n_batches}
            if averaging:  # the monitors below still see the live parameters
                record["averaged_steps"] = self.averager.n
            if self.profile:
                comm = (sync.seconds - comm0) if sync is not None else 0.0
                record["compute_time"] = (elapsed - comm) / n_batches
                record["allreduce_time"] = comm / n_batches
            record.update(self.monitor(mon_train, val))
            if not math.isfinite(record["free_energy_train"]):
                self._check_finite(force=True)
            record.update(dist_.mean_across_ranks(self.sampler.stats(), self._reduce_device()))
            for cb in self.callbacks:
                cb(self, record)
            self.history.append(record)
            if main:
                log.info("epoch %d: %s", self.epoch, _fmt(record))
            if self.checkpoint_dir and (self.epoch % self.checkpoint_every == 0
                                        or self.epoch == self.epochs):
                self.save_checkpoint()
            source.release()
        if self.epoch >= self.epochs:
            self.averager.copy_to(params)
        return self.history

    def _reduce_device(self) -> torch.device:
        return self.model.device if self.model.device.type == "cuda" else torch.device("cpu")

    def _fused_epoch(self, fused: FusedBernoulliSGD, source, perm: Tensor, n_batches: int,
                     act: Tensor, bar, averaged: list[Tensor] | None) -> None:
        """The epoch's batches through ``fused.run`` in runs between divergence checks.

        The same updates in the same order as one ``fused(batch)`` per batch, but the
        step binds its buffers once per run, not once per batch.  ``averaged`` (the
        parameters, while averaging is on): one batch per run, the mean updated after it.
        """
        every = self.divergence_check_every or n_batches
        stretch = 1 if averaged is not None else every
        bs, rank, world = self.batch_size, self.rank, self.world_size

        def batch(i: int):
            idx = perm[i * bs:(i + 1) * bs]
            if world == 1:
                return source.take(idx)
            # data-parallel: this rank's rows of the global batch and their share of it
            lo, hi = dist_.shard_bounds(idx.numel(), rank, world)
            return (source.take(idx[lo:hi]) if hi > lo else None), (hi - lo) / idx.numel()

        for lo in range(0, n_batches, stretch):
            hi = min(lo + stretch, n_batches)
            fused.run((batch(i) for i in range(lo, hi)), act)
            if averaged is not None:
                self.averager.update(averaged)
            if self.divergence_check_every and hi % self.divergence_check_every == 0:
                self._check_finite()
            if bar is not None:
                bar.update(hi - lo)

    @torch.no_grad()
    def monitor(self, train: Tensor, val: Tensor | None) -> dict[str, float]:
        """Cheap per-epoch monitors on fixed subsets (same scale in every epoch)."""
        m = self.model
        out = {"recon_error": float(((m.reconstruct(train, 1000) - train) ** 2).mean()),
               "free_energy_train": float(m.free_energy(train).mean())}
        if val is not None:
            out["free_energy_val"] = float(m.free_energy(val).mean())
            out["free_energy_gap"] = out["free_energy_val"] - out["free_energy_train"]
        return out

    def _check_finite(self, force: bool = False) -> None:
        if not force and self.model.parameters_finite():
            return
        where = (f"the last good checkpoint (epoch {self._last_ckpt_epoch()}) in "
                 f"{self.checkpoint_dir} is intact" if self.checkpoint_dir else
                 "no checkpoint was being written")
        raise TrainingDiverged(
            f"parameters (or the free energy) became NaN/inf in epoch {self.epoch + 1}; "
            f"{where}. Lower the learning rate (--lr), add weight decay or momentum, or "
            "standardise the data.")

    def _last_ckpt_epoch(self) -> int | str:
        path = self.checkpoint_dir / CHECKPOINT_NAME if self.checkpoint_dir else None
        if path is None or not path.exists():
            return "none"
        return read_tensors(path)[1].get("epoch", "?")

    # -- checkpoints ------------------------------------------------------------
    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Atomically write everything needed to continue this run exactly.

        In a distributed run every rank must call this (it gathers each rank's chains
        and random state); rank 0 alone writes, and the others return the path.
        """
        if path is None:
            if self.checkpoint_dir is None:
                raise ConfigError("no checkpoint_dir given")
            path = self.checkpoint_dir / CHECKPOINT_NAME
        path = Path(path)
        tensors = {f"model.{k}": v for k, v in model_tensors(self.model).items()}
        if self.world_size > 1:
            mine = ({k: v.detach().cpu() for k, v in self.sampler.state_dict().items()},
                    self.generator.get_state())
            parts = dist_.all_gather_objects(mine)
            if self.rank != 0:
                dist_.barrier()  # until rank 0 has written it: a resume may read it next
                return path
            for r, (state, rng) in enumerate(parts):
                tensors.update({f"sampler.rank{r}.{k}": v for k, v in state.items()})
                tensors[f"rng.rank{r}"] = rng
        else:
            tensors.update({f"sampler.{k}": v for k, v in self.sampler.state_dict().items()})
        tensors.update({f"objective.{k}": v for k, v in self.objective.state_dict().items()})
        opt = self.optimizer.state_dict()
        opt_meta: dict[str, dict] = {}
        for idx, st in opt["state"].items():
            for key, val in st.items():
                if isinstance(val, Tensor):
                    tensors[f"optim.{idx}.{key}"] = val
                else:
                    opt_meta.setdefault(str(idx), {})[key] = val
        tensors["rng"] = self.shuffle_generator.get_state()
        tensors.update({f"average.{k}": v for k, v in self.averager.tensors().items()})
        header = {"checkpoint": True, "config": self.model.config(), "epoch": self.epoch,
                  "n_averaged": self.averager.n,
                  "world_size": self.world_size,
                  "signature": self.signature, "history": self.history,
                  "optimizer": {"param_groups": opt["param_groups"], "state": opt_meta},
                  "scheduler": self.scheduler.state_dict() if self.scheduler else None}
        written = save_tensors(path, tensors, header)
        if self.world_size > 1:
            dist_.barrier()
        return written

    def load_checkpoint(self, path: str | Path | None = None) -> bool:
        """Restore a checkpoint; False if there is none. Refuses incompatible runs."""
        if path is None:
            if self.checkpoint_dir is None:
                raise ConfigError("resume needs a checkpoint directory (--checkpoint-dir)")
            path = self.checkpoint_dir / CHECKPOINT_NAME
        path = Path(path)
        if not path.exists():
            return False
        tensors, header = read_tensors(path)
        if not header.get("checkpoint"):
            raise ModelFileError(f"{path} is not a checkpoint")
        if header.get("config") != self.model.config():
            raise ConfigError(f"cannot resume from {path}: it holds a different model "
                              f"({header.get('config')}) than this run ({self.model.config()})")
        old = {**self.signature_defaults, **header.get("signature", {})}
        diff = {k: (old.get(k), v) for k, v in self.signature.items() if old.get(k) != v}
        if diff:
            raise ConfigError(f"cannot resume from {path}: settings differ from the checkpoint "
                              f"(checkpoint, now): {diff}; use the original settings or a new "
                              "--checkpoint-dir")

        saved_world = int(header.get("world_size", 1))
        if saved_world != self.world_size:
            raise ConfigError(f"cannot resume from {path}: it was written by a run with "
                              f"{saved_world} process(es), this run has {self.world_size}; "
                              "resume with the same number of processes")

        def part(prefix):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        load_model_tensors(self.model, part("model."), source=str(path))
        sampler_prefix = f"sampler.rank{self.rank}." if self.world_size > 1 else "sampler."
        self.sampler.load_state_dict({k: v.to(self.model.device)
                                      for k, v in part(sampler_prefix).items()})
        self.objective.load_state_dict({k: v.to(self.model.device)
                                        for k, v in part("objective.").items()})
        opt_state: dict[int, dict] = {}
        for k, v in part("optim.").items():
            idx, key = k.split(".", 1)
            opt_state.setdefault(int(idx), {})[key] = v
        for idx, st in header["optimizer"]["state"].items():
            opt_state.setdefault(int(idx), {}).update(st)
        self.optimizer.load_state_dict({"state": opt_state,
                                        "param_groups": header["optimizer"]["param_groups"]})
        if self.scheduler is not None and header.get("scheduler"):
            self.scheduler.load_state_dict(header["scheduler"])
        self.shuffle_generator.set_state(tensors["rng"])
        if self.world_size > 1:
            self.generator.set_state(tensors[f"rng.rank{self.rank}"])
        self.averager.load(part("average."), int(header.get("n_averaged", 0)),
                           self.model.device)
        self.history = list(header.get("history", []))
        self.epoch = int(header["epoch"])
        log.info("resumed from %s at epoch %d", path, self.epoch)
        return True


class ParameterAverage:
    """The uniform running mean of a list of parameters (Polyak-Ruppert averaging).

    ``update`` folds in the parameters' current values; ``applied`` swaps the
    mean in for a block (evaluation) and the live values back after it;
    ``copy_to`` writes the mean into the parameters for good.
    """

    def __init__(self) -> None:
        self.mean: list[Tensor] | None = None
        self.n = 0

    @torch.no_grad()
    def update(self, params: Sequence[Tensor]) -> None:
        """Add the parameters' current values to the mean."""
        if self.mean is None:
            self.mean = [p.detach().clone() for p in params]
            self.n = 1
            return
        self.n += 1
        for p, a in zip(params, self.mean, strict=True):
            a.lerp_(p.detach(), 1.0 / self.n)

    def tensors(self) -> dict[str, Tensor]:
        """The mean as named tensors ("0", "1", ...) for a checkpoint; empty before any update."""
        return {str(i): a for i, a in enumerate(self.mean or ())}

    def load(self, tensors: dict[str, Tensor], n: int, device: torch.device) -> None:
        """Restore what :meth:`tensors` gave, with the number of iterates ``n`` it holds."""
        self.mean = [tensors[str(i)].to(device) for i in range(len(tensors))] or None
        self.n = n

    @torch.no_grad()
    def copy_to(self, params: Sequence[Tensor]) -> None:
        """Overwrite the parameters with the mean (a no-op before the first update)."""
        if self.mean is not None:
            for p, a in zip(params, self.mean, strict=True):
                p.copy_(a)

    @contextlib.contextmanager
    def applied(self, params: Sequence[Tensor]):
        """The mean in place of the parameters inside the block, the live values after."""
        if self.mean is None:
            yield
            return
        live = [p.detach().clone() for p in params]
        self.copy_to(params)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(params, live, strict=True):
                    p.copy_(v)


class LeanSGD(torch.optim.SGD):
    """``torch.optim.SGD`` with a cheaper ``step`` for the plain rule (no Nesterov,
    dampening, ``maximize`` or tensor learning rate; those take the parent's step).

    The update is the parent's, op for op (``buf = momentum * buf + (grad + wd * p)``;
    ``p -= lr * buf``), with one ``torch._foreach_*`` call per operation for all of a
    group's parameters instead of the parent's per-step bookkeeping, so results, state
    dicts and checkpoints are those of ``torch.optim.SGD``.
    """

    def add_param_group(self, param_group):  # noqa: D102 - the parent's contract
        # torch.optim wraps add_param_group in torch._disable_dynamo, whose first call
        # imports torch._dynamo (1.2-1.5 s, once per process: most of the first fit of
        # a small scikit-learn pipeline) only to keep torch.compile from tracing it.
        # Outside torch.compile the wrapped function is the whole behaviour: call it.
        plain = getattr(torch.optim.Optimizer.add_param_group, "__wrapped__", None)
        if plain is None or torch.compiler.is_compiling():
            return super().add_param_group(param_group)
        return plain(self, param_group)

    def step(self, closure=None):  # noqa: D102 - the parent's contract
        groups = self.param_groups
        if closure is not None or any(
                g["nesterov"] or g["dampening"] or g.get("maximize") or g.get("differentiable")
                or isinstance(g["lr"], Tensor) for g in groups):
            return super().step(closure)
        # Groups that differ only in weight decay (the Trainer's weights / biases) share
        # one foreach call per operation: (lr, momentum) -> (params, d_p).
        buckets: dict[tuple[float, float], tuple[list, list]] = {}
        with torch.no_grad():
            for g in groups:
                params = [p for p in g["params"] if p.grad is not None]
                if not params:
                    continue
                grads = [p.grad for p in params]
                if g["weight_decay"]:
                    grads = torch._foreach_add(grads, params, alpha=g["weight_decay"])
                ps, ds = buckets.setdefault((g["lr"], g["momentum"]), ([], []))
                ps += params
                ds += grads
            for (lr, momentum), (params, grads) in buckets.items():
                if momentum:
                    bufs = [self.state[p].get("momentum_buffer") for p in params]
                    if any(b is None for b in bufs):
                        for i, p in enumerate(params):
                            if bufs[i] is None:
                                bufs[i] = self.state[p]["momentum_buffer"] = (
                                    grads[i].detach().clone())
                            else:
                                bufs[i].mul_(momentum).add_(grads[i])
                    else:
                        torch._foreach_mul_(bufs, momentum)
                        torch._foreach_add_(bufs, grads)
                    grads = bufs
                torch._foreach_add_(params, grads, alpha=-lr)
        return None


class _TensorRows:
    """Training rows held as one tensor on the model's device (the in-memory path)."""

    def __init__(self, data: Tensor | np.ndarray, model: RBM) -> None:
        self.data = model.prepare(data, "training data")
        self.n = self.data.shape[0]

    def full(self) -> Tensor:
        return self.data

    def take(self, idx: Tensor) -> Tensor:
        return self.data.index_select(0, idx.to(self.data.device))

    def release(self) -> None:
        return None


class _StreamedRows:
    """Training rows read batch by batch from a NumPy array or memory map (streaming).

    Only the rows of one batch are copied (gathered in sorted order, then put back in
    the requested order) and moved to the device.  Each batch is validated as it is
    read, so bad values far into a file stop training with a clear error.
    """

    RELEASE_BYTES = 64 << 20

    def __init__(self, data: Tensor | np.ndarray, model: RBM) -> None:
        if isinstance(data, Tensor):
            if data.device.type != "cpu":
                raise DataError("streaming reads rows from host memory or a file: pass a CPU "
                                "tensor, a NumPy array or numpy.load(path, mmap_mode='r')")
            data = data.detach().numpy()
        if not isinstance(data, np.ndarray):
            raise DataError(f"cannot stream training data of type {type(data).__name__}: "
                            "pass a NumPy array or numpy.load(path, mmap_mode='r')")
        if data.ndim != 2 or data.shape[1] != model.n_visible:
            raise DataError(f"training data has shape {data.shape} but the model has "
                            f"{model.n_visible} visible units: pass a 2-D array with "
                            f"{model.n_visible} columns")
        if data.shape[0] == 0:
            raise DataError("training data is empty: pass at least one sample")
        want = np.dtype(str(model.dtype).removeprefix("torch."))
        if data.dtype != want:
            raise DataError(f"streamed training data must be {want} like the model, got "
                            f"{data.dtype}: save it once as {want} (e.g. numpy.save(path, "
                            f"x.astype('{want}'))) so batches can be read without conversion")
        self.data = data
        self.model = model
        self.n = data.shape[0]
        self._row_bytes = data.strides[0] if data.strides[0] > 0 else data.itemsize
        self._read = 0
        base = data
        while base is not None and not isinstance(getattr(base, "_mmap", None), mmap.mmap):
            base = base.base if isinstance(base.base, np.ndarray) else None
        # Only a read-only map may drop its pages: a copy-on-write map ("c") would lose
        # the user's private changes, an anonymous array its contents.
        self._mmap = base._mmap if base is not None and getattr(base, "mode", "") == "r" else None

    def full(self) -> Tensor:
        """A zero-copy CPU tensor over all rows (for one-off statistics: bias init,
        centering offsets); the map pages it touches are released afterwards."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only memory: we only read it
            return torch.from_numpy(self.data)

    def take(self, idx: Tensor) -> Tensor:
        idx_np = idx.cpu().numpy()
        order = np.argsort(idx_np, kind="stable")
        rows = torch.from_numpy(np.asarray(self.data[idx_np[order]]))
        batch = torch.empty_like(rows)
        batch[torch.from_numpy(order)] = rows
        batch = batch.to(device=self.model.device, dtype=self.model.dtype, non_blocking=True)
        self.model.visible.validate(batch, "training data (streamed batch)")
        self._read += len(idx_np) * self._row_bytes
        if self._read >= self.RELEASE_BYTES:
            self.release()
        return batch

    def release(self) -> None:
        """Drop this process's mapping of the pages read so far (they stay in the page
        cache), so the resident set does not grow to the file's size."""
        self._read = 0
        if self._mmap is not None and hasattr(self._mmap, "madvise"):
            self._mmap.madvise(mmap.MADV_DONTNEED)


def _head(x: Tensor | np.ndarray, n: int) -> Tensor:
    """The first ``n`` rows as a tensor (a NumPy map is read only that far)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.array(x[:n]))
    return x[:n]


def _positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    lo = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")


def _progress(total: int, desc: str, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit="batch")


def _fmt(record: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in record.items())

