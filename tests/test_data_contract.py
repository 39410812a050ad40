"""The data contract and a CLI that explains itself: the rows a new user met, one test each.

Data is never changed behind the user's back: a model file remembers how its data was
prepared and evaluate / score / reconstruct use that by default; non-binary data for
Bernoulli units is refused unless binarisation was asked for; NaN/inf is refused
everywhere.  Every failure is one line with exit code 2.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from boltzkit import __version__
from boltzkit.cli import main
from boltzkit.io import load_model, read_header, read_tensors, save_tensors


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    bits = (rng.random((60, 9)) < 0.4).astype(np.float32)
    np.save(tmp_path / "bits.npy", bits)
    np.save(tmp_path / "bits_test.npy", bits[:25])
    cont = rng.normal(5.0, 3.0, (80, 6)).astype(np.float32)
    np.save(tmp_path / "cont.npy", cont[:60])
    np.save(tmp_path / "cont_test.npy", cont[60:])
    np.save(tmp_path / "zero_three.npy", bits * 3)
    np.save(tmp_path / "pm1.npy", bits * 2 - 1)
    nan = bits.copy()
    nan[4, 2] = np.nan
    np.savetxt(tmp_path / "nan.csv", nan, delimiter=",")
    return tmp_path


def train(capsys, files, *args, out="m.safetensors"):
    return run(capsys, "train", *args, "--n-hidden", "4", "--epochs", "1", "--out",
               files / out, "--quiet")


@pytest.mark.parametrize("name", ["zero_three.npy", "pm1.npy", "cont.npy"])
def test_non_binary_data_for_bernoulli_units_is_refused_unless_binarised(name, files, capsys):
    code, _, err = train(capsys, files, "--dataset", files / name)
    assert code == 2 and "binary (0/1)" in err and err.count("\n") == 1
    assert train(capsys, files, "--dataset", files / name, "--binarize", "threshold")[0] == 0


def test_gaussian_units_train_on_the_values_as_they_are(files, capsys):
    code, _, err = train(capsys, files, "--dataset", files / "cont.npy", "--visible",
                         "gaussian", "--standardize")
    assert code == 0, err
    assert read_header(files / "m.safetensors")["train_config"]["binarize"] is None


def test_nan_is_refused_on_every_path(files, capsys):
    for binarize in ([], ["--binarize", "threshold"], ["--binarize", "none"]):
        code, _, err = train(capsys, files, "--dataset", files / "nan.csv", *binarize)
        assert code == 2 and "NaN" in err and "row 5" in err, err
    assert train(capsys, files, "--dataset", files / "bits.npy")[0] == 0
    code, _, err = run(capsys, "evaluate", files / "m.safetensors", "--dataset",
                       files / "nan.csv")
    assert code == 2 and "NaN" in err


def test_evaluate_uses_the_models_own_data_preparation(files, capsys):
    """A standardised Gaussian model on continuous data: evaluate neither thresholds the
    data nor forgets the standardiser (it used to threshold silently: LL -30.5, not -25.6)."""
    code, _, err = train(capsys, files, "--dataset", files / "cont.npy", "--test-data",
                         files / "cont_test.npy", "--visible", "gaussian", "--standardize")
    assert code == 0, err
    code, out, err = run(capsys, "evaluate", files / "m.safetensors", "--test-data",
                         files / "cont_test.npy", "--metrics", "loglik,recon", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["binarize"] == "none" and res["dataset"].endswith("cont_test.npy")
    from boltzkit.data import Standardizer
    from boltzkit.metrics import log_likelihood

    model = load_model(files / "m.safetensors")
    std = Standardizer.from_dict(read_header(files / "m.safetensors")["standardizer"])
    test = torch.from_numpy(np.load(files / "cont_test.npy"))
    ref = log_likelihood(model, std.transform(test), log_jacobian=std.log_jacobian)
    assert res["log_likelihood"] == pytest.approx(ref["log_likelihood"], rel=1e-6)


def test_evaluate_scores_the_file_it_is_given(files, capsys):
    assert train(capsys, files, "--dataset", files / "bits.npy")[0] == 0
    model = files / "m.safetensors"
    code, out, err = run(capsys, "evaluate", model, "--dataset", files / "bits_test.npy",
                         "--method", "exact", "--json")
    assert code == 0, err and json.loads(out)["n_samples"] == 25
    assert json.loads(out)["n_samples"] == 25
    code, _, err = run(capsys, "evaluate", model, "--dataset", files / "bits_test.npy",
                       "--split", "test")
    assert code == 2 and "--split" in err
    # --test-data alone: the model's own training file is the training side
    code, out, err = run(capsys, "evaluate", model, "--test-data", files / "bits_test.npy",
                         "--json")
    assert code == 0 and json.loads(out)["n_samples"] == 25, err
    # no --dataset at all: the model's own data set
    code, out, err = run(capsys, "evaluate", model, "--metrics", "recon", "--json")
    assert code == 0 and json.loads(out)["n_samples"] == 60, err
    # ... and, when it was trained with a held-out file, that file (as a named data set's
    # test split)
    assert train(capsys, files, "--dataset", files / "bits.npy", "--test-data",
                 files / "bits_test.npy")[0] == 0
    code, out, err = run(capsys, "evaluate", model, "--metrics", "recon", "--json")
    assert code == 0 and json.loads(out)["n_samples"] == 25, err
    assert json.loads(out)["dataset"] == str(files / "bits_test.npy")


def test_a_model_file_without_its_data_set_asks_for_one(files, capsys):
    from boltzkit import make_rbm
    from boltzkit.io import save_model

    save_model(make_rbm(9, 4, seed=0), files / "bare.safetensors")
    code, _, err = run(capsys, "evaluate", files / "bare.safetensors")
    assert code == 2 and "--dataset" in err and err.count("\n") == 1


def test_default_metrics_fit_the_model(files, capsys):
    assert train(capsys, files, "--dataset", files / "cont.npy", "--visible", "gaussian")[0] == 0
    code, out, err = run(capsys, "evaluate", files / "m.safetensors", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["metrics"] == ["loglik", "recon"] and "pseudo_likelihood" not in res


def test_sample_writes_states_and_means_behind_a_flag(files, capsys):
    assert train(capsys, files, "--dataset", files / "bits.npy")[0] == 0
    model = files / "m.safetensors"
    assert run(capsys, "sample", model, "--n", "8", "--steps", "3", "--npy",
               files / "s.npy")[0] == 0
    states = np.load(files / "s.npy")
    assert set(np.unique(states)) <= {0.0, 1.0}
    assert run(capsys, "sample", model, "--n", "8", "--steps", "3", "--mean", "--npy",
               files / "m.npy")[0] == 0
    means = np.load(files / "m.npy")
    assert ((means > 0) & (means < 1)).all()


def test_resume_problems_are_one_line(files, capsys, caplog):
    ck = files / "ck"
    args = ["--dataset", files / "bits.npy", "--checkpoint-dir", ck]
    assert run(capsys, "train", *args, "--n-hidden", "4", "--epochs", "8", "--out",
               files / "m.safetensors", "--quiet")[0] == 0
    # a checkpoint past the epochs asked for: refused, not silently written
    code, _, err = run(capsys, "train", *args, "--n-hidden", "4", "--epochs", "3", "--out",
                       files / "m3.safetensors", "--resume", "--quiet")
    assert code == 2 and "epoch 8" in err and not (files / "m3.safetensors").exists()
    # a checkpoint missing a tensor: a file error, not KeyError: 'rng'
    tensors, header = read_tensors(ck / "checkpoint.safetensors")
    del tensors["rng"]
    save_tensors(ck / "checkpoint.safetensors", tensors, header)
    code, _, err = run(capsys, "train", *args, "--n-hidden", "4", "--epochs", "9", "--out",
                       files / "m9.safetensors", "--resume", "--quiet")
    assert code == 2 and "checkpoint" in err and err.count("\n") == 1, err
    # an empty or mistyped checkpoint folder: a warning at the default level (WARNING)
    import logging

    with caplog.at_level(logging.WARNING, logger="boltzkit"):
        code, _, err = run(capsys, "train", "--dataset", files / "bits.npy",
                           "--checkpoint-dir", files / "typo", "--n-hidden", "4", "--epochs",
                           "1", "--out", files / "m1.safetensors", "--resume", "--quiet")
    assert code == 0, err
    assert any("no checkpoint to resume" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


@pytest.mark.parametrize("argv, expect", [
    (["train", "--epochs", "0"], "--epochs: must be >= 1"),
    (["train", "--threads", "0"], "--threads: must be >= 1"),
    (["train", "--method", "foo"], "invalid choice: 'foo'"),
    (["sample", "m.safetensors", "--beta", "-1"], "--beta: must be > 0"),
    (["train", "--chains", "5"], "--chains applies only with --method pcd"),
])
def test_bad_options_are_one_short_line(argv, expect, capsys):
    if argv[:2] == ["train", "--chains"]:
        argv = [*argv, "--method", "cd"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and expect in err and err.count("\n") == 1, err


def test_every_option_has_help_and_a_default(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    flags = re.findall(r"^  (--[a-z0-9-]+)", text, flags=re.M)
    assert len(flags) > 90
    blocks = re.split(r"\n  (?=--)", text)
    for block in blocks[1:]:
        if block.startswith(("--help", "--config", "--resume", "--quiet")):
            continue
        assert "(default:" in block, block.split("\n")[0]
    assert "ml-100k" in text
    for command in ("evaluate", "sample", "score", "reconstruct"):
        assert main([command, "--help"]) == 0
        sub = capsys.readouterr().out
        for block in re.split(r"\n  (?=--)", sub)[1:]:
            head = block.split("\n")[0]
            assert len(block.split()) > 1, f"{command} {head} has no help"


def test_top_level_help_and_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"boltzkit {__version__}"
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "``" not in text and ":class:" not in text
    for command in ("train", "evaluate", "sample", "reconstruct", "score", "info",
                    "download", "demo"):
        assert command in text


def test_threads_on_every_compute_command(files, capsys):
    assert train(capsys, files, "--dataset", files / "bits.npy")[0] == 0
    model = files / "m.safetensors"
    try:
        for argv in (["evaluate", model, "--metrics", "recon"],
                     ["score", model],
                     ["sample", model, "--n", "2", "--steps", "1", "--npy", files / "s.npy"],
                     ["reconstruct", model, "--out", files / "r.png", "--n", "3"]):
            torch.set_num_threads(1)
            code, _, err = run(capsys, *argv, "--threads", "2")
            assert code == 0 and torch.get_num_threads() == 2, (argv[0], err)
    finally:
        torch.set_num_threads(1)


def test_info_shows_the_files_names_and_the_kinds_settings(files, capsys):
    assert train(capsys, files, "--dataset", files / "bits.npy")[0] == 0
    code, out, err = run(capsys, "info", files / "m.safetensors", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert set(info["tensors"]) == {"weights", "visible_bias", "hidden_bias"}
    assert "conv_filters" not in info["train_config"]
    assert "drbm_alpha" not in info["train_config"]
    assert info["train_config"]["n_hidden"] == 4


def test_messages_speak_cli_with_one_based_rows(files, capsys):
    bad = np.load(files / "bits.npy")
    bad[6, 0] = 0.5
    np.save(files / "half.npy", bad)
    code, _, err = train(capsys, files, "--dataset", files / "half.npy")
    assert code == 2 and "--binarize" in err
    from boltzkit.units import SoftmaxUnits

    x = torch.tensor([[1.0, 0, 0, 1], [1.0, 1, 0, 0]])
    with pytest.raises(Exception, match=r"row 2 \(1-based\)"):
        SoftmaxUnits(4, 2).validate(x)
    code, _, err = run(capsys, "evaluate", files / "m.safetensors", "--dataset",
                       files / "bits.npy", "--test-data", files / "bits_test.npy",
                       "--split", "test")
    assert code == 2 and "test_path=" not in err
    assert not math.isnan(0.0)
