"""MovieLens loaders and collaborative-filtering RBMs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from boltzkit.data.movielens import (
    load_ml1m,
    load_ml100k,
    load_ml100k_all,
    load_ml_latest_small,
    load_movielens,
)
from boltzkit.errors import ConfigError, DataError
from boltzkit.io import load_model, save_model
from boltzkit.recommend import CFRBM, BiasBaseline, GlobalMean, rmse_mae


def _data_root() -> Path | None:
    env = os.environ.get("BOLTZKIT_DATA")
    cands = [Path(env)] if env else []
    cands.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    for c in cands:
        for d in (c, c / "ml-100k"):
            if (d / "u.data").is_file():
                return d
    return None


ML100K = _data_root()
needs_data = pytest.mark.skipif(ML100K is None, reason="ml-100k not found (set BOLTZKIT_DATA)")


@pytest.fixture(scope="module")
def u1():
    return load_ml100k(ML100K, "u1")


# ----------------------------------------------------------------------------- loaders
def _write_1m(folder: Path, lines: list[str]) -> Path:
    d = folder / "ml-1m"
    d.mkdir()
    (d / "ratings.dat").write_text("\n".join(lines) + "\n", encoding="latin-1")
    (d / "movies.dat").write_text("10::Film A (1990)::Drama\n20::Film B (1991)::Comedy\n"
                                  "30::Caf\xe9 (1992)::Drama\n", encoding="latin-1")
    return folder


def _1m_lines():
    return [f"{u}::{i}::{(u + i) % 5 + 1}::97830{u}{i}" for u in (1, 2, 3, 4, 5)
            for i in (10, 20, 30)]


def test_ml1m_parses(tmp_path):
    root = _write_1m(tmp_path, _1m_lines())
    folds = [load_ml1m(root, fold=f) for f in range(1, 6)]
    d = folds[0]
    assert (d.n_users, d.n_items) == (5, 3)
    assert d.titles == ["Film A (1990)", "Film B (1991)", "Caf\xe9 (1992)"]
    assert sum(len(f.test) for f in folds) == 15
    assert all(len(f.train) + len(f.test) == 15 for f in folds)
    m = d.train.matrix()
    assert m.shape == (5, 3) and m.nnz == len(d.train)
    # the parent directory or the folder itself both work
    assert load_ml1m(root / "ml-1m", fold=2).n_users == 5


def test_ml1m_malformed_line_number(tmp_path):
    lines = _1m_lines()
    lines[6] = "3::20::4"
    root = _write_1m(tmp_path, lines)
    with pytest.raises(DataError, match=r"ratings\.dat, line 7"):
        load_ml1m(root)


def test_rating_out_of_range(tmp_path):
    lines = _1m_lines()
    lines[3] = "2::10::6::978300000"
    root = _write_1m(tmp_path, lines)
    with pytest.raises(DataError, match=r"line 4: rating 6 is outside"):
        load_ml1m(root)


def test_latest_small_parses_and_rejects(tmp_path):
    d = tmp_path / "ml-latest-small"
    d.mkdir()
    rows = ["userId,movieId,rating,timestamp"] + [
        f"{u},{i},{r},9643{u}{i}" for u, i, r in
        [(1, 1, 4.0), (1, 3, 4.5), (2, 1, 0.5), (2, 50, 3.0), (3, 3, 5.0), (3, 50, 2.5)]]
    (d / "ratings.csv").write_text("\n".join(rows) + "\n")
    (d / "movies.csv").write_text('movieId,title,genres\n1,Toy Story (1995),Comedy\n'
                                  '3,"Grumpier, Old Men (1995)",Comedy\n50,Usual (1995),Crime\n')
    data = load_ml_latest_small(tmp_path, fold=1)
    assert data.scale[0] == 0.5 and len(data.scale) == 10
    assert data.titles[1] == "Grumpier, Old Men (1995)"
    assert len(data.train) + len(data.test) == 6
    rows[4] = "2,50,three,964300"
    (d / "ratings.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"ratings\.csv, line 5"):
        load_ml_latest_small(tmp_path)


def test_empty_fold_and_missing_dir(tmp_path):
    d = tmp_path / "ml-100k"
    d.mkdir()
    (d / "u.data").write_text("1\t1\t5\t1\n2\t1\t3\t2\n")
    (d / "u1.base").write_text("1\t1\t5\t1\n")
    (d / "u1.test").write_text("\n")
    with pytest.raises(DataError, match="no ratings"):
        load_ml100k(tmp_path, "u1")
    with pytest.raises(DataError, match="does not exist"):
        load_ml100k(tmp_path / "nope")
    with pytest.raises(ConfigError, match="unknown ml-100k split"):
        load_ml100k(tmp_path, "u9")
    with pytest.raises(ConfigError, match="fold must be 1..5"):
        load_movielens("ml-1m", _write_1m(tmp_path, _1m_lines()), fold=7)


@needs_data
def test_ml100k_matrix_matches_u_data(u1):
    lines = [ln.split("\t") for ln in (ML100K / "u.data").read_text().splitlines()]
    full = load_ml100k_all(ML100K)
    m = full.matrix()
    assert m.shape == (943, 1682) and m.nnz == len(lines) == 100000
    users = np.array([int(p[0]) for p in lines])
    np.testing.assert_array_equal(np.diff(m.indptr), np.bincount(users - 1, minlength=943))
    assert m[195, 241] == 3  # first line: user 196, item 242, rating 3
    assert len(u1.train) == 80000 and len(u1.test) == 20000
    assert u1.titles[0] == "Toy Story (1995)" and u1.genres.shape == (1682, 19)
    assert len(u1.users["age"]) == 943


# ----------------------------------------------------------------------------- model
def _tiny_model(mode="softmax", item_based=False, seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(6), 4)
    items = np.concatenate([rng.choice(8, 4, replace=False) for _ in range(6)])
    ratings = rng.integers(1, 6, len(users)).astype(np.float32)
    m = CFRBM(6, 8, n_hidden=5, mode=mode, item_based=item_based, init_std=0.1, seed=seed)
    m.set_training_ratings(users, items, ratings)
    return m, users, items, ratings


def test_softmax_conditionals_sum_to_one():
    m, *_ = _tiny_model()
    h = (torch.rand(3, 5) < 0.5).float()
    p = m.visible_mean(h).reshape(3, 8, 5)
    torch.testing.assert_close(p.sum(-1), torch.ones(3, 8))


@pytest.mark.parametrize("mode", ["softmax", "like"])
def test_missing_entries_never_affect_gradients(mode):
    m, *_ = _tiny_model(mode)
    v, mask = m.batch(np.arange(6))
    um = m._expand(mask)
    garbage = v.clone()
    garbage[um == 0] = 1.0  # fill every unrated placeholder
    g1 = m.gradients(v, mask, steps=3, generator=torch.Generator().manual_seed(1))
    g2 = m.gradients(garbage, mask, steps=3, generator=torch.Generator().manual_seed(1))
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=0, atol=0)
    # items a one-user batch did not rate get no gradient at all
    v, mask = m.batch(np.arange(1))
    unrated = m._expand(mask)[0] == 0
    assert int(unrated.sum()) == 4 * m.k
    g = m.gradients(v, mask, steps=3, generator=torch.Generator().manual_seed(1))
    assert torch.all(g["weights"][unrated] == 0) and torch.all(g["visible_bias"][unrated] == 0)
    assert bool((g["weights"][~unrated] != 0).any())


def test_unknown_user_and_bad_options():
    m, *_ = _tiny_model()
    with pytest.raises(DataError, match="unknown user 99"):
        m.recommend(99)
    with pytest.raises(DataError, match="unknown user 0"):
        m.predict([0], [1])
    with pytest.raises(ConfigError, match="unknown CF-RBM mode"):
        CFRBM(3, 3, mode="gaussian")
    with pytest.raises(DataError, match="not on the model's scale"):
        m.set_training_ratings([0], [0], [7.0])


@pytest.mark.parametrize("item_based", [False, True])
def test_recommend_excludes_rated_and_roundtrip(tmp_path, item_based):
    m, users, items, ratings = _tiny_model(item_based=item_based)
    m.fit(users, items, ratings, epochs=2, batch_size=2, lr=0.05)
    recs = m.recommend(3, top=10)
    rated = set(items[users == 2] + 1)  # user id 3 is index 2; item ids are index + 1
    assert len(recs) == 8 - len(rated)
    assert not {r["item"] for r in recs} & rated
    preds = [r["prediction"] for r in recs]
    assert preds == sorted(preds, reverse=True) and all(1 <= p <= 5 for p in preds)
    path = save_model(m, tmp_path / "cf.safetensors")
    m2 = load_model(path)
    assert isinstance(m2, CFRBM) and m2.item_based == item_based
    np.testing.assert_allclose(m2.predict(users + 1, items + 1), m.predict(users + 1, items + 1))
    assert m2.recommend(3, top=10) == recs


@needs_data
def test_short_fit_on_u1_beats_global_mean(u1):
    tr, te = u1.train, u1.test
    gm = GlobalMean().fit(tr.users, tr.items, tr.ratings)
    base = rmse_mae(gm.predict_index(te.users, te.items), te.ratings)[0]
    bias = BiasBaseline().fit(tr.users, tr.items, tr.ratings, u1.n_users, u1.n_items)
    assert rmse_mae(bias.predict_index(te.users, te.items), te.ratings)[0] < base
    m = CFRBM(u1.n_users, u1.n_items, n_hidden=20, item_based=True, seed=0)
    m.fit(tr.users, tr.items, tr.ratings, epochs=2, batch_size=50, lr=0.05)
    rmse, mae = rmse_mae(m.predict_index(te.users, te.items), te.ratings)
    assert rmse < base - 0.05 and mae < 0.9


@needs_data
def test_cli_train_recommend_eval(tmp_path, capsys):
    from boltzkit.cli import main

    out = tmp_path / "like.safetensors"
    assert main(["recommend-train", "--model", "like-rbm", "--data-dir", str(ML100K),
                 "--fold", "1", "--epochs", "1", "--n-hidden", "10", "--out", str(out),
                 "--quiet"]) == 0
    assert '"like_error"' in capsys.readouterr().out
    assert main(["recommend", str(out), "--user", "42", "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "top 3 for user 42" in text and "(item " in text
    assert main(["recommend", str(out), "--user", "4242"]) == 2
    assert "unknown user 4242" in capsys.readouterr().err
    assert main(["recommend-eval", str(out), "--data-dir", str(ML100K), "--json"]) == 0
    assert "like_error" in capsys.readouterr().out
