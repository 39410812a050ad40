"""RBMs (PCD, temperature-driven, parallel tempering, BEAM) vs GAN / WGAN on mixtures.

For each of mog-1d, mog-ring8 and mog-grid25 (the BEAM paper's benchmarks)
this trains, side by side, RBMs with Gaussian visible units (std fixed to the
mixtures' component std) and Bernoulli hidden units, and two neural baselines:

* ``pcd``:  maximum likelihood, persistent contrastive divergence;
* ``tds``:  maximum likelihood, temperature-driven persistent chains;
* ``beam``: BEAM (gamma x likelihood + (1 - gamma) x nearest-neighbour critic on
  the hidden activations) on temperature-driven chains, after a likelihood warm-up
  of a third of the epochs (the paper's combination);
* ``pt``:   maximum likelihood, parallel tempering (``--pt-temperatures`` replicas);
* ``beam-pt``: BEAM whose particles are the beta = 1 replicas of parallel tempering;
* ``gan`` / ``wgan``: small fully connected GAN and WGAN-GP (``gan_baselines.py``);
* ``hand`` (mog-grid25 only, no training): the 8-hidden-unit RBM of
  :func:`hand_built_grid_rbm`, proof that an RBM of this family can fit the grid.

All RBMs use Adam (lr per data set, cosine decay); the driven chains hand the
gradient one beta = 1 sweep of each chain (``--readout-steps``, see
:class:`boltzkit.driven.DrivenPCD`).  Every model is scored the same way on
``--n-samples`` samples: modes covered (>= 10% of a mode's fair share within 3
std), fraction of high-quality samples (within 3 std of a mode), forward and
reverse kNN KL against the held-out test split.  RBMs are scored twice:

* *Gibbs*: ``--sample-steps`` Gibbs sweeps at beta = 1 from random states;
* *exact*: samples of the RBM's own density exp(-F(v)) / Z by quadrature on a
  fine grid (:func:`exact_samples`).  Gibbs chains do not cross between modes 15-20
  std apart, so a model can put nearly all its mass on one mode and still show
  every mode in Gibbs samples; the exact scores are the honest ones.

GAN samples are exact by construction (both columns hold the same numbers).
Prints a table and writes scatter / histogram PNGs of the Gibbs samples
(``--out-dir``).

    OMP_NUM_THREADS=1 python examples/beam_mixtures.py --datasets mog-ring8 --out-dir beam-out
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from boltzkit import RBM, GaussianUnits, Trainer
from boltzkit.adversarial import AdversarialGradient
from boltzkit.data import load_dataset, mixture_spec
from boltzkit.driven import DrivenPCD
from boltzkit.metrics.divergence import forward_kl, mode_coverage, reverse_kl
from boltzkit.sampling import ParallelTempering, PersistentCD
from boltzkit.units import BernoulliUnits

try:  # run as a script from examples/, or imported with examples/ on sys.path
    from gan_baselines import GAN_KINDS, gan_sample, train_gan
except ImportError:  # pragma: no cover - imported as examples.beam_mixtures
    from examples.gan_baselines import GAN_KINDS, gan_sample, train_gan

DATASETS = ("mog-1d", "mog-ring8", "mog-grid25")
METHODS = ("pcd", "tds", "beam", "pt", "beam-pt", "gan", "wgan")
EXTRA_METHODS = ("hand",)  # not in the default list: no training, grid only

# Per-data-set settings: hidden units, epochs, learning rate.
SETTINGS = {
    "mog-1d": {"n_hidden": 20, "epochs": 20, "lr": 0.001},
    "mog-ring8": {"n_hidden": 64, "epochs": 30, "lr": 0.001},
    "mog-grid25": {"n_hidden": 128, "epochs": 30, "lr": 0.001},
}


def build(name: str, method: str, args: argparse.Namespace) -> tuple[RBM, Trainer]:
    """The RBM and its Trainer for one method ("pcd", "tds", "beam", "pt", "beam-pt")."""
    spec = mixture_spec(name)
    s = dict(SETTINGS[name])
    s.update({k: v for k, v in (("n_hidden", args.n_hidden), ("lr", args.lr)) if v is not None})
    gen = torch.Generator().manual_seed(args.seed)
    rbm = RBM(GaussianUnits(spec["dim"], std=spec["std"]), BernoulliUnits(s["n_hidden"]),
              generator=gen)
    objective = None
    if method in ("pcd", "beam-pcd"):
        sampler = PersistentCD(k=args.k, n_chains=args.chains)
    elif method in ("pt", "beam-pt"):
        sampler = ParallelTempering(k=args.k, n_temperatures=args.pt_temperatures,
                                    beta_min=args.pt_beta_min, n_chains=args.chains)
    else:
        sampler = DrivenPCD(k=args.k, n_chains=args.chains, beta_std=args.beta_std,
                            beta_autocorr=args.beta_autocorr, readout_steps=args.readout_steps)
    if method.startswith("beam"):
        warm = max(1, (args.epochs or s["epochs"]) // 3)
        objective = AdversarialGradient(args.critic, gamma=args.gamma,
                                        gamma_schedule=[(0, 1.0), (warm, args.gamma)],
                                        k=args.critic_k, features=args.critic_features)
    epochs = args.epochs or s["epochs"]
    trainer = Trainer(rbm, sampler, objective, epochs=epochs, batch_size=args.batch_size,
                      lr=s["lr"], optimizer="adam", momentum=0.5, seed=args.seed,
                      lr_schedule=args.lr_schedule, lr_final_factor=args.lr_final_factor,
                      progress=False)
    return rbm, trainer


def hand_built_grid_rbm() -> RBM:
    """A Gaussian-Bernoulli RBM with 8 hidden units written down for mog-grid25 (no training).

    Four hidden units per axis, each adding 2 to its coordinate's mean, switch on
    at the midpoints -3, -1, 1, 3 between grid lines (a thermometer code): with
    std sigma the hidden field is 2 x / sigma^2 + c, so c = -2 t / sigma^2 puts the
    threshold at t, and the mixture p(v) = sum_h p(h) N(-4 + 2 sum h, sigma^2) then
    gives all 25 modes equal mass.  It shows that the model family fits the grid,
    so a trained RBM that misses modes is an optimisation failure.
    """
    std = mixture_spec("mog-grid25")["std"]
    rbm = RBM(GaussianUnits(2, std=std), BernoulliUnits(8),
              generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = torch.zeros(2, 8)
        w[0, :4] = w[1, 4:] = 2.0
        thresholds = torch.tensor([-3.0, -1.0, 1.0, 3.0] * 2)
        rbm.connection.weights.copy_(w)
        rbm.hidden.bias.copy_(-2.0 * thresholds / std**2)
        rbm.visible.bias.fill_(-4.0)
    return rbm


def exact_samples(rbm: RBM, name: str, n: int, generator: torch.Generator,
                  spacing_std: float = 0.25, margin: float = 3.0) -> torch.Tensor:
    """``n`` samples of the RBM's own marginal p(v) ~ exp(-F(v)), by quadrature on a grid.

    Persistent or random-start Gibbs chains barely cross between modes 15-20 std
    apart, so Gibbs samples show which local minima exist, not how much mass
    each has.  In 1-D and 2-D the density is tabulated on a grid (spacing
    ``spacing_std`` x the mode std, covering the modes +- ``margin``), grid
    cells are drawn with their exact probabilities and jittered uniformly
    within the cell.  Mass beyond the box is ignored.
    """
    spec = mixture_spec(name)
    mu, std = spec["means"].double(), spec["std"]
    h = spacing_std * std
    axes = [torch.arange(float(mu[:, i].min()) - margin, float(mu[:, i].max()) + margin + h, h,
                         dtype=torch.float64) for i in range(mu.shape[1])]
    grid = torch.cartesian_prod(*axes).reshape(-1, mu.shape[1])
    with torch.no_grad():
        model = copy.deepcopy(rbm).double()
        neg_f = torch.cat([-model.free_energy(chunk) for chunk in grid.split(65536)])
        p = torch.softmax(neg_f, 0)
    idx = torch.multinomial(p, n, replacement=True, generator=generator)
    jitter = (torch.rand(n, grid.shape[1], generator=generator, dtype=torch.float64) - 0.5) * h
    return (grid[idx] + jitter).float()


def score_samples(x: torch.Tensor, name: str, test: torch.Tensor) -> dict:
    """Modes covered, high-quality fraction (within 3 std of a mode), forward/reverse kNN KL."""
    spec = mixture_spec(name)
    cov = mode_coverage(x, spec["means"], spec["std"])
    return {"modes": f"{cov['modes_covered']}/{cov['n_modes']}",
            "high_quality": cov["high_quality_fraction"],
            "forward_kl": forward_kl(test, x), "reverse_kl": reverse_kl(test, x)}


def score(model: RBM | torch.nn.Module, name: str, test: torch.Tensor,
          args: argparse.Namespace) -> tuple[dict, torch.Tensor]:
    """Score an RBM (Gibbs samples and exact quadrature samples) or a GAN generator."""
    if isinstance(model, RBM):
        gen = torch.Generator().manual_seed(args.seed + 1)
        x = model.sample(args.n_samples, steps=args.sample_steps, generator=gen,
                         return_mean=False)
        xe = exact_samples(model, name, args.n_samples, torch.Generator().manual_seed(args.seed))
    else:
        x = xe = gan_sample(model, args.n_samples, seed=args.seed + 1)
    res = score_samples(x, name, test)
    res.update({f"exact_{k}": v for k, v in score_samples(xe, name, test).items()})
    return res, x


def main(argv: list[str] | None = None) -> list[dict]:
    """Train and score every method on every data set; print a table; return its rows."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated, from {', '.join(METHODS + EXTRA_METHODS)}")
    p.add_argument("--epochs", type=int, default=None, help="override the per-data-set epochs")
    p.add_argument("--lr", type=float, default=None, help="override the per-data-set lr")
    p.add_argument("--n-hidden", type=int, default=None, help="override the hidden units")
    p.add_argument("--lr-schedule", default="cosine",
                   choices=("constant", "linear", "exponential", "cosine"))
    p.add_argument("--lr-final-factor", type=float, default=0.01)
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--chains", type=int, default=100)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--beta-std", type=float, default=0.5)
    p.add_argument("--beta-autocorr", type=float, default=0.9)
    p.add_argument("--pt-temperatures", type=int, default=20)
    p.add_argument("--pt-beta-min", type=float, default=0.1)
    p.add_argument("--readout-steps", type=int, default=1,
                   help="beta = 1 Gibbs sweeps from the driven chains for the gradient's particles")
    p.add_argument("--gamma", type=float, default=0.5)
    p.add_argument("--critic", default="knn", choices=("knn", "dwknn"))
    p.add_argument("--critic-features", default="hidden", choices=("hidden", "visible"))
    p.add_argument("--critic-k", type=int, default=5)
    p.add_argument("--gan-steps", type=int, default=3000, help="GAN/WGAN generator updates")
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--sample-steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None, help="write sample PNGs here")
    args = p.parse_args(argv)
    unknown = sorted(set(args.methods.split(",")) - set(METHODS + EXTRA_METHODS))
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}: choose from "
                f"{', '.join(METHODS + EXTRA_METHODS)}")
    torch.manual_seed(args.seed)
    rows = []
    for name in args.datasets.split(","):
        train, _ = load_dataset(name, "train", seed=args.seed, limit=args.train_size)
        test, _ = load_dataset(name, "test", seed=args.seed)
        for method in args.methods.split(","):
            t0 = time.perf_counter()
            if method == "hand":
                if name != "mog-grid25":
                    p.error("--methods hand is defined for mog-grid25 only")
                model = hand_built_grid_rbm()
            elif method in GAN_KINDS:
                model = train_gan(train, method, steps=args.gan_steps,
                                  batch_size=args.batch_size, seed=args.seed)
            else:
                model, trainer = build(name, method, args)
                trainer.fit(train)
            res, x = score(model, name, test, args)
            res.update(dataset=name, method=method, seconds=time.perf_counter() - t0)
            rows.append(res)
            print(f"{name:11s} {method:5s} modes {res['modes']:>6s}  hq {res['high_quality']:.3f}"
                  f"  fKL {res['forward_kl']:7.3f}  rKL {res['reverse_kl']:7.3f}  | exact: modes "
                  f"{res['exact_modes']:>6s}  hq {res['exact_high_quality']:.3f}"
                  f"  fKL {res['exact_forward_kl']:7.3f}  rKL {res['exact_reverse_kl']:7.3f}"
                  f"  ({res['seconds']:.0f}s)", flush=True)
            if args.out_dir:
                from boltzkit.visual import sample_grid

                Path(args.out_dir).mkdir(parents=True, exist_ok=True)
                sample_grid(x, Path(args.out_dir) / f"{name}-{method}.png", reference=test,
                            n=None, title=f"{name} {method} ({res['modes']} modes)")
    print()
    print("Gibbs: samples after --sample-steps sweeps from random states (GANs: generator "
          "samples).\nexact: samples of the RBM's own density by grid quadrature "
          "(GANs: the same samples).\n")
    print("| data | method | modes (Gibbs) | high-quality (Gibbs) | fwd KL (Gibbs) | "
          "rev KL (Gibbs) | modes (exact) | high-quality (exact) | fwd KL (exact) | "
          "rev KL (exact) | time (s) |")
    print("|" + "|".join(["---"] * 11) + "|")
    for r in rows:
        print(f"| {r['dataset']} | {r['method']} | {r['modes']} | {r['high_quality']:.3f} | "
              f"{r['forward_kl']:.3f} | {r['reverse_kl']:.3f} | {r['exact_modes']} | "
              f"{r['exact_high_quality']:.3f} | {r['exact_forward_kl']:.3f} | "
              f"{r['exact_reverse_kl']:.3f} | {r['seconds']:.0f} |")
    return rows


if __name__ == "__main__":
    main()
