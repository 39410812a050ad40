"""examples/grey_mnist.py and its four shipped configs run end to end at a tiny size.

Needs the MNIST IDX files ($BOLTZKIT_DATA or ../shared/data beside the repository);
skipped without them.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
CONFIGS = ("gaussian-rbm", "gaussian-lv-rbm", "gaussian-relu-rbm", "sigmoid-rbm")


def test_grey_mnist_example_trains_and_scores_all_four_models(tmp_path, mnist_root,
                                                              monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    sys.modules.pop("grey_mnist", None)
    mod = importlib.import_module("grey_mnist")
    rows = mod.main(["--data-dir", str(mnist_root), "--limit", "300", "--test-limit", "100",
                     "--n-hidden", "8", "--epochs", "1", "--ais-chains", "8",
                     "--ais-steps", "60", "--n-chains", "60", "--sample-steps", "5",
                     "--pca", "5", "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "log-density of the [0,1] pixel values" in out
    assert [r["model"] for r in rows] == list(CONFIGS)
    saved = json.loads((tmp_path / "grey_mnist.json").read_text())
    assert [r["model"] for r in saved] == list(CONFIGS)
    for r in rows:
        assert r["nan_or_inf"] is False
        assert math.isfinite(r["log_likelihood"]) and r["ais_ess"] > 0
        assert r["log_z_lower"] <= r["log_z"] or r["log_z_lower"] is None
        assert r["ais_log_z_reverse"] is not None
        assert (tmp_path / f"{r['model']}.samples.png").stat().st_size > 0
        assert math.isfinite(r["knn_forward_kl"]) and math.isfinite(r["knn_reverse_kl"])
        assert "finite_at_check_lr" in r
        # the standardised models carry the log-Jacobian, the sigmoid one works on pixels
        assert (r["log_jacobian"] != 0.0) == r["standardized"]
    relu = rows[2]
    assert relu["sigma_max"] <= relu["max_singular_value"] + 1e-6


@pytest.mark.parametrize("name", CONFIGS)
def test_grey_mnist_configs_train_from_the_cli(name, tmp_path, mnist_root, capsys):
    from boltzkit.cli import main
    from boltzkit.constraints import spectral_norm
    from boltzkit.io import load_model, read_tensors

    out = tmp_path / "m.safetensors"
    code = main(["train", "--config", str(EXAMPLES / "configs" / f"{name}-mnist.toml"),
                 "--data-dir", str(mnist_root), "--limit", "200", "--epochs", "1",
                 "--n-hidden", "8", "--out", str(out), "--quiet"])
    assert code == 0
    capsys.readouterr()
    model = load_model(out)
    assert model.n_visible == 784 and model.n_hidden == 8 and model.parameters_finite()
    _, header = read_tensors(out)
    standardised = name != "sigmoid-rbm"
    assert ("standardizer" in header) == standardised
    if standardised:
        st = header["standardizer"]
        assert len(st["mean"]) == 784 and min(st["scale"]) >= st["eps"] == 0.05
        assert math.isfinite(st["log_jacobian"])
    if name == "gaussian-relu-rbm":
        assert spectral_norm(model.connection.weights) <= 0.99 + 1e-6


def test_standardize_is_refused_for_non_gaussian_visibles(tmp_path, mnist_root, capsys):
    from boltzkit.cli import main

    code = main(["train", "--config", str(EXAMPLES / "configs" / "sigmoid-rbm-mnist.toml"),
                 "--data-dir", str(mnist_root), "--limit", "50", "--epochs", "1",
                 "--n-hidden", "4", "--standardize", "--out", str(tmp_path / "m.safetensors"),
                 "--quiet"])
    assert code != 0
    assert "standardize" in capsys.readouterr().err


def test_evaluate_score_sample_apply_the_stored_standardizer(tmp_path, mnist_root, capsys):
    """A --standardize model is scored, sampled and reconstructed in the data's own units."""
    import numpy as np
    import torch

    from boltzkit.cli import main
    from boltzkit.data import Standardizer, load_dataset
    from boltzkit.io import load_model, read_header
    from boltzkit.metrics import log_likelihood

    out = tmp_path / "g.safetensors"
    assert main(["train", "--config", str(EXAMPLES / "configs" / "gaussian-rbm-mnist.toml"),
                 "--data-dir", str(mnist_root), "--limit", "200", "--epochs", "1",
                 "--n-hidden", "6", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    common = ["--dataset", "mnist", "--data-dir", str(mnist_root), "--binarize", "none",
              "--limit", "40"]
    assert main(["evaluate", str(out), *common, "--metrics", "loglik", "--method", "exact",
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    std = Standardizer.from_dict(read_header(out)["standardizer"])
    model = load_model(out)
    x, _ = load_dataset("mnist", split="test", binarize="none", data_dir=mnist_root, limit=40)
    want = log_likelihood(model, std.transform(x), method="exact")["log_likelihood"]
    assert got["log_jacobian"] == pytest.approx(std.log_jacobian)
    assert got["log_likelihood"] == pytest.approx(want + std.log_jacobian, rel=1e-9, abs=1e-6)
    assert main(["score", str(out), *common, "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["free_energy"]
    direct = model.free_energy(std.transform(x)).tolist()
    assert np.allclose(scores, direct, rtol=1e-5, atol=1e-3)
    npy = tmp_path / "s.npy"
    assert main(["sample", str(out), "--n", "8", "--steps", "5", "--mean", "--init", "noise",
                 "--npy", str(npy)]) == 0
    capsys.readouterr()
    samples = torch.from_numpy(np.load(npy))
    direct = model.sample(8, steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(samples, std.inverse_transform(direct), atol=1e-5)
    assert not torch.allclose(samples, direct, atol=1e-2)  # the map did something
