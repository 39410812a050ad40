"""A training job from a resolved configuration: the one place that turns options into parts.

:func:`train_from_config` looks the kind up in :mod:`boltzkit.kinds` and calls its
builder with a :class:`Run`.  The builder decides what the kind's parts are (model,
sampler, objective, rows); everything a config says about the loop (epochs, optimizer,
schedules, averaging, checkpoints, progress, TensorBoard, the log-likelihood monitor,
resume) is applied here, the same way for every kind.  Kinds trained in stages (a DBN's
layers and fine-tuning, a DBM's pretraining and joint training) make one Trainer per
stage, each with its own checkpoint under ``checkpoint_dir/STAGE``, so ``--resume``
skips the finished stages and continues the interrupted one exactly.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import torch

from .. import kinds
from ..errors import ConfigError, DataError
from .trainer import Trainer

log = logging.getLogger("boltzkit.training")

#: Options that do not change what a run computes: a resumed run may differ in them.
NOT_SIGNATURE = frozenset({"out", "threads", "device", "checkpoint_dir", "checkpoint_every",
                           "plots", "tensorboard", "monitor", "monitor_every",
                           "monitor_ais_steps", "monitor_ais_chains", "data_dir", "epochs",
                           "dbm_ais_chains", "dbm_ais_steps"})


def device_of(name: str) -> torch.device:
    """A torch device from ``--device``, refused clearly when it is not there."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available: "
                          "use --device cpu")
    return dev


def print_epoch(trainer: Trainer, record: dict) -> None:
    """One line per epoch on stderr: the record's headline numbers."""
    stage = getattr(trainer, "stage", None)
    keys = ("epoch", "time", "loss", "train_loss", "recon_error", "free_energy_gap",
            "val_error", "val_rmse", "pseudo_log_likelihood", "log_likelihood",
            "test_log_likelihood", "swap_rate_mean", "n_replicas", "n_temperatures")
    parts = [f"{stage}:"] if stage else []
    parts += [f"{k}={record[k]:.4g}" if isinstance(record[k], float) else f"{k}={record[k]}"
              for k in keys if k in record]
    print("  ".join(parts), file=sys.stderr, flush=True)


class Run:
    """A resolved training config and what it asks of the loop.

    ``given``: the options set explicitly (flags or a config file), so a builder can
    refuse one it would not use (:meth:`unused`).  ``data``: ``(train, train_labels,
    test, test_labels)`` arrays to train on instead of loading ``--dataset`` (labels and
    the test split may be None).
    """

    def __init__(self, cfg: dict[str, Any], given: frozenset[str] | set[str] = frozenset(),
                 resume: bool = False, quiet: bool = False, data: tuple | None = None) -> None:
        self.cfg = cfg
        self.data = data
        self.given = frozenset(given)
        self.resume = resume
        self.quiet = quiet
        self.kind = kinds.kind(cfg["model"])
        self.device = device_of(cfg.get("device") or "cpu")
        self.said_precision = False  # the precision chosen is said once per run
        if resume and not cfg.get("checkpoint_dir"):
            raise ConfigError("--resume needs --checkpoint-dir (where the run's checkpoint is)")

    def __getitem__(self, key: str) -> Any:
        return self.cfg[key]

    def unused(self, option: str, why: str) -> None:
        """Refuse ``option`` if it was given explicitly: this run would not use it."""
        if option in self.given:
            raise ConfigError(f"{kinds.flag(option)} is not used here: {why}; drop it")

    # -- data --------------------------------------------------------------
    def load(self, split: str):
        """``(data, labels)`` of ``split`` from the data options (DataError if absent)."""
        from ..data import load_dataset

        c = self.cfg
        size = c.get("mixture_size") if kinds.applies(c, "mixture_size") else None
        return load_dataset(c["dataset"], split=split, data_dir=c.get("data_dir"),
                            binarize=c.get("binarize") or "none", seed=c.get("seed") or 0,
                            limit=c.get("limit"), test_path=c.get("test_data"),
                            mixture_size=size)

    def splits(self):
        """``(train, train_labels, test, test_labels)``; the test split may be None."""
        if self.data is not None:
            train, train_labels, test, test_labels = self.data
            if len(train) == 0:
                raise DataError("training data is empty: pass at least one sample")
            return train, train_labels, test, test_labels
        train, train_labels = self.load("train")
        if len(train) == 0:
            raise DataError("training data is empty: pass at least one sample")
        try:
            test, test_labels = self.load("test")
        except DataError as exc:
            if "no test data" not in str(exc):
                raise
            test, test_labels = None, None
        return train, train_labels, test, test_labels

    # -- parts -------------------------------------------------------------
    def sampler(self, **overrides: Any):
        """The sampler the options describe (``--method``, ``--k``, ...)."""
        from ..sampling import make_sampler

        c = {**self.cfg, **overrides}
        return make_sampler(c["method"], c["k"], c.get("chains"), c["n_temperatures"],
                            c["beta_min"], beta_std=c["beta_std"],
                            beta_autocorr=c["beta_autocorr"], readout_steps=c["readout_steps"],
                            k_schedule=c.get("k_schedule"), swap_target=c.get("swap_target"),
                            max_replicas=c.get("max_replicas") or 32)

    def likelihood(self):
        """The likelihood objective (sparsity, centering), or BEAM around it."""
        from ..objectives import LikelihoodGradient

        c = self.cfg
        objective = LikelihoodGradient(c.get("sparsity_target"), c.get("sparsity_cost") or 0.0,
                                       centering=bool(c.get("centering")))
        if c.get("objective") == "beam":
            from ..adversarial import AdversarialGradient

            warm = int(c["gamma_warmup"] or 0)
            objective = AdversarialGradient(
                c["critic"], gamma=c["gamma"], k=c["critic_k"], likelihood=objective,
                gamma_schedule=[(0, 1.0), (warm, c["gamma"])] if warm else None)
        return objective

    def signature(self, stage: str | None) -> tuple[dict, dict]:
        keys = sorted(k for k in self.kind.reads if k not in NOT_SIGNATURE)
        defaults = kinds.defaults(self.kind.name)
        sig = {k: self.cfg.get(k) for k in keys}
        if stage:
            sig["stage"] = stage
        return sig, {k: defaults.get(k) for k in keys}

    def callbacks(self, model=None, monitor_data=None, train_data=None) -> list:
        c, out = self.cfg, []
        if c.get("monitor"):
            if monitor_data is None:
                raise ConfigError(f"--monitor is not available for --model {self.kind.name}")
            from ..metrics import LikelihoodMonitor
            from ..metrics.likelihood import exact_is_auto

            if model is not None and exact_is_auto(model):
                for key in ("monitor_ais_steps", "monitor_ais_chains"):
                    self.unused(key, "this model's log Z is exact (a layer has at most 2^20 "
                                     "states), so the monitor runs no AIS")

            out.append(LikelihoodMonitor(monitor_data, every=c["monitor_every"],
                                         ais_steps=c["monitor_ais_steps"],
                                         ais_chains=c["monitor_ais_chains"],
                                         train_data=train_data, seed=c["seed"]))
        if c.get("trajectory_ais"):
            from ..metrics.trajectory_ais import TrajectoryAIS

            if model is None:
                raise ConfigError(f"--trajectory-ais is not available for --model "
                                  f"{self.kind.name}")
            out.append(TrajectoryAIS(monitor_data, n_chains=c["trajectory_ais_chains"],
                                     steps=c["trajectory_ais_steps"], seed=c["seed"]))
        if c.get("save_trajectory"):
            from ..trajectory import TrajectoryRecorder, trajectory_path

            out.append(TrajectoryRecorder(trajectory_path(c["out"]),
                                          updates=c["trajectory_updates"]))
        if c.get("tensorboard"):
            from ..tracking import TensorBoardLogger

            out.append(TensorBoardLogger(c["tensorboard"]))
        if not self.quiet:
            out.append(print_epoch)
        return out

    def trainer(self, model, sampler, objective, *, stage: str | None = None,
                callbacks: list | tuple = (), monitor_data: tuple | None = None,
                **overrides: Any) -> Trainer:
        """A Trainer with the loop's options (``overrides`` win: a stage's own settings).

        ``callbacks`` are added to the run's own (progress lines, TensorBoard, and the
        log-likelihood monitor, which scores ``monitor_data = (held-out rows, training
        rows)``).
        """
        c = self.cfg
        ckpt = c.get("checkpoint_dir")
        if ckpt and stage:
            ckpt = str(Path(ckpt) / stage)
        betas = c.get("adam_betas")
        if isinstance(betas, str):
            betas = _floats(betas, "adam_betas", 2)
        sig, sig_defaults = self.signature(stage)
        opts: dict[str, Any] = dict(
            epochs=c["epochs"], batch_size=c["batch_size"], lr=c["lr"], optimizer=c["optimizer"],
            momentum=c["momentum"], weight_decay=c["weight_decay"], adam_betas=betas,
            lr_schedule=c["lr_schedule"], lr_final_factor=c["lr_final_factor"],
            lr_power=c["lr_power"], average_from=c["average_from"], seed=c["seed"],
            precision=c["precision"],
            checkpoint_dir=ckpt, checkpoint_every=c["checkpoint_every"],
            progress=False if self.quiet else None, signature=sig,
            signature_defaults=sig_defaults,
            callbacks=[*self.callbacks(model, *(monitor_data or (None, None))), *callbacks])
        opts.update(overrides)
        trainer = Trainer(model, sampler, objective, **opts)
        trainer.stage = stage
        p = trainer.precision
        if not self.quiet and p.requested != "float32" and not self.said_precision:
            print(f"precision: {p.name} ({p.reason})", file=sys.stderr)
            self.said_precision = True
        return trainer

    def fit(self, trainer: Trainer, data, val=None, **kwargs) -> list[dict]:
        """``trainer.fit`` with this run's ``--resume``; history records get the stage."""
        history = trainer.fit(data, val, resume=self.resume, **kwargs)
        stage = getattr(trainer, "stage", None)
        return [{"stage": stage, **r} if stage else r for r in history]


#: Options that say where a command-line run finds its data or writes its model; an API
#: call is handed the data and returns the model, so it refuses them.
_COMMAND_LINE_ONLY = ("dataset", "data_dir", "test_data", "fold", "limit", "out")


def api_run(kind: str, cfg: dict[str, Any], quiet: bool = True) -> Run:
    """A :class:`Run` for an API call that trains ``kind`` on data it is given.

    ``cfg``: ``boltzkit train`` options by their registry names (a ``--config`` file's
    keys, :func:`boltzkit.cli.load_config_file`); the rest take the kind's defaults.
    Options are checked as the command line checks them; the data-location options are
    refused (the caller passes the data).
    """
    given = set(cfg) - {"model"}
    if cfg.get("model", kind) != kind:
        raise ConfigError(f"this config is for --model {cfg['model']}, not {kind}")
    where = sorted(given & set(_COMMAND_LINE_ONLY))
    if where:
        raise ConfigError(f"{', '.join(where)}: where a command-line run finds its data or "
                          "writes its model; here the data is passed in: drop them")
    full = {**kinds.defaults(kind), **cfg, "model": kind}
    kinds.check_given(full, given)
    return Run(full, given, quiet=quiet)


def _floats(text: str, name: str, n: int | None = None) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if n is not None and len(values) != n:
        raise ConfigError(f"{name} needs {n} numbers, got {text!r}")
    return values


def train_from_config(cfg: dict[str, Any], given: frozenset[str] | set[str] = frozenset(),
                      resume: bool = False, quiet: bool = False, data: tuple | None = None):
    """Train the kind a resolved config describes; returns ``(model, history, extra)``.

    ``cfg``: every option (e.g. ``{**boltzkit.kinds.defaults("dbn"), "layers": "8,5"}``);
    ``data``: arrays instead of ``--dataset`` (see :class:`Run`).

    ``extra``: what the builder wants in the model file's header besides the config and
    history (e.g. the standardiser of ``--standardize``).  Under ``torchrun`` every kind
    trains data-parallel (the loop does it); rank 0 alone should write files.
    """
    from .. import distributed

    kinds.check_given(cfg, set(given))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device_of(cfg.get("device") or "cpu")  # a clear error for every kind, before any work
    if distributed.env_world_size() > 1:  # launched by torchrun: data-parallel
        cfg = {**cfg, "device": str(distributed.init_from_env(cfg.get("device") or "cpu"))}
    run = Run(cfg, given, resume, quiet, data)
    result = run.kind.builder()(run)
    if len(result) == 2:
        return (*result, {})
    return result
