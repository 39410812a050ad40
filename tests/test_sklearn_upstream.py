"""scikit-learn's own BernoulliRBM tests, run against boltzkit's drop-in.

``boltzkit.sklearn.BernoulliRBM`` claims to be a drop-in for
``sklearn.neural_network.BernoulliRBM``; the strongest check of that claim is the
original's test module.  This harness imports the installed scikit-learn's
``sklearn/neural_network/tests/test_rbm.py`` at run time, rebinds the module's
``BernoulliRBM`` global to boltzkit's for the duration of each test, and collects
every one of its test functions here, with their parametrisations.  Nothing of
scikit-learn's test code is copied into this repository: the tests run are exactly
those of the installed version.  Skipped, with the reason, when that scikit-learn
ships without its tests.
"""

from __future__ import annotations

import inspect

import pytest

from boltzkit.sklearn import BernoulliRBM

upstream = pytest.importorskip(
    "sklearn.neural_network.tests.test_rbm",
    reason="the installed scikit-learn ships without its test modules "
           "(sklearn/neural_network/tests/test_rbm.py), so its BernoulliRBM tests cannot run")


@pytest.fixture(autouse=True)
def _boltzkit_in_place_of_sklearn(monkeypatch):
    """Every upstream test function looks ``BernoulliRBM`` up in its module's globals."""
    monkeypatch.setattr(upstream, "BernoulliRBM", BernoulliRBM)


UPSTREAM_TESTS = sorted(name for name, fn in vars(upstream).items()
                        if name.startswith("test_") and inspect.isfunction(fn))
# The functions themselves (their pytest marks, parametrisations included, travel with
# them); they keep the upstream module as their globals, which the fixture above patches.
globals().update({name: getattr(upstream, name) for name in UPSTREAM_TESTS})


def test_the_upstream_module_was_collected():
    """The harness runs something, and the class it rebinds is the one the tests use."""
    assert len(UPSTREAM_TESTS) >= 10, UPSTREAM_TESTS
    assert upstream.BernoulliRBM is BernoulliRBM
