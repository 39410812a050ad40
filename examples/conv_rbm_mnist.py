"""Convolutional RBM with probabilistic max-pooling on MNIST (Lee et al. 2009, small).

Trains a conv RBM (binary visibles on threshold-binarised MNIST by default; ``--visible
gaussian`` uses grey MNIST standardised with one global mean and std), writes the filter
mosaic to ``OUT/filters.png`` (the model to ``OUT/model.safetensors``) and reports the test
accuracy of a logistic regression on the pooled features (pooling-unit probabilities), next
to the same classifier on raw pixels.

    BOLTZKIT_DATA=/work/shared/data OMP_NUM_THREADS=1 python examples/conv_rbm_mnist.py OUT

Defaults (24 filters 7x7, pooling 2x2, 20,000 training images, 3 epochs of CD-1, a
10,000-image classifier training subset, the full 10,000 test set; lr 0.001, sparsity on
the filter biases) finish in about 2 minutes on one CPU core (training 87 s, classifier
20 s on a shared 2-core machine).  Results are
also written to ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from boltzkit.data import load_dataset
from boltzkit.io import save_model
from boltzkit.models.conv import ConvRBM, make_objective, standardize
from boltzkit.sampling import ContrastiveDivergence
from boltzkit.training import Trainer
from boltzkit.visual import weight_mosaic


def logistic_accuracy(train_x, train_y, test_x, test_y, seed: int = 0) -> float:
    """Test accuracy of a scikit-learn logistic regression (features scaled to unit std)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=300, C=0.1, random_state=seed)
    clf.fit(scaler.transform(train_x), train_y)
    return float(clf.score(scaler.transform(test_x), test_y))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="output directory (filter mosaic, results.json)")
    p.add_argument("--visible", choices=("bernoulli", "gaussian"), default="bernoulli")
    p.add_argument("--filters", type=int, default=24)
    p.add_argument("--filter-size", type=int, default=7)
    p.add_argument("--pool", type=int, default=2)
    p.add_argument("--train-size", type=int, default=20000, help="RBM training images")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.001,
                   help="the filter gradient sums over all 22x22 positions: keep it small")
    p.add_argument("--momentum", type=float, default=0.5)
    p.add_argument("--sparsity-target", type=float, default=0.02)
    p.add_argument("--sparsity-cost", type=float, default=0.5)
    p.add_argument("--sparsity-on", choices=("bias", "all"), default="bias",
                   help="sparsity on the filter biases only (Lee et al.) or also the weights")
    p.add_argument("--clf-train", type=int, default=10000, help="classifier training images")
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    binarize = "threshold" if args.visible == "bernoulli" else "none"
    limit = max(args.train_size, args.clf_train)
    train, train_y = load_dataset("mnist", split="train", binarize=binarize, limit=limit)
    test, test_y = load_dataset("mnist", split="test", binarize=binarize, limit=args.test_size)
    mean, std = 0.0, 1.0
    if args.visible == "gaussian":
        mean, std, (train, test) = standardize(train, test)

    gen = torch.Generator().manual_seed(args.seed)
    model = ConvRBM((28, 28), filters=args.filters, filter_size=args.filter_size,
                    pool=args.pool, visible=args.visible, input_mean=mean, input_std=std,
                    generator=gen)
    print(f"conv RBM: {args.filters} filters {args.filter_size}x{args.filter_size}, pool "
          f"{args.pool}x{args.pool}, {model.n_hidden} detection / {model.hidden.n_pooled} "
          f"pooling units, {args.visible} visibles, {args.train_size} training images",
          flush=True)

    def show(trainer, rec):
        print(f"epoch {rec['epoch']}: {rec['time']:.0f}s recon {rec['recon_error']:.4f} "
              f"F(train) {rec['free_energy_train']:.2f} F(val) {rec.get('free_energy_val', 0):.2f}"
              f" hidden act {rec['hidden_activation']:.4f}", flush=True)

    trainer = Trainer(model, ContrastiveDivergence(1),
                      make_objective(args.sparsity_target, args.sparsity_cost, args.sparsity_on),
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      momentum=args.momentum, seed=args.seed, callbacks=[show], progress=False)
    t0 = time.perf_counter()
    history = trainer.fit(train[:args.train_size], test[:1000])
    train_time = time.perf_counter() - t0
    if not model.parameters_finite():
        raise SystemExit("parameters are not finite")

    save_model(model, args.out / "model.safetensors", extra={"history": history})
    w = model.connection.weights.detach()
    sums = w.flatten(1).sum(1)
    print(f"filters: {int((sums < 0).sum())}/{args.filters} have a negative weight sum; "
          f"filter biases mean {float(model.hidden.filter_bias.detach().mean()):.3f} "
          f"(min {float(model.hidden.filter_bias.detach().min()):.3f}, "
          f"max {float(model.hidden.filter_bias.detach().max()):.3f})", flush=True)
    mosaic = weight_mosaic(model.filter_images(), args.out / "filters.png",
                           image_shape=(args.filter_size, args.filter_size),
                           title=f"{args.filters} conv-RBM filters ({args.visible})")
    t1 = time.perf_counter()
    ftr = model.pooled_features(train[:args.clf_train]).numpy()
    fte = model.pooled_features(test).numpy()
    ytr, yte = train_y[:args.clf_train].numpy(), test_y.numpy()
    acc = logistic_accuracy(ftr, ytr, fte, yte, args.seed)
    raw = logistic_accuracy(train[:args.clf_train].numpy(), ytr, test.numpy(), yte, args.seed)
    clf_time = time.perf_counter() - t1
    active = float(model.pooled_features(test[:1000]).mean())
    result = {"visible": args.visible, "filters": args.filters, "filter_size": args.filter_size,
              "pool": args.pool, "train_size": args.train_size, "epochs": args.epochs,
              "lr": args.lr, "momentum": args.momentum,
              "sparsity_target": args.sparsity_target, "sparsity_cost": args.sparsity_cost,
              "sparsity_on": args.sparsity_on,
              "n_features": int(ftr.shape[1]), "clf_train": args.clf_train,
              "test_size": int(fte.shape[0]), "pooled_feature_accuracy": acc,
              "raw_pixel_accuracy": raw, "mean_pool_activation": active,
              "train_seconds": train_time, "classifier_seconds": clf_time,
              "final_recon_error": history[-1]["recon_error"], "mosaic": str(mosaic),
              "negative_filters": int((sums < 0).sum()),
              "filter_bias": model.hidden.filter_bias.detach().tolist(),
              "history": history}
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"logistic regression on {ftr.shape[1]} pooled features: test accuracy {acc:.4f} "
          f"(raw pixels, same classifier: {raw:.4f}); train {train_time:.0f}s, "
          f"classifier {clf_time:.0f}s; filters -> {mosaic}", flush=True)
    return result


if __name__ == "__main__":
    main()
