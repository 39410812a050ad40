"""Iterate (Polyak) averaging in the Trainer: the mean it ends with, an unchanged
trajectory, exact resume, and clear refusals."""

from __future__ import annotations

import pytest
import torch
from test_training import prototype_data

from boltzkit import ConfigError, LikelihoodGradient, Trainer, make_rbm, make_sampler
from boltzkit.cli import main as cli_main
from boltzkit.io import load_model

#: the bundled digits, thresholded to 0/1 for Bernoulli units
DIGITS = ["--dataset", "digits", "--binarize", "threshold"]

def _trainer(average_from: int, epochs: int = 4, ckpt=None, callbacks=()) -> Trainer:
    model = make_rbm(10, 4, seed=3)
    return Trainer(model, make_sampler("pcd", chains=7), LikelihoodGradient(centering=True),
                   epochs=epochs, batch_size=9, lr=0.1, momentum=0.5, seed=2,
                   average_from=average_from, checkpoint_dir=ckpt, callbacks=callbacks)


def test_the_model_ends_with_the_mean_of_every_step_from_the_given_epoch():
    data = prototype_data(60, seed=1)  # 7 steps per epoch, a short last batch
    plain = _trainer(0)
    seen: list[list[torch.Tensor]] = []

    def record(opt, args, kwargs):
        if plain.epoch + 1 >= 3:  # epochs 3 and 4 (1-based)
            seen.append([p.detach().clone() for p in plain.model.parameters()])

    plain.optimizer.register_step_post_hook(record)
    plain.fit(data)
    assert len(seen) == 2 * 7
    expected = [torch.stack(ps).mean(0) for ps in zip(*seen, strict=True)]

    averaged = _trainer(3)
    averaged.fit(data)
    assert averaged.averager.n == 14
    assert [r.get("averaged_steps") for r in averaged.history] == [None, None, 7, 14]
    for p, e, last in zip(averaged.model.parameters(), expected, seen[-1], strict=True):
        # float32: 14 running-mean updates, each within a few ulps
        torch.testing.assert_close(p.detach(), e, rtol=2e-6, atol=2e-6)
        assert not torch.allclose(e, last)  # the mean is not the last iterate
    # averaging does not touch the trajectory: the chains and the batch statistics agree
    assert torch.equal(averaged.sampler.state_dict()["chains"],
                       plain.sampler.state_dict()["chains"])
    monitors = ("recon_error", "free_energy_train")
    for a, b in zip(averaged.history, plain.history, strict=True):
        assert {k: v for k, v in a.items() if k not in ("time", "averaged_steps", *monitors)} \
            == {k: v for k, v in b.items() if k not in ("time", *monitors)}
        # the monitors see the model as it would be saved: the mean while averaging
        same = a["epoch"] < 3
        assert (a["free_energy_train"] == b["free_energy_train"]) == same


def test_averaging_resumes_exactly(tmp_path):
    data = prototype_data(60, seed=1)
    full = _trainer(2, ckpt=tmp_path / "full")
    full.fit(data)

    def crash(tr, record):
        if record["epoch"] == 3:
            raise KeyboardInterrupt

    crashed = _trainer(2, ckpt=tmp_path / "crashed", callbacks=[crash])
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(data)
    resumed = _trainer(2, ckpt=tmp_path / "crashed")
    resumed.fit(data, resume=True)
    assert resumed.averager.n == full.averager.n == 3 * 7
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [-1, 5, 1.5])
def test_bad_average_from_is_refused(bad):
    with pytest.raises(ConfigError, match="average_from"):
        _trainer(bad, epochs=4)


def test_cli_average_from(tmp_path):
    out = tmp_path / "m.safetensors"
    rc = cli_main(["train", *DIGITS, "--n-hidden", "8", "--epochs", "2",
                   "--average-from", "2", "--quiet", "--out", str(out)])
    assert rc in (0, None)
    assert load_model(out).n_hidden == 8
