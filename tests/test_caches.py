"""Caches are never trusted: a truncated or altered Parquet dataset entry or text-embedding file
is reported in one warning line and rebuilt, with the same contents as before."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch

from recmig.data import cache as C
from recmig.encoders import text as T


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path: Path, offset: int) -> None:
    """Invert one byte, keeping the size: only a checksum can tell."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _warnings(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelname == "WARNING"]


# ----------------------------------------------------------------------------------------------
# Parquet dataset cache
# ----------------------------------------------------------------------------------------------
class _Source:
    """Stands in for a download: counts how often the dataset had to be prepared."""

    def __init__(self, data) -> None:
        self.data, self.calls = data, 0

    def __call__(self):
        self.calls += 1
        return self.data, {"source": "test"}


@pytest.fixture
def entry(tmp_path: Path, data):
    """A written cache entry, its original file bytes and the source that filled it."""
    source = _Source(data)
    path = tmp_path / "datasets" / "synthetic"
    C.cached_dataset(path, "synthetic", source)
    originals = {p.name: p.read_bytes() for p in path.iterdir() if p.suffix == ".parquet"}
    return path, originals, source


def test_manifest_records_size_and_sha256(entry) -> None:
    path, originals, _ = entry
    manifest = json.loads((path / C.MANIFEST).read_text())
    assert manifest["format_version"] == C.CACHE_FORMAT_VERSION
    assert set(manifest["files"]) == set(originals) == {"interactions.parquet", "items.parquet"}
    for name, recorded in manifest["files"].items():
        assert recorded["bytes"] == len(originals[name])
        assert recorded["sha256"] == C.file_digest(path / name, "sha256")


@pytest.mark.parametrize(
    ("damage", "file", "what"),
    [
        ("truncate", "interactions.parquet", "bytes"),
        ("flip", "interactions.parquet", "sha256"),
        ("flip", "items.parquet", "sha256"),
        ("delete", "items.parquet", "missing"),
    ],
)
def test_damaged_parquet_entry_is_reported_and_rebuilt(
    entry, data, caplog: pytest.LogCaptureFixture, damage: str, file: str, what: str
) -> None:
    path, originals, source = entry
    target = path / file
    if damage == "truncate":
        _truncate(target)
    elif damage == "flip":
        _flip(target, len(originals[file]) // 2)
    else:
        target.unlink()
    with caplog.at_level(logging.WARNING):
        rebuilt = C.cached_dataset(path, "synthetic", source)
    assert source.calls == 2
    (warning,) = _warnings(caplog, C.__name__)
    assert "\n" not in warning and str(path) in warning and file in warning and what in warning
    pd.testing.assert_frame_equal(rebuilt.interactions, data.interactions)
    pd.testing.assert_frame_equal(rebuilt.items, data.items)
    assert {p.name: p.read_bytes() for p in path.glob("*.parquet")} == originals
    # The rebuilt entry is trusted again: read from disk, no new preparation, no warning.
    caplog.clear()
    again = C.cached_dataset(path, "synthetic", source)
    assert source.calls == 2 and _warnings(caplog, C.__name__) == []
    pd.testing.assert_frame_equal(again.interactions, data.interactions)


@pytest.mark.parametrize(
    ("manifest", "what"),
    [
        ('{"format_version": 1, "files": ["interactions.parquet"]}', "format version 1"),
        ('{"format_version": 2, "fi', "unreadable"),
    ],
)
def test_old_or_damaged_manifest_is_rebuilt(
    entry, caplog: pytest.LogCaptureFixture, manifest: str, what: str
) -> None:
    path, originals, source = entry
    (path / C.MANIFEST).write_text(manifest)
    with caplog.at_level(logging.WARNING):
        C.cached_dataset(path, "synthetic", source)
    (warning,) = _warnings(caplog, C.__name__)
    assert what in warning and str(path) in warning
    assert source.calls == 2
    assert C.check_entry(path)[0] is not None


def test_no_entry_is_no_warning(tmp_path: Path, data, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        C.cached_dataset(tmp_path / "datasets" / "x", "x", _Source(data))
    assert _warnings(caplog, C.__name__) == []


# ----------------------------------------------------------------------------------------------
# text-embedding cache (safetensors; the real shipped all-MiniLM-L6-v2)
# ----------------------------------------------------------------------------------------------
TEXTS = ["A space opera with starships.", "Easy pasta recipes.", "Jazz"]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    cache = tmp_path_factory.mktemp("embeddings")
    with pytest.MonkeyPatch.context() as mp:  # the shipped model: no hub lookups
        for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            mp.setenv(variable, "1")
        result = T.encode_texts_with_info(TEXTS, cache_dir=cache, progress=False)
    return result.cache_path, result.embeddings


@pytest.mark.parametrize("damage", ["truncate", "flip", "old"])
def test_damaged_embedding_file_is_reported_and_re_encoded(
    encoded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, damage: str
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    original_path, original = encoded
    path = tmp_path / "embeddings" / original_path.name
    path.parent.mkdir()
    good = original_path.read_bytes()
    path.write_bytes(good)
    if damage == "truncate":
        _truncate(path)
    elif damage == "flip":
        _flip(path, len(good) - 7)  # inside one of the last floats of the tensor data
    else:  # a file written before the digest existed: no sha256 in its metadata
        from safetensors.torch import save_file

        save_file({"embeddings": original.clone()}, str(path), metadata={"n": str(len(TEXTS))})
    with caplog.at_level(logging.WARNING):
        again = T.encode_texts_with_info(TEXTS, cache_dir=tmp_path, progress=False)
    assert not again.cache_hit
    (warning,) = _warnings(caplog, T.__name__)
    assert "\n" not in warning and path.name in warning and "re-encoding" in warning
    torch.testing.assert_close(again.embeddings, original, atol=1e-6, rtol=0)
    # The rewritten file passes the check (a hit) and holds the re-encoded vectors. (Its bytes
    # may differ from the first file's: safetensors writes the metadata in hash-map order.)
    hit = T.encode_texts_with_info(TEXTS, cache_dir=tmp_path, progress=False)
    assert hit.cache_hit and torch.equal(hit.embeddings, again.embeddings)


def test_flipped_byte_would_load_without_the_digest(encoded, tmp_path: Path) -> None:
    """Why the digest: safetensors itself loads the altered file without complaint."""
    from safetensors.torch import load_file

    original_path, original = encoded
    path = tmp_path / original_path.name
    path.write_bytes(original_path.read_bytes())
    _flip(path, path.stat().st_size - 7)
    assert not torch.equal(load_file(str(path))["embeddings"], original)
