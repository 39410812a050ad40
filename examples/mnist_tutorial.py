"""The binarised-MNIST tutorial: train an RBM, reconstruct digits, generate new ones.

Trains a Bernoulli RBM with PCD-1 and centering on threshold-binarised MNIST,
prints the held-out log-likelihood (exact when the hidden layer is small, else
AIS with its reliability flag), and writes the weight mosaic, reconstructions,
Gibbs samples and training curves as PNG files.

Run: ``python examples/mnist_tutorial.py --data-dir ../shared/data --n-hidden 500 --epochs 20``
(``--dataset digits`` runs offline on scikit-learn's 8x8 digits).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _common import add_data_args, image_shape, load, out_dir

from boltzkit import PersistentCD, Trainer, make_rbm, save_model, visual
from boltzkit.metrics import log_likelihood, reconstruction_error
from boltzkit.objectives import LikelihoodGradient


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    p.add_argument("--n-hidden", type=int, default=500)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--ais-steps", type=int, default=14500)
    p.add_argument("--ais-chains", type=int, default=100)
    p.add_argument("--gibbs-steps", type=int, default=1000, help="sweeps per generated sample")
    args = p.parse_args(argv)
    out = out_dir(args)
    train, _ = load(args, "train")
    test, _ = load(args, "test")
    shape = image_shape(train.shape[1])

    model = make_rbm(train.shape[1], args.n_hidden, seed=args.seed)
    trainer = Trainer(model, PersistentCD(k=1, n_chains=100),
                      LikelihoodGradient(centering=True), epochs=args.epochs, batch_size=100,
                      lr=args.lr, momentum=0.9, lr_schedule="linear", lr_final_factor=0.1,
                      seed=args.seed)
    start = time.perf_counter()
    history = trainer.fit(train, test)
    train_time = time.perf_counter() - start
    save_model(model, out / "rbm.safetensors", extra={"history": history})

    gen = torch.Generator().manual_seed(args.seed)
    ll = log_likelihood(model, test, ais_steps=args.ais_steps, ais_chains=args.ais_chains,
                        train_data=train, generator=gen)
    visual.weight_mosaic(model.connection.weights, out / "weights.png", image_shape=shape)
    visual.reconstruction_grid(test[:10], model.reconstruct(test[:10]),
                               out / "reconstructions.png", image_shape=shape)
    samples = model.sample(100, steps=args.gibbs_steps, generator=gen)
    visual.sample_grid(samples, out / "samples.png", image_shape=shape)
    visual.training_curves(history, out / "curves.png")
    summary = {"dataset": args.dataset, "binarize": "threshold", "n_train": len(train),
               "n_hidden": args.n_hidden, "epochs": args.epochs,
               "train_time_s": round(train_time, 1),
               "test_log_likelihood": round(ll["log_likelihood"], 2),
               "log_z_method": ll["method"], "ais_reliable": ll["ais_reliable"],
               "test_recon_error": round(reconstruction_error(model, test), 4),
               "files": sorted(x.name for x in out.iterdir())}
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
