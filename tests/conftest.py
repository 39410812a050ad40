"""Shared fixtures for the boltzkit test suite.

Everything random here comes from explicitly seeded ``torch.Generator`` objects,
so results do not depend on ``torch.manual_seed`` or on test order.  Models are
tiny and deliberately use "prime-ish" distinct layer sizes (7 visible x 5
hidden, softmax layers of 9 = 3 x 3 and 6 = 2 x 3) so that a transposed weight
matrix or a swapped layer cannot go unnoticed.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch

from boltzkit import (
    RBM,
    BernoulliUnits,
    GaussianUnits,
    ReLUUnits,
    SigmoidUnits,
    SoftmaxUnits,
    Units,
)

# The models here are tiny: with several OpenMP threads on a busy 2-core machine
# every small GEMM waits for a descheduled worker thread (milliseconds per call).
# One thread makes the suite fast and its timing stable.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mnist_root() -> Path:
    """A folder holding ``mnist/`` (or the MNIST files), else the test is skipped."""
    for cand in (os.environ.get("BOLTZKIT_DATA"), REPO.parent / "shared" / "data"):
        if not cand:
            continue
        for folder in (Path(cand), Path(cand) / "mnist"):
            if (folder / "t10k-images-idx3-ubyte.gz").is_file():
                return folder
    pytest.skip("MNIST files not available (set BOLTZKIT_DATA)")


# --- layer and model specifications ---------------------------------------------------
def _units(kind: str) -> Units:
    if kind == "bernoulli":
        return BernoulliUnits(5)
    if kind == "gaussian":
        return GaussianUnits(5, std=0.6)
    if kind == "gaussian_learned":
        return GaussianUnits(5, std=1.5, learn_variance=True)
    if kind == "relu":
        return ReLUUnits(5)
    if kind == "sigmoid":
        return SigmoidUnits(5)
    if kind == "sigmoid_mean_field":
        return SigmoidUnits(5, mean_field=True)
    if kind == "softmax":
        return SoftmaxUnits(6, group_size=3)
    raise KeyError(kind)


UNIT_KINDS = ["bernoulli", "gaussian", "gaussian_learned", "relu", "sigmoid", "softmax"]

#: model kind -> (visible factory, hidden factory)
MODEL_SPECS = {
    "bernoulli-bernoulli": (lambda: BernoulliUnits(7), lambda: BernoulliUnits(5)),
    "bernoulli-softmax": (lambda: BernoulliUnits(7), lambda: SoftmaxUnits(6, group_size=3)),
    "softmax-bernoulli": (lambda: SoftmaxUnits(9, group_size=3), lambda: BernoulliUnits(5)),
    "gaussian-bernoulli": (lambda: GaussianUnits(7, std=0.7), lambda: BernoulliUnits(5)),
    "gaussian_learned-bernoulli": (lambda: GaussianUnits(7, learn_variance=True),
                                   lambda: BernoulliUnits(5)),
    "bernoulli-relu": (lambda: BernoulliUnits(7), lambda: ReLUUnits(5)),
    "sigmoid-bernoulli": (lambda: SigmoidUnits(7), lambda: BernoulliUnits(5)),
    "bernoulli-gaussian": (lambda: BernoulliUnits(7), lambda: GaussianUnits(5, std=1.3)),
}
MODEL_KINDS = list(MODEL_SPECS)


def _randomize(module: torch.nn.Module, gen: torch.Generator, scale: float) -> None:
    """Give every parameter (and variance buffer) a random, non-trivial value."""
    with torch.no_grad():
        for name, t in itertools.chain(module.named_parameters(), module.named_buffers()):
            noise = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
            if name.endswith("log_var"):
                t.add_(0.3 * noise)  # sigma^2 within a factor ~e^0.6 of its start
            else:
                t.copy_(scale * noise)


@pytest.fixture
def make_gen():
    """Factory: ``make_gen(seed)`` -> a fresh seeded CPU ``torch.Generator``."""

    def make(seed: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    return make


@pytest.fixture
def gen(make_gen) -> torch.Generator:
    return make_gen(1234)


@pytest.fixture
def make_layer():
    """Factory: ``make_layer(kind, seed=0, dtype=float64, scale=0.5)`` -> units with random bias."""

    def make(kind: str, seed: int = 0, dtype: torch.dtype = torch.float64,
             scale: float = 0.5) -> Units:
        units = _units(kind).to(dtype)
        _randomize(units, torch.Generator().manual_seed(seed), scale)
        return units

    return make


@pytest.fixture
def tiny_rbm():
    """Factory: ``tiny_rbm(kind, seed=0, dtype=float64, scale=0.5)`` -> a random tiny RBM.

    ``kind`` is one of ``MODEL_KINDS`` ("visible-hidden").  Weights and biases
    are N(0, scale^2); log-variances are perturbed around their start.
    """

    def make(kind: str, seed: int = 0, dtype: torch.dtype = torch.float64,
             scale: float = 0.5) -> RBM:
        vis, hid = MODEL_SPECS[kind]
        gen = torch.Generator().manual_seed(seed)
        rbm = RBM(vis(), hid(), generator=gen).to(dtype)
        _randomize(rbm, gen, scale)
        return rbm

    return make


def _random_states(units: Units, n: int, gen: torch.Generator) -> torch.Tensor:
    dtype = units.bias.dtype
    shape = (n, units.n)
    if isinstance(units, BernoulliUnits):
        return (torch.rand(shape, generator=gen, dtype=dtype) < 0.5).to(dtype)
    if isinstance(units, SoftmaxUnits):
        idx = torch.randint(units.group_size, (n, units.groups), generator=gen)
        return torch.nn.functional.one_hot(idx, units.group_size).to(dtype).reshape(shape)
    if isinstance(units, GaussianUnits):
        return torch.randn(shape, generator=gen, dtype=dtype)
    if isinstance(units, ReLUUnits):
        return torch.randn(shape, generator=gen, dtype=dtype).abs()
    if isinstance(units, SigmoidUnits):
        return torch.rand(shape, generator=gen, dtype=dtype)
    raise TypeError(type(units))


@pytest.fixture
def random_states():
    """Factory: ``random_states(units, n, seed=0)`` -> ``n`` valid states of the layer."""

    def make(units: Units, n: int, seed: int = 0) -> torch.Tensor:
        return _random_states(units, n, torch.Generator().manual_seed(seed))

    return make


def _all_states(units: Units) -> torch.Tensor:
    """Every joint state of a discrete layer, enumerated independently of boltzkit."""
    dtype = units.bias.dtype
    if isinstance(units, BernoulliUnits):
        rows = list(itertools.product((0.0, 1.0), repeat=units.n))
        return torch.tensor(rows, dtype=dtype)
    if isinstance(units, SoftmaxUnits):
        eye = torch.eye(units.group_size, dtype=dtype)
        rows = [torch.cat([eye[i] for i in combo])
                for combo in itertools.product(range(units.group_size), repeat=units.groups)]
        return torch.stack(rows)
    raise TypeError(f"{type(units).__name__} is not discrete")


@pytest.fixture
def all_states():
    """Factory: ``all_states(units)`` -> tensor (n_states, n) of every state of a discrete layer."""
    return _all_states


@pytest.fixture
def exact_log_likelihood(all_states):
    """Factory: ``exact_log_likelihood(rbm, data)`` -> mean log p(v) by enumerating v."""

    def ll(rbm: RBM, data: torch.Tensor) -> float:
        with torch.no_grad():
            states = all_states(rbm.visible).to(rbm.dtype)
            log_z = torch.logsumexp(-rbm.free_energy(states), 0)
            return float((-rbm.free_energy(data.to(rbm.dtype)) - log_z).mean())

    return ll


@pytest.fixture
def bimodal_rbm():
    """A factory of a 10x2 float64 RBM with two separated modes of unequal mass, near
    all-zeros and all-ones: one hidden unit switches on only when (nearly) every visible is
    on, so ``w`` sets the energy barrier between the modes (at 4 about 10 nats, which
    single-temperature Gibbs does not cross; at 6, 400 sweeps from all-zeros cross it 2%
    of the time)."""
    from boltzkit.rbm import RBM
    from boltzkit.units import BernoulliUnits

    def make(w: float = 4.0) -> RBM:
        n = 10
        rbm = RBM(BernoulliUnits(n), BernoulliUnits(2)).double()
        with torch.no_grad():
            rbm.connection.weights.zero_()
            rbm.connection.weights[:, 0] = w
            rbm.connection.weights[:5, 1] = 0.5
            rbm.visible.bias.fill_(-w / 2)
            rbm.hidden.bias.copy_(torch.tensor([-n * w / 2 - 0.5, -1.0]))
        return rbm

    return make
