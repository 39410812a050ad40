"""The training loop: batches, a ``torch.optim`` step, per-epoch history, checkpoints.

``Trainer.fit`` shuffles the data with its own seeded generator, asks the
sampler for negative particles, lets the objective fill ``.grad`` and steps
the optimizer.  After each epoch it records cheap monitors (reconstruction
error and free energies on fixed subsets), runs callbacks (e.g. a likelihood
estimate), checks that the parameters are finite, and writes a checkpoint
atomically.  A checkpoint holds parameters, optimizer and scheduler state,
sampler chains, objective state and the RNG state, so ``fit(resume=True)``
continues exactly where a run stopped.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import ConfigError, ModelFileError, TrainingDiverged
from .io import load_model_tensors, model_tensors, read_tensors, save_tensors
from .objectives import LikelihoodGradient
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
                 signature_defaults: dict | None = None) -> None:
        _positive_int("epochs", epochs, allow_zero=True)
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
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
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
            return torch.optim.SGD(groups, lr=lr, momentum=momentum)
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
    def fit(self, data: Tensor, val: Tensor | None = None, resume: bool = False) -> list[dict]:
        """Train on ``data`` (rows are samples); ``val`` feeds the overfitting monitor."""
        model = self.model
        data = model.prepare(data, "training data")
        if val is not None:
            val = model.prepare(val, "validation data")
        if resume:
            if not self.load_checkpoint():
                log.info("no checkpoint to resume from in %s: starting fresh", self.checkpoint_dir)
                resume = False
        if not resume:
            if self.init_visible_bias:
                model.init_visible_bias(data)
            self.objective.setup(model, data)
        mon_gen = torch.Generator().manual_seed(self.seed + 7919)
        mon_train = data[torch.randperm(data.shape[0], generator=mon_gen)[:self.monitor_size]
                         .to(data.device)]
        mon_val = None if val is None else val[:self.monitor_size]
        n = data.shape[0]
        n_batches = math.ceil(n / self.batch_size)
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        while self.epoch < self.epochs:
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=self.generator, device=data.device)
            bar = _progress(n_batches, f"epoch {self.epoch + 1}/{self.epochs}", show)
            act = data.new_zeros(())
            for i in range(n_batches):
                batch = data.index_select(0, perm[i * self.batch_size:(i + 1) * self.batch_size])
                with torch.no_grad():
                    field = model.hidden_field(batch)
                    negative, neg_field = self.sampler.negative(model, batch, field,
                                                                self.generator)
                    diag = self.objective.compute(model, batch, negative, field, neg_field)
                self.optimizer.step()
                act += diag["hidden_activation"]
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
            record = {"epoch": self.epoch, "time": time.perf_counter() - t0, "lr": lr_used,
                      "hidden_activation": float(act) / n_batches}
            record.update(self.monitor(mon_train, mon_val))
            if not math.isfinite(record["free_energy_train"]):
                self._check_finite(force=True)
            record.update(self.sampler.stats())
            for cb in self.callbacks:
                cb(self, record)
            self.history.append(record)
            log.info("epoch %d: %s", self.epoch, _fmt(record))
            if self.checkpoint_dir and (self.epoch % self.checkpoint_every == 0
                                        or self.epoch == self.epochs):
                self.save_checkpoint()
        return self.history

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
        """Atomically write everything needed to continue this run exactly."""
        if path is None:
            if self.checkpoint_dir is None:
                raise ConfigError("no checkpoint_dir given")
            path = self.checkpoint_dir / CHECKPOINT_NAME
        tensors = {f"model.{k}": v for k, v in model_tensors(self.model).items()}
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
        tensors["rng"] = self.generator.get_state()
        header = {"checkpoint": True, "config": self.model.config(), "epoch": self.epoch,
                  "signature": self.signature, "history": self.history,
                  "optimizer": {"param_groups": opt["param_groups"], "state": opt_meta},
                  "scheduler": self.scheduler.state_dict() if self.scheduler else None}
        return save_tensors(path, tensors, header)

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

        def part(prefix):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        load_model_tensors(self.model, part("model."), source=str(path))
        self.sampler.load_state_dict({k: v.to(self.model.device)
                                      for k, v in part("sampler.").items()})
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
        self.generator.set_state(tensors["rng"])
        self.history = list(header.get("history", []))
        self.epoch = int(header["epoch"])
        log.info("resumed from %s at epoch %d", path, self.epoch)
        return True


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

