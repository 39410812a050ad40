"""Model files and checkpoints: safetensors plus a JSON header, never pickle.

A model file is one ``.safetensors`` file whose header metadata holds the
JSON configuration (key ``boltzkit``), so opening a stranger's file cannot
run code.  Tensor names are plain: a dense RBM has ``weights``
(n_visible x n_hidden), ``visible_bias``, ``hidden_bias``; Gaussian units with
a variance add ``visible_log_var`` / ``hidden_log_var`` (log sigma^2).  Every
write goes to a temporary file in the same directory and is renamed into
place, so a crash never leaves half a file; a temporary file that a killed
writer left behind is removed by the next write of the same target.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import ModelFileError

FORMAT_VERSION = "1"

#: A temporary file untouched this long (seconds) is stale even when the pid in its
#: name cannot be checked (another machine's, a reused pid, an older boltzkit's name).
STALE_TEMP_AGE_S = 3600.0


def tensor_name(state_key: str) -> str:
    """Map a ``state_dict`` key to the plain name stored in the file."""
    return state_key.replace("connection.", "").replace(".", "_")


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


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a boltzkit safetensors file: (tensors, header). Clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist: check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            # A copy in torch's own (64-byte aligned) memory: the file's tensors sit at
            # 8-byte offsets, and BLAS kernels (MKL on AMD CPUs, for one) round
            # differently on unaligned buffers, so a resumed run would drift from an
            # uninterrupted one in the last bits.
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path} is not a readable safetensors file ({exc}); it may be "
                             "corrupted or truncated: re-save or re-download it") from None
    if "boltzkit" not in meta:
        raise ModelFileError(f"{path} is a safetensors file but not a boltzkit model (no "
                             "'boltzkit' header): save models with boltzkit.io.save_model")
    try:
        header = json.loads(meta["boltzkit"])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path} has a corrupted boltzkit header: {exc}") from None
    version = meta.get("format_version", "?")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{path} uses boltzkit file format {version}, this version reads "
                             f"{FORMAT_VERSION}: upgrade boltzkit")
    return tensors, header


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters and buffers under their file names."""
    return {tensor_name(k): v for k, v in model.state_dict().items()}


def load_model_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor],
                       source: str = "file") -> None:
    """Copy file tensors into ``model``, checking names and shapes exactly."""
    state = model.state_dict()
    names = {tensor_name(k): k for k in state}
    missing = sorted(set(names) - set(tensors))
    extra = sorted(set(tensors) - set(names))
    if missing or extra:
        raise ModelFileError(f"{source} does not match its config: missing tensors {missing}, "
                             f"unexpected tensors {extra}")
    new_state = {}
    for name, key in names.items():
        t = tensors[name]
        if t.shape != state[key].shape:
            raise ModelFileError(f"{source}: tensor {name!r} has shape {tuple(t.shape)}, the "
                                 f"config implies {tuple(state[key].shape)}")
        new_state[key] = t
    model.load_state_dict(new_state)


def save_model(model: torch.nn.Module, path: str | os.PathLike,
               extra: dict[str, Any] | None = None) -> Path:
    """Save any boltzkit model (it must have ``config()``) to ``path``."""
    header = {"config": model.config(), **(extra or {})}
    return save_tensors(path, model_tensors(model), header)


def model_from_config(cfg: dict) -> torch.nn.Module:
    """Build an untrained model of the kind a config describes."""
    from .models import KINDS, model_class
    from .rbm import RBM

    kind = cfg.get("model")
    if kind == "rbm":
        return RBM.from_config(cfg)
    if kind not in KINDS:
        raise ModelFileError(f"unknown model kind {kind!r} in file: this boltzkit knows "
                             f"{sorted(['rbm', *KINDS])}")
    return model_class(kind).from_config(cfg)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Load a model saved by :func:`save_model` (no pickle, no code execution)."""
    tensors, header = read_tensors(path)
    if header.get("checkpoint"):
        raise ModelFileError(f"{path} is a training checkpoint, not a model: continue the run "
                             "with train --resume --checkpoint-dir DIR, or load the model file "
                             "written by --out")
    if "config" not in header:
        raise ModelFileError(f"{path} has no model config in its header: it is a checkpoint "
                             "or a foreign file; load checkpoints with --resume")
    try:
        model = model_from_config(header["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path} has an invalid model config: {exc}") from None
    load_model_tensors(model, tensors, source=str(path))
    return model.to(device)


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a boltzkit file, without loading tensors."""
    return read_tensors(path)[1]
