"""One call for a model's report card, and a training callback that logs the likelihood."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..precision import choose, computing
from ..rbm import RBM
from .divergence import forward_kl, mode_coverage, reverse_kl
from .likelihood import (
    DEFAULT_AIS_STEPS,
    exact_is_auto,
    free_energies,
    log_likelihood,
    pseudo_likelihood,
    reconstruction_error,
)

#: Metric names :func:`evaluate` accepts.
METRICS = ("loglik", "pl", "recon", "knn", "modes", "features")

# Each metric draws from its own generator (seed + offset), so asking for more
# metrics never changes the numbers of the others.
_SEED_OFFSETS = {"loglik": 0, "pl": 1, "samples": 2}


def _generator(model: RBM, seed: int, metric: str) -> torch.Generator:
    return torch.Generator(device=model.device).manual_seed(int(seed) + _SEED_OFFSETS[metric])


def _json_value(v):
    """Python scalars for JSON: floats (non-finite -> None), ints, bools, str, lists."""
    if isinstance(v, Tensor):
        v = v.tolist()
    if isinstance(v, bool) or v is None or isinstance(v, str | int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    return _json_value(float(v))


def _labels(y, n: int, name: str) -> Tensor:
    if y is None:
        raise ConfigError(f"the 'features' metric needs {name}: pass class labels for the data")
    y = torch.as_tensor(y).reshape(-1)
    if y.numel() != n:
        raise DataError(f"{name} has {y.numel()} entries but there are {n} samples")
    return y


@torch.no_grad()
def evaluate(model: RBM, data: Tensor, metrics: Sequence[str] = ("loglik", "pl", "recon"),
             train_data: Tensor | None = None, method: str = "auto", ais_chains: int = 100,
             ais_steps: int = DEFAULT_AIS_STEPS, seed: int = 0, reference: dict | None = None,
             labels: Tensor | None = None, train_labels: Tensor | None = None,
             n_model_samples: int | None = None, sample_steps: int = 1000, knn_k: int = 1,
             batch_size: int = 1000, ais_reverse: bool = False,
             exact_dtype: torch.dtype = torch.float64, log_jacobian: float = 0.0,
             precision: str = "float32") -> dict:
    """Evaluate ``model`` on ``data``; returns a JSON-serialisable dict of plain numbers.

    Always: ``n_samples``, ``free_energy`` (mean F(data)) and, with
    ``train_data``, ``free_energy_gap`` (mean F(data) - mean F(train)).
    Metrics: "loglik" (``log_likelihood`` and its bounds, exact or AIS; see
    :func:`~boltzkit.metrics.log_likelihood`), "pl" (``pseudo_likelihood``,
    exact), "recon" (``recon_error``, per-unit MSE: not a quality figure),
    "knn" (``knn_forward_kl`` = KL(data || model), ``knn_reverse_kl``, from
    ``n_model_samples`` model samples, default as many as data rows up to
    5000, drawn by ``sample_steps`` Gibbs sweeps from random states), "modes"
    (mode coverage of those samples; ``reference`` = a mixture description with
    ``means`` and ``std``, e.g. ``boltzkit.data.mixture_spec(name)``) and
    "features" (``features_accuracy``: logistic regression on E[h | v] trained
    on ``train_data``/``train_labels``, tested on ``data``/``labels``).
    ``ais_reverse`` also runs reverse AIS from data (``ais_log_z_reverse``), a
    second estimate that brackets the forward one when both are sound.
    ``exact_dtype`` is the precision of an exact enumeration (float64 or float32).
    ``log_jacobian`` is added to the log-likelihood (a model of standardised data
    scored as a density of the original values: ``Standardizer.log_jacobian``).
    ``precision`` (float32, bfloat16, auto: :mod:`boltzkit.precision`) is the GEMM
    precision of the sampling: AIS's annealing chains and the model samples; free
    energies, pseudo-likelihood and exact sums keep their own precision.  The choice is
    reported as ``precision``.
    Non-finite values (e.g. an AIS lower bound of -inf) become None.
    """
    if not isinstance(model, RBM):
        raise ConfigError(f"evaluate expects a boltzkit RBM, got {type(model).__name__}")
    if isinstance(metrics, str):
        metrics = (metrics,)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric(s) {unknown}: valid names are {list(METRICS)}")
    v = model.prepare(data)
    prec = choose(precision, model.device)
    sampling = "knn" in metrics or "modes" in metrics or ("loglik" in metrics and (
        method == "ais" or (method == "auto" and not exact_is_auto(model))))
    if prec.name != "float32" and not sampling:
        raise ConfigError(f"precision {prec.name} applies to sampling (AIS, model samples) and "
                          f"these metrics {list(metrics)} sample nothing: drop --precision")
    out: dict = {"n_samples": int(v.shape[0]), "metrics": list(metrics), "seed": int(seed),
                 "precision": prec.name}
    f_data = free_energies(model, v, batch_size)
    out["free_energy"] = float(f_data.mean())
    if train_data is not None:
        train_data = model.prepare(train_data, "train_data")
        out["free_energy_gap"] = out["free_energy"] - float(
            free_energies(model, train_data, batch_size).mean())
    if "loglik" in metrics:
        res = log_likelihood(model, v, method=method, ais_chains=ais_chains, ais_steps=ais_steps,
                             train_data=train_data, generator=_generator(model, seed, "loglik"),
                             batch_size=batch_size, reverse=ais_reverse,
                             exact_dtype=exact_dtype, log_jacobian=log_jacobian,
                             precision=prec)
        res.pop("n_samples")
        out.update(res)
    if "pl" in metrics:
        out["pseudo_likelihood"] = pseudo_likelihood(
            model, v, exact=True, generator=_generator(model, seed, "pl"), batch_size=batch_size)
    if "recon" in metrics:
        out["recon_error"] = reconstruction_error(model, v, batch_size)
    if "knn" in metrics or "modes" in metrics:
        n = n_model_samples or min(v.shape[0], 5000)
        with computing(prec, model.device):
            samples = model.sample(n, steps=sample_steps,
                                   generator=_generator(model, seed, "samples"), return_mean=False)
        out["n_model_samples"] = int(n)
        if "knn" in metrics:
            out["knn_forward_kl"] = forward_kl(v, samples, knn_k)
            out["knn_reverse_kl"] = reverse_kl(v, samples, knn_k)
            out["knn_k"] = knn_k
        if "modes" in metrics:
            if not isinstance(reference, dict) or "means" not in reference or (
                    "std" not in reference):
                raise ConfigError("the 'modes' metric needs reference={'means': ..., 'std': ...}"
                                  ", e.g. boltzkit.data.mixture_spec('mog-ring8')")
            cov = mode_coverage(samples, reference["means"], reference["std"])
            out.update({f"mode_{k}" if not k.startswith("mode") else k: val
                        for k, val in cov.items()})
    if "features" in metrics:
        out["features_accuracy"] = _features_accuracy(model, v, labels, train_data, train_labels,
                                                      batch_size, seed)
    return _json_value(out)


def _features_accuracy(model, v: Tensor, labels, train_data, train_labels,
                       batch_size: int, seed: int) -> float:
    """Test accuracy of a logistic regression on the standardised hidden means E[h | v]."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if train_data is None:
        raise ConfigError("the 'features' metric needs train_data and train_labels to fit the "
                          "classifier (data/labels are the test set)")
    y_test = _labels(labels, v.shape[0], "labels").cpu().numpy()
    y_train = _labels(train_labels, train_data.shape[0], "train_labels").cpu().numpy()
    x_train = model.transform(train_data, batch_size=batch_size).double().cpu().numpy()
    x_test = model.transform(v, batch_size=batch_size).double().cpu().numpy()
    # Standardised features: hidden means of a young model vary little around 0.5, and
    # an unscaled, L2-regularised classifier would then just predict the majority class.
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    clf.fit(x_train, y_train)
    return float(clf.score(x_test, y_test))


#: What :func:`evaluate_model` measures for each family of model (the registry of kinds,
#: :mod:`boltzkit.kinds`, says which family a kind belongs to).
MODEL_METRICS: dict[str, tuple[str, ...]] = {
    "rbm": ("loglik", "pl", "recon", "knn", "modes", "features"),
    "classifier": ("error",),
    "dbm": ("loglik", "features"),
    "dbn": ("features",),
    "lateral": ("loglik", "pl"),
    "sequence": ("rmse", "loglik"),
}
_DEFAULT_METRICS = {"rbm": ("loglik", "pl", "recon"), "classifier": ("error",),
                    "dbm": ("loglik",), "dbn": ("features",), "lateral": ("loglik", "pl"),
                    "sequence": ("rmse",)}


def model_family(model) -> str:
    """The evaluation family of a model, from the registry of kinds (its config's kind)."""
    from ..kinds import KINDS

    config = getattr(model, "config", None)
    kind = config().get("model") if callable(config) else None
    family = KINDS[kind].evaluate if kind in KINDS else None
    if family not in MODEL_METRICS:
        raise ConfigError(f"cannot evaluate a {type(model).__name__} with these metrics"
                          + (f" (kind {kind!r} is evaluated as a {family})" if family else ""))
    return family


def default_metrics(model) -> tuple[str, ...]:
    """The metrics :func:`evaluate_model` reports when none are named: the family's, less
    pseudo-likelihood where the visible units are continuous (it is undefined there)."""
    family = model_family(model)
    metrics = _DEFAULT_METRICS[family]
    visible = getattr(model, "visible", None)
    if "pl" in metrics and visible is not None and not visible.discrete:
        metrics = tuple(m for m in metrics if m != "pl")
    return metrics


@torch.no_grad()
def evaluate_model(model, data: Tensor, metrics: Sequence[str] | None = None,
                   labels: Tensor | None = None, train_data: Tensor | None = None,
                   train_labels: Tensor | None = None, ais_chains: int = 100,
                   ais_steps: int = DEFAULT_AIS_STEPS, seed: int = 0, batch_size: int = 1000,
                   precision: str = "float32", **rbm_options) -> dict:
    """:func:`evaluate` for any boltzkit model, with the metrics that make sense for it.

    RBMs (and the zoo's RBM-based kinds) go to :func:`evaluate`; classifiers report
    ``error`` (``test_error`` and ``nll`` = mean -log p(y|x), from ``labels``); DBMs
    report ``loglik`` (the variational lower bound on log p(v) with log Z by AIS, or
    exact for tiny models: :func:`boltzkit.stacks.dbm.dbm_log_likelihood_bound`) and
    ``features``; DBNs report ``features`` (logistic regression on the top layer's
    features; a DBN's likelihood has no tractable bound here); Ising, Potts and
    semi-restricted models ``loglik`` (exact by enumeration up to 2^20 states, else AIS
    for a semi-restricted RBM) and ``pl``; a conditional RBM scores a sequence (rows:
    frames in time order): ``rmse`` of its one-step-ahead mean-field predictions (next to
    persistence) and ``loglik``, the exact mean log p(v_t | history) (small hidden layers).
    ``metrics=None`` takes :func:`default_metrics`.  ``precision``: the GEMM precision of
    the sampling (AIS annealing; :func:`evaluate`), reported as ``precision``.
    """
    family = model_family(model)
    if metrics is None:
        metrics = default_metrics(model)
    if isinstance(metrics, str):
        metrics = (metrics,)
    unknown = [m for m in metrics if m not in MODEL_METRICS[family]]
    if unknown:
        raise ConfigError(f"metric(s) {unknown} do not apply to a {type(model).__name__}: "
                          f"choose from {list(MODEL_METRICS[family])}")
    if family == "rbm":
        return evaluate(model, data, metrics, train_data=train_data, labels=labels,
                        train_labels=train_labels, ais_chains=ais_chains, ais_steps=ais_steps,
                        seed=seed, batch_size=batch_size, precision=precision, **rbm_options)
    prec = choose(precision, _model_device(model))
    if prec.name != "float32" and family in ("classifier", "dbn", "sequence"):
        raise ConfigError(f"precision {prec.name} applies to sampling (AIS, model samples); a "
                          f"{family} evaluation samples nothing: drop --precision")
    if family == "lateral":
        return _json_value({**_lateral_metrics(model, data, metrics, train_data, ais_chains,
                                               ais_steps, seed, prec), "precision": prec.name})
    if family == "sequence":
        return _json_value({**_sequence_metrics(model, data, metrics), "precision": prec.name})
    v = model.prepare(data) if hasattr(model, "prepare") else model.layers[0].prepare(data)
    out: dict = {"n_samples": int(v.shape[0]), "metrics": list(metrics), "seed": int(seed),
                 "precision": prec.name}
    if "error" in metrics:
        y = _labels(labels, v.shape[0], "labels").to(v.device).long()
        out["test_error"], out["nll"] = classification_scores(model, v, y, batch_size)
    if "loglik" in metrics:
        from ..stacks.dbm import dbm_log_likelihood_bound

        train = None if train_data is None else model.prepare(train_data, "train_data")
        out.update(dbm_log_likelihood_bound(model, v, ais_chains, ais_steps, seed=seed,
                                            train_data=train, precision=prec))
    if "features" in metrics:
        out["features_accuracy"] = _features_accuracy(model, v, labels, train_data, train_labels,
                                                      batch_size, seed)
    return _json_value(out)


def _model_device(model) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _lateral_metrics(model, data, metrics, train_data, ais_chains, ais_steps, seed,
                     prec) -> dict:
    from ..models import lateral

    if isinstance(model, lateral.PottsModel) and torch.as_tensor(data).shape[-1] == model.n_sites:
        data = model.one_hot(data)  # integer states, as the model was trained on
        if train_data is not None:
            train_data = model.one_hot(train_data)
    v = model.prepare(data)
    out: dict = {"n_samples": int(v.shape[0]), "metrics": list(metrics), "seed": int(seed)}
    if "loglik" in metrics:
        if model.n_states <= 2**20:
            lz, method, lo, hi = lateral.exact_log_z(model), "exact", None, None
        elif isinstance(model, lateral.SemiRestrictedRBM):
            gen = torch.Generator(device=model.device).manual_seed(int(seed))
            base = v if train_data is None else model.prepare(train_data, "train_data")
            res = lateral.ais_log_z(model, base, ais_chains, ais_steps, gen, precision=prec)
            lz, method, lo, hi = res.log_z, "ais", res.log_z_lower, res.log_z_upper
        else:
            raise ConfigError(f"exact log Z of this {model.kind} would enumerate "
                              f"{model.n_states:,} states (limit 2^20): use --metrics pl")
        ll = lateral.log_likelihood(model, v, lz)
        out.update(log_likelihood=ll, log_z=lz, method=method,
                   log_likelihood_lower=None if hi is None else ll + lz - hi,
                   log_likelihood_upper=None if lo is None else ll + lz - lo)
    if "pl" in metrics:
        out["pseudo_likelihood"] = float(lateral.pseudo_log_likelihood(model, v))
    return out


def _sequence_metrics(model, data, metrics) -> dict:
    history, frames = model.windows(torch.as_tensor(data), "evaluation sequence")
    out: dict = {"n_samples": int(frames.shape[0]), "metrics": list(metrics)}
    if "rmse" in metrics:
        pred = model.predict_std(history)
        out["rmse"] = float(torch.sqrt(((pred - frames) ** 2).mean()))
        out["persistence_rmse"] = float(torch.sqrt(
            ((history[:, :model.n_visible] - frames) ** 2).mean()))
    if "loglik" in metrics:
        ll = model.conditional_log_likelihood(frames, history)
        out["log_likelihood"] = float(ll.double().mean())
    return out


@torch.no_grad()
def classification_scores(model, x: Tensor, y: Tensor, batch_size: int = 1000
                          ) -> tuple[float, float]:
    """(error rate, mean -log p(y | x)) of a classifier with ``predict_proba``.

    x: tensor (n_samples, n_features) on the model's device; y: class indices (n_samples,).
    """
    proba = torch.cat([model.predict_proba(b) for b in x.split(batch_size)]).double()
    y = y.to(proba.device).long()
    err = float((proba.argmax(1) != y).double().mean())
    nll = float(-proba.gather(1, y[:, None]).clamp_min(1e-300).log().mean())
    return err, nll


class ClassificationMonitor:
    """Training callback: ``PREFIX_error`` and ``PREFIX_nll`` of a labelled set each epoch.

    For a held-out test set: recorded, never used for a decision (early stopping and
    model selection watch the validation monitors of the objective).
    """

    def __init__(self, x: Tensor, y: Tensor, prefix: str = "test") -> None:
        self.x, self.y, self.prefix = x, torch.as_tensor(y), prefix

    def __call__(self, trainer, record: dict) -> None:
        model = trainer.model
        param = next(model.parameters())
        x = torch.as_tensor(self.x).to(device=param.device, dtype=param.dtype)
        err, nll = classification_scores(model, x, self.y)
        record[f"{self.prefix}_error"], record[f"{self.prefix}_nll"] = err, nll


class LikelihoodMonitor:
    """Training callback: every ``every`` epochs and at the last one, add the log-likelihood
    of ``data`` to the record.

    Adds ``log_likelihood``, ``log_likelihood_err`` (half-width of the interval
    from the AIS log Z bounds; 0 for exact log Z; None if unbounded) and
    ``log_z`` (plus ``log_likelihood_method``).  It draws from its own
    generator seeded by ``seed`` and the epoch, never from the trainer's, and
    changes no parameters, so a run with the monitor trains exactly like one
    without it and resumed runs stay identical.
    """

    def __init__(self, data: Tensor, every: int = 1, method: str = "auto",
                 ais_chains: int = 100, ais_steps: int = 1000,
                 train_data: Tensor | None = None, seed: int = 0) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"every must be a positive integer, got {every!r}")
        self.data = data
        self.every = every
        self.method = method
        self.ais_chains = ais_chains
        self.ais_steps = ais_steps
        self.train_data = train_data
        self.seed = int(seed)

    def __call__(self, trainer, record: dict) -> None:
        epoch = int(record.get("epoch", getattr(trainer, "epoch", 0)))
        if epoch % self.every and epoch != getattr(trainer, "epochs", None):
            return
        model = trainer.model
        gen = torch.Generator(device=model.device).manual_seed(self.seed * 1_000_003 + epoch)
        res = log_likelihood(model, self.data, method=self.method, ais_chains=self.ais_chains,
                             ais_steps=self.ais_steps, train_data=self.train_data,
                             generator=gen)
        half = 0.5 * (res["log_likelihood_upper"] - res["log_likelihood_lower"])
        record["log_likelihood"] = res["log_likelihood"]
        record["log_likelihood_err"] = half if math.isfinite(half) else None
        record["log_z"] = res["log_z"]
        record["log_likelihood_method"] = res["method"]
