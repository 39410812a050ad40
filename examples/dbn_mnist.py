"""A deep belief network on MNIST: greedy RBM pretraining, then backprop fine-tuning.

The classic 784-500-500-2000 stack (Hinton, Osindero & Teh 2006; Hinton &
Salakhutdinov 2006): each layer a Bernoulli RBM trained by CD-1 on the hidden
means of the layer below, then the stack turned into a sigmoid network with a
softmax layer and fine-tuned with cross-entropy.  Prints the wall time of each
phase and the test error after every fine-tuning epoch (the test set is only
measured, never used for a decision).  ``--residual`` trains a residual DBN
(Roder et al. 2020) instead.

The defaults match ``examples/configs/dbn-mnist.toml``: grey levels as
probabilities, 30 CD-1 epochs per layer, 60 epochs of Adam with dropout 0.2 on
the inputs and 0.3 on the hidden layers (0.96 % test error, ~23 min on one
shared CPU thread; see the README).

Run: ``BOLTZKIT_DATA=/path/to/data python examples/dbn_mnist.py [--finetune-epochs 60]``
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from boltzkit.data import load_dataset
from boltzkit.io import save_model
from boltzkit.stacks.dbn import fine_tune, make_dbn, parse_layer_sizes


def main(layers: str = "784,500,500,2000", pretrain_epochs: str = "30", lr: float = 0.1,
         momentum: float = 0.5, weight_decay: float = 2e-4, finetune_epochs: int = 60,
         finetune_lr: float = 1e-3, dropout: float = 0.3, residual: bool = False,
         limit: int | None = None, seed: int = 0, out: str | None = None,
         device: str = "cpu", binarize: str = "none", optimizer: str = "adam",
         input_dropout: float = 0.2) -> dict:
    """Pretrain and fine-tune; returns per-phase wall times and the final test error."""
    # binarize="none": grey levels, taken as probabilities by the Bernoulli bottom layer.
    x, y = load_dataset("mnist", split="train", binarize=binarize, limit=limit)
    xt, yt = load_dataset("mnist", split="test", binarize=binarize)
    sizes = parse_layer_sizes(layers, x.shape[1])
    epochs = [int(e) for e in pretrain_epochs.split(",")]
    if len(epochs) == 1:
        epochs = epochs * (len(sizes) - 1)
    dbn = make_dbn(sizes, residual=residual, seed=seed).to(device)
    settings = [{"epochs": e, "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                 "method": "cd", "k": 1, "batch_size": 100, "seed": seed} for e in epochs]
    t0 = time.perf_counter()

    def show(trainer, rec):
        print(f"pretrain layer {trainer.dbn_layer} epoch {rec['epoch']}: "
              f"recon {rec['recon_error']:.4f}  {rec['time']:.0f} s", flush=True)

    dbn.fit(x, settings, callbacks=[show], fractional=binarize == "none")
    pretrain_s = time.perf_counter() - t0
    clf = dbn.to_classifier(10, dropout=dropout, generator=torch.Generator().manual_seed(seed),
                            input_dropout=input_dropout)
    t0 = time.perf_counter()
    clf, hist = fine_tune(clf, x, y, epochs=finetune_epochs, lr=finetune_lr, momentum=0.9,
                          optimizer=optimizer,
                          batch_size=100, schedule="cosine", test=(xt, yt), seed=seed,
                          quiet=False)
    finetune_s = time.perf_counter() - t0
    result = {"layers": sizes, "residual": residual, "binarize": binarize,
              "pretrain_epochs": epochs,
              "pretrain_wall_s": round(pretrain_s, 1), "finetune_epochs": finetune_epochs,
              "finetune_wall_s": round(finetune_s, 1),
              "test_error": clf.error_rate(xt, yt), "train_rows": int(x.shape[0])}
    if out:
        save_model(clf, out, extra={"history": hist, "result": result})
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", default="784,500,500,2000")
    p.add_argument("--pretrain-epochs", default="30", help="per layer, or one for all")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--finetune-epochs", type=int, default=60)
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--input-dropout", type=float, default=0.2)
    p.add_argument("--optimizer", default="adam", choices=["sgd", "adam"])
    p.add_argument("--binarize", default="none", choices=["threshold", "stochastic", "none"],
                   help="none: grey levels as probabilities")
    p.add_argument("--residual", action="store_true")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="save the fine-tuned classifier here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(json.dumps(main(a.layers, a.pretrain_epochs, a.lr, finetune_epochs=a.finetune_epochs,
                          finetune_lr=a.finetune_lr, dropout=a.dropout, residual=a.residual,
                          limit=a.limit, seed=a.seed, out=a.out, device=a.device,
                          binarize=a.binarize, optimizer=a.optimizer,
                          input_dropout=a.input_dropout), indent=1))
