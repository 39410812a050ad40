"""Trainer: learning, reproducibility, exact resume, divergence, options, schedules."""

from __future__ import annotations

import math

import pytest
import torch

from boltzkit import (
    ConfigError,
    ContrastiveDivergence,
    DataError,
    LikelihoodGradient,
    ModelFileError,
    Trainer,
    TrainingDiverged,
    make_rbm,
    make_sampler,
    save_model,
)
from boltzkit.io import read_tensors
from boltzkit.training import CHECKPOINT_NAME

PROTOTYPES = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
                           [0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
                           [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]], dtype=torch.float64)


def prototype_data(n: int, seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    """Three 10-pixel prototypes with each pixel flipped with probability ``noise``."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(PROTOTYPES), (n,), generator=g)
    flip = (torch.rand(n, 10, generator=g, dtype=torch.float64) < noise).double()
    return (PROTOTYPES[idx] - flip).abs()


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def without_time(history):
    return [{k: v for k, v in rec.items() if k != "time"} for rec in history]


class ZeroGradient:
    """An objective that sets every gradient to zero and records the lr of each step."""

    def __init__(self):
        self.trainer = None
        self.lrs: list[list[float]] = []

    def setup(self, rbm, data):
        pass

    def compute(self, rbm, v_data, v_model, field_data=None, field_model=None):
        for p in rbm.parameters():
            p.grad = torch.zeros_like(p)
        self.lrs.append([g["lr"] for g in self.trainer.optimizer.param_groups])
        return {"hidden_activation": torch.zeros((), dtype=rbm.dtype)}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class NaNAfter(ContrastiveDivergence):
    """CD-1 whose negative particles turn NaN after ``calls`` calls (a blow-up mid-run)."""

    def __init__(self, calls: int):
        super().__init__(1)
        self.calls = calls
        self.count = 0

    def negative(self, rbm, v_data, field_data, generator=None):
        self.count += 1
        out, field = super().negative(rbm, v_data, field_data, generator)
        if self.count > self.calls:
            out = out.clone()
            out[0, 0] = math.nan
            field = None
        return out, field


# --- learning --------------------------------------------------------------------------
def test_pcd_raises_the_exact_log_likelihood(exact_log_likelihood):
    data = prototype_data(300)
    model = make_rbm(10, 4, seed=1).double()
    trainer = Trainer(model, make_sampler("pcd", chains=50), epochs=30, batch_size=20,
                      lr=0.05, momentum=0.5, seed=0)
    model.init_visible_bias(data)  # what fit does first: start from the independent model
    start = exact_log_likelihood(model, data)
    history = trainer.fit(data)
    end = exact_log_likelihood(model, data)
    assert len(history) == 30
    # independent-pixel model ~ -6.4 nats; three noisy prototypes ~ -3.1 nats (entropy)
    assert end > start + 2.0, (start, end)
    assert history[-1]["free_energy_train"] != history[0]["free_energy_train"]
    assert all(math.isfinite(r["recon_error"]) for r in history)
    assert history[-1]["recon_error"] < history[0]["recon_error"]


def test_training_is_reproducible_with_a_seed():
    data = prototype_data(60, seed=1)

    def train(seed, global_seed):
        torch.manual_seed(global_seed)
        model = make_rbm(10, 4, seed=2)
        Trainer(model, make_sampler("pcd", chains=7), epochs=2, batch_size=16, lr=0.1,
                seed=seed).fit(data)
        return params(model)

    a = train(seed=5, global_seed=0)
    assert_same_params(a, train(seed=5, global_seed=123))
    b = train(seed=6, global_seed=0)
    assert not torch.equal(a["connection.weights"], b["connection.weights"])


# --- exact resume ---------------------------------------------------------------------
def _trainer(method, optimizer, epochs, ckpt_dir, model_seed=3):
    model = make_rbm(10, 4, seed=model_seed)
    momentum = 0.9 if optimizer == "sgd" else 0.0
    return Trainer(model, make_sampler(method, k=2, n_temperatures=4), epochs=epochs,
                   batch_size=10, lr=0.05, optimizer=optimizer, momentum=momentum, seed=4,
                   checkpoint_dir=ckpt_dir, signature={"method": method})


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("method", ["cd", "pcd", "pt"])
def test_resume_is_bit_identical(method, optimizer, tmp_path):
    data = prototype_data(63, seed=2)  # a short last batch too
    full = _trainer(method, optimizer, 4, tmp_path / "full")
    full.fit(data)

    first = _trainer(method, optimizer, 2, tmp_path / "resumed")
    first.fit(data)
    second = _trainer(method, optimizer, 4, tmp_path / "resumed", model_seed=99)
    second.fit(data, resume=True)

    assert second.epoch == 4
    assert_same_params(params(full.model), params(second.model))
    assert without_time(full.history) == without_time(second.history)
    assert [r["epoch"] for r in second.history] == [1, 2, 3, 4]
    if method == "pt":
        assert "swap_rate_mean" in second.history[-1]
    # and the checkpoints written at epoch 4 hold the same tensors
    ta, ha = read_tensors(tmp_path / "full" / CHECKPOINT_NAME)
    tb, hb = read_tensors(tmp_path / "resumed" / CHECKPOINT_NAME)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert ha["epoch"] == hb["epoch"] == 4


def test_resume_after_an_interruption_with_schedule_centering_and_sparsity(tmp_path):
    """A run killed in epoch 3 (after the epoch-2 checkpoint) continues exactly."""
    data = prototype_data(50, seed=3)

    def trainer(ckpt, callbacks=()):
        model = make_rbm(10, 4, seed=5)
        objective = LikelihoodGradient(sparsity_target=0.2, sparsity_cost=0.1, centering=True)
        return Trainer(model, make_sampler("pcd", chains=13), objective, epochs=4,
                       batch_size=8, lr=0.05, optimizer="adam", lr_schedule="linear",
                       lr_final_factor=0.1, seed=8, checkpoint_dir=ckpt, callbacks=callbacks)

    full = trainer(tmp_path / "full")
    full.fit(data, val=data[:10])

    def crash(tr, record):
        if record["epoch"] == 3:
            raise KeyboardInterrupt

    crashed = trainer(tmp_path / "crashed", callbacks=[crash])
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(data, val=data[:10])
    assert read_tensors(tmp_path / "crashed" / CHECKPOINT_NAME)[1]["epoch"] == 2
    resumed = trainer(tmp_path / "crashed")
    resumed.fit(data, val=data[:10], resume=True)
    assert_same_params(params(full.model), params(resumed.model))
    assert without_time(full.history) == without_time(resumed.history)
    for k in ("visible_offset", "hidden_offset"):
        assert torch.equal(full.objective.state_dict()[k], resumed.objective.state_dict()[k])


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    data = prototype_data(40, seed=4)
    a = _trainer("pcd", "sgd", 2, tmp_path / "a")
    a.fit(data)
    b = _trainer("pcd", "sgd", 2, tmp_path / "b")
    b.fit(data, resume=True)
    assert_same_params(params(a.model), params(b.model))


def test_resume_needs_a_checkpoint_dir():
    trainer = Trainer(make_rbm(10, 4), make_sampler("cd"), epochs=1)
    with pytest.raises(ConfigError, match="checkpoint"):
        trainer.fit(prototype_data(20), resume=True)
    with pytest.raises(ConfigError, match="checkpoint_dir"):
        trainer.save_checkpoint()


def test_resume_refuses_a_different_signature_or_model(tmp_path):
    data = prototype_data(30, seed=5)
    Trainer(make_rbm(10, 4, seed=1), make_sampler("pcd"), epochs=1, batch_size=10,
            checkpoint_dir=tmp_path, signature={"lr": 0.01, "method": "pcd"}).fit(data)
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()
    other_sig = Trainer(make_rbm(10, 4, seed=1), make_sampler("pcd"), epochs=2, batch_size=10,
                        checkpoint_dir=tmp_path, signature={"lr": 0.02, "method": "pcd"})
    with pytest.raises(ConfigError, match="settings differ"):
        other_sig.fit(data, resume=True)
    new_key = Trainer(make_rbm(10, 4, seed=1), make_sampler("pcd"), epochs=2, batch_size=10,
                      checkpoint_dir=tmp_path, signature={"lr": 0.01, "method": "pcd", "k": 3})
    with pytest.raises(ConfigError, match="settings differ"):
        new_key.fit(data, resume=True)
    other_model = Trainer(make_rbm(10, 5, seed=1), make_sampler("pcd"), epochs=2,
                          batch_size=10, checkpoint_dir=tmp_path,
                          signature={"lr": 0.01, "method": "pcd"})
    with pytest.raises(ConfigError, match="different model"):
        other_model.fit(data, resume=True)
    other_units = Trainer(make_rbm(10, 4, seed=1, hidden="relu"), make_sampler("pcd"),
                          epochs=2, batch_size=10, checkpoint_dir=tmp_path,
                          signature={"lr": 0.01, "method": "pcd"})
    with pytest.raises(ConfigError, match="different model"):
        other_units.fit(data, resume=True)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before


def test_a_model_file_is_not_a_checkpoint(tmp_path):
    model = make_rbm(10, 4)
    save_model(model, tmp_path / CHECKPOINT_NAME)
    trainer = Trainer(model, make_sampler("cd"), epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(ModelFileError, match="not a checkpoint"):
        trainer.fit(prototype_data(20), resume=True)


# --- divergence ---------------------------------------------------------------------------
def test_divergence_raises_and_keeps_the_last_good_checkpoint(tmp_path):
    data = prototype_data(40, seed=6)

    def trainer(sampler, epochs):
        return Trainer(make_rbm(10, 4, seed=2), sampler, epochs=epochs, batch_size=10, lr=0.05,
                       checkpoint_dir=tmp_path, seed=1)

    trainer(ContrastiveDivergence(1), 2).fit(data)
    path = tmp_path / CHECKPOINT_NAME
    good = path.read_bytes()
    bad = trainer(NaNAfter(calls=1), 4)
    with pytest.raises(TrainingDiverged, match=r"epoch 3.*epoch 2\)") as info:
        bad.fit(data, resume=True)
    assert "intact" in str(info.value) and "--lr" in str(info.value)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temp files
    assert not bad.model.parameters_finite()


def test_divergence_in_a_later_epoch_never_reaches_the_checkpoint(tmp_path):
    data = prototype_data(40, seed=6)
    sampler = NaNAfter(calls=8)  # 4 batches per epoch: the NaN arrives in epoch 3
    trainer = Trainer(make_rbm(10, 4, seed=2), sampler, epochs=5, batch_size=10, lr=0.05,
                      checkpoint_dir=tmp_path)
    with pytest.raises(TrainingDiverged):
        trainer.fit(data)
    tensors, header = read_tensors(tmp_path / CHECKPOINT_NAME)
    assert header["epoch"] == 2
    assert all(bool(torch.isfinite(t).all()) for k, t in tensors.items() if k.startswith("model."))
    assert len(trainer.history) == 2


@pytest.mark.parametrize("check_every, expected_calls", [(1, 3), (2, 4), (0, 10)])
def test_divergence_check_frequency(check_every, expected_calls):
    data = prototype_data(100, seed=7)
    sampler = NaNAfter(calls=2)
    trainer = Trainer(make_rbm(10, 4, seed=2), sampler, epochs=1, batch_size=10,
                      divergence_check_every=check_every)
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        trainer.fit(data)
    assert sampler.count == expected_calls


def test_huge_learning_rate_diverges():
    data = torch.randn(200, 10, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(make_rbm(10, 4, visible="gaussian", seed=1), make_sampler("cd"),
                      epochs=3, batch_size=20, lr=1e10)
    with pytest.raises(TrainingDiverged, match="no checkpoint was being written"):
        trainer.fit(data)


# --- options -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    {"optimizer": "rmsprop"},
    {"lr": 0.0},
    {"lr": -0.1},
    {"lr": math.nan},
    {"lr": math.inf},
    {"batch_size": 0},
    {"batch_size": -5},
    {"batch_size": 2.5},
    {"batch_size": True},
    {"epochs": -1},
    {"checkpoint_every": 0},
    {"momentum": 1.0},
    {"momentum": -0.1},
    {"weight_decay": -1e-4},
    {"lr_schedule": "step"},
    {"lr_schedule": "linear", "lr_final_factor": 0.0},
    {"lr_schedule": "cosine", "lr_final_factor": 1.5},
])
def test_bad_options_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        Trainer(make_rbm(10, 4), make_sampler("cd"), **kwargs)


def test_bad_data_raises_data_error():
    trainer = Trainer(make_rbm(10, 4), make_sampler("cd"), epochs=1)
    with pytest.raises(DataError, match="training data"):
        trainer.fit(torch.full((5, 10), 0.5))
    with pytest.raises(DataError, match="validation data"):
        trainer.fit(prototype_data(20), val=torch.zeros(5, 9))


def test_zero_epochs_is_a_no_op(tmp_path):
    model = make_rbm(10, 4, seed=1)
    before = params(model)
    trainer = Trainer(model, make_sampler("cd"), epochs=0, checkpoint_dir=tmp_path,
                      init_visible_bias=False)
    assert trainer.fit(prototype_data(20)) == []
    assert_same_params(before, params(model))


# --- schedules and weight decay --------------------------------------------------------------
def _lr_per_epoch(schedule, epochs=5, lr=0.2, final=0.1, optimizer="sgd"):
    data = prototype_data(20, seed=8)
    objective = ZeroGradient()
    trainer = Trainer(make_rbm(10, 4), make_sampler("cd"), objective, epochs=epochs,
                      batch_size=10, lr=lr, optimizer=optimizer, lr_schedule=schedule,
                      lr_final_factor=final)
    objective.trainer = trainer
    trainer.fit(data)
    steps = objective.lrs
    assert len(steps) == 2 * epochs
    per_epoch = []
    for e in range(epochs):
        a, b = steps[2 * e], steps[2 * e + 1]
        assert a == b and len(set(a)) == 1  # constant within an epoch, same for every group
        per_epoch.append(a[0])
    return per_epoch, trainer


@pytest.mark.parametrize("schedule", ["constant", "linear", "exponential", "cosine"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lr_schedules_follow_the_documented_formulas(schedule, optimizer):
    lr, final, n = 0.2, 0.1, 5
    got, trainer = _lr_per_epoch(schedule, n, lr, final, optimizer)
    expected = {
        "constant": [lr] * n,
        "linear": [lr * (1 + (final - 1) * e / n) for e in range(n)],
        "exponential": [lr * final ** (e / n) for e in range(n)],
        "cosine": [lr * final + (lr - lr * final) * (1 + math.cos(math.pi * e / n)) / 2
                   for e in range(n)],
    }[schedule]
    for g, x in zip(got, expected, strict=True):
        assert math.isclose(g, x, rel_tol=1e-9), (got, expected)
    # after the last epoch the schedule has reached its documented end point
    end = trainer.optimizer.param_groups[0]["lr"]
    assert math.isclose(end, lr if schedule == "constant" else lr * final, rel_tol=1e-9)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_weight_decay_applies_only_to_weights(optimizer):
    model = make_rbm(10, 4, seed=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # non-zero biases: decay would visibly shrink them
    before = params(model)
    objective = ZeroGradient()
    lr, wd = 0.1, 0.5
    trainer = Trainer(model, make_sampler("cd"), objective, epochs=1, batch_size=10, lr=lr,
                      optimizer=optimizer, weight_decay=wd, init_visible_bias=False)
    objective.trainer = trainer
    trainer.fit(prototype_data(30, seed=9))  # three steps
    after = params(model)
    assert torch.equal(after["visible.bias"], before["visible.bias"])
    assert torch.equal(after["hidden.bias"], before["hidden.bias"])
    w0, w1 = before["connection.weights"], after["connection.weights"]
    if optimizer == "sgd":
        torch.testing.assert_close(w1, w0 * (1 - lr * wd) ** 3)
    else:
        assert (w1.abs() < w0.abs()).all()
    decayed = [g for g in trainer.optimizer.param_groups if g["weight_decay"] > 0]
    assert len(decayed) == 1 and decayed[0]["params"] == [model.connection.weights]


# --- records and callbacks ------------------------------------------------------------------
def test_history_records_and_callbacks(tmp_path):
    data = prototype_data(40, seed=10)
    seen = []

    def callback(trainer, record):
        seen.append((trainer.epoch, dict(record)))
        record["custom"] = 1.5

    trainer = Trainer(make_rbm(10, 4, seed=4), make_sampler("pt", n_temperatures=3, chains=5),
                      epochs=3, batch_size=10, checkpoint_dir=tmp_path, checkpoint_every=2,
                      callbacks=[callback])
    history = trainer.fit(data, val=data[:8])
    assert [e for e, _ in seen] == [1, 2, 3]
    for rec in history:
        assert {"epoch", "time", "lr", "hidden_activation", "recon_error", "free_energy_train",
                "free_energy_val", "free_energy_gap", "swap_rate_min", "swap_rate_mean",
                "custom"} <= set(rec)
        assert math.isclose(rec["free_energy_gap"],
                            rec["free_energy_val"] - rec["free_energy_train"])
        assert 0.0 <= rec["hidden_activation"] <= 1.0
        assert 0.0 <= rec["swap_rate_min"] <= rec["swap_rate_mean"] <= 1.0
    # checkpoint every 2 epochs and at the end
    header = read_tensors(tmp_path / CHECKPOINT_NAME)[1]
    assert header["epoch"] == 3 and header["history"][-1]["custom"] == 1.5


# --- the optimizer step -----------------------------------------------------------------------
@pytest.mark.parametrize("momentum,weight_decay,nesterov", [
    (0.0, 0.0, False), (0.5, 0.0, False), (0.9, 0.01, False), (0.5, 0.01, True)])
def test_lean_sgd_matches_torch_sgd_bit_for_bit(momentum, weight_decay, nesterov):
    from boltzkit.training import LeanSGD

    gen = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (7,), (5,)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    a = [torch.nn.Parameter(t.clone()) for t in start]
    b = [torch.nn.Parameter(t.clone()) for t in start]
    kw = {"lr": 0.1, "momentum": momentum, "nesterov": nesterov}
    opt_a = torch.optim.SGD([{"params": a[:1], "weight_decay": weight_decay},
                             {"params": a[1:], "weight_decay": 0.0}], **kw)
    opt_b = LeanSGD([{"params": b[:1], "weight_decay": weight_decay},
                     {"params": b[1:], "weight_decay": 0.0}], **kw)
    for step in range(5):
        for pa, pb in zip(a, b, strict=True):
            g = torch.randn(pa.shape, generator=gen)
            pa.grad, pb.grad = g.clone(), g.clone()
        if step == 3:  # a parameter without a gradient is skipped by both
            a[2].grad = b[2].grad = None
        opt_a.step()
        opt_b.step()
        for pa, pb in zip(a, b, strict=True):
            assert torch.equal(pa, pb)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for i in sa["state"]:
        assert torch.equal(sa["state"][i]["momentum_buffer"], sb["state"][i]["momentum_buffer"])
