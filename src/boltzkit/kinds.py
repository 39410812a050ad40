"""The registry of model kinds: every option, which kind reads it, and how a config trains it.

One table for the command line, TOML configs, model loading, evaluation and the docs'
capability matrix.  An :class:`Option` is a ``boltzkit train`` setting (flag
``--name-with-dashes``, TOML key ``name_with_underscores``) with its default, help and,
where it only means something in some settings, the condition under which it applies
(``--n-temperatures`` only with ``--method pt``).  A :class:`Kind` names its model class,
the options it reads beyond the training loop's (every kind trains through the one
:class:`~boltzkit.training.Trainer`, so the loop's options apply to all), the samplers
and objectives it trains with, and the function that turns a resolved config into a
trained model (``build``, given as ``"module:function"`` and imported only when used).

An option given explicitly (a flag, or a key of a ``--config`` file) that the kind does
not read, or whose condition does not hold, is refused with one line naming both
(:func:`check_given`): nothing is accepted and ignored.

Nothing here imports the command line, the models or torch: the registry sits below
all of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

#: Samplers of the model phase (``--method``): contrastive divergence, persistent CD,
#: parallel tempering, temperature-driven sampling, parallel trajectory tempering.
METHODS = ("cd", "pcd", "pt", "tds", "ptt")


def flag(name: str) -> str:
    """The command-line flag of an option: ``n_hidden`` -> ``--n-hidden``."""
    return "--" + name.replace("_", "-")


# --------------------------------------------------------------------------- conditions
Condition = Callable[[dict], str | None]


def _when(key: str, *values: Any, what: str | None = None) -> Condition:
    """Applies when ``cfg[key]`` is one of ``values``; else says where it applies."""
    def check(cfg: dict) -> str | None:
        if cfg.get(key) in values:
            return None
        shown = " or ".join(str(v) for v in values)
        return f"applies only with {what or flag(key) + ' ' + shown}: drop it"
    return check


def _set(key: str) -> Condition:
    def check(cfg: dict) -> str | None:
        if cfg.get(key) not in (None, "", False, 0):
            return None
        return f"applies only with {flag(key)}: drop it"
    return check


def _not(key: str, value: Any) -> Condition:
    def check(cfg: dict) -> str | None:
        if cfg.get(key) != value:
            return None
        return f"does not apply with {flag(key)} {value}: drop it"
    return check


def _all(*conds: Condition) -> Condition:
    def check(cfg: dict) -> str | None:
        for c in conds:
            why = c(cfg)
            if why:
                return why
        return None
    return check


def _gaussian_visible(cfg: dict) -> str | None:
    if cfg.get("visible") == "gaussian":
        return None
    return "applies only with --visible gaussian: drop it"


def _softmax_layer(cfg: dict) -> str | None:
    if "softmax" in (cfg.get("visible"), cfg.get("hidden")):
        return None
    return "applies only with --visible softmax or --hidden softmax: drop it"


def _dropout_samplers(cfg: dict) -> str | None:
    if cfg.get("method") in ("pt", "tds", "ptt") and cfg.get("dropout_rate", 0) > 0:
        return ("pt, tds or ptt needs --dropout-rate 0: with hidden dropout (each chain keeps "
                "one mask per batch) a dropout RBM trains with --method cd or pcd")
    return None


def _ladder(cfg: dict) -> str | None:
    if cfg.get("method") == "ptt" or (cfg.get("method") == "pt"
                                      and cfg.get("swap_target") is not None):
        return None
    return "applies only with --method ptt, or --method pt with --swap-target: drop it"


def _mixture(cfg: dict) -> str | None:
    if str(cfg.get("dataset", "")).lower().startswith("mog-"):
        return None
    return "applies only to a built-in mixture (--dataset mog-...): drop it"


def _one_log_z_monitor(cfg: dict) -> str | None:
    if cfg.get("monitor"):
        return ("does not combine with --monitor loglik (both write log_z to the history): "
                "choose one")
    return None


def _dataset_is_path(cfg: dict) -> str | None:
    from_file = str(cfg.get("dataset", "")).lower().endswith((".npy", ".npz", ".csv", ".txt"))
    return None if from_file else "applies only when --dataset is a file: drop it"


def _named_dataset(cfg: dict) -> str | None:
    if str(cfg.get("dataset", "")).lower() in ("mnist", "ml-100k", "ml-1m", "ml-latest-small"):
        return None
    return ("is where the files of a named data set are (mnist, ml-100k, ...); --dataset "
            f"{cfg.get('dataset')} does not use it: drop it")


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Option:
    """One ``boltzkit train`` setting."""

    default: Any
    help: str
    type: type | None = None  # int, float, str, bool (None: str or None)
    choices: tuple | None = None
    applies: Condition | None = None
    group: str = "model"
    low: float | None = None  # the smallest value allowed (numbers)


def _o(default, help, type=None, choices=None, applies=None, group="model",  # noqa: A002
       low=None):
    return Option(default, help, type, choices, applies, group, low)


_NO_SAMPLER = _not("objective", "pl")
_PERSISTENT = _all(_NO_SAMPLER, _when("method", "pcd", "pt", "tds", "ptt"))
_SAMPLED = _NO_SAMPLER

#: Every option of ``boltzkit train``.
OPTIONS: dict[str, Option] = {
    # -- what to train on
    "model": _o("rbm", "model kind (see --help)", str, group="data"),
    "dataset": _o("digits", "digits | mnist | mog-1d | mog-ring8 | mog-grid25 | a .npy/.npz/.csv "
                  "file (rows = samples); ml-100k | ml-1m | ml-latest-small (cf-rbm, "
                  "rank-rbm); a user,item[,weight] .csv (rank-rbm); macrodata or a (T, d) file "
                  "(crbm)", str, group="data"),
    "data_dir": _o(None, "folder holding the data set's files (else $BOLTZKIT_DATA)", str,
                   applies=_named_dataset, group="data"),
    "test_data": _o(None, "held-out file when --dataset is a file", str,
                    applies=_dataset_is_path, group="data"),
    "binarize": _o(None, "how grey levels become 0/1 for binary units: threshold (> 0.5), "
                   "stochastic (Bernoulli draws, fixed seed) or none; not given: the data "
                   "must already be what the visible units take", str,
                   ("threshold", "stochastic", "none"), group="data"),
    "limit": _o(None, "use only the first N training samples", int, group="data", low=1),
    "mixture_size": _o(10000, "rows drawn for a built-in mixture's training split (its test "
                       "split keeps 2000)", int, applies=_mixture, group="data", low=1),
    # -- the model (RBM-like kinds)
    "visible": _o("bernoulli", "visible units: bernoulli | gaussian | relu | sigmoid | softmax",
                  str, ("bernoulli", "gaussian", "relu", "sigmoid", "softmax")),
    "hidden": _o("bernoulli", "hidden units: bernoulli | gaussian | relu | sigmoid | softmax", str,
                 ("bernoulli", "gaussian", "relu", "sigmoid", "softmax")),
    "n_hidden": _o(64, "number of hidden units", int, low=1),
    "visible_std": _o(1.0, "std of Gaussian visible units (fixed, or the start when learned)",
                      float, applies=_gaussian_visible, low=0.0),
    "learn_variance": _o(False, "learn the Gaussian visible variances", bool,
                         applies=_gaussian_visible),
    "standardize": _o(False, "standardise each feature with the training data's mean and std "
                      "(stored in the model file and applied again by evaluate/sample)", bool,
                      applies=_gaussian_visible, group="data"),
    "std_floor": _o(0.05, "with --standardize: features with a smaller std (e.g. constant "
                    "border pixels) are scaled by this instead", float,
                    applies=_set("standardize"), group="data", low=0.0),
    "max_singular_value": _o(None, "after every step, scale the weights so their largest "
                             "singular value stays <= this (keeps a Gaussian-ReLU RBM proper)",
                             float, low=0.0),
    "group_size": _o(None, "softmax group size K (one-hot groups of K units)", int,
                     applies=_softmax_layer, low=2),
    "init_std": _o(0.01, "std of the initial weights", float, low=0.0),
    # -- the model phase
    "method": _o("pcd", "sampler of the model phase: cd | pcd | pt | tds | ptt (parallel "
                 "trajectory tempering: replicas are snapshots of the model along training)",
                 str, METHODS,
                 applies=_NO_SAMPLER, group="sampler"),
    "k": _o(1, "Gibbs sweeps per update", int, applies=_SAMPLED, group="sampler", low=1),
    "k_schedule": _o(None, "k by epoch, FROM_EPOCH:K,... e.g. 0:1,20:3,35:5 (overrides --k)",
                     str, applies=_SAMPLED, group="sampler"),
    "chains": _o(None, "persistent chains (default: the batch size)", int,
                 applies=_PERSISTENT, group="sampler", low=1),
    "n_temperatures": _o(10, "parallel tempering: number of inverse temperatures", int,
                         applies=_all(_NO_SAMPLER, _when("method", "pt")), group="sampler", low=2),
    "beta_min": _o(0.1, "parallel tempering: the lowest inverse temperature", float,
                   applies=_all(_NO_SAMPLER, _when("method", "pt")), group="sampler", low=0.0),
    "swap_target": _o(None, "pt: place the temperatures between 1 and --beta-min "
                      "automatically so that neighbouring swap rates approach this (e.g. "
                      "0.25); ptt: take a new snapshot when the newest one swaps with the "
                      "model below this rate (unset: 0.25)", float,
                      applies=_all(_NO_SAMPLER, _when("method", "pt", "ptt")),
                      group="sampler", low=0.0),
    "max_replicas": _o(32, "pt with --swap-target, ptt: the most temperatures / snapshots",
                       int, applies=_all(_NO_SAMPLER, _ladder), group="sampler", low=2),
    "beta_std": _o(0.5, "tds: std of each chain's inverse temperature (mean 1; 0: always 1)",
                   float,
                   applies=_all(_NO_SAMPLER, _when("method", "tds")), group="sampler", low=0.0),
    "beta_autocorr": _o(0.9, "tds: lag-1 autocorrelation of the inverse temperatures", float,
                        applies=_all(_NO_SAMPLER, _when("method", "tds")), group="sampler"),
    "readout_steps": _o(0, "tds: beta = 1 sweeps of each driven chain before its statistics "
                        "enter the gradient (0: the driven states themselves)", int,
                        applies=_all(_NO_SAMPLER, _when("method", "tds")), group="sampler", low=0),
    # -- the objective
    "objective": _o("ml", "ml (likelihood), beam (adversarial, Fisher et al. 2018), pl "
                    "(pseudo-likelihood: ising/potts/srbm)", str, ("ml", "beam", "pl"),
                    group="objective"),
    "sparsity_target": _o(None, "target mean activation of each hidden unit (with "
                          "--sparsity-cost)", float, applies=_set("sparsity_cost"),
                          group="objective"),
    "sparsity_cost": _o(0.0, "weight of the sparsity penalty (with --sparsity-target)", float,
                        applies=_set("sparsity_target"), group="objective", low=0.0),
    "centering": _o(False, "centred gradient (Melchior et al. 2016)", bool, group="objective"),
    "critic": _o("knn", "beam critic: knn | dwknn", str, ("knn", "dwknn"),
                 applies=_when("objective", "beam"), group="objective"),
    "critic_k": _o(5, "beam critic's neighbours", int, applies=_when("objective", "beam"),
                   group="objective", low=1),
    "gamma": _o(0.1, "beam: weight of the likelihood (1 - gamma on the critic)", float,
                applies=_when("objective", "beam"), group="objective"),
    "gamma_warmup": _o(0, "beam: epochs of pure likelihood before gamma applies", int,
                       applies=_when("objective", "beam"), group="objective", low=0),
    # -- the loop (every kind)
    "epochs": _o(10, "passes over the training data", int, group="loop", low=1),
    "batch_size": _o(100, "rows per mini-batch", int, group="loop", low=1),
    "lr": _o(0.05, "learning rate", float, group="loop"),
    "optimizer": _o("sgd", "sgd | adam (Python: any torch.optim class or factory)", str,
                    ("sgd", "adam"), group="loop"),
    "momentum": _o(0.5, "SGD momentum (adam: its first beta)", float, group="loop", low=0.0),
    "adam_betas": _o(None, "adam's two betas, e.g. 0.5,0.9 (default: momentum or 0.9, 0.999)",
                     str, applies=_when("optimizer", "adam"), group="loop"),
    "weight_decay": _o(0.0, "L2 penalty on the weights and couplings (not the biases)", float,
                       group="loop", low=0.0),
    "lr_schedule": _o("constant", "per-epoch lr decay: constant | linear | exponential | "
                      "cosine | power", str,
                      ("constant", "linear", "exponential", "cosine", "power"), group="loop"),
    "lr_final_factor": _o(0.01, "linear/exponential/cosine: the last epoch's lr as a fraction "
                          "of --lr", float,
                          applies=_when("lr_schedule", "linear", "exponential", "cosine"),
                          group="loop"),
    "lr_power": _o(1.0, "power schedule: lr / (1 + epoch)^POWER", float,
                   applies=_when("lr_schedule", "power"), group="loop", low=0.0),
    "average_from": _o(0, "end with the mean of the parameters after every step from this "
                       "epoch on (Polyak averaging; 0: off)", int, group="loop", low=0),
    "seed": _o(0, "seed of every random draw (initial weights, batches, sampling)", int,
               group="loop", low=0),
    "device": _o("cpu", "cpu | cuda | cuda:N", str, group="loop"),
    "precision": _o("float32", "GEMM precision of the training steps: float32 | bfloat16 | "
                    "tf32 (CUDA) | auto (bfloat16 where the hardware has it natively); "
                    "weights, optimizer state and draws stay float32", str,
                    ("float32", "bfloat16", "tf32", "auto"), group="loop"),
    "threads": _o(None, "torch CPU threads (default: torch's choice)", int, group="loop", low=1),
    "out": _o("model.safetensors", "model file to write (.safetensors)", str, group="loop"),
    "checkpoint_dir": _o(None, "folder for the run's checkpoint (resume with --resume)", str,
                         group="loop"),
    "checkpoint_every": _o(1, "write a checkpoint every N epochs", int,
                           applies=_set("checkpoint_dir"), group="loop", low=1),
    "monitor": _o(None, "'loglik': held-out log-likelihood every --monitor-every epochs (exact "
                  "when a layer is small, else a short AIS)", str, ("loglik",), group="monitor"),
    "monitor_every": _o(5, "epochs between log-likelihood monitors", int,
                        applies=_set("monitor"), group="monitor", low=1),
    "monitor_ais_steps": _o(1000, "AIS steps of the monitor", int, applies=_set("monitor"),
                            group="monitor", low=1),
    "monitor_ais_chains": _o(100, "AIS chains of the monitor", int, applies=_set("monitor"),
                             group="monitor", low=1),
    "trajectory_ais": _o(False, "log Z and the held-out log-likelihood every epoch by AIS along "
                         "the training trajectory, each epoch's leg started at the sampler's "
                         "persistent chains (log_z, test_log_likelihood and their _err in the "
                         "history; sound when those chains are near equilibrium)", bool,
                         applies=_all(_one_log_z_monitor, _NO_SAMPLER,
                                      _when("method", "pcd", "pt", "ptt")),
                         group="monitor"),
    "trajectory_ais_steps": _o(100, "trajectory AIS: interpolation steps per epoch (the first "
                               "epoch's leg, from the coupling-free model, takes 10x)", int,
                               applies=_set("trajectory_ais"), group="monitor", low=1),
    "trajectory_ais_chains": _o(100, "trajectory AIS: the most annealed chains", int,
                                applies=_set("trajectory_ais"), group="monitor", low=1),
    "save_trajectory": _o(False, "write the model along training to MODEL.trajectory."
                          "safetensors (for boltzkit sample --method ptt): after every epoch "
                          "and after --trajectory-updates log-spaced updates", bool,
                          group="monitor"),
    "trajectory_updates": _o(64, "--save-trajectory: also keep the model after this many "
                             "update counts spaced evenly in log over the run (1, 2, 3, 5, "
                             "...), where the early models change fastest; 0: epoch ends "
                             "only", int, applies=_set("save_trajectory"), group="monitor",
                             low=0),
    "plots": _o(False, "write weight mosaic, samples and training curves beside the model",
                bool, group="loop"),
    "tensorboard": _o(None, "also write the per-epoch history as TensorBoard scalars to DIR",
                      str, group="loop"),
    # -- convolutional RBM
    "conv_filters": _o(24, "number of shared filters (feature maps)", int, low=1),
    "conv_filter_size": _o(7, "filter side in pixels (valid convolution)", int, low=1),
    "conv_pool": _o(2, "probabilistic max-pooling block side (1: no pooling)", int, low=1),
    "conv_channels": _o(1, "image channels (rows are channel-first C*H*W)", int, low=1),
    "conv_image_shape": _o(None, "image HxW, e.g. 28x28 (default: square)", str),
    "conv_sparsity_on": _o("all", "sparsity acts on the filter biases only (bias, Lee et al.) "
                           "or also on the weights (all)", str, ("bias", "all"),
                           applies=_set("sparsity_cost"), group="objective"),
    # -- dropout RBMs
    "dropout_rate": _o(0.5, "probability of dropping a hidden unit per case and batch (test "
                       "time scales the weights by 1 - rate)", float),
    "dropconnect_rate": _o(0.0, "probability of dropping a weight per batch (DropConnect)",
                           float),
    # -- discriminative RBM
    "drbm_objective": _o("discriminative", "discriminative | hybrid | generative", str,
                         ("discriminative", "hybrid", "generative"), group="objective"),
    "drbm_alpha": _o(0.01, "weight of the generative term of the hybrid objective", float,
                     applies=_when("drbm_objective", "hybrid"), group="objective", low=0.0),
    "drbm_val_size": _o(10000, "hold out the last N training rows to pick the best epoch (0: "
                        "none, the last epoch is kept)", int, group="loop", low=0),
    "drbm_patience": _o(0, "stop after N epochs without validation improvement (0: never)",
                        int, applies=_not("drbm_val_size", 0), group="loop", low=0),
    "drbm_dropout": _o(0.0, "drop each hidden unit from the discriminative term with this "
                       "probability (training only)", float,
                       applies=_not("drbm_objective", "generative"), group="objective"),
    "drbm_input_dropout": _o(0.0, "drop each input value from the discriminative term with this "
                             "probability (training only)", float,
                             applies=_not("drbm_objective", "generative"), group="objective"),
    # -- conditional RBM
    "crbm_order": _o(2, "number of past frames that set the dynamic biases", int, low=1),
    "crbm_test_fraction": _o(0.2, "final fraction of the sequence held out in time (without "
                             "--test-data)", float, group="data"),
    "crbm_predict_steps": _o(10, "mean-field steps of one-step-ahead prediction", int, low=1),
    # -- lateral models
    "lateral_spins": _o("01", "ising spin values: 01 ({0,1}) or pm1 ({-1,+1})", str,
                        ("01", "pm1")),
    "lateral_q": _o(0, "potts: states per site (0: largest label + 1); data are integer "
                    "labels (samples, sites)", int, low=0),
    "lateral_scan": _o("sequential", "Gibbs scan: sequential | random | colored", str,
                       ("sequential", "random", "colored")),
    # -- collaborative filtering
    "fold": _o("1", "MovieLens split: ml-100k 1..5 (u1..u5), a, b; ml-1m and ml-latest-small "
               "1..5 (seeded); any: stratified[-SEED] (25% of each user's ratings held out)",
               str, group="data"),
    "cf_mode": _o("softmax", "softmax (K rating levels per movie) or like (ratings >= 3 are "
                  "likes, binary units)", str, ("softmax", "like")),
    "item_based": _o(False, "items are the cases, users the visible units (I-RBM)", bool),
    "conditional": _o(False, "condition the hidden units on which movies were rated (test "
                      "pairs included), the paper's conditional RBM", bool),
    "prediction": _o("mean-field", "mean-field (h = E[h|v]) or exact (h summed out)", str,
                     ("mean-field", "exact")),
    "min_weight": _o(0.0, "rank-rbm: a (user, item) pair is an interaction when its summed "
                     "weight (MovieLens: the rating) is > 0 and >= this", float, low=0.0),
    # -- deep models
    "layers": _o(None, "layer sizes, e.g. 784,500,1000 (the first, the data width, may be "
                 "omitted)", str),
    "dbn_residual": _o(False, "residual DBN (Roder et al. 2020)", bool),
    "dbn_residual_weights": _o("1,1", "residual DBN weights z1,z2 (means, residual)", str,
                               applies=_set("dbn_residual")),
    "dbn_layer_epochs": _o(None, "per-layer pretraining epochs, e.g. 10,10,20 (instead of "
                           "--epochs)", str, group="loop"),
    "dbn_layer_lr": _o(None, "per-layer learning rates, e.g. 0.05,0.05,0.02 (instead of --lr)",
                       str, group="loop"),
    "finetune_epochs": _o(0, "backprop fine-tuning epochs (0: pretrain only)", int,
                          group="loop", low=0),
    "finetune_lr": _o(0.1, "fine-tuning learning rate", float, applies=_set("finetune_epochs"),
                      group="loop"),
    "finetune_optimizer": _o("sgd", "fine-tuning optimizer: sgd | adam", str, ("sgd", "adam"),
                             applies=_set("finetune_epochs"), group="loop"),
    "finetune_momentum": _o(0.9, "fine-tuning momentum (adam: its first beta)", float,
                            applies=_set("finetune_epochs"), group="loop"),
    "finetune_batch_size": _o(100, "fine-tuning mini-batch size", int,
                              applies=_set("finetune_epochs"), group="loop", low=1),
    "finetune_weight_decay": _o(0.0, "fine-tuning L2 penalty on the weights", float,
                                applies=_set("finetune_epochs"), group="loop", low=0.0),
    "finetune_dropout": _o(0.0, "dropout on the hidden layers while fine-tuning", float,
                           applies=_set("finetune_epochs"), group="loop"),
    "finetune_input_dropout": _o(0.0, "dropout on the inputs while fine-tuning", float,
                                 applies=_set("finetune_epochs"), group="loop"),
    "finetune_schedule": _o("constant", "fine-tuning lr schedule: constant | cosine", str,
                            ("constant", "cosine"), applies=_set("finetune_epochs"),
                            group="loop"),
    "finetune_val_fraction": _o(0.0, "training rows held out to pick the best fine-tuning "
                                "epoch", float, applies=_set("finetune_epochs"), group="loop"),
    "finetune_patience": _o(0, "stop fine-tuning after N epochs without validation gain (0: "
                            "never)", int, applies=_set("finetune_val_fraction"),
                            group="loop", low=0),
    "dbm_pretrain_epochs": _o(10, "epochs of greedy pretraining per RBM", int, group="loop", low=0),
    "dbm_pretrain_lr": _o(0.05, "learning rate of the pretraining RBMs", float, group="loop",
                          low=0.0),
    "dbm_mf_steps": _o(10, "mean-field sweeps per batch (data phase)", int, low=1),
    "dbm_ais_chains": _o(0, "AIS chains for the test-set bound after training (0: skip)", int,
                         group="loop", low=0),
    "dbm_ais_steps": _o(14500, "AIS steps for the test-set bound", int,
                        applies=_set("dbm_ais_chains"), group="loop", low=1),
}

#: Options every trainable kind reads: the one training loop's and the data's.
LOOP = tuple(k for k, o in OPTIONS.items() if o.group == "loop" and not k.startswith(
    ("dbn_", "finetune_", "dbm_", "drbm_"))) + ("model",)
_ARRAYS = ("dataset", "data_dir", "test_data", "binarize", "limit", "mixture_size")
_UNITS = ("visible", "hidden", "n_hidden", "visible_std", "learn_variance", "group_size",
          "init_std")
_SAMPLER = ("method", "k", "k_schedule", "chains", "n_temperatures", "beta_min",
            "swap_target", "max_replicas", "beta_std", "beta_autocorr", "readout_steps")
_ML = ("sparsity_target", "sparsity_cost", "centering")
_MONITOR = ("monitor", "monitor_every", "monitor_ais_steps", "monitor_ais_chains",
            "trajectory_ais", "trajectory_ais_steps", "trajectory_ais_chains",
            "save_trajectory", "trajectory_updates")
_BEAM = ("objective", "critic", "critic_k", "gamma", "gamma_warmup")


# --------------------------------------------------------------------------- kinds
@dataclass(frozen=True)
class Kind:
    """A model kind: its class, what it reads, how it trains."""

    name: str
    summary: str
    model: str  # "module:Class" that rebuilds saved models of this kind
    build: str | None  # "module:function" (cfg, run) -> (model, history, extra); None: not trained
    options: tuple[str, ...] = ()  # options read beyond LOOP
    methods: tuple[str, ...] = ()  # samplers it trains with
    objectives: tuple[str, ...] = ("ml",)
    defaults: dict[str, Any] = field(default_factory=dict)  # its own defaults
    requires: dict[str, Condition] = field(default_factory=dict)  # its own conditions
    notes: dict[str, str] = field(default_factory=dict)  # sampler cell -> its condition
    evaluate: str = "rbm"  # its family in boltzkit.metrics.evaluate.MODEL_METRICS
    sample: str | None = None  # None: `boltzkit sample` draws from it; else why not

    @property
    def reads(self) -> frozenset[str]:
        """Every option this kind reads."""
        return frozenset(LOOP + self.options)

    def builder(self) -> Callable:
        if self.build is None:
            raise ConfigError(f"--model {self.name} is not trained by `boltzkit train`")
        return _resolve(self.build)

    def model_class(self) -> type:
        return _resolve(self.model)


def _resolve(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


_RBM_SAMPLERS = _SAMPLER
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("rbm", "restricted Boltzmann machine, any unit types",
         "boltzkit.rbm:RBM", "boltzkit.models.rbm:train_from_config",
         _ARRAYS + _UNITS + ("standardize", "std_floor", "max_singular_value")
         + _RBM_SAMPLERS + _ML + _BEAM + _MONITOR, METHODS, ("ml", "beam")),
    Kind("conv-rbm", "convolutional RBM, probabilistic max-pooling (Lee et al. 2009)",
         "boltzkit.models.conv:ConvRBM", "boltzkit.models.conv:train_from_config",
         _ARRAYS + ("visible", "visible_std", "init_std", "conv_filters", "conv_filter_size",
                    "conv_pool", "conv_channels", "conv_image_shape", "conv_sparsity_on")
         + _RBM_SAMPLERS + ("sparsity_target", "sparsity_cost") + _MONITOR, METHODS),
    Kind("dropout-rbm", "dropout / DropConnect RBM (Srivastava et al. 2014; Wan et al. 2013)",
         "boltzkit.models.dropout:DropoutRBM", "boltzkit.models.dropout:train_from_config",
         _ARRAYS + _UNITS + ("dropout_rate", "dropconnect_rate") + _RBM_SAMPLERS
         + ("sparsity_target", "sparsity_cost") + _MONITOR, METHODS,
         requires={"method": _dropout_samplers},
         notes=dict.fromkeys(("pt", "tds", "ptt"), "with `--dropout-rate 0` (DropConnect alone)")),
    Kind("edropout-rbm", "energy-based dropout RBM (Roder et al. 2020)",
         "boltzkit.models.dropout:EDropoutRBM", "boltzkit.models.dropout:train_from_config",
         _ARRAYS + _UNITS + ("method", "k", "k_schedule", "sparsity_target", "sparsity_cost")
         + _MONITOR, ("cd",), defaults={"method": "cd"}),
    Kind("drbm", "discriminative / hybrid RBM (Larochelle & Bengio 2008)",
         "boltzkit.models.discriminative:DiscriminativeRBM",
         "boltzkit.models.discriminative:train_from_config",
         _ARRAYS + _UNITS + _RBM_SAMPLERS
         + ("drbm_objective", "drbm_alpha", "drbm_val_size", "drbm_patience", "drbm_dropout",
            "drbm_input_dropout"), METHODS, defaults={"method": "cd"},
         requires=dict.fromkeys(_SAMPLER, _not("drbm_objective", "discriminative")),
         evaluate="classifier"),
    Kind("crbm", "conditional RBM for sequences (Taylor et al. 2007)",
         "boltzkit.models.conditional:ConditionalRBM",
         "boltzkit.models.conditional:train_from_config",
         ("dataset", "data_dir", "test_data", "binarize", "limit", "visible", "n_hidden",
          "learn_variance", "visible_std", "init_std", "method", "k", "k_schedule",
          "crbm_order", "crbm_test_fraction", "crbm_predict_steps"), ("cd",),
         defaults={"visible": "gaussian", "method": "cd"}, evaluate="sequence",
         sample="a crbm draws continuations of a sequence: ConditionalRBM.generate(seed, "
                "n_steps) (examples/crbm_sequence.py)"),
    Kind("ising", "Ising model / fully visible Boltzmann machine",
         "boltzkit.models.lateral:IsingModel", "boltzkit.models.lateral:train_from_config",
         _ARRAYS + ("objective", "lateral_spins", "lateral_scan") + _SAMPLER,
         METHODS, ("pl", "ml"), defaults={"objective": "pl"}, evaluate="lateral"),
    Kind("potts", "Potts model (q states per site)",
         "boltzkit.models.lateral:PottsModel", "boltzkit.models.lateral:train_from_config",
         _ARRAYS + ("objective", "lateral_q", "lateral_scan") + _SAMPLER,
         METHODS, ("pl", "ml"), defaults={"objective": "pl"}, evaluate="lateral"),
    Kind("srbm", "semi-restricted RBM: lateral visible couplings (Osindero & Hinton 2008)",
         "boltzkit.models.lateral:SemiRestrictedRBM",
         "boltzkit.models.lateral:train_from_config",
         _ARRAYS + ("objective", "n_hidden", "init_std", "lateral_scan")
         + _SAMPLER, METHODS, ("pl", "ml"), defaults={"objective": "pl"}, evaluate="lateral"),
    Kind("cf-rbm", "collaborative-filtering RBM (Salakhutdinov, Mnih & Hinton 2007)",
         "boltzkit.recommend.cf_rbm:CFRBM", "boltzkit.recommend.cf_rbm:train_from_config",
         ("dataset", "data_dir", "fold", "n_hidden", "init_std", "method", "k", "k_schedule",
          "cf_mode", "item_based", "conditional", "prediction"), ("cd",),
         defaults={"dataset": "ml-100k", "method": "cd"}, evaluate="recommender"),
    Kind("rank-rbm", "ranking RBM over implicit feedback: top-N lists",
         "boltzkit.recommend.rank_rbm:RankRBM", "boltzkit.recommend.rank_rbm:train_from_config",
         ("dataset", "data_dir", "fold", "n_hidden", "init_std", "item_based", "prediction",
          "min_weight") + _SAMPLER + _ML, METHODS,
         defaults={"dataset": "ml-100k", "method": "cd", "n_hidden": 200},
         evaluate="recommender"),
    Kind("dbn", "deep belief network, also residual (Hinton et al. 2006; Roder et al. 2020)",
         "boltzkit.stacks.dbn:DBN", "boltzkit.stacks.dbn:train_from_config",
         _ARRAYS + tuple(u for u in _UNITS if u != "n_hidden")
         + ("layers", "dbn_residual", "dbn_residual_weights",
                             "dbn_layer_epochs", "dbn_layer_lr", "finetune_epochs",
                             "finetune_lr", "finetune_optimizer", "finetune_momentum",
                             "finetune_batch_size", "finetune_weight_decay",
                             "finetune_dropout", "finetune_input_dropout", "finetune_schedule",
                             "finetune_val_fraction", "finetune_patience")
         + _RBM_SAMPLERS + _ML, METHODS, defaults={"method": "cd"}, evaluate="dbn"),
    Kind("dbn-classifier", "a DBN fine-tuned by backprop (written by --model dbn)",
         "boltzkit.stacks.dbn:DBNClassifier", None, evaluate="classifier",
         sample="a fine-tuned classifier is not generative: sample from the DBN it was "
                "fine-tuned from (MODEL.pretrained.safetensors)"),
    Kind("dbm", "deep Boltzmann machine (Salakhutdinov & Hinton 2009)",
         "boltzkit.stacks.dbm:DBM", "boltzkit.stacks.dbm:train_from_config",
         _ARRAYS + ("visible", "visible_std", "init_std", "layers", "method", "k",
                    "k_schedule", "chains", "dbm_pretrain_epochs", "dbm_pretrain_lr",
                    "dbm_mf_steps", "dbm_ais_chains", "dbm_ais_steps"), ("cd", "pcd"),
         defaults={"lr": 0.001, "momentum": 0.9, "k": 5, "chains": 100,
                   "lr_schedule": "linear", "lr_final_factor": 0.1}, evaluate="dbm"),
)}


def kind(name: str) -> Kind:
    """The registered kind ``name`` (ConfigError naming the known ones otherwise)."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown model kind {name!r}: choose one of "
                          f"{sorted(KINDS)}") from None


def trainable() -> list[str]:
    """Kinds that ``boltzkit train --model`` trains."""
    return [k for k, v in KINDS.items() if v.build is not None]


def defaults(name: str) -> dict[str, Any]:
    """Every option's default for kind ``name`` (the kind's own defaults applied)."""
    return {**{k: o.default for k, o in OPTIONS.items()}, **kind(name).defaults}


def unknown_option(key: str) -> str:
    """"unknown option 'x'", with the closest known names (``boltzkit train --help`` lists
    them all)."""
    import difflib

    close = difflib.get_close_matches(key, list(OPTIONS), n=3)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else \
        "see boltzkit train --help"
    return f"unknown option {key!r} ({hint})"


def coerce(key: str, value: Any, where: str = "") -> Any:
    """``value`` of option ``key`` with its type and choices checked (ConfigError)."""
    opt = OPTIONS.get(key)
    if opt is None:
        raise ConfigError(f"{where}{unknown_option(key)}")
    if value is None:
        return None
    want = opt.type
    ok = True
    if want is bool:
        ok = isinstance(value, bool)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif want is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif want is str:
        ok = isinstance(value, str | int | float) and not isinstance(value, bool)
        value = str(value) if ok else value
    if not ok:
        raise ConfigError(f"{where}{key} must be a{'n' if want is int else ''} "
                          f"{want.__name__}, got {value!r}")
    if opt.choices is not None and value not in opt.choices:
        raise ConfigError(f"{where}unknown {key} {value!r}: choose one of {list(opt.choices)}")
    if opt.low is not None and value < opt.low:
        raise ConfigError(f"{where}{key} must be >= {opt.low}, got {value!r}")
    return value


def check_given(cfg: dict[str, Any], given: set[str]) -> None:
    """Refuse every explicitly given option the kind does not read or that does not apply.

    ``given``: the options set by a flag or a config file.  The message names the kind,
    the option and where the option applies.
    """
    k = kind(cfg["model"])
    if k.build is None:
        raise ConfigError(f"--model {k.name} is not trained directly ({k.summary})")
    for name in sorted(given):
        if name not in k.reads:
            raise ConfigError(f"--model {k.name} does not use {flag(name)} "
                              f"({OPTIONS[name].help.split(';')[0]}): drop it")
        cond = OPTIONS[name].applies
        why = cond(cfg) if cond else None
        if not why and name in k.requires:
            why = k.requires[name](cfg)
        if why:
            raise ConfigError(f"--model {k.name}: {flag(name)} {why}")
    method = cfg.get("method")
    uses_sampler = not (OPTIONS["method"].applies(cfg) or (
        k.requires["method"](cfg) if "method" in k.requires else None))
    if "method" in k.reads and uses_sampler and method not in k.methods:
        raise ConfigError(f"--model {k.name} trains with --method "
                          f"{' or '.join(k.methods)}, not {method!r}")
    objective = cfg.get("objective")
    if "objective" in k.reads and objective not in k.objectives:
        raise ConfigError(f"--model {k.name} trains with --objective "
                          f"{' or '.join(k.objectives)}, not {objective!r}")


def applies(cfg: dict[str, Any], name: str) -> bool:
    """Whether option ``name`` means something for the kind and settings of ``cfg``."""
    k = kind(cfg["model"])
    if name not in k.reads:
        return False
    cond = OPTIONS[name].applies
    if cond and cond(cfg):
        return False
    return not (name in k.requires and k.requires[name](cfg))


def relevant(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings of ``cfg`` its kind uses (what a model file and MODEL.config.toml keep)."""
    return {k: v for k, v in cfg.items() if k in OPTIONS and applies(cfg, k)}


def model_class(name: str) -> type:
    """The class that rebuilds saved models of kind ``name``."""
    return kind(name).model_class()


# --------------------------------------------------------------------------- capabilities
#: What every trainable kind has because it trains through the one loop.
LOOP_CAPABILITIES = ("checkpoint + exact resume", "parameter averaging", "lr schedule",
                     "optimizer object", "data-parallel (torchrun)", "save / load")


def capability_markdown() -> str:
    """The capability matrix of every kind as a Markdown page (docs/guides/capabilities.md).

    Generated from this registry; tests/test_capabilities.py checks each cell (a run that
    works, or a one-line refusal naming the kind and the option) and that the page is
    current.
    """
    from .metrics.evaluate import MODEL_METRICS

    lines = ["# Capability matrix", "",
             "Generated from the registry of model kinds (`boltzkit.kinds`; regenerate with "
             "`python -m boltzkit.kinds > docs/guides/capabilities.md`).  Every cell is "
             "checked by `tests/test_capabilities.py`: a cell marked yes works (a short run "
             "on tiny data), a cell marked no is refused with one line that names the kind "
             "and the option; nothing is accepted and ignored.", "",
             "## Samplers and objectives", "",
             "| kind | " + " | ".join(f"`--method {m}`" for m in METHODS)
             + " | `--objective` |",
             "|---|" + "---|" * (len(METHODS) + 1)]
    for name in trainable():
        k = KINDS[name]
        cells = [("yes " + k.notes[m] if m in k.notes else "yes") if m in k.methods else "no"
                 for m in METHODS]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " | "
                     + ", ".join(k.objectives if "objective" in k.reads else
                                 (_kind_objective(k),)) + " |")
    lines += ["", "A sampler marked no is refused (e.g. a conditional RBM's negative phase is "
              "conditioned on each frame's history, which persistent chains do not have).", "",
              "## The training loop, evaluation and sampling", "",
              "Every kind below trains through `boltzkit.training.Trainer`, so it has: "
              + ", ".join(LOOP_CAPABILITIES) + ".", "",
              "| kind | `evaluate` metrics (default first) | `sample` |", "|---|---|---|"]
    for name, k in KINDS.items():
        metrics = ("rmse, mae, like_error, precision, recall, ndcg" if k.evaluate ==
                   "recommender" else ", ".join(MODEL_METRICS[k.evaluate]))
        lines.append(f"| `{name}` | {metrics} | {'yes' if k.sample is None else 'no: ' + k.sample}"
                     " |")
    lines += ["", "## Options by kind", "",
              "An option not listed for a kind is refused for it; a listed option whose "
              "condition does not hold (e.g. `--n-temperatures` without `--method pt`) is "
              "refused too.  The training loop's options apply to every kind: "
              + ", ".join(f"`{flag(o)}`" for o in LOOP) + ".", "",
              "| kind | its options |", "|---|---|"]
    for name in trainable():
        own = [o for o in KINDS[name].options]
        lines.append(f"| `{name}` | " + ", ".join(f"`{flag(o)}`" for o in own) + " |")
    return "\n".join(lines) + "\n"


def _kind_objective(k: Kind) -> str:
    return {"drbm": "`--drbm-objective`"}.get(k.name, "likelihood")


if __name__ == "__main__":  # python -m boltzkit.kinds > docs/guides/capabilities.md
    print(capability_markdown(), end="")
