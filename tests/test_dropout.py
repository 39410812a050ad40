"""Dropout RBM, DropConnect and energy-based dropout RBM (boltzkit.models.dropout).

Tiny float64 models (7 visible x 5 hidden) so every quantity can be checked
against an explicit formula: the masked free energy written out by hand, its
autograd and finite-difference gradients, and the importance level of Roder et
al. computed with plain Python loops.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from boltzkit import RBM, BernoulliUnits, GaussianUnits
from boltzkit.errors import ConfigError
from boltzkit.io import load_model, save_model
from boltzkit.metrics.likelihood import log_likelihood
from boltzkit.models.dropout import (
    DropoutRBM,
    EDropoutRBM,
    MaskedLikelihood,
    MaskedSampler,
    training_parts,
)
from boltzkit.objectives import LikelihoodGradient
from boltzkit.sampling import ContrastiveDivergence, PersistentCD, make_sampler
from boltzkit.training import Trainer

torch.set_num_threads(1)



#: the bundled digits, thresholded to 0/1 for Bernoulli units
DIGITS = ["--dataset", "digits", "--binarize", "threshold"]

def _randomize(model: torch.nn.Module, seed: int, scale: float = 0.5) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.copy_(0.3 * noise if name.endswith("log_var") else scale * noise)


def _dropout(seed: int = 0, visible=None, **rates) -> DropoutRBM:
    vis = visible if visible is not None else BernoulliUnits(7)
    model = DropoutRBM(vis, BernoulliUnits(5), **rates).double()
    _randomize(model, seed)
    return model


def _edropout(seed: int = 0) -> EDropoutRBM:
    model = EDropoutRBM(BernoulliUnits(7), BernoulliUnits(5)).double()
    _randomize(model, seed)
    return model


def _binary(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 7, generator=gen, dtype=torch.float64) < 0.5).double()


def _patterns(n: int = 400, seed: int = 0) -> torch.Tensor:
    """Three 7-bit prototypes with 5 % bit flips: structure an RBM can learn."""
    protos = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 0],
                           [1, 0, 1, 0, 1, 0, 1]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    data = protos[torch.randint(3, (n,), generator=gen)]
    flips = (torch.rand(data.shape, generator=gen) < 0.05).double()
    return (data + flips) % 2


def _record_hidden_samples(model) -> list[torch.Tensor]:
    """Spy on every hidden sample the model draws."""
    seen: list[torch.Tensor] = []
    original = model.hidden.sample

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out.clone())
        return out

    model.hidden.sample = spy
    return seen


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_bad_rates_are_config_errors(rate):
    with pytest.raises(ConfigError, match="dropout_rate"):
        DropoutRBM(BernoulliUnits(7), BernoulliUnits(5), dropout_rate=rate)
    with pytest.raises(ConfigError, match="dropconnect_rate"):
        DropoutRBM(BernoulliUnits(7), BernoulliUnits(5), dropconnect_rate=rate)


def test_non_bernoulli_hidden_units_are_refused():
    with pytest.raises(ConfigError, match="Bernoulli hidden"):
        DropoutRBM(BernoulliUnits(7), GaussianUnits(5))
    with pytest.raises(ConfigError, match="Bernoulli hidden"):
        EDropoutRBM(BernoulliUnits(7), GaussianUnits(5))


def test_centering_is_refused():
    with pytest.raises(ConfigError, match="centering"):
        MaskedLikelihood(LikelihoodGradient(centering=True))


# --------------------------------------------------------------------------- masks
def test_cd_mask_is_shared_by_both_phases_and_redrawn_per_batch(make_gen):
    model = _dropout(dropout_rate=0.5)
    data = _binary(30, 1)
    sampler = MaskedSampler(ContrastiveDivergence(k=3))
    gen = make_gen(3)
    model.begin_batch(data, gen)
    mask = model.batch_mask("data")
    assert mask.shape == (30, 5) and mask.dtype == torch.bool
    assert 0.3 < mask.float().mean() < 0.7  # p = 0.5 on 150 draws
    seen = _record_hidden_samples(model)
    field = model.hidden_field(data)
    neg, _ = sampler.negative(model, data, field, gen)
    assert len(seen) == 3  # the k = 3 hidden samples of the negative phase
    for h in seen:
        assert bool((h[~mask] == 0).all())  # the data's mask, every step
    assert bool((model.hidden_mean(data)[~mask] == 0).all())  # the positive phase too
    assert bool((model.hidden_mean(neg)[~mask] == 0).all())
    MaskedLikelihood().compute(model, data, neg, field, None)
    assert not model.in_batch  # the objective closes the batch
    model.begin_batch(data, gen)
    assert not torch.equal(model.batch_mask("data"), mask)


def test_pcd_chains_get_their_own_mask_per_batch(make_gen):
    model = _dropout(dropout_rate=0.5)
    data = _binary(20, 1)
    sampler = MaskedSampler(PersistentCD(k=2, n_chains=20))
    gen = make_gen(4)
    chain_masks = []
    for _ in range(2):
        model.begin_batch(data, gen)
        seen = _record_hidden_samples(model)
        field = model.hidden_field(data)
        neg, neg_field = sampler.negative(model, data, field, gen)
        chains = model.batch_mask("chains")
        assert chains.shape == (20, 5)
        assert not torch.equal(chains, model.batch_mask("data"))
        for h in seen:
            assert bool((h[~chains] == 0).all())
        MaskedLikelihood().compute(model, data, neg, field, neg_field)
        del model.hidden.sample  # remove the spy (an instance attribute)
        chain_masks.append(chains)
    assert not torch.equal(chain_masks[0], chain_masks[1])


def test_unwrapped_use_gives_a_clear_error(make_gen):
    model = _dropout(dropout_rate=0.5)
    model.begin_batch(_binary(10, 1), make_gen(0))
    with pytest.raises(ConfigError, match="training_parts"):
        model.hidden_mean(_binary(12, 2))


def test_masked_units_contribute_exactly_zero(make_gen):
    model = _dropout(seed=2, dropout_rate=0.5)
    data, neg = _binary(8, 1), _binary(8, 2)
    model.begin_batch(data, make_gen(0))
    mask = torch.ones(8, 5, dtype=torch.bool)
    mask[:, 3] = False       # unit 3 dropped for every case
    mask[0, 1] = False       # unit 1 dropped for case 0 only
    model.batch_state.masks["data"] = mask
    vis, W, c = model.visible, model.connection.weights, model.hidden.bias
    act = data @ W + c
    expected = vis.energy(data) - (torch.nn.functional.softplus(act) * mask).sum(-1)
    assert torch.allclose(model.free_energy(data), expected, atol=1e-12, rtol=0)
    assert bool((model.hidden_mean(data)[~mask] == 0).all())
    assert bool((model.sample_hidden(data, generator=make_gen(1))[~mask] == 0).all())
    MaskedLikelihood().compute(model, data, neg, model.hidden_field(data), None)
    assert bool((W.grad[:, 3] == 0).all()) and float(c.grad[3]) == 0.0
    assert bool((W.grad[:, 0] != 0).any())


# --------------------------------------------------------------------------- test time
@pytest.mark.parametrize("rates", [{"dropout_rate": 0.3}, {"dropout_rate": 0.3,
                                                          "dropconnect_rate": 0.2}])
def test_test_time_model_is_the_rbm_with_weights_scaled_by_p(rates, make_gen):
    model = _dropout(seed=3, **rates)
    scale = (1 - rates["dropout_rate"]) * (1 - rates.get("dropconnect_rate", 0.0))
    plain = RBM(BernoulliUnits(7), BernoulliUnits(5)).double()
    with torch.no_grad():
        plain.visible.bias.copy_(model.visible.bias)
        plain.hidden.bias.copy_(model.hidden.bias)
        plain.connection.weights.copy_(model.connection.weights * scale)
    v = _binary(16, 5)

    def same():
        assert torch.allclose(model.free_energy(v), plain.free_energy(v), atol=1e-12, rtol=0)
        assert torch.allclose(model.transform(v), plain.transform(v), atol=1e-12, rtol=0)
        assert torch.allclose(model.reconstruct(v), plain.reconstruct(v), atol=1e-12, rtol=0)
        h = plain.sample_hidden(v, generator=make_gen(0))
        assert torch.allclose(model.free_energy_hidden(h), plain.free_energy_hidden(h),
                              atol=1e-12, rtol=0)

    same()
    # a training batch switches to the unscaled, masked network ...
    model.begin_batch(v, make_gen(1))
    assert not torch.allclose(model.free_energy(v), plain.free_energy(v))
    MaskedLikelihood().compute(model, v, v, None, None)
    model.zero_grad()
    same()  # ... and the end of its gradient switches back


def test_edropout_test_time_model_is_the_full_rbm():
    model = _edropout(seed=1)
    plain = RBM(BernoulliUnits(7), BernoulliUnits(5)).double()
    plain.load_state_dict(model.state_dict())
    v = _binary(16, 5)
    assert torch.allclose(model.free_energy(v), plain.free_energy(v), atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- gradients
def _explicit_loss(model, data, neg, r_data, r_model, w_mask):
    """mean F(data | r) - mean F(neg | r') written out by hand (hidden Bernoulli units)."""
    W = model.connection.weights if w_mask is None else model.connection.weights * w_mask
    c = model.hidden.bias

    def f(v, r):
        sp = torch.nn.functional.softplus(model.visible.coupling(v) @ W + c)
        if r is not None:
            sp = sp * r
        return model.visible.energy(v) - sp.sum(-1)

    return f(data, r_data).mean() - f(neg, r_model).mean()


@pytest.mark.parametrize("visible,method,rates", [
    ("bernoulli", "pcd", {"dropout_rate": 0.4}),                            # fast path
    ("bernoulli", "cd", {"dropout_rate": 0.4, "dropconnect_rate": 0.3}),    # fast path, W * M
    ("gaussian", "pcd", {"dropout_rate": 0.4, "dropconnect_rate": 0.3}),    # autograd path
])
def test_gradient_is_that_of_the_masked_objective(visible, method, rates, make_gen):
    vis = BernoulliUnits(7) if visible == "bernoulli" else GaussianUnits(7, learn_variance=True)
    model = _dropout(seed=4, visible=vis, **rates)
    objective = MaskedLikelihood()
    assert objective.fast_path(model) == (visible == "bernoulli")
    gen = make_gen(5)
    data = _binary(12, 6) if visible == "bernoulli" else torch.randn(12, 7, generator=gen,
                                                                     dtype=torch.float64)
    sampler = MaskedSampler(make_sampler(method, 2, chains=9 if method == "pcd" else None))
    model.begin_batch(data, gen)
    field = model.hidden_field(data)
    neg, neg_field = sampler.negative(model, data, field, gen)
    r_data = model.batch_mask("data").double()
    r_model = model.batch_mask("chains" if method == "pcd" else "data").double()
    w_mask = model.connection.weight_mask
    assert w_mask is not None or "dropconnect_rate" not in rates
    objective.compute(model, data, neg, field, neg_field)
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert not model.in_batch

    params = dict(model.named_parameters())
    loss = _explicit_loss(model, data, neg, r_data, r_model, w_mask)
    want = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    for name in params:
        assert torch.allclose(got[name], want[name], atol=1e-12, rtol=1e-10), name
    # central finite differences on a few coordinates of every parameter
    eps = 1e-6
    with torch.no_grad():
        for name, p in params.items():
            flat = p.view(-1)
            for idx in range(0, flat.numel(), max(1, flat.numel() // 6)):
                old = float(flat[idx])
                flat[idx] = old + eps
                up = float(_explicit_loss(model, data, neg, r_data, r_model, w_mask))
                flat[idx] = old - eps
                down = float(_explicit_loss(model, data, neg, r_data, r_model, w_mask))
                flat[idx] = old
                fd = (up - down) / (2 * eps)
                assert abs(fd - float(got[name].view(-1)[idx])) < 1e-7, (name, idx)
    if w_mask is not None:  # dropped weights get exactly zero gradient
        assert bool((got["connection.weights"][w_mask == 0] == 0).all())


# --------------------------------------------------------------------------- E-dropout
def test_edropout_importance_matches_brute_force(make_gen):
    model = _edropout(seed=6)
    v = _binary(10, 7)
    t = model.importance_terms(v, make_gen(8))
    h, vn, hn = t["h"], t["v_neg"], t["h_neg"]
    W = model.connection.weights.tolist()
    b, c = model.visible.bias.tolist(), model.hidden.bias.tolist()
    nv, nh = 7, 5

    def p_on(x, j):
        return 1.0 / (1.0 + math.exp(-(c[j] + sum(x[k] * W[k][j] for k in range(nv)))))

    def energy(x, y):
        return (-sum(b[k] * x[k] for k in range(nv)) - sum(c[j] * y[j] for j in range(nh))
                - sum(x[k] * W[k][j] * y[j] for k in range(nv) for j in range(nh)))

    rows = range(v.shape[0])
    gap = (sum(energy(vn[i].tolist(), hn[i].tolist()) for i in rows)
           - sum(energy(v[i].tolist(), h[i].tolist()) for i in rows)) / v.shape[0]
    raw = [[p_on(vn[i].tolist(), j) / p_on(v[i].tolist(), j) / abs(gap) for j in range(nh)]
           for i in rows]
    col_max = [max(raw[i][j] for i in rows) for j in range(nh)]
    want = torch.tensor([[raw[i][j] / col_max[j] for j in range(nh)] for i in rows],
                        dtype=torch.float64)
    assert abs(float(t["energy_gap"]) - gap) < 1e-10
    assert torch.allclose(t["importance"], want, atol=1e-12, rtol=1e-10)
    # the same generator state gives the same samples inside begin_batch: keep iff I < U
    gen = make_gen(8)
    model.begin_batch(v, gen)
    mask = model.batch_mask("data")
    u = torch.rand(want.shape, generator=make_gen(8).set_state(_after_terms(model, v)),
                   dtype=torch.float64)
    assert torch.equal(mask, want < u)
    assert not bool(mask[want.argmax(0), torch.arange(nh)].any())  # I = 1 is always dropped
    assert model.last_energy_gap == pytest.approx(gap, abs=1e-10)


def _after_terms(model, v):
    """The generator state after importance_terms with seed 8 (where the mask draw starts)."""
    gen = torch.Generator().manual_seed(8)
    model.importance_terms(v, gen)
    return gen.get_state()


def test_edropout_refuses_persistent_chains(make_gen):
    model = _edropout()
    data = _binary(10, 1)
    model.begin_batch(data, make_gen(0))
    sampler = MaskedSampler(PersistentCD(k=1))
    with pytest.raises(ConfigError, match="CD"):
        sampler.negative(model, data, model.hidden_field(data), make_gen(1))


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize("kind,method,rates", [
    ("dropout", "cd", {"dropout_rate": 0.3}),
    ("dropout", "pcd", {"dropout_rate": 0.3}),
    ("dropout", "pcd", {"dropout_rate": 0.0, "dropconnect_rate": 0.3}),
    ("edropout", "cd", {}),
])
def test_training_raises_the_exact_log_likelihood(kind, method, rates):
    data = _patterns()
    if kind == "dropout":
        model = DropoutRBM(BernoulliUnits(7), BernoulliUnits(5), **rates,
                           generator=torch.Generator().manual_seed(0)).double()
    else:
        model = EDropoutRBM(BernoulliUnits(7), BernoulliUnits(5),
                            generator=torch.Generator().manual_seed(0)).double()
    model.init_visible_bias(data)
    before = log_likelihood(model, data, method="exact")["log_likelihood"]
    sampler, objective = training_parts(make_sampler(method, 1))
    Trainer(model, sampler, objective, epochs=15, batch_size=20, lr=0.2, momentum=0.5,
            progress=False, monitor_size=100).fit(data)
    after = log_likelihood(model, data, method="exact")["log_likelihood"]
    # Start: independent units fitted to the marginals (-4.55 nats); the data's own entropy
    # is log 3 + 7 H(0.05) = 2.49 nats, so a model of the 3 prototypes gains up to ~2 nats.
    # (Measured gains with these seeds: 1.35 to 1.85 nats.)
    assert after > before + 1.0, (before, after)
    assert not model.in_batch and model.parameters_finite()


# --------------------------------------------------------------------------- files, CLI
@pytest.mark.parametrize("make", [lambda: _dropout(seed=7, dropout_rate=0.25,
                                                   dropconnect_rate=0.1),
                                  lambda: _edropout(seed=7)])
def test_save_and_load(make, tmp_path):
    model = make()
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert type(loaded) is type(model)
    assert loaded.config() == model.config()
    v = _binary(9, 3)
    assert torch.allclose(loaded.double().free_energy(v), model.free_energy(v), atol=1e-6)
    copied = copy.deepcopy(model)  # metrics copy models: the mask hook follows the copy
    assert copied.hidden.mask_fn.__self__ is copied


def test_cli_trains_and_saves_a_dropout_rbm(tmp_path):
    from boltzkit.cli import main

    out = tmp_path / "d.safetensors"
    rc = main(["train", "--model", "dropout-rbm", "--dataset", "digits", "--binarize",
               "threshold", "--n-hidden", "12",
               "--epochs", "1", "--limit", "300", "--method", "pcd", "--dropout-rate", "0.2",
               "--dropconnect-rate", "0.1", "--out", str(out), "--quiet"])
    assert rc == 0
    model = load_model(out)
    assert isinstance(model, DropoutRBM)
    assert (model.dropout_rate, model.dropconnect_rate) == (0.2, 0.1)
    assert model.parameters_finite()
    rc = main(["train", "--model", "edropout-rbm", "--dataset", "digits", "--binarize",
               "threshold", "--n-hidden", "12",
               "--epochs", "1", "--limit", "300", "--method", "pcd", "--out", str(out),
               "--quiet"])
    assert rc == 2  # a ConfigError: E-dropout trains with CD
