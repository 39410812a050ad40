"""PCD RBM vs temperature-driven RBM vs BEAM on the BEAM paper's mixtures of Gaussians.

For each of mog-1d, mog-ring8 and mog-grid25 this trains three RBMs with
Gaussian visible units (std fixed to the mixtures' component std) and
Bernoulli hidden units, side by side:

* ``pcd``:  maximum likelihood, persistent contrastive divergence;
* ``tds``:  maximum likelihood, temperature-driven persistent chains;
* ``beam``: BEAM (gamma-weighted likelihood + nearest-neighbour critic on the
  hidden activations), on temperature-driven chains, after a likelihood warm-up.

All are scored the same way on 2000 samples drawn by ``--sample-steps`` plain
Gibbs sweeps at beta = 1 from random states: modes covered, fraction of
high-quality samples (within 3 std of a mode), forward and reverse kNN KL
against the held-out test split.  Prints a table and writes scatter /
histogram PNGs (``--out-dir``).

    OMP_NUM_THREADS=1 python examples/beam_mixtures.py --out-dir beam-out
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from boltzkit import RBM, GaussianUnits, Trainer
from boltzkit.adversarial import AdversarialGradient
from boltzkit.data import load_dataset, mixture_spec
from boltzkit.driven import DrivenPCD
from boltzkit.metrics.divergence import forward_kl, mode_coverage, reverse_kl
from boltzkit.sampling import PersistentCD
from boltzkit.units import BernoulliUnits

DATASETS = ("mog-1d", "mog-ring8", "mog-grid25")
METHODS = ("pcd", "tds", "beam")

# Per-data-set settings: hidden units, epochs, learning rate.
SETTINGS = {
    "mog-1d": {"n_hidden": 20, "epochs": 20, "lr": 0.01},
    "mog-ring8": {"n_hidden": 64, "epochs": 30, "lr": 0.01},
    "mog-grid25": {"n_hidden": 128, "epochs": 30, "lr": 0.01},
}


def build(name: str, method: str, args) -> tuple[RBM, Trainer]:
    spec = mixture_spec(name)
    s = dict(SETTINGS[name])
    s.update({k: v for k, v in (("n_hidden", args.n_hidden), ("lr", args.lr)) if v is not None})
    gen = torch.Generator().manual_seed(args.seed)
    rbm = RBM(GaussianUnits(spec["dim"], std=spec["std"]), BernoulliUnits(s["n_hidden"]),
              generator=gen)
    objective = None
    if method in ("pcd", "beam-pcd"):
        sampler = PersistentCD(k=args.k, n_chains=args.chains)
    else:
        sampler = DrivenPCD(k=args.k, n_chains=args.chains, beta_std=args.beta_std,
                            beta_autocorr=args.beta_autocorr)
    if method.startswith("beam"):
        warm = max(1, (args.epochs or s["epochs"]) // 3)
        objective = AdversarialGradient(args.critic, gamma=args.gamma,
                                        gamma_schedule=[(0, 1.0), (warm, args.gamma)],
                                        k=args.critic_k, features=args.critic_features)
    epochs = args.epochs or s["epochs"]
    trainer = Trainer(rbm, sampler, objective, epochs=epochs, batch_size=args.batch_size,
                      lr=s["lr"], optimizer="adam", momentum=0.5, seed=args.seed,
                      progress=False)
    return rbm, trainer


def score(rbm: RBM, name: str, test: torch.Tensor, args) -> tuple[dict, torch.Tensor]:
    spec = mixture_spec(name)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = rbm.sample(args.n_samples, steps=args.sample_steps, generator=gen, return_mean=False)
    cov = mode_coverage(x, spec["means"], spec["std"])
    return {"modes": f"{cov['modes_covered']}/{cov['n_modes']}",
            "high_quality": cov["high_quality_fraction"],
            "forward_kl": forward_kl(test, x), "reverse_kl": reverse_kl(test, x)}, x


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--epochs", type=int, default=None, help="override the per-data-set epochs")
    p.add_argument("--lr", type=float, default=None, help="override the per-data-set lr")
    p.add_argument("--n-hidden", type=int, default=None, help="override the hidden units")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--chains", type=int, default=100)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--beta-std", type=float, default=0.5)
    p.add_argument("--beta-autocorr", type=float, default=0.9)
    p.add_argument("--gamma", type=float, default=0.9)
    p.add_argument("--critic", default="knn", choices=("knn", "dwknn"))
    p.add_argument("--critic-features", default="hidden", choices=("hidden", "visible"))
    p.add_argument("--critic-k", type=int, default=5)
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--sample-steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None, help="write sample PNGs here")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    rows = []
    for name in args.datasets.split(","):
        train, _ = load_dataset(name, "train", seed=args.seed, limit=args.train_size)
        test, _ = load_dataset(name, "test", seed=args.seed)
        for method in args.methods.split(","):
            t0 = time.perf_counter()
            rbm, trainer = build(name, method, args)
            trainer.fit(train)
            res, x = score(rbm, name, test, args)
            res.update(dataset=name, method=method, seconds=time.perf_counter() - t0)
            rows.append(res)
            print(f"{name:11s} {method:5s} modes {res['modes']:>6s}  hq {res['high_quality']:.3f}"
                  f"  fKL {res['forward_kl']:7.3f}  rKL {res['reverse_kl']:7.3f}"
                  f"  ({res['seconds']:.0f}s)", flush=True)
            if args.out_dir:
                from boltzkit.visual import sample_grid

                Path(args.out_dir).mkdir(parents=True, exist_ok=True)
                sample_grid(x, Path(args.out_dir) / f"{name}-{method}.png", reference=test,
                            n=None, title=f"{name} {method} ({res['modes']} modes)")
    print()
    print(f"| {'data':11s} | {'method':6s} | modes | high-quality | fwd kNN KL | rev kNN KL |")
    print("|" + "|".join("-" * w for w in (13, 8, 7, 14, 12, 12)) + "|")
    for r in rows:
        print(f"| {r['dataset']:11s} | {r['method']:6s} | {r['modes']:>5s} | "
              f"{r['high_quality']:12.3f} | {r['forward_kl']:10.3f} | {r['reverse_kl']:10.3f} |")


if __name__ == "__main__":
    main()
