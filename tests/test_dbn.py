"""Deep belief networks: greedy training, the variational bound, classifiers, files, errors.

Every model is tiny (at most 8 units a layer) so likelihoods and the DBN's
variational bound are computed exactly by enumerating the hidden states.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from boltzkit import RBM, BernoulliUnits, GaussianUnits, ReLUUnits
from boltzkit.errors import ConfigError, DataError
from boltzkit.io import load_model, save_model
from boltzkit.metrics import exact_log_z
from boltzkit.stacks.dbn import (
    DBN,
    DBNClassifier,
    fine_tune,
    layer_settings,
    make_dbn,
    parse_layer_sizes,
)

torch.set_num_threads(1)


# --- data and exact quantities ------------------------------------------------------
def _prototype_data(n=300, d=10, classes=3, flip=0.05, seed=0):
    """Noisy copies of binary prototypes (labelled): structure an RBM and a classifier learn."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(classes, d, generator=g) < 0.5).double()
    y = torch.randint(classes, (n,), generator=g)
    x = protos[y]
    noise = torch.rand(n, d, generator=g) < flip
    return torch.where(noise, 1 - x, x), y


def _states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=torch.float64)


def _exact_ll(rbm: RBM, data: torch.Tensor) -> float:
    log_z = exact_log_z(rbm)
    log_z = float(getattr(log_z, "log_z", log_z))
    with torch.no_grad():
        return float((-rbm.free_energy(data) - log_z).mean())


def _log_p_top(rbm: RBM, h: torch.Tensor) -> torch.Tensor:
    """Exact log p(h) of binary states h under an RBM (by enumerating its visible states)."""
    states = _states(rbm.n_visible)
    with torch.no_grad():
        log_z = torch.logsumexp(-rbm.free_energy(states), 0)
        return -rbm.free_energy(h) - log_z


def _exact_bound(dbn: DBN, v: torch.Tensor) -> torch.Tensor:
    """The two-layer DBN's variational bound per row, with q(h | v) = p_1(h | v):

    log p(v) >= sum_h q(h|v) [log p_2(h) + log p_1(v | h) - log q(h|v)].
    """
    r1, r2 = dbn.layers
    hs = _states(r1.n_hidden)  # (S, H)
    with torch.no_grad():
        q = r1.hidden_mean(v)  # (N, H)
        log_q = hs @ torch.log(q).T + (1 - hs) @ torch.log1p(-q).T  # (S, N)
        a = r1.visible.bias + r1.visible_field(hs)  # (S, V)
        log_pv_h = v @ a.T - F.softplus(a).sum(-1)  # (N, S)
        log_p2 = _log_p_top(r2, hs)  # (S,)
        inner = log_p2[:, None] + log_pv_h.T - log_q
        return (log_q.exp() * inner).sum(0)


def _exact_dbn_ll(dbn: DBN, v: torch.Tensor) -> torch.Tensor:
    """Exact log p(v) of a two-layer DBN: log sum_h p_2(h) p_1(v | h)."""
    r1, r2 = dbn.layers
    hs = _states(r1.n_hidden)
    with torch.no_grad():
        a = r1.visible.bias + r1.visible_field(hs)
        log_pv_h = v @ a.T - F.softplus(a).sum(-1)  # (N, S)
        return torch.logsumexp(log_pv_h + _log_p_top(r2, hs)[None, :], 1)


# --- greedy training ----------------------------------------------------------------
def test_greedy_training_raises_every_layers_likelihood():
    x, _ = _prototype_data()
    dbn = make_dbn([10, 6, 4], seed=1).double()
    ll0_before = _exact_ll(dbn.layers[0], x)
    settings = {"epochs": 15, "lr": 0.1, "momentum": 0.5, "batch_size": 20}
    dbn.fit(x, settings, train_layers=[0])
    ll0_after = _exact_ll(dbn.layers[0], x)
    # Layer 1's model of layer 0's hidden states, E_q(h|v)[log p_2(h)], by enumeration.
    hs = _states(6)

    def top_term():
        with torch.no_grad():
            q = dbn.layers[0].hidden_mean(x)
            log_q = hs @ torch.log(q).T + (1 - hs) @ torch.log1p(-q).T
            return float((log_q.exp() * _log_p_top(dbn.layers[1], hs)[:, None]).sum(0).mean())

    # An untrained layer 1 is close to uniform over 2^6 states: about -6 log 2.
    before = top_term()
    assert before == pytest.approx(-6 * math.log(2), abs=0.5)
    dbn.fit(x, settings, train_layers=[1])
    after = top_term()
    # Gibbs' inequality: E_q log p_2(h) <= -H(Q) for the aggregate posterior Q = mean_v q(h|v).
    with torch.no_grad():
        q = dbn.layers[0].hidden_mean(x)
        agg = (hs @ torch.log(q).T + (1 - hs) @ torch.log1p(-q).T).exp().mean(1)
        ceiling = float((agg * agg.log()).sum())
    assert ll0_after > ll0_before + 2.0
    assert before < after <= ceiling + 1e-9
    assert after - before > 0.5 * (ceiling - before)  # closes most of the gap


def test_greedy_training_feeds_hidden_means_upwards():
    x, _ = _prototype_data(n=120)
    dbn = make_dbn([10, 5, 3], seed=2).double()
    seen = []
    # Zero epochs for layer 1: the Trainer only sets its visible bias from the data it got.
    dbn.fit(x, [{"epochs": 2, "lr": 0.1, "batch_size": 40}, {"epochs": 0}],
            callbacks=[lambda trainer, record: seen.append(trainer.dbn_layer)])
    assert seen == [0, 0]
    means = dbn.transform(x, layer=0)
    assert bool(((means > 0) & (means < 1)).all())  # fractional: means, not samples
    p = means.mean(0).clamp(1e-3, 1 - 1e-3)
    # (fit_bias averages in float32: float32 rounding tolerances)
    torch.testing.assert_close(dbn.layers[1].visible.bias.detach(), torch.log(p / (1 - p)),
                               rtol=1e-5, atol=1e-6)


def test_variational_bound_tight_at_transpose_init_and_rises_with_training():
    """Hinton, Osindero & Teh 2006: a layer added as the transpose of the one below leaves
    the bound equal to log p_1(v); training the new layer on q(h | v) raises it, by at
    most KL(Q || p_1(h)) for the aggregate posterior Q (Gibbs' inequality)."""
    x, _ = _prototype_data(n=200, d=8)
    g = torch.Generator().manual_seed(3)
    # A poor first layer (random parameters) leaves room for the second one to help.
    r1 = RBM(BernoulliUnits(8), BernoulliUnits(5), generator=g).double()
    with torch.no_grad():
        for p in r1.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    r2 = RBM(BernoulliUnits(5), BernoulliUnits(8)).double()
    with torch.no_grad():
        r2.connection.weights.copy_(r1.connection.weights.T)
        r2.visible.bias.copy_(r1.hidden.bias)
        r2.hidden.bias.copy_(r1.visible.bias)
    dbn = DBN([r1, r2])
    states = _states(8)
    with torch.no_grad():
        exact = -r1.free_energy(states) - torch.logsumexp(-r1.free_energy(states), 0)
    torch.testing.assert_close(_exact_bound(dbn, states), exact, atol=1e-9, rtol=0)
    torch.testing.assert_close(_exact_dbn_ll(dbn, states), exact, atol=1e-9, rtol=0)
    hs = _states(5)
    with torch.no_grad():
        q = r1.hidden_mean(x)
        agg = (hs @ torch.log(q).T + (1 - hs) @ torch.log1p(-q).T).exp().mean(1)
        max_gain = float((agg * (agg.log() - _log_p_top(r2, hs))).sum())
    start = float(_exact_bound(dbn, x).mean())
    # Greedy training of the top layer only, on samples of q(h | v) for the data.
    with torch.no_grad():
        h = r1.sample_hidden(x.repeat(5, 1), generator=torch.Generator().manual_seed(4))
    DBN([r2]).fit(h, {"epochs": 10, "lr": 0.1, "batch_size": 50, "init_visible_bias": False})
    gain = float(_exact_bound(dbn, x).mean()) - start
    assert max_gain > 0.3
    assert 0.8 * max_gain < gain <= max_gain + 1e-9
    # Still a bound: below the new DBN's exact log p(v), which is normalised.
    assert bool((_exact_bound(dbn, states) <= _exact_dbn_ll(dbn, states) + 1e-9).all())
    assert float(_exact_dbn_ll(dbn, states).exp().sum()) == pytest.approx(1.0, abs=1e-9)


# --- the up pass and the classifier ------------------------------------------------
def _hetero_dbn(seed=0):
    g = torch.Generator().manual_seed(seed)
    r1 = RBM(GaussianUnits(7, std=1.5, learn_variance=True), BernoulliUnits(6), generator=g)
    r2 = RBM(BernoulliUnits(6), BernoulliUnits(5), generator=g)
    r3 = RBM(BernoulliUnits(5), ReLUUnits(4), generator=g)
    dbn = DBN([r1, r2, r3]).double()
    with torch.no_grad():
        for p in dbn.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.7)
    return dbn


@pytest.mark.parametrize("residual", [False, True])
def test_classifier_starts_as_the_deterministic_up_pass(residual):
    dbn = _hetero_dbn()
    if residual:
        dbn = DBN(list(dbn.layers), residual=True, residual_weights=(1.0, 0.5))
    x = torch.randn(11, 7, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    clf = dbn.to_classifier(3)
    clf.eval()
    # Independent up pass, written out from the definitions.
    h = x
    for rbm in dbn.layers:
        a = rbm.hidden.bias + rbm.visible.coupling(h) @ rbm.connection.weights
        if isinstance(rbm.hidden, BernoulliUnits):
            m = torch.sigmoid(a)
        else:
            m = rbm.hidden.mean(a - rbm.hidden.bias)
        if residual:
            r = torch.relu(a)
            r = r / r.amax(1, keepdim=True).clamp_min(1e-12)
            m = 1.0 * m + 0.5 * r
            m = m / m.amax(1, keepdim=True)
        h = m
    torch.testing.assert_close(dbn.transform(x), h)
    with torch.no_grad():
        torch.testing.assert_close(clf.hidden(x), h)
    torch.testing.assert_close(dbn.transform(x, layer=0), dbn.transform(x, layer=-3))
    if residual:
        assert torch.allclose(h.amax(1), torch.ones(11, dtype=torch.float64))


def test_fine_tuning_lowers_the_error():
    x, y = _prototype_data(n=400, d=12, classes=4, flip=0.1, seed=7)
    dbn = make_dbn([12, 10, 8], seed=3).double()
    dbn.fit(x[:300], {"epochs": 10, "lr": 0.1, "batch_size": 20})
    clf = dbn.to_classifier(4, generator=torch.Generator().manual_seed(0))
    before = clf.error_rate(x[300:], y[300:])
    clf, hist = fine_tune(clf, x[:300], y[:300], epochs=30, lr=0.5, batch_size=20,
                          test=(x[300:], y[300:]), seed=0)
    after = clf.error_rate(x[300:], y[300:])
    assert before > 0.4  # the head starts at ~0: close to chance (3/4)
    assert after < 0.1
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    assert hist[-1]["test_error"] == pytest.approx(after)


def test_fine_tuning_early_stopping_restores_the_best_epoch():
    x, y = _prototype_data(n=200, d=12, classes=4, flip=0.1, seed=8)
    clf = make_dbn([12, 6], seed=0).double().to_classifier(4)
    clf, hist = fine_tune(clf, x, y, epochs=12, lr=0.5, batch_size=20, val_fraction=0.25,
                          patience=3)
    best = min(r["val_error"] for r in hist)
    assert hist[-1]["best_epoch"] == min(r["epoch"] for r in hist if r["val_error"] == best)
    assert len(hist) <= 12


def test_dropout_only_acts_in_training_mode():
    dbn = make_dbn([12, 6, 5], seed=0).double()
    clf = dbn.to_classifier(3, dropout=0.5)
    x = torch.rand(4, 12, dtype=torch.float64).round()
    clf.eval()
    with torch.no_grad():
        torch.testing.assert_close(clf.hidden(x), dbn.transform(x))
        clf.train()
        assert not torch.allclose(clf.hidden(x), dbn.transform(x))


# --- generation ------------------------------------------------------------------------
def test_sampling_runs_the_top_rbm_then_a_down_pass():
    dbn = make_dbn([9, 6, 4], seed=0).double()
    a = dbn.sample(5, steps=3, generator=torch.Generator().manual_seed(1))
    b = dbn.sample(5, steps=3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (5, 9)
    torch.testing.assert_close(a, b)
    assert bool(((a > 0) & (a < 1)).all())  # bottom-layer means
    s = dbn.sample(5, steps=3, generator=torch.Generator().manual_seed(1), return_mean=False)
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    init = torch.ones(5, 9, dtype=torch.float64)
    assert dbn.sample(5, steps=1, init=init).shape == (5, 9)


# --- files ---------------------------------------------------------------------------------
def test_save_load_heterogeneous_stack_and_classifier(tmp_path):
    dbn = _hetero_dbn(seed=4)
    x = torch.randn(6, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    path = save_model(dbn, tmp_path / "dbn.safetensors")
    back = load_model(path).double()
    assert isinstance(back, DBN) and back.config() == dbn.config()
    assert [type(r.visible) for r in back.layers] == [GaussianUnits, BernoulliUnits,
                                                        BernoulliUnits]
    torch.testing.assert_close(back.transform(x), dbn.transform(x))
    for (k, v), (k2, v2) in zip(dbn.state_dict().items(), back.state_dict().items(),
                                strict=True):
        assert k == k2
        torch.testing.assert_close(v, v2)
    clf = DBN(list(dbn.layers), residual=True).to_classifier(3, dropout=0.2)
    p2 = save_model(clf, tmp_path / "clf.safetensors")
    clf2 = load_model(p2).double()
    assert isinstance(clf2, DBNClassifier) and clf2.config() == clf.config()
    torch.testing.assert_close(clf2.predict_proba(x), clf.predict_proba(x))


# --- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, match", [
    ("784,,500", "not an integer"), ("784,abc", "not an integer"), ("784,-5", "positive"),
    ("784,0", "positive"), ("784", "no hidden layer"), ("", "needs layer sizes"),
    (None, "needs layer sizes"), ("784,5.5", "not an integer"),
])
def test_bad_layer_specs_are_config_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_layer_sizes(spec)


def test_layer_spec_first_entry_checked_against_data():
    assert parse_layer_sizes("784,500", 784) == [784, 500]
    assert parse_layer_sizes("500,200", 784) == [784, 500, 200]


def test_stack_construction_errors():
    with pytest.raises(ConfigError, match="do not chain"):
        DBN([RBM(BernoulliUnits(5), BernoulliUnits(4)), RBM(BernoulliUnits(3), BernoulliUnits(2))])
    with pytest.raises(ConfigError, match="at least one"):
        DBN([])
    with pytest.raises(ConfigError, match="not a boltzkit RBM"):
        DBN([torch.nn.Linear(3, 2)])
    with pytest.raises(ConfigError, match="Gaussian hidden"):
        DBN([RBM(BernoulliUnits(5), GaussianUnits(4))], residual=True)
    with pytest.raises(ConfigError, match="residual_weights"):
        DBN([RBM(BernoulliUnits(5), BernoulliUnits(4))], residual_weights=(0, 0))
    with pytest.raises(ConfigError, match="2 per-layer settings for 3"):
        layer_settings([{}, {}], 3)
    with pytest.raises(ConfigError, match="unknown setting"):
        layer_settings({"epoch": 3}, 2)
    with pytest.raises(ConfigError, match="layer must be"):
        make_dbn([5, 4]).transform(torch.zeros(2, 5), layer=3)


def test_bad_data_is_a_clear_error():
    dbn = make_dbn([6, 4, 3], seed=0)
    with pytest.raises(DataError, match="binary"):
        dbn.fit(torch.full((10, 6), 0.5), {"epochs": 1})
    # ReLU features are unbounded: a Bernoulli layer above them says so.
    g = torch.Generator().manual_seed(0)
    bad = DBN([RBM(BernoulliUnits(6), ReLUUnits(4), generator=g),
               RBM(BernoulliUnits(4), BernoulliUnits(3), generator=g)])
    with torch.no_grad():
        bad.layers[0].hidden.bias.fill_(3.0)
    x = (torch.rand(20, 6, generator=g) < 0.5).float()
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        bad.fit(x, {"epochs": 1, "batch_size": 10})
    clf = dbn.to_classifier(2)
    with pytest.raises(DataError, match="features"):
        clf.predict(torch.zeros(3, 5))
    with pytest.raises(DataError, match="class indices"):
        fine_tune(clf, torch.zeros(4, 6), torch.tensor([0, 1, 2, 5]), epochs=1)
    with pytest.raises(ConfigError, match="n_classes"):
        dbn.to_classifier(1)


# --- the CLI entry point ------------------------------------------------------------------
def _cfg(**over):
    from boltzkit.kinds import defaults

    cfg = defaults("dbn")
    cfg.update({"model": "dbn", "layers": "8,5", "epochs": 2, "batch_size": 20, "lr": 0.1,
                "method": "cd", "out": None, **over})
    return cfg


def train_from_config(cfg, load, quiet=True):
    from boltzkit.training.run import train_from_config as train

    model, history, _ = train(cfg, quiet=quiet, data=(*load("train"), *load("test")))
    return model, history


def test_train_from_config_pretrains_and_fine_tunes():
    x, y = _prototype_data(n=160, d=10, classes=3, seed=9)
    x, y = x.float(), y

    def load(split):
        return (x[:120], y[:120]) if split == "train" else (x[120:], y[120:])

    model, hist = train_from_config(_cfg(), load, quiet=True)
    assert isinstance(model, DBN) and model.sizes == [10, 8, 5]
    assert [r["stage"] for r in hist] == ["layer0", "layer0", "layer1", "layer1"]
    model, hist = train_from_config(_cfg(finetune_epochs=3, finetune_lr=0.5,
                                         dbn_layer_epochs="1,3"), load, quiet=True)
    assert isinstance(model, DBNClassifier)
    assert [r["stage"] for r in hist if r["stage"].startswith("layer")] == [
        "layer0", "layer1", "layer1", "layer1"]
    assert "test_error" in hist[-1] and 0 <= hist[-1]["test_error"] <= 1
    with pytest.raises(ConfigError, match="not an integer"):
        train_from_config(_cfg(layers="10,x"), load, quiet=True)
    with pytest.raises(ConfigError, match="dbn_layer_epochs has 3 entries"):
        train_from_config(_cfg(dbn_layer_epochs="1,2,3"), load, quiet=True)


def test_input_dropout_only_in_training_and_round_trips(tmp_path):
    dbn = make_dbn([12, 6, 4], seed=0)
    clf = dbn.to_classifier(3, dropout=0.0, input_dropout=0.5,
                            generator=torch.Generator().manual_seed(0))
    plain = dbn.to_classifier(3, generator=torch.Generator().manual_seed(0))
    x = torch.rand(50, 12, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(clf.predict_proba(x), plain.predict_proba(x))  # eval: no dropout
    clf.train()
    torch.manual_seed(0)
    assert not torch.allclose(clf(x), plain(x))
    path = tmp_path / "c.safetensors"
    save_model(clf, path)
    assert load_model(path).input_dropout == 0.5
    with pytest.raises(ConfigError, match="input_dropout"):
        dbn.to_classifier(3, input_dropout=1.0)


def test_train_from_config_takes_grey_levels_as_probabilities_only_when_asked():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(160, 10, generator=g)
    y = torch.randint(0, 3, (160,), generator=g)

    def load(split):
        return (x[:120], y[:120]) if split == "train" else (x[120:], y[120:])

    with pytest.raises(DataError, match="must be binary"):
        train_from_config(_cfg(binarize="threshold"), load, quiet=True)
    model, _ = train_from_config(_cfg(binarize="none", finetune_epochs=1), load, quiet=True)
    assert isinstance(model, DBNClassifier)


# --- the MNIST example (skipped without the data) -----------------------------------------
def _mnist_dir():
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for cand in (os.environ.get("BOLTZKIT_DATA"), root.parent / "shared" / "data"):
        if not cand:
            continue
        for folder in (Path(cand), Path(cand) / "mnist"):
            if any((folder / f"train-images-idx3-ubyte{s}").is_file() for s in ("", ".gz")):
                return Path(cand)
    return None


def test_mnist_example_smoke(monkeypatch, tmp_path):
    import sys
    from pathlib import Path

    data = _mnist_dir()
    if data is None:
        pytest.skip("MNIST not found (set BOLTZKIT_DATA)")
    monkeypatch.setenv("BOLTZKIT_DATA", str(data))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    sys.modules.pop("dbn_mnist", None)
    import dbn_mnist

    out = tmp_path / "clf.safetensors"
    res = dbn_mnist.main("784,24,12", "1", finetune_epochs=1, limit=600, out=str(out))
    assert res["layers"] == [784, 24, 12] and res["train_rows"] == 600
    assert 0 <= res["test_error"] < 0.9  # one short pass already beats chance (0.9)
    assert isinstance(load_model(out), DBNClassifier)
