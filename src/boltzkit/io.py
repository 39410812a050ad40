"""Model files and checkpoints: safetensors plus a JSON header, never pickle.

A model file is one ``.safetensors`` file whose header metadata holds the
JSON configuration (key ``boltzkit``), so opening a stranger's file cannot
run code.  Tensor names are plain: a dense RBM has ``weights``
(n_visible x n_hidden), ``visible_bias``, ``hidden_bias``; Gaussian units with
a variance add ``visible_log_var`` / ``hidden_log_var`` (log sigma^2).

Loading trusts nothing in the file: :func:`load_model` checks that the header
is a boltzkit JSON object, builds the model its config describes while refusing
any tensor allocation the file's own size cannot justify (so a 600-byte file
cannot claim a 15000 x 15000 model), then compares every tensor name, shape and
kind of dtype with the file's and refuses NaN/inf values.  Every problem is one
:class:`ModelFileError` naming the file.

Every write goes to a temporary file in the same directory and is renamed into
place, so a crash never leaves half a file; a temporary file that a killed
writer left behind is removed by the next write of the same target.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.overrides import TorchFunctionMode

from .errors import BoltzkitError, ModelFileError

FORMAT_VERSION = "1"

#: A temporary file untouched this long (seconds) is stale even when the pid in its
#: name cannot be checked (another machine's, a reused pid, an older boltzkit's name).
STALE_TEMP_AGE_S = 3600.0

_READ_ERRORS = (SafetensorError, OSError, ValueError, RuntimeError)
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}
T = TypeVar("T")


def tensor_name(state_key: str) -> str:
    """Map a ``state_dict`` key to the plain name stored in the file."""
    return state_key.replace("connection.", "").replace(".", "_")


# --- writing ---------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _machine_tag() -> str:
    """8 hex digits naming this host and PID namespace: where a temporary file's pid
    can be checked (another machine or container sharing the folder has other pids)."""
    ident = socket.gethostname()
    try:
        ident += os.readlink("/proc/self/ns/pid")
    except OSError:
        pass
    return hashlib.blake2s(ident.encode(), digest_size=4).hexdigest()


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists here (True where that cannot be checked)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    except (OverflowError, ValueError):  # no process can have that pid
        return False
    return True


def _remove_stale_temps(path: Path) -> None:
    """Remove the temporary files that interrupted writes of ``path`` left beside it.

    Only names :func:`atomic_write` makes for this target are considered:
    ``.NAME.PID-TAG.XXXXXXXX.tmp`` (and ``.NAME.XXXXXXXX.tmp``, the name of older
    versions).  One is stale when its writer is gone: the pid in its name is no live
    process of this machine (TAG: :func:`_machine_tag`), or it has not been modified
    for :data:`STALE_TEMP_AGE_S`.  A live writer's file is left alone, so two processes
    can write the same target at once (the last rename wins).  Never raises.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)-([0-9a-f]{{8}})\.)?"
                         r"[A-Za-z0-9_]{8}\.tmp")
    tag, now = _machine_tag(), time.time()
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        pid, where = match.groups()
        try:
            dead = pid is not None and where == tag and not _pid_alive(int(pid))
            if dead or now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_AGE_S:
                os.unlink(entry.path)
        except OSError:  # removed meanwhile by another writer, or not ours to remove
            continue


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give (0666 less
    the umask), not the owner-only mode of a temporary file.  The temporary file's
    name holds this process's pid, so the next write of ``path`` can tell a file
    left by a killed writer (removed) from one a live writer still owns (kept).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-{_machine_tag()}.",
                               suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 header: dict[str, Any]) -> Path:
    """Atomically write tensors and a JSON header as one safetensors file."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"boltzkit": json.dumps(header), "format_version": FORMAT_VERSION}
    return atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=meta))


# --- reading ---------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist: check the path")
    return path


def _read(path: Path, read: Callable[[], T]) -> T:
    """``read()``, with the safetensors library's errors turned into one ModelFileError."""
    try:
        return read()
    except _READ_ERRORS as exc:
        raise ModelFileError(f"{path} is not a readable safetensors file ({_first_line(exc)}); "
                             "it may be corrupted or truncated: re-save or re-download it"
                             ) from None


def _parse_header(path: Path, meta: dict[str, str] | None) -> dict[str, Any]:
    """The boltzkit header (a JSON object) of a file's safetensors metadata."""
    meta = meta or {}
    if "boltzkit" not in meta:
        raise ModelFileError(f"{path} is a safetensors file but not a boltzkit model (no "
                             "'boltzkit' header): save models with boltzkit.io.save_model")
    try:
        header = json.loads(meta["boltzkit"])
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(f"{path} has a corrupted boltzkit header: {exc}") from None
    version = meta.get("format_version", "?")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{path} uses boltzkit file format {version}, this version reads "
                             f"{FORMAT_VERSION}: upgrade boltzkit")
    if not isinstance(header, dict):
        raise ModelFileError(f"{path} has a corrupted boltzkit header: a JSON "
                             f"{_JSON_TYPES.get(type(header), '?')}, not an object: re-save "
                             "the model with boltzkit.io.save_model")
    return header


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a boltzkit safetensors file: (tensors, header). Clear errors for bad files."""
    path = _existing(path)
    with _read(path, lambda: safe_open(str(path), framework="pt")) as f:
        header = _parse_header(path, _read(path, f.metadata))
        # A copy in torch's own (64-byte aligned) memory: the file's tensors sit at
        # 8-byte offsets, and BLAS kernels (MKL on AMD CPUs, for one) round
        # differently on unaligned buffers, so a resumed run would drift from an
        # uninterrupted one in the last bits.
        tensors = _read(path, lambda: {k: f.get_tensor(k).clone() for k in f.keys()})
    return tensors, header


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a boltzkit file, without reading its tensors."""
    path = _existing(path)
    with _read(path, lambda: safe_open(str(path), framework="pt")) as f:
        return _parse_header(path, _read(path, f.metadata))


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters and buffers under their file names."""
    return {tensor_name(k): v for k, v in model.state_dict().items()}


def _check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """ModelFileError naming the first floating tensor that holds NaN or inf."""
    for name, t in tensors.items():
        # A finite sum proves every value finite (NaN and inf propagate through it) in
        # one pass without a mask; only a non-finite sum (or an overflow) needs the mask.
        if (t.is_floating_point() and not bool(torch.isfinite(t.sum()))
                and not bool(torch.isfinite(t).all())):
            raise ModelFileError(f"{source}: tensor {name!r} holds NaN/inf values: the model "
                                 "diverged or the file is corrupted; retrain it or load an "
                                 "earlier checkpoint")


def load_model_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor],
                       source: str = "file") -> None:
    """Copy file tensors into ``model``, checking them first.

    Names and shapes must match the model's exactly, floating tensors must be stored as
    floating ones (integer buffers as integers), and values must be finite;
    ModelFileError naming the tensor otherwise.
    """
    state = model.state_dict()
    names = {tensor_name(k): k for k in state}
    missing = sorted(set(names) - set(tensors))
    extra = sorted(set(tensors) - set(names))
    if missing or extra:
        raise ModelFileError(f"{source} does not match its config: missing tensors {missing}, "
                             f"unexpected tensors {extra}")
    for name, key in names.items():
        t, want = tensors[name], state[key]
        if t.shape != want.shape:
            raise ModelFileError(f"{source}: tensor {name!r} has shape {tuple(t.shape)}, the "
                                 f"config implies {tuple(want.shape)}")
        if t.is_floating_point() != want.is_floating_point():
            raise ModelFileError(f"{source}: tensor {name!r} is stored as {t.dtype}, the model "
                                 f"keeps it as {want.dtype}: the file is corrupted")
    _check_finite(tensors, source)
    model.load_state_dict({key: tensors[name] for name, key in names.items()})


def save_model(model: torch.nn.Module, path: str | os.PathLike,
               extra: dict[str, Any] | None = None) -> Path:
    """Save any boltzkit model (it must have ``config()``) to ``path``."""
    header = {"config": model.config(), **(extra or {})}
    return save_tensors(path, model_tensors(model), header)


def _model_class(cfg: Any) -> type:
    """The class that builds the kind of model ``cfg`` describes (ModelFileError if none)."""
    from .kinds import KINDS

    if not isinstance(cfg, dict):
        raise ModelFileError(f"the model config is a JSON {_JSON_TYPES.get(type(cfg), '?')}, "
                             "not an object")
    kind = cfg.get("model")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ModelFileError(f"unknown model kind {kind!r} in file: this boltzkit knows "
                             f"{sorted(KINDS)}")
    return KINDS[kind].model_class()


def model_from_config(cfg: dict) -> torch.nn.Module:
    """Build an untrained model of the kind a config describes."""
    return _model_class(cfg).from_config(cfg)


# --- building a model from a stranger's config ----------------------------------------
class _TooLarge(Exception):
    """A tensor factory asked for more elements than the model file justifies."""


def _factory_shape(func: Callable, args: tuple, kwargs: dict) -> tuple[int, ...] | None:
    """The shape a tensor factory call will allocate, or None (not a factory, or a size
    torch itself will refuse)."""
    if func in (torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn):
        size = kwargs.get("size", args[0] if len(args) == 1 and not isinstance(args[0], int)
                          else args)
    elif func in (torch.full, torch.empty_strided):
        size = kwargs.get("size", args[0] if args else ())
    elif func in (torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones,
                  torch.Tensor.new_full):
        size = kwargs.get("size", args[1] if len(args) == 2 and not isinstance(args[1], int)
                          else args[1:])
    elif func is torch.randint:
        size = kwargs.get("size", args[-1] if args else ())
    elif func is torch.randperm:
        size = args[:1]
    elif func is torch.eye:
        size = (args[0], args[1] if len(args) > 1 else kwargs.get("m", args[0])) if args else ()
    elif func is torch.arange:
        ends = (0, *args[:1], 1) if len(args) == 1 else (*args, 1)[:3]
        start, end, step = (kwargs.get(k, v) for k, v in zip(("start", "end", "step"), ends,
                                                              strict=True))
        try:
            size = (max(0, math.ceil((end - start) / step)),)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            return None
    else:
        return None
    try:
        shape = tuple(operator.index(s) for s in size)
    except TypeError:
        return None
    return shape if all(s >= 0 for s in shape) else None


class _SizeLimit(TorchFunctionMode):
    """Refuses tensor factory calls past a budget of elements, before they allocate.

    A model file stores every parameter and buffer of its model, so an honest config
    never needs much more memory than the file's own tensors: while a model is built
    from a file, the factories (``torch.zeros``, ``randn``, ``empty``, ...) may request
    ``limit`` elements in all, a few times the file's count plus slack for small
    temporaries.  A 600-byte file whose config says 15000 x 15000 then fails here,
    before the allocation, and the exact name and shape check follows the build.
    (Tensors derived from others, such as ``a * b``, are not counted: they are as large as
    factory outputs unless broadcast.)

    Why not build on the ``meta`` device, which gives exact shapes with no memory at
    all: in torch 2.13 the first arithmetic on a meta tensor imports ``torch._dynamo``
    (about 800 modules, 1 s), which would more than double ``boltzkit info``; this mode
    costs about 0.05 ms a load and one build.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.left = limit

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        shape = _factory_shape(func, args, kwargs)
        if shape is not None:
            self.left -= math.prod(shape)
            if self.left < 0:
                raise _TooLarge(f"a tensor of shape {shape}")
        return func(*args, **kwargs)


class _ReadLog(dict):
    """A config object that records the last key read from it or from any object in it
    (a path like ``layers[1].hidden``), so that an error a model class raises while it
    parses a config can be traced to the key it had reached."""

    _prefix: str = ""
    _log: list[str]

    def __getitem__(self, key: Any) -> Any:
        self._log[:] = [f"{self._prefix}{key}"]
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._log[:] = [f"{self._prefix}{key}"]
        return super().get(key, default)


# Error messages about a value's type ("not 'dict'") then read as for a plain config.
_ReadLog.__name__ = _ReadLog.__qualname__ = "dict"


def _logged(value: Any, where: str, log: list[str]) -> Any:
    """``value`` with every JSON object in it a :class:`_ReadLog` sharing ``log``."""
    if isinstance(value, dict):
        out = _ReadLog((k, _logged(v, f"{where}{k}", log)) for k, v in value.items())
        out._prefix, out._log = f"{where}." if where else "", log
        return out
    if isinstance(value, list):
        return [_logged(v, f"{where}[{i}]", log) for i, v in enumerate(value)]
    return value


def _build(path: Path, cfg: Any, n_values: int) -> torch.nn.Module:
    """The model ``cfg`` describes, built under a :class:`_SizeLimit` scaled to the
    ``n_values`` tensor elements its file holds; any failure is one ModelFileError
    naming the file and, where it can, the config key.
    """
    try:
        cls = _model_class(cfg)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    # A constructor requests each stored tensor from a factory once or twice (randn, then
    # an init or a copy); 4x that plus 2^20 elements (4 MiB) of small temporaries.
    limit = 4 * n_values + 2**20

    def build(config: dict) -> torch.nn.Module:
        with _SizeLimit(limit):
            return cls.from_config(config)

    try:
        return build(cfg)
    except _TooLarge as exc:
        raise ModelFileError(f"{path}: its config describes a larger model than the file "
                             f"holds (it asks for {exc}; the file has {n_values} values in "
                             "all): the file is corrupted or was edited") from None
    except Exception as exc:  # a stranger's config: whatever fails, the file is at fault
        error = exc
    # Build again from a config that logs its reads, to name the key the error came at
    # (only on this error path, so a loaded model never holds the logging objects).
    log: list[str] = []
    try:
        build(_logged(cfg, "", log))
    except Exception:  # the same failure again
        pass
    if isinstance(error, KeyError) and error.args:
        key = log[0] if log and log[0].endswith(str(error.args[0])) else error.args[0]
        detail = f"it lacks key {key!r}"
    else:
        kind = "" if isinstance(error, BoltzkitError) else f"{type(error).__name__}: "
        detail = f"{kind}{_first_line(error)}" + (f" (last key read: {log[0]!r})" if log else "")
    raise ModelFileError(f"{path} has an invalid model config: {detail}; the file is "
                         "corrupted or was not written by boltzkit.io.save_model") from None


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Load a model saved by :func:`save_model` (no pickle, no code execution).

    Nothing in the file is trusted: the header must be a boltzkit JSON object, the
    tensors finite, the config must build (with no more memory than the file's tensors
    justify: :class:`_SizeLimit`) a model whose tensor names and shapes are the file's.
    Every failure is one :class:`ModelFileError`.
    """
    path = _existing(path)
    with _read(path, lambda: safe_open(str(path), framework="pt")) as f:
        header = _parse_header(path, _read(path, f.metadata))
        if header.get("checkpoint"):
            raise ModelFileError(f"{path} is a training checkpoint, not a model: continue the "
                                 "run with train --resume --checkpoint-dir DIR, or load the "
                                 "model file written by --out")
        if "config" not in header:
            raise ModelFileError(f"{path} has no model config in its header: it is a "
                                 "checkpoint or a foreign file; load checkpoints with --resume")
        # No copy (unlike read_tensors): load_state_dict copies them into the model's own
        # aligned memory.  The file's size bounds theirs (safetensors checks it).
        tensors = _read(path, lambda: {k: f.get_tensor(k) for k in f.keys()})
    model = _build(path, header["config"], sum(t.numel() for t in tensors.values()))
    load_model_tensors(model, tensors, source=str(path))
    return model.to(device)
