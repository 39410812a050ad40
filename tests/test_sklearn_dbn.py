"""boltzkit.sklearn DBN estimators: scikit-learn conformance, features, classification, files.

Models are small (a few units, a few passes) so the module stays fast on one thread.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import check_estimator

from boltzkit.io import load_model, save_model
from boltzkit.sklearn import EXPECTED_FAILED_CHECKS, DBNClassifier, DBNTransformer
from boltzkit.stacks.dbn import DBN
from boltzkit.stacks.dbn import DBNClassifier as TorchDBNClassifier

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:600], y[:600]


def _run_checks(estimator, expected):
    results = check_estimator(estimator, expected_failed_checks=expected, on_skip=None)
    assert results
    return results


def test_check_estimator_transformer():
    assert EXPECTED_FAILED_CHECKS["DBNTransformer"] == {}
    _run_checks(DBNTransformer(hidden_layer_sizes=(8, 6), n_iter=2, batch_size=32), {})


def test_check_estimator_classifier():
    # One small hidden layer: the checks demand > 83 % training accuracy on 2-D blobs
    # after a handful of passes (a deeper sigmoid stack needs more passes than that).
    assert EXPECTED_FAILED_CHECKS["DBNClassifier"] == {}
    _run_checks(DBNClassifier(hidden_layer_sizes=(16,), n_iter=2, batch_size=32,
                              finetune_iter=10, finetune_optimizer="adam",
                              finetune_learning_rate=0.05), {})


def test_transformer_features_are_the_stacks_up_pass(digits):
    X, _ = digits
    est = DBNTransformer(hidden_layer_sizes=(12, 7), n_iter=2, batch_size=50, random_state=0)
    with pytest.raises(NotFittedError):
        est.transform(X)
    H = est.fit(X).transform(X)
    assert isinstance(est.dbn_, DBN) and est.dbn_.sizes == [64, 12, 7]
    assert H.shape == (600, 7) and H.dtype == np.float64
    # min-max scaling by the training range, then the deterministic up pass of means
    scaled = np.clip((X - X.min(0)) / np.where(np.ptp(X, 0) > 0, np.ptp(X, 0), 1), 0, 1)
    h = torch.tensor(scaled)
    for rbm in est.dbn_.layers:
        h = torch.sigmoid(h @ rbm.connection.weights.detach() + rbm.hidden.bias.detach())
    np.testing.assert_allclose(H, h.numpy(), rtol=1e-10, atol=1e-12)
    assert list(est.get_feature_names_out()) == [f"dbntransformer{i}" for i in range(7)]
    again = DBNTransformer(hidden_layer_sizes=(12, 7), n_iter=2, batch_size=50,
                           random_state=0).fit(X).transform(X)
    np.testing.assert_array_equal(H, again)
    res = DBNTransformer(hidden_layer_sizes=(12, 7), n_iter=1, residual=True,
                         random_state=0).fit(X).transform(X)
    np.testing.assert_allclose(res.max(1), 1.0)  # residual features are row-normalised


def test_pipeline_with_logistic_regression(digits):
    X, y = digits

    def score(n_iter):
        pipe = Pipeline([("dbn", DBNTransformer(hidden_layer_sizes=(64,), n_iter=n_iter,
                                                learning_rate=0.05, batch_size=20,
                                                random_state=0)),
                         ("clf", LogisticRegression(max_iter=1000, C=100.0))])
        return pipe.fit(X[:450], y[:450]).score(X[450:], y[450:])

    # Plumbing (Pipeline, clone, fit/score), not feature quality: on 450 rows, 10 passes
    # give ~0.77, about what a random near-linear projection gives (measured 0.79), so
    # no claim is made that these features beat raw pixels.  Chance is 0.1.
    assert score(10) > 0.6


def test_classifier_fine_tuning_learns_digits(digits, tmp_path):
    X, y = digits
    labels = np.array([f"digit-{d}" for d in y])  # any label values
    est = DBNClassifier(hidden_layer_sizes=(48,), n_iter=3, batch_size=20, finetune_iter=15,
                        finetune_learning_rate=0.5, random_state=0)
    est.fit(X[:450], labels[:450])
    assert list(est.classes_) == sorted(set(labels))
    proba = est.predict_proba(X[450:])
    np.testing.assert_allclose(proba.sum(1), 1.0)
    acc = est.score(X[450:], labels[450:])
    assert acc > 0.85
    # Before fine-tuning (pretrained stack + an untrained head) it is near chance.
    untrained = est.dbn_.to_classifier(10)
    scaled = torch.tensor(np.clip((X[450:] - est.data_min_) / est.data_range_, 0, 1))
    names = est.classes_[untrained.predict(scaled).numpy()]
    assert np.mean(names == labels[450:]) < 0.5
    # The fine-tuned torch module saves and loads without pickle.
    path = save_model(est.classifier_, tmp_path / "clf.safetensors")
    back = load_model(path).double()
    assert isinstance(back, TorchDBNClassifier)
    torch.testing.assert_close(back.predict_proba(scaled), est.classifier_.predict_proba(scaled))


def test_classifier_early_stopping_and_dropout(digits):
    X, y = digits
    est = DBNClassifier(hidden_layer_sizes=(24,), n_iter=1, batch_size=50, finetune_iter=30,
                        finetune_learning_rate=0.5, dropout=0.2, early_stopping=True,
                        validation_fraction=0.2, n_iter_no_change=2, random_state=1)
    est.fit(X[:300], y[:300])
    assert 1 <= est.n_iter_ <= 30
    assert est.classifier_.dropout == 0.2 and not est.classifier_.training


@pytest.mark.parametrize("params, match", [
    ({"hidden_layer_sizes": ()}, "at least one"),
    ({"hidden_layer_sizes": (4, 0)}, "hidden_layer_sizes"),
    ({"hidden_layer_sizes": "abc"}, "hidden_layer_sizes"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"method": "gibbs"}, "method"),
    ({"input_scaling": "zscore"}, "input_scaling"),
])
def test_bad_parameters_raise_value_errors(params, match):
    X = np.random.RandomState(0).rand(20, 4)
    with pytest.raises(ValueError, match=match):
        DBNTransformer(**params).fit(X)


def test_classifier_errors():
    X = np.random.RandomState(0).rand(20, 4)
    with pytest.raises(ValueError, match="two classes"):
        DBNClassifier(n_iter=1, finetune_iter=1).fit(X, np.zeros(20))
    with pytest.raises(ValueError, match="finetune_learning_rate"):
        DBNClassifier(finetune_learning_rate=-1).fit(X, np.arange(20) % 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        DBNTransformer(n_iter=1, input_scaling="none").fit(X * 3)
