"""The bad-input battery: every kind of input a user can get wrong ends `recmig train` in one
line (``recmig: error: ...``, exit 2) naming the file, field or option and what was expected,
and leaves the caches and an earlier run's results exactly as they were.

Every case reruns into the folder of an earlier, successful run with the same cache folder, so
a failure that wrote anything there (a truncated metrics.json, a new embedding file) fails the
test. The runs go through the real CLI (``recmig.cli.main``, Hydra, the generic-table loader,
the real MiniLM text encoder) on tiny synthetic files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from recmig import cli
from recmig.data.amazon import load_amazon
from recmig.data.scenario import ScenarioConfig, build_scenario
from recmig.data.tables import load_table_dataset
from tests.conftest import synthetic_data

# Hydra rewrites its own record of the run (.hydra/) and log for every attempt; what recmig
# wrote there (metrics, per-user results, checkpoints, scenario.json) must stay as it was.
HYDRA_OWN = (".hydra", "train.log", "cli.log")
_FILES = ("inter.csv", "items.csv", "users.csv")


def _good_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    data = synthetic_data()
    inter = data.interactions.merge(data.items[["item_id", "genre"]], on="item_id")
    inter["domain"] = inter.pop("genre").str.split(",").str[0]
    items = data.items[["item_id", "title"]]
    users = pd.DataFrame(
        {"user_id": inter["user_id"].unique(), "gender": "F"}, dtype="string"
    ).reset_index(drop=True)
    return inter, items, users


def _write(folder: Path, inter: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    inter.to_csv(folder / "inter.csv", index=False)
    items.to_csv(folder / "items.csv", index=False)
    users.to_csv(folder / "users.csv", index=False)


def _overrides(folder: Path, run_dir: Path) -> list[str]:
    return [
        "data=custom_files",
        f"data.dataset.interactions={folder / 'inter.csv'}",
        f"data.dataset.items={folder / 'items.csv'}",
        f"data.dataset.users={folder / 'users.csv'}",
        "data.scenario.source_domains=[Books]",
        "data.scenario.target_domains=[Films]",
        "encoder=text",
        "encoder.template='{title}'",
        "user_model=mean",
        "logger=none",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run_dir}",
    ]


def _snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, str]]:
    """Every file under ``folder`` (outside ``skip``) -> its size and sha256."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if relative.parts[0] in skip:
            continue
        out[str(relative)] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def _train(args: list[str]) -> int | None:
    """``recmig train <args>`` in this process; the exit code, None when it returned."""
    argv, root = sys.argv, logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        cli.main(["train", *args])
    except SystemExit as stop:
        return stop.code
    finally:
        sys.argv = argv  # Hydra reads the overrides from sys.argv
        # Hydra points the root logger at this test's captured stdout; later tests log too
        root.handlers[:] = handlers
        root.setLevel(level)
    return None


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """Good files, a cache folder and the folder of a finished run trained from them."""
    root = tmp_path_factory.mktemp("bad_input")
    good = root / "good"
    _write(good, *_good_tables())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECMIG_CACHE_DIR", str(root / "cache"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("WANDB_MODE", "offline")
        assert _train(_overrides(good, root / "run")) in (None, 0)
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    assert "test/cold/ndcg@10" in metrics and metrics["scenario/overlap/users"] == 60
    cache = _snapshot(root / "cache")
    assert any(name.startswith("embeddings") for name in cache)  # the text encoder's cache
    run = _snapshot(root / "run", skip=HYDRA_OWN)
    assert {"metrics.json", "scenario.json", "test_users.parquet"} <= set(run)
    assert any(name.startswith("checkpoints/best-") for name in run)
    return {"root": root, "good": good, "cache": cache, "run": run}


# ------------------------------------------------------------------------------------------
# the cases: each writes its bad files into `folder` (a copy of the good ones) and returns
# the overrides to add; `expected` are the fragments the one error line must hold
# ------------------------------------------------------------------------------------------
def _edit(name: str, change: Callable[[pd.DataFrame], pd.DataFrame]):
    def case(folder: Path) -> list[str]:
        frame = pd.read_csv(folder / name, dtype=str, keep_default_na=False)
        change(frame).to_csv(folder / name, index=False)
        return []

    return case


def _set(column: str, row: int, value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row, column] = value
        return frame

    return change


def _text(name: str, content: str):
    def case(folder: Path) -> list[str]:
        (folder / name).write_text(content)
        return []

    return case


def _options(*overrides: str):
    return lambda folder: list(overrides)


def _no_shared_users(frame: pd.DataFrame) -> pd.DataFrame:
    """Users u0..u29 keep only their Books, the others only their Films."""
    number = frame["user_id"].str[1:].astype(int)
    books = frame["domain"] == "Books"
    return frame[(number < 30) == books]


def _conflicting_duplicate(frame: pd.DataFrame) -> pd.DataFrame:
    repeated = frame[frame["item_id"] == "i3"].assign(title="Another item")
    return pd.concat([frame, repeated], ignore_index=True)


def _renamed_users(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(user_id="user-" + frame["user_id"])


CASES = {
    "missing-column": (
        _edit("inter.csv", lambda f: f.drop(columns="item_id")),
        ["inter.csv", "missing required column", "item_id"],
    ),
    "text-in-rating": (
        _edit("inter.csv", _set("rating", 2, "five")),
        ["inter.csv", "field rating", "'five'", "expected a number"],
    ),
    "text-in-timestamp": (
        _edit("inter.csv", _set("timestamp", 5, "yesterday")),
        ["inter.csv", "field timestamp", "'yesterday'", "expected a number"],
    ),
    "nan-rating": (
        _edit("inter.csv", _set("rating", 7, "")),
        ["inter.csv", "field rating", "row 8", "empty", "expected a number"],
    ),
    "empty-file": (_text("inter.csv", ""), ["inter.csv", "empty file", "user_id, item_id"]),
    "header-only": (_text("items.csv", "item_id,title\n"), ["items.csv", "no rows"]),
    "unknown-domain": (
        _options("data.scenario.target_domains=[Cartoons]"),
        ["scenario.target_domains", "Cartoons", "values found", "Books", "Films"],
    ),
    "no-shared-users": (
        _edit("inter.csv", _no_shared_users),
        ["no user", "both", "source_domains", "cold_fraction"],
    ),
    "unknown-strategy": (
        _options("strategy=no_such_strategy"),
        ["unknown option strategy=no_such_strategy", "valid options: strategy=bridge"],
    ),
    "misspelled-strategy": (
        _options("strategy=mappin"),
        ["unknown option strategy=mappin", "close valid options: strategy=mapping"],
    ),
    "misspelled-key": (
        _options("trainer.max_epoch=2"),
        ["'trainer.max_epoch'", "close valid keys: trainer.max_epochs"],
    ),
    "misspelled-strategy-key": (
        _options("strategy=distillation", "strategy.temprature=1"),
        ["'strategy.temprature'", "close valid keys: strategy.temperature"],
    ),
    "key-the-encoder-does-not-take": (
        _options("+encoder.pooling_mode=max"),
        ["encoder:", "'pooling_mode'", "check the keys under `encoder`"],
    ),
    "misspelled-data-key": (
        _options("data.dataset.interaction=x.csv"),
        ["'data.dataset.interaction'", "data.dataset.interactions"],
    ),
    "missing-text-field": (
        _edit("items.csv", lambda f: f.rename(columns={"title": "name"})),
        ["template", "'title'", "not item columns", "name"],
    ),
    "conflicting-duplicate-item": (
        _edit("items.csv", _conflicting_duplicate),
        ["items.csv", "field item_id", "i3", "expected each item once"],
    ),
    "user-table-joins-nothing": (
        _edit("users.csv", _renamed_users),
        ["users.csv", "field user_id", "inter.csv", "user-u0"],
    ),
}


def _bad_run(case: str, earlier, tmp_path: Path) -> tuple[list[str], list[str]]:
    """The case's `recmig train` arguments (its bad files under tmp_path) and the fragments
    its error line must hold."""
    write_bad, expected = CASES[case]
    folder = tmp_path / "files"
    _write(folder, *(pd.read_csv(earlier["good"] / n, dtype=str) for n in _FILES))
    extra = write_bad(folder)
    return [*_overrides(folder, earlier["root"] / "run"), *extra], expected


def _check_failure(code: int | None, err: str, expected: list[str], earlier) -> None:
    """Exit 2, stderr exactly one error line holding every fragment, nothing written."""
    assert code == 2, err[-3000:]
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err[-3000:]
    assert lines[0].startswith("recmig: error: "), lines[0]
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])
    root = earlier["root"]
    assert _snapshot(root / "cache") == earlier["cache"]
    assert _snapshot(root / "run", skip=HYDRA_OWN) == earlier["run"]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_in_one_line_and_touches_nothing(case, earlier, tmp_path, capsys):
    args, expected = _bad_run(case, earlier, tmp_path)
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECMIG_CACHE_DIR", str(earlier["root"] / "cache"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        code = _train(args)
    _check_failure(code, capsys.readouterr().err, expected, earlier)


@pytest.mark.parametrize(
    "case", ["unknown-strategy", "misspelled-key", "text-in-rating", "missing-text-field"]
)
def test_the_real_command_prints_only_the_error_line(case, earlier, tmp_path):
    """The installed `recmig` in its own process: there, libraries' log handlers write to the
    real stderr too (in-process captures miss them), which must still hold the one line."""
    args, expected = _bad_run(case, earlier, tmp_path)
    env = {
        **os.environ,
        "RECMIG_CACHE_DIR": str(earlier["root"] / "cache"),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
    }
    result = subprocess.run(
        [sys.executable, "-m", "recmig.cli", "train", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    _check_failure(result.returncode, result.stderr, expected, earlier)


# ------------------------------------------------------------------------------------------
# inputs that look odd but are fine: they must load, and load right
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("numbers_in", ["interactions", "users"])
def test_user_ids_as_numbers_in_one_file_join_the_text_ids_of_the_other(tmp_path, numbers_in):
    """Ids are strings in the canonical tables: user 7 in a Parquet file is user "7" of a
    CSV file, so every interaction keeps its user's profile."""
    inter, items, _ = _good_tables()
    inter["user_id"] = inter["user_id"].str[1:]  # "u7" -> "7"
    users = pd.DataFrame({"user_id": inter["user_id"].unique()})
    users["gender"] = ["F" if int(u) % 2 else "M" for u in users["user_id"]]
    numeric = inter if numbers_in == "interactions" else users
    numeric["user_id"] = numeric["user_id"].astype("int64")
    inter.to_parquet(tmp_path / "inter.parquet")
    items.to_csv(tmp_path / "items.csv", index=False)
    users.to_parquet(tmp_path / "users.parquet") if numbers_in == "users" else users.to_csv(
        tmp_path / "users.csv", index=False
    )
    user_file = "users.parquet" if numbers_in == "users" else "users.csv"
    data = load_table_dataset(
        str(tmp_path / "inter.parquet"), str(tmp_path / "items.csv"), str(tmp_path / user_file)
    )
    assert str(data.users["user_id"].dtype) == str(data.interactions["user_id"].dtype) == "string"
    scenario = build_scenario(
        data,
        ScenarioConfig(
            domain_field=None, source_domains=["Books"], target_domains=["Films"], seed=1
        ),
    )
    profiles = scenario.user_profiles
    assert len(profiles) == 60 and profiles["gender"].notna().all()
    expected = ["F" if int(u) % 2 else "M" for u in profiles["user_id"]]
    assert profiles["gender"].tolist() == expected


def test_identical_duplicate_item_rows_load_once(tmp_path):
    """The same item written twice with the same text is harmless (a concatenated export);
    only ids whose rows disagree are ambiguous."""
    inter, items, _ = _good_tables()
    inter.to_csv(tmp_path / "inter.csv", index=False)
    pd.concat([items, items.iloc[[3, 3, 10]]]).to_csv(tmp_path / "items.csv", index=False)
    data = load_table_dataset(str(tmp_path / "inter.csv"), str(tmp_path / "items.csv"))
    assert data.items["item_id"].tolist() == items["item_id"].tolist()
    assert data.items["title"].tolist() == items["title"].tolist()


def test_amazon_metadata_with_repeated_asins_still_loads_first_record(tmp_path):
    """Amazon's metadata dumps repeat asins with differing records; recmig keeps the first,
    unlike a user's own item table, where a conflicting repeat is an error."""
    (tmp_path / "Books.jsonl").write_text(
        json.dumps({"user_id": "U1", "parent_asin": "P1", "rating": 4, "timestamp": 1000}) + "\n"
    )
    (tmp_path / "meta_Books.jsonl").write_text(
        json.dumps({"parent_asin": "P1", "title": "Dune"})
        + "\n"
        + json.dumps({"parent_asin": "P1", "title": "Dune (reprint)"})
        + "\n"
    )
    data = load_amazon(
        {"books": str(tmp_path / "Books.jsonl")}, str(tmp_path / "meta_Books.jsonl"), version=2023
    )
    assert data.items["item_id"].tolist() == ["P1"]
    assert data.items["title"].tolist() == ["Dune"]
