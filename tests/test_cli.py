"""The command line end to end, on the bundled digits (offline, seconds)."""

from __future__ import annotations

import json
import tomllib

import pytest
import torch

from boltzkit.cli import main
from boltzkit.io import load_model, read_header

#: the bundled digits, thresholded to 0/1 for Bernoulli units
DIGITS = ["--dataset", "digits", "--binarize", "threshold"]

def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def trained(tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    code, out, _ = run(capsys, "train", *DIGITS, "--n-hidden", "12", "--epochs", "2",
                       "--batch-size", "50", "--out", str(model), "--quiet")
    assert code == 0
    return model


def test_train_writes_model_config_and_history(trained, capsys):
    header = read_header(trained)
    assert header["config"]["hidden"]["n"] == 12
    cfg = tomllib.loads(trained.with_suffix(".config.toml").read_text())
    assert cfg["n_hidden"] == 12 and cfg["epochs"] == 2 and cfg["dataset"] == "digits"
    history = json.loads(trained.with_suffix(".history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]


def test_config_file_then_flags_override(tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text('dataset = "digits"\nbinarize = "threshold"\nn-hidden = 9\nepochs = 1\n'
                    'method = "cd"\nk = 2\n')
    out = tmp_path / "m.safetensors"
    code, _, _ = run(capsys, "train", "--config", str(conf), "--n-hidden", "7", "--out", str(out),
                     "--quiet")
    assert code == 0
    cfg = tomllib.loads(out.with_suffix(".config.toml").read_text())
    assert cfg["n_hidden"] == 7 and cfg["k"] == 2 and cfg["method"] == "cd"
    # the saved resolved config reruns the same job
    out2 = tmp_path / "m2.safetensors"
    code, _, _ = run(capsys, "train", "--config", str(out.with_suffix(".config.toml")), "--out",
                     str(out2), "--quiet")
    assert code == 0
    a, b = load_model(out), load_model(out2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                   b.state_dict().values(), strict=True))


def test_resume_matches_uninterrupted(tmp_path, capsys):
    common = ["train", *DIGITS, "--n-hidden", "10", "--batch-size", "50",
              "--method", "pcd", "--quiet"]
    full = tmp_path / "full.safetensors"
    assert run(capsys, *common, "--epochs", "3", "--out", str(full))[0] == 0
    part = tmp_path / "part.safetensors"
    ck = tmp_path / "ck"
    assert run(capsys, *common, "--epochs", "1", "--out", str(part), "--checkpoint-dir",
               str(ck))[0] == 0
    assert run(capsys, *common, "--epochs", "3", "--out", str(part), "--checkpoint-dir", str(ck),
               "--resume")[0] == 0
    a, b = load_model(full), load_model(part)
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    # resuming with a different learning rate is refused with a clear message
    code, _, err = run(capsys, *common, "--epochs", "4", "--lr", "0.5", "--out", str(part),
                       "--checkpoint-dir", str(ck), "--resume")
    assert code == 2 and "settings differ" in err


def test_sample_reconstruct_score_info(trained, tmp_path, capsys):
    png, npy = tmp_path / "s.png", tmp_path / "s.npy"
    code, out, _ = run(capsys, "sample", str(trained), "--n", "16", "--steps", "20", "--out",
                       str(png), "--npy", str(npy))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import numpy as np

    assert np.load(npy).shape == (16, 64)
    rec = tmp_path / "r.png"
    code, out, _ = run(capsys, "reconstruct", str(trained), *DIGITS, "--out",
                       str(rec))
    assert code == 0 and json.loads(out)["recon_error"] >= 0
    code, out, _ = run(capsys, "score", str(trained), *DIGITS, "--json")
    scores = json.loads(out)
    assert code == 0 and scores["n_samples"] == len(scores["free_energy"]) > 300
    code, out, _ = run(capsys, "info", str(trained), "--json")
    assert code == 0 and json.loads(out)["n_parameters"] == 64 * 12 + 64 + 12


def test_evaluate_json_exact(trained, capsys):
    code, out, _ = run(capsys, "evaluate", str(trained), *DIGITS, "--metrics",
                       "loglik,pl,recon", "--json")
    assert code == 0
    res = json.loads(out)
    assert res["method"] == "exact"
    for key in ("log_likelihood", "log_z", "log_z_lower", "log_z_upper", "n_samples"):
        assert key in res
    assert res["log_likelihood"] < 0
    assert res["log_z_lower"] <= res["log_z"] <= res["log_z_upper"]


def test_evaluate_ais_with_reverse_check(trained, capsys):
    code, out, _ = run(capsys, "evaluate", str(trained), *DIGITS, "--metrics",
                       "loglik", "--method", "ais", "--ais-chains", "20", "--ais-steps", "300",
                       "--ais-reverse", "--json")
    assert code == 0
    res = json.loads(out)
    assert res["method"] == "ais" and res["ais_chains"] == 20 and res["ais_steps"] == 300
    assert isinstance(res["ais_log_z_reverse"], float)
    assert isinstance(res["ais_reliable"], bool)


@pytest.mark.parametrize("argv, needle", [
    (["train", "--dataset", "nosuchset"], "unknown data set"),
    (["train", "--dataset", "mnist", "--data-dir", "/nonexistent/dir"], "BOLTZKIT_DATA"),
    (["train", *DIGITS, "--visible", "potato"], "invalid choice: 'potato'"),
    (["train", *DIGITS, "--lr", "-1"], "learning rate"),
    (["train", *DIGITS, "--device", "cuda:7"], "cuda"),
    (["train", "--dataset", "digits", "--binarize", "none", "--epochs", "1"], "binary"),
])
def test_bad_input_clear_errors(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("BOLTZKIT_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv, "--quiet")
    assert code == 2
    assert needle.lower() in err.lower()
    assert "Traceback" not in err


def test_unknown_toml_key_and_bad_model_files(tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text("n_hiden = 5\n")
    code, _, err = run(capsys, "train", "--config", str(conf))
    assert code == 2 and "n_hiden" in err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model at all")
    for cmd in ("info", "sample"):
        code, _, err = run(capsys, cmd, str(junk), "--npy", str(tmp_path / "x.npy")) if (
            cmd == "sample") else run(capsys, cmd, str(junk))
        assert code == 2 and "corrupted" in err


def test_demo_runs_offline(tmp_path, capsys):
    code, out, _ = run(capsys, "demo", "--out-dir", str(tmp_path / "demo"), "--epochs", "2",
                       "--quiet")
    assert code == 0
    summary = json.loads(out)
    assert summary["method"] == "exact"
    for name in ("digits-rbm.safetensors", "weights.png", "samples.png", "curves.png",
                 "reconstructions.png"):
        assert (tmp_path / "demo" / name).is_file()


def test_shipped_configs_are_valid():
    from pathlib import Path

    from boltzkit import kinds
    from boltzkit.cli import load_config_file

    configs = sorted((Path(__file__).resolve().parents[1] / "examples" / "configs").glob("*.toml"))
    assert configs, "examples/configs/*.toml missing"
    for path in configs:
        given = load_config_file(path)
        cfg = {**kinds.defaults(given.get("model", "rbm")), **given}
        kinds.check_given(cfg, set(given))  # every key is one its kind uses: nothing ignored


def test_every_subcommand_prints_its_help(capsys):
    """argparse formats help strings with %: a stray % in any option's help breaks --help."""
    from boltzkit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert "train" in sub.choices
    for name in [None, *sub.choices]:
        assert main(["--help"] if name is None else [name, "--help"]) == 0, name
        assert "usage:" in capsys.readouterr().out
