"""RBM features + logistic regression on the 8x8 digits: scikit-learn vs boltzkit.

scikit-learn's classic example ("Restricted Boltzmann Machine features for
digit classification") with its settings, run side by side: the same
Pipeline(BernoulliRBM -> LogisticRegression) once with
``sklearn.neural_network.BernoulliRBM`` and once with
``boltzkit.sklearn.BernoulliRBM`` (a drop-in: same parameter names).  The
plain digits (no nudged copies), min-max scaled to [0, 1], 80/20 split.

Run: ``python examples/digits_pipeline.py [--n-iter 10] [--repeats 3] [--threads N]``

``--threads N`` sets ``torch.set_num_threads(N)`` and limits NumPy's BLAS (which
scikit-learn uses) to N threads too, so both run alike; the default leaves both
libraries at theirs.  With ``--repeats R`` each RBM alone is fitted R times,
alternating between the two, and the minimum is reported (wall-clock times on a
busy machine are noisy).
"""

from __future__ import annotations

import argparse
import contextlib
import time

from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import BernoulliRBM as SklearnRBM
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import minmax_scale

from boltzkit.sklearn import BernoulliRBM as BoltzkitRBM


def make_pipeline(rbm_class, n_iter: int, random_state: int) -> Pipeline:
    # The settings of scikit-learn's example.
    rbm = rbm_class(n_components=100, learning_rate=0.06, n_iter=n_iter, batch_size=10,
                    random_state=random_state)
    return Pipeline([("rbm", rbm), ("logistic", LogisticRegression(C=6000, max_iter=1000))])


def main(n_iter: int = 10, random_state: int = 0, verbose: bool = True,
         n_samples: int | None = None, repeats: int = 1, threads: int | None = None) -> dict:
    """Fit both pipelines; return {"sklearn"|"boltzkit": {"accuracy", "fit_time", "rbm_fit_time"}}.

    ``fit_time`` is the whole pipeline's fit, ``rbm_fit_time`` the RBM's alone
    (a clone fitted again, ``repeats`` times, alternating between the two: the
    minimum).  ``n_samples`` keeps only the first rows (quick runs).  ``threads``:
    torch and NumPy BLAS threads (None: leave them as they are).
    """
    limits = contextlib.nullcontext()
    if threads is not None:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(threads)
        limits = threadpool_limits(limits=threads, user_api="blas")
    with limits:
        return _run(n_iter, random_state, verbose, n_samples, max(1, repeats))


def _run(n_iter: int, random_state: int, verbose: bool, n_samples: int | None,
         repeats: int) -> dict:
    X, y = load_digits(return_X_y=True)
    X, y = X[:n_samples], y[:n_samples]
    X = minmax_scale(X, feature_range=(0, 1))
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    results = {}
    classes = (("sklearn", SklearnRBM), ("boltzkit", BoltzkitRBM))
    for name, cls in classes:
        model = make_pipeline(cls, n_iter, random_state)
        t0 = time.perf_counter()
        model.fit(X_train, y_train)
        fit_time = time.perf_counter() - t0
        results[name] = {"accuracy": float(model.score(X_test, y_test)), "fit_time": fit_time,
                         "rbm_fit_times": []}
    # The RBM step alone (the pipeline's time includes the logistic regression).
    for _ in range(repeats):
        for name, cls in classes:
            rbm = clone(make_pipeline(cls, n_iter, random_state).named_steps["rbm"])
            t0 = time.perf_counter()
            rbm.fit(X_train)
            results[name]["rbm_fit_times"].append(time.perf_counter() - t0)
    for r in results.values():
        r["rbm_fit_time"] = min(r["rbm_fit_times"])
    if verbose:
        print(f"digits: {X_train.shape[0]} train / {X_test.shape[0]} test rows, "
              f"{X.shape[1]} pixels; RBM: 100 hidden units, {n_iter} iterations")
        print(f"{'':10s} {'accuracy':>9s} {'pipeline fit (s)':>17s} {'RBM fit (s), min':>17s}")
        for name, r in results.items():
            print(f"{name:10s} {r['accuracy']:9.4f} {r['fit_time']:17.2f} "
                  f"{r['rbm_fit_time']:17.3f}")
        sk, bk = results["sklearn"], results["boltzkit"]
        print(f"time ratio sklearn / boltzkit: pipeline {sk['fit_time'] / bk['fit_time']:.2f}, "
              f"RBM {sk['rbm_fit_time'] / bk['rbm_fit_time']:.2f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-iter", type=int, default=10)
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1,
                        help="RBM fits per library, alternating; the minimum is reported")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and NumPy BLAS threads (default: leave both as they are)")
    args = parser.parse_args()
    main(n_iter=args.n_iter, random_state=args.random_state, repeats=args.repeats,
         threads=args.threads)
