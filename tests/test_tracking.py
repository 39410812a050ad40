"""TensorBoard logging writes the same numbers as the history."""

from __future__ import annotations

import json

import pytest

from boltzkit.cli import main

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")



#: the bundled digits, thresholded to 0/1 for Bernoulli units
DIGITS = ["--dataset", "digits", "--binarize", "threshold"]

def test_cli_tensorboard_scalars_equal_history(tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    logs = tmp_path / "tb"
    code = main(["train", *DIGITS, "--n-hidden", "8", "--epochs", "3",
                 "--batch-size", "100", "--out", str(model), "--quiet",
                 "--tensorboard", str(logs)])
    capsys.readouterr()
    assert code == 0
    history = json.loads(model.with_suffix(".history.json").read_text())
    acc = event_accumulator.EventAccumulator(str(logs))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/recon_error", "train/free_energy_train", "train/lr"} <= tags
    for tag in ("train/recon_error", "train/free_energy_train"):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3]
        key = tag.split("/", 1)[1]
        assert [e.value for e in events] == pytest.approx([r[key] for r in history], rel=1e-6)
