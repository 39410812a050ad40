"""Model files: safetensors + JSON header, exact round trips, clear errors, no pickle."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import boltzkit
from boltzkit import ModelFileError, Trainer, load_model, make_rbm, make_sampler, save_model
from boltzkit.io import atomic_write, read_header, read_tensors, save_tensors

MODEL_KINDS = [
    "bernoulli-bernoulli", "bernoulli-softmax", "softmax-bernoulli", "gaussian-bernoulli",
    "gaussian_learned-bernoulli", "bernoulli-relu", "sigmoid-bernoulli", "bernoulli-gaussian",
]


@pytest.fixture
def saved(tiny_rbm, tmp_path):
    """A float32 Bernoulli RBM saved to tmp_path / "model.safetensors"; returns (model, path)."""
    model = tiny_rbm("bernoulli-bernoulli", dtype=torch.float32)
    path = tmp_path / "model.safetensors"
    save_model(model, path)
    return model, path


# --- round trips ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_save_load_round_trip_is_bit_exact(kind, tiny_rbm, tmp_path):
    model = tiny_rbm(kind, seed=3, dtype=torch.float32)
    path = save_model(model, tmp_path / "m.safetensors")
    assert Path(path) == tmp_path / "m.safetensors"
    loaded = load_model(path)
    assert loaded.config() == model.config()
    assert type(loaded.visible) is type(model.visible)
    assert type(loaded.hidden) is type(model.hidden)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    # parameters stay parameters (a learned variance is trainable again after loading)
    assert ({n for n, _ in loaded.named_parameters()}
            == {n for n, _ in model.named_parameters()})
    v = torch.zeros(2, model.n_visible)
    if kind.startswith("softmax"):
        v[:, ::3] = 1.0
    torch.testing.assert_close(loaded.free_energy(v), model.free_energy(v), rtol=0, atol=0)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_file_layout_uses_plain_tensor_names(kind, tiny_rbm, tmp_path):
    model = tiny_rbm(kind, dtype=torch.float32)
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        meta = f.metadata()
        weights = f.get_tensor("weights")
    expected = {"weights", "visible_bias", "hidden_bias"}
    if kind.startswith("gaussian"):
        expected.add("visible_log_var")
    if kind.endswith("gaussian"):
        expected.add("hidden_log_var")
    assert names == expected
    assert weights.shape == (model.n_visible, model.n_hidden)
    assert weights.dtype == torch.float32
    assert torch.equal(weights, model.connection.weights.detach())
    assert set(meta) == {"boltzkit", "format_version"}
    assert json.loads(meta["boltzkit"])["config"] == model.config()


def test_extra_header_fields_and_read_header(saved, tmp_path):
    model, _ = saved
    path = tmp_path / "extra.safetensors"
    save_model(model, path, extra={"trained_on": "prototypes", "epochs": 3})
    header = read_header(path)
    assert header["trained_on"] == "prototypes" and header["epochs"] == 3
    assert header["config"] == model.config()


def test_load_model_device_argument(saved):
    _, path = saved
    assert load_model(path, device="cpu").device == torch.device("cpu")


def test_save_overwrites_atomically_and_leaves_no_temp_files(tiny_rbm, tmp_path):
    path = tmp_path / "sub" / "dir" / "model.safetensors"  # parent folders are created
    save_model(tiny_rbm("bernoulli-bernoulli", seed=1, dtype=torch.float32), path)
    second = tiny_rbm("bernoulli-bernoulli", seed=2, dtype=torch.float32)
    save_model(second, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]
    assert torch.equal(load_model(path).connection.weights, second.connection.weights)


def test_failed_write_leaves_the_old_file_and_no_temp_files(saved):
    _, path = saved
    before = path.read_bytes()

    def failing_write(tmp):
        Path(tmp).write_bytes(b"half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing_write)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_checkpoint_writes_leave_no_temp_files(tmp_path):
    data = (torch.rand(30, 6, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    Trainer(make_rbm(6, 3), make_sampler("pcd"), epochs=3, batch_size=10,
            checkpoint_dir=tmp_path).fit(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]


# --- bad files --------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.05, 0.5, 0.99])
def test_truncated_file(fraction, saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFileError, match="corrupted or truncated") as info:
        load_model(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes(seed, tmp_path):
    path = tmp_path / "noise.safetensors"
    g = torch.Generator().manual_seed(seed)
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=g,
                                         dtype=torch.uint8).tolist()))
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        load_model(path)


def test_text_file_is_rejected(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"config": {}}))
    with pytest.raises(ModelFileError):
        load_model(path)


def test_safetensors_file_without_boltzkit_header(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"weights": torch.zeros(3, 2)}, str(path))
    with pytest.raises(ModelFileError, match="not a boltzkit model"):
        load_model(path)
    save_file({"weights": torch.zeros(3, 2)}, str(path), metadata={"other": "tool"})
    with pytest.raises(ModelFileError, match="not a boltzkit model"):
        load_model(path)


def test_corrupted_header_json(saved, tmp_path):
    model, _ = saved
    path = tmp_path / "bad.safetensors"
    tensors = {k.replace("connection.", "").replace(".", "_"): v
               for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"boltzkit": "{not json", "format_version": "1"})
    with pytest.raises(ModelFileError, match="corrupted boltzkit header"):
        load_model(path)


def test_unknown_format_version(saved, tmp_path):
    model, _ = saved
    path = tmp_path / "future.safetensors"
    save_file({"weights": model.connection.weights.detach()}, str(path),
              metadata={"boltzkit": json.dumps({"config": model.config()}),
                        "format_version": "99"})
    with pytest.raises(ModelFileError, match="format 99"):
        load_model(path)


def test_header_without_model_config(tmp_path):
    path = tmp_path / "m.safetensors"
    save_tensors(path, {"weights": torch.zeros(3, 2)}, {"note": "no config"})
    with pytest.raises(ModelFileError, match="no model config"):
        load_model(path)


@pytest.mark.parametrize("mutate", [
    lambda cfg: cfg.update(model="dbn"),
    lambda cfg: cfg["hidden"].update(kind="quantum"),
    lambda cfg: cfg["hidden"].update(n=-1),
    lambda cfg: cfg["visible"].pop("n"),
    lambda cfg: cfg["visible"].update(bogus_option=1),
    lambda cfg: cfg.pop("visible"),
])
def test_invalid_model_config(mutate, saved, tmp_path):
    model, _ = saved
    cfg = model.config()
    mutate(cfg)
    path = tmp_path / "m.safetensors"
    save_tensors(path, {k.replace("connection.", "").replace(".", "_"): v
                        for k, v in model.state_dict().items()}, {"config": cfg})
    with pytest.raises(ModelFileError):
        load_model(path)


def test_tensors_that_do_not_match_the_config(saved, tmp_path):
    model, _ = saved
    good = {"weights": model.connection.weights.detach(),
            "visible_bias": model.visible.bias.detach(), "hidden_bias": model.hidden.bias.detach()}
    path = tmp_path / "m.safetensors"
    missing = {k: v for k, v in good.items() if k != "hidden_bias"}
    save_tensors(path, missing, {"config": model.config()})
    with pytest.raises(ModelFileError, match="missing tensors.*hidden_bias"):
        load_model(path)
    save_tensors(path, {**good, "extra": torch.zeros(1)}, {"config": model.config()})
    with pytest.raises(ModelFileError, match="unexpected tensors.*extra"):
        load_model(path)
    save_tensors(path, {**good, "weights": good["weights"].t().contiguous()},
                 {"config": model.config()})
    with pytest.raises(ModelFileError, match="'weights' has shape"):
        load_model(path)


def test_read_tensors_returns_header_and_tensors(saved):
    model, path = saved
    tensors, header = read_tensors(path)
    assert set(tensors) == {"weights", "visible_bias", "hidden_bias"}
    assert header == {"config": model.config()}


def test_loading_a_checkpoint_as_a_model_says_so(tmp_path):
    data = (torch.rand(20, 6, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    Trainer(make_rbm(6, 3), make_sampler("cd"), epochs=1, batch_size=10,
            checkpoint_dir=tmp_path).fit(data)
    # (the file name contains "checkpoint": look for the explanation, not the path)
    with pytest.raises(ModelFileError, match="is a checkpoint|--resume"):
        load_model(tmp_path / "checkpoint.safetensors")


# --- no pickle anywhere -----------------------------------------------------------------
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve",
                  "marshal"}


def test_source_uses_no_pickle_or_torch_load():
    src = Path(boltzkit.__file__).parent
    files = sorted(src.rglob("*.py"))
    assert len(files) >= 8
    problems = []
    for file in files:
        tree = ast.parse(file.read_text(), filename=str(file))
        for node in ast.walk(tree):
            where = f"{file.relative_to(src)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                problems += [where for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
            elif isinstance(node, ast.ImportFrom):
                if (node.module or "").split(".")[0] in UNSAFE_MODULES:
                    problems.append(where)
            elif isinstance(node, ast.Attribute):
                base = node.value
                if (node.attr in ("load", "loads", "Unpickler")
                        and isinstance(base, ast.Name) and base.id in UNSAFE_MODULES | {"torch"}):
                    problems.append(f"{where} {base.id}.{node.attr}")
            elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    problems.append(f"{where} allow_pickle")
    assert problems == []
    # and the plain-text check from the brief, ignoring comments/docstrings that say "no pickle"
    for file in files:
        for line in file.read_text().splitlines():
            code = line.split("#", 1)[0]
            assert "torch.load(" not in code, (file, line)
            assert "import pickle" not in code, (file, line)


def test_loading_never_unpickles(saved, monkeypatch):
    """load_model must work with the pickle machinery disabled."""
    import pickle

    _, path = saved

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert load_model(path).n_visible == 7
    assert os.path.getsize(path) > 0


def test_written_files_get_the_umask_mode_not_owner_only(tmp_path):
    import os
    import stat

    from boltzkit.io import atomic_write

    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "f.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# --- temporary files of interrupted writes ----------------------------------------------
def _temp_name(target: Path, pid: int | None, tag: str | None = None) -> Path:
    from boltzkit.io import _machine_tag

    middle = "" if pid is None else f"{pid}-{tag or _machine_tag()}."
    return target.parent / f".{target.name}.{middle}abcd_123.tmp"


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _age(path: Path, seconds: float) -> None:
    import time

    t = time.time() - seconds
    os.utime(path, (t, t))


def test_stale_temp_files_are_removed_and_live_writers_files_kept(saved):
    from boltzkit.io import STALE_TEMP_AGE_S

    model, target = saved
    dead = _temp_name(target, _dead_pid())
    mine = _temp_name(target, os.getpid())                # a live writer: this process
    elsewhere = _temp_name(target, _dead_pid(), tag="0badcafe")  # another machine's pid
    old_elsewhere = _temp_name(target, 2, tag="0badcafe")
    legacy = _temp_name(target, None)                      # an older boltzkit's name
    old_legacy = target.parent / f".{target.name}.zz_99abc.tmp"
    other_target = target.parent / f".other.safetensors.{_dead_pid()}-0badcafe.abcd_123.tmp"
    unrelated = target.parent / f"{target.name}.bak"
    for p in (dead, mine, elsewhere, old_elsewhere, legacy, old_legacy, other_target,
              unrelated):
        p.write_bytes(b"")
    for p in (old_elsewhere, old_legacy):
        _age(p, STALE_TEMP_AGE_S + 60)
    save_model(model, target)
    left = {p.name for p in target.parent.iterdir()}
    assert left == {target.name, mine.name, elsewhere.name, legacy.name, other_target.name,
                    unrelated.name}


def test_a_killed_writers_temp_file_goes_and_a_concurrent_writer_finishes(tmp_path):
    """Two processes: one killed mid-write (-9), one still writing while we save."""
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "model.safetensors"
    release = tmp_path / "release"
    writer = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from boltzkit.io import atomic_write\n"
        "def write(tmp):\n"
        "    Path(tmp).write_bytes(b'partial')\n"
        "    while not Path(sys.argv[1]).exists():\n"
        "        time.sleep(0.02)\n"
        "    Path(tmp).write_bytes(sys.argv[2].encode())\n"
        "atomic_write(sys.argv[3], write)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(boltzkit.__file__).parents[1])}
    killed = subprocess.Popen([sys.executable, "-c", writer, str(tmp_path / "never"), "k",
                               str(target)], env=env)
    live = subprocess.Popen([sys.executable, "-c", writer, str(release), "live",
                             str(target)], env=env)
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob(".model.safetensors.*.tmp"))) < 2:
            assert time.monotonic() < deadline, "the writers did not start"
            time.sleep(0.05)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        save_model(make_rbm(4, 3), target)  # removes the killed writer's file only
        temps = list(tmp_path.glob(".model.safetensors.*.tmp"))
        assert [p.name.split(".")[3].split("-")[0] for p in temps] == [str(live.pid)]
        release.touch()
        assert live.wait(timeout=60) == 0
    finally:
        for proc in (killed, live):  # never leave a writer behind when the test fails
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert target.read_bytes() == b"live"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "release"]
