"""boltzkit.sklearn: scikit-learn conformance, Pipeline/GridSearchCV, attributes, scores.

Models are small (a few hidden units, a few iterations) so the module runs in
seconds on one thread.
"""

from __future__ import annotations

import importlib.util
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import BernoulliRBM as SklearnRBM
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import check_estimator
from sklearn.utils.validation import check_non_negative

from boltzkit.metrics import pseudo_likelihood
from boltzkit.sklearn import EXPECTED_FAILED_CHECKS, BernoulliRBM, GaussianRBM

ROOT = Path(__file__).resolve().parents[1]


# --- data -------------------------------------------------------------------------------
def _binary(n=120, d=9, seed=0):
    """Noisy copies of three binary prototypes: structure an RBM can learn."""
    rng = np.random.RandomState(seed)
    protos = (rng.rand(3, d) < 0.5).astype(float)
    X = protos[rng.randint(0, 3, n)]
    flip = rng.rand(n, d) < 0.05
    return np.where(flip, 1.0 - X, X)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:400], y[:400]


# --- scikit-learn's estimator checks ----------------------------------------------------
def _run_checks(estimator, expected):
    results = check_estimator(estimator, expected_failed_checks=expected, on_skip=None)
    # on_fail="raise" (the default) has raised on every unexpected failure; make sure
    # the expected ones still fail, so the dict cannot go stale.
    passed_anyway = sorted({r["check_name"] for r in results
                            if r["expected_to_fail"] and r["status"] != "xfail"})
    assert not passed_anyway, f"expected failures that passed: {passed_anyway}"
    assert {r["check_name"] for r in results} >= set(expected)
    return results


def test_check_estimator_gaussian():
    assert EXPECTED_FAILED_CHECKS["GaussianRBM"] == {}
    _run_checks(GaussianRBM(n_components=8, n_iter=3), EXPECTED_FAILED_CHECKS["GaussianRBM"])


def test_check_estimator_bernoulli():
    results = _run_checks(BernoulliRBM(n_components=8, n_iter=3),
                          EXPECTED_FAILED_CHECKS["BernoulliRBM"])
    for r in results:
        if r["status"] == "xfail" and "invariance" not in r["check_name"]:
            # every other expected failure is the [0, 1] range check, nothing else
            assert "greater than 1" in str(r["exception"]), (r["check_name"], r["exception"])


class _UnitIntervalRBM(BernoulliRBM):
    """BernoulliRBM behind an adapter mapping the checks' data x >= 0 to x / (1 + x).

    scikit-learn has no tag for [0, 1] inputs, so this is how the checks that
    ``EXPECTED_FAILED_CHECKS`` lists for the range alone get to run.  The map is
    elementwise, monotone and keeps zeros (sparsity).
    """

    def _check_unit_interval(self, X):
        check_non_negative(X, "BernoulliRBM (input X)")
        X = X.copy()
        values = X.data if sparse.issparse(X) else X
        values /= 1.0 + values
        return super()._check_unit_interval(X)


def test_check_estimator_bernoulli_on_unit_interval_data():
    expected = {name: reason for name, reason in EXPECTED_FAILED_CHECKS["BernoulliRBM"].items()
                if "invariance" in name}
    assert len(expected) == 2
    results = _run_checks(_UnitIntervalRBM(n_components=8, n_iter=3), expected)
    ran = {r["check_name"] for r in results if r["status"] == "passed"}
    assert set(EXPECTED_FAILED_CHECKS["BernoulliRBM"]) - set(expected) <= ran


# --- fitted attributes, transform, reproducibility ------------------------------------------
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-6)])
def test_fitted_attributes_and_transform(dtype, rtol):
    X = _binary()
    est = BernoulliRBM(n_components=5, n_iter=2, random_state=0, dtype=dtype)
    with pytest.raises(NotFittedError):
        est.transform(X)
    assert est.fit(X) is est
    W = est.rbm_.connection.weights.detach().numpy()
    assert W.dtype == np.dtype(dtype)  # computes in dtype; the attributes are copies in it
    assert est.components_.shape == (5, 9) and est.components_.dtype == np.dtype(dtype)
    assert est.intercept_hidden_.dtype == est.intercept_visible_.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(est.components_, W.T)
    assert est.intercept_hidden_.shape == (5,) and est.intercept_visible_.shape == (9,)
    assert est.n_features_in_ == 9
    assert list(est.get_feature_names_out()) == [f"bernoullirbm{i}" for i in range(5)]
    H = est.transform(X)
    assert H.shape == (120, 5) and H.dtype == np.float64  # X's dtype, whatever dtype computes
    assert ((H > 0) & (H < 1)).all()
    expected = 1 / (1 + np.exp(-(X @ W + est.intercept_hidden_)))
    np.testing.assert_allclose(H, expected, rtol=rtol)
    # float32 input gives float32 features, integer input float64; the same values
    H32 = est.transform(X.astype(np.float32))
    assert H32.dtype == np.float32
    np.testing.assert_allclose(H32, H, rtol=1e-6)
    np.testing.assert_array_equal(est.transform(X.astype(int)), H)
    np.testing.assert_array_equal(est._mean_hiddens(X), H)  # scikit-learn's helper
    np.testing.assert_allclose(est._mean_hiddens(X[3]), H[3], rtol=1e-14)  # one row (a GEMV)
    # the properties are copies: editing them does not touch the model
    est.components_[:] = 0
    assert np.abs(est.components_).sum() > 0


def test_random_state_reproducible_and_threads_untouched():
    X = _binary()
    threads = torch.get_num_threads()
    a = BernoulliRBM(n_components=4, n_iter=2, random_state=3).fit(X)
    b = BernoulliRBM(n_components=4, n_iter=2, random_state=3).fit(X)
    c = BernoulliRBM(n_components=4, n_iter=2, random_state=np.random.RandomState(3)).fit(X)
    d = BernoulliRBM(n_components=4, n_iter=2, random_state=4).fit(X)
    np.testing.assert_array_equal(a.components_, b.components_)
    np.testing.assert_array_equal(a.components_, c.components_)  # same seed drawn
    assert not np.array_equal(a.components_, d.components_)
    BernoulliRBM(n_components=4, n_iter=1).fit(X)  # random_state=None works
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(("method", "optimizer"),
                         [("cd", "sgd"), ("pcd", "sgd"), ("pt", "sgd"), ("pcd", "adam")])
def test_fit_learns(method, optimizer):
    """Training raises the exact pseudo-likelihood over the untrained start."""
    X = _binary()
    kw = dict(n_components=6, random_state=0, method=method, optimizer=optimizer,
              learning_rate=0.1 if optimizer == "sgd" else 0.02, momentum=0.5)
    before = BernoulliRBM(n_iter=0, **kw).fit(X)
    after = BernoulliRBM(n_iter=40, **kw).fit(X)
    pl0 = pseudo_likelihood(before.rbm_, torch.tensor(X))
    pl1 = pseudo_likelihood(after.rbm_, torch.tensor(X))
    assert pl1 > pl0 + 1.0, (pl0, pl1)


def test_fractional_data_and_sparse_input_match_dense():
    rng = np.random.RandomState(1)
    X = rng.rand(60, 7)
    X[X < 0.5] = 0.0  # grey levels in [0, 1] with zeros
    dense = BernoulliRBM(n_components=4, n_iter=2, random_state=0).fit(X)
    sp = BernoulliRBM(n_components=4, n_iter=2, random_state=0).fit(sparse.csr_matrix(X))
    np.testing.assert_allclose(sp.components_, dense.components_, rtol=1e-12)
    np.testing.assert_allclose(sp.transform(sparse.csr_matrix(X)), dense.transform(X),
                               rtol=1e-12)


# --- the same algorithm as scikit-learn, number for number ----------------------------------
def _digits01(n):
    X = load_digits().data[:n]
    return X / 16.0


def _assert_same_model(ours, theirs, rtol):
    for attr in ("components_", "intercept_hidden_", "intercept_visible_", "h_samples_"):
        a, b = getattr(ours, attr), getattr(theirs, attr)
        assert a.dtype == b.dtype, attr
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * 1e-2, err_msg=attr)


def test_fit_reproduces_scikit_learn():
    """Defaults, float64: scikit-learn's model to rounding.  203 rows in batches of 10:
    a shorter last batch (3 rows against 10 chains) in every pass; a RandomState
    instance, whose state after fit (and so gibbs) is scikit-learn's too."""
    X = _digits01(203)
    kw = dict(n_components=13, learning_rate=0.07, batch_size=10, n_iter=4)
    ours = BernoulliRBM(**kw, random_state=np.random.RandomState(5)).fit(X)
    theirs = SklearnRBM(**kw, random_state=np.random.RandomState(5)).fit(X)
    # 4 passes of 21 updates; float64 GEMMs summing in another order than NumPy's:
    # ~1e-16 relative per operation (seen: 2e-15 at most)
    _assert_same_model(ours, theirs, rtol=1e-12)
    assert np.abs(ours.components_).max() > 0.1  # it trained (the start is 0.01-sized)
    np.testing.assert_array_equal(ours.gibbs(X), theirs.gibbs(X))
    np.testing.assert_allclose(ours.transform(X), theirs.transform(X), rtol=1e-12)
    ours.random_state = theirs.random_state = 3
    np.testing.assert_allclose(ours.score_samples(X), theirs.score_samples(X), rtol=1e-10)


def test_partial_fit_reproduces_scikit_learn():
    """partial_fit: one update per call on all its rows, whatever their number."""
    X = _digits01(120)
    ours = BernoulliRBM(n_components=9, batch_size=8, random_state=2)
    theirs = SklearnRBM(n_components=9, batch_size=8, random_state=2)
    for a, b in ((0, 8), (8, 13), (13, 40), (40, 48), (48, 120)):
        ours.partial_fit(X[a:b])
        theirs.partial_fit(X[a:b])
    _assert_same_model(ours, theirs, rtol=1e-12)
    np.testing.assert_array_equal(ours.gibbs(X), theirs.gibbs(X))  # random_state_ continues


def test_float32_data_computes_in_float32_like_scikit_learn():
    X = _digits01(60).astype(np.float32)
    kw = dict(n_components=7, batch_size=10, n_iter=3, random_state=0)
    ours = BernoulliRBM(**kw).fit(X)
    theirs = SklearnRBM(**kw).fit(X)
    assert ours.rbm_.dtype == torch.float32
    # float32 GEMMs in another order: ~6e-8 relative per operation, 18 updates (seen:
    # 4e-7 at most); no draw fell between the two roundings here (equal h_samples_)
    _assert_same_model(ours, theirs, rtol=1e-5)
    # the visible biases step in float64 and are rounded once, as scikit-learn's: equal
    np.testing.assert_array_equal(ours.intercept_visible_, theirs.intercept_visible_)
    assert ours.transform(X).dtype == np.float32 and ours.score_samples(X).dtype == np.float32
    assert ours.gibbs(X).dtype == np.float32


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "lil", "dok", "bsr", "csr_array",
                                 "csc_array"])
def test_every_sparse_format_gives_the_dense_model(fmt):
    X = _digits01(57)
    X[X < 0.3] = 0.0
    if fmt.endswith("_array"):
        Xs = getattr(sparse, fmt)(X)
    else:
        Xs = sparse.csr_matrix(X).asformat(fmt)
    kw = dict(n_components=6, batch_size=10, n_iter=2, random_state=4)
    dense = BernoulliRBM(**kw).fit(X)
    sp = BernoulliRBM(**kw).fit(Xs)
    for attr in ("components_", "intercept_hidden_", "intercept_visible_", "h_samples_"):
        np.testing.assert_array_equal(getattr(sp, attr), getattr(dense, attr), err_msg=attr)
    np.testing.assert_array_equal(sp.transform(Xs), dense.transform(X))
    sp.partial_fit(Xs)
    dense.partial_fit(X)
    np.testing.assert_array_equal(sp.components_, dense.components_)


def test_h_samples_only_for_scikit_learns_chains():
    X = _binary()
    est = BernoulliRBM(n_components=4, batch_size=7, n_iter=0, random_state=0).fit(X)
    np.testing.assert_array_equal(est.h_samples_, np.zeros((7, 4)))  # before any update
    for method, what in (("pcd", "visible-state chains"), ("cd", "no chains")):
        other = BernoulliRBM(n_components=4, n_iter=1, method=method, random_state=0).fit(X)
        with pytest.raises(AttributeError, match=f"method='sklearn'.*{what}"):
            other.h_samples_  # noqa: B018
        assert not hasattr(other, "h_samples_")


def test_every_estimator_trains_through_the_one_trainer(monkeypatch):
    """boltzkit has one batch loop: each estimator's fit (and partial_fit) runs
    boltzkit.training.Trainer.fit, once per model it trains."""
    from boltzkit.sklearn import DBNClassifier, DBNTransformer, DRBMClassifier
    from boltzkit.training import Trainer

    calls = []
    real_fit = Trainer.fit

    def counting(self, *args, **kwargs):
        calls.append(type(self.model).__name__)
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", counting)
    X = _binary(n=40)
    y = (X[:, 0] > 0.5).astype(int)
    small = dict(n_iter=1, random_state=0)
    for est, expected in ((BernoulliRBM(n_components=3, **small), ["RBM"]),
                          (GaussianRBM(n_components=3, **small), ["RBM"]),
                          (DRBMClassifier(n_components=3, **small), ["DiscriminativeRBM"]),
                          (DBNTransformer((4, 3), **small), ["RBM", "RBM"]),
                          (DBNClassifier((4, 3), finetune_iter=1, **small),
                           ["RBM", "RBM", "DBNClassifier"])):
        calls.clear()
        est.fit(X, y)
        assert calls == expected, type(est).__name__
    calls.clear()
    BernoulliRBM(n_components=3, random_state=0).partial_fit(X).partial_fit(X)
    assert calls == ["RBM", "RBM"]


# --- partial_fit --------------------------------------------------------------------------
def test_partial_fit_incremental():
    X = _binary(n=200)
    est = BernoulliRBM(n_components=6, learning_rate=0.1, batch_size=10, random_state=0)
    est.partial_fit(X[:10])
    # first call: biases start at zero (as scikit-learn), one step of lr * mean gradient
    assert np.abs(est.intercept_visible_).max() <= 0.1 + 1e-12
    model, trainer = est.rbm_, est.trainer_
    chains = est.h_samples_
    assert chains.shape == (10, 6)
    W1 = est.components_
    est.partial_fit(X[10:15])  # one update on 5 rows (the 10 chains weigh as 10 rows)
    assert est.rbm_ is model and est.trainer_ is trainer  # the same state carries on
    assert not np.array_equal(est.h_samples_, chains)
    assert not np.array_equal(est.components_, W1)
    pl_start = pseudo_likelihood(est.rbm_, torch.tensor(X))
    for _ in range(10):
        for start in range(0, 200, 10):
            est.partial_fit(X[start:start + 10])
    assert pseudo_likelihood(est.rbm_, torch.tensor(X)) > pl_start + 1.0
    assert trainer.history == []  # no record per call piles up
    est.set_params(learning_rate=0.01)
    est.partial_fit(X)  # all 200 rows as one batch
    assert est.trainer_.optimizer.param_groups[0]["lr"] == 0.01
    with pytest.raises(ValueError, match="X has 5 features, but BernoulliRBM is expecting 9"):
        est.partial_fit(X[:, :5])
    est.set_params(momentum=0.5)
    with pytest.raises(ValueError, match=r"changed since.*'momentum': \(0.0, 0.5\).*fit"):
        est.partial_fit(X)


def test_pickle_roundtrip_continues_training():
    X = _binary()
    est = BernoulliRBM(n_components=4, n_iter=1, random_state=0).fit(X)
    copy = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(copy.transform(X), est.transform(X))
    est.partial_fit(X)
    copy.partial_fit(X)
    np.testing.assert_array_equal(copy.components_, est.components_)


# --- score_samples ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, rtol, rtol_h", [("float64", 1e-10, 1e-12),
                                                 ("float32", 1e-5, 1e-6)])
def test_score_samples_equals_sklearn(dtype, rtol, rtol_h):
    """Same parameters and random_state: scikit-learn's score_samples, to rounding."""
    X = np.vstack([_binary(n=50), np.random.RandomState(2).rand(30, 9)])  # binary + grey
    est = BernoulliRBM(n_components=5, n_iter=2, random_state=7, dtype=dtype).fit(X)
    ref = SklearnRBM(n_components=5, random_state=7)
    ref.components_ = est.components_
    ref.intercept_hidden_ = est.intercept_hidden_
    ref.intercept_visible_ = est.intercept_visible_
    ref.h_samples_ = np.zeros((10, 5))
    ref.n_features_in_ = 9
    s = est.score_samples(X)
    assert s.shape == (80,) and s.dtype == np.float64 and (s <= 0).all()
    np.testing.assert_allclose(s, ref.score_samples(X), rtol=rtol)
    np.testing.assert_array_equal(est.score_samples(X), s)  # int random_state: same units
    np.testing.assert_allclose(est.transform(X), ref.transform(X), rtol=rtol_h)


def test_score_samples_scale_matches_boltzkit_pseudo_likelihood():
    """An unbiased estimate of the per-sample log PL summed over units (boltzkit's scale)."""
    X = _binary(n=60)
    est = BernoulliRBM(n_components=5, n_iter=3, random_state=0, dtype="float64").fit(X)
    tiled = np.tile(X, (100, 1))
    est.set_params(random_state=11)
    s = est.score_samples(tiled)
    exact = pseudo_likelihood(est.rbm_, torch.tensor(X), exact=True)
    se = s.std() / math.sqrt(s.size)
    assert abs(s.mean() - exact) < 4 * se, (s.mean(), exact, se)
    g = torch.Generator().manual_seed(0)
    same_estimator = pseudo_likelihood(est.rbm_, torch.tensor(tiled), exact=False, generator=g,
                                       reduce=False).numpy()
    assert abs(same_estimator.mean() - s.mean()) < 6 * se
    # one visible unit: nothing random left, the two agree row by row
    one = BernoulliRBM(n_components=3, n_iter=1, random_state=0, dtype="float64").fit(X[:, :1])
    np.testing.assert_allclose(
        one.score_samples(X[:, :1]),
        pseudo_likelihood(one.rbm_, torch.tensor(X[:, :1]), reduce=False).numpy(), rtol=1e-12)


# --- gibbs --------------------------------------------------------------------------------
def test_gibbs_binary_samples():
    X = _binary()
    est = BernoulliRBM(n_components=5, n_iter=1, random_state=0).fit(X)
    v1 = est.gibbs(X)
    assert v1.shape == X.shape and v1.dtype == np.float64
    assert set(np.unique(v1)) <= {0.0, 1.0}
    assert not np.array_equal(est.gibbs(X), v1)  # the generator advances
    assert set(np.unique(est.gibbs(np.full((4, 9), 0.5)))) <= {0.0, 1.0}


# --- GaussianRBM --------------------------------------------------------------------------
def test_gaussian_standardises_itself(digits):
    X = digits[0]
    est = GaussianRBM(n_components=8, n_iter=2, random_state=0, dtype="float64").fit(X)
    np.testing.assert_allclose(est.mean_, X.mean(0))
    std = X.std(0)
    np.testing.assert_allclose(est.scale_, np.where(std == 0, 1.0, std))
    assert est.n_samples_seen_ == X.shape[0]
    # the scaling makes the model blind to affine changes of units
    shifted = GaussianRBM(n_components=8, n_iter=2, random_state=0,
                          dtype="float64").fit(X * 5.0 + 3.0)
    np.testing.assert_allclose(shifted.transform(X * 5.0 + 3.0), est.transform(X), atol=1e-8)
    H = est.transform(X)
    assert H.shape == (400, 8) and H.dtype == np.float64
    V = est.gibbs(X)  # real-valued samples in the data's units
    assert V.shape == X.shape and np.isfinite(V).all()
    assert abs(V.mean() - X.mean()) < 0.5 * X.std()
    assert est.components_.shape == (8, 64) and est.intercept_visible_.shape == (64,)
    assert list(est.get_feature_names_out())[:2] == ["gaussianrbm0", "gaussianrbm1"]


def test_gaussian_partial_fit_running_statistics(digits):
    X = digits[0]
    est = GaussianRBM(n_components=4, random_state=0)
    for chunk in np.array_split(X, 7):
        est.partial_fit(chunk)
    np.testing.assert_allclose(est.mean_, X.mean(0), atol=1e-10)
    np.testing.assert_allclose(est.var_, X.var(0), atol=1e-9)
    assert est.n_samples_seen_ == 400
    assert np.isfinite(est.transform(X)).all()


# --- Pipeline and GridSearchCV ---------------------------------------------------------------
def test_pipeline_and_grid_search(digits):
    X, y = digits
    # clip=True: test folds can exceed the training fold's range, and BernoulliRBM
    # refuses values outside [0, 1]
    pipe = Pipeline([("scale", MinMaxScaler(clip=True)),
                     ("rbm", BernoulliRBM(n_components=16, n_iter=3, learning_rate=0.06,
                                          random_state=0)),
                     ("clf", LogisticRegression(max_iter=300))])
    grid = GridSearchCV(pipe, {"rbm__n_components": [8, 16], "rbm__method": ["cd", "pcd"]},
                        cv=2)
    grid.fit(X, y)
    assert set(grid.best_params_) == {"rbm__n_components", "rbm__method"}
    assert grid.score(X, y) > 0.2  # a smoke test: 3 passes over 400 rows, chance is 0.1
    assert len(grid.cv_results_["mean_test_score"]) == 4
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    gpipe = Pipeline([("rbm", GaussianRBM(n_components=16, n_iter=2, random_state=0)),
                      ("clf", LogisticRegression(max_iter=300))])
    assert clone(gpipe).fit(X, y).score(X, y) > 0.4


# --- errors and messages -------------------------------------------------------------------
def test_bad_input_and_parameters():
    X = _binary()
    est = BernoulliRBM(n_components=3, n_iter=1)
    with pytest.raises(ValueError, match="Negative values in data passed to BernoulliRBM"):
        est.fit(X - 0.5)
    with pytest.raises(ValueError, match=r"greater than 1.*MinMaxScaler\(clip=True\)"):
        est.fit(X * 255)
    with pytest.raises(ValueError, match="NaN"):
        est.fit(np.where(X == 1, np.nan, X))
    with pytest.raises(ValueError, match="2D array"):
        est.fit(X[0])
    est.fit(X)
    with pytest.raises(ValueError, match="greater than 1"):
        est.transform(X * 2)
    with pytest.raises(ValueError, match="X has 4 features"):
        est.score_samples(X[:, :4])
    for params, match in [({"n_components": 0}, "n_components"),
                          ({"learning_rate": -1.0}, "learning_rate"),
                          ({"batch_size": 1.5}, "batch_size"),
                          ({"method": "gibbs"}, "method"),
                          ({"optimizer": "rmsprop"}, "optimizer"),
                          ({"momentum": 1.0}, "momentum"),
                          ({"k": 0}, "k must"),
                          ({"n_chains": 0}, "n_chains"),
                          ({"dtype": "float16"}, "dtype"),
                          ({"learning_rate": 1e39, "dtype": "float32"}, "float32"),
                          ({"n_chains": 20}, "keeps batch_size chains"),
                          ({"n_chains": 20, "method": "cd"}, "has no chains")]:
        with pytest.raises(ValueError, match=match):
            BernoulliRBM(**params).fit(X)
    BernoulliRBM(n_components=3, n_iter=1, n_chains=20, method="pcd").fit(X)
    with pytest.raises(ValueError, match="method must be one of"):
        GaussianRBM(method="sklearn").fit(X)  # scikit-learn's sampler draws Bernoulli units
    # score_samples takes non-negative values above 1 as scikit-learn does (finite scores)
    assert np.isfinite(est.score_samples(X * 1000)).all()
    with pytest.raises(ValueError, match="Negative values"):
        est.score_samples(X - 0.5)
    for dtype, lr in (("float64", 1e150), ("float32", 1e30)):
        with pytest.raises(FloatingPointError, match="learning_rate"):
            GaussianRBM(n_components=4, n_iter=3, learning_rate=lr, random_state=0,
                        dtype=dtype).fit(np.random.RandomState(0).randn(50, 5))


def test_verbose_prints_pseudo_likelihood(capsys):
    BernoulliRBM(n_components=3, n_iter=2, verbose=1, random_state=0).fit(_binary())
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[1].startswith("[BernoulliRBM] Iteration 2, pseudo-likelihood = -")
    GaussianRBM(n_components=3, n_iter=1, verbose=1, random_state=0).fit(_binary())
    assert "reconstruction error" in capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_device():
    X = _binary()
    est = BernoulliRBM(n_components=4, n_iter=2, random_state=0, device="cuda").fit(X)
    assert est.rbm_.device.type == "cuda"
    assert isinstance(est.transform(X), np.ndarray)
    assert est.score_samples(X).shape == (120,)
    assert set(np.unique(est.gibbs(X))) <= {0.0, 1.0}


# --- the example -----------------------------------------------------------------------------
def test_digits_example_runs(capsys):
    spec = importlib.util.spec_from_file_location(
        "digits_pipeline", ROOT / "examples" / "digits_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(n_iter=1, n_samples=500)
    assert set(results) == {"sklearn", "boltzkit", "boltzkit-float32"}
    for r in results.values():
        assert r["accuracy"] > 0.6 and r["fit_time"] > 0 and r["rbm_fit_time"] > 0
    out = capsys.readouterr().out
    assert "boltzkit" in out and "ratio" in out


def test_fit_does_not_import_torch_dynamo():
    """torch.optim's add_param_group imports torch._dynamo on first use (1.2-1.5 s, most
    of a small pipeline's first fit); LeanSGD skips that wrapper outside torch.compile."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from boltzkit.sklearn import BernoulliRBM\n"
            "X = (np.random.RandomState(0).rand(30, 5) < 0.5).astype(float)\n"
            "BernoulliRBM(n_components=3, n_iter=1, momentum=0.5).fit(X).partial_fit(X)\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False", out.stderr
