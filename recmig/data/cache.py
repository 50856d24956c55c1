"""The Parquet cache of prepared datasets: one folder per entry, verified on every read.

An entry is ``{cache_dir}/datasets/{name}/`` holding one Parquet file per canonical table and a
``manifest.json`` that records each file's size and sha256 (plus where the data came from).
Entries are written through :func:`recmig.atomic.write_directory_atomic`, so a crash never
leaves half an entry; a reader still never trusts one blindly: a missing, truncated or
altered file (a full disk, a copy cut short, bit rot) fails the check, is reported in one
warning line naming the entry and what differs, and the entry is prepared again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from recmig.atomic import write_directory_atomic
from recmig.data.schema import InteractionData

__all__ = ["CACHE_FORMAT_VERSION", "MANIFEST", "cached_dataset", "check_entry", "file_digest"]

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 2
"""2: the manifest maps each file to its size and sha256 (1 listed the names only)."""
MANIFEST = "manifest.json"

_TABLES = ("interactions", "items", "users")

Prepare = Callable[[], tuple[InteractionData, dict[str, Any]]]
"""Builds a dataset from its sources: the tables and what to record about the source."""


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_entry(entry: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(manifest, None)`` for a complete entry whose files match their manifest;
    ``(None, what is wrong)`` for an entry that must be rebuilt; ``(None, None)`` when there
    is no entry."""
    if not entry.exists():
        return None, None
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"{MANIFEST} is missing or unreadable ({type(exc).__name__})"
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != CACHE_FORMAT_VERSION:
        return None, f"format version {version}, expected {CACHE_FORMAT_VERSION}"
    files = manifest.get("files")
    if not isinstance(files, dict) or f"{_TABLES[0]}.parquet" not in files:
        return None, f"{MANIFEST} lists no interactions file"
    for name, recorded in files.items():
        recorded = recorded if isinstance(recorded, dict) else {}
        path = entry / name
        if not path.is_file():
            return None, f"{name} is missing"
        size = path.stat().st_size
        if size != recorded.get("bytes"):
            return None, f"{name} is {size} bytes, the manifest records {recorded.get('bytes')}"
        if file_digest(path, "sha256") != recorded.get("sha256"):
            return None, f"{name} does not match the sha256 in the manifest"
    return manifest, None


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
        files = {}
        for table in _TABLES:
            frame = getattr(data, table)
            if frame is None:
                continue
            path = tmp / f"{table}.parquet"
            frame.to_parquet(path, index=False)
            files[path.name] = {
                "bytes": path.stat().st_size,
                "sha256": file_digest(path, "sha256"),
            }
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
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")

    # A concurrent writer may win the race; its complete entry is as good as ours.
    write_directory_atomic(target, write, keep_existing=lambda: check_entry(target)[0] is not None)


def cached_dataset(entry: Path, name: str, prepare: Prepare) -> InteractionData:
    """The dataset in cache ``entry`` when it passes :func:`check_entry`; otherwise
    ``prepare()`` it and write the entry (the tables are returned either way)."""
    manifest, problem = check_entry(entry)
    if manifest is not None:
        logger.debug("reading %s from cache %s", name, entry)
        return _read_entry(entry, manifest, name)
    if problem is not None:
        logger.warning("cache entry %s is not trusted: %s; rebuilding it", entry, problem)
    start = time.perf_counter()
    data, info = prepare()
    seconds = time.perf_counter() - start
    _write_entry(entry, data, info, seconds)
    logger.info(
        "prepared %s from %s in %.1f s: %s", name, info.get("source"), seconds, data.describe()
    )
    return data
