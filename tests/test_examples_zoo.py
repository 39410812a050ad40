"""The model-zoo and deep-model examples run end to end at a tiny size.

Examples that need MNIST read it from ``$BOLTZKIT_DATA`` or ``../shared/data`` beside
the repository and are skipped without it; the rest run on generated data or the
bundled 8x8 digits.  Each test checks the figures the example exists to print.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def _examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def _module(name: str):
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def test_ising_recovery_fits_couplings_by_pl_and_pcd(tmp_path):
    out = tmp_path / "ising.json"
    res = _module("ising_recovery").main(sizes=(300,), side=3, n_test=500, pcd_updates=100,
                                         out=str(out))
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    text = json.dumps(res)
    assert "pl" in text and "pcd" in text


def test_srbm_digits_reports_exact_and_ais_likelihoods(tmp_path):
    res = _module("srbm_digits").main(epochs=1, hidden=6, ais_steps=200, check_steps=200,
                                      ais_chains=20, out=str(tmp_path / "srbm.json"))
    assert -64 < res["rbm_test_ll_exact"] < 0  # 64 binary pixels: above -64 log 2 ... and < 0
    # the AIS check on the plain RBM written as a semi-restricted one: exact log Z inside
    lo, hi = res["check_log_z_interval"]
    assert lo - 1.0 <= res["check_log_z_exact"] <= hi + 1.0


def test_conv_rbm_mnist_scores_pooled_features(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("BOLTZKIT_DATA", str(mnist_root))  # the example reads it from there
    res = _module("conv_rbm_mnist").main([str(tmp_path), "--filters", "4", "--filter-size",
                                          "7", "--train-size", "300", "--epochs", "1",
                                          "--clf-train", "300", "--test-size", "200"])
    assert (tmp_path / "filters.png").stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())
    accs = [v for k, v in res.items() if "acc" in k and isinstance(v, float)]
    assert accs and all(0.1 < a <= 1.0 for a in accs)  # better than chance on 10 classes


def test_dropout_features_mnist_compares_three_models(mnist_root):
    rows = _module("dropout_features_mnist").main(["--data-dir", str(mnist_root), "--n-hidden",
                                                   "16", "--epochs", "1", "--limit", "500",
                                                   "--max-iter", "50"])
    assert [r["model"] for r in rows] == ["rbm", "dropout-rbm", "edropout-rbm"]
    assert all(0.1 < r["accuracy"] <= 1.0 for r in rows)


def test_drbm_mnist_early_stops_on_validation(tmp_path, mnist_root):
    res = _module("drbm_mnist").main(["--data-dir", str(mnist_root), "--n-hidden", "20",
                                      "--epochs", "1", "--limit", "1200", "--val-size", "200",
                                      "--out-dir", str(tmp_path)])
    assert res["epochs_run"] == 1 and res["best_epoch"] == 1
    assert 0.0 <= res["test_error"] < 0.9  # 10 classes: chance is 0.9
    assert any(p.suffix == ".png" for p in tmp_path.iterdir())


def test_dbm_mnist_trains_and_bounds_the_likelihood(tmp_path, mnist_root, monkeypatch, capsys):
    out = tmp_path / "dbm.safetensors"
    monkeypatch.setattr(sys, "argv", ["dbm_mnist.py", "--layers", "784,12,8", "--data-dir",
                                      str(mnist_root), "--limit", "300", "--test-limit", "100",
                                      "--pretrain-epochs", "1", "--epochs", "1", "--chains", "20",
                                      "--ais-chains", "10", "--ais-steps", "100", "--out",
                                      str(out)])
    _module("dbm_mnist").main()
    assert out.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "after pretraining" in printed and "test bound" in printed
    res = json.loads(printed[printed.index("{"):printed.rindex("}") + 1])
    assert res["log_likelihood_lower_bound"] < 0 and res["method"] in ("exact", "ais")
