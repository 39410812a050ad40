"""scikit-learn estimators: boltzkit RBMs as drop-in transformers.

:class:`BernoulliRBM` is a drop-in for :class:`sklearn.neural_network.BernoulliRBM`:
scikit-learn's parameter names and defaults (``n_components=256, learning_rate=0.1,
batch_size=10, n_iter=10, verbose=0, random_state=None``), methods, private helpers
and fitted attributes (``components_``, ``intercept_hidden_``, ``intercept_visible_``,
``h_samples_``, ``n_features_in_``), and with its default boltzkit settings
scikit-learn's algorithm, draw for draw, so a given ``random_state`` gives
scikit-learn's model (to float64 rounding).  boltzkit's extras (``method``, ``k``,
``momentum``, ``optimizer``, ``weight_decay``, ``n_chains``, ``device``, ``dtype``,
``shuffle``, ``init_visible_bias``) change what they name; ``rbm_``, the trained
:class:`boltzkit.RBM`, serves boltzkit's own tools (likelihoods, sampling,
``save_model``), and ``trainer_`` is the :class:`boltzkit.training.Trainer` that
``fit`` and ``partial_fit`` drive (boltzkit's one batch loop, with its fused step).

:class:`GaussianRBM` is the real-valued counterpart: it standardises the
data itself (fitted ``mean_`` / ``scale_``, applied again by ``transform``
and ``gibbs``) and trains Gaussian visible / Bernoulli hidden units.

Both are ordinary scikit-learn transformers (``Pipeline``, ``GridSearchCV``,
``clone``, pickling); they compute with PyTorch on ``device`` in ``dtype`` (None: the
data's precision, as scikit-learn; GaussianRBM defaults to float32) and return results
in the input's float dtype (float32 stays float32).  They never change
``torch.set_num_threads``.

Needs scikit-learn >= 1.6 (``validate_data`` and ``__sklearn_tags__``).
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings

import numpy as np
import torch
from scipy import sparse
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_non_negative

try:
    from sklearn.utils.validation import validate_data
except ImportError as exc:  # pragma: no cover - depends on the installed version
    raise ImportError("boltzkit.sklearn needs scikit-learn >= 1.6 "
                      "(sklearn.utils.validation.validate_data)") from exc

from .errors import TrainingDiverged
from .metrics import reconstruction_error
from .objectives import LikelihoodGradient
from .precision import PRECISIONS
from .rbm import make_rbm
from .sampling import SAMPLERS, HiddenPersistentCD, make_sampler
from .training import TensorRows, Trainer

__all__ = ["EXPECTED_FAILED_CHECKS", "BernoulliRBM", "DBNClassifier", "DBNTransformer",
           "DRBMClassifier", "GaussianRBM"]

_STOCHASTIC_SCORE = (
    "score_samples is scikit-learn's stochastic estimate: it draws one random visible unit "
    "per row, in row order, from random_state (so an integer random_state scores the same "
    "units on every call, as in scikit-learn, whose BernoulliRBM is marked the same); "
    "{what} gives rows other units and so other scores")
_UNIT_INTERVAL = (
    "BernoulliRBM refuses values > 1 by design (Bernoulli units take values in [0, 1]), "
    "and this check feeds non-negative data up to ~10 (scikit-learn has no tag for [0, 1] "
    "inputs); tests/test_sklearn.py runs every check again through an adapter that maps "
    "the data into [0, 1), where it passes")
#: Checks whose generic data exceed 1 (they fail on the range check alone).
_RANGE_CHECKS = (
    "check_dict_unchanged", "check_dont_overwrite_parameters", "check_estimators_dtypes",
    "check_estimators_fit_returns_self", "check_estimators_overwrite_params",
    "check_estimators_pickle", "check_f_contiguous_array_estimator", "check_fit2d_1feature",
    "check_fit2d_1sample", "check_fit2d_predict1d", "check_fit_check_is_fitted",
    "check_fit_idempotent", "check_n_features_in", "check_n_features_in_after_fitting",
    "check_pipeline_consistency", "check_readonly_memmap_input",
    "check_transformer_data_not_an_array", "check_transformer_general",
    "check_transformer_preserve_dtypes",
)

#: Checks of :func:`sklearn.utils.estimator_checks.check_estimator` that fail by
#: design, per estimator class name: pass ``EXPECTED_FAILED_CHECKS[name]`` as
#: ``expected_failed_checks``.
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {
    "BernoulliRBM": {
        **dict.fromkeys(_RANGE_CHECKS, _UNIT_INTERVAL),
        "check_methods_subset_invariance": _STOCHASTIC_SCORE.format(
            what="scoring a subset"),
        "check_methods_sample_order_invariance": _STOCHASTIC_SCORE.format(
            what="permuting the rows"),
    },
    "GaussianRBM": {},
    "DRBMClassifier": {},
    "DBNTransformer": {},
    "DBNClassifier": {},
}

_OPTIMIZERS = ("sgd", "adam")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_CHUNK = 4096  # rows per block in transform / score_samples / gibbs


# --------------------------------------------------------------------------- validation
def _check_int(name, value, low, allow_none=False):
    if value is None and allow_none:
        return None
    if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
            or value < low):
        raise ValueError(f"{name} must be an integer >= {low}"
                         f"{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def _check_float(name, value, low, high=math.inf, low_open=False, high_open=False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
        raise ValueError(f"{name} must be a number in {lo}{low}, {high}{hi}, got {value!r}")
    return float(value)


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A NumPy copy of a tensor (a parameter, chains), in its dtype."""
    return t.detach().cpu().numpy().copy()


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


class _SparseRows:
    """A :class:`~boltzkit.training.Trainer` row source over a SciPy CSR matrix: each batch
    densified on its own, so sparse data is never densified whole.

    ``full()`` (which the Trainer asks for once, for objectives that draw statistics from
    the data; the estimators' objective takes none) is every row as a torch sparse CSR
    tensor on X's own arrays.
    """

    def __init__(self, X: sparse.csr_matrix, to_tensor) -> None:
        self.X, self.n, self._to_tensor = X, X.shape[0], to_tensor

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` (a 1-D index tensor), dense: (len(idx), n_features)."""
        return self._to_tensor(self.X[idx.cpu().numpy()])

    def full(self) -> torch.Tensor:
        X = self.X
        with warnings.catch_warnings():  # torch's note that sparse CSR tensors are "beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                torch.from_numpy(X.indptr), torch.from_numpy(X.indices),
                torch.from_numpy(X.data), size=X.shape, check_invariants=False)

    def release(self) -> None:
        return None


def _out_dtype(X) -> type:
    """The float dtype results take for input X: float32 stays float32, the rest float64
    (scikit-learn's ``preserves_dtype``)."""
    return np.float32 if getattr(X, "dtype", None) == np.float32 else np.float64


#: Parameters that ``partial_fit`` may see changed between calls (the rest built the
#: model and its trainer at the first call).
_FREE_IN_PARTIAL_FIT = ("learning_rate", "n_iter", "random_state", "verbose")


class _RBMBase(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Shared machinery; subclasses set the visible units and the data handling.

    ``fit`` and ``partial_fit`` drive one :class:`boltzkit.training.Trainer` (the
    project's only batch loop: it takes the fused step of the plain case itself),
    built from the estimator's parameters; it stays on the estimator as ``trainer_``.
    """

    _visible_kind = "bernoulli"
    _methods: tuple[str, ...] = SAMPLERS

    # -- hooks --------------------------------------------------------------
    def _validate_X(self, X, reset, check_range=True):
        raise NotImplementedError

    def _update_scaling(self, X, reset):
        """Fit (reset) or update data statistics before training on X."""

    def _scale(self, v):
        """Map a tensor of raw data (the model's dtype) into the model's visible space."""
        return v

    def _unscale(self, v):
        return v

    def _monitor(self, X) -> str:
        raise NotImplementedError

    # -- parameters ---------------------------------------------------------
    def _checked_params(self) -> dict:
        p = {
            "n_components": _check_int("n_components", self.n_components, 1),
            "learning_rate": _check_float("learning_rate", self.learning_rate, 0.0,
                                          low_open=True),
            "batch_size": _check_int("batch_size", self.batch_size, 1),
            "n_iter": _check_int("n_iter", self.n_iter, 0),
            "method": _check_choice("method", self.method, self._methods),
            "k": _check_int("k", self.k, 1),
            "momentum": _check_float("momentum", self.momentum, 0.0, 1.0, high_open=True),
            "optimizer": _check_choice("optimizer", self.optimizer, _OPTIMIZERS),
            "weight_decay": _check_float("weight_decay", self.weight_decay, 0.0),
            "n_chains": _check_int("n_chains", self.n_chains, 1, allow_none=True),
            "device": torch.device(self.device),
            "dtype": (None if self.dtype is None else
                      _DTYPES[_check_choice("dtype", self.dtype, [*_DTYPES, None])]),
            "shuffle": bool(self.shuffle),
            "init_visible_bias": bool(self.init_visible_bias),
            "precision": _check_choice("precision", self.precision, PRECISIONS),
        }
        if p["n_chains"] is not None and p["method"] in ("sklearn", "cd"):
            raise ValueError(f"n_chains applies to method 'pcd', 'pt' and 'tds'; method "
                             f"{p['method']!r} " + ("keeps batch_size chains (scikit-learn's "
                                                    "h_samples_)" if p["method"] == "sklearn"
                                                    else "has no chains")
                             + ": drop n_chains or choose another method")
        return p

    # -- state ----------------------------------------------------------------
    def _build(self, X, rng: np.random.RandomState, epochs: int) -> dict:
        """A fresh model and the Trainer that trains it, for data like X (validated).

        The weights are N(0, 0.01^2) drawn from ``rng`` as scikit-learn draws its
        ``components_``, the biases zero.  A torch seed (for shuffling and boltzkit's
        samplers) is drawn from ``rng`` after the weights only when something uses it,
        so that with method="sklearn" and no shuffling ``rng`` sees scikit-learn's
        draws and no others.
        """
        p = self._checked_params()
        dtype = p["dtype"] or (torch.float32 if X.dtype == np.float32 or
                               p["precision"] != "float32" else torch.float64)
        if p["learning_rate"] > torch.finfo(dtype).max:
            raise ValueError(f"learning_rate {p['learning_rate']:g} is beyond {dtype}'s range; "
                             "lower it or pass dtype='float64'")
        n_features = X.shape[1]
        weights = rng.normal(0.0, 0.01, (p["n_components"], n_features)).T
        torch_random = p["method"] != "sklearn" or p["shuffle"]
        seed = int(rng.randint(np.iinfo(np.int32).max)) if torch_random else 0
        rbm = make_rbm(n_features, p["n_components"], visible=self._visible_kind, seed=0)
        self.rbm_ = rbm.to(device=p["device"], dtype=dtype)
        with torch.no_grad():  # once in the model's dtype: rounded once, as scikit-learn's
            self.rbm_.connection.weights.copy_(torch.from_numpy(weights))
        if p["method"] == "sklearn":
            sampler = HiddenPersistentCD(p["k"], p["batch_size"], random_state=rng)
            objective = LikelihoodGradient(model_norm="rows")
        else:
            chains = p["n_chains"] if p["n_chains"] is not None else p["batch_size"]
            sampler = make_sampler(p["method"], k=p["k"],
                                   chains=None if p["method"] == "cd" else chains)
            objective = LikelihoodGradient()
        # init_visible_bias is applied by the estimator (from the column means, which a
        # sparse X gives without densifying), not by the Trainer.
        self.trainer_ = Trainer(
            self.rbm_, sampler, objective, p["optimizer"], epochs=epochs,
            batch_size=p["batch_size"], lr=p["learning_rate"], momentum=p["momentum"],
            weight_decay=p["weight_decay"], seed=seed, shuffle=p["shuffle"], batching="fixed",
            init_visible_bias=False, monitor_size=0, progress=False, distributed=False,
            precision=p["precision"])
        self._built_with = {k: v for k, v in self.get_params().items()
                            if k not in _FREE_IN_PARTIAL_FIT}
        return p

    def _init_visible_bias(self, X) -> None:
        mean = np.asarray(X.mean(axis=0), dtype=np.float64).reshape(1, -1)
        self.rbm_.init_visible_bias(self._tensor(mean))

    def _tensor(self, X) -> torch.Tensor:
        """Rows of X (dense or sparse) as a tensor of the model's dtype in its visible space."""
        dense = X.toarray() if sparse.issparse(X) else np.asarray(X)
        v = torch.tensor(dense, dtype=self.rbm_.dtype, device=self.rbm_.device)
        return self._scale(v)

    def _rows(self, X):
        """X as the Trainer's row source: in memory on the device, or CSR batch by batch."""
        if sparse.issparse(X):
            return _SparseRows(X, self._tensor)
        return TensorRows(self._tensor(X))

    def _train(self, X, report: bool) -> None:
        """Run the trainer to its ``epochs`` on X; ``report``: print each pass (verbose)."""
        trainer = self.trainer_
        if report:
            trainer.callbacks = [functools.partial(self._report, X)]
        try:
            trainer.fit(self._rows(X))
        except TrainingDiverged:
            raise FloatingPointError(
                f"{type(self).__name__}: the parameters became NaN/inf during training; "
                "lower learning_rate, or add momentum or weight_decay") from None
        finally:
            trainer.callbacks = []  # nothing that holds X stays behind

    def _report(self, X, trainer, record) -> None:
        print(f"[{type(self).__name__}] Iteration {record['epoch']}, {self._monitor(X)}, "
              f"time = {record['time']:.2f}s")

    # -- scikit-learn API ---------------------------------------------------------
    def fit(self, X, y=None):
        """Fit the model to X: ``n_iter`` passes in mini-batches of ``batch_size`` rows.

        Builds a fresh model (weights N(0, 0.01^2) from ``random_state``, zero biases
        unless ``init_visible_bias``) and trains it with a new ``trainer_``.  The rows
        are taken in order (``shuffle=False``) in batches of ``batch_size``, the last
        one shorter when ``batch_size`` does not divide ``n_samples``.  ``y`` is ignored.
        """
        X = self._validate_X(X, reset=True)
        rng = check_random_state(self.random_state)
        p = self._build(X, rng, epochs=_check_int("n_iter", self.n_iter, 0))
        self._update_scaling(X, reset=True)
        if p["init_visible_bias"]:
            self._init_visible_bias(X)
        self._train(X, report=bool(self.verbose))
        return self

    def partial_fit(self, X, y=None):
        """One update on X, all of its rows as one mini-batch (scikit-learn's partial_fit).

        The first call builds the model and ``trainer_`` (from the RandomState
        ``random_state_``, set from ``random_state`` on first use); later calls continue
        it: the same chains, optimizer state and random streams.  A changed
        ``learning_rate`` applies; the other parameters must keep the values of the first
        call (call ``fit`` to start again with new ones).  ``y`` is ignored.
        """
        first = not self.__sklearn_is_fitted__()
        X = self._validate_X(X, reset=first)
        if not hasattr(self, "random_state_"):
            self.random_state_ = check_random_state(self.random_state)
        if first:
            p = self._build(X, self.random_state_, epochs=0)
        else:
            p = self._checked_params()
            changed = {k: (v, getattr(self, k)) for k, v in self._built_with.items()
                       if getattr(self, k) != v}
            if changed:
                raise ValueError(
                    f"{type(self).__name__}.partial_fit continues the model its first call "
                    f"built; these parameters changed since (then, now): {changed}. Call fit "
                    "to start again with them")
        trainer = self.trainer_
        for group in trainer.optimizer.param_groups:
            group["lr"] = p["learning_rate"]
        if isinstance(trainer.sampler, HiddenPersistentCD):
            trainer.sampler.random_state = self.random_state_  # after fit: scikit-learn's
        self._update_scaling(X, reset=first)
        if first and p["init_visible_bias"]:
            self._init_visible_bias(X)
        trainer.epochs += 1
        trainer.batch_size = X.shape[0]
        self._train(X, report=False)
        trainer.history.clear()  # one record per call would pile up over a stream
        return self

    def transform(self, X):
        """Hidden-unit means E[h | v], the features: (n_samples, n_components), in X's
        float dtype (float32 stays float32, anything else gives float64)."""
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        return self._mean_hiddens(X)

    @torch.no_grad()
    def _mean_hiddens(self, v):
        """E[h | v] without input checks (scikit-learn's helper of the same name).

        v: (n_samples, n_features), dense or sparse, or one row (n_features,); returns
        (n_samples, n_components), or (n_components,) for one row, in v's float dtype.
        """
        if not sparse.issparse(v):
            v = np.asarray(v)
            if v.ndim == 1:
                return self._mean_hiddens(v.reshape(1, -1))[0]
        out = np.empty((v.shape[0], self.rbm_.n_hidden), dtype=_out_dtype(v))
        for s in range(0, v.shape[0], _CHUNK):
            out[s:s + _CHUNK] = self.rbm_.hidden_mean(self._tensor(v[s:s + _CHUNK])).cpu()
        return out

    # -- fitted attributes, scikit-learn's names ---------------------------------
    @property
    def components_(self) -> np.ndarray:
        """Weights, (n_components, n_features): ``rbm_.connection.weights.T``, a copy in
        the dtype the model computes in."""
        check_is_fitted(self)
        return _numpy(self.rbm_.connection.weights.t())

    @property
    def intercept_hidden_(self) -> np.ndarray:
        """Hidden biases, (n_components,)."""
        check_is_fitted(self)
        return _numpy(self.rbm_.hidden.bias)

    @property
    def intercept_visible_(self) -> np.ndarray:
        """Visible biases, (n_features,)."""
        check_is_fitted(self)
        return _numpy(self.rbm_.visible.bias)

    @property
    def _n_features_out(self) -> int:
        return self.rbm_.n_hidden

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "rbm_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class BernoulliRBM(_RBMBase):
    """Bernoulli RBM (binary visible and hidden units), scikit-learn's API on boltzkit.

    A drop-in for :class:`sklearn.neural_network.BernoulliRBM`: the same
    parameters, defaults, methods, private helpers (``_mean_hiddens``,
    ``_sample_hiddens``, ``_sample_visibles``, ``_free_energy``) and fitted attributes
    (``h_samples_`` included), and with the default boltzkit settings the same
    algorithm, random number for random number: for a given ``random_state`` it
    reproduces scikit-learn's model (``tests/test_sklearn.py`` checks this to float64
    rounding on the digits, and ``tests/test_sklearn_upstream.py`` runs scikit-learn's
    own tests of its BernoulliRBM against this class).  X holds values in [0, 1]:
    binary data, or grey levels that (as in scikit-learn) enter the gradient as
    probabilities (the statistics are linear in v).  ``fit``, ``partial_fit``,
    ``transform`` and ``gibbs`` refuse values outside [0, 1]: scale the data first,
    e.g. with ``MinMaxScaler(clip=True)`` in the pipeline (without ``clip``, test folds
    beyond the training fold's range would exceed 1).  Sparse input in any SciPy
    format is taken as CSR, densified one mini-batch at a time, and gives exactly
    the model the same data gives dense.

    What reproduces scikit-learn: ``method="sklearn"``, ``k=1``, ``momentum=0``,
    ``optimizer="sgd"``, ``weight_decay=0``, ``n_chains=None``, ``dtype=None``,
    ``shuffle=False``, ``init_visible_bias=False`` (the defaults).  Then the weights
    are N(0, 0.01^2) from ``random_state``, the biases zero, the rows taken in order in
    batches of ``batch_size`` (the last one shorter), and each update is
    scikit-learn's persistent CD (:class:`boltzkit.sampling.HiddenPersistentCD`:
    ``batch_size`` chains of hidden states from zero, every draw from the same NumPy
    RandomState in the same order; the model statistics summed over the chains and
    divided by the batch's rows, ``LikelihoodGradient(model_norm="rows")``), computed
    in X's precision.  The extras change exactly what their names say:
    ``method`` another sampler (they keep visible-state chains and draw from a torch
    generator seeded from ``random_state``, and take the chains' mean), ``k`` more
    Gibbs sweeps per update, ``momentum`` / ``optimizer`` / ``weight_decay`` the
    update rule, ``n_chains`` the number of persistent chains, ``dtype`` the
    precision (``"float32"`` on float64 data agrees with scikit-learn to float32
    rounding, until a draw lands between the two roundings of its probability; it
    was 2.4x faster than float64 where the GEMMs dominate, 784 x 500 units in batches
    of 100 on one thread, and no faster at the digits example's 64 x 100 in batches
    of 10, where a step costs its dispatch), ``shuffle`` a new row order each pass,
    ``init_visible_bias`` the visible biases' start at the data's log-odds (Hinton's
    practical guide), and ``device`` where it computes (with method="sklearn" the
    uniforms are drawn by NumPy on the CPU and copied to the device every update).

    Parameters
    ----------
    n_components : int, default=256
        Number of hidden units.
    learning_rate : float, default=0.1
        Step size of the optimizer (the gradient is a mean over the batch's rows,
        as in scikit-learn).
    batch_size : int, default=10
        Rows per mini-batch (and, for method="sklearn", the number of chains).
    n_iter : int, default=10
        Passes over the training data in ``fit``.
    verbose : int, default=0
        Print the pseudo-likelihood (``score_samples(X).mean()``) after each
        pass, in scikit-learn's format.
    random_state : int, RandomState instance or None, default=None
        Draws the initial weights and, with method="sklearn", every sample of
        training and ``gibbs`` (as scikit-learn; a RandomState instance is used
        and advanced, None is NumPy's global one); picks the units
        ``score_samples`` flips.  Other methods and ``shuffle`` draw from a torch
        generator seeded from it.
    method : {"sklearn", "pcd", "cd", "pt", "tds"}, default="sklearn"
        Negative phase: scikit-learn's persistent CD (hidden-state chains), boltzkit's
        persistent CD (visible-state chains), CD-k, parallel tempering (10
        temperatures) or temperature-driven PCD.
    k : int, default=1
        Gibbs sweeps per update.
    momentum : float, default=0.0
        SGD momentum (with ``optimizer="adam"``: Adam's beta1, 0 meaning 0.9).
    optimizer : {"sgd", "adam"}, default="sgd"
    weight_decay : float, default=0.0
        L2 penalty on the weights (not the biases).
    device : str, default="cpu"
        Torch device to train and compute on ("cuda" for a GPU).
    n_chains : int or None, default=None
        Persistent chains for "pcd", "pt" and "tds" (None: ``batch_size``);
        refused with "sklearn" (``batch_size`` chains) and "cd" (none).
    dtype : {None, "float32", "float64"}, default=None
        Precision of training and inference.  None: X's, as scikit-learn (float32
        data in float32, anything else in float64).  Results (``transform``,
        ``score_samples``, ``gibbs``) come back in X's float dtype either way.
    shuffle : bool, default=False
        Take the rows in a new random order each pass (scikit-learn never does).
    init_visible_bias : bool, default=False
        Start the visible biases at the data's log-odds instead of zero.
    precision : {"float32", "bfloat16", "auto"}, default="float32"
        GEMM precision of training (:mod:`boltzkit.precision`): "bfloat16" multiplies
        bfloat16 operands where the hardware has them natively (float32 elsewhere, with
        a warning), keeping float32 weights (``dtype=None`` then means float32).

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
    intercept_hidden_ : ndarray of shape (n_components,)
    intercept_visible_ : ndarray of shape (n_features,)
        The parameters, copies in the dtype the model computes in.
    h_samples_ : ndarray of shape (batch_size, n_components)
        The hidden states of scikit-learn's persistent chains (method="sklearn";
        the other methods keep visible-state chains in ``trainer_.sampler``).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when X has string column names.
    random_state_ : RandomState
        What ``partial_fit`` and ``gibbs`` draw from (set on first use).
    rbm_ : boltzkit.RBM
        The trained model (on ``device``) for boltzkit's own tools (likelihoods,
        sampling, ``save_model``).
    trainer_ : boltzkit.training.Trainer
        The training loop ``fit`` / ``partial_fit`` drive: its sampler (chains),
        optimizer, objective and history.
    """

    _visible_kind = "bernoulli"
    _methods = ("sklearn", *SAMPLERS)

    def __init__(self, n_components=256, *, learning_rate=0.1, batch_size=10, n_iter=10,
                 verbose=0, random_state=None, method="sklearn", k=1, momentum=0.0,
                 optimizer="sgd", weight_decay=0.0, device="cpu", n_chains=None, dtype=None,
                 shuffle=False, init_visible_bias=False, precision="float32"):
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.verbose = verbose
        self.random_state = random_state
        self.method = method
        self.k = k
        self.momentum = momentum
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.device = device
        self.n_chains = n_chains
        self.dtype = dtype
        self.precision = precision
        self.shuffle = shuffle
        self.init_visible_bias = init_visible_bias

    def _validate_X(self, X, reset, check_range=True):
        X = validate_data(self, X, reset=reset, accept_sparse="csr",
                          dtype=(np.float64, np.float32))
        return self._check_unit_interval(X) if check_range else X

    def _check_unit_interval(self, X):
        """Refuse values outside [0, 1] (scikit-learn's BernoulliRBM silently takes them)."""
        name = type(self).__name__
        check_non_negative(X, f"{name} (input X)")
        values = X.data if sparse.issparse(X) else X
        if values.size and values.max() > 1:
            raise ValueError(
                f"Values greater than 1 in data passed to {name} (found {values.max():g}): "
                "Bernoulli units take values in [0, 1] (binary data or probabilities); "
                "scale the data first, e.g. with sklearn.preprocessing.MinMaxScaler(clip=True) "
                "(clip=True keeps data beyond the training range, e.g. test folds, in [0, 1])")
        return X

    def _monitor(self, X) -> str:
        return f"pseudo-likelihood = {self.score_samples(X).mean():.2f}"

    @property
    def h_samples_(self) -> np.ndarray:
        """Hidden states of scikit-learn's persistent chains, (batch_size, n_components)."""
        check_is_fitted(self)
        sampler = self.trainer_.sampler
        if not isinstance(sampler, HiddenPersistentCD):
            raise AttributeError(
                f"h_samples_ holds the hidden states of scikit-learn's persistent chains "
                f"(method='sklearn'); method={self.method!r} keeps "
                + ("no chains" if self.method == "cd" else "visible-state chains, in "
                   "trainer_.sampler"))
        if sampler.chains is None:  # before the first update: scikit-learn's zeros
            return np.zeros((sampler.n_chains, self.rbm_.n_hidden),
                            dtype=_numpy(self.rbm_.hidden.bias).dtype)
        return _numpy(sampler.chains)

    def _random_state(self) -> np.random.RandomState:
        if not hasattr(self, "random_state_"):
            self.random_state_ = check_random_state(self.random_state)
        return self.random_state_

    def gibbs(self, v):
        """One Gibbs step v -> h -> v': sampled visible states, (n_samples, n_features),
        0/1 in v's float dtype.

        Draws from ``random_state_`` as scikit-learn does (hidden units of every row
        first, then the visible ones), so it advances between calls.
        """
        check_is_fitted(self)
        v = self._validate_X(v, reset=False)
        rng = self._random_state()
        h = self._sample_hiddens(v, rng)
        return self._sample_visibles(h, rng).astype(_out_dtype(v))

    def _sample_hiddens(self, v, rng):
        """Hidden states drawn from p(h | v): True where a uniform from ``rng`` falls below
        the unit's probability; boolean (n_samples, n_components) (scikit-learn's helper)."""
        p = self._mean_hiddens(v)
        return rng.uniform(size=p.shape) < p

    @torch.no_grad()
    def _sample_visibles(self, h, rng):
        """Visible states drawn from p(v | h) for hidden states h (n_samples, n_components);
        boolean (n_samples, n_features) (scikit-learn's helper)."""
        t = torch.tensor(np.asarray(h), dtype=self.rbm_.dtype, device=self.rbm_.device)
        p = _numpy(self.rbm_.visible_mean(t.reshape(-1, self.rbm_.n_hidden)))
        p = p.reshape(*np.shape(h)[:-1], self.rbm_.n_visible)
        return rng.uniform(size=p.shape) < p

    @torch.no_grad()
    def _free_energy(self, v):
        """F(v) = -log sum_h exp(-E(v, h)) of each row, (n_samples,) (scikit-learn's helper)."""
        out = [self.rbm_.free_energy(self._tensor(v[s:s + _CHUNK]))
               for s in range(0, v.shape[0], _CHUNK)]
        return torch.cat(out).cpu().numpy().astype(_out_dtype(v), copy=False)

    @torch.no_grad()
    def score_samples(self, X):
        """Pseudo-likelihood of each row, scikit-learn's stochastic estimate: (n_samples,),
        in X's float dtype.

        For each row one visible unit i is drawn (from ``random_state``, as
        scikit-learn's ``BernoulliRBM.score_samples`` draws it, so an integer
        ``random_state`` scores the same units on every call) and the score is
        ``n_features * log p(v_i | v_-i)`` with v_i flipped to 1 - v_i:
        an unbiased estimate of the per-sample log pseudo-likelihood summed
        over units, the scale of :func:`boltzkit.metrics.pseudo_likelihood`.
        Like scikit-learn's it takes X as it is (non-negative values above 1
        included, where the flip and the score have no probabilistic meaning).
        """
        check_is_fitted(self)
        X = self._validate_X(X, reset=False, check_range=False)
        check_non_negative(X, f"{type(self).__name__}.score_samples (input X)")
        n, d = X.shape
        rng = check_random_state(self.random_state)
        units = torch.as_tensor(rng.randint(0, d, n), device=self.rbm_.device)
        out = []
        for s in range(0, n, _CHUNK):
            v = self._tensor(X[s:s + _CHUNK])
            rows = torch.arange(v.shape[0], device=v.device)
            cols = units[s:s + _CHUNK]
            flipped = v.clone()
            flipped[rows, cols] = 1.0 - flipped[rows, cols]
            diff = self.rbm_.free_energy(v) - self.rbm_.free_energy(flipped)
            out.append(-d * torch.nn.functional.softplus(diff))
        return torch.cat(out).cpu().numpy().astype(_out_dtype(X), copy=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True
        return tags


class GaussianRBM(_RBMBase):
    """Gaussian-Bernoulli RBM transformer that standardises its input itself.

    ``fit`` stores the data's ``mean_`` and ``scale_`` (standard deviation;
    1 for constant columns) and trains on ``(X - mean_) / scale_`` with unit-
    variance Gaussian visible units and Bernoulli hidden units; ``transform``
    (hidden means) and ``gibbs`` apply the same scaling, and ``gibbs``
    returns its samples in the original units.  ``partial_fit`` updates the
    statistics incrementally (as ``StandardScaler.partial_fit`` does) before
    each update, so early updates use the estimates available then.

    Parameters are :class:`BernoulliRBM`'s with boltzkit's defaults rather than
    scikit-learn's (there is no scikit-learn original to reproduce):
    ``learning_rate=0.01`` (Gaussian visible units need a step one order of
    magnitude smaller than binary ones, Hinton's practical guide), ``method="pcd"``
    ("sklearn" is for Bernoulli units only), ``dtype="float32"``, ``shuffle=True``
    and ``init_visible_bias=True`` (the visible biases start at the standardised
    data's means).  ``gibbs`` draws from the trainer's torch generator.

    Attributes
    ----------
    mean_, var_, scale_ : ndarray of shape (n_features,)
        The standardisation, as in ``StandardScaler``.
    n_samples_seen_ : int
    components_ : ndarray of shape (n_components, n_features)
        Weights in standardised units.
    intercept_hidden_ : ndarray of shape (n_components,)
    intercept_visible_ : ndarray of shape (n_features,)
        Visible biases (the visible means at h = 0), in standardised units.
    n_features_in_ : int
    rbm_ : boltzkit.RBM
    trainer_ : boltzkit.training.Trainer
    """

    _visible_kind = "gaussian"

    def __init__(self, n_components=256, *, learning_rate=0.01, batch_size=10, n_iter=10,
                 verbose=0, random_state=None, method="pcd", k=1, momentum=0.0,
                 optimizer="sgd", weight_decay=0.0, device="cpu", n_chains=None,
                 dtype="float32", shuffle=True, init_visible_bias=True, precision="float32"):
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.verbose = verbose
        self.random_state = random_state
        self.method = method
        self.k = k
        self.momentum = momentum
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.device = device
        self.n_chains = n_chains
        self.dtype = dtype
        self.precision = precision
        self.shuffle = shuffle
        self.init_visible_bias = init_visible_bias

    def _validate_X(self, X, reset, check_range=True):
        return validate_data(self, X, reset=reset, dtype=(np.float64, np.float32))

    def _update_scaling(self, X, reset):
        n = X.shape[0]
        X = np.asarray(X, dtype=np.float64)
        mean, var = X.mean(0), X.var(0)
        if reset:
            self.n_samples_seen_, self.mean_, self.var_ = n, mean, var
        else:
            # Chan, Golub & LeVeque's pairwise update of the running mean and variance.
            m = self.n_samples_seen_
            total = m + n
            delta = mean - self.mean_
            self.var_ = (m * self.var_ + n * var + delta**2 * (m * n / total)) / total
            self.mean_ = self.mean_ + delta * (n / total)
            self.n_samples_seen_ = total
        scale = np.sqrt(self.var_)
        tiny = scale < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(self.mean_), 1.0)
        self.scale_ = np.where(tiny, 1.0, scale)
        dev = self.rbm_.device
        dt = self.rbm_.dtype
        self._mean_t = torch.as_tensor(self.mean_, dtype=dt, device=dev)
        self._scale_t = torch.as_tensor(self.scale_, dtype=dt, device=dev)

    def _scale(self, v):
        return (v - self._mean_t) / self._scale_t

    def _unscale(self, v):
        return v * self._scale_t + self._mean_t

    def _monitor(self, X) -> str:
        err = reconstruction_error(self.rbm_, self._tensor(X))
        return f"reconstruction error (standardised units) = {err:.4f}"

    @torch.no_grad()
    def gibbs(self, v):
        """One Gibbs step v -> h -> v': sampled visible states in the data's units,
        (n_samples, n_features) in v's float dtype.

        Draws from the trainer's torch generator (seeded from ``random_state`` at
        fit), which successive calls advance.
        """
        check_is_fitted(self)
        v = self._validate_X(v, reset=False)
        gen = self.trainer_.generator
        out = [self._unscale(self.rbm_.gibbs(self._tensor(v[s:s + _CHUNK]), 1, generator=gen))
               for s in range(0, v.shape[0], _CHUNK)]
        return torch.cat(out).cpu().numpy().astype(_out_dtype(v), copy=False)


# --------------------------------------------------------------------------- DRBMClassifier
class DRBMClassifier(ClassifierMixin, BaseEstimator):
    """Discriminative / hybrid RBM classifier (Larochelle & Bengio 2008) on boltzkit.

    Wraps :class:`boltzkit.models.discriminative.DiscriminativeRBM` (Bernoulli
    visible and hidden units, one softmax group of label units) trained by
    :func:`~boltzkit.models.discriminative.fit_drbm`.  ``predict_proba`` is the
    model's exact p(y | x).  Labels may be any values (``classes_`` holds them in
    sorted order; they are mapped to indices); at least two classes are needed.

    With ``objective="discriminative"`` (the default) X may hold any finite real
    values: p(y | x) involves x only through the weights, so the visible units'
    range does not matter.  ``"hybrid"`` (discriminative + ``alpha`` x generative,
    CD-1 on the joint) and ``"generative"`` model x with Bernoulli units and so
    need X in [0, 1] (fractional values enter the statistics as probabilities).
    Computes in float64 on ``device``; never changes ``torch.set_num_threads``.

    Parameters
    ----------
    n_components : int, default=100
        Number of hidden units.
    learning_rate : float, default=0.01
    n_iter : int, default=20
        Passes over the training data.
    batch_size : int, default=32
    alpha : float, default=0.01
        Weight of the generative term in the hybrid objective.
    objective : {"discriminative", "hybrid", "generative"}, default="discriminative"
    optimizer : {"adam", "sgd"}, default="adam"
    momentum : float, default=0.9
        SGD momentum, or Adam's beta1.
    weight_decay : float, default=0.0
        L2 penalty on the two weight matrices.
    init_std : float, default=0.05
        Standard deviation of the initial weights.
    device : str, default="cpu"
    random_state : int, RandomState instance or None, default=None
    verbose : int, default=0
        Print the training loss after each pass.

    Attributes
    ----------
    drbm_ : DiscriminativeRBM
        The trained model (save it with :func:`boltzkit.io.save_model`).
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    """

    def __init__(self, n_components=100, learning_rate=0.01, n_iter=20, batch_size=32,
                 alpha=0.01, objective="discriminative", optimizer="adam", momentum=0.9,
                 weight_decay=0.0, init_std=0.05, device="cpu", random_state=None,
                 verbose=0):
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.alpha = alpha
        self.objective = objective
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.init_std = init_std
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _checked_params(self) -> dict:
        from .models.discriminative import OBJECTIVES

        return {
            "n_components": _check_int("n_components", self.n_components, 1),
            "learning_rate": _check_float("learning_rate", self.learning_rate, 0.0,
                                          low_open=True),
            "n_iter": _check_int("n_iter", self.n_iter, 0),
            "batch_size": _check_int("batch_size", self.batch_size, 1),
            "alpha": _check_float("alpha", self.alpha, 0.0),
            "objective": _check_choice("objective", self.objective, OBJECTIVES),
            "optimizer": _check_choice("optimizer", self.optimizer, _OPTIMIZERS),
            "momentum": _check_float("momentum", self.momentum, 0.0, 1.0, high_open=True),
            "weight_decay": _check_float("weight_decay", self.weight_decay, 0.0),
            "init_std": _check_float("init_std", self.init_std, 0.0),
            "device": torch.device(self.device),
        }

    def fit(self, X, y):
        """Train on X (n_samples, n_features) and labels y; returns self."""
        from .models.discriminative import DiscriminativeRBM, fit_drbm

        p = self._checked_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two classes in y, got "
                             f"one class only ({classes[0]!r})")
        if p["objective"] != "discriminative" and (X.min() < 0 or X.max() > 1):
            raise ValueError(f"objective={p['objective']!r} models X with Bernoulli units and "
                             "needs values in [0, 1]: scale X (e.g. MinMaxScaler(clip=True)) "
                             "or use objective='discriminative'")
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        gen = torch.Generator().manual_seed(seed)
        model = DiscriminativeRBM(X.shape[1], len(classes), p["n_components"],
                                  init_std=p["init_std"], generator=gen)
        model = model.to(device=p["device"], dtype=torch.float64)
        callback = None
        if self.verbose:
            def callback(rec):
                print(f"[{type(self).__name__}] Iteration {rec['epoch']}, "
                      f"train loss = {rec['train_loss']:.4f}, time = {rec['time']:.2f}s")
        fit_drbm(model, torch.tensor(X), y_idx.astype(np.int64), objective=p["objective"],
                 alpha=p["alpha"], epochs=p["n_iter"], batch_size=p["batch_size"],
                 lr=p["learning_rate"], optimizer=p["optimizer"], momentum=p["momentum"],
                 weight_decay=p["weight_decay"], seed=seed + 1, strict=False,
                 callback=callback)
        self.classes_ = classes
        self.drbm_ = model
        return self

    def predict_log_proba(self, X):
        """log p(y | x) for each class in ``classes_`` order, float64 (n_samples, n_classes)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = self.drbm_.predict_log_proba(torch.tensor(X), batch_size=_CHUNK, strict=False)
        return out.cpu().numpy().astype(np.float64, copy=False)

    def predict_proba(self, X):
        """p(y | x) for each class in ``classes_`` order; rows sum to one."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        """The most probable class label for each row of X."""
        log_proba = self.predict_log_proba(X)  # checks fitted first
        return self.classes_[np.argmax(log_proba, axis=1)]

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "drbm_")


# --------------------------------------------------------------------------- DBN estimators
_SCALINGS = ("minmax", "none")


class _DBNBase(BaseEstimator):
    """Shared machinery of the DBN estimators: parameters, input scaling, pretraining."""

    def _checked_dbn_params(self) -> dict:
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
            sizes = (sizes,)
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise ValueError("hidden_layer_sizes must be a sequence of positive integers, got "
                             f"{self.hidden_layer_sizes!r}") from None
        if not sizes:
            raise ValueError("hidden_layer_sizes must hold at least one layer size")
        return {
            "sizes": tuple(_check_int("hidden_layer_sizes entries", s, 1) for s in sizes),
            "learning_rate": _check_float("learning_rate", self.learning_rate, 0.0,
                                          low_open=True),
            "batch_size": _check_int("batch_size", self.batch_size, 1),
            "n_iter": _check_int("n_iter", self.n_iter, 0),
            "method": _check_choice("method", self.method, SAMPLERS),
            "k": _check_int("k", self.k, 1),
            "momentum": _check_float("momentum", self.momentum, 0.0, 1.0, high_open=True),
            "weight_decay": _check_float("weight_decay", self.weight_decay, 0.0),
            "residual": bool(self.residual),
            "input_scaling": _check_choice("input_scaling", self.input_scaling, _SCALINGS),
            "device": torch.device(self.device),
        }

    def _fit_scaling(self, X, scaling: str) -> None:
        if scaling == "minmax":
            self.data_min_ = X.min(axis=0)
            rng = X.max(axis=0) - self.data_min_
            self.data_range_ = np.where(rng > 0, rng, 1.0)

    def _scaled(self, X) -> torch.Tensor:
        """X in the bottom layer's space: min-max scaled and clipped to [0, 1] (or as is)."""
        if self.input_scaling == "minmax":
            X = np.clip((X - self.data_min_) / self.data_range_, 0.0, 1.0)
        elif X.size and (X.min() < 0 or X.max() > 1):
            raise ValueError(f"{type(self).__name__} with input_scaling='none' needs X in "
                             "[0, 1] (Bernoulli bottom units): scale X or use "
                             "input_scaling='minmax'")
        return torch.tensor(np.asarray(X, dtype=np.float64), device=self.dbn_.device)

    def _pretrain(self, X) -> dict:
        """Build the stack and train it greedily on X (validated float64); returns params."""
        from .stacks.dbn import make_dbn

        p = self._checked_dbn_params()
        self._fit_scaling(X, p["input_scaling"])
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        self.dbn_ = make_dbn([X.shape[1], *p["sizes"]], residual=p["residual"],
                             seed=seed).to(device=p["device"], dtype=torch.float64)
        callbacks = []
        if self.verbose:
            def show(trainer, rec):
                print(f"[{type(self).__name__}] layer {trainer.dbn_layer}, iteration "
                      f"{rec['epoch']}, reconstruction error = {rec['recon_error']:.4f}, "
                      f"time = {rec['time']:.2f}s")
            callbacks.append(show)
        settings = {"epochs": p["n_iter"], "lr": p["learning_rate"],
                    "batch_size": p["batch_size"], "method": p["method"], "k": p["k"],
                    "momentum": p["momentum"], "weight_decay": p["weight_decay"],
                    "seed": seed % 100003, "monitor_size": 200}
        self.dbn_.fit(self._scaled(X), settings, callbacks=callbacks, fractional=True)
        if not all(r.parameters_finite() for r in self.dbn_.layers):
            raise FloatingPointError(f"{type(self).__name__}: pretraining diverged (NaN/inf "
                                     "parameters); lower learning_rate")
        p["seed"] = seed
        return p


class DBNTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, _DBNBase):
    """Deep belief network features: greedy layer-wise RBM pretraining, then the up pass.

    Trains a stack of Bernoulli RBMs (:class:`boltzkit.stacks.dbn.DBN`) with
    ``hidden_layer_sizes`` hidden units per layer, each on the hidden means of
    the layer below, ``n_iter`` passes per layer; ``transform`` returns the top
    layer's hidden means (float64).  X is min-max scaled into [0, 1]
    (``input_scaling="minmax"``: per-feature range from the training data,
    clipped at transform) because the bottom layer has Bernoulli units; grey
    levels enter as probabilities.  ``residual=True`` builds a residual DBN
    (Roder et al. 2020).  Never changes ``torch.set_num_threads``.

    Parameters
    ----------
    hidden_layer_sizes : sequence of int, default=(256, 256)
    learning_rate : float, default=0.1
        Pretraining learning rate (every layer).
    batch_size : int, default=10
    n_iter : int, default=10
        Pretraining passes per layer.
    method : {"cd", "pcd", "pt", "tds"}, default="cd"
    k : int, default=1
    momentum : float, default=0.5
    weight_decay : float, default=0.0
    residual : bool, default=False
    input_scaling : {"minmax", "none"}, default="minmax"
        "none" passes X as is (it must then lie in [0, 1]).
    device : str, default="cpu"
    random_state : int, RandomState instance or None, default=None
    verbose : int, default=0

    Attributes
    ----------
    dbn_ : boltzkit.stacks.dbn.DBN
        The trained stack (save it with :func:`boltzkit.io.save_model`).
    data_min_, data_range_ : ndarray of shape (n_features,)
        The input scaling (``input_scaling="minmax"``).
    n_features_in_ : int
    """

    def __init__(self, hidden_layer_sizes=(256, 256), *, learning_rate=0.1, batch_size=10,
                 n_iter=10, method="cd", k=1, momentum=0.5, weight_decay=0.0, residual=False,
                 input_scaling="minmax", device="cpu", random_state=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.method = method
        self.k = k
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.residual = residual
        self.input_scaling = input_scaling
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None):
        """Pretrain the stack on X; ``y`` is ignored."""
        X = validate_data(self, X, dtype=np.float64)
        self._pretrain(X)
        return self

    def transform(self, X):
        """Top-layer hidden means, float64 (n_samples, hidden_layer_sizes[-1])."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = self.dbn_.transform(self._scaled(X), batch_size=_CHUNK, fractional=True)
        return out.cpu().numpy().astype(np.float64, copy=False)

    @property
    def _n_features_out(self) -> int:
        return self.dbn_.sizes[-1]

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "dbn_")


class DBNClassifier(ClassifierMixin, _DBNBase):
    """Deep belief network classifier: greedy pretraining, then backprop fine-tuning.

    Pretrains like :class:`DBNTransformer`, turns the stack into a feed-forward
    net (sigmoid layers initialised from the RBMs, plus a softmax layer) and
    fine-tunes all of it with cross-entropy (:func:`boltzkit.stacks.dbn.fine_tune`):
    ``finetune_iter`` passes of SGD with momentum (or Adam) in mini-batches of
    ``finetune_batch_size``, optional ``dropout`` on the hidden layers, and, with
    ``early_stopping``, ``validation_fraction`` of the rows held out to keep the
    best epoch (stopping after ``n_iter_no_change`` epochs without gain).
    Labels may be any values (``classes_`` holds them sorted); at least two
    classes are needed.  Parameters shared with :class:`DBNTransformer` mean the
    same.

    Attributes
    ----------
    dbn_ : boltzkit.stacks.dbn.DBN
        The pretrained stack (before fine-tuning).
    classifier_ : boltzkit.stacks.dbn.DBNClassifier
        The fine-tuned torch module (save it with :func:`boltzkit.io.save_model`).
    classes_ : ndarray of shape (n_classes,)
    data_min_, data_range_ : ndarray of shape (n_features,)
    n_features_in_ : int
    """

    def __init__(self, hidden_layer_sizes=(256, 256), *, learning_rate=0.1, batch_size=10,
                 n_iter=10, method="cd", k=1, momentum=0.5, weight_decay=0.0, residual=False,
                 finetune_iter=30, finetune_learning_rate=0.1, finetune_batch_size=32,
                 finetune_optimizer="sgd", finetune_momentum=0.9, finetune_weight_decay=0.0,
                 dropout=0.0, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, input_scaling="minmax", device="cpu",
                 random_state=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.method = method
        self.k = k
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.residual = residual
        self.finetune_iter = finetune_iter
        self.finetune_learning_rate = finetune_learning_rate
        self.finetune_batch_size = finetune_batch_size
        self.finetune_optimizer = finetune_optimizer
        self.finetune_momentum = finetune_momentum
        self.finetune_weight_decay = finetune_weight_decay
        self.dropout = dropout
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.input_scaling = input_scaling
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y):
        """Pretrain on X, then fine-tune on (X, y); returns self."""
        from .stacks.dbn import fine_tune

        ft = {
            "epochs": _check_int("finetune_iter", self.finetune_iter, 0),
            "lr": _check_float("finetune_learning_rate", self.finetune_learning_rate, 0.0,
                               low_open=True),
            "batch_size": _check_int("finetune_batch_size", self.finetune_batch_size, 1),
            "optimizer": _check_choice("finetune_optimizer", self.finetune_optimizer,
                                       _OPTIMIZERS),
            "momentum": _check_float("finetune_momentum", self.finetune_momentum, 0.0, 1.0,
                                     high_open=True),
            "weight_decay": _check_float("finetune_weight_decay", self.finetune_weight_decay,
                                         0.0),
        }
        dropout = _check_float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        val_fraction = _check_float("validation_fraction", self.validation_fraction, 0.0, 1.0,
                                    low_open=True, high_open=True)
        patience = _check_int("n_iter_no_change", self.n_iter_no_change, 1)
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two classes in y, got "
                             f"one class only ({classes[0]!r})")
        p = self._pretrain(X)
        clf = self.dbn_.to_classifier(len(classes), dropout=dropout,
                                      generator=torch.Generator().manual_seed(p["seed"] + 2))
        early = bool(self.early_stopping) and X.shape[0] >= 2
        clf, hist = fine_tune(clf, self._scaled(X), torch.as_tensor(y_idx, dtype=torch.int64),
                              **ft, val_fraction=val_fraction if early else 0.0,
                              patience=patience if early else 0, seed=p["seed"] % 100003,
                              quiet=not self.verbose)
        if not all(bool(torch.isfinite(t).all()) for t in clf.parameters()):
            raise FloatingPointError(f"{type(self).__name__}: fine-tuning diverged (NaN/inf "
                                     "parameters); lower finetune_learning_rate")
        self.classes_ = classes
        self.classifier_ = clf
        self.n_iter_ = len(hist)
        return self

    def predict_proba(self, X):
        """Class probabilities in ``classes_`` order; rows sum to one."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = self.classifier_.predict_proba(self._scaled(X), batch_size=_CHUNK)
        return out.cpu().numpy().astype(np.float64, copy=False)

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class label for each row of X."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "classifier_")
