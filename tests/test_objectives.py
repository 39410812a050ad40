"""LikelihoodGradient: fast path = autograd path = finite differences = exact gradient."""

from __future__ import annotations

import pytest
import torch

from boltzkit import ConfigError, LikelihoodGradient

ALL_KINDS = [
    "bernoulli-bernoulli", "bernoulli-softmax", "softmax-bernoulli", "gaussian-bernoulli",
    "gaussian_learned-bernoulli", "bernoulli-relu", "sigmoid-bernoulli", "bernoulli-gaussian",
]
BIAS_ONLY = [k for k in ALL_KINDS if k != "gaussian_learned-bernoulli"]
DISCRETE_VISIBLE = ["bernoulli-bernoulli", "bernoulli-softmax", "softmax-bernoulli",
                    "bernoulli-relu", "bernoulli-gaussian"]


def grads(rbm) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in rbm.named_parameters()}


def run(objective, rbm, v_data, v_model, field=None, field_model=None):
    objective.compute(rbm, v_data, v_model, field, field_model)
    return grads(rbm)


def assert_grads_close(a, b, rtol=1e-9, atol=1e-10):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=atol, msg=name)


@pytest.fixture
def batch(tiny_rbm, random_states):
    """Factory: (rbm, v_data (11 rows), v_model (8 rows)) for a model kind."""

    def make(kind, seed=0, scale=0.5):
        rbm = tiny_rbm(kind, seed=seed, scale=scale)
        return (rbm, random_states(rbm.visible, 11, seed=seed + 100),
                random_states(rbm.visible, 8, seed=seed + 200))

    return make


# --- fast path vs autograd path ------------------------------------------------------
@pytest.mark.parametrize("sparsity", [None, (0.1, 0.7)], ids=["plain", "sparse"])
@pytest.mark.parametrize("kind", BIAS_ONLY)
def test_fast_path_equals_autograd_path(kind, sparsity, batch):
    rbm, v_data, v_model = batch(kind, seed=1)
    opts = {} if sparsity is None else {"sparsity_target": sparsity[0],
                                        "sparsity_cost": sparsity[1]}
    fast = LikelihoodGradient(**opts)
    slow = LikelihoodGradient(**opts, force_autograd=True)
    assert fast.fast_path(rbm) and not slow.fast_path(rbm)
    diag_fast = fast.compute(rbm, v_data, v_model)
    g_fast = grads(rbm)
    diag_slow = slow.compute(rbm, v_data, v_model)
    assert_grads_close(g_fast, grads(rbm))
    torch.testing.assert_close(diag_fast["hidden_activation"], diag_slow["hidden_activation"])


def test_learned_variance_takes_the_autograd_path(batch):
    rbm, v_data, v_model = batch("gaussian_learned-bernoulli")
    assert not LikelihoodGradient().fast_path(rbm)
    LikelihoodGradient().compute(rbm, v_data, v_model)
    assert rbm.visible.log_var.grad is not None
    assert rbm.visible.log_var.grad.abs().sum() > 0


def test_precomputed_fields_give_the_same_gradient(batch):
    rbm, v_data, v_model = batch("gaussian-bernoulli", seed=2)
    obj = LikelihoodGradient()
    a = run(obj, rbm, v_data, v_model)
    with torch.no_grad():
        b = run(obj, rbm, v_data, v_model, rbm.hidden_field(v_data))
        c = run(obj, rbm, v_data, v_model, field_model=rbm.hidden_field(v_model))
        d = run(obj, rbm, v_data, v_model, rbm.hidden_field(v_data), rbm.hidden_field(v_model))
    for other in (b, c, d):
        assert_grads_close(a, other, rtol=0, atol=0)


# --- finite differences of mean F(v_data) - mean F(v_model) -------------------------------
def finite_difference(rbm, v_data, v_model, eps=1e-6, model_scale=None):
    """Of mean F(v_data) - model_scale * sum F(v_model) (model_scale: 1 / M, the mean)."""
    scale = 1.0 / v_model.shape[0] if model_scale is None else model_scale

    def loss():
        return float(rbm.free_energy(v_data).mean() - rbm.free_energy(v_model).sum() * scale)

    out = {}
    with torch.no_grad():
        for name, p in rbm.named_parameters():
            g = torch.zeros_like(p)
            flat, gflat = p.view(-1), g.view(-1)
            for i in range(flat.numel()):
                old = float(flat[i])
                flat[i] = old + eps
                up = loss()
                flat[i] = old - eps
                down = loss()
                flat[i] = old
                gflat[i] = (up - down) / (2 * eps)
            out[name] = g
    return out


@pytest.mark.parametrize("force_autograd", [False, True], ids=["default", "autograd"])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_gradient_equals_finite_differences(kind, force_autograd, batch):
    rbm, v_data, v_model = batch(kind, seed=3)
    got = run(LikelihoodGradient(force_autograd=force_autograd), rbm, v_data, v_model)
    expected = finite_difference(rbm, v_data, v_model)
    assert_grads_close(got, expected, rtol=1e-6, atol=1e-7)


# --- sparsity ----------------------------------------------------------------------------
@pytest.mark.parametrize("force_autograd", [False, True], ids=["fast", "autograd"])
@pytest.mark.parametrize("kind", ["bernoulli-bernoulli", "gaussian-bernoulli", "bernoulli-relu",
                                  "gaussian_learned-bernoulli"])
def test_sparsity_adds_cost_times_mean_activation_error(kind, force_autograd, batch):
    """lambda (q_j - p) on the hidden bias and lambda <c_v>_data (q - p)^T on the weights."""
    rbm, v_data, v_model = batch(kind, seed=4)
    target, cost = 0.05, 0.3
    plain = run(LikelihoodGradient(force_autograd=force_autograd), rbm, v_data, v_model)
    sparse_obj = LikelihoodGradient(sparsity_target=target, sparsity_cost=cost,
                                    force_autograd=force_autograd)
    diag = sparse_obj.compute(rbm, v_data, v_model)
    sparse = grads(rbm)
    with torch.no_grad():
        q = rbm.hidden_mean(v_data).mean(0)
        d = cost * (q - target)
        cv = rbm.visible.coupling(v_data).mean(0)
    torch.testing.assert_close(diag["hidden_activation"], q.mean())
    torch.testing.assert_close(sparse["hidden.bias"] - plain["hidden.bias"], d)
    torch.testing.assert_close(sparse["connection.weights"] - plain["connection.weights"],
                               torch.outer(cv, d))
    torch.testing.assert_close(sparse["visible.bias"], plain["visible.bias"])


def test_sparsity_cost_is_ignored_without_a_target(batch):
    rbm, v_data, v_model = batch("bernoulli-bernoulli")
    a = run(LikelihoodGradient(), rbm, v_data, v_model)
    b = run(LikelihoodGradient(sparsity_cost=5.0), rbm, v_data, v_model)
    assert_grads_close(a, b, rtol=0, atol=0)


# --- the exact log-likelihood gradient -------------------------------------------------------
@pytest.mark.parametrize("force_autograd", [False, True], ids=["fast", "autograd"])
@pytest.mark.parametrize("kind", DISCRETE_VISIBLE)
def test_exact_model_average_gives_the_exact_log_likelihood_gradient(kind, force_autograd,
                                                                    batch, all_states):
    """With the model term averaged over p(v) exactly, the estimate is -d log L / d theta."""
    rbm, v_data, _ = batch(kind, seed=5, scale=0.8)
    states = all_states(rbm.visible)
    params = dict(rbm.named_parameters())
    neg_ll = rbm.free_energy(v_data).mean() + torch.logsumexp(-rbm.free_energy(states), 0)
    exact = dict(zip(params, torch.autograd.grad(neg_ll, list(params.values())), strict=True))
    with torch.no_grad():
        p = torch.softmax(-rbm.free_energy(states), 0)
    obj = LikelihoodGradient(force_autograd=force_autograd)
    # The estimator is affine in the empirical model distribution, so the p-weighted
    # average of single-particle estimates is the estimate under the exact distribution.
    total = {n: torch.zeros_like(t) for n, t in params.items()}
    for weight, state in zip(p, states, strict=True):
        for n, g in run(obj, rbm, v_data, state[None]).items():
            total[n] += weight * g
    assert_grads_close(total, exact, rtol=1e-9, atol=1e-10)


# --- centering ---------------------------------------------------------------------------
@pytest.fixture
def centered(batch):
    def make(kind="bernoulli-bernoulli", decay=0.1, seed=6):
        rbm, v_data, v_model = batch(kind, seed=seed)
        obj = LikelihoodGradient(centering=True, centering_decay=decay)
        obj.setup(rbm, v_data)
        return rbm, v_data, v_model, obj

    return make


def test_centering_setup_sets_offsets_from_the_data(centered):
    rbm, v_data, _, obj = centered("gaussian-bernoulli")
    with torch.no_grad():
        torch.testing.assert_close(obj.visible_offset, rbm.visible.coupling(v_data).mean(0))
        torch.testing.assert_close(obj.hidden_offset, rbm.hidden_mean(v_data).mean(0))


@pytest.mark.parametrize("kind", ["bernoulli-bernoulli", "gaussian-bernoulli", "bernoulli-relu",
                                  "softmax-bernoulli"])
def test_centered_gradient_is_melchior_transform_of_plain_gradient(kind, centered):
    """Melchior et al. (2016) in descent form, with lambda updated before use:

    gW_c = gW - mu gc^T - gb lambda^T,  gb_c = gb - gW_c lambda,  gc_c = gc - gW_c^T mu.
    """
    decay = 0.1
    rbm, v_data, v_model, obj = centered(kind, decay=decay)
    mu, lam0 = obj.visible_offset.clone(), obj.hidden_offset.clone()
    g = run(LikelihoodGradient(), rbm, v_data, v_model)
    c = run(obj, rbm, v_data, v_model)
    with torch.no_grad():
        lam = (1 - decay) * lam0 + decay * rbm.hidden.coupling(rbm.hidden_mean(v_data)).mean(0)
    torch.testing.assert_close(obj.hidden_offset, lam)
    gw = g["connection.weights"] - torch.outer(mu, g["hidden.bias"]) - torch.outer(
        g["visible.bias"], lam)
    torch.testing.assert_close(c["connection.weights"], gw)
    torch.testing.assert_close(c["visible.bias"], g["visible.bias"] - gw @ lam)
    torch.testing.assert_close(c["hidden.bias"], g["hidden.bias"] - gw.t() @ mu)
    # ... which is a different update direction from the plain one
    assert not torch.allclose(c["visible.bias"], g["visible.bias"])
    assert not torch.allclose(c["connection.weights"], g["connection.weights"])


@pytest.mark.parametrize("model_rows", ["same", "permuted", "repeated"])
def test_centering_has_the_same_fixed_point(model_rows, centered):
    """When the model particles have the data's statistics both gradients vanish."""
    rbm, v_data, _, obj = centered("bernoulli-bernoulli")
    if model_rows == "same":
        v_model = v_data.clone()
    elif model_rows == "permuted":
        v_model = v_data[torch.randperm(len(v_data), generator=torch.Generator().manual_seed(0))]
    else:
        v_model = v_data.repeat(3, 1)
    for objective in (obj, LikelihoodGradient()):
        for name, g in run(objective, rbm, v_data, v_model).items():
            torch.testing.assert_close(g, torch.zeros_like(g), atol=1e-12, rtol=0, msg=name)


def test_centering_needs_the_fast_path(batch):
    rbm, v_data, _ = batch("gaussian_learned-bernoulli")
    with pytest.raises(ConfigError, match="centering"):
        LikelihoodGradient(centering=True).setup(rbm, v_data)
    rbm, v_data, v_model = batch("bernoulli-bernoulli")
    forced = LikelihoodGradient(centering=True, force_autograd=True)
    with pytest.raises(ConfigError, match="centering"):
        forced.setup(rbm, v_data)
    with pytest.raises(ConfigError, match="centering"):
        forced.compute(rbm, v_data, v_model)


def test_centering_state_round_trip_and_setup_keeps_restored_offsets(centered):
    rbm, v_data, v_model, obj = centered()
    obj.compute(rbm, v_data, v_model)
    state = {k: v.clone() for k, v in obj.state_dict().items()}
    assert set(state) == {"visible_offset", "hidden_offset"}
    other = LikelihoodGradient(centering=True, centering_decay=0.1)
    other.load_state_dict(state)
    other.setup(rbm, v_model)  # a resumed run must keep its offsets, not refit them
    for k in state:
        assert torch.equal(other.state_dict()[k], state[k])
    a = run(obj, rbm, v_data, v_model)
    b = run(other, rbm, v_data, v_model)
    assert_grads_close(a, b, rtol=0, atol=0)
    assert LikelihoodGradient().state_dict() == {}


# --- mechanics ----------------------------------------------------------------------------
@pytest.mark.parametrize("force_autograd", [False, True], ids=["fast", "autograd"])
def test_compute_overwrites_previous_gradients(force_autograd, batch):
    rbm, v_data, v_model = batch("bernoulli-bernoulli", seed=7)
    obj = LikelihoodGradient(force_autograd=force_autograd)
    first = run(obj, rbm, v_data, v_model)
    for p in rbm.parameters():
        p.grad.fill_(123.0)  # stale gradients from elsewhere must not leak in
    second = run(obj, rbm, v_data, v_model)
    assert_grads_close(first, second, rtol=0, atol=1e-15)


def test_gradient_is_a_descent_direction_on_the_exact_negative_log_likelihood(batch,
                                                                              all_states):
    rbm, v_data, _ = batch("bernoulli-bernoulli", seed=8)
    states = all_states(rbm.visible)

    def nll():
        with torch.no_grad():
            return float(rbm.free_energy(v_data).mean()
                         + torch.logsumexp(-rbm.free_energy(states), 0))

    with torch.no_grad():
        p = torch.softmax(-rbm.free_energy(states), 0)
    # many exact model particles: the sample drawn with the exact probabilities
    idx = torch.multinomial(p, 20000, replacement=True,
                            generator=torch.Generator().manual_seed(0))
    LikelihoodGradient().compute(rbm, v_data, states[idx])
    before = nll()
    with torch.no_grad():
        for prm in rbm.parameters():
            prm -= 0.05 * prm.grad
    assert nll() < before


@pytest.mark.parametrize("kwargs", [
    {"sparsity_target": 0.0},
    {"sparsity_target": 1.0},
    {"sparsity_target": -0.1},
    {"sparsity_target": 0.1, "sparsity_cost": -1.0},
    {"centering_decay": 0.0},
    {"centering_decay": 1.5},
])
def test_bad_options_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        LikelihoodGradient(**kwargs)


# --- the reused buffers of the fast path ------------------------------------------------------
@pytest.mark.parametrize("kind", ["bernoulli-bernoulli", "gaussian-bernoulli", "bernoulli-relu"])
def test_reused_buffers_give_the_same_gradients_as_fresh_objectives(kind, batch, random_states):
    """One objective over changing batch sizes (its buffers are reused and rebuilt)
    agrees with a fresh objective and with autograd every time."""
    rbm, v_data, v_model = batch(kind, seed=3)
    reused = LikelihoodGradient(sparsity_target=0.2, sparsity_cost=0.3)
    short = random_states(rbm.visible, 4, seed=9)
    for vd, vm in ((v_data, v_model), (short, v_model), (v_data, short), (v_data, v_model)):
        g_reused = run(reused, rbm, vd, vm)
        g_fresh = run(LikelihoodGradient(sparsity_target=0.2, sparsity_cost=0.3), rbm, vd, vm)
        g_auto = run(LikelihoodGradient(sparsity_target=0.2, sparsity_cost=0.3,
                                        force_autograd=True), rbm, vd, vm)
        for name in g_fresh:
            assert torch.equal(g_reused[name], g_fresh[name]), name
        assert_grads_close(g_reused, g_auto)


def test_gradients_go_into_grad_tensors_owned_by_someone_else(batch):
    """A .grad that is not one of the objective's buffers (e.g. a distributed run's flat
    all-reduce buffer) is written in place, not replaced."""
    rbm, v_data, v_model = batch("bernoulli-bernoulli", seed=4)
    expected = run(LikelihoodGradient(), rbm, v_data, v_model)
    owned = {}
    for name, p in rbm.named_parameters():
        p.grad = torch.full_like(p, 7.0)
        owned[name] = p.grad
    LikelihoodGradient().compute(rbm, v_data, v_model)
    for name, p in rbm.named_parameters():
        assert p.grad is owned[name]
        assert torch.equal(p.grad, expected[name])


def test_an_objective_pickles_without_its_buffers(batch):
    import pickle

    rbm, v_data, v_model = batch("bernoulli-bernoulli", seed=5)
    obj = LikelihoodGradient(centering=True)
    obj.setup(rbm, v_data)
    run(obj, rbm, v_data, v_model)
    assert obj._buffers
    copy = pickle.loads(pickle.dumps(obj))
    assert copy._buffers == {}
    torch.testing.assert_close(copy.hidden_offset, obj.hidden_offset)
    assert_grads_close(run(copy, rbm, v_data, v_model), run(obj, rbm, v_data, v_model))



# --- model_norm="rows": scikit-learn's weighting of the model phase -------------------------
@pytest.mark.parametrize("force_autograd", [False, True], ids=["fast", "autograd"])
@pytest.mark.parametrize("kind", ["bernoulli-bernoulli", "gaussian-bernoulli", "bernoulli-relu"])
def test_rows_norm_is_the_gradient_of_the_model_sum_over_the_data_rows(kind, force_autograd,
                                                                       batch):
    """"rows": the gradient of mean F(v_data) - (sum F(v_model)) / B, B data rows and
    M != B particles (scikit-learn's lr / B (data sums - chain sums))."""
    rbm, v_data, v_model = batch(kind, seed=6)
    B, M = v_data.shape[0], v_model.shape[0]
    assert (B, M) == (11, 8)
    got = run(LikelihoodGradient(model_norm="rows", force_autograd=force_autograd),
              rbm, v_data, v_model)
    assert_grads_close(got, finite_difference(rbm, v_data, v_model, model_scale=1 / B),
                       rtol=1e-6, atol=1e-7)
    # ... which is not the "particles" gradient (its model part is M / B times smaller)
    mean = run(LikelihoodGradient(force_autograd=force_autograd), rbm, v_data, v_model)
    gap = (got["connection.weights"] - mean["connection.weights"]).abs().max()
    assert float(gap) > 1e-3


def test_rows_norm_equals_particles_when_as_many_particles_as_rows(batch):
    rbm, v_data, v_model = batch("bernoulli-bernoulli", seed=7)
    v_model = v_model.repeat(2, 1)[:v_data.shape[0]]  # M = B
    assert_grads_close(run(LikelihoodGradient(model_norm="rows"), rbm, v_data, v_model),
                       run(LikelihoodGradient(), rbm, v_data, v_model), rtol=0, atol=1e-15)


def test_rows_norm_options():
    with pytest.raises(ConfigError, match="model_norm"):
        LikelihoodGradient(model_norm="chains")
    with pytest.raises(ConfigError, match="centering needs model_norm='particles'"):
        LikelihoodGradient(centering=True, model_norm="rows")
