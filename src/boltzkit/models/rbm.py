"""The plain RBM kind (``--model rbm``) and the units every RBM-like kind builds from options."""

from __future__ import annotations

from typing import Any

import torch

from ..connections import DenseConnection
from ..errors import ConfigError
from ..rbm import RBM
from ..units import Units, make_units


def units_from_options(cfg: dict[str, Any], n_visible: int) -> tuple[Units, Units]:
    """(visible, hidden) units from ``--visible``, ``--hidden``, ``--n-hidden``, ..."""
    vis_opts: dict[str, Any] = {}
    if cfg["visible"] == "gaussian":
        vis_opts = {"std": cfg["visible_std"], "learn_variance": bool(cfg["learn_variance"])}
    hid_opts: dict[str, Any] = {}
    for layer, opts in (("visible", vis_opts), ("hidden", hid_opts)):
        if cfg[layer] == "softmax":
            if not cfg.get("group_size"):
                raise ConfigError(f"softmax {layer} units need --group-size K")
            opts["group_size"] = int(cfg["group_size"])
    return (make_units(cfg["visible"], n_visible, **vis_opts),
            make_units(cfg["hidden"], int(cfg["n_hidden"]), **hid_opts))


def rbm_from_options(cfg: dict[str, Any], n_visible: int) -> RBM:
    """The dense RBM the options describe, its weights drawn with ``--seed``."""
    vis, hid = units_from_options(cfg, n_visible)
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    return RBM(vis, hid, DenseConnection(n_visible, hid.n, cfg["init_std"], gen))


def train_from_config(run) -> tuple[RBM, list[dict], dict]:
    """``boltzkit train --model rbm``: any units, sampler and objective."""
    train, _, test, _ = run.splits()
    extra: dict[str, Any] = {}
    if run["standardize"]:
        from ..data import Standardizer

        std = Standardizer(float(run["std_floor"])).fit(train)
        train = std.transform(train)
        test = None if test is None else std.transform(test)
        # the model sees z = (x - mean) / scale: log p(x) = log p(z) + log_jacobian
        extra["standardizer"] = {**std.to_dict(), "log_jacobian": std.log_jacobian}
    model = rbm_from_options(run.cfg, train.shape[1]).to(run.device)
    trainer = run.trainer(model, run.sampler(), run.likelihood(),
                          monitor_data=(test if test is not None else train, train))
    limit = None
    if run["max_singular_value"]:
        from ..constraints import SpectralNormLimit

        limit = SpectralNormLimit(model.connection.weights, float(run["max_singular_value"]))
        limit.attach(trainer.optimizer)
    history = run.fit(trainer, train, test)
    if limit is not None:
        extra["max_singular_value"] = limit.project()
    return model, history, extra
