"""The training loop: the one batch loop every model kind trains through.

``Trainer(model, sampler, objective, optimizer)`` shuffles the rows with its own
seeded generator and, batch by batch, lets the objective fill ``.grad`` (asking the
sampler for the model phase) and steps the optimizer.  A model kind contributes
parts, never a loop: a sampler (CD, PCD, parallel tempering, temperature-driven
sampling, a DBM's multi-layer chains), an objective (likelihood, BEAM, a
discriminative/hybrid loss, a conditioned or masked likelihood, pseudo-likelihood,
supervised fine-tuning) and what its rows are (``Objective.prepare``).  What the loop
owns every kind therefore has: checkpoints and exact resume, iterate averaging, lr
schedules, any ``torch.optim`` optimizer, divergence checks, monitors, early stopping
on a validation score, history, progress bars and data-parallel training.

After each epoch the loop records the objective's cheap monitors (fixed subsets of
the training and validation rows), runs callbacks, checks that the parameters are
finite, and writes a checkpoint atomically.  A checkpoint holds parameters, optimizer
and scheduler state, sampler chains, objective state, the RNG states, the running
parameter mean and the best parameters so far, so ``fit(resume=True)`` continues
exactly where a run stopped.

Data-parallel training: under ``torchrun`` (a ``torch.distributed`` process group,
see :mod:`boltzkit.distributed`) every rank takes its slice of each global batch of one
shared permutation, its share of the persistent chains, and the ranks sum their
weighted gradients with one all-reduce per step; only rank 0 writes checkpoints.

Streaming: ``fit`` also accepts a NumPy memory map (``numpy.load(path,
mmap_mode="r")``) and then copies only each batch to the device, gathered in sorted
file order and put back in the permutation's order, so a streamed run is
bit-identical to an in-memory one with the same seed (:mod:`boltzkit.training.rows`).

The plain case (dense Bernoulli RBM, CD/PCD, likelihood, SGD) takes the fused step
that :func:`boltzkit.kernels.plan_step` returns: the same update, draw for draw, in
fewer torch calls.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import distributed as dist_
from .. import kernels
from .. import precision as precision_
from ..errors import ConfigError, ModelFileError, TrainingDiverged
from ..io import load_model_tensors, model_tensors, read_tensors, save_tensors
from ..kernels.fused import IndexedRows
from ..objectives import LikelihoodGradient, Objective, as_objective
from ..precision import Precision
from ..progress import progress_bar
from .averaging import ParameterAverage
from .optim import OptimizerSpec, ScheduleSpec, make_optimizer, make_scheduler
from .rows import StreamedRows, TensorRows

log = logging.getLogger("boltzkit.training")

CHECKPOINT_NAME = "checkpoint.safetensors"
BATCHINGS = ("fixed", "even")

Callback = Callable[["Trainer", dict], None]


class Trainer:
    """Trains a model with a sampler and an objective; the only batch loop in boltzkit.

    ``model``: any boltzkit model (``nn.Module`` with ``config()``); ``sampler``: where
    the model phase comes from (None for objectives without one, e.g.
    pseudo-likelihood); ``objective``: default :class:`~boltzkit.LikelihoodGradient`;
    ``optimizer``: "sgd", "adam", a ``torch.optim.Optimizer`` class or a factory
    ``f(param_groups)`` (:func:`~boltzkit.training.optim.make_optimizer`).
    ``lr`` defaults to 0.01 for named optimizers and classes (a factory sets its own).
    ``weight_decay`` is L2 on the weight matrices only (biases are not decayed);
    ``adam_betas`` overrides Adam's (momentum or 0.9, 0.999).  ``lr_schedule`` decays
    the learning rate per epoch: "constant", "linear" (to ``lr_final_factor`` x lr),
    "exponential", "cosine", "power" (lr / (1 + epoch)^``lr_power``), or an
    ``LRScheduler`` class or factory.

    ``average_from`` > 0 turns on iterate (Polyak-Ruppert) averaging: over every step
    from epoch ``average_from`` (1-based) on, a uniform running mean of the parameters is
    kept; the monitors, callbacks and early stopping then see that mean (the model as it
    would be saved), the persistent chains keep following the live parameters, and the
    model ends with the mean.  It removes the lr-sized jitter of the last iterate, which
    a log-likelihood punishes (Swersky et al. 2010).

    ``best_by`` (a monitor's name, or a tuple compared in order, e.g.
    ``("val_error", "val_nll")``; smaller is better) keeps the parameters of the best
    epoch, which the model ends with (``restore_best``); ``patience`` stops after that
    many epochs without improvement.  ``shuffle=False`` takes the rows in order;
    ``batching="even"`` splits each epoch into ceil(n / batch_size) batches whose sizes
    differ by at most one (no short last batch).  ``init_visible_bias``: start the
    visible bias at the data's marginals (``Objective.setup``).

    ``signature`` (any JSON dict) identifies the run; resuming with a different one is
    refused.  ``signature_defaults`` gives the value a key had before it existed, so
    checkpoints from older versions stay resumable.  ``distributed`` (default: whenever
    a ``torch.distributed`` group with more than one process exists) turns on
    data-parallel training.  ``profile=True`` adds ``compute_time`` and
    ``allreduce_time`` (seconds per step) to each epoch's record.

    ``precision``: the GEMM precision of the training steps ("float32", "bfloat16",
    "tf32" on CUDA, "auto": :mod:`boltzkit.precision`); master weights, optimizer state,
    statistics and draws stay in the model's dtype, and the monitors score the model in
    it.  The choice made (and why) is ``trainer.precision``.
    """

    def __init__(self, model: nn.Module, sampler: Any = None, objective: Objective | None = None,
                 optimizer: OptimizerSpec = "sgd", *, epochs: int = 10, batch_size: int = 100,
                 lr: float | None = None, momentum: float = 0.0, weight_decay: float = 0.0,
                 adam_betas: tuple[float, float] | None = None,
                 lr_schedule: ScheduleSpec = "constant", lr_final_factor: float = 0.01,
                 lr_power: float = 1.0, seed: int = 0, callbacks: Sequence[Callback] = (),
                 checkpoint_dir: str | Path | None = None, checkpoint_every: int = 1,
                 progress: bool | None = None, monitor_size: int = 1000,
                 init_visible_bias: bool = True, divergence_check_every: int = 50,
                 signature: dict | None = None, signature_defaults: dict | None = None,
                 distributed: bool | None = None, profile: bool = False,
                 average_from: int = 0, best_by: str | Sequence[str] | None = None,
                 patience: int | None = None, restore_best: bool = True,
                 shuffle: bool = True, batching: str = "fixed",
                 precision: str | Precision = "float32") -> None:
        _int("epochs", epochs, 0)
        _int("average_from", average_from, 0)
        _int("batch_size", batch_size, 1)
        _int("checkpoint_every", checkpoint_every, 1)
        _int("monitor_size", monitor_size, 0)
        _int("seed", seed, 0)
        if average_from > epochs:
            raise ConfigError(f"average_from ({average_from}) is past the last epoch ({epochs}): "
                              f"give an epoch 1..{epochs}, or 0 for no averaging "
                              "(--average-from)")
        if patience is not None:
            _int("patience", patience, 1)
            if best_by is None:
                raise ConfigError("patience needs a score to watch: give best_by (e.g. "
                                  "'val_error')")
        if batching not in BATCHINGS:
            raise ConfigError(f"unknown batching {batching!r}: choose one of {list(BATCHINGS)}")
        objective = LikelihoodGradient() if objective is None else as_objective(objective)
        if objective.needs_sampler and sampler is None:
            raise ConfigError(f"{type(objective).__name__} needs a sampler for its model phase "
                              "(e.g. make_sampler('pcd'))")
        if not objective.needs_sampler and sampler is not None:
            raise ConfigError(f"{type(objective).__name__} has no model phase: it takes no "
                              f"sampler (got {getattr(sampler, 'name', type(sampler).__name__)}"
                              "); drop the sampler / --method")
        self.model = model
        self.sampler = sampler
        self.objective = objective
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
        self.best_by = (best_by,) if isinstance(best_by, str) else (
            tuple(best_by) if best_by is not None else None)
        self.patience = patience
        self.restore_best = restore_best
        self.shuffle = shuffle
        self.batching = batching
        if distributed is None:
            distributed = dist_.is_distributed()
        self.rank, self.world_size = dist_.world() if distributed else (0, 1)
        self.profile = profile
        self.average_from = average_from
        self.averager = ParameterAverage()  # the running mean of the parameters
        self.device = _device_of(model)
        self.precision = precision_.choose(precision, self.device)
        dtype = next(iter(model.parameters())).dtype
        if self.precision.gemm_dtype is not None and dtype != torch.float32:
            raise ConfigError(f"precision {self.precision.name} keeps float32 master weights: "
                              f"it needs a float32 model (this one is "
                              f"{str(dtype).removeprefix('torch.')})")
        # ``generator`` drives sampling (seed + rank: a different stream per rank);
        # ``shuffle_generator`` the epoch permutations (the shared seed on every rank).
        # In a single process they are one generator.
        self.generator = torch.Generator(device=self.device).manual_seed(seed + self.rank)
        self.shuffle_generator = self.generator
        if self.world_size > 1:
            self.shuffle_generator = torch.Generator(device=self.device).manual_seed(seed)
            self._split_chains()
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.best: dict[str, Any] | None = None  # {"epoch", "score", "state"}
        self.stopped_early = False
        self.optimizer = make_optimizer(model, optimizer, lr, momentum, weight_decay,
                                        adam_betas)
        self.closure_step = isinstance(self.optimizer, torch.optim.LBFGS)
        if self.closure_step and sampler is not None:
            raise ConfigError("LBFGS evaluates the objective several times per step, which "
                              "would advance the sampler's chains each time: use it with "
                              "deterministic objectives only (e.g. pseudo-likelihood)")
        if self.closure_step and self.world_size > 1:
            raise ConfigError("LBFGS does not train data-parallel: run it in one process")
        self.scheduler = make_scheduler(self.optimizer, lr_schedule, epochs, lr_final_factor,
                                        lr_power)

    def _split_chains(self) -> None:
        """Give this rank its share of the sampler's persistent chains."""
        sampler = self.sampler
        # the global number of chains (kept on the sampler, so a second Trainer on the
        # same sampler does not split the split)
        chains = getattr(sampler, "global_n_chains", getattr(sampler, "n_chains", None))
        if chains is None:
            return
        sampler.global_n_chains = chains
        if chains < self.world_size:
            raise ConfigError(f"{chains} persistent chains cannot be split over "
                              f"{self.world_size} processes: use at least one chain per process")
        lo, hi = dist_.shard_bounds(chains, self.rank, self.world_size)
        sampler.n_chains = hi - lo

    # -- the loop --------------------------------------------------------------
    def fit(self, data: Any, val: Any = None, resume: bool = False,
            stream: bool | None = None) -> list[dict]:
        """Train on ``data`` until epoch ``epochs``; ``val`` feeds the validation monitors.

        ``data``: what the objective's batches are made of (an array of visible states
        (n_samples, n_visible); a tuple of aligned arrays for kinds whose rows carry
        labels or a history), or a row source (:mod:`boltzkit.training.rows`).  ``val``
        (the same layout) is used whole.  A NumPy memory map (``numpy.load(...,
        mmap_mode="r")``) is streamed, each batch copied to the device on its own;
        ``stream=True`` streams a NumPy array or a CPU tensor too, ``stream=False``
        loads a memory map whole.  A second ``fit`` on the same trainer continues where
        the first ended (raise ``epochs`` first).
        Returns the history: one dict per epoch.
        """
        model, objective = self.model, self.objective
        source = self._source(data, stream)
        val_rows = None if val is None else objective.prepare(model, val, "validation data")
        if resume:
            if not self.load_checkpoint():
                log.warning("no checkpoint to resume from in %s: starting fresh",
                            self.checkpoint_dir)
        if self.epoch == 0 and not self.history:
            objective.setup(model, source.full(), init=self.init_visible_bias)
            source.release()
        dist_.broadcast_module(model)
        sync = None
        if self.world_size > 1:
            sync = dist_.GradientSync(list(model.parameters()), n_extra=1, timing=self.profile)
        mon_train = None
        if self.monitor_size:
            mon_gen = torch.Generator().manual_seed(self.seed + 7919)
            pick = torch.randperm(source.n, generator=mon_gen)[:self.monitor_size]
            mon_train = source.take(pick)
        step = kernels.plan_step(model, self.sampler, objective, self.optimizer,
                                 self.generator, sync, low=self.precision.gemm_dtype)
        while self.epoch < self.epochs and not self.stopped_early:
            self._epoch(source, step, sync, mon_train, val_rows)
        if self.epoch >= self.epochs or self.stopped_early:
            self._finish()
        return self.history

    def _source(self, data: Any, stream: bool | None):
        if hasattr(data, "take") and hasattr(data, "n"):
            return data  # a row source
        if stream is None:
            stream = isinstance(data, np.memmap)
        if stream:
            model = self.model
            dtype = next(model.parameters()).dtype
            return StreamedRows(data, model.n_visible, dtype, self.device,
                                lambda b, name: self.objective.prepare(model, b, name))
        return TensorRows(self.objective.prepare(self.model, data, "training data"))

    def _batches(self, n: int) -> list[tuple[int, int]]:
        """[start, stop) of each batch of an epoch of ``n`` rows."""
        bs = self.batch_size
        if self.batching == "fixed" or n <= bs:
            return [(s, min(s + bs, n)) for s in range(0, n, bs)]
        k = math.ceil(n / bs)
        bounds = [dist_.shard_bounds(n, i, k) for i in range(k)]
        return bounds

    def _epoch(self, source, step, sync, mon_train, val_rows) -> None:
        model, objective, sampler = self.model, self.objective, self.sampler
        for part in (sampler, objective):
            begin = getattr(part, "begin_epoch", None)
            if begin is not None:
                begin(self.epoch)
        t0 = time.perf_counter()
        n = source.n
        if self.shuffle:
            perm = torch.randperm(n, generator=self.shuffle_generator,
                                  device=self.shuffle_generator.device)
        else:
            perm = torch.arange(n, device=self.shuffle_generator.device)
        if isinstance(source, StreamedRows):
            perm = perm.cpu()  # streamed rows are gathered on the host
        bounds = self._batches(n)
        main = self.rank == 0
        show = main and (self.progress if self.progress is not None else sys.stderr.isatty())
        bar = progress_bar(len(bounds), f"epoch {self.epoch + 1}/{self.epochs}", "batch", show)
        averaging = bool(self.average_from) and self.epoch + 1 >= self.average_from
        params = list(model.parameters())
        comm0 = sync.seconds if sync is not None else 0.0
        sums: dict[str, Tensor] = {}
        points = self._update_points(len(bounds))
        with precision_.computing(self.precision):
            if step is not None:
                act = torch.zeros((), dtype=params[0].dtype, device=self.device)
                self._fused_epoch(step, source, perm, bounds, act, bar,
                                  params if averaging else None, points)
                sums["hidden_activation"] = act
            else:
                self._general_epoch(source, perm, bounds, sync, sums, bar, params, averaging,
                                    points)
        if bar is not None:
            bar.close()
        self._check_finite()
        lr_used = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None:
            self.scheduler.step()
        self.epoch += 1
        elapsed = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": self.epoch, "time": elapsed, "lr": lr_used}
        means = {k: float(v) / len(bounds) for k, v in sums.items()}
        if sync is not None and step is None:
            means = {k: v * self.world_size for k, v in
                     dist_.mean_across_ranks(means, _reduce_device(self.device)).items()}
        record.update(means)
        if getattr(sampler, "k_schedule", None):
            record["k"] = sampler.k
        if averaging:
            record["averaged_steps"] = self.averager.n
        if self.profile:
            comm = (sync.seconds - comm0) if sync is not None else 0.0
            record["compute_time"] = (elapsed - comm) / len(bounds)
            record["allreduce_time"] = comm / len(bounds)
        with self.averager.applied(params) if averaging else _nothing():
            if mon_train is not None or val_rows is not None:
                record.update(objective.monitor(model, mon_train, val_rows))
            for key in ("free_energy_train", "loss", "train_loss"):
                if key in record and not math.isfinite(record[key]):
                    self._check_finite(force=True, what=key)
            if sampler is not None:
                record.update(dist_.mean_across_ranks(sampler.stats(),
                                                      _reduce_device(self.device)))
            for cb in self.callbacks:
                cb(self, record)
            self._track_best(record, params)
        self.history.append(record)
        if main:
            log.info("epoch %d: %s", self.epoch, _fmt(record))
        if self.checkpoint_dir and (self.epoch % self.checkpoint_every == 0
                                    or self.epoch == self.epochs or self.stopped_early):
            self.save_checkpoint()
        source.release()

    def _update_points(self, n_batches: int) -> dict[int, list]:
        """{batches done: callbacks} for the callbacks that ask to run within the epoch.

        A callback with ``update_points(trainer, epoch, n_batches)`` (``epoch``: the epochs
        done before this one) names the batch counts 1 .. n_batches - 1 after which its
        ``on_update(trainer, epoch, batches_done)`` runs (the epoch's end is its ``__call__``).
        """
        points: dict[int, list] = {}
        for cb in self.callbacks:
            ask = getattr(cb, "update_points", None)
            if ask is not None:
                for p in ask(self, self.epoch, n_batches):
                    if 1 <= int(p) < n_batches:
                        points.setdefault(int(p), []).append(cb)
        return points

    def _on_update(self, callbacks: list, done: int) -> None:
        with torch.no_grad():
            for cb in callbacks:
                cb.on_update(self, self.epoch, done)

    def _general_epoch(self, source, perm, bounds, sync, sums, bar, params, averaging,
                       points: dict[int, list]) -> None:
        model, objective, sampler, gen = self.model, self.objective, self.sampler, self.generator
        world, rank, every = self.world_size, self.rank, self.divergence_check_every
        for i, (lo_, hi_) in enumerate(bounds):
            idx = perm[lo_:hi_]
            global_n = idx.numel()
            weight = 1.0
            if world > 1:
                lo, hi = dist_.shard_bounds(global_n, rank, world)
                idx = idx[lo:hi]
                weight = idx.numel() / global_n
            if idx.numel():
                batch = source.take(idx)
                if self.closure_step:
                    holder: dict = {}

                    def closure(batch=batch, holder=holder):
                        holder.update(objective.gradient(model, batch, sampler, gen))
                        return holder.get("loss")

                    self.optimizer.step(closure)
                    diag = holder
                else:
                    diag = objective.gradient(model, batch, sampler, gen)
            else:  # this rank's share of a short last batch is empty
                sync.zero_()
                diag = {}
            if sync is not None:
                sync.reduce(weight)
            if not self.closure_step:
                self.optimizer.step()
            for key, value in diag.items():
                if (isinstance(value, Tensor) and value.numel() == 1) or isinstance(value, float):
                    value = value.detach() if isinstance(value, Tensor) else value
                    sums[key] = sums.get(key, 0.0) + value * weight
            if averaging:
                self.averager.update(params)
            if every and (i + 1) % every == 0:
                self._check_finite()
            if i + 1 in points:
                self._on_update(points[i + 1], i + 1)
            if bar is not None:
                bar.update(1)

    def _fused_epoch(self, step, source, perm: Tensor, bounds, act: Tensor, bar,
                     averaged: list[Tensor] | None, points: dict[int, list]) -> None:
        """The epoch's batches through ``step.run`` in runs between divergence checks
        (and the batch counts where callbacks asked to run, ``points``).

        The same updates in the same order as one step per batch, but the step binds
        its buffers once per run, not once per batch.  ``averaged`` (the parameters,
        while averaging is on): one batch per run, the mean updated after it.
        """
        n_batches = len(bounds)
        every = self.divergence_check_every or n_batches
        stretch = 1 if averaged is not None else every
        rank, world = self.rank, self.world_size

        # A step that gathers its own rows (the compiled bfloat16 pass) gets their indices.
        rows = getattr(source, "rows", None) if getattr(step, "gathers", False) else None
        if not (world == 1 and isinstance(source, TensorRows) and isinstance(rows, Tensor)
                and rows.dtype == torch.float32 and rows.device.type == "cpu"
                and rows.dim() == 2 and rows.is_contiguous()):
            rows = None

        def batch(i: int):
            idx = perm[bounds[i][0]:bounds[i][1]]
            if rows is not None:
                return IndexedRows(rows, idx)
            if world == 1:
                return source.take(idx)
            # data-parallel: this rank's rows of the global batch and their share of it
            lo, hi = dist_.shard_bounds(idx.numel(), rank, world)
            return (source.take(idx[lo:hi]) if hi > lo else None), (hi - lo) / idx.numel()

        ends = sorted({*range(stretch, n_batches, stretch), *points, n_batches})
        lo = 0
        for hi in ends:
            step.run((batch(i) for i in range(lo, hi)), act)
            if averaged is not None:
                self.averager.update(averaged)
            if self.divergence_check_every and hi % self.divergence_check_every == 0:
                self._check_finite()
            if hi in points:
                self._on_update(points[hi], hi)
            if bar is not None:
                bar.update(hi - lo)
            lo = hi

    def _track_best(self, record: dict, params: list[Tensor]) -> None:
        if self.best_by is None:
            return
        missing = [k for k in self.best_by if k not in record]
        if missing:
            known = sorted(k for k, v in record.items() if isinstance(v, float))
            raise ConfigError(f"best_by names {missing}, which this run does not record: "
                              f"choose from {known} (validation scores need validation data)")
        score = tuple(float(record[k]) for k in self.best_by)
        if self.best is None or score < tuple(self.best["score"]):
            state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.best = {"epoch": self.epoch, "score": list(score), "state": state}
        elif self.patience is not None and self.epoch - self.best["epoch"] >= self.patience:
            log.info("no improvement of %s for %d epochs: stopping", self.best_by,
                     self.patience)
            self.stopped_early = True

    def _finish(self) -> None:
        """End of training: the model takes the best or the averaged parameters."""
        if self.best is not None and self.restore_best:
            self.model.load_state_dict(self.best["state"])
            chosen = dict(self.history[self.best["epoch"] - 1])
            self.history[-1]["best_epoch"] = self.best["epoch"]
            for k, v in chosen.items():
                if k.startswith(("val_", "test_")):
                    self.history[-1][f"best_{k}"] = v
        else:
            self.averager.copy_to(list(self.model.parameters()))

    def _check_finite(self, force: bool = False, what: str = "the free energy") -> None:
        if not force and all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            return
        where = (f"the last good checkpoint (epoch {self._last_ckpt_epoch()}) in "
                 f"{self.checkpoint_dir} is intact" if self.checkpoint_dir else
                 "no checkpoint was being written")
        raise TrainingDiverged(
            f"parameters (or {what}) became NaN/inf in epoch {self.epoch + 1}; "
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
        sampler_state = self.sampler.state_dict() if self.sampler is not None else {}
        if self.world_size > 1:
            mine = ({k: v.detach().cpu() for k, v in sampler_state.items()},
                    self.generator.get_state())
            parts = dist_.all_gather_objects(mine)
            if self.rank != 0:
                dist_.barrier()  # until rank 0 has written it: a resume may read it next
                return path
            for r, (state, rng) in enumerate(parts):
                tensors.update({f"sampler.rank{r}.{k}": v for k, v in state.items()})
                tensors[f"rng.rank{r}"] = rng
        else:
            tensors.update({f"sampler.{k}": v for k, v in sampler_state.items()})
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
        best = None
        if self.best is not None:
            tensors.update({f"best.{k}": v for k, v in self.best["state"].items()})
            best = {"epoch": self.best["epoch"], "score": self.best["score"]}
        header = {"checkpoint": True, "config": self.model.config(), "epoch": self.epoch,
                  "n_averaged": self.averager.n, "world_size": self.world_size,
                  "signature": self.signature, "history": self.history, "best": best,
                  "stopped_early": self.stopped_early,
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
        saved_epoch = header.get("epoch")
        if isinstance(saved_epoch, int) and saved_epoch > self.epochs:
            raise ConfigError(f"cannot resume from {path}: it is at epoch {saved_epoch}, past "
                              f"the {self.epochs} epochs asked for; ask for at least "
                              f"{saved_epoch} epochs (--epochs), or use a new --checkpoint-dir")
        try:
            self._restore(tensors, header, path)
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise ModelFileError(f"{path} is an incomplete or corrupted checkpoint ({exc!r}): "
                                 "start again with a new --checkpoint-dir") from None
        log.info("resumed from %s at epoch %d", path, self.epoch)
        return True

    def _restore(self, tensors: dict[str, Tensor], header: dict, path: Path) -> None:
        def part(prefix):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        dev = self.device
        load_model_tensors(self.model, part("model."), source=str(path))
        if self.sampler is not None:
            prefix = f"sampler.rank{self.rank}." if self.world_size > 1 else "sampler."
            self.sampler.load_state_dict({k: v.to(dev) for k, v in part(prefix).items()})
        self.objective.load_state_dict({k: v.to(dev) for k, v in part("objective.").items()})
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
        self.averager.load(part("average."), int(header.get("n_averaged", 0)), dev)
        best = header.get("best")
        self.best = None if best is None else {
            "epoch": int(best["epoch"]), "score": list(best["score"]),
            "state": {k: v.to(dev) for k, v in part("best.").items()}}
        self.stopped_early = bool(header.get("stopped_early", False))
        self.history = list(header.get("history", []))
        self.epoch = int(header["epoch"])


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    raise ConfigError(f"{type(model).__name__} has no parameters to train")


def _reduce_device(device: torch.device) -> torch.device:
    return device if device.type == "cuda" else torch.device("cpu")


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _int(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _fmt(record: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in record.items())


