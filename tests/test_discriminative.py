"""Discriminative / hybrid RBM (kind "drbm"): exact p(y|x), gradients, training, files, errors.

The reference values are computed independently of the model's closed form:
p(y | x) and F(x, y) by enumerating every hidden state of a tiny model, and
the joint p(x, y) by enumerating every (x, y, h).
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from boltzkit import GaussianUnits
from boltzkit.cli import main
from boltzkit.errors import ConfigError, DataError
from boltzkit.io import load_model, read_header, save_model
from boltzkit.kinds import KINDS, model_class
from boltzkit.models.discriminative import DiscriminativeRBM, fit_drbm
from boltzkit.visual import write_training_plots

N_VIS, N_CLS, N_HID = 5, 3, 4



#: the bundled digits, thresholded to 0/1 for Bernoulli units
DIGITS = ["--dataset", "digits", "--binarize", "threshold"]

def _tiny(seed: int = 0, scale: float = 0.8, visible=None) -> DiscriminativeRBM:
    gen = torch.Generator().manual_seed(seed)
    model = DiscriminativeRBM(N_VIS, N_CLS, N_HID, visible=visible, generator=gen).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return model


def _bits(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=torch.float64)


def _energy(model: DiscriminativeRBM, x, y1, h) -> torch.Tensor:
    """E(x, y, h) written out from the definition (Bernoulli x and h), broadcasting."""
    W, U = model.connection.weights, model.label_connection.weights
    b, d, c = model.visible.bias, model.label.bias, model.hidden.bias
    return -(x @ b) - (y1 @ d) - (h @ c) - ((x @ W) * h).sum(-1) - ((y1 @ U) * h).sum(-1)


def _brute_log_joint_unnorm(model, x):
    """log sum_h exp(-E(x, y, h)) for every row of x and every class: (n, classes)."""
    hs = _bits(N_HID)
    eye = torch.eye(N_CLS, dtype=torch.float64)
    e = _energy(model, x[:, None, None, :], eye[None, :, None, :], hs[None, None, :, :])
    return torch.logsumexp(-e, 2)


@pytest.fixture(scope="module")
def digits_binary():
    """scikit-learn's 8x8 digits, thresholded at 8/16, shuffled: 1000 train, 797 test."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0 > 0.5).astype(np.float32)
    perm = np.random.RandomState(0).permutation(len(X))
    X, y = X[perm], y[perm]
    return X[:1000], y[:1000], X[1000:], y[1000:]


# --- exactness --------------------------------------------------------------------------
def test_registered_kind():
    assert KINDS["drbm"].model == "boltzkit.models.discriminative:DiscriminativeRBM"
    assert model_class("drbm") is DiscriminativeRBM


def test_posterior_and_free_energy_match_enumeration():
    model = _tiny(seed=1)
    x = _bits(N_VIS)  # every input
    brute = _brute_log_joint_unnorm(model, x)
    expected = brute - torch.logsumexp(brute, 1, keepdim=True)
    got = model.predict_log_proba(x, batch_size=7)  # several batches
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(model.predict_proba(x).sum(1), torch.ones(len(x), dtype=x.dtype))
    assert torch.equal(model.predict(x), expected.argmax(1))
    for cls in range(N_CLS):
        labels = torch.full((len(x),), cls)
        torch.testing.assert_close(model.free_energy(x, labels), -brute[:, cls],
                                   rtol=0, atol=1e-10)


def test_gaussian_visible_posterior_is_softmax_of_free_energies():
    """With any visible units, p(y|x) is the softmax of -F(x, y) over y (E_v cancels)."""
    model = _tiny(seed=2, visible=GaussianUnits(N_VIS, std=0.7).double())
    x = torch.randn(6, N_VIS, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    neg_f = torch.stack([-model.free_energy(x, torch.full((6,), c)) for c in range(N_CLS)], 1)
    torch.testing.assert_close(model.predict_log_proba(x), torch.log_softmax(neg_f, 1),
                               rtol=0, atol=1e-10)


def test_discriminative_gradient_matches_finite_differences():
    model = _tiny(seed=3, scale=0.5)
    gen = torch.Generator().manual_seed(4)
    x = (torch.rand(8, N_VIS, generator=gen) < 0.5).double()
    y = torch.randint(N_CLS, (8,), generator=gen)
    loss = model.discriminative_loss(x, y)
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    assert grads[0] is None  # the visible bias cannot change p(y|x)
    grads = (torch.zeros_like(model.visible.bias),) + grads[1:]
    eps = 1e-6
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads, strict=True):
            fd = torch.empty_like(p)
            for i in range(p.numel()):
                old = p.view(-1)[i].item()
                p.view(-1)[i] = old + eps
                up = model.discriminative_loss(x, y)
                p.view(-1)[i] = old - eps
                down = model.discriminative_loss(x, y)
                p.view(-1)[i] = old
                fd.view(-1)[i] = (up - down) / (2 * eps)
            torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-8)


def test_gibbs_chain_samples_the_exact_joint():
    """Many short joint Gibbs chains match p(x, y) from full enumeration."""
    model = _tiny(seed=5, scale=0.6)
    xs = _bits(N_VIS)
    brute = _brute_log_joint_unnorm(model, xs)  # (32, 3)
    exact = torch.softmax(brute.reshape(-1), 0).reshape(brute.shape)
    n = 40000
    gen = torch.Generator().manual_seed(6)
    x0 = (torch.rand(n, N_VIS, generator=gen, dtype=torch.float64) < 0.5).double()
    y0 = torch.randint(N_CLS, (n,), generator=gen)
    state = model.joint.gibbs(model.joint_state(x0, y0), steps=30, generator=gen)
    x, y1 = state[:, :N_VIS], state[:, N_VIS:]
    assert torch.all(y1.sum(1) == 1)
    code = (x @ (2.0 ** torch.arange(N_VIS - 1, -1, -1, dtype=torch.float64))).long()
    counts = torch.zeros(len(xs), N_CLS, dtype=torch.float64)
    counts.index_put_((code, y1.argmax(1)), torch.ones(n, dtype=torch.float64), accumulate=True)
    tv = 0.5 * float((counts / n - exact.detach()).abs().sum())
    # 96 cells: the expected TV of n=40000 exact draws is <= 0.4*sqrt(96/n) ~ 0.02.
    assert tv < 0.035, tv


def test_generative_gradient_is_exact_with_exact_negative_statistics():
    """Weighting every (x, y) state by p(x, y) as the negative phase gives the exact
    gradient of -mean log p(x, y) (checked against autograd on the enumerated log Z)."""
    model = _tiny(seed=7, scale=0.4)
    xs = _bits(N_VIS)
    eye = torch.eye(N_CLS, dtype=torch.float64)
    states_x = xs.repeat_interleave(N_CLS, 0)
    states_y = eye.repeat(len(xs), 1)
    gen = torch.Generator().manual_seed(8)
    x = (torch.rand(10, N_VIS, generator=gen) < 0.5).double()
    y = torch.randint(N_CLS, (10,), generator=gen)
    params = list(model.parameters())
    log_z = torch.logsumexp(-model.free_energy(states_x, states_y), 0)
    nll = (model.free_energy(x, y) + log_z).mean()
    exact = torch.autograd.grad(nll, params)
    with torch.no_grad():
        w = torch.softmax(-model.free_energy(states_x, states_y), 0)
    # generative_loss with particles drawn in proportion w: use its weighted form directly.
    surrogate = model.free_energy(x, y).mean() - (w * model.free_energy(states_x, states_y)).sum()
    approx = torch.autograd.grad(surrogate, params)
    for a, b in zip(exact, approx, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # the joint RBM's free energy is the model's F(x, y), so its surrogate is the same
    torch.testing.assert_close(model.joint.free_energy(model.joint_state(states_x, states_y)),
                               model.free_energy(states_x, states_y))



def test_reused_hidden_field_gives_the_same_chain_and_gradient():
    """Passing the data's precomputed hidden field (the objective does, to save a pass per
    batch) changes neither the CD chain on the joint nor the free energies."""
    from boltzkit.sampling import ContrastiveDivergence

    model = _tiny(seed=12, scale=0.5)
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(8, N_VIS, generator=gen) < 0.5).double()
    y = torch.randint(N_CLS, (8,), generator=gen)
    state = model.joint_state(x, y)
    field = model.hidden_field(x) + model.label_connection(model.one_hot(y))
    torch.testing.assert_close(field, model.joint.hidden_field(state), rtol=0, atol=1e-15)
    for k in (1, 3):
        a, _ = ContrastiveDivergence(k).negative(model.joint, state, field,
                                                 torch.Generator().manual_seed(5))
        b, _ = ContrastiveDivergence(k).negative(model.joint, state,
                                                 model.joint.hidden_field(state),
                                                 torch.Generator().manual_seed(5))
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(model.joint.free_energy(state, field=field),
                               model.joint.free_energy(state))
    torch.testing.assert_close(model.free_energy(x, y, model.hidden_field(x)),
                               model.free_energy(x, y))


def test_hidden_dropout_mask_removes_units_from_the_posterior():
    """A 0/1 hidden mask gives the posterior of the model without the dropped units, and
    an all-ones mask the unmasked posterior."""
    model = _tiny(seed=13)
    x = _bits(N_VIS)[:7]
    ones = torch.ones(len(x), N_HID, dtype=torch.float64)
    torch.testing.assert_close(model.class_logits(x, hidden_mask=ones), model.class_logits(x))
    keep = [0, 2]
    small = DiscriminativeRBM(N_VIS, N_CLS, len(keep)).double()
    with torch.no_grad():
        small.connection.weights.copy_(model.connection.weights[:, keep])
        small.label_connection.weights.copy_(model.label_connection.weights[:, keep])
        small.hidden.bias.copy_(model.hidden.bias[keep])
        small.visible.bias.copy_(model.visible.bias)
        small.label.bias.copy_(model.label.bias)
    mask = torch.zeros(len(x), N_HID, dtype=torch.float64)
    mask[:, keep] = 1.0
    torch.testing.assert_close(torch.log_softmax(model.class_logits(x, hidden_mask=mask), 1),
                               torch.log_softmax(small.class_logits(x), 1))
    y = torch.arange(len(x)) % N_CLS
    with torch.no_grad():
        assert float(model.discriminative_loss(x, y, hidden_mask=mask)) == pytest.approx(
            float(small.discriminative_loss(x, y)))

# --- training -----------------------------------------------------------------------------
# Chance error is 0.9; the bounds sit well above what these seeds reach (about 0.10, 0.13
# and 0.36 after 5 epochs) and far below chance, so they test "learns", not luck.
ADAM = {"optimizer": "adam", "momentum": 0.9, "lr": 0.01, "batch_size": 20}


def test_discriminative_training_lowers_error(digits_binary):
    X, y, Xt, yt = digits_binary
    model = DiscriminativeRBM(64, 10, 30, init_std=0.05,
                              generator=torch.Generator().manual_seed(0))
    err0, _ = model.error_rate(Xt, yt)
    hist = fit_drbm(model, X, y, epochs=5, seed=0, test=(Xt, yt), **ADAM)
    assert err0 > 0.7  # an untrained model is at chance level
    assert hist[-1]["test_error"] < 0.2, hist
    assert hist[-1]["train_nll"] < 0.5 * hist[0]["train_nll"]


def test_hybrid_training_early_stopping_restores_best(digits_binary):
    X, y, Xt, yt = digits_binary
    model = DiscriminativeRBM(64, 10, 30, init_std=0.05,
                              generator=torch.Generator().manual_seed(0))
    hist = fit_drbm(model, X[:800], y[:800], objective="hybrid", alpha=0.05, epochs=5, seed=0,
                    val=(X[800:], y[800:]), test=(Xt, yt), sampler="pcd", **ADAM)
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4, 5]
    best = min(hist, key=lambda r: (r["val_error"], r["val_nll"]))
    assert hist[-1]["best_epoch"] == best["epoch"]
    # the restored parameters are the best epoch's: their validation error is reproduced
    err, _ = model.error_rate(X[800:], y[800:])
    assert err == pytest.approx(best["val_error"])
    assert hist[-1]["best_test_error"] == best["test_error"] < 0.3


def test_dropout_training_learns_and_checks_its_rate(digits_binary):
    X, y, Xt, yt = digits_binary
    model = DiscriminativeRBM(64, 10, 30, init_std=0.05,
                              generator=torch.Generator().manual_seed(0))
    hist = fit_drbm(model, X, y, epochs=5, seed=0, test=(Xt, yt), dropout=0.3, **ADAM)
    assert hist[-1]["test_error"] < 0.25, hist
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="dropout"):
            fit_drbm(model, X, y, epochs=1, dropout=bad)
    gauss = DiscriminativeRBM(64, 10, 5, hidden=GaussianUnits(5))
    with pytest.raises(ConfigError, match="Bernoulli hidden"):
        fit_drbm(gauss, X, y, epochs=1, dropout=0.5)


def test_input_dropout_learns_spares_the_generative_term_and_checks_its_rate(digits_binary):
    X, y, Xt, yt = digits_binary

    def fresh():
        return DiscriminativeRBM(64, 10, 30, init_std=0.05,
                                 generator=torch.Generator().manual_seed(0))

    model, plain = fresh(), fresh()
    hist = fit_drbm(model, X, y, epochs=5, seed=0, test=(Xt, yt), input_dropout=0.2, **ADAM)
    fit_drbm(plain, X, y, epochs=5, seed=0, **ADAM)
    assert hist[-1]["test_error"] < 0.25, hist
    assert not torch.equal(model.connection.weights, plain.connection.weights)
    # the generative objective never sees the mask: same draws, same parameters
    gen_a, gen_b = fresh(), fresh()
    fit_drbm(gen_a, X, y, objective="generative", epochs=2, seed=0, input_dropout=0.5, **ADAM)
    fit_drbm(gen_b, X, y, objective="generative", epochs=2, seed=0, **ADAM)
    for a, b in zip(gen_a.parameters(), gen_b.parameters(), strict=True):
        assert torch.equal(a, b)
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="input_dropout"):
            fit_drbm(model, X, y, epochs=1, input_dropout=bad)


def test_generative_objective_learns_the_joint(digits_binary):
    """Pure CD-1 training on (x, y) also classifies far above chance."""
    X, y, Xt, yt = digits_binary
    model = DiscriminativeRBM(64, 10, 30, init_std=0.05,
                              generator=torch.Generator().manual_seed(0))
    hist = fit_drbm(model, X, y, objective="generative", epochs=5, batch_size=20, lr=0.05,
                    momentum=0.5, seed=0, test=(Xt, yt))
    assert hist[-1]["test_error"] < 0.6, hist


# --- files --------------------------------------------------------------------------------
@pytest.mark.parametrize("gaussian", [False, True])
def test_save_load_round_trip(tmp_path, gaussian):
    vis = GaussianUnits(N_VIS, std=0.5, learn_variance=True).double() if gaussian else None
    model = _tiny(seed=9, visible=vis)
    path = save_model(model, tmp_path / "drbm.safetensors")
    loaded = load_model(path)
    assert isinstance(loaded, DiscriminativeRBM) and loaded.config() == model.config()
    x = torch.rand(7, N_VIS, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    if not gaussian:
        x = (x < 0.5).double()
    torch.testing.assert_close(loaded.double().predict_proba(x), model.predict_proba(x))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
    assert {"weights", "label_weights", "visible_bias", "label_bias", "hidden_bias"} <= names


# --- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("labels, match", [
    (np.array([0, 1, 3, 0]), "outside 0..2"),
    (np.array([0, -1, 1, 0]), "outside 0..2"),
    (np.array([0, 1, 2]), "4 rows"),
    (np.array([0.0, 1.0, 2.0, 0.0]), "integer class indices"),
    (np.array([[0], [1], [2], [0]]), "1-D"),
])
def test_bad_labels_raise_data_error(labels, match):
    model = _tiny()
    x = torch.zeros(4, N_VIS, dtype=torch.float64)
    with pytest.raises(DataError, match=match):
        fit_drbm(model, x, labels, epochs=1)


def test_bad_inputs_and_options():
    model = _tiny()
    with pytest.raises(DataError, match="binary"):
        model.predict(torch.full((2, N_VIS), 0.5))
    with pytest.raises(DataError, match="columns"):
        model.predict(torch.zeros(2, N_VIS + 1))
    x, y = torch.zeros(4, N_VIS), np.zeros(4, dtype=int)
    with pytest.raises(ConfigError, match="objective"):
        fit_drbm(model, x, y, objective="bogus")
    with pytest.raises(ConfigError, match="method"):
        fit_drbm(model, x, y, objective="hybrid", sampler="bogus")
    with pytest.raises(ConfigError, match="n_classes"):
        DiscriminativeRBM(4, 1, 3)


def test_train_from_config_needs_labels(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 3), dtype=np.float32))
    code = main(["train", "--model", "drbm", "--dataset", str(tmp_path / "x.npy"),
                 "--n-hidden", "3", "--epochs", "1", "--batch-size", "2",
                 "--out", str(tmp_path / "m.safetensors"), "--quiet"])
    assert code == 2  # a plain array has no labels: one line, exit 2
    np.savez(tmp_path / "xy.npz", x=np.zeros((4, 3), dtype=np.float32),
             y=np.array([0, 1, -2, 1]))


def test_cli_trains_a_drbm_on_digits(tmp_path, capsys):
    out = tmp_path / "d.safetensors"
    code = main(["train", "--model", "drbm", *DIGITS,
                 "--n-hidden", "30",
                 "--epochs", "3", "--batch-size", "20", "--optimizer", "adam", "--lr", "0.003",
                 "--momentum", "0.9", "--init-std", "0.05", "--drbm-objective", "hybrid",
                 "--drbm-alpha", "0.01", "--drbm-val-size", "300", "--drbm-dropout", "0.2",
                 "--drbm-input-dropout", "0.1",
                 "--out", str(out), "--quiet"])
    assert code == 0
    capsys.readouterr()
    model = load_model(out)
    assert isinstance(model, DiscriminativeRBM) and model.n_hidden == 30
    history = json.loads(out.with_suffix(".history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert "best_epoch" in history[-1] and history[-1]["best_test_error"] < 0.3
    assert read_header(out)["train_config"]["drbm_objective"] == "hybrid"
    assert read_header(out)["train_config"]["drbm_dropout"] == 0.2
    assert read_header(out)["train_config"]["drbm_input_dropout"] == 0.1
    # what --plots draws (filters, samples from the joint, curves), with short chains here
    paths = write_training_plots(model, history, tmp_path / "d", steps=5)
    assert sorted(p.name for p in paths) == ["d.curves.png", "d.samples.png", "d.weights.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_class_conditional_samples_keep_their_labels():
    model = _tiny(seed=11)
    gen = torch.Generator().manual_seed(0)
    x = model.sample(6, steps=3, generator=gen, labels=[0, 1, 2, 0, 1, 2])
    assert x.shape == (6, N_VIS) and bool(((x > 0) & (x < 1)).all())  # means, not states
    x = model.sample(4, steps=2, generator=gen, return_mean=False)
    assert bool(((x == 0) | (x == 1)).all())
    with pytest.raises(DataError, match="4 rows"):
        model.sample(4, steps=1, labels=[0, 1])


@pytest.mark.parametrize("name", ["drbm-mnist.toml", "hybrid-drbm-mnist.toml"])
def test_shipped_drbm_configs_parse(name):
    from pathlib import Path

    from boltzkit.cli import load_config_file

    cfg = load_config_file(Path(__file__).resolve().parents[1] / "examples" / "configs" / name)
    assert cfg["model"] == "drbm" and cfg["drbm_objective"] in ("discriminative", "hybrid")


def test_averaging_scores_and_keeps_the_mean_without_changing_the_trajectory(digits_binary):
    X, y, Xt, yt = digits_binary

    def run(average_from, val=None, steps=None):
        model = DiscriminativeRBM(64, 10, 30, init_std=0.05,
                                  generator=torch.Generator().manual_seed(0))
        if steps is not None:  # record the live parameters after every step of epochs 3-4
            params = list(model.parameters())
            orig = torch.optim.Adam.step

            def step(self, *a, **kw):
                out = orig(self, *a, **kw)
                if len(hist_live) >= 2:
                    steps.append([p.detach().clone() for p in params])
                return out

            hist_live: list = []
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(torch.optim.Adam, "step", step)
                hist = fit_drbm(model, X, y, epochs=4, seed=0, val=val,
                                average_from=average_from, callback=hist_live.append, **ADAM)
        else:
            hist = fit_drbm(model, X, y, epochs=4, seed=0, val=val,
                            average_from=average_from, **ADAM)
        return model, hist

    seen: list = []
    plain, hist_plain = run(0, steps=seen)
    assert len(seen) == 2 * 50  # 1000 rows, batch 20
    mean = [torch.stack(ps).mean(0) for ps in zip(*seen, strict=True)]
    averaged, hist_avg = run(3)
    for p, m in zip(averaged.parameters(), mean, strict=True):
        torch.testing.assert_close(p.detach(), m, rtol=2e-6, atol=2e-6)
    # the mean is not the last iterate (the visible biases get no discriminative gradient)
    assert any(not torch.allclose(m, last) for m, last in zip(mean, seen[-1], strict=True))
    # the same trajectory: identical training losses; the records mark the averaged epochs
    assert [r["train_loss"] for r in hist_avg] == [r["train_loss"] for r in hist_plain]
    assert [r.get("averaged_steps") for r in hist_avg] == [None, None, 50, 100]
    # with a validation set the scores are the averaged model's, and so is the kept best
    kept, hist = run(3, val=(Xt, yt))
    best = min(hist, key=lambda r: (r["val_error"], r["val_nll"]))
    err, _ = kept.error_rate(Xt, yt)
    assert err == pytest.approx(best["val_error"])
    if best["epoch"] == 4:
        for p, m in zip(kept.parameters(), mean, strict=True):
            torch.testing.assert_close(p.detach(), m, rtol=2e-6, atol=2e-6)
    with pytest.raises(ConfigError, match="average_from"):
        fit_drbm(kept, X, y, epochs=2, average_from=3)
