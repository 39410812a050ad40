"""BEAM vs PCD on binary MNIST (784-200 Bernoulli RBM): kNN KL on the data and fantasy grids.

Both models start from the same initial weights and train with persistent
chains and the same optimizer; BEAM switches to gamma x likelihood + (1 -
gamma) x kNN critic (on the hidden activations) after ``--warmup`` epochs.
Samples for scoring are ``--n-samples`` independent chains run for
``--sample-steps`` Gibbs sweeps from random states (the mean image of the last
sweep is shown; the scores use binary states).  Scores, against held-out test
images:

* forward and reverse kNN KL (k = 1) in *hidden space*: both sample sets mapped
  through the PCD model's hidden means (one fixed 200-d feature map for both
  models, so the numbers are comparable between them).  784-d binary pixels
  give ties and a very slow-converging estimator; the hidden means are
  continuous and lower dimensional.

Writes ``{pcd,beam}-fantasy.png`` (the persistent fantasy particles at the end
of training) and ``{pcd,beam}-samples.png`` into ``--out-dir``.

    OMP_NUM_THREADS=1 python examples/beam_mnist.py --out-dir beam-mnist-out
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from boltzkit import RBM, Trainer, make_rbm
from boltzkit.adversarial import AdversarialGradient
from boltzkit.data import load_mnist
from boltzkit.metrics.divergence import forward_kl, reverse_kl
from boltzkit.sampling import PersistentCD


def train_one(method: str, train: torch.Tensor, args: argparse.Namespace) -> tuple[RBM, Trainer]:
    """Train a "pcd" or "beam" RBM with the shared settings."""
    rbm = make_rbm(784, args.n_hidden, seed=args.seed)
    rbm.init_visible_bias(train)
    objective = None
    if method == "beam":
        objective = AdversarialGradient("knn", gamma=args.gamma, k=args.critic_k,
                                        gamma_schedule=[(0, 1.0), (args.warmup, args.gamma)])
    trainer = Trainer(rbm, PersistentCD(k=1, n_chains=args.chains), objective,
                      epochs=args.epochs, batch_size=100, lr=args.lr, momentum=0.5,
                      lr_schedule="linear", lr_final_factor=0.1, seed=args.seed, progress=False)
    trainer.fit(train)
    return rbm, trainer


def main(argv: list[str] | None = None) -> dict:
    """Train PCD and BEAM, print and return their scores."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="MNIST folder (default: BOLTZKIT_DATA)")
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--n-hidden", type=int, default=200)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3, help="likelihood-only epochs for BEAM")
    p.add_argument("--gamma", type=float, default=0.5)
    p.add_argument("--critic-k", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--chains", type=int, default=100)
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--sample-steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None)
    args = p.parse_args(argv)
    train, _ = load_mnist(args.data_dir, "train", "threshold", limit=args.train_size)
    test, _ = load_mnist(args.data_dir, "test", "threshold", limit=args.test_size)
    models, out = {}, {}
    for method in ("pcd", "beam"):
        t0 = time.perf_counter()
        rbm, trainer = train_one(method, train, args)
        gen = torch.Generator().manual_seed(args.seed + 1)
        x = rbm.sample(args.n_samples, steps=args.sample_steps, generator=gen,
                       return_mean=False)
        models[method] = (rbm, trainer, x)
        out[method] = {"seconds": time.perf_counter() - t0}
    feat = models["pcd"][0]
    with torch.no_grad():
        f_test = feat.hidden_mean(test).double().numpy()
        for method, (rbm, trainer, x) in models.items():
            f_x = feat.hidden_mean(x).double().numpy()
            out[method].update(forward_kl=forward_kl(f_test, f_x),
                               reverse_kl=reverse_kl(f_test, f_x))
            print(f"{method:5s} hidden-space kNN KL: forward {out[method]['forward_kl']:.2f}  "
                  f"reverse {out[method]['reverse_kl']:.2f}  ({out[method]['seconds']:.0f}s)",
                  flush=True)
            if args.out_dir:
                from boltzkit.visual import sample_grid

                d = Path(args.out_dir)
                d.mkdir(parents=True, exist_ok=True)
                sample_grid(trainer.sampler.chains, d / f"{method}-fantasy.png", (28, 28),
                            title=f"{method}: fantasy particles")
                means = rbm.visible_mean(rbm.sample_hidden(x, generator=gen))
                sample_grid(means, d / f"{method}-samples.png", (28, 28),
                            title=f"{method}: {args.sample_steps} Gibbs sweeps from random")
    return out


if __name__ == "__main__":
    main()
