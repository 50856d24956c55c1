"""Beyond-accuracy metrics on a hand case."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recmig.evaluation.beyond import beyond_accuracy, item_popularity


def test_popularity_counts_distinct_users_of_the_catalogue_only():
    train = pd.DataFrame({"user": [0, 0, 1, 2, 3, 3], "item": [5, 5, 5, 6, 9, 5]})
    counts, n_users = item_popularity(train, np.array([5, 6, 7]))
    assert counts.tolist() == [3, 1, 0]  # user 0 twice on item 5 counts once
    assert n_users == 4  # users 0-3 all touched the catalogue (item 9 is outside it)


def test_coverage_novelty_and_average_popularity():
    counts, n_users = np.array([4, 2, 0]), 4
    top = np.array([[0, 1, 2], [0, 2, 1]])
    got = beyond_accuracy(top, counts, n_users, k=2)
    assert got["coverage@2"] == pytest.approx(1.0)  # positions 0, 1, 2 all appear
    smoothed = [(4 + 1) / 5, (2 + 1) / 5, (4 + 1) / 5, (0 + 1) / 5]  # lists [0, 1], [0, 2]
    assert got["novelty@2"] == pytest.approx(np.mean([-math.log2(p) for p in smoothed]))
    assert got["arp@2"] == pytest.approx(np.mean([1.0, 0.5, 1.0, 0.0]))
    same = beyond_accuracy(np.array([[0, 1], [0, 1]]), counts, n_users, k=2)
    assert same["coverage@2"] == pytest.approx(2 / 3)
