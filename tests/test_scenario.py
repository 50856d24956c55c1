import numpy as np
import pandas as pd
import pytest

from recmig.data.scenario import (
    COLD_TEST,
    COLD_VAL,
    SOURCE,
    TARGET,
    ScenarioConfig,
    build_scenario,
)


def test_no_cold_target_interaction_reaches_training(data, scenario_cfg):
    s = build_scenario(data, scenario_cfg)
    cold_users = set(s.cold["user"])
    assert cold_users, "the fixture must produce cold users"
    train_target = s.train[s.train["domain"] == TARGET]
    assert not set(train_target["user"]) & cold_users
    # ... but their source history is kept: that is what transfer uses.
    assert cold_users <= set(s.train.loc[s.train["domain"] == SOURCE, "user"])


def test_splits_are_disjoint_and_complete(data, scenario_cfg):
    s = build_scenario(data, scenario_cfg)
    warm_users, cold_users = set(s.warm["user"]), set(s.cold["user"])
    assert not warm_users & cold_users
    val_users = set(s.cold.loc[s.cold["group"] == COLD_VAL, "user"])
    test_users = set(s.cold.loc[s.cold["group"] == COLD_TEST, "user"])
    assert val_users and test_users and not val_users & test_users
    train_pairs = set(zip(s.train["user"], s.train["item"], strict=True))
    held = set(zip(s.warm["user"], s.warm["val_item"], strict=True))
    held |= set(zip(s.warm["user"], s.warm["test_item"], strict=True))
    held |= set(zip(s.cold["user"], s.cold["item"], strict=True))
    assert not train_pairs & held
    # Every interaction of the dataset lands in exactly one place.
    assert len(train_pairs) + len(held) == len(data.interactions)


def test_warm_holdout_is_chronological(data, scenario_cfg):
    s = build_scenario(data, scenario_cfg)
    ids = s.items["item_id"].to_numpy()
    inter = data.interactions.set_index(["user_id", "item_id"])["timestamp"]
    for row in s.warm.itertuples():
        user = s.user_ids[row.user]
        train_items = s.train[(s.train["user"] == row.user) & (s.train["domain"] == TARGET)]
        last_train = train_items["timestamp"].max()
        t_val = inter[(user, ids[row.val_item - 1])]
        t_test = inter[(user, ids[row.test_item - 1])]
        assert last_train <= t_val <= t_test


def test_same_seed_same_split_other_seed_other_split(data, scenario_cfg):
    a = build_scenario(data, scenario_cfg)
    b = build_scenario(data, scenario_cfg)
    pd.testing.assert_frame_equal(a.train, b.train)
    pd.testing.assert_frame_equal(a.cold, b.cold)
    other = ScenarioConfig(**{**scenario_cfg.__dict__, "seed": 2})
    c = build_scenario(data, other)
    assert set(a.cold["user"]) != set(c.cold["user"])


def test_cold_fraction_and_statistics(data, scenario_cfg):
    s = build_scenario(data, scenario_cfg)
    overlap = s.stats["overlap/users"]
    n_cold = s.stats["cold/val_users"] + s.stats["cold/test_users"]
    assert n_cold == round(0.3 * overlap)
    assert s.stats["source/items"] + s.stats["target/items"] == s.num_items
    assert (s.item_domain[1:] >= 0).all()
    assert np.array_equal(s.catalog(SOURCE), np.arange(1, s.stats["source/items"] + 1))


def test_rating_threshold_and_k_core(make_data):
    data = make_data(n_users=80, per_user=12)
    cfg = ScenarioConfig(
        source_domains=["Books"], target_domains=["Films"], min_rating=3, user_core=4, item_core=4
    )
    s = build_scenario(data, cfg)
    full = data.interactions[data.interactions["rating"] >= 3]
    assert s.stats["source/interactions"] + s.stats["target/interactions"] <= len(full)
    # k-core holds inside each domain on the filtered interactions (train + held out).
    everything = pd.concat(
        [
            s.train[["user", "item", "domain"]],
            s.cold.assign(domain=TARGET)[["user", "item", "domain"]],
            s.warm.assign(domain=TARGET).rename(columns={"val_item": "item"})[
                ["user", "item", "domain"]
            ],
            s.warm.assign(domain=TARGET).rename(columns={"test_item": "item"})[
                ["user", "item", "domain"]
            ],
        ]
    )
    for _, part in everything.groupby("domain"):
        assert part.groupby("user").size().min() >= 4
        assert part.groupby("item").size().min() >= 4


def test_single_domain_scenario_has_no_cold_users(data):
    s = build_scenario(data, ScenarioConfig(cold_fraction=0.5))
    assert len(s.cold) == 0 and not s.has_source
    assert s.stats["target/items"] == s.num_items


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source_domains": ["Books"], "target_domains": ["Cartoons"]}, "Cartoons"),
        (
            {"source_domains": ["Books"], "target_domains": ["Films"], "domain_field": "colour"},
            "domain_field='colour'",
        ),
        (
            {"source_domains": ["Books"], "target_domains": ["Films"], "domain_field": None},
            "no `domain` column",
        ),
    ],
)
def test_bad_domain_options_name_the_option(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_scenario(data, ScenarioConfig(**kwargs))


def test_no_overlapping_users_is_an_error(data):
    inter = data.interactions
    books = inter["item_id"].str[1:].astype(int) < 20
    # Users 0-29 keep only books, the others only films: no one is in both domains.
    user_num = inter["user_id"].str[1:].astype(int)
    data.interactions = inter[(books & (user_num < 30)) | (~books & (user_num >= 30))]
    with pytest.raises(ValueError, match="overlapping users"):
        build_scenario(data, ScenarioConfig(source_domains=["Books"], target_domains=["Films"]))


def test_invalid_config_values():
    with pytest.raises(ValueError, match="cold_fraction"):
        ScenarioConfig(cold_fraction=1.5)
    with pytest.raises(ValueError, match="both source_domains and target_domains"):
        ScenarioConfig(source_domains=["A"], target_domains=["A"])
