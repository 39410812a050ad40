"""BEAM: Boltzmann Encoded Adversarial Machines (Fisher, Smith & Walsh 2018).

A BEAM is an RBM trained on the cost::

    C = -gamma * L - (1 - gamma) * A,      A = E_model[T]

where L is the mean log-likelihood and T a *critic* that scores how much a
model particle looks like data (high = data-like).  The critic works on the
RBM's own hidden-layer activations, and is held fixed while differentiating,
so (paper Eq. 13, supplement Eq. 22)::

    dA/dtheta = Cov_model[T, -dE/dtheta]

which is estimated on the *same persistent fantasy particles* the likelihood
gradient uses: a BEAM update costs about what a PCD update costs (plus a
k-nearest-neighbour search on a mini-batch).

Which energy and which hidden activations
-----------------------------------------
``estimator="free_energy"`` (default): the critic acts on the hidden *means*
``mu(v) = E[h | v]`` of each fantasy particle, which makes T a function of v
alone, and the covariance is taken with ``-dF(v)/dtheta`` (the free energy,
hidden layer summed out).  For any T(v) held fixed this is exactly
``d E_{p(v)}[T(v)] / dtheta``, and it is the Rao-Blackwellised (lower
variance) form of the paper's estimator.  ``estimator="energy"`` follows the
paper literally: T acts on *sampled* hidden states h ~ p(h | v) and the
covariance is taken with ``-dE(v, h)/dtheta``; it is exact for a T(h).

Both are computed by autograd on a surrogate with T held fixed::

    S = mean_i (T_i - mean T) * G_i,   G = F(v_i) or E(v_i, h_i)

``grad S`` is ``-Cov[T, -dG/dtheta] = -dA/dtheta``: a *descent* direction
for C, as ``torch.optim`` expects.  The final gradient is
``gamma * (likelihood gradient) + (1 - gamma) * grad S``.

Critic sign convention
----------------------
Eq. 15's nearest-neighbour critic is written here as ``T = 2 j/k - 1`` with
``j`` the number of the k nearest neighbours of a fantasy particle that are
*data* points (equivalently ``1 - 2 j'/k`` with ``j'`` the number that are
fantasy particles): +1 when a particle sits among data, -1 when it sits in a
clump of fantasy particles far from data.  The model maximises ``E_model[T]``,
so it moves mass from over-populated regions (including regions with no data)
towards under-populated modes.  The reference set is the current data batch
plus the *previous* update's fantasy particles (features recomputed under the
current parameters); a chain's own previous state is left out (it would
almost always be its nearest neighbour), as is the particle itself.

Which particles
---------------
The covariance is ``d E_model[T] / d theta`` only if the particles are samples
of the model at beta = 1.  Two ways this fails in practice (both seen on the
mixtures of ``examples/beam_mixtures.py``): temperature-driven chains at
beta != 1 sit off the data when the visibles are Gaussian (hand the gradient
beta = 1 read-out sweeps, ``DrivenPCD(readout_steps=1)``); and persistent
chains that never cross between far-apart modes keep an even spread over the
modes while the model's own mass sits almost all on one of them, so the
critic (like the likelihood's negative phase) sees a balanced ensemble and
has nothing to correct.  Parallel tempering's beta = 1 replicas
(:class:`~boltzkit.sampling.ParallelTempering`) follow the model's mode
weights much better there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import ConfigError
from .objectives import LikelihoodGradient, Objective
from .rbm import RBM

#: A critic maps (fantasy features (M, d), data features (B, d), previous fantasy features
#: (P, d) or None) to one value per fantasy particle (M,), high = data-like.
Critic = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def _neighbours(fantasy: Tensor, data: Tensor, previous: Tensor | None, k: int):
    """Distances (M, k) and is-data flags (M, k) of each fantasy point's k nearest references."""
    if previous is None:
        # No cache yet: the other current fantasy particles stand in (leave-one-out).
        previous = fantasy
    # Row i of ``previous`` is chain i's own previous state (when the sizes match): a
    # persistent chain moves little per update, so its own past would be its nearest
    # neighbour and bias T towards -1 for slowly mixing chains.  It is left out.
    self_mask = previous.shape[0] == fantasy.shape[0]
    ref = torch.cat([data, previous])
    is_data = torch.cat([torch.ones(data.shape[0], dtype=torch.bool, device=data.device),
                         torch.zeros(previous.shape[0], dtype=torch.bool, device=data.device)])
    d = torch.cdist(fantasy.float(), ref.float())
    if self_mask:
        idx = torch.arange(fantasy.shape[0], device=d.device)
        d[idx, data.shape[0] + idx] = math.inf
    kk = min(k, ref.shape[0] - (1 if self_mask else 0))
    dist, nn = torch.topk(d, kk, dim=1, largest=False)
    return dist, is_data[nn]


class KNNCritic:
    """Nearest-neighbour critic (paper Eq. 15): ``T = 2 j/k - 1``, j = data neighbours."""

    name = "knn"

    def __init__(self, k: int = 5) -> None:
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"the critic's k must be an integer >= 1, got {k!r}")
        self.k = k

    def __call__(self, fantasy: Tensor, data: Tensor, previous: Tensor | None) -> Tensor:
        _, is_data = _neighbours(fantasy, data, previous, self.k)
        return 2.0 * is_data.float().mean(1) - 1.0


class DistanceWeightedKNNCritic:
    """Distance-weighted nearest-neighbour critic (paper Eq. 16).

    ``T = sum_i w_i s_i / sum_i w_i`` over the k nearest neighbours, with
    ``s_i = +1`` for data and -1 for fantasy particles and ``w_i = 1 / (d_i +
    epsilon)``: close neighbours count more; still in [-1, 1].
    """

    name = "dwknn"

    def __init__(self, k: int = 5, epsilon: float = 1e-2) -> None:
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"the critic's k must be an integer >= 1, got {k!r}")
        if not epsilon > 0:
            raise ConfigError(f"epsilon must be > 0, got {epsilon!r}")
        self.k = k
        self.epsilon = float(epsilon)

    def __call__(self, fantasy: Tensor, data: Tensor, previous: Tensor | None) -> Tensor:
        dist, is_data = _neighbours(fantasy, data, previous, self.k)
        w = 1.0 / (dist + self.epsilon)
        s = is_data.float() * 2.0 - 1.0
        return (w * s).sum(1) / w.sum(1)


CRITICS = ("knn", "dwknn")


def make_critic(name: str, k: int = 5, epsilon: float = 1e-2) -> Critic:
    """Build a critic by name: "knn" (Eq. 15) or "dwknn" (distance-weighted, Eq. 16)."""
    if name == "knn":
        return KNNCritic(k)
    if name == "dwknn":
        return DistanceWeightedKNNCritic(k, epsilon)
    raise ConfigError(f"unknown critic {name!r}: choose one of {list(CRITICS)}")


def adversarial_surrogate(rbm: RBM, v: Tensor, t: Tensor, h: Tensor | None = None,
                          weights: Tensor | None = None) -> Tensor:
    """Scalar S whose gradient is ``-Cov[T, -dG/dtheta]`` (G = F(v), or E(v, h) when h is given).

    ``t`` (one critic value per particle) is held fixed.  ``weights`` (summing
    to one) replace the uniform average, e.g. exact model probabilities of
    enumerated states in tests.
    """
    t = t.detach().to(dtype=rbm.dtype).reshape(-1)
    g = rbm.free_energy(v.detach()) if h is None else rbm.energy(v.detach(), h.detach())
    if weights is None:
        return ((t - t.mean()) * g).mean()
    w = weights.detach().to(dtype=g.dtype).reshape(-1)
    return (w * (t - (w * t).sum()) * g).sum()


class AdversarialGradient(Objective):
    """The BEAM gradient: ``gamma`` x likelihood gradient + (1 - gamma) x adversarial gradient.

    ``critic``: a name ("knn", "dwknn") or any :data:`Critic` callable.
    ``features``: "hidden" (hidden means, the paper's choice) or "visible".
    ``gamma_schedule``: None (constant ``gamma``), a sequence of
    ``(start_epoch, gamma)`` pairs (e.g. ``[(0, 1.0), (20, 0.1)]``: pure
    likelihood for 20 epochs, then gamma = 0.1), or a callable epoch -> gamma.
    The epoch is counted by the objective itself (samples seen // training
    set size), so it is saved with the objective's state and resumes exactly.
    ``likelihood`` is the ML estimator (default :class:`LikelihoodGradient`),
    whose options (sparsity, centering) apply to the likelihood part.
    """

    def __init__(self, critic: str | Critic = "knn", gamma: float = 0.1,
                 gamma_schedule: Sequence[tuple[int, float]] | Callable[[int], float] | None
                 = None, features: str = "hidden", estimator: str = "free_energy",
                 k: int = 5, epsilon: float = 1e-2,
                 likelihood: LikelihoodGradient | None = None) -> None:
        self.critic = make_critic(critic, k, epsilon) if isinstance(critic, str) else critic
        if not callable(self.critic):
            raise ConfigError(f"critic must be a name or a callable, got {critic!r}")
        _check_gamma(gamma)
        if features not in ("hidden", "visible"):
            raise ConfigError(f"critic features must be 'hidden' or 'visible', got {features!r}")
        if estimator not in ("free_energy", "energy"):
            raise ConfigError(f"estimator must be 'free_energy' or 'energy', got {estimator!r}")
        if gamma_schedule is not None and not callable(gamma_schedule):
            pairs = sorted((int(e), float(g)) for e, g in gamma_schedule)
            if not pairs:
                raise ConfigError("gamma_schedule is empty")
            for _, g in pairs:
                _check_gamma(g)
            gamma_schedule = pairs
        self.gamma = float(gamma)
        self.gamma_schedule = gamma_schedule
        self.features = features
        self.estimator = estimator
        self.likelihood = likelihood or LikelihoodGradient()
        self.previous: Tensor | None = None  # last update's fantasy particles (visible states)
        self.samples_seen = 0
        self.n_data = 0

    # -- schedule ----------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.samples_seen // self.n_data if self.n_data else 0

    def gamma_at(self, epoch: int) -> float:
        s = self.gamma_schedule
        if s is None:
            return self.gamma
        if callable(s):
            g = float(s(epoch))
            _check_gamma(g)
            return g
        g = self.gamma if epoch < s[0][0] else s[0][1]
        for start, value in s:
            if epoch >= start:
                g = value
        return g

    # -- interface shared with LikelihoodGradient ----------------------------
    def setup(self, rbm: RBM, data: Tensor, init: bool = True) -> None:
        self.n_data = int(data.shape[0])
        self.likelihood.setup(rbm, data, init)

    def state_dict(self) -> dict[str, Tensor]:
        out = {f"ml.{k}": v for k, v in self.likelihood.state_dict().items()}
        out["samples_seen"] = torch.tensor(self.samples_seen, dtype=torch.int64)
        out["n_data"] = torch.tensor(self.n_data, dtype=torch.int64)
        if self.previous is not None:
            out["previous"] = self.previous
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.likelihood.load_state_dict({k[3:]: v for k, v in state.items()
                                         if k.startswith("ml.")})
        self.samples_seen = int(state.get("samples_seen", torch.tensor(0)))
        self.n_data = int(state.get("n_data", torch.tensor(0)))
        prev = state.get("previous")
        self.previous = None if prev is None else prev.clone()

    def _features(self, rbm: RBM, v: Tensor, field: Tensor | None = None) -> Tensor:
        if self.features == "visible":
            return v
        return rbm.hidden.mean(rbm.hidden_field(v) if field is None else field)

    def compute(self, rbm: RBM, v_data: Tensor, v_model: Tensor,
                field_data: Tensor | None = None,
                field_model: Tensor | None = None) -> dict[str, Tensor]:
        gamma = self.gamma_at(self.epoch)
        self.samples_seen += int(v_data.shape[0])
        diag = self.likelihood.compute(rbm, v_data, v_model, field_data, field_model)
        diag["gamma"] = torch.tensor(gamma)
        if gamma >= 1.0:
            self.previous = v_model.detach().clone()
            return diag
        params = [p for p in rbm.parameters() if p.requires_grad]
        with torch.no_grad():
            f_model = self._features(rbm, v_model, field_model)
            f_data = self._features(rbm, v_data, field_data)
            f_prev = None if self.previous is None else self._features(rbm, self.previous)
            t = self.critic(f_model, f_data, f_prev).to(rbm.dtype)
            h = None
            if self.estimator == "energy":
                fm = rbm.hidden_field(v_model) if field_model is None else field_model
                h = rbm.hidden.sample(fm)
        with torch.enable_grad():
            s = adversarial_surrogate(rbm, v_model, t, h)
            grads = torch.autograd.grad(s, params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad.mul_(gamma)
                if g is not None:
                    p.grad.add_(g, alpha=1.0 - gamma)
        self.previous = v_model.detach().clone()
        diag["critic_mean"] = t.mean().detach()
        return diag


def _check_gamma(g: float) -> None:
    if not 0.0 <= g <= 1.0:
        raise ConfigError(f"gamma must be in [0, 1], got {g!r}")


class DivergenceMonitor:
    """Callback: forward and reverse kNN KL between held-out data and model samples.

    Every ``every`` epochs, draws ``n_samples`` samples (``steps`` Gibbs sweeps
    from random states, or the ``sampler`` function ``(rbm, n, generator) ->
    samples`` when given) with its own generator, seeded from ``seed`` and the
    epoch (so a resumed run gets the same numbers), and adds
    ``knn_forward_kl`` = KL(data || model) and ``knn_reverse_kl`` to the epoch
    record.
    """

    def __init__(self, val_data: Tensor, every: int = 1, n_samples: int | None = None,
                 steps: int = 100, k: int = 1, seed: int = 0,
                 sampler: Callable[[RBM, int, torch.Generator], Tensor] | None = None) -> None:
        if not isinstance(every, int) or every < 1:
            raise ConfigError(f"every must be an integer >= 1, got {every!r}")
        self.val = torch.as_tensor(val_data)
        self.every = every
        self.n_samples = n_samples or min(int(self.val.shape[0]), 2000)
        self.steps = steps
        self.k = k
        self.seed = seed
        self.sampler = sampler

    @torch.no_grad()
    def __call__(self, trainer, record: dict) -> None:
        from .metrics.divergence import forward_kl, reverse_kl

        epoch = int(record.get("epoch", trainer.epoch))
        if epoch % self.every:
            return
        model = trainer.model
        gen = torch.Generator(device=model.device).manual_seed(self.seed * 100003 + epoch)
        if self.sampler is not None:
            x = self.sampler(model, self.n_samples, gen)
        else:
            x = model.sample(self.n_samples, steps=self.steps, generator=gen, return_mean=False)
        x = x.detach().cpu().numpy().astype(np.float64)
        val = self.val.detach().cpu().numpy().astype(np.float64)
        record["knn_forward_kl"] = forward_kl(val, x, self.k)
        record["knn_reverse_kl"] = reverse_kl(val, x, self.k)
