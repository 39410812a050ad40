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
