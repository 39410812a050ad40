"""Library pieces for real-valued (grey-level) RBMs: standardiser, Jacobian, base rates,
improper models under AIS, and the spectral-norm constraint."""

from __future__ import annotations

import math

import pytest
import torch

from boltzkit.constraints import SpectralNormLimit, spectral_norm
from boltzkit.data import Standardizer
from boltzkit.errors import ConfigError, DataError
from boltzkit.metrics import ais_log_z, exact_log_z, log_likelihood
from boltzkit.objectives import LikelihoodGradient
from boltzkit.rbm import make_rbm
from boltzkit.sampling import make_sampler
from boltzkit.training import Trainer
from boltzkit.units import SigmoidUnits


def _grey(n=200, d=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g)
    x[:, 0] = 0.0  # a constant "border pixel"
    x[:, 1] = torch.where(x[:, 1] > 0.99, x[:, 1], torch.zeros(()))  # nearly constant
    return x


def test_standardizer_floors_constant_features_and_round_trips():
    x = _grey()
    st = Standardizer(eps=0.05).fit(x)
    assert st.n_floored >= 1
    assert float(st.scale[0]) == pytest.approx(0.05)
    z = st.transform(x)
    assert bool(torch.isfinite(z).all()) and float(z.abs().max()) <= 1 / 0.05 + 1e-4
    assert torch.allclose(st.inverse_transform(z), x, atol=1e-6)
    free = z[:, 2:]
    assert torch.allclose(free.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(free.std(0, unbiased=False), torch.ones(5), atol=1e-4)
    assert st.log_jacobian == pytest.approx(-float(torch.log(st.scale.double()).sum()))
    again = Standardizer.from_dict(st.to_dict())
    assert torch.equal(again.transform(x), z) and again.eps == 0.05


def test_standardizer_errors_are_clear():
    with pytest.raises(ConfigError, match="eps"):
        Standardizer(eps=0.0)
    with pytest.raises(ConfigError, match="not fitted"):
        Standardizer().transform(torch.zeros(2, 3))
    st = Standardizer().fit(torch.rand(5, 3))
    with pytest.raises(DataError, match="3"):
        st.transform(torch.rand(5, 4))
    with pytest.raises(DataError, match="NaN"):
        st.fit(torch.tensor([[float("nan"), 1.0]]))


def test_log_jacobian_turns_a_standardised_density_into_the_original_one():
    """A Gaussian RBM on z = (x - m) / s is one with std s on x: log p(x) = log p(z) - sum log s."""
    torch.manual_seed(0)
    n_v, n_h = 7, 5
    x = _grey(60, n_v) * 0.8 + 0.1
    st = Standardizer(eps=0.05).fit(x)
    s, m = st.scale.double(), st.mean.double()
    a = make_rbm(n_v, n_h, visible="gaussian", seed=1).double()
    with torch.no_grad():
        a.connection.weights.normal_(0, 0.3)
        a.visible.bias.normal_(0, 0.5)
        a.hidden.bias.normal_(0, 0.5)
    b = make_rbm(n_v, n_h, visible="gaussian", seed=1).double()
    with torch.no_grad():  # the same model in x units: sigma_i = s_i
        b.visible.log_var.copy_(2 * torch.log(s))
        b.visible.bias.copy_(m + s * a.visible.bias)
        b.connection.weights.copy_(s[:, None] * a.connection.weights)
        # hidden field (x / s^2) W_B = (x / s) W, while z W = (x / s) W - (m / s) W
        b.hidden.bias.copy_(a.hidden.bias - (m / s) @ a.connection.weights)
    z = st.transform(x).double()
    ll_z = log_likelihood(a, z, log_z=exact_log_z(a), log_jacobian=st.log_jacobian)
    ll_x = log_likelihood(b, x.double(), log_z=exact_log_z(b))
    assert ll_z["log_jacobian"] == st.log_jacobian
    assert ll_z["log_likelihood"] == pytest.approx(ll_x["log_likelihood"], abs=1e-4)
    assert ll_z["log_likelihood_upper"] == pytest.approx(ll_x["log_likelihood_upper"], abs=1e-4)
    with pytest.raises(ConfigError, match="log_jacobian"):
        log_likelihood(a, z, log_z=0.0, log_jacobian=math.inf)


def test_sigmoid_fit_bias_matches_the_data_means():
    x = _grey(500, 7)
    u = SigmoidUnits(7)
    b = u.fit_bias(x)
    target = x.mean(0).clamp(1e-3, 1 - 1e-3)
    got = SigmoidUnits._mean_of(b.double())
    assert torch.allclose(got.float(), target, atol=1e-5)
    assert float(b[0]) < -900  # an always-zero pixel: mean 1e-3, a ~ -1000
    # and the AIS base model built from it is exact for a model without couplings
    rbm = make_rbm(7, 3, visible="sigmoid", seed=0)
    with torch.no_grad():
        rbm.connection.weights.zero_()
        rbm.visible.bias.copy_(b)
    res = ais_log_z(rbm, data=x, n_chains=10, n_steps=20)
    assert res.log_z == pytest.approx(exact_log_z(rbm), abs=1e-4)


def test_ais_reports_an_improper_gaussian_relu_model_as_infinite_not_nan():
    rbm = make_rbm(6, 4, visible="gaussian", hidden="relu", seed=0)
    with torch.no_grad():
        rbm.connection.weights.fill_(1.0)  # sigma_max = sqrt(24) >> 1: no finite Z
    res = ais_log_z(rbm, n_chains=8, n_steps=3000, generator=torch.Generator().manual_seed(0),
                    reverse=True)
    assert res.log_z == math.inf and not res.reliable
    assert "improper" in res.warning
    ll = log_likelihood(rbm, torch.zeros(3, 6), log_z=res)
    assert ll["log_likelihood"] == -math.inf and not math.isnan(ll["log_likelihood"])
    assert res.to_dict()["log_z"] is None


def test_spectral_norm_limit_holds_during_training_and_after_project():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(300, 9, generator=g) @ torch.randn(9, 9, generator=g)
    rbm = make_rbm(9, 6, visible="gaussian", hidden="relu", seed=0)
    trainer = Trainer(rbm, make_sampler("cd", 1), LikelihoodGradient(), epochs=3,
                      batch_size=30, lr=0.05, momentum=0.5, progress=False)
    limit = SpectralNormLimit(rbm.connection.weights, 0.9)
    limit.attach(trainer.optimizer)
    trainer.fit(data)
    assert limit.n_scaled > 0
    assert limit.project() <= 0.9 + 1e-9
    assert spectral_norm(rbm.connection.weights) <= 0.9 + 1e-5
    res = ais_log_z(rbm, data=data, n_chains=20, n_steps=500)
    assert math.isfinite(res.log_z)
    with pytest.raises(ConfigError):
        SpectralNormLimit(rbm.connection.weights, -1.0)
