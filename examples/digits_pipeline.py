"""RBM features + logistic regression on the 8x8 digits: scikit-learn vs boltzkit.

scikit-learn's classic example ("Restricted Boltzmann Machine features for
digit classification") with its settings, run side by side: the same
Pipeline(BernoulliRBM -> LogisticRegression) once with
``sklearn.neural_network.BernoulliRBM`` and once with
``boltzkit.sklearn.BernoulliRBM`` (a drop-in: its defaults run scikit-learn's
algorithm, so the same random state gives the same model, here in float64 like
scikit-learn's), and once more with ``dtype="float32"`` (boltzkit's faster option).
The plain digits (no nudged copies), min-max scaled to [0, 1], 80/20 split.

Run: ``python examples/digits_pipeline.py [--n-iter 10] [--repeats 3] [--threads N] [--seeds 10]``

``--threads N`` sets ``torch.set_num_threads(N)`` and limits NumPy's BLAS (which
scikit-learn uses) to N threads too, so both run alike; the default leaves both
libraries at theirs.  With ``--repeats R`` each RBM alone is fitted R times,
alternating between the two, and the minimum is reported (wall-clock times on a
busy machine are noisy).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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
         n_samples: int | None = None, repeats: int = 1, threads: int | None = None,
         seeds: int = 1) -> dict:
    """Fit the pipelines; return {name: {"accuracy", "accuracies", "fit_time", "rbm_fit_time"}}.

    Names: "sklearn", "boltzkit" (its defaults: scikit-learn's algorithm, float64 here)
    and "boltzkit-float32".

    ``accuracy`` is the mean test accuracy over ``seeds`` random states from
    ``random_state`` on (``accuracies``: each one; one seed's accuracy moves by
    ~0.007, 2-3 of the 360 test digits, with the seed).
    ``fit_time`` is the whole pipeline's fit (the first seed), ``rbm_fit_time`` the RBM's alone
    (a clone fitted again, ``repeats`` times, alternating between them: the
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
        return _run(n_iter, random_state, verbose, n_samples, max(1, repeats), max(1, seeds))


def _run(n_iter: int, random_state: int, verbose: bool, n_samples: int | None,
         repeats: int, seeds: int) -> dict:
    X, y = load_digits(return_X_y=True)
    X, y = X[:n_samples], y[:n_samples]
    X = minmax_scale(X, feature_range=(0, 1))
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    results = {}
    # boltzkit's defaults compute in the data's precision (float64 here) as scikit-learn
    # does, and give its model; "boltzkit-float32" computes in float32.
    classes = (("sklearn", SklearnRBM), ("boltzkit", BoltzkitRBM),
               ("boltzkit-float32", functools.partial(BoltzkitRBM, dtype="float32")))
    for seed in range(random_state, random_state + seeds):
        for name, cls in classes:
            model = make_pipeline(cls, n_iter, seed)
            t0 = time.perf_counter()
            model.fit(X_train, y_train)
            fit_time = time.perf_counter() - t0
            r = results.setdefault(name, {"accuracies": [], "fit_time": fit_time,
                                          "rbm_fit_times": []})
            r["accuracies"].append(float(model.score(X_test, y_test)))
    # The RBM step alone (the pipeline's time includes the logistic regression).
    for _ in range(repeats):
        for name, cls in classes:
            rbm = clone(make_pipeline(cls, n_iter, random_state).named_steps["rbm"])
            t0 = time.perf_counter()
            rbm.fit(X_train)
            results[name]["rbm_fit_times"].append(time.perf_counter() - t0)
    for r in results.values():
        r["rbm_fit_time"] = min(r["rbm_fit_times"])
        r["accuracy"] = sum(r["accuracies"]) / len(r["accuracies"])
    if verbose:
        print(f"digits: {X_train.shape[0]} train / {X_test.shape[0]} test rows, "
              f"{X.shape[1]} pixels; RBM: 100 hidden units, {n_iter} iterations; "
              f"accuracy: mean over {seeds} random state(s)")
        print(f"{'':16s} {'accuracy':>9s} {'pipeline fit (s)':>17s} {'RBM fit (s), min':>17s}"
              f" {'RBM fit / sklearn':>18s}")
        sk = results["sklearn"]
        for name, r in results.items():
            print(f"{name:16s} {r['accuracy']:9.4f} {r['fit_time']:17.2f} "
                  f"{r['rbm_fit_time']:17.3f} {r['rbm_fit_time'] / sk['rbm_fit_time']:17.2f}x")
        bk = results["boltzkit"]
        print(f"time ratio boltzkit / sklearn: pipeline {bk['fit_time'] / sk['fit_time']:.2f}, "
              f"RBM {bk['rbm_fit_time'] / sk['rbm_fit_time']:.2f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-iter", type=int, default=10)
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1,
                        help="RBM fits per library, alternating; the minimum is reported")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and NumPy BLAS threads (default: leave both as they are)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="pipelines fitted per library, random states from "
                             "--random-state on; the accuracy is their mean")
    args = parser.parse_args()
    main(n_iter=args.n_iter, random_state=args.random_state, repeats=args.repeats,
         threads=args.threads, seeds=args.seeds)
