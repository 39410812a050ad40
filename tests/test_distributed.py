"""Data-parallel training: two gloo processes on localhost against one process.

One spawn of two ranks runs these jobs (sharing the process start-up cost):

1. A deterministic gradient (mean-field negative phase): the distributed run must follow
   the single-process trajectory to float64 rounding, which checks the sharding of each
   global batch (including a last batch of one row, so rank 1's share is empty), the
   weighted all-reduce and the identical optimizer steps.
2. PCD with 20 persistent chains: the chains are split 10 + 10, the ranks end with
   identical parameters, and the exact log-likelihood matches single-process PCD within
   the seed-to-seed spread of single-process runs.
3. The same PCD job stopped after 3 epochs and resumed from the checkpoint (written by
   rank 0 only, holding both ranks' chains and random streams) reproduces job 2 exactly.
4. The shared-memory sum (the default on x86-64, ``BOLTZKIT_ALLREDUCE=auto``) against gloo's
   all-reduce on the same weighted gradients, over several steps (both slot sets).
5. After ``distributed.shutdown()`` no gloo thread is left on either rank, although rank 0
   has written checkpoints: a gloo thread alive while Python finalises can abort the
   process (SIGABRT), so the ranks exit normally here, with interpreter finalisation.
6. Job 2 takes the fused step (``kernels.plan_step`` with the gradient sum); the same job
   with the fused step refused (the general path) ends with the same parameters, chains
   and diagnostics to float64 rounding.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from boltzkit import distributed, kernels
from boltzkit.errors import ConfigError
from boltzkit.rbm import make_rbm
from boltzkit.sampling import PersistentCD, Sampler
from boltzkit.training import Trainer

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is unavailable")

N_VISIBLE, N_HIDDEN = 10, 8
N_ROWS, BATCH = 201, 20  # 11 batches per epoch; the last has 1 row (rank 1 gets none)
EPOCHS = 6


class MeanFieldCD(Sampler):
    """A deterministic negative phase: E[v | h = E[h | v]] (no random numbers)."""

    def negative(self, rbm, v_data, field_data, generator=None):
        return rbm.visible_mean(rbm.hidden.mean(field_data)), None


def _data() -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    protos = (torch.rand(3, N_VISIBLE, generator=gen) < 0.5).double()
    pick = torch.randint(3, (N_ROWS,), generator=gen)
    flip = (torch.rand(N_ROWS, N_VISIBLE, generator=gen) < 0.1).double()
    return (protos[pick] - flip).abs()


def _model():
    return make_rbm(N_VISIBLE, N_HIDDEN, seed=3).to(torch.float64)


def _params(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def _mean_field_run() -> dict[str, np.ndarray]:
    model = _model()
    Trainer(model, MeanFieldCD(), epochs=EPOCHS, batch_size=BATCH, lr=0.1, momentum=0.5,
            seed=0).fit(_data())
    return _params(model)


def _pcd_trainer(model, epochs, seed=0, ckpt=None, distributed_=None, momentum=0.5,
                 weight_decay=0.0):
    return Trainer(model, PersistentCD(1, n_chains=20), epochs=epochs, batch_size=BATCH,
                   lr=0.05, momentum=momentum, weight_decay=weight_decay, seed=seed,
                   checkpoint_dir=ckpt, distributed=distributed_)


def _rank_grads(rank: int, step: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 * rank + step)
    return [torch.randn(7, 5, generator=gen, dtype=torch.float64),
            torch.randn(3, generator=gen, dtype=torch.float64)]


def _transport_job(rank: int) -> dict[str, object]:
    """Five weighted reductions through each transport; the sums and the names."""
    out: dict[str, object] = {}
    for transport in ("shm", "collective", None):
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in _rank_grads(rank, 0)]
        sync = distributed.GradientSync(params, n_extra=1, transport=transport)
        sums = []
        for step in range(5):
            for p, g in zip(params, _rank_grads(rank, step), strict=True):
                p.grad.copy_(g)
            extra = sync.reduce(0.25 if rank == 0 else 0.75, [float(rank + step)])
            sums.append(sync.buffer.clone())
            assert float(extra[0]) == sync.buffer[-1]
        out[str(transport)] = {"name": sync.transport, "sums": sums}
    # No shared buffer can be made: "auto" falls back to gloo on every rank, "shm" refuses.
    os.environ[distributed.SHM_DIR_ENV] = os.path.join(os.sep, "no", "such", "dir")
    try:
        params = [torch.nn.Parameter(torch.zeros(4))]
        out["fallback"] = distributed.GradientSync(params, transport="auto").transport
        try:
            distributed.GradientSync([torch.nn.Parameter(torch.zeros(4))], transport="shm")
            out["forced"] = "accepted"
        except ConfigError as e:
            out["forced"] = str(e)
    finally:
        del os.environ[distributed.SHM_DIR_ENV]
    return out


_REAL_BUILD = kernels.plan_step


def _refuse(*args, **kwargs):
    return None  # the planner declines: the general path runs


@contextlib.contextmanager
def _fused_build(build):
    """``kernels.plan_step`` replaced by ``build`` meanwhile."""
    kernels.plan_step = build
    try:
        yield
    finally:
        kernels.plan_step = _REAL_BUILD


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    device = distributed.init_from_env("cpu")
    assert device == torch.device("cpu") and distributed.world() == (rank, world)
    try:
        res: dict[str, object] = {"mean_field": _mean_field_run()}
        model = _model()
        trainer = _pcd_trainer(model, EPOCHS)
        built = []

        def counting(*args, **kwargs):
            step = _REAL_BUILD(*args, **kwargs)
            built.append(step is not None and step.sync is not None)
            return step

        with _fused_build(counting):
            trainer.fit(_data())
        res["fused_synced"] = built
        res["pcd"] = _params(model)
        res["chains"] = tuple(trainer.sampler.chains.shape)
        res["chain_states"] = trainer.sampler.chains.clone()
        res["history"] = trainer.history
        general = _pcd_trainer(_model(), EPOCHS)
        with _fused_build(_refuse):
            general.fit(_data())
        res["pcd_general"] = _params(general.model)
        res["chain_states_general"] = general.sampler.chains.clone()
        res["history_general"] = general.history
        # the other branch of the rule: no momentum, weight decay
        for name, build in (("plain_wd", _REAL_BUILD), ("plain_wd_general", _refuse)):
            model = _model()
            with _fused_build(build):
                _pcd_trainer(model, EPOCHS, momentum=0.0, weight_decay=0.01).fit(_data())
            res[name] = _params(model)
        ckpt = os.path.join(out, "ckpt")
        _pcd_trainer(_model(), 3, ckpt=ckpt).fit(_data())
        model = _model()
        _pcd_trainer(model, EPOCHS, ckpt=ckpt).fit(_data(), resume=True)
        res["resumed"] = _params(model)
        res["transports"] = _transport_job(rank)
        torch.save(res, os.path.join(out, f"rank{rank}.pt"))
    finally:
        distributed.shutdown()
    with open(os.path.join(out, f"threads{rank}.txt"), "w") as f:
        f.write("\n".join(_thread_names()))


def _thread_names() -> list[str]:
    """This process's thread names (Linux); empty where /proc cannot tell."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return []
    names = []
    for t in tasks:
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                names.append(f.read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return names


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    for attempt in range(3):
        try:
            torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2,
                                        join=True)
            break
        except Exception as e:  # the free port was taken between its choice and its use
            if attempt == 2 or "address already in use" not in str(e).lower():
                raise
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)], out


def _exact_ll(params: dict[str, np.ndarray], data: torch.Tensor) -> float:
    import itertools

    model = _model()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    states = torch.tensor(list(itertools.product((0.0, 1.0), repeat=N_VISIBLE)),
                          dtype=torch.float64)
    with torch.no_grad():
        log_z = torch.logsumexp(-model.free_energy(states), 0)
        return float((-model.free_energy(data) - log_z).mean())


def test_deterministic_gradient_follows_single_process(ranks):
    (r0, r1), _ = ranks
    single = _mean_field_run()
    for key, value in single.items():
        np.testing.assert_allclose(r0["mean_field"][key], value, rtol=0, atol=1e-10,
                                   err_msg=key)
        np.testing.assert_array_equal(r1["mean_field"][key], r0["mean_field"][key])
    # the run moved the parameters a long way compared with the tolerance
    assert np.abs(single["connection.weights"]).max() > 0.03


def test_ranks_identical_and_chains_split(ranks):
    (r0, r1), _ = ranks
    for key in r0["pcd"]:
        np.testing.assert_array_equal(r0["pcd"][key], r1["pcd"][key], err_msg=key)
    assert r0["chains"] == r1["chains"] == (10, N_VISIBLE)
    for h0, h1 in zip(r0["history"], r1["history"], strict=True):
        assert h0["hidden_activation"] == h1["hidden_activation"]
        assert h0["free_energy_train"] == h1["free_energy_train"]


def test_fused_step_with_gradient_sum_is_the_general_update(ranks):
    (r0, r1), _ = ranks
    for r in (r0, r1):
        assert r["fused_synced"] == [True]  # planned once: the fused step, with the sync
        for key, value in r["pcd_general"].items():
            np.testing.assert_allclose(r["pcd"][key], value, rtol=0, atol=1e-10, err_msg=key)
        assert torch.equal(r["chain_states"], r["chain_states_general"])  # draw for draw
        for h, g in zip(r["history"], r["history_general"], strict=True):
            assert h["hidden_activation"] == pytest.approx(g["hidden_activation"], abs=1e-12)
        for key, value in r["plain_wd_general"].items():
            np.testing.assert_allclose(r["plain_wd"][key], value, rtol=0, atol=1e-10,
                                       err_msg=key)
        assert not np.allclose(r["plain_wd"]["connection.weights"],
                               r["pcd"]["connection.weights"], atol=1e-3)
    # the parameters moved far compared with the tolerance
    assert np.abs(r0["pcd"]["connection.weights"] - _params(_model())["connection.weights"]
                  ).max() > 0.01


def test_distributed_quality_matches_single_process(ranks):
    (r0, _), _ = ranks
    data = _data()
    init = _exact_ll(_params(_model()), data)
    singles = []
    for seed in range(3):
        model = _model()
        _pcd_trainer(model, EPOCHS, seed=seed).fit(data)
        singles.append(_exact_ll(_params(model), data))
    dist_ll = _exact_ll(r0["pcd"], data)
    spread = max(singles) - min(singles)
    mean = sum(singles) / len(singles)
    assert mean > init + 1.0  # training does something measurable
    # within the seed-to-seed spread of single-process runs (plus a small floor)
    assert abs(dist_ll - mean) <= max(2 * spread, 0.05), (dist_ll, singles, init)


def test_resume_reproduces_uninterrupted_run(ranks):
    (r0, r1), out = ranks
    for key in r0["pcd"]:
        np.testing.assert_array_equal(r0["resumed"][key], r0["pcd"][key], err_msg=key)
        np.testing.assert_array_equal(r1["resumed"][key], r1["pcd"][key], err_msg=key)
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["checkpoint.safetensors"]


def test_resume_with_other_world_size_is_refused(ranks, tmp_path):
    from boltzkit.errors import ConfigError

    _, out = ranks
    trainer = _pcd_trainer(_model(), EPOCHS, ckpt=out / "ckpt")
    with pytest.raises(ConfigError, match="same number of processes"):
        trainer.load_checkpoint()


def test_shared_memory_sum_equals_gloo_all_reduce(ranks):
    (r0, r1), _ = ranks
    t0, t1 = r0["transports"], r1["transports"]
    assert t0["shm"]["name"] == t1["shm"]["name"] == "shm"
    assert t0["collective"]["name"] == "collective"
    asked = os.environ.get(distributed.ALLREDUCE_ENV, "auto")  # the default
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    default = "shm" if asked == "shm" or (asked == "auto" and x86) else "collective"
    assert t0["None"]["name"] == t1["None"]["name"] == default
    for step in range(5):
        expect = torch.cat([torch.cat([(0.25 * a + 0.75 * b).reshape(-1) for a, b in zip(
            _rank_grads(0, step), _rank_grads(1, step), strict=True)]),
            torch.tensor([0.25 * step + 0.75 * (1 + step)], dtype=torch.float64)])
        for t in (t0, t1):
            shm, gloo = t["shm"]["sums"][step], t["collective"]["sums"][step]
            torch.testing.assert_close(shm, expect, rtol=0, atol=1e-15)
            assert torch.equal(shm, gloo)  # two ranks: the same one addition
        assert torch.equal(t0["shm"]["sums"][step], t1["shm"]["sums"][step])
    for t in (t0, t1):
        assert t["fallback"] == "collective"
        assert "cannot reserve the shared buffer" in t["forced"], t["forced"]
        assert "BOLTZKIT_ALLREDUCE=collective" in t["forced"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="thread names need Linux /proc")
def test_shutdown_leaves_no_gloo_thread_after_checkpoints(ranks):
    # torch.distributed.nn.functional binds group.WORLD as a default argument when it is
    # imported; a checkpoint imports it (optimizer.state_dict -> torch._dynamo) after the
    # group exists, which pinned the group past destroy_process_group on rank 0 only.
    _, out = ranks
    for rank in range(2):
        names = (out / f"threads{rank}.txt").read_text().split()
        assert names, "no thread names were recorded"
        assert not [n for n in names if "gloo" in n], (rank, names)


def test_importing_boltzkit_keeps_a_later_group_unpinned(tmp_path):
    # A script that imports boltzkit, creates the group itself and then imports
    # torch._dynamo (as optimizer.state_dict() does) must still be able to free the group.
    import subprocess

    code = f"""
import sys, boltzkit, torch.distributed as dist
dist.init_process_group("gloo", init_method="file://{tmp_path / 'store'}", rank=0,
                        world_size=1)
import torch._dynamo, torch.distributed.nn.functional as F
print(F.broadcast.__defaults__)
dist.destroy_process_group()
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_distributed import _thread_names
print([n for n in _thread_names() if "gloo" in n])
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split("\n")[:2] == ["(None,)", "[]"], res.stdout


def test_transport_choice_is_checked(monkeypatch):
    from boltzkit.errors import ConfigError

    p = [torch.nn.Parameter(torch.zeros(3))]
    assert distributed.GradientSync(p).transport == "none"  # no group: nothing to reduce
    monkeypatch.setenv(distributed.ALLREDUCE_ENV, "carrier-pigeon")
    with pytest.raises(ConfigError, match="BOLTZKIT_ALLREDUCE"):
        distributed.GradientSync([torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(ConfigError, match="transport"):
        distributed.GradientSync([torch.nn.Parameter(torch.zeros(3))], transport="tcp")


def test_helpers_without_group():
    assert distributed.world() == (0, 1)
    assert distributed.is_main() and not distributed.is_distributed()
    assert [distributed.shard_bounds(11, r, 3) for r in range(3)] == [(0, 4), (4, 8), (8, 11)]
    assert distributed.shard_bounds(1, 1, 2) == (1, 1)
    assert distributed.init_from_env("cpu") == torch.device("cpu")  # WORLD_SIZE unset: no-op


def test_cli_train_under_torchrun_is_data_parallel(tmp_path):
    """``torchrun -m boltzkit.cli train``: one model written by rank 0, chains split."""
    import json
    import subprocess

    x = (np.random.default_rng(0).random((120, 6)) < 0.4).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    port = _free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(port), "-m", "boltzkit.cli", "train", "--dataset",
           str(tmp_path / "x.npy"), "--n-hidden", "4", "--epochs", "2", "--method", "pcd",
           "--chains", "10", "--out", str(tmp_path / "m.safetensors"), "--checkpoint-dir",
           str(tmp_path / "ck"), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    summaries = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
    assert len(summaries) == 1  # rank 0 reports, rank 1 stays quiet
    assert json.loads(summaries[0])["epochs"] == 2
    from boltzkit.io import read_tensors

    tensors, header = read_tensors(tmp_path / "ck" / "checkpoint.safetensors")
    assert header["world_size"] == 2
    assert tensors["sampler.rank0.chains"].shape[0] + tensors["sampler.rank1.chains"].shape[0] == 10


def test_cli_train_leaves_the_group_even_on_error(tmp_path, monkeypatch):
    """``boltzkit train`` destroys its process group before exiting, also after an error
    (a rank exiting with a live gloo group can abort in interpreter shutdown)."""
    from boltzkit import cli

    calls = []
    monkeypatch.setattr(distributed, "shutdown", lambda: calls.append("shutdown"))
    np.save(tmp_path / "x.npy", (np.random.default_rng(0).random((30, 5)) < 0.5)
            .astype(np.float32))
    args = ["train", "--dataset", str(tmp_path / "x.npy"), "--n-hidden", "3", "--epochs", "1",
            "--out", str(tmp_path / "m.safetensors"), "--quiet"]
    assert cli.main(args) == 0 and calls == ["shutdown"]
    np.save(tmp_path / "empty.npy", np.zeros((0, 5), np.float32))
    args[2] = str(tmp_path / "empty.npy")
    assert cli.main(args) != 0  # fails inside the training job
    assert calls == ["shutdown", "shutdown"]


def test_every_kind_trains_data_parallel(tmp_path):
    """2 gloo ranks train every kind of the registry: the same model on both ranks, and the
    checkpoint of a distributed run (world size 2)."""
    import json
    import subprocess

    port = _free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(port), str(Path(__file__).with_name("dp_kinds_worker.py")),
           str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                          os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    from boltzkit.kinds import trainable

    assert set(result) == set(trainable())
    for kind, r in result.items():
        assert r == {"identical": True, "world_size": 2}, (kind, r)
