"""Unit types: what a layer of a Boltzmann machine is made of.

Every units object owns its parameters and defines one exponential-family layer::

    E_units(x; beta) = E0(x) - beta * bias . c(x)

where ``E0`` is a parameter-free (or variance-only) base term, ``c(x)`` is the
*coupling statistic* that the connection multiplies (``x`` for most units,
``x / sigma^2`` for Gaussian units), and ``beta`` is the inverse temperature.
A field ``f`` from the other layer adds ``beta * f . c(x)``, so the conditional
of a layer given its field is::

    p(x | f) ∝ exp(-E0(x) + beta * (bias + f) . c(x))

Temperature scales the linear terms (biases and couplings) but not ``E0``.  For
Bernoulli and softmax units (E0 = 0) that is ordinary tempering; for Gaussian
units it keeps the ``beta = 0`` end a proper distribution (independent units
with their own variance), which is what annealed importance sampling needs.
``beta`` is a float or a tensor broadcastable to ``(batch, 1)`` (one temperature
per chain).

Samplers that run chains hot (parallel tempering, temperature-driven sampling,
trajectory tempering) need the other convention, the whole energy tempered
(``beta * E``, so the hot chains of p(x)^beta spread out): under linear tempering
a Gaussian unit's mean beta (b + f) shrinks to the origin as beta falls while its
noise stays sigma, so hot chains collapse onto the origin instead of crossing
between modes.  :func:`whole_energy` switches a model's units to that convention
for the duration of a ``with`` block: Gaussian units then have mean b + f and
variance sigma^2 / beta, ReLU units a normal truncated at zero with variance 1 / beta;
units with E0 = 0 (Bernoulli, softmax, sigmoid, pooled) are the same either way.
At beta = 1 the two conventions agree, so nothing changes for the gradient or for
samples taken at beta = 1.

Each units type implements four things: ``energy``, ``mean`` (E[x | f]),
``sample`` and ``log_partition`` (log of the integral/sum of the layer's
unnormalised conditional, which is what marginalising it contributes to a
free energy).  Discrete types can also enumerate their states (exact log Z).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from . import precision
from .errors import ConfigError, DataError

Beta = float | Tensor

_LOG_2PI = math.log(2.0 * math.pi)


def _per_sample(beta: Beta, values: Tensor) -> Tensor:
    """Multiply per-sample values (batch,) by beta given as float or (batch, 1)."""
    if isinstance(beta, Tensor):
        return values * beta.reshape(-1)
    return values if beta == 1.0 else values * beta


def _is_one(beta: Beta) -> bool:
    return not isinstance(beta, Tensor) and beta == 1.0


def _positive_beta(beta: Beta, kind: str) -> Tensor:
    """beta as a tensor (a column per chain, or a 0-d number), refused unless all > 0.

    Under whole-energy tempering a continuous unit's variance is sigma^2 / beta: beta = 0
    is an improper (flat) distribution.
    """
    b = beta if isinstance(beta, Tensor) else torch.tensor(float(beta))
    if not bool((b > 0).all()):
        raise ConfigError(f"whole-energy tempering of {kind} units needs every inverse "
                          "temperature > 0 (at beta = 0 their variance is infinite): raise "
                          "the lowest beta (e.g. --beta-min)")
    return b


def _units_of(model: nn.Module) -> list[Units]:
    return [m for m in model.modules() if isinstance(m, Units)]


@contextlib.contextmanager
def whole_energy(model: nn.Module):
    """Temper the whole energy of every units layer of ``model`` inside the block.

    ``with whole_energy(rbm): rbm.gibbs(v, 1, beta=b)`` samples p(v, h)^beta (up to
    normalisation) instead of the linear-terms tempering of the default convention; free
    energies at beta follow too (F_beta = -log sum_h exp(-beta E)).  The previous setting
    is restored on exit (nested blocks and exceptions included).  Samplers that temper
    (:class:`~boltzkit.sampling.ParallelTempering`, :class:`~boltzkit.driven.DrivenPCD`,
    :class:`~boltzkit.sampling.TrajectoryTempering`) use it; AIS does not.
    """
    units = _units_of(model)
    before = [u.__dict__.get("whole_energy") for u in units]
    try:
        for u in units:
            u.whole_energy = True
        yield model
    finally:
        for u, b in zip(units, before, strict=True):
            if b is None:
                u.__dict__.pop("whole_energy", None)
            else:
                u.whole_energy = b


@contextlib.contextmanager
def _linear(units: Units):
    """The default (linear-terms) convention for ``units`` inside the block."""
    if not units.whole_energy:
        yield
        return
    units.whole_energy = False
    try:
        yield
    finally:
        units.whole_energy = True


#: Below this many values ``uniform_`` just calls ``Tensor.uniform_``: its fixed cost is
#: lower (about 10 us less per call), and it wins below roughly 5,000 values.
_BULK_UNIFORM = 16384
_MASK24 = (1 << 24) - 1
_MASK53 = (1 << 53) - 1


def bulk_uniform(out: Tensor) -> bool:
    """Whether :func:`uniform_` fills ``out`` from 64-bit words (else ``Tensor.uniform_``)."""
    return (out.device.type == "cpu" and out.numel() >= _BULK_UNIFORM
            and out.dtype in (torch.float32, torch.float64))


def uniform_filler(out: Tensor) -> Callable[..., Tensor]:
    """``fill(generator=g)`` drawing into ``out`` exactly as ``uniform_(out, g)`` does.

    For a buffer filled every step: the branch is chosen once, not per call.
    """
    return functools.partial(uniform_, out) if bulk_uniform(out) else out.uniform_


def uniform_(out: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``out`` in place with U[0, 1) draws from ``generator``; returns ``out``.

    On the CPU, ``Tensor.uniform_`` runs a serial per-element loop, one loop step
    per value.  Here the generator fills 64-bit words instead (``random_`` over the
    full int64 range: the same Mersenne Twister output, half the loop steps for
    float32) and NumPy turns the bits into floats: two float32 values per word (24
    random bits each, the resolution of ``uniform_``) or one float64 value (53
    bits).  NumPy's loops are single-threaded, so this adds no OpenMP parallel
    region (which costs a scheduler time slice when the cores are busy).  The
    state stays in the torch generator: seeds and checkpoints work as before.
    Under mixed precision (:mod:`boltzkit.precision`) a float32 draw takes 16 random
    bits from an integer hash keyed by one word of the torch generator
    (:func:`bits16`): cheap, and computable inside the compiled step's loops.  Other
    devices and dtypes, and small tensors, use ``Tensor.uniform_``.
    """
    n = out.numel()
    if not bulk_uniform(out):
        return out.uniform_(generator=generator)
    flat = out.view(-1) if out.is_contiguous() else torch.empty(n, dtype=out.dtype)
    f = flat.detach().numpy()
    # Integers below 2**24 (2**53) are exact in float32 (float64), and so is the
    # scaling by a power of two.
    if out.dtype == torch.float32 and precision.gemm_dtype() is not None:
        # Mixed precision: 16 random bits per draw (the probabilities they meet come from
        # bfloat16 products, 8 significant bits; P(u < p) is p rounded up to a multiple
        # of 2**-16), from a hash keyed by one word of this generator (bits16).
        bits = bits16(n, generator).numpy().view(np.uint16)
        np.copyto(f, bits, casting="unsafe")
        np.multiply(f, np.float32(2.0**-16), out=f)
    elif out.dtype == torch.float32:
        words = torch.empty((n + 1) // 2, dtype=torch.int64)
        words.random_(-(2**63), None, generator=generator)
        bits = words.numpy().view(np.int32)[:n]
        np.bitwise_and(bits, _MASK24, out=bits)
        np.copyto(f, bits, casting="unsafe")
        np.multiply(f, np.float32(2.0**-24), out=f)
    else:
        words = torch.empty(n, dtype=torch.int64).random_(-(2**63), None, generator=generator)
        bits = words.numpy()
        np.bitwise_and(bits, _MASK53, out=bits)
        np.copyto(f, bits, casting="unsafe")
        np.multiply(f, 2.0**-53, out=f)
    if flat.data_ptr() != out.data_ptr():
        out.copy_(flat.view(out.shape))
    return out


def draw_key(generator: torch.Generator | None) -> int:
    """One 64-bit word of ``generator``: the key of one call's mixed-precision draws."""
    return int(torch.empty(1, dtype=torch.int64).random_(-(2**63), None, generator=generator))


def _triple32(x: np.ndarray) -> np.ndarray:
    """C. Wellons's triple32 integer hash, in place on uint32 ``x`` (native.cpp's)."""
    for shift, mul in ((17, 0xED5AD4BB), (11, 0xAC4C1B51), (15, 0x31848BAB)):
        x ^= x >> np.uint32(shift)
        x *= np.uint32(mul)
    x ^= x >> np.uint32(14)
    return x


def hashed_bits16(n: int, key: int) -> Tensor:
    """The 16 random bits of the ``n`` mixed-precision draws keyed by ``key`` (an int16
    tensor, read as unsigned): draw i is the top half of triple32((i + lo) ^ triple32(hi))
    for the key's 32-bit halves, computed by the compiled kernels where they build
    (:mod:`boltzkit.kernels.native`; 15 us for 50,000 draws) and by NumPy otherwise
    (140 us), the same bits either way."""
    if n > 2**32:
        raise ValueError("at most 2**32 draws per key")
    from .kernels import native

    nat = native.load() if n >= _BULK_UNIFORM else native.loaded()
    if nat is not None:
        out = torch.empty(n, dtype=torch.int16)
        nat.hashed_bits16(out, key)
        return out
    k = int(key) & 0xFFFFFFFFFFFFFFFF
    hi = _triple32(np.array([k >> 32], dtype=np.uint32))[0]
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint32)
        x += np.uint32(k & 0xFFFFFFFF)
        x ^= hi
        _triple32(x)
    return torch.from_numpy((x >> np.uint32(16)).astype(np.uint16).view(np.int16))


def bits16(n: int, generator: torch.Generator | None) -> Tensor:
    """The 16 random bits of ``n`` mixed-precision draws from ``generator`` (one word of
    it keys them, :func:`hashed_bits16`): ``uniform_`` under mixed precision makes them its
    draws times 2**-16, and the compiled step draws the same ones inside its loops."""
    return hashed_bits16(n, draw_key(generator))


def _uniform(shape: torch.Size | tuple[int, ...], like: Tensor, generator: torch.Generator | None):
    return uniform_(torch.empty(shape, dtype=like.dtype, device=like.device), generator)


class Units(nn.Module):
    """Base class: a layer of ``n`` units with a bias parameter."""

    kind: str = "units"
    discrete: bool = False
    #: Tempering convention: False scales only the linear terms (the default, AIS's);
    #: True the whole energy, base term included (samplers; see :func:`whole_energy`).
    whole_energy: bool = False
    #: True when the only parameter is the bias, so the likelihood gradient is
    #: the difference of the coupling statistics (the fast path applies).
    bias_only: bool = True

    def __init__(self, n: int) -> None:
        super().__init__()
        if not isinstance(n, int) or n <= 0:
            raise ConfigError(f"number of units must be a positive integer, got {n!r}")
        self.n = n
        self.bias = nn.Parameter(torch.zeros(n))

    # --- description -----------------------------------------------------
    def config(self) -> dict:
        """JSON-serialisable description used to rebuild the units."""
        return {"kind": self.kind, "n": self.n}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "kind")

    # --- the four things every unit type knows ----------------------------
    def coupling(self, x: Tensor) -> Tensor:
        """The statistic c(x) that the connection couples to the other layer."""
        return x

    def base_energy(self, x: Tensor) -> Tensor:
        """E0(x) summed over units, shape (batch,)."""
        return x.new_zeros(x.shape[0])

    def energy(self, x: Tensor, beta: Beta = 1.0) -> Tensor:
        """The layer's own energy term E0(x) - beta * bias . c(x), shape (batch,)
        (beta * E0(x) under whole-energy tempering)."""
        base = self.base_energy(x)
        if self.whole_energy:
            base = _per_sample(beta, base)
        return base - _per_sample(beta, self.coupling(x) @ self.bias)

    def activation(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        """Natural parameter beta * (bias + field) of each unit's conditional."""
        a = field + self.bias
        return a if (not isinstance(beta, Tensor) and beta == 1.0) else a * beta

    def mean(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        """E[x | field] at inverse temperature beta."""
        raise NotImplementedError

    def sample(
        self,
        field: Tensor,
        beta: Beta = 1.0,
        generator: torch.Generator | None = None,
        mean: Tensor | None = None,
    ) -> Tensor:
        """Draw x ~ p(x | field); ``mean`` may pass an already computed E[x | field]."""
        raise NotImplementedError

    def log_partition(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        """log of sum/integral over x of exp(-E0(x) + beta (bias + field) . c(x)), (batch,)."""
        raise NotImplementedError

    # --- data ------------------------------------------------------------
    def validate(self, x: Tensor, name: str = "data") -> None:
        """Raise DataError if ``x`` is not a valid state of this layer."""
        if x.ndim != 2 or x.shape[1] != self.n:
            raise DataError(
                f"{name} has shape {tuple(x.shape)} but this {self.kind} layer has {self.n} "
                f"units: pass a 2-D array with {self.n} columns"
            )
        if x.shape[0] == 0:
            raise DataError(f"{name} is empty: pass at least one sample")
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            rows = bad.any(dim=1).nonzero().flatten()
            raise DataError(
                f"{name} contains {int(bad.sum())} NaN/inf values (first in row "
                f"{int(rows[0]) + 1}, 1-based): clean or impute the data before training"
            )

    def fit_bias(self, x: Tensor) -> Tensor:
        """A bias that makes the independent layer match the data's marginals."""
        return torch.zeros_like(self.bias)

    def init_state(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Random states for ``n`` chains: a draw from the layer at beta = 0 (linear
        tempering: independent units with no bias; Gaussian units N(0, sigma^2))."""
        ref = self.bias.detach()
        field = ref.new_zeros(n, self.n)
        with _linear(self):
            return self.sample(field, beta=0.0, generator=generator)

    # --- enumeration (exact log Z) -----------------------------------------
    @property
    def n_states(self) -> int | None:
        """Number of joint states of the layer, or None for continuous units."""
        return None

    def enumerate_states(self, chunk: int = 65536) -> Iterator[Tensor]:
        """Yield all joint states in chunks (discrete units only)."""
        raise ConfigError(f"{self.kind} units are continuous: their states cannot be enumerated")


def all_binary(x: Tensor) -> bool:
    """True when every value of the floating-point tensor ``x`` is 0 or 1 (-0.0 counts as 0).

    x - x*x is 0 exactly for x in {0, 1} and for no other float (NaN and inf included;
    everywhere else x*x rounds away from x; checked over every float32, float16 and
    bfloat16 value), so one fused op and a max of its magnitude (NaN propagates) per
    block of ~1M values, whose temporary stays in cache: a quarter of the time of
    ``x.eq(0) | x.eq(1)`` on MNIST's 47M values (28 ms against 116 ms on 2 threads;
    ``any()`` in place of the max took 46 ms).
    Non-float tensors are compared directly.
    """
    if not x.is_floating_point():
        return bool(x.eq(0).logical_or_(x.eq(1)).all())
    flat = x.detach().reshape(-1)
    block = 1 << 20
    buf = torch.empty(min(block, flat.numel()), dtype=x.dtype, device=x.device)
    for b in flat.split(block):
        r = torch.addcmul(b, b, b, value=-1.0, out=buf[:b.numel()])
        if not float(r.abs_().max()) == 0.0:  # NaN: not binary
            return False
    return True


class BernoulliUnits(Units):
    """Binary {0, 1} units: p(x = 1 | f) = sigmoid(beta (b + f))."""

    kind = "bernoulli"
    discrete = True

    def mean(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        a = self.activation(field, beta)
        # The base class's ``activation`` returns a fresh tensor: sigmoid in place.
        fresh = type(self).activation is Units.activation and a is not field
        return a.sigmoid_() if fresh else torch.sigmoid(a)

    def sample(self, field, beta=1.0, generator=None, mean=None):
        p = self.mean(field, beta) if mean is None else mean
        # A uniform draw and a compare is cheaper than torch.bernoulli and never
        # crashes on a NaN probability (the compare is simply False).
        return _uniform(p.shape, p, generator).lt_(p)

    def log_partition(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        return nn.functional.softplus(self.activation(field, beta)).sum(-1)

    def validate(self, x: Tensor, name: str = "data") -> None:
        if x.ndim == 2 and x.shape[1] == self.n and x.shape[0] > 0:
            if all_binary(x):
                return
        super().validate(x, name)  # shape and NaN/inf first, with their own messages
        nonbinary = (x != 0) & (x != 1)
        if bool(nonbinary.any()):
            example = float(x[nonbinary][0])
            raise DataError(
                f"{name} must be binary (0/1) for Bernoulli units, found {example!r}: "
                "binarize it (--binarize threshold or stochastic) or use other visible units "
                "(gaussian, sigmoid)"
            )

    def fit_bias(self, x: Tensor) -> Tensor:
        p = x.float().mean(0).clamp(1e-3, 1 - 1e-3)
        return torch.log(p) - torch.log1p(-p)

    @property
    def n_states(self) -> int:
        return 2**self.n

    def enumerate_states(self, chunk: int = 65536) -> Iterator[Tensor]:
        if self.n > 30:
            raise ConfigError(f"cannot enumerate 2^{self.n} states: use AIS instead")
        dev = self.bias.device
        bits = torch.arange(self.n, device=dev)
        total = 2**self.n
        for start in range(0, total, chunk):
            idx = torch.arange(start, min(start + chunk, total), device=dev)
            yield ((idx[:, None] >> bits) & 1).to(self.bias.dtype)


class GaussianUnits(Units):
    """Real-valued units, N(beta (b + f), sigma^2), in Cho et al.'s (2011) form.

    E0(x) = x^2 / (2 sigma^2) and c(x) = x / sigma^2, so the full energy is the
    familiar sum (x - b)^2 / (2 sigma^2) - x W h / sigma^2 up to a constant.
    ``learn_variance=True`` makes log sigma^2 a parameter (``log_var``);
    otherwise it is a fixed buffer (sigma = ``std``, 1 by default: standardise
    the data, see ``boltzkit.data.Standardizer``).
    """

    kind = "gaussian"

    def __init__(self, n: int, std: float = 1.0, learn_variance: bool = False) -> None:
        super().__init__(n)
        if not (std > 0 and math.isfinite(std)):
            raise ConfigError(f"Gaussian units need std > 0, got {std!r}")
        log_var = torch.full((n,), 2.0 * math.log(std))
        self.learn_variance = bool(learn_variance)
        self.std = float(std)
        if self.learn_variance:
            self.log_var = nn.Parameter(log_var)
        else:
            self.register_buffer("log_var", log_var)
        self.bias_only = not self.learn_variance

    def config(self) -> dict:
        return {"kind": self.kind, "n": self.n, "std": self.std,
                "learn_variance": self.learn_variance}

    def variance(self) -> Tensor:
        return torch.exp(self.log_var)

    def coupling(self, x: Tensor) -> Tensor:
        return x * torch.exp(-self.log_var)

    def base_energy(self, x: Tensor) -> Tensor:
        return 0.5 * (x * x) @ torch.exp(-self.log_var)

    def mean(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        if self.whole_energy:  # N(b + f, sigma^2 / beta)
            return self.activation(field, 1.0)
        return self.activation(field, beta)

    def sample(self, field, beta=1.0, generator=None, mean=None):
        m = self.mean(field, beta) if mean is None else mean
        noise = torch.randn(m.shape, generator=generator, dtype=m.dtype, device=m.device)
        std = torch.exp(0.5 * self.log_var)
        if self.whole_energy and not _is_one(beta):
            return m + noise * std * _positive_beta(beta, self.kind).rsqrt()
        return m + noise * std

    def log_partition(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        inv_var = torch.exp(-self.log_var)
        const = 0.5 * (self.log_var + _LOG_2PI).sum()
        if self.whole_energy and not _is_one(beta):
            # beta a^2 / (2 sigma^2) + log sqrt(2 pi sigma^2 / beta) per unit, a = b + f
            b = _positive_beta(beta, self.kind)
            m = self.activation(field, 1.0)
            return (_per_sample(beta, 0.5 * (m * m) @ inv_var) + const
                    - 0.5 * self.n * torch.log(b).reshape(-1))
        m = self.activation(field, beta)
        return 0.5 * (m * m) @ inv_var + const

    def fit_bias(self, x: Tensor) -> Tensor:
        return x.float().mean(0)


class ReLUUnits(Units):
    """Noisy rectified linear units as an exact energy model (unit variance).

    E0(x) = x^2 / 2 on x >= 0: the conditional is a normal N(beta (b + f), 1)
    truncated to x >= 0, whose mean rises like a rectifier (softly below zero,
    linearly above).  Unlike Nair & Hinton's max(0, x + noise) approximation it
    has a closed-form free energy, so exact and AIS log-likelihoods apply.
    """

    kind = "relu"

    def base_energy(self, x: Tensor) -> Tensor:
        return 0.5 * (x * x).sum(-1)

    # Below this activation the direct formulas lose precision: the mean uses
    # its asymptotic series and sampling an exponential proposal.
    _TAIL = -30.0

    def _natural(self, field: Tensor, beta: Beta) -> tuple[Tensor, Tensor | None]:
        """(the mean m of the unit-variance truncated normal, the scale 1 / sqrt(beta) of x
        or None).  Whole-energy tempering at beta: x = x' / sqrt(beta) with x' a unit-variance
        truncated normal of mean sqrt(beta) (b + f)."""
        if self.whole_energy and not _is_one(beta):
            root = _positive_beta(beta, self.kind).sqrt()
            return self.activation(field, 1.0) * root, root
        return self.activation(field, beta), None

    def mean(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        m, root = self._natural(field, beta)
        out = self._unit_mean(m)
        return out if root is None else out / root

    def _unit_mean(self, m: Tensor) -> Tensor:
        md = m.double()
        # E[x] = m + phi(m)/Phi(m) = m + sqrt(2/pi) / erfcx(-m/sqrt(2)) (no overflow) ...
        z = (-md).clamp_max(-self._TAIL) / math.sqrt(2.0)
        exact = md + math.sqrt(2.0 / math.pi) / torch.special.erfcx(z)
        # ... and far below zero its series in t = -m (the difference cancels there).
        t = (-md).clamp_min(1.0)
        i = 1.0 / (t * t)
        tail = (1 - i * (2 - i * (10 - i * (74 - i * (706 - 8162 * i))))) / t
        return torch.where(md < self._TAIL, tail, exact).to(m.dtype)

    def sample(self, field, beta=1.0, generator=None, mean=None):
        m, root = self._natural(field, beta)
        x = self._unit_sample(m.double(), generator).to(field.dtype)
        return x if root is None else x / root

    def _unit_sample(self, m: Tensor, generator) -> Tensor:
        # x = m - Y with Y ~ N(0,1) conditioned on Y <= m: inverse CDF in float64.
        u = torch.rand(m.shape, generator=generator, dtype=torch.float64, device=m.device)
        log_p = torch.log(u.clamp_min(1e-300)) + torch.special.log_ndtr(m)
        y = torch.special.ndtri(torch.exp(log_p).clamp_min(1e-300))
        x = (m - y).clamp_min(0.0)
        tail = m < self._TAIL
        if bool(tail.any()):
            # exp(-t x - x^2/2): propose Exp(t), accept with exp(-x^2/2) (>= 99.9 %).
            t = (-m).clamp_min(1.0)
            todo = tail
            for _ in range(20):
                e = -torch.log1p(-torch.rand(m.shape, generator=generator, dtype=m.dtype,
                                             device=m.device)) / t
                ok = torch.rand(m.shape, generator=generator, dtype=m.dtype,
                                device=m.device) < torch.exp(-0.5 * e * e)
                take = todo & ok
                x = torch.where(take, e, x)
                todo = todo & ~ok
                if not bool(todo.any()):
                    break
        return x

    def log_partition(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        m, root = self._natural(field, beta)
        lp = self._unit_log_partition(m)
        # whole-energy tempering: the integral over x = x' / sqrt(beta) adds -log sqrt(beta)
        return lp if root is None else lp - self.n * torch.log(root).reshape(-1)

    def _unit_log_partition(self, m: Tensor) -> Tensor:
        # m >= 0: m^2/2 + log(sqrt(2 pi) Phi(m)); m < 0: log(sqrt(2 pi) erfcx(-m/sqrt2)/2),
        # which has no cancellation.
        pos = m.clamp_min(0.0)
        neg = m.clamp_max(0.0)
        upper = 0.5 * pos * pos + 0.5 * _LOG_2PI + torch.special.log_ndtr(pos)
        lower = 0.5 * _LOG_2PI + torch.log(0.5 * torch.special.erfcx(-neg / math.sqrt(2.0)))
        return torch.where(m >= 0, upper, lower).sum(-1)

    def validate(self, x: Tensor, name: str = "data") -> None:
        super().validate(x, name)
        if bool((x < 0).any()):
            raise DataError(f"{name} has negative values but ReLU units are >= 0: "
                            "shift the data or use gaussian units")


class SigmoidUnits(Units):
    """Continuous units on [0, 1] with p(x | f) ∝ exp(beta (b + f) x).

    The conditional is a truncated exponential whose mean is a sigmoid-shaped
    function of the field; it suits grey-level pixels.  ``mean_field=True``
    makes ``sample`` return the conditional mean (deterministic mean-field
    updates, as popular Sigmoid-RBM implementations do); energies and
    likelihoods are the exact continuous ones either way.
    """

    kind = "sigmoid"

    def __init__(self, n: int, mean_field: bool = False) -> None:
        super().__init__(n)
        self.mean_field = bool(mean_field)

    def config(self) -> dict:
        return {"kind": self.kind, "n": self.n, "mean_field": self.mean_field}

    @staticmethod
    def _small(a: Tensor) -> Tensor:
        return a.abs() < 1e-3

    def mean(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        a = self.activation(field, beta)
        small = self._small(a)
        safe = torch.where(small, torch.ones_like(a), a)
        # 1 / (1 - exp(-a)) - 1 / a, stable for both signs.
        m = -1.0 / torch.expm1(-safe) - 1.0 / safe
        return torch.where(small, 0.5 + a / 12.0, m)

    def sample(self, field, beta=1.0, generator=None, mean=None):
        if self.mean_field:
            return self.mean(field, beta) if mean is None else mean
        a = self.activation(field, beta)
        u = _uniform(a.shape, a, generator)
        small = self._small(a)
        safe = torch.where(small, torch.ones_like(a), a)
        pos = 1.0 + torch.log(u + (1.0 - u) * torch.exp(-safe.clamp_min(0))) / safe
        neg = torch.log1p(u * torch.expm1(safe.clamp_max(0))) / safe
        x = torch.where(safe > 0, pos, neg)
        return torch.where(small, u, x).clamp(0.0, 1.0)

    def log_partition(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        a = self.activation(field, beta)
        small = self._small(a)
        safe = torch.where(small, torch.ones_like(a), a)
        # log((e^a - 1) / a) = relu(a) + log|1 - e^{-|a|}| - log|a|
        val = torch.relu(safe) + torch.log(-torch.expm1(-safe.abs())) - torch.log(safe.abs())
        return torch.where(small, a / 2.0 + a * a / 24.0, val).sum(-1)

    def validate(self, x: Tensor, name: str = "data") -> None:
        super().validate(x, name)
        if bool(((x < 0) | (x > 1)).any()):
            raise DataError(f"{name} must lie in [0, 1] for sigmoid units: rescale it "
                            "(e.g. pixel / 255)")

    @staticmethod
    def _mean_of(a: Tensor) -> Tensor:
        """E[x] of the truncated exponential on [0, 1] with natural parameter ``a``."""
        small = SigmoidUnits._small(a)
        safe = torch.where(small, torch.ones_like(a), a)
        return torch.where(small, 0.5 + a / 12.0, -1.0 / torch.expm1(-safe) - 1.0 / safe)

    def fit_bias(self, x: Tensor) -> Tensor:
        """The bias whose independent layer has the data's means (clipped to [1e-3, 1 - 1e-3]).

        The mean function 1 / (1 - e^-a) - 1 / a is increasing, so it is inverted
        by bisection in float64 (|a| <= 1000 covers the clipped range: the mean
        is about -1/a far below zero).  This is the base rate of AIS and the
        trainer's initial visible bias; a linearisation near 1/2 would leave a pixel
        that is almost always 0 at a mean of 0.05-0.3 instead.
        """
        target = x.double().mean(0).clamp(1e-3, 1.0 - 1e-3)
        lo = torch.full_like(target, -1000.0)
        hi = torch.full_like(target, 1000.0)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            above = self._mean_of(mid) > target
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
        return (0.5 * (lo + hi)).to(self.bias.dtype)


class SoftmaxUnits(Units):
    """Groups of K mutually exclusive binary units (one-hot per group).

    ``n = groups * K``; columns are laid out group by group.  Use for
    categorical data such as the five rating levels of a movie.  A group of
    all zeros in the data means "missing" to models that mask it.
    """

    kind = "softmax"
    discrete = True

    def __init__(self, n: int, group_size: int) -> None:
        if not isinstance(group_size, int) or group_size < 2:
            raise ConfigError(f"softmax group_size must be an integer >= 2, got {group_size!r}")
        if n % group_size:
            raise ConfigError(f"softmax layer of {n} units is not a whole number of groups of "
                              f"{group_size}: use n = groups * group_size")
        super().__init__(n)
        self.group_size = group_size
        self.groups = n // group_size

    def config(self) -> dict:
        return {"kind": self.kind, "n": self.n, "group_size": self.group_size}

    def _grouped(self, t: Tensor) -> Tensor:
        return t.reshape(*t.shape[:-1], self.groups, self.group_size)

    def mean(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        a = self._grouped(self.activation(field, beta))
        return torch.softmax(a, dim=-1).reshape(field.shape)

    def sample(self, field, beta=1.0, generator=None, mean=None):
        p = self._grouped(self.mean(field, beta) if mean is None else mean)
        u = _uniform(p.shape[:-1] + (1,), p, generator)
        idx = (p.cumsum(-1) < u).sum(-1, keepdim=True).clamp_max(self.group_size - 1)
        out = torch.zeros_like(p).scatter_(-1, idx, 1.0)
        return out.reshape(field.shape)

    def log_partition(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        a = self._grouped(self.activation(field, beta))
        return torch.logsumexp(a, dim=-1).sum(-1)

    def validate(self, x: Tensor, name: str = "data") -> None:
        super().validate(x, name)
        g = self._grouped(x)
        ok = ((g == 0) | (g == 1)).all(-1) & (g.sum(-1) <= 1)
        if not bool(ok.all()):
            row = int((~ok).any(-1).nonzero()[0])
            raise DataError(f"{name} row {row + 1} (1-based) is not one-hot in groups of "
                            f"{self.group_size} (each group: a single 1, or all zeros for "
                            "missing)")

    def fit_bias(self, x: Tensor) -> Tensor:
        counts = self._grouped(x.float()).sum(0) + 1.0
        return torch.log(counts / counts.sum(-1, keepdim=True)).reshape(-1)

    @property
    def n_states(self) -> int:
        return self.group_size**self.groups

    def enumerate_states(self, chunk: int = 65536) -> Iterator[Tensor]:
        if self.n_states > 2**30:
            raise ConfigError(f"cannot enumerate {self.n_states} softmax states: use AIS")
        eye = torch.eye(self.group_size, device=self.bias.device, dtype=self.bias.dtype)
        combos = itertools.product(range(self.group_size), repeat=self.groups)
        while True:
            block = list(itertools.islice(combos, chunk))
            if not block:
                return
            idx = torch.tensor(block, device=self.bias.device)
            yield eye[idx].reshape(len(block), self.n)


class ConcatUnits(Units):
    """Layers side by side as one layer: each block of columns is its own units type.

    States are the blocks' states concatenated; energies and log-partitions add up,
    conditionals and draws are the blocks' own (block by block, in order).  A
    discriminative RBM's joint (input, label) visible layer is
    ``ConcatUnits([inputs, SoftmaxUnits(n_classes, n_classes)])``, which makes every
    RBM tool (samplers, free energies, AIS, clamped sampling) work on the joint.  The
    blocks stay their owner's (``bias`` is their concatenation, not a new parameter), so
    the likelihood gradient takes the autograd path (``bias_only`` is False).
    """

    kind = "concat"
    bias_only = False

    def __init__(self, parts: list[Units]) -> None:
        nn.Module.__init__(self)
        if not parts or not all(isinstance(p, Units) for p in parts):
            raise ConfigError("ConcatUnits needs a list of boltzkit units")
        self.parts = nn.ModuleList(parts)
        self.sizes = [p.n for p in parts]
        self.n = sum(self.sizes)
        self.discrete = all(p.discrete for p in parts)

    @property
    def bias(self) -> Tensor:  # type: ignore[override]
        return torch.cat([p.bias for p in self.parts])

    def config(self) -> dict:
        return {"kind": self.kind, "n": self.n, "parts": [p.config() for p in self.parts]}

    def _split(self, x: Tensor) -> tuple[Tensor, ...]:
        return x.split(self.sizes, dim=-1)

    def coupling(self, x: Tensor) -> Tensor:
        return torch.cat([u.coupling(b) for u, b in zip(self.parts, self._split(x),
                                                         strict=True)], -1)

    def base_energy(self, x: Tensor) -> Tensor:
        return sum(u.base_energy(b) for u, b in zip(self.parts, self._split(x), strict=True))

    def energy(self, x: Tensor, beta: Beta = 1.0) -> Tensor:
        return sum(u.energy(b, beta) for u, b in zip(self.parts, self._split(x), strict=True))

    def activation(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        return torch.cat([u.activation(f, beta) for u, f in zip(self.parts, self._split(field),
                                                                strict=True)], -1)

    def mean(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        return torch.cat([u.mean(f, beta) for u, f in zip(self.parts, self._split(field),
                                                          strict=True)], -1)

    def sample(self, field, beta=1.0, generator=None, mean=None):
        means = self._split(mean) if mean is not None else (None,) * len(self.parts)
        return torch.cat([u.sample(f, beta, generator, mean=m) for u, f, m in
                          zip(self.parts, self._split(field), means, strict=True)], -1)

    def log_partition(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        return sum(u.log_partition(f, beta) for u, f in zip(self.parts, self._split(field),
                                                            strict=True))

    def validate(self, x: Tensor, name: str = "data") -> None:
        Units.validate(self, x, name)
        for i, (u, b) in enumerate(zip(self.parts, self._split(x), strict=True)):
            u.validate(b, f"{name} (block {i + 1}, {u.kind} units)")

    def fit_bias(self, x: Tensor) -> Tensor:
        return torch.cat([u.fit_bias(b) for u, b in zip(self.parts, self._split(x),
                                                         strict=True)])

    def init_state(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.cat([u.init_state(n, generator) for u in self.parts], -1)

    @property
    def n_states(self) -> int | None:
        counts = [u.n_states for u in self.parts]
        return None if None in counts else math.prod(counts)

    def enumerate_states(self, chunk: int = 65536) -> Iterator[Tensor]:
        if self.n_states is None:
            raise ConfigError("a continuous block's states cannot be enumerated")
        if self.n_states > 2**30:
            raise ConfigError(f"cannot enumerate {self.n_states} states: use AIS")
        blocks = [torch.cat(list(u.enumerate_states(chunk))) for u in self.parts]
        index = itertools.product(*(range(len(b)) for b in blocks))
        while True:
            rows = list(itertools.islice(index, chunk))
            if not rows:
                return
            idx = torch.tensor(rows, device=blocks[0].device)
            yield torch.cat([b[idx[:, i]] for i, b in enumerate(blocks)], -1)


UNIT_TYPES: dict[str, type[Units]] = {
    cls.kind: cls
    for cls in (BernoulliUnits, GaussianUnits, ReLUUnits, SigmoidUnits, SoftmaxUnits)
}


def make_units(kind: str, n: int, **options) -> Units:
    """Build units by name ("bernoulli", "gaussian", "relu", "sigmoid", "softmax")."""
    aliases = {"binary": "bernoulli", "nrelu": "relu", "categorical": "softmax"}
    key = aliases.get(kind, kind)
    if key not in UNIT_TYPES:
        raise ConfigError(f"unknown unit type {kind!r}: choose one of {sorted(UNIT_TYPES)}")
    try:
        return UNIT_TYPES[key](n, **options)
    except TypeError as exc:
        raise ConfigError(f"bad options for {key} units: {exc}") from None


def units_from_config(cfg: dict) -> Units:
    """Rebuild units from ``Units.config()``."""
    cfg = dict(cfg)
    kind = cfg.pop("kind", None)
    n = cfg.pop("n", None)
    if kind is None or n is None:
        raise ConfigError(f"units config needs 'kind' and 'n', got {cfg!r}")
    return make_units(kind, int(n), **cfg)


class PooledBernoulliUnits(Units):
    """Binary detection units of K feature maps with probabilistic max-pooling.

    Lee, Grosse, Ranganath & Ng (2009): each feature map (``height x width``,
    the output of a :class:`~boltzkit.connections.ConvConnection`) is cut into
    non-overlapping ``block x block`` pooling blocks.  The units of one block
    form a softmax group with an extra "all off" state: at most one of them is
    on, p(h_i = 1 | f) = exp(a_i) / (1 + sum_j exp(a_j)) with a = beta (b + f),
    and the block's pooling unit is on iff one of them is (:meth:`pool_mean`).
    ``log_partition`` is sum over blocks of log(1 + sum_j exp(a_j)).
    ``block=1`` gives ordinary independent Bernoulli units.

    Biases are shared per filter, as in a convolutional RBM: the parameter is
    ``filter_bias`` (K,), and ``bias`` is its expansion to one value per unit
    (a differentiable view), so the generic energy/activation code and the
    autograd gradient (which sums over positions) apply unchanged.  Units are
    laid out filter by filter, each map in C order, like ``conv2d`` output.
    """

    kind = "pooled_bernoulli"
    discrete = True
    # The parameter is the per-filter bias, not one bias per unit: the dense fast
    # path would write a gradient into the expanded view, so use the autograd path.
    bias_only = False

    def __init__(self, n: int | None = None, *, filters: int, height: int, width: int,
                 block: int = 2) -> None:
        nn.Module.__init__(self)
        for name, value in (("filters", filters), ("height", height), ("width", width),
                            ("block", block)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"pooled units: {name} must be a positive integer, "
                                  f"got {value!r}")
        if height % block or width % block:
            raise ConfigError(f"pooled units: the {height}x{width} feature maps do not split "
                              f"into {block}x{block} pooling blocks: choose image and filter "
                              f"sizes so that (image - filter + 1) is a multiple of {block}")
        total = filters * height * width
        if n is not None and n != total:
            raise ConfigError(f"pooled units: n={n} but {filters} maps of {height}x{width} "
                              f"make {total} units")
        self.n = total
        self.filters, self.height, self.width, self.block = filters, height, width, block
        self.pool_height, self.pool_width = height // block, width // block
        self.groups = filters * self.pool_height * self.pool_width
        self.group_size = block * block
        self.filter_bias = nn.Parameter(torch.zeros(filters))

    @property
    def bias(self) -> Tensor:  # type: ignore[override]
        """The per-filter bias expanded to every unit, shape (n,)."""
        return self.filter_bias.repeat_interleave(self.height * self.width)

    @property
    def n_pooled(self) -> int:
        """Number of pooling units (filters x pooled height x pooled width)."""
        return self.groups

    def config(self) -> dict:
        return {"kind": self.kind, "n": self.n, "filters": self.filters,
                "height": self.height, "width": self.width, "block": self.block}

    # --- layout: (batch, n) <-> (batch, groups, block*block) ----------------
    def _unblocks(self, t: Tensor) -> Tensor:
        """(batch, groups, block*block), blocks in (K, pooled h, pooled w) order -> (batch, n)."""
        c = self.block
        x = t.reshape(-1, self.filters, self.pool_height, self.pool_width, c, c)
        return x.permute(0, 1, 2, 4, 3, 5).reshape(-1, self.n)

    def _view(self, t: Tensor) -> Tensor:
        """(batch, n) as (batch, K, pooled h, block, pooled w, block): a view, no copy."""
        c = self.block
        return t.reshape(-1, self.filters, self.pool_height, c, self.pool_width, c)

    def _slices(self, t: Tensor) -> list[Tensor]:
        """The block*block strided views (batch, K, pooled h, pooled w), one per position.

        Elementwise work on these views is several times faster on CPU than
        reductions over the small block dimensions or a permuted copy.
        """
        v = self._view(t)
        return [v[:, :, :, i, :, j] for i in range(self.block) for j in range(self.block)]

    def _assemble(self, parts: list[Tensor]) -> Tensor:
        """Inverse of :meth:`_slices`: (batch, n) from one tensor per block position."""
        first = parts[0]
        c = self.block
        out = first.new_empty(first.shape[0], self.filters, self.pool_height, c,
                              self.pool_width, c)
        for k, part in enumerate(parts):
            out[:, :, :, k // c, :, k % c] = part
        return out.reshape(-1, self.n)

    def _normalised(self, field: Tensor, beta: Beta) -> tuple[list[Tensor], Tensor, Tensor]:
        """exp(a - m) per block position, the normaliser z = exp(-m) + sum exp(a - m), m.

        m = max(0, the block's largest a) keeps every exponent <= 0, and
        log(1 + sum exp a) = m + log z exactly (m is detached: it cancels).
        """
        parts = self._slices(self.activation(field, beta))
        m = functools.reduce(torch.maximum, [p.detach() for p in parts]).clamp_min(0.0)
        exps = [torch.exp(p - m) for p in parts]
        z = functools.reduce(torch.add, exps) + torch.exp(-m)
        return exps, z, m

    # --- the four things ------------------------------------------------------
    def mean(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        exps, z, _ = self._normalised(field, beta)
        return self._assemble([e / z for e in exps])

    def pool_mean(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        """P(pooling unit on | field) = 1 - P(block all off), shape (batch, groups)."""
        _, z, m = self._normalised(field, beta)
        return (1.0 - torch.exp(-m) / z).reshape(-1, self.groups)

    def sample(self, field, beta=1.0, generator=None, mean=None):
        if mean is None:
            exps, z, _ = self._normalised(field, beta)
            probs = [e / z for e in exps]
        else:
            probs = self._slices(mean)
        # One uniform per block: position k is on iff cum_{k-1} < u <= cum_k, where
        # cum is the running sum of the block's probabilities (u beyond it: all off).
        u = _uniform(probs[0].shape, probs[0], generator)
        below = torch.zeros_like(u)
        parts = []
        for p in probs:
            above = below + p
            parts.append(((below < u) & (u <= above)).to(u.dtype))
            below = above
        return self._assemble(parts)

    def pool_sample(self, h: Tensor) -> Tensor:
        """Pooling unit states of detection states ``h``: 1 where a block has a unit on."""
        return functools.reduce(torch.maximum, self._slices(h)).reshape(-1, self.groups)

    def log_partition(self, field: Tensor, beta: Beta = 1.0) -> Tensor:
        _, z, m = self._normalised(field, beta)
        return (m + torch.log(z)).flatten(1).sum(-1)

    def validate(self, x: Tensor, name: str = "data") -> None:
        super().validate(x, name)
        nonbinary = (x != 0) & (x != 1)
        if bool(nonbinary.any()):
            raise DataError(f"{name} must be binary (0/1) for pooled Bernoulli units")
        crowded = functools.reduce(torch.add, self._slices(x)) > 1
        if bool(crowded.any()):
            row = int(crowded.flatten(1).any(-1).nonzero()[0])
            raise DataError(f"{name} row {row + 1} (1-based) has more than one unit on in a "
                            f"{self.block}x{self.block} pooling block (at most one may be on)")

    def fit_bias(self, x: Tensor) -> Tensor:
        return torch.zeros_like(self.filter_bias)

    @property
    def n_states(self) -> int:
        return (self.group_size + 1) ** self.groups

    def enumerate_states(self, chunk: int = 65536) -> Iterator[Tensor]:
        if self.n_states > 2**30:
            raise ConfigError(f"cannot enumerate {self.n_states} pooled states: use AIS")
        dt, dev = self.filter_bias.dtype, self.filter_bias.device
        eye = torch.eye(self.group_size + 1, device=dev, dtype=dt)[:, :-1]
        combos = itertools.product(range(self.group_size + 1), repeat=self.groups)
        while True:
            block = list(itertools.islice(combos, chunk))
            if not block:
                return
            idx = torch.tensor(block, device=dev)
            yield self._unblocks(eye[idx])

