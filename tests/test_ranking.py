"""Top-N ranking: metrics against hand-computed values, the ranking RBM, the CSV loader, the
recommend command's batch CSV."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from boltzkit.errors import ConfigError, DataError
from boltzkit.recommend.topn import pair_matrix, top_n, topn_metrics

L3 = math.log2(3)


# ----------------------------------------------------------------------------- metrics
def _hand_case():
    """Four users, five items, lists of three (module docs of boltzkit.recommend.topn)."""
    scores = np.array([[0.9, 0.5, 0.5, 0.5, 0.1],    # ties 1, 2, 3: lower index first
                       [0.1, 0.2, 0.3, 0.4, 0.5],
                       [0.0, 0.0, 0.0, 0.0, 0.0],    # all tied
                       [0.0, 0.0, 0.0, 0.2, 0.7]])
    seen = pair_matrix([0, 3, 3, 3], [0, 0, 1, 2], 4, 5)
    relevant = pair_matrix([0, 0, 1, 1, 1, 1, 3], [2, 4, 4, 3, 0, 1, 3], 4, 5)
    return scores, seen, relevant


def test_top_n_ties_exclusion_and_padding():
    scores, seen, _ = _hand_case()
    top = top_n(scores, 3, exclude=seen)
    np.testing.assert_array_equal(top, [[1, 2, 3], [4, 3, 2], [0, 1, 2], [4, 3, -1]])
    # dense and sparse exclusion agree; nothing excluded is ever returned
    np.testing.assert_array_equal(top_n(scores, 3, exclude=seen.toarray()), top)
    assert not any(seen[u, i] for u in range(4) for i in top[u] if i >= 0)
    with pytest.raises(DataError, match="NaN"):
        top_n(np.array([[np.nan, 1.0]]), 1)
    with pytest.raises(ConfigError, match="positive integer"):
        top_n(scores, 0)


def test_metrics_by_hand_with_ties_and_skipped_users():
    scores, seen, relevant = _hand_case()
    r = topn_metrics(top_n(scores, 3, exclude=seen), relevant)
    # user 0: list (1, 2, 3), relevant {2, 4}: hit at rank 2
    # user 1: list (4, 3, 2), relevant {0, 1, 3, 4}: hits at ranks 1, 2
    # user 2: no relevant item -> skipped (its list still counts for coverage)
    # user 3: list (4, 3, -), relevant {3}: hit at rank 2
    ndcg = [(1 / L3) / (1 + 1 / L3), (1 + 1 / L3) / (1 + 1 / L3 + 1 / 2), (1 / L3) / 1]
    assert r["ndcg@3"] == pytest.approx(np.mean(ndcg), abs=1e-12)
    assert r["precision@3"] == pytest.approx(np.mean([1 / 3, 2 / 3, 1 / 3]), abs=1e-12)
    assert r["recall@3"] == pytest.approx(np.mean([1 / 2, 2 / 4, 1 / 1]), abs=1e-12)
    # AP@3 = sum_k hit_k * precision@k / min(3, |R|)
    assert r["map@3"] == pytest.approx(np.mean([(1 / 2) / 2, (1 + 1) / 3, (1 / 2) / 1]),
                                       abs=1e-12)
    assert r["coverage@3"] == pytest.approx(5 / 5)  # item 0 only in the skipped user's list
    assert (r["n_ranked_users"], r["n_skipped_users"]) == (3, 1)
    by_rel = topn_metrics(top_n(scores, 3, exclude=seen), relevant, ap_normaliser="relevant")
    assert by_rel["map@3"] == pytest.approx(np.mean([(1 / 2) / 2, (1 + 1) / 4, (1 / 2) / 1]),
                                            abs=1e-12)


def test_metrics_perfect_list_and_no_relevant_user():
    relevant = pair_matrix([0, 0], [3, 1], 1, 5)
    perfect = topn_metrics(np.array([[3, 1, 0]]), relevant)
    assert perfect["ndcg@3"] == pytest.approx(1.0) and perfect["recall@3"] == 1.0
    assert perfect["map@3"] == pytest.approx(1.0) and perfect["coverage@3"] == 3 / 5
    swapped = topn_metrics(np.array([[0, 3, 1]]), relevant)
    assert swapped["ndcg@3"] == pytest.approx((1 / L3 + 1 / 2) / (1 + 1 / L3))
    with pytest.raises(DataError, match="no user has a relevant"):
        topn_metrics(np.array([[0, 1, 2]]), sp.csr_matrix((1, 5), dtype=bool))


# ----------------------------------------------------------------------------- the model
def _cfg(**overrides) -> dict:
    """``boltzkit train`` options for a small rank-rbm (the rest: the kind's defaults)."""
    return {"n_hidden": 4, "epochs": 60, "batch_size": 4, "lr": 0.1, "momentum": 0.5,
            "method": "cd", "k": 1, **overrides}


def _two_tastes():
    """Users 1-10 pick items 100-102, users 11-20 items 103-105; user 21 has 100 and 101,
    user 22 has 103 and 104, user 23 only a zero-weight row.  By construction user 21's
    best unseen item is 102 and user 22's is 105, while popularity prefers 103/104 (11
    picks each) for user 21."""
    from boltzkit.data.interactions import interactions_from_arrays

    rows = [(u, i) for u in range(1, 11) for i in (100, 101, 102)]
    rows += [(u, i) for u in range(11, 21) for i in (103, 104, 105)]
    rows += [(21, 100), (21, 101), (22, 103), (22, 104)]
    users, items = zip(*rows, strict=True)
    weights = [1.0] * len(rows)
    return interactions_from_arrays([*users, 23], [*items, 100], [*weights, 0.0])


@pytest.mark.parametrize("item_based", [False, True])
def test_top1_known_by_construction(item_based):
    from boltzkit.recommend.rank_rbm import PREDICTIONS, fit_rank_rbm

    data = _two_tastes()
    model, _ = fit_rank_rbm(data, _cfg(item_based=item_based))
    for how in PREDICTIONS:
        users = model._user_index([21, 22])
        items, _, fallback = model.recommend_index(users, 1, prediction=how)
        got = model.item_ids.numpy()[items[:, 0]].tolist()
        assert got == [102, 105], (how, got)
        assert not fallback.any()
    # the user whose only row has weight 0 is known but empty: popularity fallback (items
    # 100, 101, 103, 104 have 11 picks each: ties go to the lower id)
    recs = model.recommend(23, top=3)
    assert [r["item"] for r in recs] == [100, 101, 103] and recs[0]["fallback"] == "popularity"
    assert recs[0]["score"] == pytest.approx(11 / 23)


def test_seen_items_are_never_returned():
    from boltzkit.recommend.rank_rbm import fit_rank_rbm

    model, _ = fit_rank_rbm(_two_tastes(), _cfg(epochs=3))
    seen = model.interaction_matrix()
    users = np.arange(model.n_users)
    for how in ("mean-field", "exact"):
        items, scores, _ = model.recommend_index(users, model.n_items, prediction=how)
        for u in users:
            listed = items[u][items[u] >= 0]
            assert not set(listed) & set(seen[u].indices)
            assert len(listed) == model.n_items - seen[u].nnz  # everything else is ranked
            s = scores[u][items[u] >= 0]
            assert np.all(np.diff(s) <= 0)
    full, _, _ = model.recommend_index(users, model.n_items, include_seen=True)
    assert (full >= 0).all()  # with include_seen every item is ranked
    recs = model.recommend(21, top=6, include_seen=True)
    assert {r["item"] for r in recs if r["seen"]} == {100, 101}


def test_ranking_is_invariant_to_row_order(tmp_path):
    from boltzkit.data.interactions import load_interactions_csv
    from boltzkit.recommend.rank_rbm import fit_rank_rbm

    rng = np.random.default_rng(0)
    rows = sorted({(int(u), int(i)) for u, i in zip(rng.integers(1, 30, 200),
                                                    rng.integers(1, 40, 200), strict=True)})
    order = rng.permutation(len(rows))
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in rows))
    b.write_text("".join(f"{rows[j][0]},{rows[j][1]}\n" for j in order))
    ma, _ = fit_rank_rbm(load_interactions_csv(a), _cfg(epochs=5))
    mb, _ = fit_rank_rbm(load_interactions_csv(b), _cfg(epochs=5))
    users = np.arange(ma.n_users)
    np.testing.assert_array_equal(ma.recommend_index(users, 10)[0],
                                  mb.recommend_index(users, 10)[0])
    # and scoring users in another order gives the same rows
    perm = rng.permutation(ma.n_users)
    np.testing.assert_allclose(ma.scores_index(perm), ma.scores_index(users)[perm], rtol=1e-12)


def test_conditionals_match_free_energy_differences():
    import torch

    from boltzkit.recommend.rank_rbm import RankRBM

    torch.manual_seed(0)
    m = RankRBM(3, 7, n_hidden=5, seed=3, init_std=0.5)
    with torch.no_grad():
        m.visible.bias.normal_(generator=torch.Generator().manual_seed(1))
        m.hidden.bias.normal_(generator=torch.Generator().manual_seed(2))
    v = (torch.rand(4, 7, generator=torch.Generator().manual_seed(4)) < 0.4).float()
    exact = m.conditional_logits(v, prediction="exact", chunk=7)  # several chunks
    mf = m.conditional_logits(v, prediction="mean-field")
    for i in range(7):
        on, off = v.clone(), v.clone()
        on[:, i], off[:, i] = 1.0, 0.0
        with torch.no_grad():
            expect = m.free_energy(off) - m.free_energy(on)  # log p(v_i=1|.) / p(v_i=0|.)
        torch.testing.assert_close(exact[:, i], expect, rtol=1e-5, atol=1e-5)
    w, b, c = m.connection.weights, m.visible.bias, m.hidden.bias
    torch.testing.assert_close(mf, torch.sigmoid(v @ w + c) @ w.t() + b)
    # a subset of units gives the same columns
    units = torch.tensor([5, 0, 3])
    torch.testing.assert_close(m.conditional_logits(v, units, "exact"), exact[:, units])


def test_model_file_round_trip(tmp_path):
    from safetensors import safe_open

    from boltzkit.io import load_model, save_model
    from boltzkit.recommend.rank_rbm import RankRBM, fit_rank_rbm

    model, _ = fit_rank_rbm(_two_tastes(), _cfg(epochs=3, prediction="exact"))
    path = save_model(model, tmp_path / "rank.safetensors")
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
    assert names == {"weights", "visible_bias", "hidden_bias", "user_ids", "item_ids",
                     "interactions"}
    back = load_model(path)
    assert isinstance(back, RankRBM) and back.prediction == "exact"
    assert back.info["min_weight"] == 0.0
    for u in (21, 22, 23):
        assert back.recommend(u, top=4, explain=True) == model.recommend(u, top=4, explain=True)


def test_explain_names_the_seen_items_of_the_same_taste():
    from boltzkit.recommend.rank_rbm import fit_rank_rbm

    model, _ = fit_rank_rbm(_two_tastes(), _cfg())
    because = model.recommend(21, top=1, explain=True)[0]["because"]
    assert {b["item"] for b in because} == {100, 101}


# ----------------------------------------------------------------------------- baselines
def test_ease_closed_form_and_cosine_knn_by_hand():
    from boltzkit.recommend import EASE, CosineItemKNN

    users = np.array([0, 0, 1, 1, 1, 2, 3])
    items = np.array([0, 1, 0, 1, 2, 2, 3])
    ease = EASE(lam=2.0).fit(users, items, 4, 4)
    g = ease.x.T @ ease.x
    assert np.allclose(np.diag(ease.b), 0)
    # stationarity of |X - XB|^2 + lam |B|^2 with diag(B) = 0: off-diagonal gradient is 0
    grad = g @ ease.b - g + 2.0 * ease.b
    assert np.allclose(grad - np.diag(np.diag(grad)), 0, atol=1e-12)
    knn = CosineItemKNN(k=None).fit(users, items, 4, 4)
    # items 0 and 1 share users 0 and 1: cosine 1; items 1 and 2 share user 1: 1/sqrt(2*2)
    assert knn.sim[0, 1] == pytest.approx(1.0) and knn.sim[1, 2] == pytest.approx(0.5)
    assert knn.predict_all()[2, 0] == pytest.approx(knn.sim[0, 2])  # user 2 has item 2 only
    one = CosineItemKNN(k=1).fit(users, items, 4, 4)
    assert (one.sim > 0).sum(1).max() == 1
    with pytest.raises(ConfigError):
        EASE(lam=0)


# ----------------------------------------------------------------------------- CSV loader
@pytest.mark.parametrize("text, line, match", [
    ("1,2\n3\n", 2, "expected user,item or user,item,weight"),
    ("user,item\n1,2\n1,2,3,4\n", 3, "found 4"),
    ("1,2\nx,3\n", 2, "integer ids"),
    ("1,2,1\n1,3,abc\n", 2, "weight 'abc' is not a finite number"),
    ("1,2,1\n\n1,3,inf\n", 3, "not a finite number"),
    ("1,2,1\n1,3\n", 2, "give every row a weight or none"),
    ("1,2.5\n", 1, "integer ids"),
])
def test_csv_errors_name_the_1_based_line(tmp_path, text, line, match):
    from boltzkit.data.interactions import load_interactions_csv

    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=rf"bad\.csv, line {line}: .*{match}"):
        load_interactions_csv(path)


def test_csv_header_weights_and_min_weight(tmp_path):
    from boltzkit.data.interactions import load_interactions_csv

    path = tmp_path / "plays.csv"
    path.write_text("user,item,plays\n7,30,2\n5,10,1\n7,30,1\n5,20,0\n9,10,-1\n")
    data = load_interactions_csv(path)
    assert data.user_ids.tolist() == [5, 7, 9] and data.item_ids.tolist() == [10, 20, 30]
    assert len(data) == 5  # rows as read
    u, i = data.pairs()  # weights summed per pair; > 0 counts
    assert list(zip(data.user_ids[u], data.item_ids[i], strict=True)) == [(5, 10), (7, 30)]
    u, i = data.pairs(min_weight=3)  # 7,30 sums to 3
    assert list(zip(data.user_ids[u], data.item_ids[i], strict=True)) == [(7, 30)]
    with pytest.raises(DataError, match="no .user, item. pair has a positive weight >= 5"):
        data.pairs(min_weight=5)
    for text, match in (("", "holds no interactions"), ("user,item\n", "holds no interactions")):
        path.write_text(text)
        with pytest.raises(DataError, match=match):
            load_interactions_csv(path)
    with pytest.raises(DataError, match="does not exist"):
        load_interactions_csv(tmp_path / "missing.csv")


def test_split_per_user_is_stratified_and_seeded():
    from boltzkit.data.movielens import Ratings

    counts = [1, 2, 4, 7, 20]
    users = np.repeat(np.arange(5), counts)
    r = Ratings(users, np.arange(len(users)), np.ones(len(users), np.float32),
                np.zeros(len(users), np.int64), 5, len(users))
    rest, held = r.split_per_user(0.25, seed=3)
    got = np.bincount(held.users, minlength=5).tolist()
    assert got == [int(np.floor(0.25 * c + 0.5)) for c in counts] == [0, 1, 1, 2, 5]
    assert len(rest) + len(held) == len(r) and not set(rest.items) & set(held.items)
    again = r.split_per_user(0.25, seed=3)[1]
    np.testing.assert_array_equal(again.items, held.items)
    assert not np.array_equal(r.split_per_user(0.25, seed=4)[1].items, held.items)


# ----------------------------------------------------------------------------- the CLI
def _train_csv(tmp_path, capsys) -> tuple:
    from boltzkit.cli import main

    csv = tmp_path / "clicks.csv"
    rows = [(u, i) for u in range(1, 11) for i in (100, 101, 102)]
    rows += [(u, i) for u in range(11, 21) for i in (103, 104, 105)]
    rows += [(21, 100), (21, 101), (22, 103), (22, 104), (23, 100)]
    csv.write_text("user,item,weight\n" + "".join(
        f"{u},{i},{0 if u == 23 else 1}\n" for u, i in rows))
    out = tmp_path / "rank.safetensors"
    assert main(["train", "--model", "rank-rbm", "--dataset", str(csv), "--n-hidden", "4",
                 "--epochs", "60", "--batch-size", "4", "--lr", "0.1", "--method", "cd",
                 "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    return out, rows


def test_cli_recommend_all_users_writes_the_documented_csv(tmp_path, capsys):
    from boltzkit.cli import main

    model_path, rows = _train_csv(tmp_path, capsys)
    recs = tmp_path / "recs.csv"
    assert main(["recommend", str(model_path), "--all-users", "--top", "3",
                 "--out", str(recs)]) == 0
    lines = recs.read_text().splitlines()
    assert lines[0] == "user_id,rank,item_id,score"
    table = [line.split(",") for line in lines[1:]]
    seen = {(u, i) for u, i in rows if u != 23}
    by_user: dict[int, list] = {}
    for u, rank, i, s in table:
        by_user.setdefault(int(u), []).append((int(rank), int(i), float(s)))
    assert sorted(by_user) == list(range(1, 24))  # every user, raw ids
    for u, entries in by_user.items():
        assert [r for r, _, _ in entries] == list(range(1, len(entries) + 1))
        assert not {(u, i) for _, i, _ in entries} & seen
        scores = [s for _, _, s in entries]
        assert scores == sorted(scores, reverse=True)
    assert [i for _, i, _ in by_user[21]][0] == 102 and [i for _, i, _ in by_user[22]][0] == 105
    assert len(by_user[1]) == 3 and len(lines) == 1 + 23 * 3
    assert main(["recommend", str(model_path), "--all-users"]) == 2
    assert "--out" in capsys.readouterr().err


def test_cli_recommend_one_user_errors_and_fallback(tmp_path, capsys):
    from boltzkit.cli import main

    model_path, _ = _train_csv(tmp_path, capsys)
    assert main(["recommend", str(model_path), "--user", "21", "--top", "2", "--explain"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("top 2 for user 21 (p(pick)):") and "(item 102)" in out
    assert "like 100 (item 100" in out  # the explanation (no titles in a CSV: ids)
    assert main(["recommend", str(model_path), "--user", "99"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "unknown user 99" in err
    assert main(["recommend", str(model_path), "--user", "23", "--json"]) == 0
    assert '"fallback": "popularity"' in capsys.readouterr().out
    assert main(["recommend", str(model_path), "--user", "23"]) == 0
    assert "no interactions in the training data" in capsys.readouterr().err
    assert main(["evaluate", str(model_path)]) == 2
    assert "not a MovieLens split" in capsys.readouterr().err


def test_cli_refuses_options_a_rank_rbm_cannot_honour(tmp_path, capsys):
    from boltzkit.cli import main

    csv = tmp_path / "c.csv"
    csv.write_text("1,2\n2,3\n")
    for extra, match in ((["--visible", "gaussian"], "rank-rbm does not use --visible"),
                         (["--fold", "2"], "drop --fold"),
                         (["--objective", "beam"], "rank-rbm does not use --objective")):
        assert main(["train", "--model", "rank-rbm", "--dataset", str(csv), "--epochs", "1",
                     "--out", str(tmp_path / "m.safetensors"), "--quiet", *extra]) == 2
        assert match in capsys.readouterr().err
    assert main(["train", "--model", "rank-rbm", "--dataset", "digits", "--quiet"]) == 2
    assert "interaction CSV" in capsys.readouterr().err


# ----------------------------------------------------------------------------- MovieLens
def _ml100k():
    from test_recommend import ML100K

    if ML100K is None:
        pytest.skip("ml-100k not found (set BOLTZKIT_DATA)")
    return ML100K


def test_shipped_config_trains_ranks_and_evaluates_on_ml100k(tmp_path, capsys):
    from boltzkit.cli import main

    root = _ml100k()
    out = tmp_path / "rank.safetensors"
    config = "examples/configs/rank-rbm-ml100k.toml"
    assert main(["train", "--config", config, "--data-dir", str(root), "--fold", "2",
                 "--epochs", "2", "--average-from", "1", "--n-hidden", "20", "--out", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data-dir", str(root), "--json"]) == 0
    res = __import__("json").loads(capsys.readouterr().out)
    assert res["fold"] == "u2" and res["ndcg@10"] > 0.2  # popularity alone: about 0.22
    assert {"precision@10", "recall@10", "map@10", "coverage@10", "n_skipped_users"} <= set(res)
    assert main(["recommend", str(out), "--user", "42", "--top", "3"]) == 0
    assert "top 3 for user 42 (p(pick)):" in capsys.readouterr().out


def test_stratified_fold_reloads_and_counts_every_test_item(tmp_path):
    from boltzkit.data.movielens import load_movielens
    from boltzkit.recommend.evaluate import ranking_metrics

    root = _ml100k()
    d = load_movielens("ml-100k", root, "stratified", seed=7)
    assert d.split == "stratified-7" and len(d.train) + len(d.test) == 100_000
    again = load_movielens("ml-100k", root, d.split)
    np.testing.assert_array_equal(again.test.items, d.test.items)
    n = np.bincount(d.train.users, minlength=d.n_users) + np.bincount(d.test.users,
                                                                      minlength=d.n_users)
    assert (np.bincount(d.test.users, minlength=d.n_users) == np.floor(n / 4 + 0.5)).all()
    counts = np.bincount(d.train.items, minlength=d.n_items).astype(float)
    pop = ranking_metrics(np.broadcast_to(counts, (d.n_users, d.n_items)), d.train, d.test,
                          threshold=None)
    assert pop["n_skipped_users"] == 0 and pop["n_ranked_users"] == d.n_users
    with pytest.raises(ConfigError, match="stratified-SEED"):
        load_movielens("ml-100k", root, "stratified7")
