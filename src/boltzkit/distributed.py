"""Data-parallel training with ``torch.distributed`` (one process per core or GPU).

Launch any training script or ``boltzkit train`` with ``torchrun``; the process group is
initialised from the environment torchrun sets (``env://``): gloo for CPU training, NCCL
for CUDA.  :class:`boltzkit.training.Trainer` then detects the group and

* draws the same global permutation on every rank (shared seed) and gives each rank its
  contiguous slice of every global batch, so the global batch and the epoch order are those
  of a single-process run;
* splits persistent chains across ranks (each rank holds ``n_chains / world_size``);
* averages the gradient statistics (every parameter's ``.grad`` after
  ``objective.compute``) with ONE all-reduce of one flat buffer per step
  (:class:`GradientSync`), weighted by each rank's share of the batch, then every rank
  takes the same optimizer step;
* broadcasts the parameters from rank 0 before the first step;
* samples with a different random stream on each rank (``seed + rank``);
* writes checkpoints (and, through the CLI, models and logs) from rank 0 only.

The helpers below also serve code that is not the Trainer (the CLI, benchmarks).
"""

from __future__ import annotations

import os
import platform
import secrets
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import ConfigError

__all__ = ["ALLREDUCE_ENV", "SHM_DIR_ENV", "GradientSync", "SharedMemorySum",
           "all_gather_objects", "barrier", "broadcast_module", "init_from_env",
           "is_distributed", "is_main", "mean_across_ranks", "shard_bounds", "shutdown",
           "world"]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return world()[1] > 1


def is_main() -> bool:
    """True on rank 0 (and in a plain single-process run): the rank that writes files."""
    return world()[0] == 0


def env_world_size() -> int:
    """WORLD_SIZE as set by torchrun (1 when not launched by a launcher)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def init_from_env(device: str | torch.device = "cpu", backend: str | None = None,
                  timeout_s: float = 1800.0) -> torch.device:
    """Join the process group torchrun describes (``env://``); return this rank's device.

    Does nothing (and returns ``device``) when WORLD_SIZE is unset or 1, or when a group
    already exists.  ``backend`` defaults to NCCL for CUDA devices and gloo otherwise.  For
    CUDA each rank uses ``cuda:LOCAL_RANK`` (one GPU per process).
    """
    dev = torch.device(device)
    if env_world_size() <= 1:
        return dev
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed: run a single process")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA GPU is available")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) "
                              "are visible: start at most one process per GPU "
                              "(torchrun --nproc-per-node N)")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if backend == "gloo" and not dist.is_gloo_available():
        raise ConfigError("torch.distributed has no gloo backend in this build")
    if backend == "nccl" and not dist.is_nccl_available():
        raise ConfigError("torch.distributed has no NCCL backend in this build")
    if not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT", "RANK") if k not in os.environ]
        if missing:
            raise ConfigError(f"WORLD_SIZE is set but {missing} are not: start the processes "
                              "with torchrun (e.g. torchrun --nproc-per-node 2 -m boltzkit.cli "
                              "train ...)")
        dist.init_process_group(backend, init_method="env://",
                                timeout=timedelta(seconds=timeout_s))
    return dev


def _bind_world_defaults_early() -> None:
    """Import the modules that bind ``group.WORLD`` as a default argument, before a group exists.

    ``torch.distributed.nn.functional`` evaluates ``group=group.WORLD`` when it is first
    imported.  Imported after ``init_process_group`` (``torch._dynamo`` pulls it in, and
    ``torch.optim.Optimizer.state_dict`` imports ``torch._dynamo`` lazily: a checkpoint
    does), its defaults keep the live group for the life of the process, so
    ``destroy_process_group`` cannot free it and gloo's threads outlive it (see
    ``shutdown``).  Imported first, the defaults are ``None``.
    """
    try:
        import torch.distributed.nn.functional  # noqa: F401
    except ImportError:  # a build without it has nothing to pin the group either
        pass


# At import, so it precedes init_from_env and any init_process_group a script calls itself.
# Never once a group exists: importing it then would pin that group.
if not (dist.is_available() and dist.is_initialized()):
    _bind_world_defaults_early()


def shutdown() -> None:
    """Leave the process group (no-op without one); call it before the process exits.

    A rank that exits with its gloo group alive can be aborted (``std::terminate``,
    SIGABRT) while the interpreter shuts down: a gloo worker thread that still releases
    the last collective's tensors needs the GIL, which is gone by then (a PyTorch race).
    Destroying the group first frees it and joins those threads while Python is alive,
    provided nothing else holds the group: importing this module imports the torch module
    that would otherwise pin it (see ``_bind_world_defaults_early``), so a script that
    calls ``init_process_group`` itself should import boltzkit (or ``torch.distributed.nn``)
    before it does.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a group)."""
    if is_distributed():
        dist.barrier()


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank's contiguous share of ``n`` items (sizes differ by <= 1).

    The first ``n % world_size`` ranks get one item more, like ``torch.tensor_split``.
    """
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _flat_copy(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors]) if tensors else torch.zeros(0)


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Overwrite every parameter and buffer with rank ``src``'s values (one flat broadcast
    per dtype)."""
    if not is_distributed():
        return
    tensors = list(module.parameters()) + list(module.buffers())
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = _flat_copy(group)
        dist.broadcast(flat, src)
        offset = 0
        for t in group:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def all_gather_objects(obj: object) -> list:
    """Every rank's ``obj`` (picklable; tensors should be on the CPU), in rank order."""
    if not is_distributed():
        return [obj]
    out: list = [None] * world()[1]
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(values: dict[str, float], device: torch.device | None = None
                      ) -> dict[str, float]:
    """Average a dict of floats (same keys on every rank) over the ranks."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= world()[1]
    return dict(zip(keys, t.tolist(), strict=True))


ALLREDUCE_ENV = "BOLTZKIT_ALLREDUCE"
SHM_DIR_ENV = "BOLTZKIT_SHM_DIR"  # where the shared buffer is made (default /dev/shm)
_TRANSPORTS = ("auto", "shm", "collective")


class SharedMemorySum:
    """Sum of one CPU buffer over the ranks of ONE host, through shared memory.

    gloo's all-reduce goes through the loopback TCP stack even when every rank is
    on the same machine: on a 2-core host it took 3.7 ms per step for the 1.57 MB
    gradient of a 784x500 RBM, about as long as the step's compute.  Here each rank
    copies its buffer into its slot of a shared mapping, publishes a step counter,
    waits until every rank has published the same step, and adds the slots up in
    rank order (so every rank computes the same bits).  Two sets of slots alternate
    between steps, so one wait per step suffices: a rank overwrites a set only after
    every rank has published the next step, i.e. finished reading that set.

    The counters rely on stores becoming visible in program order (x86-64's memory
    model), so ``"auto"`` uses this only there.  The buffer lives in ``/dev/shm``
    (``$BOLTZKIT_SHM_DIR`` to choose another directory).  Construction is collective: every
    rank must call it; it raises ``OSError`` on every rank when any rank cannot map
    the files (e.g. ranks on different hosts), so callers can fall back together.
    """

    def __init__(self, numel: int, dtype: torch.dtype, timeout_s: float = 1800.0) -> None:
        rank, size = world()
        self.rank, self.size, self.numel, self.timeout_s = rank, size, numel, timeout_s
        token = secrets.randbits(62)
        paths: list[str] = []
        made = ""
        if rank == 0:
            where = os.environ.get(SHM_DIR_ENV) or (
                "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir())
            try:
                for nbytes in (2 * size * numel * torch.tensor([], dtype=dtype).element_size(),
                               8 * (size + 1)):
                    fd, path = tempfile.mkstemp(prefix="boltzkit-allreduce-", dir=where)
                    paths.append(path)
                    try:
                        # Reserve the pages now: a sparse file on a full tmpfs (Docker's
                        # 64 MB /dev/shm) would fail later with SIGBUS, not an error.
                        # (macOS has no posix_fallocate: a plain size there.)
                        reserve = getattr(os, "posix_fallocate", None)
                        if reserve is not None:
                            reserve(fd, 0, nbytes)
                        else:
                            os.ftruncate(fd, nbytes)
                    finally:
                        os.close(fd)
            except OSError as e:
                made = f"cannot reserve the shared buffer in {where}: {e}"
                for path in paths:
                    os.unlink(path)
        paths, token, made = all_gather_objects((paths, token, made))[0]
        if made:
            raise OSError("shared-memory all-reduce unavailable: " + made)
        ok, err = True, ""
        try:
            data = torch.from_file(paths[0], shared=True, size=2 * size * numel, dtype=dtype)
            flags = torch.from_file(paths[1], shared=True, size=size + 1, dtype=torch.int64)
            if rank == 0:
                flags[size] = token
        except (OSError, RuntimeError) as e:  # e.g. the path is on another host
            ok, err = False, str(e)
        barrier()
        if ok and int(flags[size]) != token:
            ok, err = False, "the shared file holds another run's token (ranks on several hosts?)"
        verdicts = all_gather_objects((ok, err))
        if rank == 0:
            for path in paths:
                os.unlink(path)  # the mappings stay valid; nothing is left behind
        bad = [f"rank {r}: {e}" for r, (o, e) in enumerate(verdicts) if not o]
        if bad:
            raise OSError("shared-memory all-reduce unavailable: " + "; ".join(bad))
        self.slots = data.view(2, size, numel)
        self._flags = flags.numpy()  # polled from NumPy: ~1 us a read, not a torch call
        self._flags[rank] = 0
        self.step = 0
        barrier()

    def __call__(self, buffer: Tensor) -> Tensor:
        """Replace ``buffer`` by its sum over the ranks."""
        self.step += 1
        slots = self.slots[self.step % 2]
        slots[self.rank].copy_(buffer.reshape(-1))
        self._flags[self.rank] = self.step
        self._wait(self.step)
        out = buffer.view(-1)
        torch.add(slots[0], slots[1], out=out)
        for r in range(2, self.size):
            out.add_(slots[r])
        return buffer

    def _wait(self, step: int) -> None:
        flags = self._flags[:self.size]
        if flags.min() >= step:
            return
        start = time.perf_counter()
        spins = 0
        yield_cpu = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))
        while flags.min() < step:
            spins += 1
            if spins < 2000:
                yield_cpu()  # the peer is usually microseconds away
                continue
            time.sleep(50e-6)  # a long wait (a checkpoint, a monitor): stop burning the core
            if time.perf_counter() - start > self.timeout_s:
                raise TimeoutError(
                    f"rank {self.rank} waited {self.timeout_s:.0f} s in the shared-memory "
                    f"all-reduce of step {step}: another rank stopped (see its log)")


def _transport() -> str:
    value = os.environ.get(ALLREDUCE_ENV, "auto").strip().lower() or "auto"
    if value not in _TRANSPORTS:
        raise ConfigError(f"{ALLREDUCE_ENV}={value!r}: use one of {list(_TRANSPORTS)}")
    return value


class GradientSync:
    """Averages gradients over ranks with one all-reduce of one flat buffer per step.

    Every parameter's ``.grad`` is bound to a view of one contiguous buffer (plus
    ``n_extra`` trailing slots for batch diagnostics), so the estimator writes its
    statistics straight into the buffer and no copy is needed before or after the
    all-reduce.  If something replaced a ``.grad`` tensor, it is copied back in and
    rebound.  ``seconds``/``calls`` accumulate the time spent in the all-reduce (on CUDA
    only when ``timing=True``, which synchronises the device around it).

    ``transport`` (default: ``$BOLTZKIT_ALLREDUCE``, else ``"auto"``): with ``"auto"``,
    CPU ranks of a gloo group that share one x86-64 host sum through shared memory
    (:class:`SharedMemorySum`) instead of gloo's TCP all-reduce, falling back to the
    collective on every rank when any rank cannot map the memory; ``"shm"`` insists on
    shared memory; ``"collective"`` always uses ``dist.all_reduce`` (CUDA ranks always do).
    The chosen one is in ``.transport``.
    """

    def __init__(self, params: list[nn.Parameter], n_extra: int = 1,
                 timing: bool = False, transport: str | None = None) -> None:
        params = [p for p in params if p.requires_grad]
        if not params:
            raise ConfigError("the model has no trainable parameters to synchronise")
        dtypes = {p.dtype for p in params}
        if len(dtypes) != 1:
            raise ConfigError(f"parameters of several dtypes {sorted(map(str, dtypes))}: "
                              "cast the model to one dtype for distributed training")
        self.params = params
        self.numel = sum(p.numel() for p in params)
        self.n_extra = n_extra
        self.buffer = torch.zeros(self.numel + n_extra, dtype=params[0].dtype,
                                  device=params[0].device)
        self.views: list[Tensor] = []
        offset = 0
        for p in params:
            view = self.buffer[offset:offset + p.numel()].view_as(p)
            if p.grad is not None:
                view.copy_(p.grad)
            p.grad = view
            self.views.append(view)
            offset += p.numel()
        self.extra = self.buffer[self.numel:]
        self.timing = timing
        self.seconds = 0.0
        self.calls = 0
        choice = _transport() if transport is None else transport
        if choice not in _TRANSPORTS:
            raise ConfigError(f"transport {choice!r}: use one of {list(_TRANSPORTS)}")
        self.transport = "collective" if is_distributed() else "none"
        self._shm: SharedMemorySum | None = None
        if is_distributed() and choice != "collective":
            cpu_gloo = not self.buffer.is_cuda and dist.get_backend() == "gloo"
            if choice == "shm" and not cpu_gloo:
                raise ConfigError("the shared-memory all-reduce is for CPU ranks of a gloo "
                                  "group; CUDA ranks use NCCL (unset BOLTZKIT_ALLREDUCE)")
            x86 = platform.machine().lower() in ("x86_64", "amd64")
            if cpu_gloo and (choice == "shm" or x86):
                try:
                    self._shm = SharedMemorySum(self.buffer.numel(), self.buffer.dtype)
                    self.transport = "shm"
                except OSError as e:
                    if choice == "shm":
                        raise ConfigError(f"{e} (set {ALLREDUCE_ENV}=collective)") from e

    def zero_(self) -> None:
        """Zero every gradient (for a rank whose share of a batch is empty)."""
        self.rebind()
        self.buffer.zero_()

    def rebind(self) -> None:
        """Point every parameter's ``.grad`` at its view again (copying a replaced one in)."""
        for p, view in zip(self.params, self.views, strict=True):
            g = p.grad
            if g is None:
                view.zero_()
                p.grad = view
            elif g.data_ptr() != view.data_ptr():
                view.copy_(g)
                p.grad = view

    @torch.no_grad()
    def reduce(self, weight: float, extra: list[Tensor | float] = ()) -> Tensor:
        """All-reduce ``weight * (grads, extra)`` (a SUM of weighted shares); returns the
        reduced extras.  With equal shares ``weight = 1 / world_size`` (an average)."""
        self.rebind()
        for i, value in enumerate(extra):
            self.extra[i] = value
        if weight != 1.0:
            self.buffer.mul_(weight)
        cuda = self.buffer.is_cuda
        if self.timing and cuda:
            torch.cuda.synchronize(self.buffer.device)
        t0 = time.perf_counter()
        if self._shm is not None:
            self._shm(self.buffer)
        elif is_distributed():
            dist.all_reduce(self.buffer)
        if self.timing and cuda:
            torch.cuda.synchronize(self.buffer.device)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return self.extra
