"""Amazon Reviews (2018 / 2023 JSON lines, one file per domain) as canonical tables."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from recmig.data.readers import read_amazon_meta, read_amazon_reviews
from recmig.data.schema import (
    STRING_DTYPE,
    InteractionData,
    canonical_interactions,
    canonical_strings,
)

__all__ = ["load_amazon"]


def _amazon_items(
    interactions: pd.DataFrame, meta: Mapping[str, str] | str | None, version: int
) -> pd.DataFrame:
    needed = set(interactions["item_id"].astype(str))
    paths = [] if meta is None else [meta] if isinstance(meta, (str, Path)) else list(meta.values())
    frames = [read_amazon_meta(p, version, item_ids=needed) for p in paths]
    known = (
        pd.concat(frames, ignore_index=True).drop_duplicates("item_id")
        if frames
        else pd.DataFrame({"item_id": pd.Series([], dtype=STRING_DTYPE)})
    )
    first_domain = interactions.drop_duplicates("item_id")[["item_id", "domain"]]
    items = first_domain.merge(known, on="item_id", how="left")
    if "title" not in items.columns:
        items["title"] = pd.NA
    items["title"] = items["title"].where(
        items["title"].notna() & (items["title"] != ""), items["item_id"]
    )
    return canonical_strings(items.fillna(""))


def load_amazon(
    reviews: Mapping[str, str],
    meta: Mapping[str, str] | str | None = None,
    version: int = 2023,
    name: str = "amazon",
) -> InteractionData:
    """Load Amazon Reviews (one JSON-lines file per domain) as canonical tables.

    ``reviews`` maps a domain name to its reviews file; ``meta`` is one metadata file per
    domain, a single file, or None. Items without metadata get their id as title. Repeated
    (user, item) pairs keep the latest review only, as re-reviews are not new interests.
    """
    if not reviews:
        raise ValueError("load_amazon: reviews must map at least one domain to a file")
    frames = []
    for domain, path in reviews.items():
        frame = read_amazon_reviews(path, version)
        frame["domain"] = domain
        frames.append(frame)
    merged = pd.concat(frames, ignore_index=True)
    latest = merged.sort_values("timestamp", kind="stable").drop_duplicates(
        ["user_id", "item_id"], keep="last"
    )
    inter = canonical_interactions(latest.sort_index(), name)
    data = InteractionData(
        interactions=inter, items=_amazon_items(inter, meta, version), users=None, name=name
    )
    data.validate(name)
    return data
