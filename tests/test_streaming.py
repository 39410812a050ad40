"""Streaming training data from a memory-mapped .npy: same result as training from memory.

``Trainer.fit`` given a NumPy memory map copies one batch at a time (rows gathered in
sorted order, then put back in the permutation's order), so with the same seed the
parameters must be bit-identical to a run on the in-memory tensor.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from boltzkit.data.arrays import load_array
from boltzkit.errors import DataError
from boltzkit.rbm import make_rbm
from boltzkit.sampling import ContrastiveDivergence, PersistentCD
from boltzkit.training import StreamedRows, Trainer

N_ROWS, N_VISIBLE = 317, 12  # 317 = 10 batches of 30 + a short one of 17


@pytest.fixture
def data_file(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(N_ROWS, N_VISIBLE, generator=gen) < 0.3).float()
    x[:, :3] = x[:, 3:6]  # some structure to learn
    path = tmp_path / "train.npy"
    np.save(path, x.numpy())
    return path, x


def _train(data, sampler, **fit_kw):
    model = make_rbm(N_VISIBLE, 7, seed=1)
    trainer = Trainer(model, sampler, epochs=3, batch_size=30, lr=0.1, momentum=0.5, seed=4,
                      monitor_size=50)
    history = trainer.fit(data, val=data, **fit_kw)
    return model, history


def _assert_same(a, b):
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        assert torch.equal(va, vb), ka


@pytest.mark.parametrize("sampler", [lambda: ContrastiveDivergence(1),
                                     lambda: PersistentCD(1, n_chains=16)], ids=["cd", "pcd"])
def test_memmap_matches_in_memory(data_file, sampler):
    path, x = data_file
    ref, ref_hist = _train(x, sampler())
    mm = np.load(path, mmap_mode="r")
    assert isinstance(mm, np.memmap)
    streamed, hist = _train(mm, sampler())
    _assert_same(ref, streamed)
    assert [h["free_energy_train"] for h in hist] == [h["free_energy_train"] for h in ref_hist]
    assert not torch.equal(ref.connection.weights, make_rbm(N_VISIBLE, 7, seed=1)
                           .connection.weights)  # it trained


def test_page_release_keeps_results(data_file, monkeypatch):
    """Dropping the map's pages after every batch (madvise) must not change the data read."""
    path, x = data_file
    monkeypatch.setattr(StreamedRows, "RELEASE_BYTES", 1)
    calls = []
    original = StreamedRows.release

    def counting(self):
        calls.append(self._mmap is not None)
        original(self)

    monkeypatch.setattr(StreamedRows, "release", counting)
    ref, _ = _train(x, ContrastiveDivergence(1))
    streamed, _ = _train(np.load(path, mmap_mode="r"), ContrastiveDivergence(1))
    _assert_same(ref, streamed)
    assert len(calls) > 30 and all(calls)  # a read-only map: its pages were really dropped


def test_load_array_mmap_tensor_streams(data_file):
    path, x = data_file
    ref, _ = _train(x, ContrastiveDivergence(1))
    streamed, _ = _train(load_array(path, mmap=True), ContrastiveDivergence(1), stream=True)
    _assert_same(ref, streamed)


def test_bad_rows_in_a_stream_are_reported(data_file, tmp_path):
    _, x = data_file
    bad = x.numpy().copy()
    bad[-1, 2] = 0.5
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(DataError, match="binary"):
        _train(np.load(tmp_path / "bad.npy", mmap_mode="r"), ContrastiveDivergence(1))


def test_stream_needs_matching_dtype_and_shape(data_file, tmp_path):
    _, x = data_file
    np.save(tmp_path / "f64.npy", x.numpy().astype(np.float64))
    with pytest.raises(DataError, match="float32"):
        _train(np.load(tmp_path / "f64.npy", mmap_mode="r"), ContrastiveDivergence(1))
    with pytest.raises(DataError, match="12 columns"):
        _train(np.zeros((5, 3), np.float32), ContrastiveDivergence(1), stream=True)
    with pytest.raises(DataError, match="empty"):
        _train(np.zeros((0, N_VISIBLE), np.float32), ContrastiveDivergence(1), stream=True)


def test_plain_arrays_load_whole_unless_asked(data_file):
    """A NumPy array that is not a memory map trains in memory (any dtype), as before."""
    _, x = data_file
    ref, _ = _train(x, ContrastiveDivergence(1))
    in_memory, _ = _train(x.numpy().astype(np.float64), ContrastiveDivergence(1))
    _assert_same(ref, in_memory)
    streamed, _ = _train(x.numpy(), ContrastiveDivergence(1), stream=True)
    _assert_same(ref, streamed)
