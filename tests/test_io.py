"""Model files: safetensors + JSON header, exact round trips, clear errors, no pickle."""

from __future__ import annotations

import ast
import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import boltzkit
from boltzkit import ModelFileError, Trainer, load_model, make_rbm, make_sampler, save_model
from boltzkit.io import atomic_write, model_tensors, read_header, read_tensors, save_tensors

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


# --- a stranger's file is validated before anything is allocated from it (issue 25) -----
def _one_of_each_kind() -> dict[str, torch.nn.Module]:
    """A small model of every kind load_model knows."""
    from boltzkit import BernoulliUnits, GaussianUnits
    from boltzkit.models.conditional import ConditionalRBM
    from boltzkit.models.conv import ConvRBM
    from boltzkit.models.discriminative import DiscriminativeRBM
    from boltzkit.models.dropout import DropoutRBM, EDropoutRBM
    from boltzkit.models.lateral import IsingModel, PottsModel, SemiRestrictedRBM
    from boltzkit.recommend.cf_rbm import CFRBM
    from boltzkit.recommend.rank_rbm import RankRBM
    from boltzkit.stacks.dbm import make_dbm
    from boltzkit.stacks.dbn import make_dbn

    return {
        "rbm": make_rbm(7, 5),
        "crbm": ConditionalRBM(GaussianUnits(3), BernoulliUnits(4), 2),
        "conv-rbm": ConvRBM((8, 8), filters=2, filter_size=3, pool=2),
        "drbm": DiscriminativeRBM(8, 2, 5),
        "dropout-rbm": DropoutRBM(BernoulliUnits(7), BernoulliUnits(5)),
        "edropout-rbm": EDropoutRBM(BernoulliUnits(7), BernoulliUnits(5)),
        "ising": IsingModel(6),
        "potts": PottsModel(4, 3),
        "srbm": SemiRestrictedRBM.from_rbm(make_rbm(7, 5)),
        "cf-rbm": CFRBM(10, 12, 5, conditional=True, n_train=4, n_implicit=2),
        "rank-rbm": RankRBM(10, 12, 5, n_train=4),
        "dbm": make_dbm("8,4,3", seed=0),
        "dbn": make_dbn([8, 6, 4], seed=0),
        "dbn-classifier": make_dbn([8, 6], seed=0).to_classifier(2),
    }


def test_every_kind_loads_within_its_files_size_limit(tmp_path):
    """No false refusals: each kind's constructor stays within the allocation limit."""
    from boltzkit.kinds import KINDS

    models = _one_of_each_kind()
    assert set(models) == set(KINDS), "add the new kind to _one_of_each_kind"
    for kind, model in models.items():
        path = save_model(model, tmp_path / f"{kind}.safetensors")
        loaded = load_model(path)
        assert type(loaded) is type(model) and loaded.config() == model.config(), kind
        a, b = model.state_dict(), loaded.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), kind


class _RefuseLargeFactories(torch.overrides.TorchFunctionMode):
    """Fails a test, before the allocation, if a tensor factory asks for > 10^6 elements."""

    FACTORIES = (torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.FACTORIES:
            size = args[0] if len(args) == 1 and not isinstance(args[0], int) else args
            if isinstance(size, (tuple, list, torch.Size)) and all(
                    isinstance(s, int) for s in size):
                assert math.prod(size) <= 10**6, f"load_model allocates a {tuple(size)} tensor"
        return func(*args, **(kwargs or {}))


def _with_config(model, cfg, path):
    """``model``'s tensors under a header claiming ``cfg``."""
    save_tensors(path, model_tensors(model), {"config": cfg})
    return path


@pytest.mark.parametrize("n", [15000, 10**6, 10**30])
def test_a_config_larger_than_its_file_is_refused_before_allocating(saved, tmp_path, n):
    model, _ = saved
    cfg = model.config()
    cfg["visible"]["n"] = cfg["hidden"]["n"] = n
    cfg["connection"].update(n_visible=n, n_hidden=n)
    path = _with_config(model, cfg, tmp_path / "big.safetensors")
    with _RefuseLargeFactories(), pytest.raises(
            ModelFileError, match="larger model than the file holds") as info:
        load_model(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_dbn_config_of_many_large_layers_is_refused(tmp_path):
    """The limit counts every factory call of a build, not each one alone."""
    from boltzkit.stacks.dbn import make_dbn

    model = make_dbn([8, 6], seed=0)
    cfg = model.config()
    big = make_rbm(600, 600).config()  # 360,000 weights: under 10^6 alone, not 40 of them
    cfg["layers"] = [big] * 40
    path = _with_config(model, cfg, tmp_path / "dbn.safetensors")
    with pytest.raises(ModelFileError, match="larger model than the file holds"):
        load_model(path)


@pytest.mark.parametrize("header", [[1, 2], "config", 3, None, True])
def test_a_header_that_is_not_a_json_object(header, saved, tmp_path):
    model, _ = saved
    path = tmp_path / "h.safetensors"
    save_file(model_tensors(model), str(path),
              metadata={"boltzkit": json.dumps(header), "format_version": "1"})
    for read in (load_model, read_header, read_tensors):
        with pytest.raises(ModelFileError, match="corrupted boltzkit header.*not an object"):
            read(path)


@pytest.mark.parametrize("cfg", [[1, 2], "rbm", 7, None])
def test_a_config_that_is_not_a_json_object(cfg, saved, tmp_path):
    model, _ = saved
    path = _with_config(model, cfg, tmp_path / "c.safetensors")
    with pytest.raises(ModelFileError, match="model config is a JSON"):
        load_model(path)


def _set(cfg, dotted, value):
    """Set (or with value None, delete) the entry at a path like ``layers.1.hidden``."""
    *parents, last = dotted.split(".")
    for p in parents:
        cfg = cfg[int(p)] if isinstance(cfg, list) else cfg[p]
    if value is None:
        del cfg[last]
    else:
        cfg[last] = value


@pytest.mark.parametrize(("kind", "where", "value", "expect"), [
    ("rbm", "hidden", 5, r"TypeError.*last key read: 'hidden'"),          # wrong type
    ("rbm", "hidden.n", "five", r"ValueError.*last key read: 'hidden'"),  # wrong type
    ("rbm", "hidden.n", -3, r"positive integer, got -3.*'hidden'"),       # negative size
    ("rbm", "connection.n_hidden", -3, r"got -3 \(last key read: 'connection'\)"),
    ("rbm", "visible", None, r"it lacks key 'visible'"),                   # missing key
    ("rbm", "model", [1], r"unknown model kind \[1\]"),                    # unhashable kind
    ("crbm", "order", None, r"it lacks key 'order'"),
    ("crbm", "order", [2], r"TypeError.*last key read: 'order'"),
    ("conv-rbm", "image_shape", 5, r"TypeError.*last key read: 'image_shape'"),
    ("drbm", "n_classes", None, r"it lacks key 'n_classes'"),
    ("dbn", "layers.1.hidden", 5, r"TypeError.*last key read: 'layers\[1\]\.hidden'"),
    ("dbn", "layers.0.visible", None, r"it lacks key 'layers\[0\]\.visible'"),
    ("dbm", "connections", 3, r"TypeError.*last key read: 'connections'"),
    ("cf-rbm", "seed", {"a": 1}, r"RuntimeError: manual_seed"),           # a torch error
    ("ising", "n", None, r"it lacks key 'n'"),
])
def test_an_invalid_config_is_one_model_file_error_naming_the_key(kind, where, value, expect,
                                                                   tmp_path):
    model = _one_of_each_kind()[kind]
    cfg = model.config()
    _set(cfg, where, value)
    path = _with_config(model, cfg, tmp_path / "m.safetensors")
    with pytest.raises(ModelFileError, match=expect) as info:
        load_model(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("name", "value"), [("weights", float("nan")),
                                             ("hidden_bias", float("inf")),
                                             ("visible_bias", float("-inf"))])
def test_nan_or_inf_weights_are_refused_naming_the_tensor(saved, tmp_path, name, value):
    model, _ = saved
    tensors = {k: v.clone() for k, v in model_tensors(model).items()}
    tensors[name].view(-1)[1] = value
    path = tmp_path / "diverged.safetensors"
    save_tensors(path, tensors, {"config": model.config()})
    with pytest.raises(ModelFileError, match=rf"tensor '{name}' holds NaN/inf values: the "
                                             "model diverged or the file is corrupted"):
        load_model(path)


def test_resuming_from_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    data = (torch.rand(20, 6, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    Trainer(make_rbm(6, 3), make_sampler("cd"), epochs=1, batch_size=10,
            checkpoint_dir=tmp_path).fit(data)
    path = tmp_path / "checkpoint.safetensors"
    tensors, header = read_tensors(path)
    tensors["model.weights"][0, 0] = float("nan")
    save_tensors(path, tensors, header)
    trainer = Trainer(make_rbm(6, 3), make_sampler("cd"), epochs=2, batch_size=10,
                      checkpoint_dir=tmp_path)
    with pytest.raises(ModelFileError, match="'weights' holds NaN/inf"):
        trainer.fit(data, resume=True)


def test_a_tensor_stored_with_the_wrong_kind_of_dtype(saved, tmp_path):
    model, _ = saved
    tensors = model_tensors(model)
    tensors["weights"] = torch.ones(tensors["weights"].shape, dtype=torch.int32)
    path = tmp_path / "int.safetensors"
    save_tensors(path, tensors, {"config": model.config()})
    with pytest.raises(ModelFileError, match="'weights' is stored as torch.int32"):
        load_model(path)


@pytest.mark.parametrize("command", [["info"], ["sample", "--n", "2", "--npy", "s.npy"],
                                     ["score", "--dataset", "x.npy"]])
def test_cli_exits_2_with_one_line_for_each_bad_file(command, saved, tmp_path, capsys,
                                                     monkeypatch):
    from boltzkit.cli import main

    model, _ = saved
    monkeypatch.chdir(tmp_path)
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((3, 7), dtype=np.float32))
    nan = {k: v.clone() for k, v in model_tensors(model).items()}
    nan["weights"][0, 0] = float("nan")
    big = model.config()
    big["visible"]["n"] = big["connection"]["n_visible"] = 15000
    bad = {"nan": (nan, {"config": model.config()}), "big": (model_tensors(model),
                                                            {"config": big})}
    for name, (tensors, header) in bad.items():
        save_tensors(tmp_path / f"{name}.safetensors", tensors, header)
    save_file(model_tensors(model), str(tmp_path / "list.safetensors"),
              metadata={"boltzkit": "[1, 2]", "format_version": "1"})
    for name in ("nan", "big", "list"):
        capsys.readouterr()
        rc = main([command[0], f"{name}.safetensors", *command[1:]])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and f"{name}.safetensors" in err, (name, err)


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
