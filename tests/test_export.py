"""`recmig export --format recbole`: the files, read back with recmig's own RecBole reader, hold
exactly the split recmig trains and evaluates on (no RecBole install needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import custom_table_overrides

from recmig.config import compose_config
from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors
from recmig.data.readers import read_atomic
from recmig.data.scenario import (
    COLD_TEST,
    COLD_VAL,
    TARGET,
    Scenario,
    ScenarioConfig,
    build_scenario,
)
from recmig.export import MANIFEST, ORDER, export_recbole, main, user_groups


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
    datamodule = CrossDomainDataModule(tensors, (), LoaderConfig(max_len=8))
    catalog_ids = scenario.items["item_id"].to_numpy()[tensors.target_catalog.numpy() - 1]
    for recmig_split, part, seen_parts in (
        ("val", "valid", ["train"]),
        ("test", "test", ["train", "valid"]),
    ):
        batches = datamodule.eval_data[recmig_split]  # the evaluator's own batches
        relevant = torch.cat([b.relevant for b in batches])
        excluded = torch.cat([b.excluded for b in batches])
        users = {"user": torch.cat([b.user for b in batches])}
        exported = _items_by_user(split[part])
        seen = _items_by_user(pd.concat([split[p] for p in seen_parts]))
        user_ids = scenario.user_ids[users["user"].numpy()]
        assert sorted(exported) == sorted(user_ids)  # the same users, no more
        for row, user in enumerate(user_ids):
            assert exported[user] == set(catalog_ids[relevant[row].numpy()])
            assert seen.get(user, set()) == set(catalog_ids[excluded[row].numpy()])


def _sequences(frame: pd.DataFrame, by: str) -> dict[str, list[str]]:
    """Each user's item ids after a stable sort by (user_id, ``by``)."""
    ordered = frame.sort_values(["user_id", by], kind="stable")
    return {user: list(items) for user, items in ordered.groupby("user_id")["item_id"]}


def _recmig_sequences(scenario: Scenario) -> dict[str, dict[str, list[str]]]:
    """The sequences recmig reads (``ScenarioTensors``), as item ids: ``target``: a user's
    target training items, then the validation, then the test items (a cold user: the held-out
    target history); ``source`` and ``pooled``: the training streams of those names."""
    tensors = ScenarioTensors(scenario, max_len=8)
    ids, users = scenario.items["item_id"].to_numpy(), scenario.user_ids
    parts = [
        tensors.sequences["target"],
        tensors.warm_items["val"],
        tensors.warm_items["test"],
        tensors.cold_items,
    ]
    sequences: dict[str, dict[str, list[str]]] = {"target": {}}
    for u in range(scenario.num_users):
        items = [i for part in parts for i in part.get(u, [])]
        if items:
            sequences["target"][users[u]] = list(ids[np.asarray(items) - 1])
    for stream in ("source", "pooled"):
        sequences[stream] = {
            users[u]: list(ids[np.asarray(items) - 1])
            for u, items in tensors.sequences[stream].items()
        }
    return sequences


def _check_order(scenario: Scenario, out: Path, name: str = "recmig") -> int:
    """``user_order`` gives back every sequence recmig reads, from the files in any row order;
    returns how many held-out rows tie in time with the row before them."""
    split = _read_split(out, name)
    source = read_atomic(out / f"{name}-source" / f"{name}-source.inter")
    files = {
        "target": pd.concat([split["train"], split["valid"], split["test"]], ignore_index=True),
        "source": source,
        "pooled": pd.concat([source, split["train"]], ignore_index=True),
    }
    expected = _recmig_sequences(scenario)
    for stream, frame in files.items():
        shuffled = frame.sample(frac=1.0, random_state=0)  # e.g. a database's row order
        assert _sequences(shuffled, ORDER) == expected[stream], stream
    # One numbering per user over every file: 0, 1, ... with no gap and no repeat.
    every = pd.concat([source, *split.values()])
    for _, orders in every.groupby("user_id")[ORDER]:
        assert sorted(orders) == list(range(len(orders)))
    target = files["target"].assign(held_out=np.arange(len(files["target"])) >= len(split["train"]))
    target = target.sort_values(["user_id", ORDER], kind="stable")
    previous = target.shift()
    ties = (target["timestamp"] == previous["timestamp"]) & (
        target["user_id"] == previous["user_id"]
    )
    return int((ties & target["held_out"]).sum())


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
    assert config["data_path"] == "." and (out / target["dataset"]).is_dir()
    assert config["source_domain"]["dataset"] == "recmig-source"
    assert target["user_inter_num_interval"] is None  # no filter may drop a user from the split
    # RecBole sorts by TIME_FIELD: the order column, loaded with the real time beside it.
    assert target["TIME_FIELD"] == ORDER
    assert target["load_col"]["inter"] == ["user_id", "item_id", "rating", "timestamp", ORDER]
    _check_order(scenario, out)


@pytest.mark.parametrize("warm_split", ["loo", "random"])
def test_user_order_restores_recmig_sequences_where_timestamps_tie(tmp_path, data, warm_split):
    """Coarse timestamps tie everywhere and the rows are shuffled, so only recmig's tie-break
    (the dataset's row order) decides its sequences: a stable re-sort by time does not give
    them back, ``user_order`` does (a random warm split also puts held-out items that are
    earlier in time after the training ones, as recmig reads them)."""
    data.interactions["timestamp"] //= 2500  # four distinct times per user
    data.interactions = data.interactions.sample(frac=1.0, random_state=3, ignore_index=True)
    cfg = ScenarioConfig(
        source_domains=["Books"],
        target_domains=["Films"],
        cold_fraction=0.3,
        seed=1,
        warm_split=warm_split,
    )
    scenario = build_scenario(data, cfg)
    out = tmp_path / "out"
    export_recbole(scenario, out, "recmig", [])
    assert _check_order(scenario, out) > 10  # held-out rows that tie with the row before them

    # The same rows in another order, re-sorted by time (stable): most sequences scramble.
    split = _read_split(out)
    target = pd.concat([split["train"], split["valid"], split["test"]], ignore_index=True)
    by_time = _sequences(target.sample(frac=1.0, random_state=0), "timestamp")
    expected = _recmig_sequences(scenario)
    assert by_time.keys() == expected["target"].keys()
    scrambled = [user for user, items in by_time.items() if items != expected["target"][user]]
    assert len(scrambled) > len(by_time) // 2
    # Ties across domains too: the files' own order cannot merge the two domains' rows.
    source = read_atomic(out / "recmig-source" / "recmig-source.inter")
    pooled = pd.concat([source, split["train"]], ignore_index=True)
    assert _sequences(pooled, "timestamp") != expected["pooled"]
    assert _sequences(pooled, ORDER) == expected["pooled"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["recbole"]["order_field"] == ORDER


def test_configs_find_the_data_after_the_folder_moves(tmp_path, data, scenario_cfg, monkeypatch):
    """``data_path`` is relative (the folder itself), so a copy elsewhere still works."""
    export_recbole(build_scenario(data, scenario_cfg), tmp_path / "out", "recmig", [])
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(tmp_path / "out", moved)
    shutil.rmtree(tmp_path / "out")
    monkeypatch.chdir(moved)  # run from the export folder, as the configs' header says
    for file in ("recbole.yaml", "recbole_cdr.yaml"):
        text = (moved / file).read_text()
        assert "--data_path" in text  # ... or how to run it from another folder
        config = yaml.safe_load(text)
        assert config["data_path"] == "."
        domains = [config]
        if "target_domain" in config:  # RecBole-CDR: a domain without data_path uses the top one
            domains = [config["source_domain"], config["target_domain"]]
            assert all("data_path" not in domain for domain in domains)
        for domain in domains:
            # RecBole reads os.path.join(data_path, dataset) from the working directory.
            folder = Path(os.path.join(config["data_path"], domain["dataset"]))
            assert folder.resolve() == (moved / domain["dataset"]).resolve()
            parts = [f".{b}.inter" for b in domain.get("benchmark_filename", [])] or [".inter"]
            for suffix in [*parts, ".item", ".user"]:
                assert (folder / f"{domain['dataset']}{suffix}").is_file()
    manifest = json.loads((moved / MANIFEST).read_text())
    assert manifest["recbole"]["data_path"] == "."


def test_item_titles_stay_ids_and_an_original_id_is_written_beside_them(
    tmp_path, data, scenario_cfg
):
    """Titles with spaces, commas and colons stay the item ids (as ML-1M's are); an original
    id the item table carries (zero-padded, as ASINs are) is a token column beside them."""
    titles = {f"i{i}": f"Star Wars: Episode {i}, The ({1977 + i})" for i in range(40)}
    original = {f"i{i}": f"{i:05d}" for i in range(40)}
    data.interactions["item_id"] = data.interactions["item_id"].map(titles).astype("string")
    data.items["movie_id"] = data.items["item_id"].map(original).astype("string")
    data.items["item_id"] = data.items["item_id"].map(titles).astype("string")
    scenario = build_scenario(data, scenario_cfg)
    out = tmp_path / "out"
    export_recbole(scenario, out, "recmig", [])
    _check_against_evaluation(scenario, out)

    by_title = {titles[key]: original[key] for key in titles}
    for domain in ("target", "source"):
        path = out / f"recmig-{domain}" / f"recmig-{domain}.item"
        header = path.read_text(encoding="utf-8").splitlines()[0].split("\t")
        assert header[0] == "item_id:token" and "movie_id:token" in header
        items = read_atomic(path)
        assert items["movie_id"].tolist() == [by_title[t] for t in items["item_id"]]
    split = _read_split(out)
    assert set(split["train"]["item_id"]) <= set(by_title)
    items = read_atomic(out / "recmig-target" / "recmig-target.item")
    joined = split["test"].merge(items, on="item_id", how="left")
    assert joined["movie_id"].tolist() == [by_title[t] for t in split["test"]["item_id"]]


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

    dataset = instantiate(cfg.data.dataset)
    scenario = build_scenario(dataset, instantiate(cfg.data.scenario))
    _check_against_evaluation(scenario, out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["scenario"] == json.loads(json.dumps(scenario.stats))
    # Real timestamps tie (a user rates several movies in one second): the order column, not
    # the time, gives back recmig's sequences.
    assert _check_order(scenario, out) > 0
    # ML-100K's item ids are the MovieLens movie ids, written as tokens beside the titles.
    path = out / "recmig-target" / "recmig-target.item"
    assert path.read_text(encoding="utf-8").startswith("item_id:token\ttitle:token_seq")
    items = read_atomic(path)
    titles = dataset.items.set_index("item_id")["title"]
    assert items["item_id"].str.fullmatch(r"[0-9]+").all()
    assert (items["title"] == titles.loc[items["item_id"]].to_numpy()).all()
