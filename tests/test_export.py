"""`recmig export --format recbole`: the files, read back with recmig's own RecBole reader, hold
exactly the split recmig trains and evaluates on (no RecBole install needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import custom_table_overrides

from recmig.config import compose_config
from recmig.data.loaders import ScenarioTensors
from recmig.data.readers import read_atomic
from recmig.data.scenario import COLD_TEST, COLD_VAL, TARGET, Scenario, build_scenario
from recmig.export import MANIFEST, export_recbole, main, user_groups


def _pairs(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(zip(frame["user_id"], frame["item_id"], strict=True))


def _items_by_user(frame: pd.DataFrame) -> dict[str, set[str]]:
    return {user: set(items) for user, items in frame.groupby("user_id")["item_id"]}


def _read_split(out: Path, name: str = "recmig") -> dict[str, pd.DataFrame]:
    folder = out / f"{name}-target"
    return {
        part: read_atomic(folder / f"{name}-target.{part}.inter")
        for part in ("train", "valid", "test")
    }


def _check_against_evaluation(scenario: Scenario, out: Path, name: str = "recmig") -> None:
    """For every user recmig evaluates, RecBole's positives are recmig's relevant items and
    RecBole's excluded items (train, plus valid at test time) are recmig's excluded ones."""
    split = _read_split(out, name)
    tensors = ScenarioTensors(scenario, max_len=8)
    catalog_ids = scenario.items["item_id"].to_numpy()[tensors.target_catalog.numpy() - 1]
    for recmig_split, part, seen_parts in (
        ("val", "valid", ["train"]),
        ("test", "test", ["train", "valid"]),
    ):
        users = tensors.eval_users(recmig_split)
        relevant, excluded = tensors.relevance_and_exclusion(
            users["user"], users["is_cold"], recmig_split
        )
        exported = _items_by_user(split[part])
        seen = _items_by_user(pd.concat([split[p] for p in seen_parts]))
        user_ids = scenario.user_ids[users["user"].numpy()]
        assert sorted(exported) == sorted(user_ids)  # the same users, no more
        for row, user in enumerate(user_ids):
            assert exported[user] == set(catalog_ids[relevant[row].numpy()])
            assert seen.get(user, set()) == set(catalog_ids[excluded[row].numpy()])


def test_export_holds_the_split_recmig_evaluates_on(tmp_path, data, scenario_cfg):
    scenario = build_scenario(data, scenario_cfg)
    manifest = export_recbole(scenario, tmp_path / "out", "recmig", ["seed=1"])
    out = tmp_path / "out"
    _check_against_evaluation(scenario, out)

    split = _read_split(out)
    train = scenario.train
    target_train = train[train["domain"] == TARGET]
    ids = scenario.items["item_id"].to_numpy()
    expected = pd.DataFrame(
        {
            "user_id": scenario.user_ids[target_train["user"]],
            "item_id": ids[target_train["item"] - 1],
        }
    )
    assert _pairs(split["train"]) == _pairs(expected)
    # Ratings and times survive, so explicit and sequential RecBole models see what recmig sees.
    merged = split["train"].merge(
        data.interactions.astype({"rating": "float64"}), on=["user_id", "item_id"]
    )
    assert len(merged) == len(split["train"])
    assert (merged["rating_x"] == merged["rating_y"]).all()
    assert (merged["timestamp_x"] == merged["timestamp_y"].astype("float64")).all()
    # Cold users have no target training row; they are held out whole in their group's file.
    cold = scenario.cold.drop_duplicates("user")
    cold_ids = dict(zip(scenario.user_ids[cold["user"]], cold["group"], strict=True))
    assert not set(split["train"]["user_id"]) & set(cold_ids)
    for user, group in cold_ids.items():
        part = {COLD_VAL: "valid", COLD_TEST: "test"}[group]
        assert user in set(split[part]["user_id"])

    source = read_atomic(out / "recmig-source" / "recmig-source.inter")
    source_rows = train[train["domain"] != TARGET]
    assert len(source) == len(source_rows) and set(cold_ids) <= set(source["user_id"])
    items = read_atomic(out / "recmig-target" / "recmig-target.item")
    assert sorted(items["item_id"]) == sorted(ids[scenario.catalog(TARGET) - 1])
    assert set(read_atomic(out / "recmig-source" / "recmig-source.item")["domain"]) == {"source"}
    users = read_atomic(out / "recmig-target" / "recmig-target.user")
    assert list(users["group"]) == list(user_groups(scenario))
    assert manifest["rows"]["recmig-target/recmig-target.test.inter"] == len(split["test"])
    assert json.loads((out / MANIFEST).read_text())["overrides"] == ["seed=1"]

    config = yaml.safe_load((out / "recbole_cdr.yaml").read_text())
    target = config["target_domain"]
    assert target["benchmark_filename"] == ["train", "valid", "test"]
    assert Path(target["data_path"]) == out.resolve()
    assert (Path(target["data_path"]) / target["dataset"]).is_dir()
    assert config["source_domain"]["dataset"] == "recmig-source"
    assert target["user_inter_num_interval"] is None  # no filter may drop a user from the split


def test_export_without_ratings_and_with_text_that_needs_cleaning(tmp_path, data, scenario_cfg):
    data.interactions["rating"] = np.nan
    data.items.loc[0, "title"] = "A title\twith a tab\nand a line break"
    scenario = build_scenario(data, scenario_cfg)
    export_recbole(scenario, tmp_path / "out", "recmig", [])
    split = _read_split(tmp_path / "out")
    assert "rating" not in split["train"].columns
    assert (
        "rating"
        not in yaml.safe_load((tmp_path / "out" / "recbole.yaml").read_text())["load_col"]["inter"]
    )
    source_items = read_atomic(tmp_path / "out" / "recmig-source" / "recmig-source.item")
    assert "A title with a tab and a line break" in set(source_items["title"])


def test_export_refuses_ids_a_recbole_file_cannot_hold(tmp_path, data, scenario_cfg):
    data.interactions["user_id"] = data.interactions["user_id"].str.replace("u1", "u\t1")
    scenario = build_scenario(data, scenario_cfg)
    with pytest.raises(ValueError, match=r"user_id.*contains a tab"):
        export_recbole(scenario, tmp_path / "out", "recmig", [])
    assert not (tmp_path / "out").exists()


def test_cli_exports_and_never_overwrites_a_folder_it_did_not_write(tmp_path, data, capsys):
    overrides = custom_table_overrides(tmp_path, data)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main([*overrides, "--out", str(mine)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("recmig: error: --out") and "\n" not in error
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1

    out = tmp_path / "export"
    main([*overrides, "--out", str(out)])
    first = (out / "recmig-target" / "recmig-target.test.inter").read_bytes()
    main([*overrides, "--out", str(out)])  # an earlier export is replaced: same bytes
    assert (out / "recmig-target" / "recmig-target.test.inter").read_bytes() == first
    main([*overrides, "data.scenario.seed=5", "--out", str(out)])
    assert (out / "recmig-target" / "recmig-target.test.inter").read_bytes() != first

    with pytest.raises(SystemExit):
        main([*overrides, "data.scenario.cold_fractoin=0.5", "--out", str(tmp_path / "bad")])
    assert "cold_fractoin" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_real_ml100k_export_matches_the_run_split(tmp_path):
    """The real command on real data: what `recmig train data=ml100k_genres` would evaluate."""
    out = tmp_path / "ml100k"
    result = subprocess.run(
        [sys.executable, "-m", "recmig.cli", "export", "data=ml100k_genres", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cfg = compose_config(["data=ml100k_genres"])
    from hydra.utils import instantiate

    scenario = build_scenario(instantiate(cfg.data.dataset), instantiate(cfg.data.scenario))
    _check_against_evaluation(scenario, out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["scenario"] == json.loads(json.dumps(scenario.stats))
