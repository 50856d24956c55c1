"""Your own files as canonical tables: CSV, TSV, Parquet or RecBole atomic files.

The loader behind ``configs/data/custom_files.yaml``. Every check names the file and the field
it concerns, because a table that loads but means something else (ids that never join, ratings
that silently became NaN) only shows later as a wrong metric.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recmig.data.readers import ATOMIC_SUFFIXES, read_atomic, read_table
from recmig.data.schema import InteractionData, canonical_interactions, canonical_strings

__all__ = ["load_table_dataset"]


def _read_any(path: str, required: tuple[str, ...]) -> pd.DataFrame:
    if Path(path).suffix.lower() in ATOMIC_SUFFIXES:
        frame = read_atomic(path)
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{path}: missing required column(s) {missing}; columns found: "
                f"{list(frame.columns)}"
            )
    else:
        frame = read_table(path, required)
    if frame.empty:
        raise ValueError(f"{path}: no rows below the header, expected at least one")
    return frame


def _kind(series: pd.Series) -> str:
    return "numbers" if pd.api.types.is_numeric_dtype(series) else "text"


def _check_user_ids(inter: pd.DataFrame, users: pd.DataFrame, inter_path: str, path: str):
    """A user table whose ids join no interaction is an id written differently in the two
    files (``1`` in one, ``"u1"`` in the other): every profile would be silently lost."""
    known = set(inter["user_id"].astype(str))
    if not users["user_id"].astype(str).isin(known).any():
        raise ValueError(
            f"{path}: field user_id: none of its ids occur in {inter_path} (here "
            f"{_kind(users['user_id'])}, e.g. {users['user_id'].iloc[0]!r}; there "
            f"{_kind(inter['user_id'])}, e.g. {inter['user_id'].iloc[0]!r}); expected the same "
            "user ids in both files"
        )


def load_table_dataset(
    interactions: str, items: str, users: str | None = None, name: str = "custom"
) -> InteractionData:
    """Load generic CSV/TSV/Parquet (or RecBole atomic) files into canonical tables.

    Interactions need ``user_id``/``item_id``; ``rating``, ``timestamp`` and ``domain`` are
    optional (absent rating -> NaN, absent timestamp -> 0, so chronological splits fall back
    to file order) but, when present, hold a number in every row. Items need ``item_id``, each
    once (a row repeated identically counts once); every other column is kept as text. User
    ids of the optional user table must be those of the interactions.
    """
    raw = _read_any(interactions, ("user_id", "item_id"))
    inter = canonical_interactions(raw, interactions)
    # An item written twice with the same row (a concatenated export) is one item; rows that
    # disagree are ambiguous and left to `validate`, which rejects the repeated id.
    item_table = canonical_strings(_read_any(items, ("item_id",)).fillna(""))
    item_table = item_table.drop_duplicates().reset_index(drop=True)
    user_table = None
    if users is not None:
        user_raw = _read_any(users, ("user_id",))
        _check_user_ids(raw, user_raw, interactions, users)
        user_table = canonical_strings(user_raw.fillna(""))
    data = InteractionData(interactions=inter, items=item_table, users=user_table, name=name)
    data.validate(interactions, items)
    return data
