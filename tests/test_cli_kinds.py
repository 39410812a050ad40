"""The CLI and evaluate_model across model kinds (DRBM, DBN, DBM next to the plain RBM)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from boltzkit import ConfigError, DataError, make_rbm
from boltzkit.cli import main
from boltzkit.io import save_model
from boltzkit.metrics import evaluate_model
from boltzkit.models.discriminative import DiscriminativeRBM
from boltzkit.stacks.dbm import dbm_log_likelihood_bound, make_dbm
from boltzkit.stacks.dbn import make_dbn


def _data(n=60, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    p = torch.where(y[:, None] == 1, 0.85, 0.15).expand(n, d)
    return (torch.rand(n, d, generator=g) < p).float(), y


def test_classifier_error_and_nll_match_predict_proba():
    x, y = _data()
    model = DiscriminativeRBM(8, 2, 5)
    res = evaluate_model(model, x, labels=y)
    proba = model.predict_proba(x).double()
    assert res["test_error"] == pytest.approx(float((proba.argmax(1) != y).double().mean()))
    assert res["nll"] == pytest.approx(float(-proba[torch.arange(len(y)), y].log().mean()))
    assert res["metrics"] == ["error"]
    with pytest.raises(ConfigError, match="needs labels"):
        evaluate_model(model, x)
    with pytest.raises(ConfigError, match="do not apply"):
        evaluate_model(model, x, labels=y, metrics=["loglik"])
    with pytest.raises(DataError, match="entries"):
        evaluate_model(model, x, labels=y[:-1])


def test_dbm_bound_is_the_stacks_bound_and_exact_for_tiny_models():
    x, _ = _data()
    dbm = make_dbm("8,4,3", seed=0)
    res = evaluate_model(dbm, x)
    ref = dbm_log_likelihood_bound(dbm, x)
    assert res["method"] == "exact" == ref["method"]
    assert res["log_likelihood_lower_bound"] == pytest.approx(ref["log_likelihood_lower_bound"])
    assert res["log_likelihood_lower_bound"] < 0


def test_dbn_features_beat_chance_and_rbm_path_is_unchanged():
    x, y = _data(n=120)
    dbn = make_dbn([8, 6, 4], seed=0)
    dbn.fit(x, settings={"epochs": 5, "batch_size": 20, "lr": 0.1})
    res = evaluate_model(dbn, x[60:], labels=y[60:], train_data=x[:60], train_labels=y[:60])
    assert res["features_accuracy"] > 0.7  # two well-separated prototypes
    rbm = make_rbm(8, 4, seed=0)
    res = evaluate_model(rbm, x)
    assert res["metrics"] == ["loglik", "pl", "recon"] and res["method"] == "exact"


def test_cli_evaluate_dispatches_on_the_model(tmp_path, capsys):
    x, y = _data()
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    dbm_path = tmp_path / "dbm.safetensors"
    save_model(make_dbm("8,4,3", seed=0), dbm_path)
    capsys.readouterr()
    data = ["--dataset", str(tmp_path / "x.npy"), "--test-data", str(tmp_path / "x.npy")]
    assert main(["evaluate", str(dbm_path), *data, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "exact" and "log_likelihood_lower_bound" in out
    assert main(["evaluate", str(dbm_path), *data, "--metrics", "error"]) == 2
    assert "do not apply" in capsys.readouterr().err


def test_cli_sample_and_device_errors_are_clear_for_every_kind(tmp_path, capsys):
    x, y = _data()
    np.save(tmp_path / "x.npy", x.numpy())
    clf_path = tmp_path / "drbm.safetensors"
    save_model(DiscriminativeRBM(8, 2, 5), clf_path)
    dbm_path = tmp_path / "dbm.safetensors"
    save_model(make_dbm("8,4,3", seed=0), dbm_path)
    capsys.readouterr()
    # a DBM samples, at any inverse temperature
    assert main(["sample", str(dbm_path), "--n", "4", "--steps", "3", "--npy",
                 str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (4, 8)
    assert main(["sample", str(dbm_path), "--n", "4", "--beta", "0.5", "--npy",
                 str(tmp_path / "s.npy")]) == 0
    clf_path = tmp_path / "dbn-clf.safetensors"
    save_model(make_dbn([8, 6], seed=0).to_classifier(2), clf_path)
    assert main(["sample", str(clf_path), "--n", "4", "--npy", str(tmp_path / "s.npy")]) == 2
    assert "not generative" in capsys.readouterr().err
    if not torch.cuda.is_available():
        for kind in ("drbm", "dbm", "ising"):
            assert main(["train", "--model", kind, "--dataset", str(tmp_path / "x.npy"),
                         "--device", "cuda", "--out", str(tmp_path / "k.safetensors")]) == 2
            assert "no CUDA GPU" in capsys.readouterr().err
