"""A run's scenario saved in its folder, so a finished run opens without rebuilding its split.

``recmig train`` writes ``<run>/scenario/`` when the run ends: the item table, the training and
held-out interactions, user ids and profiles, and the per-item arrays, exactly as the run used
them (about 3 MB on ML-1M). ``Recommender.from_run`` (``recmig recommend``, ``recmig serve``)
reads it instead of loading the dataset and drawing the split again, which was most of the
time either took to answer. Runs made before the snapshot existed, or whose snapshot is
incomplete, are rebuilt from the dataset as before; the folder is written atomically, so a
crash leaves a complete snapshot or none.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recmig.atomic import write_directory_atomic
from recmig.data.scenario import Scenario

log = logging.getLogger(__name__)

SNAPSHOT = "scenario"
"""The snapshot's folder name inside a run folder."""
FORMAT = 1
TABLES = ("items", "train", "warm", "cold", "user_profiles")
ARRAYS = ("item_domain", "item_source", "new_items")
META = "scenario.json"
META_FIELDS = ("has_source", "stats", "source_names", "zero_shot")
"""The scalar fields of :class:`Scenario`, kept in ``scenario.json``."""


def save_scenario(scenario: Scenario, folder: str | Path) -> None:
    """Write ``scenario`` to ``folder`` (replaced whole, atomically)."""

    def write(tmp: Path) -> None:
        for name in TABLES:
            frame = getattr(scenario, name)
            if frame is not None:
                frame.to_parquet(tmp / f"{name}.parquet")
        pd.DataFrame({"user_id": scenario.user_ids}).to_parquet(tmp / "user_ids.parquet")
        np.savez(tmp / "arrays.npz", **{name: getattr(scenario, name) for name in ARRAYS})
        meta = {"format": FORMAT, **{name: getattr(scenario, name) for name in META_FIELDS}}
        (tmp / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")

    write_directory_atomic(folder, write, keep_existing=lambda: False)


def load_scenario(folder: str | Path) -> Scenario | None:
    """The scenario saved in ``folder``; None when there is none, or it cannot be read (one
    warning line saying why): the caller rebuilds it from the dataset."""
    folder = Path(folder)
    if not (folder / META).is_file():
        return None
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')}, expected {FORMAT}")
        tables = {
            name: pd.read_parquet(folder / f"{name}.parquet")
            if (folder / f"{name}.parquet").is_file() or name != "user_profiles"
            else None
            for name in TABLES
        }
        with np.load(folder / "arrays.npz", allow_pickle=False) as arrays:
            loaded = {name: arrays[name] for name in ARRAYS}
        user_ids = pd.read_parquet(folder / "user_ids.parquet")["user_id"].to_numpy()
    except (OSError, ValueError, KeyError) as err:
        log.warning("%s: unreadable scenario snapshot, rebuilding the split (%s)", folder, err)
        return None
    return Scenario(
        user_ids=user_ids,
        has_source=bool(meta["has_source"]),
        stats=meta["stats"],
        source_names=tuple(meta["source_names"]),
        zero_shot=bool(meta["zero_shot"]),
        **tables,
        **loaded,
    )
