"""Peak memory of CD-1 training from an in-memory array against a memory-mapped .npy.

Both runs read the same float32 .npy file (MNIST train, threshold-binarised, written once
to ``--npy``): ``numpy.load(path)`` (all rows in RAM) against
``numpy.load(path, mmap_mode="r")`` (streamed by ``Trainer.fit``, one batch at a time).
Each run is a fresh process (started by a small parent that never loads the data: Linux
carries the peak RSS across fork + exec into ``ru_maxrss``); it reports the peak resident
set (``/proc/self/status`` VmHWM, and ``getrusage`` ru_maxrss), the resident set after
imports (the baseline both share) and, at the end, the anonymous and file-backed parts of
the resident set (RssAnon / RssFile).

    python benchmarks/bench_memory.py --npy /tmp/mnist-train.npy --epochs 1 --json mem.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _child(mode: str, npy: str, epochs: int, n_hidden: int, threads: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from boltzkit.rbm import make_rbm
    from boltzkit.sampling import ContrastiveDivergence
    from boltzkit.training import Trainer

    base = _status_kib("VmHWM") or 0
    if mode == "memory":
        data = torch.from_numpy(np.load(npy))
    else:
        data = np.load(npy, mmap_mode="r")
    model = make_rbm(data.shape[1], n_hidden, seed=0)
    trainer = Trainer(model, ContrastiveDivergence(1), epochs=epochs, batch_size=100, lr=0.05,
                      momentum=0.5, seed=0, progress=False)
    t0 = time.perf_counter()
    trainer.fit(data)
    wall = time.perf_counter() - t0
    return {"mode": mode, "rows": int(data.shape[0]), "epochs": epochs,
            "train_s": wall, "baseline_rss_mib": base / 1024,
            "peak_rss_mib": (_status_kib("VmHWM") or 0) / 1024,
            "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "end_rss_anon_mib": (_status_kib("RssAnon") or 0) / 1024,
            "end_rss_file_mib": (_status_kib("RssFile") or 0) / 1024,
            "recon_error": trainer.history[-1]["recon_error"],
            "weights_sum": float(model.connection.weights.double().sum())}


def _write_npy(path: Path, data_dir: str | None) -> None:
    import numpy as np

    from boltzkit.data import load_dataset

    data, _ = load_dataset("mnist", split="train", data_dir=data_dir, binarize="threshold")
    np.save(path, data.numpy().astype(np.float32))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--npy", required=True, help="float32 .npy to train from (made if absent)")
    p.add_argument("--data-dir", default=None, help="MNIST directory (else $BOLTZKIT_DATA)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--n-hidden", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child == "write":
        _write_npy(Path(a.npy), a.data_dir)
        return 0
    if a.child:
        print(json.dumps(_child(a.child, a.npy, a.epochs, a.n_hidden, a.threads)))
        return 0
    npy = Path(a.npy)
    if not npy.exists():
        cmd = [sys.executable, __file__, "--npy", str(npy), "--child", "write"]
        subprocess.run(cmd + (["--data-dir", a.data_dir] if a.data_dir else []), check=True)
    results = []
    for mode in ("memory", "memmap"):
        out = subprocess.run([sys.executable, __file__, "--npy", str(npy), "--epochs",
                              str(a.epochs), "--n-hidden", str(a.n_hidden), "--threads",
                              str(a.threads), "--child", mode],
                             check=True, capture_output=True, text=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    size = npy.stat().st_size / 2**20
    print(f"data file {npy}: {size:.1f} MiB ({results[0]['rows']} rows)")
    for r in results:
        print(f"{r['mode']:7s}: peak RSS {r['peak_rss_mib']:7.1f} MiB (ru_maxrss "
              f"{r['ru_maxrss_mib']:.1f}; after imports "
              f"{r['baseline_rss_mib']:.1f}; at end anon {r['end_rss_anon_mib']:.1f}, file "
              f"{r['end_rss_file_mib']:.1f}), {r['train_s']:.1f} s for {r['epochs']} epoch(s), "
              f"recon {r['recon_error']:.4f}")
    same = results[0]["weights_sum"] == results[1]["weights_sum"]
    print(f"same trained weights in both modes: {same}")
    if a.json:
        Path(a.json).write_text(json.dumps({"file_mib": size, "runs": results,
                                            "same_weights": same}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
