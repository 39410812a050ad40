"""Load a saved model and continue training it; resume an interrupted run exactly.

Two different things users call "continuing":

1. **Fine-tune a saved model**: ``load_model`` gives the trained RBM back (no pickle);
   a new ``Trainer`` continues from those weights with new settings (a fresh optimizer
   and fresh persistent chains).
2. **Resume an interrupted run**: ``Trainer(checkpoint_dir=...)`` writes checkpoints
   holding the optimizer state, the chains and the random-number state;
   ``fit(..., resume=True)`` continues bit-identically.  This example checks that a
   run stopped half-way and resumed ends with exactly the weights of an uninterrupted run.

Run: ``python examples/continue_training.py --data-dir ../shared/data --epochs 4``
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import add_data_args, load, out_dir

from boltzkit import PersistentCD, Trainer, load_model, make_rbm, save_model
from boltzkit.metrics import log_likelihood


def _trainer(model, epochs: int, seed: int, ckpt=None) -> Trainer:
    return Trainer(model, PersistentCD(k=1, n_chains=100), epochs=epochs, batch_size=100,
                   lr=0.01, momentum=0.9, seed=seed, checkpoint_dir=ckpt, progress=False)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    p.add_argument("--n-hidden", type=int, default=100)
    p.add_argument("--epochs", type=int, default=4, help="epochs of each phase")
    p.add_argument("--ais-steps", type=int, default=5000)
    args = p.parse_args(argv)
    out = out_dir(args)
    train, _ = load(args, "train")
    test, _ = load(args, "test")

    def ll(model) -> float:
        gen = torch.Generator().manual_seed(args.seed)
        return log_likelihood(model, test, ais_steps=args.ais_steps, train_data=train,
                              generator=gen)["log_likelihood"]

    # 1. train, save, load, train on
    model = make_rbm(train.shape[1], args.n_hidden, seed=args.seed)
    _trainer(model, args.epochs, args.seed).fit(train)
    save_model(model, out / "first.safetensors")
    first = ll(model)
    loaded = load_model(out / "first.safetensors")
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 loaded.state_dict().values(), strict=True))
    _trainer(loaded, args.epochs, args.seed + 1).fit(train)
    save_model(loaded, out / "continued.safetensors")
    continued = ll(loaded)

    # 2. an interrupted run resumed from its checkpoint == the uninterrupted run
    whole = make_rbm(train.shape[1], args.n_hidden, seed=args.seed)
    _trainer(whole, 2 * args.epochs, args.seed).fit(train)
    ckpt = out / "checkpoints"
    part = make_rbm(train.shape[1], args.n_hidden, seed=args.seed)
    _trainer(part, args.epochs, args.seed, ckpt).fit(train)          # "crash" after half
    resumed = make_rbm(train.shape[1], args.n_hidden, seed=args.seed)
    _trainer(resumed, 2 * args.epochs, args.seed, ckpt).fit(train, resume=True)
    identical = all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(),
                                                      resumed.state_dict().values(), strict=True))
    summary = {"dataset": args.dataset, "epochs_per_phase": args.epochs,
               "loaded_equals_saved": same,
               "test_log_likelihood_after_first_phase": round(first, 2),
               "test_log_likelihood_after_continuing": round(continued, 2),
               "resumed_run_identical_to_uninterrupted": identical}
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
