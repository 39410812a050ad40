"""Compute precision: the dtype of GEMM operands, chosen once per run from the hardware.

``float32`` computes everything in the model's dtype.  ``bfloat16`` (mixed precision)
casts the operands of the matrix products (fields, reconstructions, weight statistics)
to bfloat16, whose GEMMs run several times faster on CPUs with native support (AVX-512
BF16, AMX) and on CUDA tensor cores; everything else stays in the model's dtype:
master weights, optimizer state, biases, sigmoids, random draws, free energies, AIS
log-weights (float64).  On the CPU torch returns a bfloat16 product of bfloat16
operands (accumulated in float32 inside the GEMM, rounded once when stored), which is
cast back at once, so each product carries one bfloat16 rounding (relative 2**-9).
``tf32`` (CUDA only) keeps float32 storage and lets float32 GEMMs use TF32 tensor cores.
``auto`` picks bfloat16 where it is native and float32 elsewhere, and says why.

The precision belongs to the training seam: the :class:`~boltzkit.training.Trainer`, the
samplers' callers (``boltzkit sample``) and the evaluators enter :func:`computing` around
the work; the GEMM sites (connections, kernels) ask :func:`gemm_dtype` and cast through
:func:`low`.  Models never store a precision.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import ConfigError

log = logging.getLogger("boltzkit")

#: The names a user may give (``--precision``).
PRECISIONS = ("float32", "bfloat16", "tf32", "auto")

#: CPU feature flags (``/proc/cpuinfo``) that mean native bfloat16 arithmetic.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")

_GEMM: contextvars.ContextVar[torch.dtype | None] = contextvars.ContextVar(
    "boltzkit_gemm_dtype", default=None)


@dataclass(frozen=True)
class Precision:
    """A resolved choice: ``name`` (float32, bfloat16 or tf32), what was asked, and why."""

    name: str
    requested: str
    reason: str

    @property
    def gemm_dtype(self) -> torch.dtype | None:
        """The GEMM operands' dtype (None: the model's own)."""
        return torch.bfloat16 if self.name == "bfloat16" else None

    def __str__(self) -> str:
        return self.name


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags as Linux reports them (empty where it does not)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bfloat16(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """Whether ``device`` computes bfloat16 GEMMs natively, and the evidence."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return True, f"CUDA compute capability {major}.{minor}: bfloat16 tensor cores"
        return False, (f"CUDA compute capability {major}.{minor} has no bfloat16 tensor "
                       "cores (8.0 or newer has)")
    if device.type != "cpu":
        return False, f"no bfloat16 check for {device.type} devices"
    found = sorted(set(BF16_CPU_FLAGS) & cpu_flags())
    if found:
        return True, f"this CPU has native bfloat16 ({', '.join(found)})"
    return False, ("this CPU has no native bfloat16 (no avx512_bf16, amx_bf16 or bf16 flag): "
                   "bfloat16 GEMMs would be emulated and slower")


def choose(requested: str | Precision | None = "float32",
           device: torch.device | str = "cpu") -> Precision:
    """Resolve a requested precision for ``device``.

    ``bfloat16`` on hardware without native support falls back to float32 with a
    warning (emulated bfloat16 is slower than float32); ``auto`` does so silently.
    """
    if isinstance(requested, Precision):
        return requested
    requested = "float32" if requested is None else requested
    if requested not in PRECISIONS:
        raise ConfigError(f"unknown precision {requested!r}: choose one of {list(PRECISIONS)}")
    device = torch.device(device)
    if requested == "float32":
        return Precision("float32", requested, "asked for")
    if requested == "tf32":
        if device.type != "cuda":
            raise ConfigError("precision 'tf32' is a CUDA tensor-core format: on this "
                              f"{device.type} device choose float32 or bfloat16")
        return Precision("tf32", requested, "asked for: float32 storage, TF32 GEMMs")
    native, why = native_bfloat16(device)
    if native:
        return Precision("bfloat16", requested, why)
    if requested == "bfloat16":
        log.warning("precision bfloat16 asked for, but %s: keeping float32", why)
    return Precision("float32", requested, f"{why}; float32 kept")


@contextlib.contextmanager
def computing(precision: str | Precision | None,
              device: torch.device | str = "cpu") -> Iterator[Precision]:
    """Run the block's GEMMs in ``precision`` (a name is resolved for ``device``)."""
    p = choose(precision, device)
    token = _GEMM.set(p.gemm_dtype)
    tf32 = p.name == "tf32" and torch.cuda.is_available()
    if tf32:
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield p
    finally:
        _GEMM.reset(token)
        if tf32:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def gemm_dtype() -> torch.dtype | None:
    """The GEMM operand dtype of the current block (None: the operands' own)."""
    return _GEMM.get()


# Low-precision copies of parameters, reused while the parameter is unchanged: a
# weight matrix takes part in several GEMMs per step but changes once.  Keyed by id,
# checked by identity (a weak reference) and torch's in-place version counter.
_copies: dict[int, tuple[weakref.ref, int, Tensor]] = {}


def _forget(key: int) -> None:
    _copies.pop(key, None)


def low(t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``t`` as a GEMM operand: cast to ``dtype`` (default: the block's) if it is float32.

    A parameter outside autograd is cast once per change (its version counter), not
    once per product.
    """
    dtype = _GEMM.get() if dtype is None else dtype
    if dtype is None or t.dtype != torch.float32:
        return t
    if not isinstance(t, nn.Parameter) or (t.requires_grad and torch.is_grad_enabled()):
        return t.to(dtype)
    key = id(t)
    hit = _copies.get(key)
    if hit is not None and hit[0]() is t and hit[1] == t._version and hit[2].dtype == dtype:
        return hit[2]
    copy = t.detach().to(dtype)
    _copies[key] = (weakref.ref(t, lambda _, key=key: _forget(key)), t._version, copy)
    return copy


def mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` with operands in the block's GEMM dtype; the result in ``a``'s dtype."""
    dtype = _GEMM.get()
    if dtype is None or a.dtype != torch.float32:
        return a @ b
    return (low(a, dtype) @ low(b, dtype)).to(a.dtype)


def mm_t(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b.T`` as :func:`mm` (the cached copy of a parameter ``b`` is transposed)."""
    dtype = _GEMM.get()
    if dtype is None or a.dtype != torch.float32:
        return a @ b.t()
    return (low(a, dtype) @ low(b, dtype).t()).to(a.dtype)


def call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` (a product: convolution, GEMM) with its float32 tensor
    arguments in the block's GEMM dtype; a tensor result back in float32."""
    dtype = _GEMM.get()
    if dtype is None:
        return fn(*args, **kwargs)
    out = fn(*(low(a, dtype) if isinstance(a, Tensor) else a for a in args), **kwargs)
    return out.to(torch.float32) if out.dtype == dtype else out


def describe(device: torch.device | str = "cpu") -> dict:
    """What ``auto`` would choose on ``device`` and why (for ``boltzkit info``)."""
    from .kernels import native

    p = choose("auto", device)
    out = {"device": str(torch.device(device)), "auto": p.name, "reason": p.reason}
    if torch.device(device).type == "cpu":
        out["bfloat16_kernels"] = native.status()
    return out
