import numpy as np
import pandas as pd
import pytest

from recmig.data.scenario import (
    COLD_TEST,
    COLD_VAL,
    SOURCE,
    TARGET,
    Scenario,
    ScenarioConfig,
    _ratio_counts,
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
    held = set(zip(s.warm["user"], s.warm["item"], strict=True))
    assert all(sorted(v) == ["test", "val"] for v in s.warm.groupby("user")["split"].agg(list))
    held |= set(zip(s.cold["user"], s.cold["item"], strict=True))
    assert not train_pairs & held
    # Every interaction of the dataset lands in exactly one place.
    assert len(train_pairs) + len(held) == len(data.interactions)


def test_warm_holdout_is_chronological(data, scenario_cfg):
    s = build_scenario(data, scenario_cfg)
    ids = s.items["item_id"].to_numpy()
    inter = data.interactions.set_index(["user_id", "item_id"])["timestamp"]
    for u, rows in s.warm.groupby("user"):
        user = s.user_ids[u]
        train_items = s.train[(s.train["user"] == u) & (s.train["domain"] == TARGET)]
        last_train = train_items["timestamp"].max()
        held = rows.set_index("split")["item"]
        t_val = inter[(user, ids[held["val"] - 1])]
        t_test = inter[(user, ids[held["test"] - 1])]
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
            s.warm.assign(domain=TARGET)[["user", "item", "domain"]],
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


def test_no_overlapping_users_is_an_error_only_with_cold_users(data):
    inter = data.interactions
    books = inter["item_id"].str[1:].astype(int) < 20
    # Users 0-29 keep only books, the others only films: no one is in both domains.
    user_num = inter["user_id"].str[1:].astype(int)
    data.interactions = inter[(books & (user_num < 30)) | (~books & (user_num >= 30))]
    with pytest.raises(ValueError, match="no cold-start users to draw"):
        build_scenario(data, ScenarioConfig(source_domains=["Books"], target_domains=["Films"]))
    # Transfer through items only (disjoint users) is a valid scenario without cold users.
    items_only = ScenarioConfig(source_domains=["Books"], target_domains=["Films"], cold_fraction=0)
    s = build_scenario(data, items_only)
    assert s.stats["overlap/users"] == 0 and s.stats["warm/users"] > 0 and len(s.cold) == 0


def test_invalid_config_values():
    with pytest.raises(ValueError, match="cold_fraction"):
        ScenarioConfig(cold_fraction=1.5)
    with pytest.raises(ValueError, match="both source_domains and target_domains"):
        ScenarioConfig(source_domains=["A"], target_domains=["A"])


def test_time_windows_split_interactions_and_items_by_period(data):
    cfg = ScenarioConfig(time_split=0.6, source_domains=[], target_domains=[], seed=0)
    scenario = build_scenario(data, cfg)
    cut = data.interactions["timestamp"].quantile(0.6)
    ids = scenario.items["item_id"]
    source_items = set(ids.iloc[scenario.catalog(SOURCE) - 1])
    target_items = set(ids.iloc[scenario.catalog(TARGET) - 1])
    assert all(i.endswith("@earlier") for i in source_items)
    assert all(i.endswith("@later") for i in target_items)
    train = scenario.train
    by_side = train.groupby("domain")["timestamp"]
    assert by_side.max()[SOURCE] < cut <= by_side.min()[TARGET]
    # A movie in both windows is two items with one text.
    twins = {i.rsplit("@", 1)[0] for i in source_items} & {
        i.rsplit("@", 1)[0] for i in target_items
    }
    assert twins
    titles = scenario.items.set_index("item_id")["title"]
    for base in twins:
        assert titles[f"{base}@earlier"] == titles[f"{base}@later"]
    # Cold users are returning users: earlier history in training, later items held out.
    cold_users = set(scenario.cold["user"])
    assert cold_users and cold_users <= set(train.loc[train["domain"] == SOURCE, "user"])
    assert not (train["user"].isin(cold_users) & (train["domain"] == TARGET)).any()


def test_time_split_must_be_a_quantile():
    with pytest.raises(ValueError, match="time_split must be in"):
        ScenarioConfig(time_split=1.5)


def test_random_split_follows_recbole_ratios(make_data):
    data = make_data(n_users=50, per_user=30)
    cfg = ScenarioConfig(
        source_domains=["Books"],
        target_domains=["Films"],
        cold_fraction=0.0,
        warm_split="random",
        split_ratios=[8, 1, 1],  # normalised to 0.8 / 0.1 / 0.1
    )
    s = build_scenario(data, cfg)
    assert s.stats["cold/test_users"] == 0 and len(s.cold) == 0
    target_train = s.train[s.train["domain"] == TARGET].groupby("user").size()
    for u, rows in s.warm.groupby("user"):
        total = target_train[u] + len(rows)
        n_val, n_test = (rows["split"] == "val").sum(), (rows["split"] == "test").sum()
        expected_held = max(1, int(0.1 * total))
        assert (n_val, n_test) == (expected_held, expected_held), (u, total)
    # Random, not chronological: some test item is older than some training item.
    ts = s.train.set_index(["user", "item"])["timestamp"]
    times = data.interactions.set_index(["user_id", "item_id"])["timestamp"]
    ids = s.items["item_id"].to_numpy()
    older = [
        times[(s.user_ids[r.user], ids[r.item - 1])]
        < ts[r.user][s.train.loc[s.train["user"] == r.user, "item"]].max()
        for r in s.warm[s.warm["split"] == "test"].itertuples()
    ]
    assert any(older)
    assert _ratio_counts(5, [0.8, 0.1, 0.1]) == [3, 1, 1]  # RecBole's rounding
    assert _ratio_counts(20, [0.8, 0.1, 0.1]) == [16, 2, 2]


def test_a_saved_scenario_reads_back_exactly(data, scenario_cfg, tmp_path):
    """The snapshot a run leaves (recmig.data.scenario_snapshot) is the scenario it used,
    table for table and array for array; a missing or damaged one reads as None (rebuild)."""
    from dataclasses import fields

    from recmig.data import scenario_snapshot
    from recmig.data.scenario_snapshot import load_scenario, save_scenario

    # Every field of Scenario is saved (a new field must be added to the snapshot too).
    saved = {*scenario_snapshot.TABLES, *scenario_snapshot.ARRAYS, *scenario_snapshot.META_FIELDS}
    assert saved | {"user_ids"} == {f.name for f in fields(Scenario)}
    scenario = build_scenario(data, scenario_cfg)
    save_scenario(scenario, tmp_path / "scenario")
    again = load_scenario(tmp_path / "scenario")
    for field in fields(scenario):
        mine, theirs = getattr(scenario, field.name), getattr(again, field.name)
        if isinstance(mine, pd.DataFrame):
            pd.testing.assert_frame_equal(theirs, mine)
        elif isinstance(mine, np.ndarray):
            assert theirs.dtype == mine.dtype and (theirs == mine).all(), field.name
        else:
            assert theirs == mine, field.name
    assert load_scenario(tmp_path / "nothing") is None
    (tmp_path / "scenario" / "train.parquet").write_bytes(b"cut short")
    assert load_scenario(tmp_path / "scenario") is None
