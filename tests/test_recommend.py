"""MovieLens loaders and collaborative-filtering RBMs."""

from __future__ import annotations

import json
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
def test_cli_train_recommend_eval(tmp_path, capsys, monkeypatch):
    """One path: `train --model cf-rbm` trains, `recommend` lists, `evaluate` scores (its
    data directory found from the model file, as for every kind)."""
    from boltzkit.cli import main

    out = tmp_path / "like.safetensors"
    assert main(["train", "--model", "cf-rbm", "--cf-mode", "like", "--data-dir", str(ML100K),
                 "--fold", "1", "--epochs", "1", "--n-hidden", "10", "--out", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    monkeypatch.delenv("BOLTZKIT_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/data beside it either
    assert main(["recommend", str(out), "--user", "42", "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "top 3 for user 42" in text and "(item " in text
    assert main(["recommend", str(out), "--user", "4242"]) == 2
    assert "unknown user 4242" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["like_error"] < 0.5
    assert main(["recommend-train", "--config", "x.toml"]) == 2  # gone: `train` is the path


# ----------------------------------------------------------------------------- CD, conditional
@torch.no_grad()
def test_sparse_cd1_gradient_is_unbiased():
    """The sparse negative phase estimates the exact CD-1 gradient (enumerated here)."""
    import itertools

    m = CFRBM(1, 2, n_hidden=3, init_std=0.8, seed=3)  # one user, two rated movies, K=5
    m.visible.bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(4))
    m.hidden.bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(5))
    m.set_training_ratings([0, 0], [0, 1], [4.0, 2.0])
    v, mask = m.batch(np.array([0]))
    w = m.connection.weights
    h0 = m.hidden_mean(v)
    exact = torch.zeros_like(w)
    # E over h ~ p(h | v0) and v1 ~ p(v | h) of v1 (x) p(h | v1): 8 x 25 states
    for bits in itertools.product([0.0, 1.0], repeat=3):
        h = torch.tensor([bits])
        ph = torch.prod(torch.where(h > 0, h0, 1 - h0))
        pv = m.visible_mean(h)[0].reshape(2, 5)
        for a, b in itertools.product(range(5), range(5)):
            v1 = torch.zeros(1, 10)
            v1[0, a], v1[0, 5 + b] = 1.0, 1.0
            exact -= ph * pv[0, a] * pv[1, b] * (v1.t() @ m.hidden_mean(v1))
    exact += v.t() @ h0
    n = 20000  # the same case n times in one batch: the batch mean is a Monte Carlo average
    g = m.gradients(v.repeat(n, 1), mask.repeat(n, 1), steps=1,
                    generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(g["weights"], exact, atol=0.012, rtol=0)
    assert float((g["weights"] - exact).abs().max()) < 0.3 * float(exact.abs().max())


@torch.no_grad()
def test_exact_prediction_matches_enumeration():
    m, users, items, ratings = _tiny_model()
    m.connection.weights.normal_(0, 0.7, generator=torch.Generator().manual_seed(2))
    m.prediction = "exact"
    u = 0
    rated = set(items[users == u].tolist())
    q = next(i for i in range(8) if i not in rated)
    v, _ = m.batch(np.array([u]))
    logp = []
    for k in range(5):  # p(v_q = k | v_u) ~ exp(-F(v_u with q set to k))
        vk = v.clone()
        vk[0, q * 5 + k] = 1.0
        logp.append(-m.free_energy(vk))
    p = torch.softmax(torch.cat(logp), 0)
    expected = float(p @ torch.arange(1.0, 6.0))
    assert m.predict_index([u], [q])[0] == pytest.approx(expected, abs=1e-5)
    m.prediction = "mean-field"
    assert m.predict_index([u], [q])[0] != pytest.approx(expected, abs=1e-3)
    with pytest.raises(ConfigError, match="unknown prediction"):
        CFRBM(3, 3, prediction="sampled")


def _conditional_model(item_based=False):
    m, users, items, ratings = _tiny_model(item_based=item_based)
    c = CFRBM(6, 8, n_hidden=5, item_based=item_based, conditional=True, init_std=0.1)
    extra = (np.array([0, 1, 5]), np.array([7, 7, 0]))
    c.set_training_ratings(users, items, ratings, implicit=extra)
    with torch.no_grad():
        c.implicit.weights.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return c, users, items, ratings, extra


def test_conditional_rated_indicator_and_gradient():
    c, users, items, ratings, extra = _conditional_model()
    r = c.rated_batch(np.arange(6)).numpy()
    want = np.zeros((6, 8))
    want[users, items] = 1
    want[extra] = 1
    np.testing.assert_array_equal(r, want)
    v, mask = c.batch(np.arange(6))
    g = c.gradients(v, mask, steps=2, generator=torch.Generator().manual_seed(0),
                    rated=c.rated_batch(np.arange(6)))
    assert g["implicit"].shape == (8, 5)
    # D's gradient for a group is r^T (h_data - h_model): zero for groups nobody rated
    never = np.flatnonzero(want.sum(0) == 0)
    assert torch.all(g["implicit"][never] == 0)
    # the implicit pairs move the hidden units (and so the predictions) of their cases only
    h_with = c.case_hidden(np.arange(6))
    c.implicit_pairs = torch.zeros(0, 2, dtype=torch.int64)
    c._cache = None
    h_without = c.case_hidden(np.arange(6))
    changed = (h_with - h_without).abs().sum(1) > 1e-6
    new = {int(u) for u, i in zip(*extra, strict=True) if not ((users == u) & (items == i)).any()}
    assert new and changed.tolist() == [u in new for u in range(6)]
    plain, *_ = _tiny_model()
    with pytest.raises(ConfigError, match="need a conditional model"):
        plain.set_training_ratings(users, items, ratings, implicit=extra)


@pytest.mark.parametrize("item_based", [False, True])
def test_conditional_fit_and_roundtrip(tmp_path, item_based):
    c, users, items, ratings, extra = _conditional_model(item_based)
    c.fit(users, items, ratings, epochs=3, batch_size=2, lr=0.1, implicit=extra)
    assert float(c.implicit.weights.detach().abs().sum()) > 0  # D learned
    m2 = load_model(save_model(c, tmp_path / "c.safetensors"))
    assert m2.conditional and m2.implicit_pairs.shape == (3, 2)
    np.testing.assert_allclose(m2.predict(users + 1, items + 1), c.predict(users + 1, items + 1))


def _ratings(users, items, ratings, n_users, n_items):
    from boltzkit.data.movielens import Ratings

    return Ratings(np.asarray(users), np.asarray(items), np.asarray(ratings, np.float32),
                   np.zeros(len(users), np.int64), n_users, n_items)


def test_ranking_metrics_by_hand():
    from boltzkit.recommend.evaluate import ranking_metrics

    train = _ratings([0, 1], [0, 3], [5, 5], 2, 5)
    # user 0: relevant items 2 and 4 (item 1 rated 3 is not); user 1: relevant item 0
    test = _ratings([0, 0, 0, 1], [1, 2, 4, 0], [3, 4, 5, 4], 2, 5)
    scores = np.array([[9.0, 8.0, 7.0, 6.0, 5.0],   # item 0 is a training item: skipped
                       [1.0, 2.0, 3.0, 9.0, 0.0]])  # item 3 is a training item: skipped
    r = ranking_metrics(scores, train, test, n=2)
    # user 0 ranks 1, 2 -> one hit at rank 2; user 1 ranks 2, 1 -> no hit
    assert r["precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert r["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    ndcg0 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert r["ndcg@2"] == pytest.approx(ndcg0 / 2)
    assert r["n_ranked_users"] == 2
    perfect = ranking_metrics(np.array([[0, 0, 9, 0, 8.0], [9.0, 0, 0, 0, 0]]), train, test, n=2)
    assert perfect["ndcg@2"] == pytest.approx(1.0) and perfect["recall@2"] == 1.0
    with pytest.raises(DataError, match="no test rating is >= 4"):
        ranking_metrics(scores, train, _ratings([0], [1], [2], 2, 5))


def test_item_knn_formula():
    from boltzkit.recommend import ItemKNN

    rng = np.random.default_rng(0)
    users, items = np.nonzero(rng.random((30, 6)) < 0.6)
    ratings = rng.integers(1, 6, len(users)).astype(np.float32)
    knn = ItemKNN(k=2, shrinkage=3.0).fit(users, items, ratings, 30, 6)
    np.testing.assert_allclose(knn.sim, knn.sim.T, atol=1e-12)
    # one prediction by hand: baseline + similarity-weighted residuals of the 2 nearest
    u, i = int(users[0]), 5 if items[0] != 5 else 4
    base = knn.base.predict_index([u], [i])[0]
    js = items[users == u]
    js = js[js != i]
    res = ratings[users == u][items[users == u] != i] - knn.base.predict_index(
        np.full(len(js), u), js)
    s = np.clip(knn.sim[i, js], 0, None)
    keep = np.argsort(-s)[:2]
    want = base + (s[keep] @ res[keep]) / (s[keep].sum() + knn.reg)
    assert knn.predict_index([u], [i])[0] == pytest.approx(np.clip(want, 1, 5), abs=1e-5)
    np.testing.assert_allclose(knn.predict_all()[users, items],
                               knn.predict_index(users, items), atol=1e-5)


@needs_data
def test_item_knn_and_ranking_on_u1_subset(u1):
    from boltzkit.recommend import ItemKNN, Popularity
    from boltzkit.recommend.evaluate import evaluate_recommender

    full, val_full = u1.train.holdout(0.1, seed=0)
    assert len(full) + len(val_full) == len(u1.train)
    # the first 300 users and 800 items keep the test fast
    def small(r):
        return r.subset(np.flatnonzero((r.users < 300) & (r.items < 800)))

    tr, val = small(full), small(val_full)
    key = np.asarray(u1.n_items, np.int64)
    assert not np.intersect1d(full.users * key + full.items,
                              val_full.users * key + val_full.items).size
    bias = BiasBaseline().fit(tr.users, tr.items, tr.ratings, u1.n_users, u1.n_items)
    knn = ItemKNN().fit(tr.users, tr.items, tr.ratings, u1.n_users, u1.n_items)
    b = evaluate_recommender(bias, tr, val, ["rmse", "ndcg"])
    k = evaluate_recommender(knn, tr, val, ["rmse", "mae", "precision", "recall", "ndcg"])
    assert k["rmse"] < b["rmse"] - 0.005
    pop = evaluate_recommender(Popularity().fit(tr.users, tr.items, tr.ratings, u1.n_users,
                                                u1.n_items), tr, val, ["ndcg"])
    assert 0 < b["ndcg@10"] < pop["ndcg@10"] < 1  # popularity is a strong top-N baseline
    assert set(k) >= {"precision@10", "recall@10", "ndcg@10", "n_ranked_users"}
    with pytest.raises(ConfigError, match="unknown recommender metric"):
        evaluate_recommender(knn, tr, val, ["auc"])


# ----------------------------------------------------------------------------- CLI, configs
@needs_data
def test_boltzkit_train_and_evaluate_cf_rbm(tmp_path, capsys):
    import json

    from boltzkit.cli import main

    out = tmp_path / "cf.safetensors"
    assert main(["train", "--model", "cf-rbm", "--dataset", "ml-100k", "--data-dir", str(ML100K),
                 "--fold", "2", "--item-based", "--n-hidden", "10", "--epochs", "1",
                 "--batch-size", "50", "--out", str(out), "--quiet"]) == 0
    final = json.loads(capsys.readouterr().out)["final"]
    assert 0.8 < final["test_rmse"] < 1.2
    m = load_model(out)
    assert m.item_based and m.info["fold"] == "u2"
    assert main(["evaluate", str(out), "--dataset", "ml-100k", "--data-dir", str(ML100K),
                 "--fold", "2", "--metrics", "rmse,mae,ndcg", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["rmse"] == pytest.approx(final["test_rmse"]) and 0 < res["ndcg@10"] < 1
    assert res["fold"] == "u2" and "precision@10" not in res
    assert main(["evaluate", str(out), "--data-dir", str(ML100K)]) == 0  # model's fold, rmse
    assert "rmse" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--data-dir", str(ML100K), "--metrics", "auc"]) == 2
    assert "unknown recommender metric" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--data-dir", str(ML100K), "--fold", "c"]) == 2
    assert "unknown ml-100k split" in capsys.readouterr().err
    assert main(["train", "--model", "cf-rbm", "--dataset", "digits", "--out",
                 str(tmp_path / "x.safetensors"), "--quiet"]) == 2
    assert "cf-rbm trains on MovieLens" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cf-rbm-ml100k.toml", "like-rbm-ml100k.toml"])
def test_shipped_recommender_configs_serve_the_command_line_and_the_api(name):
    from boltzkit.cli import build_parser, load_config_file, resolve_train_config
    from boltzkit.errors import ConfigError
    from boltzkit.training.run import api_run

    path = Path(__file__).resolve().parents[1] / "examples" / "configs" / name
    cfg = load_config_file(path)  # valid for `boltzkit train --config`
    assert cfg["model"] == "cf-rbm"
    resolve_train_config(build_parser().parse_args(["train", "--config", str(path)]))
    where = ("model", "dataset", "data_dir", "fold", "out")
    run = api_run("cf-rbm", {k: v for k, v in cfg.items() if k not in where})  # and the API's
    assert run["cf_mode"] == cfg.get("cf_mode", "softmax")
    with pytest.raises(ConfigError, match="the data is passed in"):
        api_run("cf-rbm", cfg)


def test_bad_rating_inputs():
    m, users, items, ratings = _tiny_model()
    with pytest.raises(DataError, match="2 training pairs but 1 ratings"):
        m.set_training_ratings([0, 1], [0, 1], [3.0])
    with pytest.raises(DataError, match="indices must lie in"):
        m.set_training_ratings([0, 9], [0, 1], [3.0, 4.0])
    with pytest.raises(DataError, match="unknown item 99"):
        m.predict([1], [99])
    with pytest.raises(DataError, match="test set is empty"):
        from boltzkit.recommend.evaluate import evaluate_model

        evaluate_model(m, _ratings([], [], [], 6, 8))


def test_mf_als_reaches_a_stationary_point():
    from boltzkit.recommend import MatrixFactorization

    rng = np.random.default_rng(1)
    users, items = np.nonzero(rng.random((25, 15)) < 0.5)
    ratings = torch.as_tensor(rng.integers(1, 6, len(users)), dtype=torch.float64)
    u, i = torch.as_tensor(users), torch.as_tensor(items)

    def objective(mf):
        params = [t.detach().clone().double().requires_grad_() for t in (mf.P, mf.Q, mf.bu,
                                                                         mf.bi)]
        p, q, bu, bi = params
        pred = mf.mu + bu[u] + bi[i] + (p[u] * q[i]).sum(-1)
        loss = ((pred - ratings) ** 2).sum() + 0.2 * (
            (p[u] ** 2).sum() + (q[i] ** 2).sum() + (bu[u] ** 2).sum() + (bi[i] ** 2).sum())
        loss.backward()
        return float(loss.detach()), max(float(t.grad.abs().max()) for t in params)

    als = MatrixFactorization(rank=3, reg=0.2, epochs=200, solver="als")
    loss, grad = objective(als.fit(users, items, ratings.numpy(), 25, 15))
    assert grad < 1e-3  # a stationary point of the regularised squared error
    adam = MatrixFactorization(rank=3, reg=0.2, epochs=150).fit(users, items, ratings.numpy(),
                                                                25, 15)
    assert loss <= objective(adam)[0] + 1e-6
    with pytest.raises(ConfigError, match="unknown MF solver"):
        MatrixFactorization(solver="sgd")


def test_ml100k_bad_files_name_the_line(tmp_path):
    d = tmp_path / "ml-100k"
    d.mkdir()
    (d / "u.data").write_text("1\t1\t5\t1\n2\t1\t3\t2\n2\t2\t4\t3\n")
    (d / "u1.test").write_text("2\t2\t4\t3\n")
    (d / "u1.base").write_text("1\t1\t5\t1\n2\t1\t3\n")
    with pytest.raises(DataError, match=r"u1\.base, line 2: expected 4 fields"):
        load_ml100k(tmp_path, 1)
    (d / "u1.base").write_text("1\t1\t5\t1\n2\t1\t9\t2\n")
    with pytest.raises(DataError, match=r"u1\.base, line 2: rating 9 is outside"):
        load_ml100k(tmp_path, 1)
    (d / "u1.base").write_text("1\t1\t5\t1\n7\t1\t3\t2\n")
    with pytest.raises(DataError, match="user id 7 does not appear"):
        load_ml100k(tmp_path, "u1")
    (d / "u1.base").write_text("1\t1\t5\t1\n2\t1\t3\t2\n")
    assert len(load_ml100k(tmp_path, "1").train) == 2
    with pytest.raises(DataError, match="ua.base does not exist"):
        load_ml100k(tmp_path, "a")
