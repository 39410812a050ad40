"""Compiled elementwise kernels for the bfloat16 fused step, built on first use.

With bfloat16 GEMMs (:mod:`boltzkit.precision`), a CD/PCD step of the plain case spends
more time in its elementwise torch calls than in its products: each call reads and
writes whole buffers and costs a dispatch.  ``native.cpp`` runs a whole pass of batches
(``bernoulli_pass``) in two kinds of loop: ``sample_bernoulli`` (bias add, sigmoid, the
Bernoulli draw with the hashed 16-bit uniforms of :func:`boltzkit.units.bits16`, the
float32 and bfloat16 outputs, and the column sums that the bias gradients and the mean
activation need) and ``sgd_step`` (momentum, weight step and the new bfloat16 copy of
W).  :class:`~boltzkit.kernels.fused.FusedBernoulliSGD` uses it when :func:`load` returns
the module, and its torch-call path otherwise; the two take the same draws and
agree up to float rounding (``tests/test_native.py``).

:func:`load` compiles the source once per machine with torch's C++ extension builder
(a C++ compiler and ninja are needed; about 30 s), into torch's extension cache (or
``$BOLTZKIT_NATIVE_DIR``).  Where that fails it warns once and returns None: training
goes on, slower.  ``BOLTZKIT_NATIVE=0`` turns the kernels off.
"""

from __future__ import annotations

import hashlib
import os
import platform
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

_SOURCE = Path(__file__).with_name("native.cpp")
_lock = threading.Lock()
_state: dict[str, object] = {}


def enabled() -> bool:
    """False when ``BOLTZKIT_NATIVE`` says 0/false/no/off."""
    return os.environ.get("BOLTZKIT_NATIVE", "1").strip().lower() not in ("0", "false", "no",
                                                                         "off")


def _cpu_key() -> str:
    """What the build depends on: the source, torch, and this CPU (-march=native)."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        flags = platform.processor()
    h = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), torch.__version__.encode(), flags.encode(),
                 platform.machine().encode()):
        h.update(part)
    return h.hexdigest()[:12]


def load() -> ModuleType | None:
    """The compiled module, building it on first call; None (after one warning) where it
    cannot be built, or when ``BOLTZKIT_NATIVE=0``."""
    if not enabled():
        return None
    with _lock:
        if "module" in _state:
            return _state["module"]  # type: ignore[return-value]
        module = None
        try:
            from torch.utils import cpp_extension

            name = f"boltzkit_native_{_cpu_key()}"
            build = os.environ.get("BOLTZKIT_NATIVE_DIR")
            kw = {}
            if build:
                Path(build, name).mkdir(parents=True, exist_ok=True)
                kw["build_directory"] = str(Path(build, name))
            # -ffast-math at compile time only (libm's vector exp); not at link time, where
            # it would set flush-to-zero for the whole process.
            module = cpp_extension.load(
                name, [str(_SOURCE)], verbose=False,
                extra_cflags=["-O3", "-march=native", "-ffast-math", "-fopenmp"],
                extra_ldflags=["-fopenmp"], **kw)
        except Exception as exc:  # no compiler, no ninja, a failed build
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            warnings.warn("boltzkit: the compiled bfloat16 kernels could not be built "
                          f"({reason[:200]}); the bfloat16 step uses torch calls instead "
                          "(slower; BOLTZKIT_NATIVE=0 silences this)", RuntimeWarning,
                          stacklevel=2)
            module = None
        _state["module"] = module
        return module


def loaded() -> ModuleType | None:
    """The module if :func:`load` has built it in this process, else None (builds nothing)."""
    return _state.get("module")  # type: ignore[return-value]


def status() -> str:
    """One line for ``boltzkit info``: whether the kernels are in use (does not build)."""
    if not enabled():
        return "off (BOLTZKIT_NATIVE=0)"
    if "module" not in _state:
        return "loaded at the first bfloat16 step (built once per machine)"
    return "in use" if _state["module"] is not None else "unavailable (torch calls instead)"


_EMPTY: dict[torch.dtype, torch.Tensor] = {}


def empty(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 'no output' argument of the kernels."""
    t = _EMPTY.get(dtype)
    if t is None:
        t = _EMPTY[dtype] = torch.empty(0, dtype=dtype)
    return t
