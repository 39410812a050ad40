"""Unit types against their contract: p(x | f) ∝ exp(-E0(x) + beta (bias + f) . c(x)).

Brute force is independent of the implementation: explicit E0 and c written out
here from the module docstring, enumeration for discrete layers and
``scipy.integrate.quad`` per unit for continuous ones.
"""

from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from boltzkit import (
    BernoulliUnits,
    ConfigError,
    DataError,
    GaussianUnits,
    ReLUUnits,
    SigmoidUnits,
    SoftmaxUnits,
    make_units,
)
from boltzkit.units import UNIT_TYPES, all_binary, units_from_config

UNIT_KINDS = ["bernoulli", "gaussian", "gaussian_learned", "relu", "sigmoid", "softmax"]
CONTINUOUS = ["gaussian", "gaussian_learned", "relu", "sigmoid"]
B = 4  # rows of fields


def betas():
    """Inverse temperatures to test: floats and one per-row (B, 1) tensor."""
    return [1.0, 0.37, 0.0, torch.tensor([[1.0], [0.6], [0.15], [0.0]], dtype=torch.float64)]


BETA_IDS = ["beta1", "beta0.37", "beta0", "beta_tensor"]


def beta_col(beta, rows: int = B) -> np.ndarray:
    """beta as a (rows, 1) numpy array."""
    if isinstance(beta, torch.Tensor):
        return beta.reshape(-1, 1).numpy()
    return np.full((rows, 1), beta)


def fields_for(units, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 1.5 * torch.randn(B, units.n, generator=g, dtype=torch.float64)


# --- explicit per-unit base energy and coupling (from the docstrings) --------------------
def unit_terms(units, i):
    """(E0, c, lo, hi) for unit i of a continuous layer, as Python scalar functions."""
    if isinstance(units, GaussianUnits):
        var = float(torch.exp(units.log_var[i].detach()))
        return (lambda x: x * x / (2 * var)), (lambda x: x / var), -math.inf, math.inf
    if isinstance(units, ReLUUnits):
        return (lambda x: 0.5 * x * x), (lambda x: x), 0.0, math.inf
    if isinstance(units, SigmoidUnits):
        return (lambda x: 0.0), (lambda x: x), 0.0, 1.0
    raise TypeError(type(units))


def quad_moments(units, i, a):
    """log Z, E[x], E[x^2] of exp(-E0(x) + a c(x)) for unit i by adaptive quadrature."""
    e0, c, lo, hi = unit_terms(units, i)

    def logf(x):
        return -e0(x) + a * c(x)

    # locate the mode to normalise and to give quad a sensible finite window
    if isinstance(units, GaussianUnits):
        mode, width = a, 40.0 * math.sqrt(float(torch.exp(units.log_var[i].detach())))
    elif isinstance(units, ReLUUnits):
        mode, width = max(a, 0.0), 40.0
    else:
        mode, width = (1.0 if a > 0 else 0.0), 1.0
    lo_w, hi_w = max(lo, mode - width), min(hi, mode + width)
    top = logf(mode)
    kw = dict(epsabs=1e-14, epsrel=1e-12, limit=200, points=[mode] if lo_w < mode < hi_w else None)
    with warnings.catch_warnings():  # E[x] ~ 0 cannot meet epsrel; the asserts judge accuracy
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        z = integrate.quad(lambda x: math.exp(logf(x) - top), lo_w, hi_w, **kw)[0]
        m1 = integrate.quad(lambda x: x * math.exp(logf(x) - top), lo_w, hi_w, **kw)[0]
        m2 = integrate.quad(lambda x: x * x * math.exp(logf(x) - top), lo_w, hi_w, **kw)[0]
    return math.log(z) + top, m1 / z, m2 / z


def brute_force(units, field, beta, all_states):
    """(log_partition (B,), mean (B, n), second moment (B, n)) by brute force."""
    a = (units.bias.detach().numpy() + field.numpy()) * beta_col(beta, field.shape[0])
    if units.discrete:
        s = all_states(units).numpy()  # (K, n)
        logits = a @ s.T  # (B, K): E0 = 0 and c(x) = x
        top = logits.max(1, keepdims=True)
        w = np.exp(logits - top)
        z = w.sum(1, keepdims=True)
        p = w / z
        return (np.log(z[:, 0]) + top[:, 0]), p @ s, p @ (s * s)
    log_z = np.zeros(a.shape[0])
    mean = np.zeros(a.shape)
    second = np.zeros(a.shape)
    for r in range(a.shape[0]):
        for i in range(a.shape[1]):
            lz, m1, m2 = quad_moments(units, i, float(a[r, i]))
            log_z[r] += lz
            mean[r, i], second[r, i] = m1, m2
    return log_z, mean, second


# --- log_partition and mean against brute force -------------------------------------------
@pytest.mark.parametrize("beta", betas(), ids=BETA_IDS)
@pytest.mark.parametrize("kind", UNIT_KINDS)
def test_log_partition_and_mean_match_brute_force(kind, beta, make_layer, all_states):
    units = make_layer(kind, seed=11)
    field = fields_for(units)
    log_z, mean, _ = brute_force(units, field, beta, all_states)
    with torch.no_grad():
        got_z = units.log_partition(field, beta)
        got_mean = units.mean(field, beta)
    assert got_z.shape == (B,)
    assert got_mean.shape == field.shape
    np.testing.assert_allclose(got_z.numpy(), log_z, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got_mean.numpy(), mean, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("beta", betas(), ids=BETA_IDS)
@pytest.mark.parametrize("kind", UNIT_KINDS)
def test_log_partition_gradient_is_beta_times_mean_coupling(kind, beta, make_layer):
    """d log Z / d field = beta E[c(x)]: what free energies and the fast gradient rely on."""
    units = make_layer(kind, seed=5)
    field = fields_for(units, seed=8).requires_grad_(True)
    units.log_partition(field, beta).sum().backward()
    expected = torch.as_tensor(beta_col(beta)) * units.coupling(units.mean(field.detach(), beta))
    torch.testing.assert_close(field.grad, expected.detach(), rtol=1e-9, atol=1e-10)


def test_log_partition_of_a_batch_is_the_sum_over_units(make_layer):
    units = make_layer("relu", seed=2)
    field = fields_for(units)
    whole = units.log_partition(field)
    per_unit = []
    for i in range(units.n):
        single = ReLUUnits(1).double()
        with torch.no_grad():
            single.bias.copy_(units.bias[i:i + 1])
        per_unit.append(single.log_partition(field[:, i:i + 1]))
    torch.testing.assert_close(whole, torch.stack(per_unit, 1).sum(1))


# --- sampling ---------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [1.0, 0.37, "tensor"])
@pytest.mark.parametrize("kind", UNIT_KINDS)
def test_sample_moments_match_mean_and_brute_force(kind, beta, make_layer, all_states):
    """Sample means (and second moments) within 5 standard errors of the exact ones."""
    units = make_layer(kind, seed=7)
    field = fields_for(units, seed=4)
    n_draws = 20000
    big_field = field.repeat(n_draws, 1)  # row r of draw d is big_field[d * B + r]
    if beta == "tensor":
        beta_rows = torch.tensor([[1.0], [0.6], [0.15], [0.0]], dtype=torch.float64)
        big_beta = beta_rows.repeat(n_draws, 1)
    else:
        beta_rows = big_beta = beta
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        x = units.sample(big_field, big_beta, generator=gen).reshape(n_draws, B, units.n)
        mean = units.mean(field, beta_rows)
    _, _, second = brute_force(units, field, beta_rows, all_states)
    for stat, target in ((x, mean.numpy()), (x * x, second)):
        est = stat.mean(0).numpy()
        se = stat.std(0).numpy() / math.sqrt(n_draws)
        assert np.all(np.abs(est - target) <= 5 * se + 1e-12), (est, target, se)


@pytest.mark.parametrize("kind", UNIT_KINDS)
def test_sample_values_lie_in_the_support(kind, make_layer, gen):
    units = make_layer(kind, seed=1, scale=3.0)
    field = 4.0 * torch.randn(500, units.n, generator=gen, dtype=torch.float64)
    x = units.sample(field, generator=gen)
    assert x.shape == field.shape and x.dtype == field.dtype
    assert torch.isfinite(x).all()
    units.validate(x)  # every sample is a valid state of the layer


def test_softmax_samples_are_one_hot_per_group(make_layer, gen):
    units = make_layer("softmax", seed=3, scale=2.0)
    field = torch.randn(2000, units.n, generator=gen, dtype=torch.float64)
    for beta in (1.0, 0.0, 0.5):
        x = units.sample(field, beta, generator=gen).reshape(-1, units.groups, units.group_size)
        assert set(x.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(x.sum(-1), torch.ones(x.shape[:2], dtype=x.dtype))


def test_sample_is_reproducible_with_a_seeded_generator(make_layer):
    for kind in UNIT_KINDS:
        units = make_layer(kind, seed=2)
        field = fields_for(units)
        a = units.sample(field, generator=torch.Generator().manual_seed(5))
        b = units.sample(field, generator=torch.Generator().manual_seed(5))
        assert torch.equal(a, b), kind


def test_sample_uses_a_given_mean(make_layer):
    """``mean=`` lets callers pass an already computed E[x | f] (Bernoulli, softmax)."""
    units = make_layer("bernoulli")
    field = torch.zeros(3, units.n, dtype=torch.float64)
    ones = torch.ones_like(field)
    assert torch.equal(units.sample(field, mean=ones), ones)
    assert torch.equal(units.sample(field, mean=torch.zeros_like(field)), torch.zeros_like(field))


def test_sigmoid_mean_field_samples_are_the_mean(make_layer):
    units = make_layer("sigmoid_mean_field", seed=4)
    field = fields_for(units)
    torch.testing.assert_close(units.sample(field, 0.5), units.mean(field, 0.5))


def test_init_state_is_a_draw_at_beta_zero(make_layer, gen):
    for kind in UNIT_KINDS:
        units = make_layer(kind, seed=9, scale=3.0)  # a big bias must not matter at beta = 0
        x = units.init_state(4000, gen)
        assert x.shape == (4000, units.n)
        units.validate(x)
        if kind in ("bernoulli", "softmax", "sigmoid"):
            expected = units.mean(torch.zeros(1, units.n, dtype=x.dtype), 0.0)
            assert torch.allclose(x.mean(0), expected[0], atol=5 * 0.5 / math.sqrt(4000))


# --- energy -----------------------------------------------------------------------------
def explicit_energy(units, x, beta):
    """E0(x) - beta * bias . c(x), written out per unit type."""
    b = units.bias.detach()
    if isinstance(units, GaussianUnits):
        inv_var = torch.exp(-units.log_var.detach())
        e0, c = 0.5 * (x * x * inv_var).sum(1), x * inv_var
    elif isinstance(units, ReLUUnits):
        e0, c = 0.5 * (x * x).sum(1), x
    else:
        e0, c = torch.zeros(x.shape[0], dtype=x.dtype), x
    beta = beta.reshape(-1) if isinstance(beta, torch.Tensor) else beta
    return e0 - beta * (c * b).sum(1)


@pytest.mark.parametrize("beta", betas(), ids=BETA_IDS)
@pytest.mark.parametrize("kind", UNIT_KINDS)
def test_energy_matches_the_contract(kind, beta, make_layer, random_states):
    units = make_layer(kind, seed=6)
    x = random_states(units, B, seed=1)
    with torch.no_grad():
        got = units.energy(x, beta)
    assert got.shape == (B,)
    torch.testing.assert_close(got, explicit_energy(units, x, beta))


# --- validation -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", UNIT_KINDS)
def test_validate_accepts_valid_states(kind, make_layer, random_states):
    units = make_layer(kind)
    units.validate(random_states(units, 10))


@pytest.mark.parametrize("kind", UNIT_KINDS)
def test_validate_rejects_bad_shapes_and_non_finite_values(kind, make_layer, random_states):
    units = make_layer(kind)
    good = random_states(units, 6)
    with pytest.raises(DataError, match="shape"):
        units.validate(good[:, :-1])
    with pytest.raises(DataError, match="shape"):
        units.validate(good[0])
    with pytest.raises(DataError, match="shape"):
        units.validate(good[None])
    with pytest.raises(DataError, match="empty"):
        units.validate(good[:0])
    for bad_value in (math.nan, math.inf, -math.inf):
        bad = good.clone()
        bad[3, 1] = bad_value
        with pytest.raises(DataError, match=r"NaN/inf.*row 4, 1-based"):  # index 3
            units.validate(bad, name="my data")


@pytest.mark.parametrize("value", [0.5, 2.0, -1.0])
def test_validate_bernoulli_needs_binary_data(value, make_layer):
    units = make_layer("bernoulli")
    x = torch.zeros(3, units.n, dtype=torch.float64)
    x[1, 2] = value
    with pytest.raises(DataError, match="binary"):
        units.validate(x)


@pytest.mark.parametrize("row", [0, 1336, 1337, 2999])
def test_validate_bernoulli_checks_every_block_of_a_large_set(row):
    """The binary check runs in blocks of ~1M values: a bad value in any block is found."""
    units = BernoulliUnits(784)
    x = (torch.rand(3000, 784, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    units.validate(x)
    x[row, 783] = 0.25
    with pytest.raises(DataError, match="binary.*0.25"):
        units.validate(x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_all_binary_agrees_with_the_plain_comparison_bit_pattern_by_bit_pattern(dtype):
    """Every 16-bit float value one at a time (exhaustive), and 2^20 float32 bit patterns
    (both signs, every exponent, NaN and inf among them) plus the neighbours of 0 and 1."""
    if dtype == torch.float32:
        bits = torch.randint(-(2**31), 2**31, (1 << 20,),
                             generator=torch.Generator().manual_seed(0), dtype=torch.int64)
        values = bits.to(torch.int32).view(torch.float32)
        edges = torch.tensor([0.0, -0.0, 1.0, 1e-45, -1e-45, 1 - 2**-24, 1 + 2**-23,
                              float("nan"), float("inf"), -float("inf")])
        values = torch.cat([values, edges])
    else:
        values = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    expected = (values == 0) | (values == 1)
    assert 0 < int(expected.sum()) < values.numel()
    # one value at a time would take minutes: a value's verdict is its own row's
    # x - x*x, so check the elementwise quantity all_binary reduces, then the reduction
    got = torch.addcmul(values, values, values, value=-1.0) == 0
    assert torch.equal(got, expected)
    assert all_binary(values[expected]) and not all_binary(values)
    for i in torch.nonzero(~expected).flatten()[:: max(1, int((~expected).sum()) // 50)]:
        assert not all_binary(torch.cat([values[expected][:5], values[i:i + 1]]))


@pytest.mark.parametrize("value", [-0.01, 1.01, 255.0])
def test_validate_sigmoid_needs_unit_interval(value, make_layer):
    units = make_layer("sigmoid")
    x = torch.full((3, units.n), 0.5, dtype=torch.float64)
    x[2, 0] = value
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        units.validate(x)
    x[2, 0] = 1.0
    units.validate(x)


def test_validate_relu_needs_non_negative_data(make_layer):
    units = make_layer("relu")
    x = torch.ones(2, units.n, dtype=torch.float64)
    x[0, 0] = -1e-3
    with pytest.raises(DataError, match="negative"):
        units.validate(x)


@pytest.mark.parametrize("row", [
    [1, 1, 0, 0, 1, 0],      # two ones in a group
    [0.5, 0.5, 0, 0, 1, 0],  # fractional
    [2, 0, 0, 0, 1, 0],      # not 0/1
    [-1, 1, 1, 0, 1, 0],     # sums to 1 but negative
])
def test_validate_softmax_needs_one_hot_groups(row, make_layer):
    units = make_layer("softmax")
    x = torch.tensor([[0, 1, 0, 1, 0, 0], row], dtype=torch.float64)
    with pytest.raises(DataError, match=r"row 2 \(1-based\) is not one-hot"):
        units.validate(x)


def test_validate_softmax_accepts_an_all_zero_group_as_missing(make_layer):
    units = make_layer("softmax")
    units.validate(torch.tensor([[0, 0, 0, 0, 0, 1]], dtype=torch.float64))


# --- construction and configuration -----------------------------------------------------
def test_make_units_builds_every_type_and_alias():
    assert isinstance(make_units("bernoulli", 3), BernoulliUnits)
    assert isinstance(make_units("binary", 3), BernoulliUnits)
    assert isinstance(make_units("gaussian", 3, std=2.0), GaussianUnits)
    assert isinstance(make_units("relu", 3), ReLUUnits)
    assert isinstance(make_units("nrelu", 3), ReLUUnits)
    assert isinstance(make_units("sigmoid", 3), SigmoidUnits)
    sm = make_units("categorical", 6, group_size=2)
    assert isinstance(sm, SoftmaxUnits) and sm.groups == 3
    assert sorted(UNIT_TYPES) == ["bernoulli", "gaussian", "relu", "sigmoid", "softmax"]


@pytest.mark.parametrize("call", [
    lambda: make_units("boltzmann", 3),
    lambda: make_units("Bernoulli", 3),
    lambda: make_units("bernoulli", 3, std=1.0),        # option of another type
    lambda: make_units("softmax", 6),                   # missing group_size
    lambda: make_units("softmax", 7, group_size=3),     # not whole groups
    lambda: make_units("softmax", 6, group_size=1),
    lambda: make_units("gaussian", 3, std=0.0),
    lambda: make_units("gaussian", 3, std=-1.0),
    lambda: make_units("gaussian", 3, std=math.nan),
    lambda: make_units("gaussian", 3, std=math.inf),
    lambda: make_units("bernoulli", 0),
    lambda: make_units("bernoulli", -2),
    lambda: make_units("bernoulli", 2.5),
    lambda: units_from_config({"n": 3}),
    lambda: units_from_config({"kind": "bernoulli"}),
])
def test_bad_unit_configurations_raise_config_error(call):
    with pytest.raises(ConfigError):
        call()


def test_unknown_unit_name_lists_the_choices():
    with pytest.raises(ConfigError, match="bernoulli.*gaussian.*relu.*sigmoid.*softmax"):
        make_units("spin", 4)


@pytest.mark.parametrize("kind", UNIT_KINDS + ["sigmoid_mean_field"])
def test_config_round_trip(kind, make_layer):
    units = make_layer(kind)
    rebuilt = units_from_config(units.config())
    assert type(rebuilt) is type(units)
    assert rebuilt.config() == units.config()


def test_gaussian_variance_is_a_parameter_only_when_learned():
    fixed = GaussianUnits(4, std=2.0)
    learned = GaussianUnits(4, std=2.0, learn_variance=True)
    assert [n for n, _ in fixed.named_parameters()] == ["bias"]
    assert "log_var" in dict(fixed.named_buffers())
    assert sorted(n for n, _ in learned.named_parameters()) == ["bias", "log_var"]
    torch.testing.assert_close(fixed.variance(), torch.full((4,), 4.0))
    assert fixed.bias_only and not learned.bias_only
    for cls in (BernoulliUnits, ReLUUnits, SigmoidUnits):
        assert cls(3).bias_only
    assert SoftmaxUnits(4, 2).bias_only


# --- enumeration ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bernoulli", "softmax"])
def test_enumerate_states_lists_every_state_once(kind, make_layer, all_states):
    units = make_layer(kind)
    for chunk in (65536, 4):
        got = torch.cat(list(units.enumerate_states(chunk=chunk)))
        assert got.shape[0] == units.n_states
        assert {tuple(r) for r in got.tolist()} == {tuple(r) for r in all_states(units).tolist()}
        assert len({tuple(r) for r in got.tolist()}) == units.n_states
        assert max(len(c) for c in units.enumerate_states(chunk=chunk)) <= chunk


def test_continuous_units_cannot_be_enumerated(make_layer):
    for kind in CONTINUOUS:
        units = make_layer(kind)
        assert units.n_states is None
        with pytest.raises(ConfigError, match="continuous"):
            next(iter(units.enumerate_states()))


def test_enumeration_refuses_huge_layers():
    with pytest.raises(ConfigError):
        next(iter(BernoulliUnits(40).enumerate_states()))
    with pytest.raises(ConfigError):
        next(iter(SoftmaxUnits(64, group_size=4).enumerate_states()))


# --- fit_bias ---------------------------------------------------------------------------
def test_bernoulli_fit_bias_matches_data_marginals(gen):
    units = BernoulliUnits(6).double()
    p = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 0.25], dtype=torch.float64)
    x = (torch.rand(5000, 6, generator=gen, dtype=torch.float64) < p).double()
    with torch.no_grad():
        units.bias.copy_(units.fit_bias(x))
    zero = torch.zeros(1, 6, dtype=torch.float64)
    torch.testing.assert_close(units.mean(zero)[0], x.mean(0), rtol=1e-5, atol=1e-5)
    # constant columns are clipped to a finite bias
    assert torch.isfinite(units.fit_bias(torch.zeros(3, 6))).all()


def test_softmax_fit_bias_matches_smoothed_category_frequencies(random_states):
    units = SoftmaxUnits(6, group_size=3).double()
    x = random_states(units, 50, seed=3)
    with torch.no_grad():
        units.bias.copy_(units.fit_bias(x))
    counts = x.reshape(50, 2, 3).sum(0) + 1.0
    expected = (counts / counts.sum(-1, keepdim=True)).reshape(-1)
    torch.testing.assert_close(units.mean(torch.zeros(1, 6, dtype=torch.float64))[0], expected)


def test_gaussian_fit_bias_is_the_data_mean(gen):
    units = GaussianUnits(3, std=0.5)
    x = torch.randn(100, 3, generator=gen) + torch.tensor([1.0, -2.0, 0.5])
    torch.testing.assert_close(units.fit_bias(x), x.mean(0))


# --- numerical properties (hypothesis) ----------------------------------------------------
finite_fields = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(a=finite_fields, b=finite_fields)
def test_sigmoid_mean_is_in_unit_interval_and_monotone(a, b):
    units = SigmoidUnits(1).double().requires_grad_(False)
    lo, hi = sorted((a, b))
    m = units.mean(torch.tensor([[lo], [hi]], dtype=torch.float64))
    assert 0.0 <= float(m[0]) <= 1.0 and 0.0 <= float(m[1]) <= 1.0
    assert float(m[0]) <= float(m[1]) + 1e-15


@settings(max_examples=200, deadline=None)
@given(a=st.floats(min_value=-300, max_value=300, allow_nan=False))
def test_sigmoid_log_partition_and_mean_match_high_precision(a):
    """log((e^a - 1)/a) and 1/(1 - e^-a) - 1/a, incl. the series branch near a = 0."""
    if abs(a) < 1e-12:  # the references below cancel; the series is exact to 1e-36 here
        ref_z, ref_m = a / 2 + a * a / 24, 0.5 + a / 12
    else:
        with mpmath.workdps(60):
            ma = mpmath.mpf(a)
            ref_z = mpmath.log(mpmath.expm1(ma) / ma)
            ref_m = -1 / mpmath.expm1(-ma) - 1 / ma
    units = SigmoidUnits(1).double().requires_grad_(False)
    f = torch.tensor([[a]], dtype=torch.float64)
    assert math.isclose(float(units.log_partition(f)), float(ref_z), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(float(units.mean(f)), float(ref_m), rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigmoid_is_accurate_near_the_series_switch(dtype):
    values = [-2e-3, -1.001e-3, -0.999e-3, 0.0, 0.999e-3, 1.001e-3, 2e-3]
    with mpmath.workdps(60):
        ref_z = [float(mpmath.log(mpmath.expm1(mpmath.mpf(a)) / a)) if a else 0.0
                 for a in values]
        ref_m = [float(-1 / mpmath.expm1(-mpmath.mpf(a)) - 1 / mpmath.mpf(a)) if a else 0.5
                 for a in values]
    units = SigmoidUnits(1).to(dtype)
    a = torch.tensor(values, dtype=dtype)[:, None]
    with torch.no_grad():
        got_m, got_z = units.mean(a)[:, 0].double(), units.log_partition(a).double()
    # float32 cancels in 1/(1 - e^-a) - 1/a just above the switch: ~1e-4 is what it gets;
    # float64 is limited by the series 1/2 + a/12 (next term a^3/720 ~ 1.4e-12)
    mean_tol, z_tol = (1e-4, 1e-6) if dtype == torch.float32 else (1e-11, 1e-13)
    torch.testing.assert_close(got_m, torch.tensor(ref_m, dtype=torch.float64), rtol=0,
                               atol=mean_tol)
    torch.testing.assert_close(got_z, torch.tensor(ref_z, dtype=torch.float64), rtol=0,
                               atol=z_tol)


@settings(max_examples=100, deadline=None)
@given(a=st.floats(min_value=-1e30, max_value=1e30, allow_nan=False),
       use_float32=st.booleans())
def test_bernoulli_is_finite_for_huge_fields(a, use_float32):
    dtype = torch.float32 if use_float32 else torch.float64
    units = BernoulliUnits(2).to(dtype).requires_grad_(False)
    f = torch.tensor([[a, -a]], dtype=dtype)
    z = units.log_partition(f)
    m = units.mean(f)
    assert torch.isfinite(z).all() and torch.isfinite(m).all()
    assert float(z) >= abs(a) * (1 - 1e-6)  # softplus(a) + softplus(-a) >= |a|
    assert ((m >= 0) & (m <= 1)).all()
    x = units.sample(f, generator=torch.Generator().manual_seed(0))
    assert set(x.flatten().tolist()) <= {0.0, 1.0}


@settings(max_examples=100, deadline=None)
@given(logits=st.lists(st.floats(min_value=-500, max_value=500, allow_nan=False),
                       min_size=6, max_size=6))
def test_softmax_mean_is_a_distribution_per_group(logits):
    units = SoftmaxUnits(6, group_size=3).double().requires_grad_(False)
    m = units.mean(torch.tensor([logits], dtype=torch.float64)).reshape(2, 3)
    assert torch.isfinite(m).all() and (m >= 0).all()
    torch.testing.assert_close(m.sum(-1), torch.ones(2, dtype=torch.float64))
    z = units.log_partition(torch.tensor([logits], dtype=torch.float64))
    assert torch.isfinite(z).all()


def _relu_reference(m: float) -> tuple[float, float]:
    """(E[x], log Z) of exp(-x^2/2 + m x) on x >= 0, to 50 digits."""
    with mpmath.workdps(50):
        mm = mpmath.mpf(m)
        big_phi = mpmath.ncdf(mm)
        mean = mm + mpmath.npdf(mm) / big_phi
        log_z = mm * mm / 2 + mpmath.log(mpmath.sqrt(2 * mpmath.pi) * big_phi)
        return float(mean), float(log_z)


@settings(max_examples=200, deadline=None)
@given(m=st.floats(min_value=-10, max_value=30, allow_nan=False))
def test_relu_mean_and_log_partition_match_high_precision(m):
    """Truncated N(m, 1) on x >= 0.

    E[x] = m + phi(m)/Phi(m) and log Z = m^2/2 + log(sqrt(2 pi) Phi(m)).
    """
    ref_mean, ref_z = _relu_reference(m)
    units = ReLUUnits(1).double().requires_grad_(False)
    f = torch.tensor([[m]], dtype=torch.float64)
    assert math.isclose(float(units.mean(f)), ref_mean, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(float(units.log_partition(f)), ref_z, rel_tol=1e-9, abs_tol=1e-9)
    assert float(units.mean(f)) >= max(m, 0.0)


@pytest.mark.parametrize("m", [
    -10.0,
    -10.5,
    -12.0,
    -15.0,
    -30.0,
    -45.0,
])
def test_relu_float64_is_accurate_where_the_tail_formulas_start(m):
    ref_mean, ref_z = _relu_reference(m)
    units = ReLUUnits(1).double().requires_grad_(False)
    f = torch.tensor([[m]], dtype=torch.float64)
    assert math.isclose(float(units.mean(f)), ref_mean, rel_tol=1e-9)
    assert math.isclose(float(units.log_partition(f)), ref_z, rel_tol=1e-10, abs_tol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relu_is_stable_for_very_negative_fields(dtype):
    """E[x] ~ 1/|m| and log Z ~ -log|m|: no cancellation of two huge terms, in any dtype."""
    ms = [-50.0, -100.0, -300.0, -1000.0, -1e4]
    units = ReLUUnits(1).to(dtype).requires_grad_(False)
    f = torch.tensor([[m] for m in ms], dtype=dtype)
    means = units.mean(f).flatten().tolist()
    log_zs = units.log_partition(f).tolist()
    for m, mean, log_z in zip(ms, means, log_zs, strict=True):
        ref_mean, ref_z = _relu_reference(m)
        assert mean > 0.0
        assert math.isclose(mean, ref_mean, rel_tol=1e-5), (m, mean, ref_mean)
        assert math.isclose(log_z, ref_z, rel_tol=1e-5), (m, log_z, ref_z)


@pytest.mark.parametrize("m", [
    -3.0,
    -8.0,
    -10.5,
    -45.0,
    -300.0,
])
def test_relu_samples_match_the_exact_mean_for_negative_fields(m):
    """Exact samples in the far tail too: 200k draws agree with E[x] within 5 SE."""
    units = ReLUUnits(1).double().requires_grad_(False)
    x = units.sample(torch.full((200000, 1), m, dtype=torch.float64),
                     generator=torch.Generator().manual_seed(0))
    assert (x >= 0).all() and (x > 0).any()
    ref_mean, _ = _relu_reference(m)
    se = float(x.std()) / math.sqrt(len(x))
    assert abs(float(x.mean()) - ref_mean) < 5 * se, (float(x.mean()), ref_mean, se)


# --- the bulk uniform source -------------------------------------------------------------
@pytest.mark.parametrize("dtype,bits", [(torch.float32, 24), (torch.float64, 53)])
def test_bulk_uniform_is_reproducible_in_range_and_full_resolution(dtype, bits):
    from boltzkit.units import uniform_

    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    a = uniform_(torch.empty(40001, dtype=dtype), gen)
    gen.set_state(state)  # the state lives in the torch generator (checkpoints keep it)
    b = uniform_(torch.empty(40001, dtype=dtype), gen)
    assert torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) < 1.0
    k = a.double() * 2.0**bits
    assert torch.equal(k, k.floor())  # on the grid of 2^-bits ...
    assert 0.48 < float((k % 2).mean()) < 0.52  # ... and the lowest bit is random
    assert abs(float(a.double().mean()) - 0.5) < 0.01
    assert abs(float(a.double().var()) - 1.0 / 12.0) < 0.005
    # Consecutive values are not correlated (they come from one 64-bit word in pairs).
    x = a.double() - 0.5
    assert abs(float((x[:-1] * x[1:]).mean())) < 0.002


def test_bulk_uniform_fills_strided_tensors_and_advances_the_generator():
    from boltzkit.units import uniform_

    gen = torch.Generator().manual_seed(4)
    t = uniform_(torch.full((70, 30), -1.0).t(), gen)
    assert float(t.min()) >= 0.0 and float(t.max()) < 1.0
    u1, u2 = uniform_(torch.empty(1000), gen), uniform_(torch.empty(1000), gen)
    assert not torch.equal(u1, u2)


def test_bernoulli_samples_match_their_probabilities_at_bulk_size():
    units = BernoulliUnits(50)
    gen = torch.Generator().manual_seed(5)
    p = torch.linspace(0.0, 1.0, 50).expand(4000, 50).contiguous()
    x = units.sample(p, generator=gen, mean=p)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    freq = x.mean(0)
    sd = (p[0] * (1 - p[0]) / 4000).sqrt()
    assert bool(((freq - p[0]).abs() <= 5 * sd + 1e-12).all())
    assert float(freq[0]) == 0.0 and float(freq[-1]) == 1.0
