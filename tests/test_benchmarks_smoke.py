"""Smoke test of benchmarks/bench_speed.py: it runs end to end and writes the JSON it promises.

Tiny settings (600 MNIST rows, a few Gibbs sweeps and AIS steps, one timed run); no timing
assertions: the numbers of a smoke run mean nothing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def _mnist_dir() -> Path | None:
    for cand in (os.environ.get("BOLTZKIT_DATA"), REPO.parent / "shared" / "data"):
        if not cand:
            continue
        base = Path(cand)
        for folder in (base, base / "mnist"):
            if (folder / "train-images-idx3-ubyte.gz").is_file() or (
                    folder / "train-images-idx3-ubyte").is_file():
                return folder
    return None


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("bench_speed", "peers"):
        sys.modules.pop(name, None)
    import bench_speed

    threads = torch.get_num_threads()
    yield bench_speed
    torch.set_num_threads(threads)


def test_quick_run_writes_expected_json(bench, tmp_path, capsys):
    data_dir = _mnist_dir()
    if data_dir is None:
        pytest.skip("MNIST not found (set BOLTZKIT_DATA or put it in ../shared/data/mnist)")
    out = tmp_path / "bench.json"
    rc = bench.main(["--quick", "--limit", "600", "--data-dir", str(data_dir),
                     "--jobs", "cd1,pcd1,ais,gibbs1k", "--contestants", "boltzkit,torch,sklearn",
                     "--repeats", "1", "--gibbs-sweeps", "2", "--ais-steps", "10",
                     "--threads", "1", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert set(report) >= {"meta", "jobs", "peak_rss_mib"}
    assert report["peak_rss_mib"] > 0
    assert report["meta"]["n_train"] == 600
    assert report["meta"]["threads"] == 1
    assert list(report["jobs"]) == ["cd1", "pcd1", "ais", "gibbs1k"]

    expected = {"cd1": {"boltzkit", "boltzkit_general", "torch", "sklearn"},
                "pcd1": {"boltzkit", "boltzkit_general", "torch", "sklearn"},
                "ais": {"torch"}, "gibbs1k": {"boltzkit", "boltzkit_grad", "torch", "sklearn"}}
    for name, job in report["jobs"].items():
        assert set(job) >= {"title", "flops", "flop_count", "gemm_shapes", "best_gflops",
                            "roofline_s", "results", "skipped", "errors"}
        assert job["errors"] == {}, job["errors"]
        assert job["flops"] > 0 and job["roofline_s"] > 0 and job["best_gflops"] > 0
        for shape in job["gemm_shapes"].values():
            assert shape["calls"] > 0 and shape["min_s"] > 0
        assert "learnergy" not in job["results"]  # not selected
        assert expected[name] <= set(job["results"]), (name, job["results"].keys())
        for res in job["results"].values():
            assert len(res["times_s"]) == 1
            assert res["min_s"] > 0 and res["median_s"] > 0 and res["x_roofline"] > 0
            if "boltzkit" in job["results"]:
                assert res["x_boltzkit"] > 0
        # boltzkit's AIS runs when boltzkit.metrics.ais_log_z exists, else it says why not.
        if name == "ais":
            assert "boltzkit" in job["results"] or "boltzkit" in job["skipped"]
    # CD-1 per batch: 5 GEMMs of 100x784x500 (v@W, h@W^T, v1@W, 2 for the weight gradient);
    # PCD-1 the same 5 (its first h@W^T starts from the chains' kept hidden field).
    assert report["jobs"]["cd1"]["flops"] == 6 * 5 * 2 * 100 * 784 * 500
    assert report["jobs"]["pcd1"]["flops"] == 6 * 5 * 2 * 100 * 784 * 500
    assert report["jobs"]["gibbs1k"]["results"]["torch"]["throughput"] > 0
    printed = capsys.readouterr().out
    assert "x roofline" in printed and "peak RSS" in printed


def test_gemm_counts_match_the_documented_formula(bench):
    # CD-k and PCD-k: 2k + 3 GEMM-equivalents per batch (all of B x n_v x n_h here).
    for k in (1, 2, 10):
        assert len(bench.train_gemms(100, 500, k, False, 100)) == 2 * k + 3
        assert len(bench.train_gemms(100, 500, k, True, 100)) == 2 * k + 3


@pytest.mark.parametrize("method", ["cd", "pcd"])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("fused", [True, False])
def test_roofline_counts_the_gemms_boltzkit_performs(bench, monkeypatch, method, k, fused):
    """The roofline's GEMM count is what Trainer.fit really runs, on both paths.

    Every matrix product of one epoch is recorded by torch's profiler and counted in
    units of one B x n_v x n_h GEMM (stacked products count as several; the bias rows and
    columns the general path adds, about 10 % here, round away). The end-of-epoch monitor
    (the whole data set, N rows) is left out; PCD computes its chains' field once more,
    for the first batch.
    """
    from torch.profiler import ProfilerActivity, profile

    from boltzkit import LikelihoodGradient, Trainer, kernels, make_rbm, make_sampler

    n_v, n_h, batch, n_batches = 61, 37, 5, 9
    n = batch * n_batches
    x = (torch.rand(n, n_v, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    if not fused:
        monkeypatch.setattr(kernels, "plan_step", lambda *args, **kwargs: None)
    extra = {"chains": batch} if method == "pcd" else {}
    trainer = Trainer(make_rbm(n_v, n_h, seed=0), make_sampler(method, k=k, **extra),
                      LikelihoodGradient(), epochs=1, batch_size=batch, lr=0.01, momentum=0.5,
                      seed=0, progress=False)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        trainer.fit(x)
    unit = batch * n_v * n_h
    counted = 0
    for event in prof.events():
        if event.name not in ("aten::mm", "aten::addmm", "aten::addmm_"):
            continue
        first = 0 if event.name == "aten::mm" else 1  # addmm(self, a, b): self comes first
        a, b = event.input_shapes[first], event.input_shapes[first + 1]
        if n in a or n in b:
            continue  # the monitor
        counted += round(a[0] * a[1] * b[1] / unit)
    expected = n_batches * len(bench.train_gemms(batch, n_h, k, method == "pcd", batch))
    assert counted == expected + (method == "pcd")


def test_bad_job_name_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--jobs", "cd7"])


def test_quality_vs_peers_scores_every_available_library(monkeypatch, tmp_path, capsys):
    data_dir = _mnist_dir()
    if data_dir is None:
        pytest.skip("MNIST not found (set BOLTZKIT_DATA or put it in ../shared/data/mnist)")
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("quality_vs_peers", "peers"):
        sys.modules.pop(name, None)
    import quality_vs_peers

    threads = torch.get_num_threads()
    try:
        rows = quality_vs_peers.main(["--data-dir", str(data_dir), "--limit", "500",
                                      "--epochs", "1", "--n-hidden", "8", "--ais-steps", "200",
                                      "--ais-chains", "10", "--threads", "1",
                                      "--json", str(tmp_path / "q.json")])
    finally:
        torch.set_num_threads(threads)
    names = [r["library"] for r in rows]
    assert "sklearn" in names and "boltzkit" in names  # learnergy only when installed
    for r in rows:
        assert r["ll_lower"] <= r["test_log_likelihood"] <= r["ll_upper"]  # upper may be inf
        assert r["test_log_likelihood"] < 0
    assert json.loads((tmp_path / "q.json").read_text()) == rows


def test_gpu_check_script_runs_end_to_end_on_the_cpu(monkeypatch, tmp_path, capsys):
    """benchmarks/gpu_check.py, prepared for a GPU, runs in --smoke mode on the CPU: every
    section (speed per precision, parity) reports; on a machine without CUDA the default
    --device cuda refuses with a message."""
    mnist = _mnist_dir()
    if mnist is None:
        pytest.skip("MNIST not found (set BOLTZKIT_DATA)")
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("gpu_check", None)
    import gpu_check

    from boltzkit import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    threads = torch.get_num_threads()
    try:
        if not torch.cuda.is_available():
            assert gpu_check.main(["--data-dir", str(mnist)]) == 2
            assert "no CUDA device" in capsys.readouterr().err
        out = tmp_path / "g.json"
        assert gpu_check.main(["--device", "cpu", "--smoke", "--data-dir", str(mnist),
                               "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    assert set(report["speed"]) == {"float32", "bfloat16"}
    for row in report["speed"].values():
        assert row["cd1_epoch_s"] > 0 and row["ais"]["log_z"] > 0
    assert set(report["parity"]) == {"float32", "bfloat16"}
    assert all(r["log_likelihood"] < 0 for r in report["parity"].values())
