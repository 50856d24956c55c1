"""``recmig export``: the exact split a run would use, as files another library reads.

``--format recbole`` writes RecBole atomic files (``recmig export`` docs in the README):

``<name>-target/``
    ``<name>-target.train.inter`` (the target-domain training interactions),
    ``.valid.inter`` and ``.test.inter`` (the held-out interactions recmig validates and tests
    on: warm users' held-out items and cold users' whole target histories), ``.item`` (the
    target catalogue with its text) and ``.user`` (every user, with ``group``: ``warm``,
    ``cold_val``, ``cold_test`` or ``source_only``, and the profile columns). RecBole reads the
    three ``.inter`` files as a fixed split through ``benchmark_filename: [train, valid, test]``.
``<name>-source/``
    ``<name>-source.inter`` (every source-domain training interaction, cold users' included),
    ``.item`` (with ``domain``: the source domain's name) and ``.user``.
``recbole.yaml`` / ``recbole_cdr.yaml``
    Dataset configs for a RecBole model on the target alone and for a RecBole-CDR model on the
    pair: users keep their ids in both domains, which is how RecBole-CDR finds the overlapping
    users (no link file needed); no filtering, so nothing drops out of the split.
    ``data_path: .``: the export folder itself, so it may be moved or copied; RecBole joins a
    relative ``data_path`` to the working directory, so RecBole runs from the export folder or
    is given ``--data_path=<the folder>`` (one top-level key in both configs).
``split.json``
    the overrides, the scenario's statistics, the row count of every file and how the configs
    find the data and order each user's rows.

Every ``.inter`` row carries ``user_order`` (``float``): its place in its user's recmig history,
one numbering per user over both domains, in the order recmig reads it: the training rows
(source and target merged) by time, timestamp ties in the dataset's row order, then the
validation rows, then the test rows. Timestamps tie often (``data=ml1m_genres``: 22% of the
validation items share the last training item's second, 21% of the test items the validation
item's), and a re-sort by time loses the row order that breaks those ties; sorting by
``(user_id, user_order)`` restores recmig's sequences exactly, and both configs set
``TIME_FIELD: user_order`` so that RecBole's own sorts do (``timestamp`` stays a loaded column).

Item ids are written as they are (a RecBole token holds spaces, commas and colons): ML-100K's
are the MovieLens movie ids; ML-1M's are the unique titles of GroupLens' ``movies.dat``
(``"Misérables, Les (1995)"``): the RecBole-CDR copy of ML-1M has no other id, so recmig's
tables (the same from either source) hold no numeric one to write; joining ``movies.dat`` on
its title gives it. Item columns named ``*_id`` (an original id a custom item table carries,
e.g. ``movie_id``) are written as tokens beside ``item_id``, so they join as they are.

Ranking the target catalogue with the train (and, at test time, valid) items excluded is the
protocol recmig evaluates with, so RecBole's full-sort metrics on these files compare with
recmig's cold and warm metrics on the same users and items.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from recmig.atomic import write_directory_atomic, write_json_atomic
from recmig.data.scenario import COLD_TEST, COLD_VAL, SOURCE, TARGET, WARM, Scenario

FORMATS = ("recbole",)
SPLITS = {"train": "train", "valid": "val", "test": "test"}  # RecBole's name: recmig's
SOURCE_ONLY = "source_only"
MANIFEST = "split.json"
ORDER = "user_order"
"""The ``.inter`` column that holds each row's place in its user's recmig history."""
DATA_PATH = "."
"""``data_path`` in the configs: the export folder, as seen from RecBole's working directory."""


def _atomic_frame(frame: pd.DataFrame, types: dict[str, str], origin: str) -> str:
    """A table as the text of a RecBole atomic file (tab separated, ``name:type`` header)."""
    header = "\t".join(f"{column}:{types[column]}" for column in frame.columns)
    cells = frame.astype(object).where(frame.notna(), "")
    text = cells.astype(str)
    for column in frame.columns:
        bad = text[column].str.contains(r"[\t\r\n]", regex=True)
        if types[column] == "token" and bad.any():
            raise ValueError(
                f"{origin}: column {column!r} value {text[column][bad].iloc[0]!r} contains a tab "
                "or line break, which RecBole atomic files cannot hold in a token"
            )
        if types[column] == "token_seq":  # free text: RecBole splits it into words anyway
            text[column] = text[column].str.replace(r"\s+", " ", regex=True).str.strip()
    rows = ["\t".join(row) for row in text.itertuples(index=False, name=None)]
    return "\n".join([header, *rows]) + "\n"


def _interactions(scenario: Scenario, rows: pd.DataFrame, ratings: bool) -> pd.DataFrame:
    """Rows (with ``user_order``) as a RecBole table, in recmig's order per user."""
    rows = rows.sort_values(["user", ORDER], kind="stable")
    table = pd.DataFrame(
        {
            "user_id": scenario.user_ids[rows["user"].to_numpy()],
            "item_id": scenario.items["item_id"].to_numpy()[rows["item"].to_numpy() - 1],
        }
    )
    if ratings:
        table["rating"] = rows["rating"].to_numpy(np.float64)
    table["timestamp"] = rows["timestamp"].to_numpy(np.int64)
    table[ORDER] = rows[ORDER].to_numpy(np.int64)
    return table


def _with_user_order(parts: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """``parts`` (training, validation, test rows) with ``user_order``: each row's place in its
    user's history as recmig reads it (:class:`recmig.data.loaders.ScenarioTensors`): the
    training rows of both domains in ``scenario.train``'s order (time, ties in the dataset's
    row order), then the validation rows, then the test rows, each in the scenario's order."""
    parts = [part.reset_index(drop=True) for part in parts]
    users = pd.Series(np.concatenate([part["user"].to_numpy() for part in parts]))
    order = users.groupby(users, sort=False).cumcount().to_numpy()
    ends = np.cumsum([len(part) for part in parts])
    return [
        part.assign(**{ORDER: order[end - len(part) : end]})
        for part, end in zip(parts, ends, strict=True)
    ]


def _items(scenario: Scenario, domain: int) -> pd.DataFrame:
    indices = scenario.catalog(domain)
    items = scenario.items.iloc[indices - 1].reset_index(drop=True)
    if domain == SOURCE:
        names = np.asarray(scenario.source_names + ("",), dtype=object)
        items = items.assign(domain=names[scenario.item_source[indices]])
    return items


def user_groups(scenario: Scenario) -> np.ndarray:
    """Each user's role in the split: warm, cold_val, cold_test or source_only."""
    groups = np.full(scenario.num_users, SOURCE_ONLY, dtype=object)
    target = scenario.train.loc[scenario.train["domain"] == TARGET, "user"]
    groups[np.unique(np.concatenate([target.to_numpy(), scenario.warm["user"].to_numpy()]))] = WARM
    cold = scenario.cold.drop_duplicates("user")
    groups[cold["user"].to_numpy()] = cold["group"].to_numpy()
    return groups


def _users(scenario: Scenario) -> pd.DataFrame:
    users = pd.DataFrame({"user_id": scenario.user_ids, "group": user_groups(scenario)})
    if scenario.user_profiles is not None:
        profiles = scenario.user_profiles.drop(columns="user_id").reset_index(drop=True)
        users = pd.concat([users, profiles.astype("string")], axis=1)
    return users


def recbole_tables(scenario: Scenario, name: str) -> dict[str, pd.DataFrame]:
    """Relative file path -> table, for every atomic file of the export."""
    ratings = bool(scenario.train["rating"].notna().any())
    warm, cold = scenario.warm, scenario.cold
    train, val, test = _with_user_order(
        [
            scenario.train,
            pd.concat([warm[warm["split"] == "val"], cold[cold["group"] == COLD_VAL]]),
            pd.concat([warm[warm["split"] == "test"], cold[cold["group"] == COLD_TEST]]),
        ]
    )
    target, source = f"{name}-target", f"{name}-source"
    tables = {
        f"{target}/{target}.train.inter": train[train["domain"] == TARGET],
        f"{target}/{target}.valid.inter": val,
        f"{target}/{target}.test.inter": test,
    }
    tables = {path: _interactions(scenario, rows, ratings) for path, rows in tables.items()}
    users = _users(scenario)
    tables[f"{target}/{target}.item"] = _items(scenario, TARGET)
    tables[f"{target}/{target}.user"] = users
    if scenario.has_source:
        tables[f"{source}/{source}.inter"] = _interactions(
            scenario, train[train["domain"] == SOURCE], ratings
        )
        tables[f"{source}/{source}.item"] = _items(scenario, SOURCE)
        tables[f"{source}/{source}.user"] = users
    return tables


def _types(frame: pd.DataFrame) -> dict[str, str]:
    """ids (``*_id``), groups and attributes are tokens; ratings, times and ``user_order``
    floats; other text words."""
    tokens = {"group", "domain", "gender", "age", "occupation", "year"}
    types = {}
    for column in frame.columns:
        if column in ("rating", "timestamp", ORDER):
            types[column] = "float"
        elif column in tokens or str(column).endswith("_id"):
            types[column] = "token"
        else:
            types[column] = "token_seq"
    return types


def _fields(ratings: bool) -> dict:
    columns = ["user_id", "item_id", *(["rating"] if ratings else []), "timestamp", ORDER]
    return {
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        # RecBole sorts by TIME_FIELD (per user for sequential models): user_order keeps
        # recmig's order where timestamps tie; the real time is the `timestamp` column.
        "TIME_FIELD": ORDER,
        **({"RATING_FIELD": "rating"} if ratings else {}),
        "load_col": {"inter": columns},
        # The split is recmig's: no k-core or rating filter may remove a user or item from it.
        "user_inter_num_interval": None,
        "item_inter_num_interval": None,
        "val_interval": None,
    }


CONFIG_HEADER = """\
# {what}, written by `recmig export` (split.json: its overrides and counts).
# data_path `.` is this folder. RecBole joins a relative data_path to the working directory,
# not to this file: run RecBole from this folder (config_file_list=['{file}']), or from
# elsewhere pass --data_path=<this folder> (config_dict={{'data_path': ...}}); it is one
# top-level key, so the folder may be moved or copied.
# TIME_FIELD is user_order, each row's place in its user's recmig history (both domains:
# training rows by time, ties in the dataset's row order, then valid, then test): RecBole
# sorts by it, so timestamp ties keep recmig's order; the real time is loaded as `timestamp`.
"""


def recbole_configs(name: str, ratings: bool, has_source: bool) -> dict[str, dict]:
    """Config file name -> the config (``data_path`` relative: see :data:`CONFIG_HEADER`)."""
    evaluation = {
        "eval_args": {"group_by": "user", "order": "TO", "mode": "full"},
        "repeatable": False,
        "metrics": ["NDCG", "Recall", "Hit", "MRR", "Precision"],
        "topk": [10, 20],
        "valid_metric": "NDCG@10",
    }
    target = {
        "dataset": f"{name}-target",
        "benchmark_filename": list(SPLITS),
        **_fields(ratings),
    }
    configs = {"recbole.yaml": {"data_path": DATA_PATH, **target, **evaluation}}
    if has_source:
        # RecBole-CDR joins each domain's dataset to the top-level data_path when the domain
        # names none, so one --data_path moves both.
        source = {"dataset": f"{name}-source", **_fields(ratings)}
        configs["recbole_cdr.yaml"] = {
            "data_path": DATA_PATH,
            "source_domain": source,
            "target_domain": target,
            **evaluation,
        }
    return configs


def _config_text(file: str, config: dict) -> str:
    what = {
        "recbole.yaml": "RecBole config of the target domain",
        "recbole_cdr.yaml": "RecBole-CDR config of the source and target domains",
    }[file]
    header = CONFIG_HEADER.format(what=what, file=file)
    return header + yaml.safe_dump(config, sort_keys=False)


def export_recbole(scenario: Scenario, out: Path, name: str, overrides: list[str]) -> dict:
    """Write the export into ``out`` (replaced only as a whole); returns the manifest."""
    if any(c in name for c in "/\\ \t"):
        raise ValueError(f"--name {name!r}: a RecBole dataset name without spaces or slashes")
    tables = recbole_tables(scenario, name)
    ratings = "rating" in tables[f"{name}-target/{name}-target.train.inter"].columns
    texts = {path: _atomic_frame(t, _types(t), path) for path, t in tables.items()}
    configs = recbole_configs(name, ratings, scenario.has_source)
    manifest = {
        "format": "recbole",
        "overrides": overrides,
        "scenario": scenario.stats,
        "rows": {path: len(t) for path, t in tables.items()},
        "recbole": {
            "configs": list(configs),
            "data_path": DATA_PATH,
            "data_path_means": "this folder: run RecBole from it (RecBole joins data_path to "
            "the working directory), or pass --data_path=<this folder>",
            "order_field": ORDER,
            "order_means": "each row's place in its user's recmig history, one numbering over "
            "both domains: training rows by timestamp, ties in the dataset's row order, then "
            "valid, then test; sort by (user_id, user_order) for recmig's sequences",
        },
    }

    def write(folder: Path) -> None:
        for path, text in texts.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(text, encoding="utf-8")
        for file, config in configs.items():
            (folder / file).write_text(_config_text(file, config), encoding="utf-8")
        write_json_atomic(folder / MANIFEST, manifest)

    write_directory_atomic(out, write, keep_existing=lambda: False)
    return manifest


def _check_out(out: Path) -> None:
    """Replace an earlier export, never a folder holding anything else."""
    earlier = (out / MANIFEST).is_file()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not earlier)):
        raise ValueError(
            f"--out {out}: exists and is not an earlier recmig export (no {MANIFEST}); "
            "give a new or empty folder"
        )


def main(argv: list[str]) -> None:
    from hydra.errors import HydraException
    from hydra.utils import instantiate
    from omegaconf.errors import OmegaConfBaseException

    from recmig.config import compose_config
    from recmig.data.scenario import build_scenario
    from recmig.errors import exit_with_error, user_error

    parser = argparse.ArgumentParser(
        prog="recmig export",
        description="Write the scenario `recmig train <overrides>` would use (same users, items "
        "and held-out interactions) as files another library reads.",
    )
    parser.add_argument("overrides", nargs="*", help="data overrides, as for recmig train")
    parser.add_argument("--format", choices=FORMATS, default="recbole")
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    parser.add_argument("--name", default="recmig", help="dataset name prefix (default recmig)")
    args = parser.parse_args(argv)
    try:
        _check_out(args.out)
        cfg = compose_config(args.overrides)
        scenario = build_scenario(instantiate(cfg.data.dataset), instantiate(cfg.data.scenario))
        manifest = export_recbole(scenario, args.out, args.name, args.overrides)
    except (HydraException, OmegaConfBaseException) as err:  # a misspelled override
        exit_with_error(err)
    except Exception as err:  # noqa: BLE001 - re-raised unless it is the user's to fix
        cause = user_error(err)
        if cause is None:
            raise
        exit_with_error(cause)
    print(json.dumps(manifest["rows"], indent=2))
    print(f"wrote {args.out}")
