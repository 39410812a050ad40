"""Run under torchrun with 2 ranks: every trainable kind trains data-parallel.

``python -m torch.distributed.run --nproc-per-node 2 tests/dp_kinds_worker.py OUT_DIR``.
Each rank trains every kind on the tiny data through ``train_from_config`` (the loop
joins the process group from the environment); rank 0 writes OUT_DIR/result.json with,
per kind: whether both ranks ended with identical parameters, and the world size its
checkpoint records.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from tiny_kinds import base_args, make_data

from boltzkit import distributed, kinds
from boltzkit.cli.config import resolve_train_config
from boltzkit.cli.parser import build_parser
from boltzkit.io import read_header
from boltzkit.training.run import train_from_config


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    distributed.init_from_env("cpu")
    rank = distributed.world()[0]
    data = out / "data"
    if rank == 0:
        data.mkdir(parents=True, exist_ok=True)
        make_data(data)
    distributed.barrier()
    result = {}
    for kind in kinds.trainable():
        ck = out / "ck" / kind
        args = build_parser().parse_args(["train", "--model", kind, *base_args(kind, data),
                                          "--checkpoint-dir", str(ck), "--out",
                                          str(out / f"{kind}.safetensors"), "--quiet"])
        cfg, given = resolve_train_config(args)
        try:
            model, _, _ = train_from_config(cfg, given, quiet=True)
        except Exception as exc:  # report, keep the other kinds going
            result[kind] = {"error": f"{type(exc).__name__}: {exc}"}
            distributed.barrier()
            continue
        digest = hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes()
                                         for t in model.state_dict().values())).hexdigest()
        digests = distributed.all_gather_objects(digest)
        world = None
        if rank == 0:
            found = sorted(ck.rglob("checkpoint.safetensors"))
            world = read_header(found[-1]).get("world_size") if found else None
        result[kind] = {"identical": len(set(digests)) == 1, "world_size": world}
        distributed.barrier()
    if rank == 0:
        (out / "result.json").write_text(json.dumps(result, indent=1))
    distributed.barrier()
    distributed.shutdown()
    assert not dist.is_initialized()


if __name__ == "__main__":
    main()
