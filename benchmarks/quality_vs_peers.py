"""Quality side by side: the same 784-H Bernoulli RBM trained by scikit-learn, learnergy and
boltzkit for the same number of epochs, every model scored by the same boltzkit AIS.

Speed benchmarks say how fast each library trains; this script says how good the result
is.  Each peer runs with its own training method (scikit-learn: PCD-1 without momentum;
learnergy: CD-1 with momentum; boltzkit: PCD-1 with centering and momentum, the settings of
``examples/configs/rbm-mnist-500.toml``, with the parameters averaged over the second half
of the epochs; ``--boltzkit-average 0`` turns that off), its weights are copied into a
boltzkit ``RBM`` (no retraining), and the test log-likelihood is estimated by AIS with the
same schedule, chains and seed, from a base-rate model fitted to the same training data.

Run: ``python benchmarks/quality_vs_peers.py --data-dir ../shared/data --epochs 20 --json out.json``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import PeerUnavailable, _learnergy_rbm, _sklearn  # noqa: E402

from boltzkit import PersistentCD, Trainer, make_rbm  # noqa: E402
from boltzkit.data import load_dataset  # noqa: E402
from boltzkit.metrics import log_likelihood  # noqa: E402
from boltzkit.objectives import LikelihoodGradient  # noqa: E402


def _rbm_from(weights, visible_bias, hidden_bias):
    """A boltzkit Bernoulli RBM holding a peer's parameters (weights: n_visible x n_hidden)."""
    w = torch.as_tensor(weights, dtype=torch.float32)
    rbm = make_rbm(w.shape[0], w.shape[1])
    with torch.no_grad():
        rbm.connection.weights.copy_(w)
        rbm.visible.bias.copy_(torch.as_tensor(visible_bias, dtype=torch.float32))
        rbm.hidden.bias.copy_(torch.as_tensor(hidden_bias, dtype=torch.float32))
    return rbm


def train_sklearn(x, args):
    BernoulliRBM, threadpool_limits = _sklearn()
    m = BernoulliRBM(n_components=args.n_hidden, learning_rate=args.sklearn_lr,
                     batch_size=args.batch_size, n_iter=args.epochs, random_state=args.seed)
    with threadpool_limits(limits=args.threads, user_api="blas"):
        m.fit(x.numpy())
    return _rbm_from(m.components_.T, m.intercept_visible_, m.intercept_hidden_)


def train_learnergy(x, args):
    RBM = _learnergy_rbm()
    torch.manual_seed(args.seed)
    m = RBM(n_visible=x.shape[1], n_hidden=args.n_hidden, steps=1,
            learning_rate=args.learnergy_lr, momentum=0.5, use_gpu=False)
    m.fit(torch.utils.data.TensorDataset(x, torch.zeros(len(x))), batch_size=args.batch_size,
          epochs=args.epochs)
    return _rbm_from(m.W.detach(), m.a.detach(), m.b.detach())


def train_boltzkit(x, args):
    rbm = make_rbm(x.shape[1], args.n_hidden, seed=args.seed)
    average_from = (args.epochs - round(args.epochs * args.boltzkit_average) + 1
                    if args.boltzkit_average else 0)
    Trainer(rbm, PersistentCD(k=1, n_chains=100), LikelihoodGradient(centering=True),
            epochs=args.epochs, batch_size=args.batch_size, lr=0.01, momentum=0.9,
            lr_schedule="linear", lr_final_factor=0.05, seed=args.seed, progress=False,
            average_from=min(average_from, args.epochs)).fit(x)
    return rbm


TRAINERS = {"sklearn": train_sklearn, "learnergy": train_learnergy, "boltzkit": train_boltzkit}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--binarize", default="threshold", choices=("threshold", "stochastic"))
    p.add_argument("--limit", type=int, default=None, help="first N training images only")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--n-hidden", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--sklearn-lr", type=float, default=0.05)
    p.add_argument("--learnergy-lr", type=float, default=0.1)
    p.add_argument("--boltzkit-average", type=float, default=0.5,
                   help="fraction of the epochs (the last ones) boltzkit averages its "
                        "parameters over; 0: none")
    p.add_argument("--ais-chains", type=int, default=100)
    p.add_argument("--ais-steps", type=int, default=14500)
    p.add_argument("--peers", default="sklearn,learnergy,boltzkit")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, _ = load_dataset("mnist", split="train", data_dir=args.data_dir, binarize=args.binarize,
                        seed=args.seed, limit=args.limit)
    test, _ = load_dataset("mnist", split="test", data_dir=args.data_dir,
                           binarize=args.binarize, seed=args.seed)
    rows = []
    for name in args.peers.split(","):
        if name not in TRAINERS:
            p.error(f"unknown peer {name!r}: choose from {sorted(TRAINERS)}")
        t0 = time.perf_counter()
        try:
            rbm = TRAINERS[name](x, args)
        except PeerUnavailable as exc:
            print(f"{name}: skipped ({exc})", file=sys.stderr)
            continue
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ll = log_likelihood(rbm, test, method="ais", ais_chains=args.ais_chains,
                            ais_steps=args.ais_steps, train_data=x,
                            generator=torch.Generator().manual_seed(args.seed))
        rows.append({"library": name, "epochs": args.epochs, "train_s": round(train_s, 1),
                     "test_log_likelihood": round(ll["log_likelihood"], 2),
                     "ll_lower": round(ll["log_likelihood_lower"], 2),
                     "ll_upper": round(ll["log_likelihood_upper"], 2),
                     "ais_ess": round(ll["ais_ess"], 1), "ais_reliable": ll["ais_reliable"],
                     "ais_s": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'library':<10} {'epochs':>6} {'train s':>8} {'test LL (nats)':>15} "
          f"{'AIS ESS':>8} reliable")
    for r in rows:
        print(f"{r['library']:<10} {r['epochs']:>6} {r['train_s']:>8} "
              f"{r['test_log_likelihood']:>15} {r['ais_ess']:>8} {r['ais_reliable']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
