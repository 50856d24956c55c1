"""The canonical tables every loader produces (:class:`InteractionData`) and their checks.

Canonical tables
----------------
``interactions``
    ``user_id`` (string), ``item_id`` (string), ``rating`` (float32, NaN when the source has
    no ratings), ``timestamp`` (int64, seconds since the epoch; 0 when the source has none, in
    which case chronological splits degrade to file order because the sort is stable) and,
    when the source defines domains, ``domain`` (string; Amazon: one domain per reviews file).
    Rows keep source file order.
``items``
    ``item_id`` (string, unique) plus text/attribute columns, all string dtype. MovieLens:
    ``title`` (without the trailing ``" (1995)"``), ``year`` (may be empty) and ``genre``
    (genres joined by ``", "`` in source order, e.g. ``"Animation, Children's, Comedy"``).
    ML-1M item ids are the GroupLens title *with* year (``"Toy Story (1995)"``); ML-100K item
    ids are the numeric GroupLens movie ids. Amazon: ``title``, ``category``,
    ``description`` (<= 500 chars), ``main_category`` (2023) and ``domain``.
``users``
    ``None`` or ``user_id`` (string) plus ``gender``, ``age``, ``occupation`` (strings) where
    known. User ids are the GroupLens numbers as strings for both MovieLens versions.

This module imports no other data module: readers, loaders and the cache all build on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "STRING_DTYPE",
    "InteractionData",
    "canonical_interactions",
    "canonical_strings",
    "check_option",
    "number_text",
    "string_column",
]

#: One string dtype for every id/text column, so joins and parquet round trips agree.
STRING_DTYPE = "string"


@dataclass
class InteractionData:
    """Canonical interactions/items/users tables of one dataset (schema: module docstring)."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None = None
    name: str = "dataset"

    def describe(self) -> dict[str, int]:
        """Counts for logs and sanity checks."""
        inter = self.interactions
        counts = {
            "users": int(inter["user_id"].nunique()),
            "items": int(len(self.items)),
            "items_with_interactions": int(inter["item_id"].nunique()),
            "interactions": int(len(inter)),
        }
        if self.users is not None:
            counts["user_profiles"] = int(len(self.users))
        if "domain" in inter.columns:
            counts["domains"] = int(inter["domain"].nunique())
        return counts

    def validate(self, origin: str, items_origin: str | None = None) -> None:
        """Fail early, naming ``origin`` (the interactions' file or dataset) and
        ``items_origin`` (the item table's, default ``origin``), on ids/timestamps later
        stages would trip over."""
        items_origin = items_origin or origin
        inter = self.interactions
        for column in ("user_id", "item_id", "timestamp"):
            if column not in inter.columns:
                raise ValueError(f"{origin}: interactions lack column {column!r}")
            nulls = int(inter[column].isna().sum())
            if nulls:
                raise ValueError(f"{origin}: {nulls} interaction(s) with null {column}")
        if "item_id" not in self.items.columns:
            raise ValueError(f"{items_origin}: items lack column 'item_id'")
        repeated = self.items["item_id"][self.items["item_id"].duplicated()]
        if len(repeated):
            raise ValueError(
                f"{items_origin}: field item_id: {len(repeated)} repeated id(s), e.g. "
                f"{repeated.drop_duplicates().head(3).tolist()}; expected each item once"
            )
        known = pd.Index(self.items["item_id"])
        unknown_mask = ~inter["item_id"].isin(known)
        if bool(unknown_mask.any()):
            unknown = inter.loc[unknown_mask, "item_id"]
            examples = unknown.drop_duplicates().head(3).tolist()
            where = "the item table" if items_origin == origin else items_origin
            raise ValueError(
                f"{origin}: field item_id: {int(unknown_mask.sum())} interaction(s) reference "
                f"items missing from {where}, e.g. {examples}"
            )


def check_option(option: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{option} must be one of {', '.join(allowed)}; got {value!r}")


def string_column(series: pd.Series) -> pd.Series:
    return series.astype(STRING_DTYPE)


def number_text(series: pd.Series) -> pd.Series:
    """Render numbers stored as float (``10.0``) as GroupLens writes them (``"10"``)."""
    if pd.api.types.is_numeric_dtype(series):
        return pd.Series(
            [
                "" if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v))
                for v in series
            ],
            index=series.index,
            dtype=STRING_DTYPE,
        )
    return string_column(series.fillna("").astype(str).str.strip())


def _numbers(frame: pd.DataFrame, column: str, origin: str) -> pd.Series:
    """``frame[column]`` as numbers; every row must hold one (a source without ratings or
    timestamps leaves the column out instead)."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = frame[column].iloc[row]
        # an empty cell arrives as NaN, whose repr (nan, np.float64(nan)) says nothing useful
        holds = "an empty cell" if pd.isna(value) else repr(value)
        raise ValueError(
            f"{origin}: field {column}: {int(bad.sum())} row(s) without a number, e.g. row "
            f"{row + 1} holds {holds}; expected a number in every row "
            f"(leave the {column} column out when the data has none)"
        )
    return values


def canonical_interactions(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Coerce an interaction table to the canonical dtypes, filling optional columns."""
    out = pd.DataFrame(
        {
            "user_id": string_column(frame["user_id"]),
            "item_id": string_column(frame["item_id"]),
        }
    )
    if "rating" in frame.columns:
        out["rating"] = _numbers(frame, "rating", origin).astype("float32")
    else:
        out["rating"] = np.full(len(frame), np.nan, dtype="float32")
    if "timestamp" in frame.columns:
        out["timestamp"] = _numbers(frame, "timestamp", origin).astype("int64")
    else:
        out["timestamp"] = np.zeros(len(frame), dtype="int64")
    if "domain" in frame.columns:
        out["domain"] = string_column(frame["domain"])
    return out.reset_index(drop=True)


def canonical_strings(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: string_column(frame[c]) for c in frame.columns}).reset_index(drop=True)
