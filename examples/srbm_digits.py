"""Semi-restricted RBM vs plain RBM on scikit-learn's 8x8 digits (threshold-binarised).

Both models have 64 visible and ``--hidden`` (20) hidden units and the demo's
training settings (PCD-1, 100 persistent chains, batch 20, SGD lr 0.05 with
momentum 0.5 decaying linearly to 0.005, 30 epochs); the semi-restricted RBM
adds learned visible-visible couplings L (Osindero & Hinton 2008) and samples
the visibles given h by one sequential Gibbs sweep.

Log-likelihoods of the 360 held-out images:

* plain RBM: exact (the 2^20 hidden states enumerated, boltzkit.metrics);
* semi-restricted RBM: log Z by AIS (boltzkit.models.lateral.ais_log_z) -
  the visible units are coupled, so no layer can be summed out in closed form.
  As a check of that AIS at this size, the same code is first run on the
  trained plain RBM written as a semi-restricted RBM with L = 0, whose log Z
  is known exactly.

Run: ``python examples/srbm_digits.py [--epochs 30] [--ais-steps 14500] [--out result.json]``
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from boltzkit.data import load_dataset
from boltzkit.metrics import log_likelihood
from boltzkit.models.lateral import SemiRestrictedRBM, ais_log_z, fit_pcd
from boltzkit.rbm import make_rbm
from boltzkit.sampling import PersistentCD
from boltzkit.training import Trainer
from boltzkit.units import BernoulliUnits


def main(epochs: int = 30, hidden: int = 20, ais_steps: int = 14500, check_steps: int = 5000,
         ais_chains: int = 100, seed: int = 0, out: str | None = None) -> dict:
    torch.set_num_threads(1)
    train, _ = load_dataset("digits", "train", binarize="threshold", seed=seed)
    test, _ = load_dataset("digits", "test", binarize="threshold", seed=seed)
    res: dict = {"data": f"digits threshold: {len(train)} train / {len(test)} test",
                 "hidden": hidden, "epochs": epochs}

    # plain RBM, the demo's settings, exact log-likelihood
    rbm = make_rbm(64, hidden, seed=seed)
    t0 = time.perf_counter()
    Trainer(rbm, PersistentCD(k=1, n_chains=100), epochs=epochs, batch_size=20, lr=0.05,
            momentum=0.5, lr_schedule="linear", lr_final_factor=0.1, seed=seed,
            progress=False).fit(train, test)
    res["rbm_train_s"] = time.perf_counter() - t0
    ll = log_likelihood(rbm, test, method="exact")
    res["rbm_test_ll_exact"] = ll["log_likelihood"]
    res["rbm_test_ll_std_err"] = ll["log_likelihood_std_err"]
    res["rbm_train_ll_exact"] = log_likelihood(rbm, train, method="exact")["log_likelihood"]
    print(json.dumps(res), flush=True)

    # AIS check at full size: the RBM as an SRBM with L = 0 (exact log Z known)
    gen = torch.Generator().manual_seed(seed)
    as_srbm = SemiRestrictedRBM.from_rbm(rbm)
    t0 = time.perf_counter()
    chk = ais_log_z(as_srbm, train, n_chains=ais_chains, n_steps=check_steps, generator=gen)
    res["check_ais_s"] = time.perf_counter() - t0
    res["check_log_z_exact"] = ll["log_z"]
    res["check_log_z_ais"] = chk.log_z
    res["check_log_z_interval"] = [chk.log_z_lower, chk.log_z_upper]
    res["check_ais_ess"] = chk.ess
    print(json.dumps(res), flush=True)

    # semi-restricted RBM, same settings, AIS log-likelihood
    gen_init = torch.Generator().manual_seed(seed)
    srbm = SemiRestrictedRBM(BernoulliUnits(64), BernoulliUnits(hidden), generator=gen_init)
    t0 = time.perf_counter()
    hist = fit_pcd(srbm, train, epochs=epochs, batch_size=20, lr=0.05, optimizer="sgd",
                   momentum=0.5, chains=100, sweeps=1, seed=seed, lr_final_factor=0.1)
    res["srbm_train_s"] = time.perf_counter() - t0
    res["srbm_pseudo_ll_train"] = hist[-1]["pseudo_log_likelihood"]
    j = srbm.coupling_matrix().detach()
    res["srbm_lateral_abs_mean"] = float(j.abs().sum() / (64 * 63))
    res["srbm_lateral_abs_max"] = float(j.abs().max())
    t0 = time.perf_counter()
    ais = ais_log_z(srbm, train, n_chains=ais_chains, n_steps=ais_steps, generator=gen)
    res["srbm_ais_s"] = time.perf_counter() - t0
    with torch.no_grad():
        f_test = srbm.free_energy(srbm.prepare(test)).double()
        f_train = srbm.free_energy(srbm.prepare(train)).double()
    res["srbm_log_z_ais"] = ais.log_z
    res["srbm_log_z_interval"] = [ais.log_z_lower, ais.log_z_upper]
    res["srbm_ais_ess"] = ais.ess
    res["srbm_ais_reliable"] = ais.reliable
    res["srbm_ais_warning"] = ais.warning
    res["srbm_test_ll_ais"] = float(-f_test.mean()) - ais.log_z
    res["srbm_test_ll_std_err"] = float(f_test.std()) / len(test) ** 0.5
    res["srbm_test_ll_interval"] = [float(-f_test.mean()) - ais.log_z_upper,
                                    float(-f_test.mean()) - ais.log_z_lower]
    res["srbm_train_ll_ais"] = float(-f_train.mean()) - ais.log_z
    print(json.dumps(res, indent=1), flush=True)
    if out:
        with open(out, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--hidden", type=int, default=20)
    p.add_argument("--ais-steps", type=int, default=14500)
    p.add_argument("--check-steps", type=int, default=5000)
    p.add_argument("--ais-chains", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    main(a.epochs, a.hidden, a.ais_steps, a.check_steps, a.ais_chains, a.seed, a.out)
