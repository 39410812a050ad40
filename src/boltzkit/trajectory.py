"""Models along a training trajectory: parallel trajectory tempering (PTT) and its path.

Béreux, Decelle, Furtlehner, Rosset & Seoane ("Fast training and sampling of Restricted
Boltzmann Machines", ICLR 2025) replace the temperatures of parallel tempering by models
saved along the training trajectory: the first ones (weak couplings) mix fast, the last
one is the model, and neighbours exchange configurations by Metropolis swaps on their
free-energy differences (:func:`boltzkit.sampling.exchange`).  Here:

* :class:`TrajectoryTempering` is the training sampler (``--method ptt``): it keeps
  snapshots of the model as it trains, adding one whenever the swap acceptance between
  the newest snapshot and the live model falls below ``swap_target`` (the paper's rule);
  at ``max_replicas`` it drops the interior snapshot its neighbours can best do without.
  The live model's chains are the negative particles, so the model phase of the gradient
  is drawn from chains that cross between modes.
* :class:`TrajectoryPath` is the path through saved models (``--save-trajectory`` writes
  them after every epoch, :class:`TrajectoryRecorder`): a coupling-free base model
  (exact samples, closed-form log Z), then the saved models, joined by linear
  interpolation of the parameters.  Any point of it is a model, so a ladder can be
  placed anywhere on it; :func:`trajectory_sample` (``boltzkit sample --method ptt``)
  runs replica exchange along it with an automatic ladder
  (:func:`boltzkit.sampling.place_ladder` in path coordinates), and trajectory AIS
  (:mod:`boltzkit.metrics.trajectory_ais`) anneals along it.

Every replica is a whole model (a copy), so any model with ``gibbs`` and
``free_energy`` works as a PTT replica; the coupling-free base needs an RBM (its
connection's parameters are zeroed).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import ConfigError, ModelFileError
from .sampling import Sampler, _check_k, _check_ladder_options, exchange, init_chains, place_ladder

#: What ``--save-trajectory`` writes beside MODEL.safetensors.
TRAJECTORY_SUFFIX = ".trajectory.safetensors"


def trajectory_path(model_path: str | Path) -> Path:
    """The trajectory file of a model file: MODEL.trajectory.safetensors."""
    return Path(model_path).with_suffix(TRAJECTORY_SUFFIX)


# --------------------------------------------------------------------------- model copies
def snapshot(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` (no gradients), the same device and dtype."""
    copy_ = copy.deepcopy(model)
    for p in copy_.parameters():
        p.requires_grad_(False)
        p.grad = None
    return copy_


def float_state(model: nn.Module) -> dict[str, Tensor]:
    """The floating-point tensors of ``model.state_dict()``, detached clones."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if v.is_floating_point()}


@torch.no_grad()
def set_state(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """Copy ``state`` (float tensors by state-dict name) into ``model`` in place."""
    own = model.state_dict()
    for k, v in state.items():
        own[k].copy_(v)
    return model


@torch.no_grad()
def interpolate(model: nn.Module, a: dict[str, Tensor], b: dict[str, Tensor],
                s: float) -> nn.Module:
    """Set ``model``'s float tensors to (1 - s) a + s b (``s`` in [0, 1]) in place."""
    own = model.state_dict()
    for k, va in a.items():
        torch.lerp(va, b[k], float(s), out=own[k])
    return model


def _check_rbm(model: nn.Module, what: str):
    from .rbm import RBM

    if not isinstance(model, RBM):
        raise ConfigError(f"{what} needs an RBM-like model (visible + hidden + connection), "
                          f"not a {type(model).__name__}")
    return model


@torch.no_grad()
def base_state(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s float state with the connection's parameters set to zero.

    With no couplings the layers are independent: the start of every trajectory path,
    sampled exactly and with log Z in closed form (:func:`base_log_z`).
    """
    rbm = _check_rbm(model, "a coupling-free base model")
    state = float_state(rbm)
    zeroed = {f"connection.{k}" for k, _ in rbm.connection.named_parameters()}
    for k in zeroed:
        state[k].zero_()
    return state


@torch.no_grad()
def base_log_z(base: nn.Module) -> float:
    """log Z of a coupling-free RBM (float64): the two layers' log-partitions at zero field."""
    rbm = _check_rbm(base, "a coupling-free base model")
    v64, h64 = copy.deepcopy(rbm.visible).double(), copy.deepcopy(rbm.hidden).double()
    zv = torch.zeros(1, v64.n, dtype=torch.float64, device=rbm.device)
    zh = torch.zeros(1, h64.n, dtype=torch.float64, device=rbm.device)
    return float(v64.log_partition(zv)[0] + h64.log_partition(zh)[0])


@torch.no_grad()
def base_sample(base: nn.Module, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` exact visible samples of a coupling-free RBM: (n, n_visible)."""
    rbm = _check_rbm(base, "a coupling-free base model")
    field = torch.zeros(n, rbm.visible.n, device=rbm.device, dtype=rbm.dtype)
    return rbm.visible.sample(field, 1.0, generator)


# --------------------------------------------------------------------------- swaps
@torch.no_grad()
def _pair_energies(models: list[nn.Module], x: Tensor, lo: Tensor) -> tuple[Tensor, Tensor]:
    """(own, swapped) free-energy sums of the pairs (lo, lo + 1) for :func:`exchange`."""
    C = x.shape[1]
    own, swapped = [], []
    for i in lo.tolist():
        both = torch.cat([x[i], x[i + 1]])
        fa, fb = models[i].free_energy(both), models[i + 1].free_energy(both)
        own.append(fa[:C] + fb[C:])
        swapped.append(fa[C:] + fb[:C])
    return torch.stack(own), torch.stack(swapped)


@torch.no_grad()
def _sweep(models: list[nn.Module], x: Tensor, k: int, generator) -> Tensor:
    """``k`` Gibbs sweeps of each replica's chains under its own model: x (R, C, n)."""
    return torch.stack([m.gibbs(x[r], k, generator=generator) for r, m in enumerate(models)])


def acceptance(a: nn.Module, b: nn.Module, xa: Tensor, xb: Tensor) -> float:
    """Mean probability that a swap between chains ``xa`` of model ``a`` and ``xb`` of ``b``
    would be accepted: mean of min(1, exp(F_a(xa) + F_b(xb) - F_a(xb) - F_b(xa)))."""
    with torch.no_grad():
        own, swapped = _pair_energies([a, b], torch.stack([xa, xb]),
                                      torch.zeros(1, dtype=torch.long))
        return float((own - swapped).clamp_max(0.0).exp().mean())


# --------------------------------------------------------------------------- training
class TrajectoryTempering(Sampler):
    """Parallel trajectory tempering as the model phase of training (``--method ptt``).

    Replicas: snapshots of the model taken during training (oldest first), then the
    live model; each update runs ``k`` Gibbs sweeps of every replica's ``n_chains``
    chains under its own model, then proposes swaps between neighbours (alternating
    even and odd pairs; :func:`~boltzkit.sampling.exchange`).  The first snapshot is the
    model at the first update; a new one is taken whenever the swap acceptance between
    the newest snapshot and the live model falls below ``swap_target`` (measured on the
    updates that attempt that pair).  With ``max_replicas`` replicas, taking a snapshot
    first drops the interior snapshot whose two neighbours would swap best without it.
    The live model's chains are the negative particles.  ``init``: the chains start at
    random states ("random") or rows of the first batch ("data").

    ``stats()``: ``swap_rate_min`` / ``swap_rate_mean`` over the neighbouring pairs this
    epoch and ``n_replicas``.  The snapshots are part of ``state_dict`` (checkpoints
    resume exactly).
    """

    name = "ptt"

    def __init__(self, k: int = 1, n_chains: int | None = None, swap_target: float = 0.25,
                 max_replicas: int = 32, init: str = "random") -> None:
        self.k = _check_k(k)
        _check_ladder_options(swap_target, max_replicas)
        if n_chains is not None and (not isinstance(n_chains, int) or n_chains < 1):
            raise ConfigError(f"n_chains must be a positive integer, got {n_chains!r}")
        if init not in ("random", "data"):
            raise ConfigError(f"unknown chain init {init!r}: use 'random' or 'data'")
        self.swap_target = float(swap_target if swap_target is not None else 0.25)
        self.max_replicas = max_replicas
        self.n_chains = n_chains
        self.init = init
        self.models: list[nn.Module] = []  # snapshots, oldest first
        self._states: list[dict[str, Tensor]] | None = None  # loaded, not yet built
        self.chains: Tensor | None = None  # (R, C, n): snapshots, then the live model
        self._parity = 0
        self._rate_sum: Tensor = torch.zeros(0, dtype=torch.float64)
        self._rate_n: Tensor = torch.zeros(0, dtype=torch.float64)

    def _build(self, model: nn.Module) -> None:
        if self._states is not None:
            self.models = [set_state(snapshot(model), st) for st in self._states]
            self._states = None

    def _start(self, model: nn.Module, v_data: Tensor, generator) -> Tensor:
        n = self.n_chains or v_data.shape[0]
        if self.init == "data":
            reps = math.ceil(n / v_data.shape[0])
            return v_data.repeat(reps, 1)[:n].clone()
        return init_chains(model, n, generator)

    @torch.no_grad()
    def negative(self, model, v_data, field_data, generator=None):
        self._build(model)
        if self.chains is None:
            x = self._start(model, v_data, generator)
            self.models = [snapshot(model)]
            self.chains = torch.stack([x, x.clone()])
            self._rate_sum = torch.zeros(1, dtype=torch.float64)
            self._rate_n = torch.zeros(1, dtype=torch.float64)
        reps = [*self.models, model]
        x = _sweep(reps, self.chains, self.k, generator)
        R = x.shape[0]
        lo = torch.arange(self._parity, R - 1, 2)
        self._parity ^= 1
        if lo.numel():
            own, swapped = _pair_energies(reps, x, lo)
            x, accept, prob = exchange(x, lo.to(x.device), own, swapped, generator)
            self._rate_sum[lo] += accept.double().mean(1).cpu()
            self._rate_n[lo] += 1
            self.chains = x
            if int(lo[-1]) == R - 2 and float(prob[-1].mean()) < self.swap_target:
                self._add_snapshot(model)
        else:
            self.chains = x
        return self.chains[-1], None

    def _add_snapshot(self, model: nn.Module) -> None:
        """Snapshot the live model (its chains copied), first thinning at the cap (where
        there is no interior snapshot to drop, none is taken)."""
        if len(self.models) + 2 > self.max_replicas and not self._drop_one():
            return
        self.models.append(snapshot(model))
        x = self.chains
        self.chains = torch.cat([x, x[-1:].clone()])
        self._rate_sum = torch.cat([self._rate_sum, torch.zeros(1, dtype=torch.float64)])
        self._rate_n = torch.cat([self._rate_n, torch.zeros(1, dtype=torch.float64)])

    def _drop_one(self) -> bool:
        """Remove the interior snapshot i (1 <= i < last) with the best acceptance between
        its neighbours i - 1 and i + 1 (the live model counts as the last replica); False
        when there is none."""
        reps, x = self.models, self.chains
        if len(reps) < 3:
            return False
        scores = [acceptance(reps[i - 1], reps[i + 1], x[i - 1], x[i + 1])
                  for i in range(1, len(reps) - 1)]
        i = 1 + max(range(len(scores)), key=scores.__getitem__)
        del self.models[i]
        keep = [r for r in range(x.shape[0]) if r != i]
        self.chains = x[keep]
        # the pairs (i - 1, i) and (i, i + 1) become one: its counts start afresh
        gaps = [g for g in range(self._rate_sum.numel()) if g != i]
        self._rate_sum, self._rate_n = self._rate_sum[gaps], self._rate_n[gaps]
        self._rate_sum[i - 1] = 0.0
        self._rate_n[i - 1] = 0.0
        return True

    def model_samples(self) -> Tensor | None:
        return None if self.chains is None else self.chains[-1]

    def swap_rates(self) -> list[float]:
        """Acceptance rate of each neighbouring pair since the last ``stats()``."""
        return (self._rate_sum / self._rate_n.clamp_min(1)).tolist()

    def stats(self) -> dict[str, float]:
        if self.chains is None:
            return {}
        seen = self._rate_n > 0
        rates = (self._rate_sum[seen] / self._rate_n[seen]).tolist()
        out = {"n_replicas": float(self.chains.shape[0])}
        if rates:
            out.update(swap_rate_min=min(rates), swap_rate_mean=sum(rates) / len(rates))
        self._rate_sum.zero_()
        self._rate_n.zero_()
        return out

    def state_dict(self) -> dict[str, Tensor]:
        if self.chains is None:
            return {}
        out = {"chains": self.chains, "parity": torch.tensor(self._parity),
               "rate_sum": self._rate_sum, "rate_n": self._rate_n,
               "n_models": torch.tensor(len(self.models))}
        for i, m in enumerate(self.models):
            out.update({f"model{i}.{k}": v for k, v in float_state(m).items()})
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if "chains" not in state:
            return
        self.chains = state["chains"].clone()
        self._parity = int(state["parity"])
        self._rate_sum = state["rate_sum"].clone().cpu()
        self._rate_n = state["rate_n"].clone().cpu()
        n = int(state["n_models"])
        self._states = [{k[len(f"model{i}."):]: v for k, v in state.items()
                         if k.startswith(f"model{i}.")} for i in range(n)]
        self.models = []


# --------------------------------------------------------------------------- the path
class TrajectoryPath:
    """A continuous path of models: a coupling-free base, then the given model states.

    ``states``: the float state dicts of models along a training run, oldest first (the
    last one is the model to sample); point 0 of the path is :func:`base_state` of the
    first, point i the (i-1)-th state, and a fractional position t interpolates points
    floor(t) and ceil(t) linearly.  ``model_at(t, into)`` writes that model into a copy
    of ``template``.
    """

    def __init__(self, template: nn.Module, states: list[dict[str, Tensor]]) -> None:
        if not states:
            raise ConfigError("a trajectory path needs at least one saved model")
        self.template = template
        self.points = [base_state(set_state(snapshot(template), states[0])), *states]

    @property
    def length(self) -> float:
        """The last position (the final model)."""
        return float(len(self.points) - 1)

    def model_at(self, t: float, into: nn.Module | None = None) -> nn.Module:
        """The model at position ``t`` in [0, length] (a new copy unless ``into``)."""
        t = min(max(float(t), 0.0), self.length)
        i = min(int(math.floor(t)), len(self.points) - 2)
        out = snapshot(self.template) if into is None else into
        return interpolate(out, self.points[i], self.points[i + 1], t - i)

    def base(self) -> nn.Module:
        """The coupling-free model at position 0."""
        return self.model_at(0.0)


@torch.no_grad()
def trajectory_sample(path: TrajectoryPath, n: int, steps: int = 1000, k: int = 1,
                      swap_target: float = 0.25, max_replicas: int = 32,
                      start_replicas: int | None = None, adapt_every: int = 25,
                      init: Tensor | None = None,
                      generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
    """``n`` samples of the path's last model by replica exchange along the path.

    Replicas sit at positions of :class:`TrajectoryPath` (the coupling-free base at 0,
    the model at the end), ``start_replicas`` of them evenly spread at first (default:
    one per point of the path, at most ``max_replicas``); each of the
    ``steps`` updates runs ``k`` Gibbs sweeps of every replica and proposes swaps between
    neighbours.  During the first half of the updates, every ``adapt_every`` updates the
    positions are re-placed (and their number chosen, at most ``max_replicas``) so that
    every neighbouring pair's acceptance approaches ``swap_target``
    (:func:`~boltzkit.sampling.place_ladder`); the second half runs on the frozen ladder.
    Chains start at ``init`` (n, n_visible) or at exact samples of the base.

    Returns (samples (n, n_visible), {"n_replicas", "swap_rate_min", "swap_rate_mean",
    "positions"}) with the rates of the frozen half.
    """
    _check_ladder_options(swap_target, max_replicas)
    _check_k(k)
    if start_replicas is None:
        start_replicas = min(max_replicas, len(path.points))
    if start_replicas < 2:
        raise ConfigError(f"start_replicas must be >= 2, got {start_replicas}")
    pos = torch.linspace(0.0, path.length, start_replicas, dtype=torch.float64)
    models = [path.model_at(float(t)) for t in pos]
    x0 = base_sample(models[0], n, generator) if init is None else init.to(
        device=models[-1].device, dtype=models[-1].dtype)
    x = x0.unsqueeze(0).repeat(len(models), 1, 1)
    freeze = steps // 2
    prob_sum = torch.zeros(len(models) - 1, dtype=torch.float64)
    prob_n = torch.zeros_like(prob_sum)
    acc_sum = torch.zeros_like(prob_sum)
    parity = 0
    for step in range(1, steps + 1):
        x = _sweep(models, x, k, generator)
        lo = torch.arange(parity, len(models) - 1, 2)
        parity ^= 1
        if lo.numel():
            own, swapped = _pair_energies(models, x, lo)
            x, accept, prob = exchange(x, lo.to(x.device), own, swapped, generator)
            prob_sum[lo] += prob.double().mean(1).cpu()
            acc_sum[lo] += accept.double().mean(1).cpu()
            prob_n[lo] += 1
        if step <= freeze and step % adapt_every == 0 and bool((prob_n > 0).all()):
            new = place_ladder(pos, prob_sum / prob_n, swap_target, max_replicas)
            nearest = (new[:, None] - pos[None, :]).abs().argmin(1)
            x = x[nearest.to(x.device)].clone()
            spare = models
            models = [path.model_at(float(t), spare[j] if j < len(spare) else None)
                      for j, t in enumerate(new)]
            pos = new
        if step == freeze or (step <= freeze and step % adapt_every == 0):
            prob_sum = torch.zeros(len(models) - 1, dtype=torch.float64)
            prob_n = torch.zeros_like(prob_sum)
            acc_sum = torch.zeros_like(prob_sum)
    rates = (acc_sum / prob_n.clamp_min(1)).tolist()
    info = {"n_replicas": len(models), "swap_rate_min": min(rates),
            "swap_rate_mean": sum(rates) / len(rates),
            "positions": [round(float(t), 4) for t in pos]}
    return x[-1], info


# --------------------------------------------------------------------------- saved trajectories
def save_trajectory(path: str | Path, template: nn.Module, states: list[dict[str, Tensor]],
                    epochs: list[float]) -> Path:
    """Write model states of a run (state dicts, oldest first), each labelled by the
    epoch it was kept at (fractional within an epoch: ``epochs``)."""
    from .io import save_tensors, tensor_name

    tensors = {f"p{j}.{tensor_name(k)}": v for j, st in enumerate(states) for k, v in st.items()}
    if len(epochs) != len(states):
        raise ValueError("one epoch label per state")
    header = {"trajectory": True, "config": template.config(),
              "epochs": [float(e) for e in epochs], "points": len(states)}
    return save_tensors(path, tensors, header)


def load_trajectory(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, list[dict[str, Tensor]], list[float]]:
    """(a template model, the saved float states oldest first, their epochs) of a
    trajectory file; each state is checked as a model file is (names, shapes, finite)."""
    from .io import load_model_tensors, model_from_config, read_tensors

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no trajectory file {path}: train with --save-trajectory to write "
                          "one (or sample with --method gibbs or pt)")
    tensors, header = read_tensors(path)
    epochs = header.get("epochs")
    if not header.get("trajectory") or not isinstance(epochs, list) or not epochs:
        raise ModelFileError(f"{path} is not a boltzkit trajectory file")
    # p{j}. names (one per kept state); files of one state per epoch name them e{epoch}.
    prefixes = ([f"p{j}." for j in range(len(epochs))] if "points" in header
                else [f"e{e}." for e in epochs])
    template = model_from_config(header["config"]).to(device)
    states = []
    for e, prefix in zip(epochs, prefixes, strict=True):
        part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        load_model_tensors(template, part, source=f"{path} (epoch {e:g})")
        states.append(float_state(template))
    return template, states, [float(e) for e in epochs]


def log_spaced_updates(total: int, n: int) -> list[int]:
    """About ``n`` update counts in 1..``total``, evenly spaced in log (distinct integers)."""
    if n <= 0 or total <= 0:
        return []
    ticks = torch.logspace(0.0, math.log10(total), n, dtype=torch.float64).round().long()
    return sorted(set(ticks.clamp(1, total).tolist()))


class TrajectoryRecorder:
    """Training callback: keep the model along the run; write the states at the last epoch.

    Kept: the model at the end of every epoch (the states callbacks see: the averaged
    parameters once averaging is on) and, within epochs, after ``updates`` update counts
    spaced evenly in log over the whole run (1, 2, 3, 5, ...: the early, fast part of
    training, where models change most per update, gets most of them; the live
    parameters).  They are written to ``path`` (MODEL.trajectory.safetensors) when the run
    reaches its last epoch, for ``boltzkit sample --method ptt``.  With a checkpoint
    directory each epoch's states are also kept there, so a resumed run still writes the
    whole trajectory.
    """

    def __init__(self, path: str | Path, updates: int = 64) -> None:
        from .metrics.trajectory_ais import CallbackState

        if not isinstance(updates, int) or isinstance(updates, bool) or updates < 0:
            raise ConfigError(f"trajectory updates must be an integer >= 0, got {updates!r}")
        self.path = Path(path)
        self.updates = updates
        self.states: list[dict[str, Tensor]] = []
        self.epochs: list[float] = []
        self._epoch_start = 0  # index in states of the current epoch's first one
        self._n_batches = 0
        self.store = CallbackState("trajectory", keep=None, every_epoch=True)

    def _catch_up(self, trainer, epoch: int) -> None:
        """A resumed run (``epoch`` epochs done, none kept here): read the states so far."""
        if self.epochs or epoch < 1:
            return
        for e in range(1, epoch + 1):
            tensors, meta = self.store.load(trainer, e)
            labels = meta.get("labels", [float(e)])
            for j, label in enumerate(labels):
                prefix = f"p{j}."
                part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                self.states.append(part or tensors)
                self.epochs.append(float(label))
        self._epoch_start = len(self.states)

    def _keep(self, trainer, label: float) -> None:
        self.states.append({k: v.detach().cpu().clone()
                            for k, v in trainer.model.state_dict().items()})
        self.epochs.append(label)

    def update_points(self, trainer, epoch: int, n_batches: int) -> list[int]:
        self._n_batches = n_batches
        lo, hi = epoch * n_batches, (epoch + 1) * n_batches
        wanted = log_spaced_updates(trainer.epochs * n_batches, self.updates)
        return [u - lo for u in wanted if lo < u < hi]

    def on_update(self, trainer, epoch: int, done: int) -> None:
        self._catch_up(trainer, epoch)
        self._keep(trainer, epoch + done / max(self._n_batches, 1))

    def __call__(self, trainer, record: dict) -> None:
        epoch = int(record["epoch"])
        self._catch_up(trainer, epoch - 1)
        self._keep(trainer, float(epoch))
        mine = list(range(self._epoch_start, len(self.states)))
        self._epoch_start = len(self.states)

        def tensors() -> tuple[dict[str, Tensor], dict]:
            out = {f"p{j}.{k}": v for j, i in enumerate(mine) for k, v in self.states[i].items()}
            return out, {"labels": [self.epochs[i] for i in mine]}

        self.store.save(trainer, epoch, tensors)
        if epoch == trainer.epochs and getattr(trainer, "rank", 0) == 0:
            save_trajectory(self.path, trainer.model, self.states, self.epochs)
