"""Speed of the CF-RBM on ml-100k: seconds per CD epoch (U-RBM, I-RBM, conditional I-RBM,
like-RBM), prediction throughput and the time to score all 943 x 1682 pairs (top-N
ranking), beside a plain dense torch loop doing the same masked CD-1 updates (boltzkit's
negative phase samples only the rated groups, so it should be faster).

    OMP_NUM_THREADS=1 python benchmarks/bench_movielens.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from boltzkit.data.movielens import load_ml100k
from boltzkit.recommend import CFRBM


def plain_loop(v_all: torch.Tensor, mask_all: torch.Tensor, n_hidden: int, k: int,
               batch: int, lr: float = 0.05) -> float:
    """The same masked softmax CD-1 epoch written as a bare torch loop (no momentum)."""
    n, nv = v_all.shape
    w = torch.randn(nv, n_hidden) * 0.01
    b, c = torch.zeros(nv), torch.zeros(n_hidden)
    t = time.perf_counter()
    for lo in range(0, n, batch):
        v0, um = v_all[lo:lo + batch], mask_all[lo:lo + batch]
        h0 = torch.sigmoid(v0 @ w + c)
        hs = (torch.rand_like(h0) < h0).float()
        logits = (hs @ w.t() + b).reshape(len(v0), -1, k)
        idx = torch.distributions.Categorical(logits=logits).sample()
        vk = torch.nn.functional.one_hot(idx, k).reshape(len(v0), -1).float() * um
        hk = torch.sigmoid(vk @ w + c)
        w += lr * (v0.t() @ h0 - vk.t() @ hk) / len(v0)
        b += lr * (v0 - vk).sum(0) / len(v0)
        c += lr * (h0 - hk).sum(0) / len(v0)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n-hidden", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=20)
    args = p.parse_args()
    d = load_ml100k(args.data_dir, "u1")
    tr, te = d.train, d.test
    runs = (("U-RBM", {}), ("I-RBM", {"item_based": True}),
            ("I-RBM conditional", {"item_based": True, "conditional": True}),
            ("like-RBM CD-10", {"mode": "like"}))
    for name, kw in runs:
        m = CFRBM(d.n_users, d.n_items, n_hidden=args.n_hidden, **kw)
        steps = [[0, 10]] if kw.get("mode") == "like" else [[0, 1]]
        t = time.perf_counter()
        m.fit(tr.users, tr.items, tr.ratings, epochs=1, batch_size=args.batch_size,
              cd_schedule=steps, implicit=(te.users, te.items) if m.conditional else None)
        epoch = time.perf_counter() - t
        t = time.perf_counter()
        m.predict_index(te.users, te.items)
        pred = time.perf_counter() - t
        t = time.perf_counter()
        m.predict_all()
        full = time.perf_counter() - t
        print(f"{name:18s} {epoch:7.2f} s/epoch  {len(te) / pred:9.0f} predictions/s  "
              f"all pairs {full:5.2f} s")
        if name == "U-RBM":
            cases = np.arange(d.n_users)
            v, mask = m.batch(cases)
            plain = plain_loop(v, m._expand(mask), args.n_hidden, 5, args.batch_size)
            print(f"{'plain torch loop':18s} {plain:7.2f} s/epoch  (boltzkit / plain = "
                  f"{epoch / plain:.2f})")


if __name__ == "__main__":
    main()
