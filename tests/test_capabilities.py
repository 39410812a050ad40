"""The capability matrix (docs/guides/capabilities.md), cell by cell, on tiny data.

Every kind trains through the one loop.  Here, for every trainable kind:

* the page is the registry's (regenerated and compared);
* every sampler cell works (a short run) or is refused with one line naming the kind and
  the method;
* a run killed right after a checkpoint and resumed ends bit-identical to an
  uninterrupted one (stages of a DBN / DBM included);
* every option of ``boltzkit train`` is honoured (the run's outputs change: model,
  history, files written, checkpoints, threads) or refused with one line; an option a kind
  does not read is always refused: nothing is accepted and ignored;
* ``evaluate`` (default metrics) and ``sample`` do what the matrix says.

Data-parallel training of every kind is checked in tests/test_distributed.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_kinds import base_args, make_data

from boltzkit import kinds, precision
from boltzkit.cli import main
from boltzkit.io import read_tensors
from boltzkit.training import Trainer

REPO = Path(__file__).resolve().parents[1]
KINDS = kinds.trainable()


# --------------------------------------------------------------------------- tiny data
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("data"))


def train(args: list[str], out: Path, capsys) -> tuple[int, str]:
    code = main(["train", "--model", *args, "--out", str(out), "--quiet"])
    return code, capsys.readouterr().err


def test_every_kind_has_tiny_settings(data):
    assert set(KINDS) == set(kinds.KINDS) - {"dbn-classifier"}
    for kind in KINDS:
        assert base_args(kind, data)


def test_capability_page_is_the_registrys():
    page = REPO / "docs" / "guides" / "capabilities.md"
    assert page.read_text() == kinds.capability_markdown(), \
        "regenerate: python -m boltzkit.kinds > docs/guides/capabilities.md"


# --------------------------------------------------------------------------- samplers
SAMPLER_ARGS = {"cd": [], "pcd": ["--chains", "6"], "pt": ["--n-temperatures", "3"],
                "tds": [], "ptt": ["--chains", "6"]}


@pytest.mark.parametrize("method", kinds.METHODS)
@pytest.mark.parametrize("kind", KINDS)
def test_sampler_cells(kind, method, data, tmp_path, capsys):
    args = [kind, *base_args(kind, data)]
    if kind in ("ising", "potts", "srbm"):
        args += ["--objective", "ml"]
    if kind == "dropout-rbm" and method in ("pt", "tds", "ptt"):  # the cell's note
        args += ["--dropout-rate", "0"]
    works = method in kinds.KINDS[kind].methods
    code, err = train([*args, "--method", method, *(SAMPLER_ARGS[method] if works else [])],
                      tmp_path / "m.safetensors", capsys)
    if works:
        assert code == 0, err
    else:
        assert code == 2 and kind in err and method in err and err.count("\n") == 1, err


# --------------------------------------------------------------------------- resume
RESUME_EPOCHS = {"dbn": ["--epochs", "2", "--finetune-epochs", "2"],
                 "dbm": ["--dbm-pretrain-epochs", "2"]}
#: The checkpoint write after which the run is killed: mid-run, or mid-way through a later
#: stage (a DBN's second layer, a DBM's joint training).
KILL_AFTER = {"dbn": 3, "dbm": 5}


@pytest.mark.parametrize("kind", KINDS)
def test_killed_and_resumed_run_is_bit_identical(kind, data, tmp_path, capsys, monkeypatch):
    args = [kind, *base_args(kind, data), "--epochs", "3", *RESUME_EPOCHS.get(kind, [])]
    whole = tmp_path / "whole.safetensors"
    code, err = train([*args, "--checkpoint-dir", str(tmp_path / "ck_whole")], whole, capsys)
    assert code == 0, err
    saves = {"n": 0}
    real = Trainer.save_checkpoint

    def killed_after_two(self, *a, **kw):
        path = real(self, *a, **kw)
        saves["n"] += 1
        if saves["n"] == KILL_AFTER.get(kind, 2):
            raise KeyboardInterrupt
        return path

    parted = tmp_path / "parted.safetensors"
    ck = ["--checkpoint-dir", str(tmp_path / "ck")]
    monkeypatch.setattr(Trainer, "save_checkpoint", killed_after_two)
    code, err = train([*args, *ck], parted, capsys)
    assert code == 130 and not parted.exists(), err
    monkeypatch.setattr(Trainer, "save_checkpoint", real)
    code, err = train([*args, *ck, "--resume"], parted, capsys)
    assert code == 0, err
    a, _ = read_tensors(whole)
    b, _ = read_tensors(parted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), kind
    strip = [{k: v for k, v in r.items() if k not in ("time", "wall_time")}
             for r in json.loads(whole.with_suffix(".history.json").read_text())]
    again = [{k: v for k, v in r.items() if k not in ("time", "wall_time")}
             for r in json.loads(parted.with_suffix(".history.json").read_text())]
    assert strip == again


# --------------------------------------------------------------------------- every option
#: A value different from the base run's, for every option.
ALT = {
    "layers": "8,4", "objective": "beam", "method": "pt",
    "binarize": "stochastic", "limit": 30, "visible": "sigmoid", "hidden": "relu",
    "n_hidden": 7, "visible_std": 0.5, "learn_variance": True, "standardize": True,
    "std_floor": 10.0, "max_singular_value": 0.01, "group_size": 2, "init_std": 0.1,
    "k": 2, "k_schedule": "0:2", "chains": 7, "n_temperatures": 4, "beta_min": 0.3,
    "beta_std": 0.3, "beta_autocorr": 0.5, "readout_steps": 1, "sparsity_target": 0.2,
    "sparsity_cost": 0.5, "centering": True, "critic": "dwknn", "critic_k": 2, "gamma": 0.5,
    "gamma_warmup": 1, "epochs": 2, "batch_size": 7, "lr": 0.2, "optimizer": "adam",
    "momentum": 0.0, "adam_betas": "0.5,0.9", "weight_decay": 0.1, "lr_schedule": "linear",
    "lr_final_factor": 0.5, "lr_power": 2.0, "average_from": 1, "seed": 3, "device": "cuda",
    "precision": "bfloat16",
    "threads": 2, "checkpoint_every": 2, "monitor": "loglik", "monitor_every": 1,
    "monitor_ais_steps": 10, "monitor_ais_chains": 5, "plots": True,
    "conv_filters": 3, "conv_filter_size": 3, "conv_pool": 2, "conv_channels": 2,
    "conv_image_shape": "2x8", "conv_sparsity_on": "bias", "dropout_rate": 0.2,
    "dropconnect_rate": 0.3, "drbm_objective": "discriminative", "drbm_alpha": 0.1,
    "drbm_val_size": 10, "drbm_patience": 1, "drbm_dropout": 0.3, "drbm_input_dropout": 0.3,
    "crbm_order": 3, "crbm_test_fraction": 0.3, "crbm_predict_steps": 2,
    "lateral_spins": "pm1", "lateral_q": 4, "lateral_scan": "random",
    "fold": "2", "cf_mode": "like", "item_based": True, "conditional": True,
    "prediction": "exact", "min_weight": 3.0, "dbn_residual": True,
    "dbn_residual_weights": "1,2",
    "dbn_layer_epochs": "1,2", "dbn_layer_lr": "0.01,0.02", "finetune_epochs": 2,
    "finetune_lr": 0.5, "finetune_optimizer": "adam", "finetune_momentum": 0.5,
    "finetune_batch_size": 7, "finetune_weight_decay": 0.01, "finetune_dropout": 0.3,
    "finetune_input_dropout": 0.2, "finetune_schedule": "cosine", "finetune_val_fraction": 0.2,
    "finetune_patience": 1, "dbm_pretrain_epochs": 2, "dbm_pretrain_lr": 0.01,
    "dbm_mf_steps": 1, "dbm_ais_chains": 5, "dbm_ais_steps": 20,
    "mixture_size": 500, "swap_target": 0.3, "max_replicas": 2, "trajectory_ais": True,
    "trajectory_ais_steps": 5, "trajectory_ais_chains": 7, "save_trajectory": True,
    "trajectory_updates": 3,
}
#: Settings an option needs to apply at all (its condition), added to both runs.
NEEDS = {
    "visible_std": {"visible": "gaussian"}, "learn_variance": {"visible": "gaussian"},
    "standardize": {"visible": "gaussian"},
    "std_floor": {"visible": "gaussian", "standardize": True},
    "group_size": {"hidden": "softmax", "n_hidden": 6}, "chains": {"method": "pcd"},
    "n_temperatures": {"method": "pt"}, "beta_min": {"method": "pt"},
    "beta_std": {"method": "tds"}, "beta_autocorr": {"method": "tds"},
    "readout_steps": {"method": "tds"}, "sparsity_cost": {"sparsity_target": 0.1},
    "sparsity_target": {"sparsity_cost": 0.5},
    "conv_sparsity_on": {"sparsity_target": 0.1, "sparsity_cost": 0.5},
    "critic": {"objective": "beam"}, "critic_k": {"objective": "beam"},
    "gamma": {"objective": "beam"}, "gamma_warmup": {"objective": "beam", "epochs": 2},
    "adam_betas": {"optimizer": "adam"},
    "lr_final_factor": {"lr_schedule": "linear", "epochs": 2},
    "lr_power": {"lr_schedule": "power", "epochs": 2}, "checkpoint_every": {"epochs": 3},
    "monitor_every": {"monitor": "loglik", "epochs": 2},
    "monitor_ais_steps": {"monitor": "loglik"}, "monitor_ais_chains": {"monitor": "loglik"},
    "drbm_patience": {"epochs": 3}, "dbn_residual_weights": {"dbn_residual": True},
    "finetune_patience": {"finetune_val_fraction": 0.2, "finetune_epochs": 3},
    "finetune_momentum": {"finetune_epochs": 2}, "finetune_schedule": {"finetune_epochs": 2},
    "dbm_ais_steps": {"dbm_ais_chains": 5}, "average_from": {"epochs": 2},
    "lr_schedule": {"epochs": 2}, "k_schedule": {"epochs": 2},
    "mixture_size": {"dataset": "mog-1d", "binarize": "none", "visible": "gaussian"},
    "swap_target": {"method": "pt", "epochs": 2},
    "max_replicas": {"method": "ptt", "swap_target": 0.999, "lr": 0.5},
    "trajectory_ais": {"method": "pcd"},
    "trajectory_ais_steps": {"method": "pcd", "trajectory_ais": True},
    "trajectory_ais_chains": {"method": "pcd", "trajectory_ais": True},
    "trajectory_updates": {"save_trajectory": True},
}
#: Kind-specific alternatives (the generic one does not fit the kind's data).
KIND_ALT = {
    ("crbm", "visible"): "bernoulli", ("dbm", "visible"): "gaussian",
    ("dbn", "layers"): "64,7,4", ("dbm", "layers"): "16,6,4", ("rbm", "objective"): "beam",
    ("ising", "objective"): "ml", ("potts", "objective"): "ml", ("srbm", "objective"): "ml",
    ("potts", "binarize"): "threshold", ("crbm", "binarize"): "threshold",
    ("drbm", "method"): "pcd", ("dbn", "method"): "pcd", ("dbm", "method"): "cd",
    ("cf-rbm", "k"): 2, ("dbm", "lr_schedule"): "exponential",
    ("rank-rbm", "method"): "pcd",
    ("ising", "method"): "cd", ("potts", "method"): "cd",
    ("srbm", "method"): "cd", ("rbm", "method"): "pcd", ("conv-rbm", "method"): "pcd",
    ("dropout-rbm", "method"): "pcd", ("edropout-rbm", "method"): "pcd",
}
#: Options whose alternative is a file or folder of the tiny data.
PATH_ALT = {"dataset": {"cf-rbm": "ml-1m", "rank-rbm": "ml-1m", "drbm": "digits2.npz",
                        "dbn": "digits2.npz",
                        "crbm": "seq2.npy", "potts": "labels2.npy"},
            "test_data": {"crbm": "seq_test.npy", "potts": "labels2.npy"},
            "data_dir": {"cf-rbm": "ml2", "rank-rbm": "ml2"}}


def _flag_args(opts: dict) -> list[str]:
    out = []
    for k, v in opts.items():
        if isinstance(v, bool):
            out.append(kinds.flag(k) if v else "--no-" + k.replace("_", "-"))
        else:
            out += [kinds.flag(k), str(v)]
    return out


def _alternative(kind: str, option: str, d: Path) -> str | None:
    if option in PATH_ALT:
        name = PATH_ALT[option].get(kind, {"dataset": "grey2.npy",
                                           "test_data": "grey_test2.npy",
                                           "data_dir": "ml2"}[option])
        return name if name in ("digits", "ml-1m") else str(d / name)
    return KIND_ALT.get((kind, option), ALT.get(option))


def _fingerprint(folder: Path, checkpoints: list) -> str:
    """What a run produced: every file's name and content (times stripped), the number
    of checkpoint writes and the thread count; NOT the settings it records (the model
    file's train_config, MODEL.config.toml, a checkpoint's signature): an option that only
    changes those was accepted and ignored."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".toml":
            continue
        h.update(str(path.relative_to(folder)).encode())
        if path.suffix == ".json":
            text = json.loads(path.read_text())
            for r in text if isinstance(text, list) else []:
                for k in ("time", "wall_time"):
                    r.pop(k, None)
            h.update(json.dumps(text, sort_keys=True).encode())
        elif path.suffix == ".safetensors":
            tensors, header = read_tensors(path)
            for k in sorted(tensors):
                h.update(k.encode() + tensors[k].numpy().tobytes())
            for r in header.get("history", []):
                for k in ("time", "wall_time"):
                    r.pop(k, None)
            for key in ("wall_time", "train_config", "signature"):
                header.pop(key, None)
            h.update(json.dumps(header, sort_keys=True, default=str).encode())
        elif path.suffix == ".png":
            h.update(path.read_bytes())
    h.update(f"saves={len(checkpoints)} threads={torch.get_num_threads()}".encode())
    return h.hexdigest()


def _run(args: list[str], folder: Path, capsys, monkeypatch) -> tuple[int, str, str]:
    folder.mkdir(parents=True)
    saves: list = []
    real = Trainer.save_checkpoint
    monkeypatch.setattr(Trainer, "save_checkpoint",
                        lambda self, *a, **kw: saves.append(1) or real(self, *a, **kw))
    extra = [] if "--out" in args else ["--out", str(folder / "m.safetensors")]
    try:
        code = main(["train", *args, *extra, "--quiet"])
        err = capsys.readouterr().err
        return code, err, _fingerprint(folder, saves)
    finally:
        torch.set_num_threads(1)
        monkeypatch.setattr(Trainer, "save_checkpoint", real)


@pytest.mark.parametrize("kind", KINDS)
def test_every_option_is_honoured_or_refused(kind, data, tmp_path, capsys, monkeypatch):
    k = kinds.KINDS[kind]
    base = ["--model", kind, *base_args(kind, data)]
    # bfloat16 as on a CPU with native support, wherever this runs (elsewhere it would
    # fall back to float32 with a warning: tests/test_precision.py)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    ignored = []
    cache: dict[str, tuple] = {}
    for option in kinds.OPTIONS:
        if option in ("model", "tensorboard"):
            continue  # the kind itself; TensorBoard is checked in tests/test_tracking.py
        flag = kinds.flag(option)
        if option == "out":
            alt_args = ["--out", str(tmp_path / "elsewhere" / "m.safetensors")]
        elif option == "checkpoint_dir":
            alt_args = [flag, str(tmp_path / option / "alt" / "ck")]
        else:
            value = _alternative(kind, option, data)
            assert value is not None, option
            alt_args = _flag_args({option: value})
        if option not in k.reads:
            code, err, _ = _run([*base, *alt_args], tmp_path / option / "refused", capsys,
                                monkeypatch)
            assert code == 2 and kind in err and flag in err, (option, err)
            continue
        needs = {n: v for n, v in NEEDS.get(option, {}).items() if n in k.reads}
        key = json.dumps(needs, sort_keys=True)
        if key not in cache:
            cache[key] = _run([*base, *_flag_args(needs)], tmp_path / option / "base", capsys,
                              monkeypatch)
        b_code, b_err, b_print = cache[key]
        if b_code != 0:  # the prerequisite itself is refused for this kind: so is the option
            assert b_code == 2 and b_err.count("\n") == 1, (option, b_err)
            continue
        code, err, fingerprint = _run([*base, *_flag_args(needs), *alt_args],
                                      tmp_path / option / "alt", capsys, monkeypatch)
        if code == 2:
            assert err.startswith("boltzkit train: error:") and err.count("\n") == 1, \
                (option, err)
            continue
        assert code == 0, (option, err)
        if fingerprint == b_print:
            ignored.append(option)
    assert not ignored, f"--model {kind} accepted and ignored {ignored}"


# --------------------------------------------------------------------------- evaluate, sample
@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_and_sample_do_what_the_matrix_says(kind, data, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    code, err = train([kind, *base_args(kind, data)], model, capsys)
    assert code == 0, err
    header = read_tensors(model)[1]
    saved_kind = header["config"]["model"]
    data_args = {"crbm": ["--dataset", str(data / "seq_test.npy")],
                 "cf-rbm": ["--data-dir", str(data / "ml")],
                 "rank-rbm": ["--data-dir", str(data / "ml")],
                 "potts": ["--dataset", str(data / "labels.npy"), "--test-data",
                           str(data / "labels_test.npy"), "--binarize", "none"],
                 "drbm": ["--dataset", "digits", "--limit", "60"],
                 "dbn": ["--dataset", "digits", "--limit", "60"]}.get(
        kind, ["--dataset", str(data / "grey.npy"), "--test-data",
               str(data / "grey_test.npy")])
    code = main(["evaluate", str(model), *data_args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)
    code = main(["sample", str(model), "--n", "4", "--steps", "2", "--npy",
                 str(tmp_path / "s.npy")])
    err = capsys.readouterr().err
    if kinds.KINDS[saved_kind].sample is None:
        assert code == 0 and np.load(tmp_path / "s.npy").shape[0] == 4, err
    else:
        assert code == 2 and saved_kind in err, err
