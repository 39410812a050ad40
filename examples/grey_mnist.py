"""Grey-level MNIST: four real-valued RBMs, held-out AIS log-likelihood and sample grids.

Trains, on MNIST grey levels in [0, 1] (``binarize="none"``), the models of the shipped
configs ``examples/configs/<model>-mnist.toml``:

* ``gaussian-rbm``: Gaussian-Bernoulli RBM, unit variance, on data standardised per pixel
  by an explicit :class:`boltzkit.data.Standardizer` (scale_i = max(std_i, eps),
  eps = ``std_floor`` = 0.05 grey levels: the 67 constant border pixels of the training
  set have std 0; the floor bounds standardised values by 1/eps = 20 and keeps the
  Jacobian finite, each floored pixel adding -log 0.05 = +3.0 nats);
* ``gaussian-lv-rbm``: the same with learned per-pixel variances (Cho et al. 2011 form);
* ``gaussian-relu-rbm``: Gaussian visible units and noisy rectified hidden units
  (Nair & Hinton 2010), boltzkit's exact truncated-Gaussian form;
* ``sigmoid-rbm``: continuous [0, 1] visible units (truncated exponential) and
  Bernoulli hidden units, on the raw grey levels.

Each model is first trained at ``--check-lr`` (0.1, the learning rate at which
learnergy's Gaussian RBM explodes) to show whether it stays finite; a model whose config
sets another learning rate is then trained again at that one, and that run is the one
evaluated.  A run that diverges stops with boltzkit's ``TrainingDiverged`` error (never a
silent NaN), which is caught and reported.

Every likelihood is the held-out (test split) log-density of the [0, 1] pixel values,
per image, in nats: for standardised models the Standardizer's log-Jacobian
-sum_i log scale_i is added (``log_likelihood(..., log_jacobian=...)``), so all four
numbers are densities on the same space and comparable.  They are *densities* of data
in which 81 % of the values are exactly 0, so they can be large and positive and reward
concentrating mass at 0; compare them with each other, not with binary-MNIST numbers.
log Z is by AIS (``ais_log_z``: base rate fitted to the training data, Salakhutdinov &
Murray's schedule with ``--ais-steps`` betas, forward and reverse AIS, ESS and 3-sigma
log Z bounds); AIS applies to all four models (their free energies are closed-form).
As a sample-based second opinion the kNN KL divergences (Wang, Kulkarni & Verdu 2009,
k = 1) between test images and model samples are given in a 50-dimensional PCA space of
the [0, 1] pixels (PCA fitted on the training images).

Samples: ``--n-chains`` Gibbs chains started from noise (the visible layer at beta = 0:
N(0, var) for Gaussian units, uniform on [0, 1] for sigmoid units), ``--sample-steps``
sweeps; the grid shows E[v | h] of the last sweep mapped back to pixels, the kNN
estimate uses the last sweep's samples.  Writes ``<model>.samples.png`` and
``grey_mnist.json`` into ``--out-dir``.

    OMP_NUM_THREADS=1 python examples/grey_mnist.py --threads 1 --out-dir grey-out
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from _common import add_data_args, load, out_dir

from boltzkit import visual
from boltzkit.cli import load_config_file
from boltzkit.constraints import SpectralNormLimit, spectral_norm
from boltzkit.data import Standardizer
from boltzkit.errors import TrainingDiverged
from boltzkit.io import save_model
from boltzkit.kinds import defaults
from boltzkit.metrics import ais_log_z, forward_kl, log_likelihood, reverse_kl
from boltzkit.models.rbm import rbm_from_options
from boltzkit.objectives import LikelihoodGradient
from boltzkit.sampling import make_sampler
from boltzkit.training import Trainer

CONFIGS = Path(__file__).resolve().parent / "configs"
MODELS = ("gaussian-rbm", "gaussian-lv-rbm", "gaussian-relu-rbm", "sigmoid-rbm")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    p.set_defaults(out_dir="grey-mnist-out")
    p.add_argument("--models", default=",".join(MODELS), help="comma list of " + ", ".join(MODELS))
    p.add_argument("--n-hidden", type=int, default=None, help="override the configs' n_hidden")
    p.add_argument("--epochs", type=int, default=None, help="override the configs' epochs")
    p.add_argument("--check-lr", type=float, default=0.1,
                   help="learning rate of the stays-finite check (0: skip the check)")
    p.add_argument("--test-limit", type=int, default=None, help="use the first N test images")
    p.add_argument("--ais-chains", type=int, default=100)
    p.add_argument("--ais-steps", type=int, default=14500)
    p.add_argument("--n-chains", type=int, default=500, help="sampling chains (grid and kNN)")
    p.add_argument("--sample-steps", type=int, default=1000)
    p.add_argument("--pca", type=int, default=50, help="PCA dimensions of the kNN KL space")
    p.add_argument("--save-models", action="store_true",
                   help="also write <model>.safetensors (with its standardiser) to --out-dir")
    return p.parse_args(argv)


def model_config(name: str, args) -> dict:
    cfg = load_config_file(CONFIGS / f"{name}-mnist.toml")
    if args.n_hidden:
        cfg["n_hidden"] = args.n_hidden
    if args.epochs:
        cfg["epochs"] = args.epochs
    return cfg


def build(cfg: dict, n_visible: int):
    """The model ``boltzkit train --config`` builds from this config."""
    return rbm_from_options({**defaults("rbm"), **cfg}, n_visible)


def train(cfg: dict, lr: float, data: torch.Tensor, val: torch.Tensor) -> dict:
    """One training run; returns model (None if it diverged), finiteness and wall time."""
    model = build(cfg, data.shape[1])
    sampler = make_sampler(cfg.get("method", "cd"), int(cfg.get("k", 1)), cfg.get("chains"))
    objective = LikelihoodGradient(centering=bool(cfg.get("centering", False)))
    trainer = Trainer(model, sampler, objective, epochs=int(cfg["epochs"]),
                      batch_size=int(cfg.get("batch_size", 100)), lr=lr,
                      optimizer=cfg.get("optimizer", "sgd"),
                      momentum=float(cfg.get("momentum", 0.0)),
                      weight_decay=float(cfg.get("weight_decay", 0.0)),
                      lr_schedule=cfg.get("lr_schedule", "constant"),
                      lr_final_factor=float(cfg.get("lr_final_factor", 0.01)),
                      seed=int(cfg.get("seed", 0)), progress=False, divergence_check_every=10)
    limit = None
    if cfg.get("max_singular_value"):
        limit = SpectralNormLimit(model.connection.weights, float(cfg["max_singular_value"]))
        limit.attach(trainer.optimizer)
    t0 = time.perf_counter()
    error = None
    try:
        history = trainer.fit(data, val)
        if limit is not None:
            limit.project()
    except TrainingDiverged as exc:
        history, error = trainer.history, str(exc)
    wall = time.perf_counter() - t0
    finite = error is None and model.parameters_finite() and all(
        math.isfinite(r.get("free_energy_train", 0.0)) for r in history)
    return {"model": model if finite else None, "lr": lr, "finite": finite,
            "epochs_done": len(history), "wall_s": wall, "error": error,
            "recon_error": history[-1]["recon_error"] if history else None,
            "sigma_max": spectral_norm(model.connection.weights) if finite else None}


@torch.no_grad()
def draw(model, n: int, steps: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[v | h], v) of the last of ``steps`` Gibbs sweeps of ``n`` chains from noise."""
    v = model.sample(n, steps=max(steps - 1, 0), generator=gen, return_mean=False)
    h = model.sample_hidden(v, 1.0, gen)
    return model.visible_mean(h), model.sample_visible(h, 1.0, gen)


def pca_fit(x: torch.Tensor, dims: int):
    mean = x.double().mean(0)
    _, _, vt = torch.linalg.svd(x.double() - mean, full_matrices=False)
    comps = vt[:dims].T
    return lambda y: ((y.double() - mean) @ comps).numpy()


def evaluate_one(name: str, cfg: dict, args, x_train, x_test, out: Path, project) -> dict:
    std = None
    z_train, z_test, log_jac = x_train, x_test, 0.0
    if cfg.get("standardize"):
        std = Standardizer(float(cfg.get("std_floor", 0.05))).fit(x_train)
        z_train, z_test, log_jac = std.transform(x_train), std.transform(x_test), std.log_jacobian
    res: dict = {"model": name, "visible": cfg["visible"], "hidden": cfg.get("hidden"),
                 "learn_variance": bool(cfg.get("learn_variance", False)),
                 "n_hidden": int(cfg["n_hidden"]), "epochs": int(cfg["epochs"]),
                 "config_lr": float(cfg["lr"]),
                 "standardized": std is not None,
                 "std_floor": std.eps if std else None,
                 "n_floored_pixels": std.n_floored if std else None,
                 "log_jacobian": log_jac}
    val = z_test[:1000]
    runs = []
    if args.check_lr:
        runs.append(train(cfg, args.check_lr, z_train, val))
    if not runs or float(cfg["lr"]) != args.check_lr:
        runs.append(train(cfg, float(cfg["lr"]), z_train, val))
    res["runs"] = [{k: v for k, v in r.items() if k != "model"} for r in runs]
    final = runs[-1]
    model = final["model"]
    res.update(lr=final["lr"], train_wall_s=final["wall_s"], nan_or_inf=not final["finite"],
               sigma_max=final["sigma_max"], max_singular_value=cfg.get("max_singular_value"))
    if args.check_lr:
        res["finite_at_check_lr"] = runs[0]["finite"]
        res["check_lr"] = args.check_lr
    if model is None:
        res["note"] = "the reported run diverged: nothing to evaluate"
        return res
    if args.save_models:
        extra = {"standardizer": {**std.to_dict(), "log_jacobian": log_jac}} if std else {}
        res["model_file"] = str(save_model(model, out / f"{name}.safetensors", extra=extra))
    gen = torch.Generator().manual_seed(args.seed + 1)
    t0 = time.perf_counter()
    ais = ais_log_z(model, data=z_train, n_chains=args.ais_chains, n_steps=args.ais_steps,
                    generator=gen, reverse=True)
    res["ais_wall_s"] = time.perf_counter() - t0
    ll = log_likelihood(model, z_test, log_z=ais, log_jacobian=log_jac)
    res.update({k: ll[k] for k in ("log_likelihood", "log_likelihood_std_err",
                                   "log_likelihood_lower", "log_likelihood_upper", "log_z",
                                   "log_z_lower", "log_z_upper", "ais_chains", "ais_steps",
                                   "ais_ess", "ais_reliable", "ais_warning",
                                   "ais_log_z_reverse")})
    # the reverse-AIS log Z gives a second log-likelihood estimate
    res["log_likelihood_reverse"] = ll["log_likelihood"] + ll["log_z"] - ais.reverse
    t0 = time.perf_counter()
    mean, sample = draw(model, args.n_chains, args.sample_steps, gen)
    if std is not None:
        mean, sample = std.inverse_transform(mean), std.inverse_transform(sample)
    res["sample_wall_s"] = time.perf_counter() - t0
    res["samples_finite"] = bool(torch.isfinite(sample).all())
    png = out / f"{name}.samples.png"
    visual.sample_grid(mean.clamp(0.0, 1.0), png, image_shape=(28, 28), n=100,
                       title=f"{name}: E[v|h] after {args.sample_steps} Gibbs sweeps from noise")
    res["samples_png"] = str(png)
    if res["samples_finite"]:
        n = min(len(x_test), len(sample))
        res["knn_forward_kl"] = forward_kl(project(x_test[:n]), project(sample[:n]))
        res["knn_reverse_kl"] = reverse_kl(project(x_test[:n]), project(sample[:n]))
        res["knn_n"] = n
    return res


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def print_table(results: list[dict], args) -> None:
    print("\nHeld-out (test) log-density of the [0,1] pixel values, nats per image "
          "(standardised models include the log-Jacobian -sum log scale_i).")
    print(f"AIS: {args.ais_chains} chains x {args.ais_steps} steps (Salakhutdinov & Murray "
          "schedule), base rate fitted to the training data; reverse AIS from training rows. "
          f"kNN KL (k=1) in a {args.pca}-d PCA space of the [0,1] pixels.")
    head = (f"{'model':18s} {'lr':>6s} {'finite@' + fmt(args.check_lr, 'g'):>9s} {'train s':>8s} "
            f"{'NaN':>4s} {'test LL':>9s} {'+/-se':>6s} {'LL bounds (logZ 3sd)':>21s} "
            f"{'ESS':>6s} {'logZ':>9s} {'rev logZ':>9s} {'reliable':>8s} {'AIS s':>6s} "
            f"{'kNN fwd':>8s} {'kNN rev':>8s}")
    print(head)
    for r in results:
        bounds = (f"[{fmt(r.get('log_likelihood_lower'), '.1f')}, "
                  f"{fmt(r.get('log_likelihood_upper'), '.1f')}]")
        print(f"{r['model']:18s} {fmt(r.get('lr'), 'g'):>6s} "
              f"{str(r.get('finite_at_check_lr', '-')):>9s} "
              f"{fmt(r.get('train_wall_s'), '.0f'):>8s} "
              f"{str(r.get('nan_or_inf')):>4s} {fmt(r.get('log_likelihood')):>9s} "
              f"{fmt(r.get('log_likelihood_std_err')):>6s} {bounds:>21s} "
              f"{fmt(r.get('ais_ess'), '.1f'):>6s} {fmt(r.get('log_z')):>9s} "
              f"{fmt(r.get('ais_log_z_reverse')):>9s} {str(r.get('ais_reliable', '-')):>8s} "
              f"{fmt(r.get('ais_wall_s'), '.0f'):>6s} {fmt(r.get('knn_forward_kl')):>8s} "
              f"{fmt(r.get('knn_reverse_kl')):>8s}")
    for r in results:
        for run in r.get("runs", []):
            state = "finite" if run["finite"] else "DIVERGED"
            print(f"  {r['model']}: lr {run['lr']:g}: {state} after {run['epochs_done']} "
                  f"epoch(s), {run['wall_s']:.0f} s" + (f" ({run['error'][:90]})"
                                                       if run["error"] else ""))
        if r.get("ais_warning"):
            print(f"  {r['model']}: {r['ais_warning']}")
        if r.get("log_jacobian"):
            print(f"  {r['model']}: log-Jacobian {r['log_jacobian']:.2f} nats "
                  f"({r['n_floored_pixels']} pixels floored at std {r['std_floor']})")


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    out = out_dir(args)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in names if m not in MODELS]
    if bad:
        raise SystemExit(f"unknown model(s) {bad}: choose from {list(MODELS)}")
    x_train, _ = load(args, "train", binarize="none")
    x_test, _ = load(args, "test", binarize="none")
    if args.test_limit:
        x_test = x_test[:args.test_limit]
    print(f"grey-level MNIST: {len(x_train)} training, {len(x_test)} test images, "
          f"{x_train.shape[1]} pixels in [0, 1]; torch threads {torch.get_num_threads()}",
          flush=True)
    project = pca_fit(x_train[:10000], args.pca)
    results = []
    for name in names:
        cfg = model_config(name, args)
        print(f"--- {name}: {cfg['visible']} visible (learn_variance="
              f"{bool(cfg.get('learn_variance'))}, standardize={bool(cfg.get('standardize'))}), "
              f"{cfg.get('hidden')} hidden x {cfg['n_hidden']}, {cfg['method']}-{cfg['k']}, "
              f"lr {cfg['lr']}, momentum {cfg.get('momentum')}, centering "
              f"{bool(cfg.get('centering'))}, {cfg['epochs']} epochs", flush=True)
        res = evaluate_one(name, cfg, args, x_train, x_test, out, project)
        results.append(res)
        print(json.dumps({k: v for k, v in res.items() if k not in ("runs", "ais_warning")}),
              flush=True)
        (out / "grey_mnist.json").write_text(json.dumps(results, indent=1))
    print_table(results, args)
    return results


if __name__ == "__main__":
    main()
