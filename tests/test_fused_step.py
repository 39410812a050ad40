"""The fused training step (kernels.FusedBernoulliSGD) is the general step's update.

Both paths run from the same parameters, chains and generator state; they make
the same random draws in the same order, so the sampled states agree exactly
and the parameters agree up to float rounding, with a tolerance derived from
the machine epsilon below.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from boltzkit import kernels
from boltzkit.kernels import plan_step
from boltzkit.objectives import LikelihoodGradient
from boltzkit.rbm import make_rbm
from boltzkit.sampling import HiddenPersistentCD, make_sampler
from boltzkit.sklearn import BernoulliRBM
from boltzkit.training import LeanSGD

NV, NH, STEPS, LR = 13, 11, 4, 0.1


def _parts(method, k, momentum, weight_decay, chains, seed=0, nh=NH, norm="particles",
           dtype=torch.float64):
    """method "hidden": scikit-learn's hidden-state chains (HiddenPersistentCD)."""
    rbm = make_rbm(NV, nh, seed=seed).to(dtype)
    with torch.no_grad():  # biases away from zero, so every term of the update matters
        rbm.visible.bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
        rbm.hidden.bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
        rbm.connection.weights.mul_(50.0)
    if method == "hidden":
        sampler = HiddenPersistentCD(k, chains, random_state=np.random.RandomState(seed + 11))
    else:
        sampler = make_sampler(method, k=k, chains=chains)
    groups = [{"params": [rbm.connection.weights], "weight_decay": weight_decay},
              {"params": [rbm.visible.bias, rbm.hidden.bias], "weight_decay": 0.0}]
    opt = LeanSGD(groups, lr=LR, momentum=momentum)
    return (rbm, sampler, LikelihoodGradient(model_norm=norm), opt,
            torch.Generator().manual_seed(seed + 7))


def _general_step(rbm, sampler, objective, optimizer, gen, batch):
    """The general path, as boltzkit.sklearn's _RBMBase._step runs it."""
    with torch.no_grad():
        field = rbm.hidden_field(batch)
        v_model, field_model = sampler.negative(rbm, batch, field, gen)
        objective.compute(rbm, batch, v_model, field, field_model)
    optimizer.step()


def _tolerance(B, M, momentum, rbm, nv=NV, nh=NH, steps=STEPS):
    """Bound on |fused - general| for each parameter after ``steps`` updates.

    One update of an entry is lr times a dot product of B + M terms (each a product
    of values in [0, 1], scaled by 1/B or 1/M), so |update| <= 2 lr and its rounding
    error is at most (B + M) * eps * 2 lr, plus eps * |p| for adding it to p; with
    momentum the buffer sums 1 / (1 - m) of these.  The next step sees a parameter
    difference d through the fields (each a sum over <= nv + nh + 1 terms, sigmoid
    slope <= 1/4), which changes its update by at most lr * (nv + nh + 1) * d / 2:
    the factor g per step below.
    """
    eps = torch.finfo(torch.float64).eps
    pmax = max(float(p.detach().abs().max()) for p in rbm.parameters())
    per_step = ((B + M) * 2 * LR + pmax + 1.0) * eps / (1.0 - momentum)
    g = 1.0 + LR * (nv + nh + 1) / 2 / (1.0 - momentum)
    return 4 * per_step * sum(g ** i for i in range(steps))


@pytest.mark.parametrize("method,k,chains,norm", [
    ("pcd", 1, None, "particles"), ("pcd", 3, None, "particles"), ("pcd", 1, 5, "particles"),
    ("pcd", 2, 12, "particles"), ("pcd", 2, 12, "rows"), ("cd", 1, None, "particles"),
    ("cd", 2, None, "particles"), ("cd", 1, None, "rows"), ("hidden", 1, None, "rows"),
    ("hidden", 2, 12, "rows"), ("hidden", 1, 5, "rows"), ("hidden", 3, 5, "particles")])
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.0, 0.05), (0.6, 0.05)])
def test_fused_step_is_the_general_update(method, k, chains, norm, momentum, weight_decay):
    B = 8
    data = torch.rand(STEPS * B, NV, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(3))
    data[:, ::2] = data[:, ::2].round()  # binary and fractional columns
    parts = functools.partial(_parts, method, k, momentum, weight_decay, chains, norm=norm)
    ref, fast = parts(), parts()
    step = plan_step(*fast)
    assert step is not None
    for batch in data.split(B):
        _general_step(*ref, batch)
        step(batch)
    rbm_r, sampler_r, _, opt_r, gen_r = ref
    rbm_f, sampler_f, _, opt_f, gen_f = fast
    assert torch.equal(gen_r.get_state(), gen_f.get_state())  # the same draws were made
    if method != "cd":
        assert torch.equal(sampler_r.chains, sampler_f.chains)  # the same chain states
    if method == "pcd":
        torch.testing.assert_close(sampler_f.field, sampler_r.field, rtol=0, atol=1e-12)
    if method == "hidden":  # the same NumPy draws were made
        assert sampler_r.random_state.randint(1 << 30) == sampler_f.random_state.randint(1 << 30)
    M = (chains or B) if method != "cd" else B
    tol = _tolerance(B, M, momentum, rbm_r)
    for (name, p_r), p_f in zip(rbm_r.named_parameters(), rbm_f.parameters(), strict=True):
        diff = float((p_r - p_f).detach().abs().max())
        assert diff <= tol, (name, diff, tol)
        assert float((p_r - parts()[0].get_parameter(name)).detach().abs().max()) > 1e3 * tol
    if momentum:
        for p_r, p_f in zip(rbm_r.parameters(), rbm_f.parameters(), strict=True):
            buf_r = opt_r.state[p_r]["momentum_buffer"]
            buf_f = opt_f.state[p_f]["momentum_buffer"]
            assert float((buf_r - buf_f).abs().max()) <= tol / LR


def test_paths_take_turns_on_the_same_state():
    """Chains and momentum written by one path are read by the other (state is shared)."""
    B = 6
    data = torch.rand(4 * B, NV, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ref = _parts("pcd", 1, 0.5, 0.0, None)
    mixed = _parts("pcd", 1, 0.5, 0.0, None)
    for i, batch in enumerate(data.split(B)):
        _general_step(*ref, batch)
        if i % 2:
            _general_step(*mixed, batch)
        else:
            plan_step(*mixed)(batch)
    assert torch.equal(ref[1].chains, mixed[1].chains)
    tol = _tolerance(B, B, 0.5, ref[0], steps=4)
    for p_r, p_m in zip(ref[0].parameters(), mixed[0].parameters(), strict=True):
        assert float((p_r - p_m).detach().abs().max()) <= tol


def test_fused_step_applies_only_to_the_plain_case():
    rbm, sampler, objective, opt, gen = _parts("pcd", 1, 0.0, 0.0, None)
    assert plan_step(rbm, sampler, objective, opt, gen) is not None
    others = [
        (rbm, make_sampler("pt"), objective, opt),
        (rbm, make_sampler("tds"), objective, opt),
        (rbm, sampler, LikelihoodGradient(sparsity_target=0.1, sparsity_cost=0.1), opt),
        (rbm, sampler, LikelihoodGradient(centering=True), opt),
        (rbm, sampler, LikelihoodGradient(force_autograd=True), opt),
        (rbm, sampler, objective, torch.optim.Adam(rbm.parameters(), lr=0.1)),
        (rbm, sampler, objective, torch.optim.SGD(rbm.parameters(), lr=0.1, momentum=0.5,
                                                  nesterov=True)),
        (rbm, sampler, objective, LeanSGD(rbm.parameters(), lr=0.1, weight_decay=0.1)),
        (make_rbm(NV, NH, visible="gaussian"), sampler, objective, opt),
    ]
    for parts in others:
        assert plan_step(*parts, gen) is None


@pytest.mark.parametrize("dtype, atol", [("float64", 1e-12), ("float32", 1e-6)])
@pytest.mark.parametrize("params", [{}, {"method": "pcd", "shuffle": True},
                                    {"method": "cd", "k": 2, "shuffle": True},
                                    {"method": "pcd", "momentum": 0.5, "weight_decay": 0.01}])
def test_estimator_fit_is_the_same_with_and_without_the_fused_step(monkeypatch, params,
                                                                   dtype, atol):
    """The estimator trains through the Trainer, which takes the fused step in the plain
    case itself (planned once per fit): its defaults (scikit-learn's hidden-state chains)
    and boltzkit's CD/PCD."""
    # float32: parameters of size ~0.05 after 18 steps; unit roundoff 6e-8 per operation.
    rng = np.random.RandomState(0)
    X = (rng.rand(57, 9) < 0.4).astype(float)  # a short last batch too
    X[:, 0] = rng.rand(57)  # a fractional column
    kw = dict(n_components=7, learning_rate=0.05, batch_size=10, n_iter=3, random_state=0,
              dtype=dtype, **params)
    real_plan, steps = kernels.plan_step, []
    monkeypatch.setattr(kernels, "plan_step", lambda *a, **k: steps.append(real_plan(*a, **k))
                        or steps[-1])
    fused = BernoulliRBM(**kw).fit(X)
    assert len(steps) == 1 and steps[0] is not None  # the fused step trained it
    again = BernoulliRBM(**kw).fit(X)
    np.testing.assert_array_equal(again.components_, fused.components_)  # same seed, same fit
    monkeypatch.setattr(kernels, "plan_step", lambda *a, **k: None)
    general = BernoulliRBM(**kw).fit(X)
    for attr in ("components_", "intercept_hidden_", "intercept_visible_"):
        np.testing.assert_allclose(getattr(fused, attr), getattr(general, attr),
                                   rtol=0, atol=atol)
    if params.get("method", "sklearn") != "cd":
        assert torch.equal(fused.trainer_.sampler.chains, general.trainer_.sampler.chains)
    copy.deepcopy(fused).partial_fit(X)  # the fused state survives a copy


def test_fused_step_matches_with_bulk_draws():
    """Chains x hidden units above boltzkit.units' bulk-draw size take its other branch."""
    B, nh, chains = 8, 100, 180  # 18,000 hidden draws per sweep (bulk), 2,340 visible
    ref, fast = (_parts("pcd", 1, 0.0, 0.0, chains, nh=nh) for _ in range(2))
    data = torch.rand(3 * B, NV, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    step = plan_step(*fast)
    assert step._last is None
    for batch in data.split(B):
        _general_step(*ref, batch)
        step(batch)
    assert isinstance(step._last.fill_hs, functools.partial)  # the bulk branch ran
    assert not isinstance(step._last.fill_vm, functools.partial)
    assert torch.equal(ref[4].get_state(), fast[4].get_state())
    assert torch.equal(ref[1].chains, fast[1].chains)
    tol = _tolerance(B, chains, 0.0, ref[0], nh=nh, steps=3)
    for p_r, p_f in zip(ref[0].parameters(), fast[0].parameters(), strict=True):
        assert float((p_r - p_f).detach().abs().max()) <= tol


@pytest.mark.parametrize("method,k,momentum,weight_decay", [("cd", 1, 0.0, 0.0),
                                                            ("cd", 2, 0.5, 0.01),
                                                            ("pcd", 1, 0.5, 0.0),
                                                            ("pcd", 3, 0.0, 0.01)])
def test_trainer_fit_is_the_same_with_and_without_the_fused_step(monkeypatch, method, k,
                                                                 momentum, weight_decay):
    """The Trainer takes the fused step in the plain case; the history and the model are
    the general path's (a linear lr schedule: the step reads the lr of each epoch)."""
    from boltzkit.training import Trainer

    data = (torch.rand(61, NV, generator=torch.Generator().manual_seed(6)) < 0.4).double()
    built = []
    real_plan = kernels.plan_step

    def counting(*a, **kw):
        step = real_plan(*a, **kw)
        built.append(step)
        return step

    def fit():
        rbm = make_rbm(NV, NH, seed=0).to(torch.float64)
        sampler = make_sampler(method, k=k, chains=9 if method == "pcd" else None)
        trainer = Trainer(rbm, sampler, LikelihoodGradient(), epochs=3, batch_size=10,
                          lr=0.1, momentum=momentum, weight_decay=weight_decay,
                          lr_schedule="linear", lr_final_factor=0.5, seed=3, progress=False)
        return rbm, sampler, trainer.fit(data)

    monkeypatch.setattr(kernels, "plan_step", counting)
    rbm_f, sampler_f, hist_f = fit()
    assert len(built) == 1 and built[0] is not None  # planned once per fit
    monkeypatch.setattr(kernels, "plan_step", lambda *a, **kw: None)
    rbm_g, sampler_g, hist_g = fit()
    # 3 epochs x 7 batches of float64 updates of size <= 2 lr: rounding far below 1e-10.
    for p_f, p_g in zip(rbm_f.parameters(), rbm_g.parameters(), strict=True):
        torch.testing.assert_close(p_f, p_g, rtol=0, atol=1e-10)
    assert float((rbm_f.connection.weights - make_rbm(NV, NH, seed=0).connection.weights
                  .double()).detach().abs().max()) > 0.01  # training moved the weights (1e8 x atol)
    for r_f, r_g in zip(hist_f, hist_g, strict=True):
        for key in ("hidden_activation", "lr", "recon_error", "free_energy_train"):
            assert r_f[key] == pytest.approx(r_g[key], rel=1e-9, abs=1e-12), key
    if method == "pcd":
        assert torch.equal(sampler_f.chains, sampler_g.chains)
