"""Trajectory AIS: log Z followed along the training path, every epoch, for a small cost.

Béreux et al. (ICLR 2025) observe that training itself is an annealing path: from a model
with weak couplings, whose log Z is known, the parameters move by small steps to the
trained model, and the persistent chains of training follow it.  :class:`TrajectoryAIS` is
a training callback that, after each epoch, runs one AIS leg from the previous epoch's
model to the current one through ``steps`` linear interpolations of the parameters
(:class:`ParameterPath`, annealed by the one engine, :func:`boltzkit.metrics.ais.anneal`)
and adds the leg's log mean weight to log Z.  The first leg starts at exact samples of
the coupling-free model of the first epoch (closed-form log Z:
:func:`boltzkit.trajectory.base_log_z`) and takes ``first_steps``; every later leg starts
at the sampler's persistent beta = 1 chains as the previous epoch left them
(:meth:`boltzkit.sampling.Sampler.model_samples`: PCD's chains, parallel tempering's
beta = 1 replica, trajectory tempering's live replica), treated as samples of that model,
so training pays for their equilibration.  Where the callbacks see an average of the
parameters (``--average-from``), the chains follow the live ones, and the legs start
from the previous leg's end states resampled by weight instead.

This is only as sound as that treatment: with chains near equilibrium (small models,
trajectory tempering that swaps well) the estimate follows the exact log Z (tested on
binarised digits); chains far from equilibrium, such as PCD-1's on MNIST, bias every leg
(measured in docs/results/equilibrium.md: tens of nats within a few epochs).  The legs'
effective sample sizes tell: ``trajectory_ais_reliable`` turns False for good once a leg's
ESS falls below ``min_ess_fraction`` of its chains.

Each epoch the record gets ``log_z`` and ``test_log_likelihood`` (mean -F(test) - log Z
over the held-out rows), each with ``_err``: three standard errors (the legs'
delta-method errors added in quadrature; the convention of
:class:`~boltzkit.metrics.ais.AISResult`'s bounds, covering the weights' sampling error
only), ``trajectory_ais_ess`` (the leg's), ``trajectory_ais_reliable`` and
``trajectory_ais_time`` (the seconds the monitor took, beside the epoch's ``time``).

The callback draws from its own generator and changes no parameters or chains, so a run
trains exactly as without it; with a checkpoint directory its state is kept beside the
checkpoint (:class:`CallbackState`), so ``--resume`` continues it exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .ais import _ess, _log_weight_stats, anneal


class CallbackState:
    """A training callback's tensors, kept beside the trainer's checkpoint for ``--resume``.

    The Trainer checkpoints its own parts; a callback with state writes it here, one file
    per epoch under ``CHECKPOINT_DIR/NAME/``, at the epochs the Trainer writes its
    checkpoint (``every_epoch``: at every epoch), keeping the newest ``keep`` files (None:
    all).  A resumed run reads the file of the checkpoint's epoch.
    """

    def __init__(self, name: str, keep: int | None = 2, every_epoch: bool = False) -> None:
        self.name, self.keep, self.every_epoch = name, keep, every_epoch

    def folder(self, trainer) -> Path | None:
        ckpt = getattr(trainer, "checkpoint_dir", None)
        return None if ckpt is None else Path(ckpt) / self.name

    def save(self, trainer, epoch: int,
             make: Callable[[], tuple[dict[str, Tensor], dict]]) -> None:
        """Write ``make()`` = (tensors, JSON meta) for ``epoch`` when the trainer will
        checkpoint it (rank 0 only)."""
        from ..io import save_tensors

        folder = self.folder(trainer)
        if folder is None or getattr(trainer, "rank", 0) != 0:
            return
        if not (self.every_epoch or epoch % trainer.checkpoint_every == 0
                or epoch == trainer.epochs):
            return
        tensors, meta = make()
        folder.mkdir(parents=True, exist_ok=True)
        save_tensors(folder / f"e{epoch}.safetensors", tensors, {"epoch": epoch, **meta})
        if self.keep is not None:
            old = sorted((int(p.stem[1:]), p) for p in folder.glob("e*.safetensors")
                         if p.stem[1:].isdigit() and int(p.stem[1:]) <= epoch)
            for _, p in old[:-self.keep]:
                p.unlink(missing_ok=True)

    def load(self, trainer, epoch: int) -> tuple[dict[str, Tensor], dict]:
        """(tensors, meta) saved for ``epoch``; ConfigError when there are none."""
        from ..io import read_tensors

        folder = self.folder(trainer)
        path = None if folder is None else folder / f"e{epoch}.safetensors"
        if path is None or not path.is_file():
            raise ConfigError(f"cannot resume the {self.name} monitor at epoch {epoch}: its "
                              f"state is not in {folder or 'a checkpoint directory'} (start "
                              "the run again with a new --checkpoint-dir)")
        return read_tensors(path)


class ParameterPath:
    """The annealing path between two parameter states of one model (an AnnealingPath).

    Position s in [0, 1] is the model with float tensors (1 - s) a + s b; the log-weight
    increment of a step is F_{s_prev}(x) - F_s(x) and the transition one ``gibbs`` sweep
    of the model at s.  ``scratch``: two copies of the model, rewritten in turn.  The
    engine's :func:`~boltzkit.metrics.ais.anneal` runs it (``log_z_base``, ``sample_base``
    and ``from_data`` belong to whole-path estimates and are not used).
    """

    log_z_base = 0.0

    def __init__(self, scratch: tuple[nn.Module, nn.Module], a: dict[str, Tensor],
                 b: dict[str, Tensor]) -> None:
        from ..trajectory import interpolate

        self.a, self.b = a, b
        self._interp = interpolate
        self.prev, self.cur = scratch
        self.s_prev: float | None = None

    def _at(self, model: nn.Module, s: float) -> nn.Module:
        return self._interp(model, self.a, self.b, s)

    @torch.no_grad()
    def step(self, x: Tensor, beta: float, beta_prev: float, generator, transition: bool):
        if self.s_prev != beta_prev:
            self._at(self.prev, beta_prev)
        self._at(self.cur, beta)
        inc = self.prev.free_energy(x).double() - self.cur.free_energy(x).double()
        if transition:
            x = self.cur.gibbs(x, 1, generator=generator)
        self.prev, self.cur, self.s_prev = self.cur, self.prev, beta
        return inc, x

    def fused(self):
        return None


class TrajectoryAIS:
    """Training callback: ``log_z`` and ``test_log_likelihood`` every epoch by AIS along the
    training trajectory (see the module's notes).

    ``data``: held-out rows (n_samples, n_visible), or None for log Z alone; ``n_chains``:
    the most particles of a leg; ``steps`` interpolation steps per epoch (``first_steps``
    for the first leg, from the coupling-free model; default ``10 * steps``);
    ``min_ess_fraction``: the leg ESS below which the estimate is flagged unreliable.
    RBM-like models only (the path starts at one with its connection zeroed).
    """

    def __init__(self, data: Tensor | None = None, n_chains: int = 100, steps: int = 100,
                 first_steps: int | None = None, seed: int = 0, batch_size: int = 2000,
                 min_ess_fraction: float = 0.1) -> None:
        for name, value in (("n_chains", n_chains), ("steps", steps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"trajectory AIS: {name} must be a positive integer, "
                                  f"got {value!r}")
        self.data = data
        self.n_chains, self.steps = n_chains, steps
        self.first_steps = 10 * steps if first_steps is None else int(first_steps)
        self.seed, self.batch_size = int(seed), batch_size
        self.min_ess_fraction = float(min_ess_fraction)
        self.reliable = True
        self.store = CallbackState("trajectory_ais")
        self.particles: Tensor | None = None  # samples of the previous model
        self.prev: dict[str, Tensor] | None = None  # the previous model's float state
        self.log_z = 0.0  # log Z of the previous model
        self.var = 0.0  # its delta-method variance (the legs' added up)
        self.generator: torch.Generator | None = None
        self._scratch: tuple[nn.Module, nn.Module] | None = None

    # -- state ---------------------------------------------------------------------
    def _tensors(self) -> tuple[dict[str, Tensor], dict]:
        tensors = {"particles": self.particles, "rng": self.generator.get_state()}
        tensors.update({f"prev.{k}": v for k, v in self.prev.items()})
        return tensors, {"log_z": self.log_z, "var": self.var, "reliable": self.reliable}

    def _restore(self, trainer, epoch: int, model: nn.Module) -> None:
        tensors, meta = self.store.load(trainer, epoch)
        dev = _device(model)
        self.particles = tensors["particles"].to(dev)
        self.prev = {k[5:]: v.to(dev) for k, v in tensors.items() if k.startswith("prev.")}
        self.generator = torch.Generator(device=dev)
        self.generator.set_state(tensors["rng"])
        self.log_z, self.var = float(meta["log_z"]), float(meta["var"])
        self.reliable = bool(meta["reliable"])

    def _start(self, model: nn.Module) -> None:
        from ..trajectory import base_log_z, base_sample, base_state, set_state

        dev = _device(model)
        self.generator = torch.Generator(device=dev).manual_seed(self.seed * 1_000_003 + 17)
        self.prev = base_state(model)
        base = set_state(self._scratches(model)[0], self.prev)
        self.log_z, self.var = base_log_z(base), 0.0
        self.particles = base_sample(base, self.n_chains, self.generator)

    def _scratches(self, model: nn.Module) -> tuple[nn.Module, nn.Module]:
        from ..trajectory import snapshot

        if self._scratch is None:
            self._scratch = (snapshot(model), snapshot(model))
        return self._scratch

    # -- the callback ----------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, trainer, record: dict) -> None:
        from ..trajectory import _check_rbm, float_state

        start = time.perf_counter()
        model = trainer.model
        _check_rbm(model, "trajectory AIS")
        epoch = int(record.get("epoch", getattr(trainer, "epoch", 0)))
        first = self.particles is None and epoch == 1
        if self.particles is None:
            if first:
                self._start(model)
            else:
                self._restore(trainer, epoch - 1, model)
        cur = float_state(model)
        n_steps = self.first_steps if first else self.steps
        betas = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64).tolist()
        path = ParameterPath(self._scratches(model), self.prev, cur)
        log_w, end = anneal(path, self.particles, betas, self.generator)
        lme, rel_se, _, _ = _log_weight_stats(log_w)
        self.log_z += lme
        self.var += rel_se**2
        err = 3.0 * math.sqrt(self.var)
        record["log_z"] = self.log_z
        record["log_z_err"] = err
        ess = _ess(log_w)
        self.reliable = self.reliable and ess >= self.min_ess_fraction * log_w.numel()
        record["trajectory_ais_ess"] = ess
        record["trajectory_ais_reliable"] = self.reliable
        if self.data is not None:
            record["test_log_likelihood"] = -self._mean_free_energy(model) - self.log_z
            record["test_log_likelihood_err"] = err
        self.particles = self._next_particles(trainer, epoch, log_w, end)
        self.prev = cur
        self.store.save(trainer, epoch, self._tensors)
        record["trajectory_ais_time"] = time.perf_counter() - start

    def _next_particles(self, trainer, epoch: int, log_w: Tensor, end: Tensor) -> Tensor:
        """Samples of this epoch's model to start the next leg from: the sampler's
        persistent beta = 1 chains when this model is the live one (not an average), else
        the leg's end states resampled in proportion to their weights."""
        averaged = bool(getattr(trainer, "average_from", 0)) and epoch >= trainer.average_from
        sampler = getattr(trainer, "sampler", None)
        chains = None if averaged or sampler is None else sampler.model_samples()
        if chains is not None:
            return chains[:self.n_chains].detach().clone()
        idx = torch.multinomial(torch.softmax(log_w, 0), end.shape[0], replacement=True,
                                generator=self.generator)
        return end[idx].clone()

    def _mean_free_energy(self, model: nn.Module) -> float:
        v = self.data
        if not isinstance(v, Tensor) or v.device != _device(model):
            v = torch.as_tensor(v).to(device=_device(model), dtype=next(model.parameters()).dtype)
            self.data = v
        total = sum(float(model.free_energy(b).double().sum()) for b in v.split(self.batch_size))
        return total / v.shape[0]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
