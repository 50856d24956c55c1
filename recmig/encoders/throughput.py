"""How fast the language model encodes item texts, against what the hardware can do.

`recmig benchmark` prints, for fp32 and for the precision ``auto`` picks: seconds, items/s, the
useful FLOP rate (the encoder's work on real tokens, padding excluded) and its ratio to the
machine's own matmul peak in that precision, measured here, so the figure means the same on any
CPU or GPU; plus the smallest cosine between the fast vectors and the fp32 ones.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from recmig.encoders.text import (
    AUTOCAST_DTYPES,
    encode_texts_with_info,
    load_text_model,
    resolve_precision,
    tokenize_texts,
)


def matmul_peak_gflops(precision: str, device: torch.device, size: int = 2048, repeats: int = 5):
    """Best GFLOP/s of a square matmul in ``precision``: the ceiling a dense encoder can reach."""
    dtype = AUTOCAST_DTYPES.get(precision, torch.float32)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up kernels and caches
        _synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def useful_flops(net: nn.Module, lengths: list[int]) -> float:
    """FLOPs of a transformer encoder on sequences of ``lengths`` real tokens: 2 per weight per
    token in the linear layers (the pooler works once per text and is left out) plus the
    attention products, 4 x width x length per token and layer."""
    linear = sum(
        m.weight.numel()
        for name, m in net.named_modules()
        if isinstance(m, nn.Linear) and "pooler" not in name
    )
    config = net.config
    layers = getattr(config, "num_hidden_layers", 0)
    width = getattr(config, "hidden_size", 0)
    tokens = sum(lengths)
    squares = sum(n * n for n in lengths)
    return 2.0 * linear * tokens + 4.0 * layers * width * squares


def encoding_figures(
    texts: list[str],
    model: str,
    *,
    batch_size: int,
    max_length: int,
    device: torch.device,
    cache_dir: str,
) -> dict[str, float | str]:
    """Encode ``texts`` in fp32 (uncached) and in the precision ``auto`` resolves to (into the
    empty ``cache_dir``), then read the latter back from the cache."""
    tokenizer, net = load_text_model(model, device)
    lengths = tokenize_texts(tokenizer, texts, max_length).lengths
    work = useful_flops(net, lengths)
    del net
    fast = resolve_precision("auto", device)
    results: dict[str, float | str] = {
        "item encoding texts": len(texts),
        "item encoding real tokens": sum(lengths),
        "item encoding work (GFLOP)": work / 1e9,
        "item encoding auto precision": fast,
    }
    vectors = {}
    for precision in dict.fromkeys(["fp32", fast]):
        peak = matmul_peak_gflops(precision, device)
        info = encode_texts_with_info(
            texts,
            model,
            cache_dir=cache_dir,
            batch_size=batch_size,
            max_length=max_length,
            progress=False,
            device=device,
            precision=precision,
            use_cache=precision == fast,
        )
        vectors[precision] = info.embeddings
        rate = work / info.seconds / 1e9
        results[f"item encoding {precision} (s)"] = info.seconds
        results[f"item encoding {precision} (items/s)"] = len(texts) / info.seconds
        results[f"item encoding {precision} (GFLOP/s)"] = rate
        results[f"matmul peak {precision} (GFLOP/s)"] = peak
        results[f"item encoding {precision} / matmul peak"] = rate / peak
    cosine = nn.functional.cosine_similarity(vectors[fast], vectors["fp32"], dim=-1)
    results[f"item encoding {fast} vs fp32, min cosine"] = float(cosine.min())
    hit = encode_texts_with_info(
        texts, model, cache_dir=cache_dir, max_length=max_length, progress=False, device=device
    )
    results["item encoding cached (s)"] = hit.seconds
    return results


def encoding_profile(
    texts: list[str], model: str, *, batch_size: int, max_length: int, device: torch.device
) -> dict[str, float]:
    """Share of the encoding time (precision ``auto``) of each of the costliest operators, from
    the torch profiler: where the time goes that does not reach the matmul peak."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        encode_texts_with_info(
            texts,
            model,
            batch_size=batch_size,
            max_length=max_length,
            progress=False,
            device=device,
            use_cache=False,
        )
    events = profiler.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:6]
    return {f"encoding profile: {e.key} (share)": e.self_cpu_time_total / total for e in top}


def synthetic_titles(texts: list[str], count: int, seed: int = 0) -> list[str]:
    """``count`` product-style titles of 4 to 20 words (mean 12, longer than the ML-1M
    titles with genres), drawn from the word frequencies of ``texts``: a large catalogue's
    encoding cost without its data."""
    rng = np.random.default_rng(seed)
    words = [w for t in texts for w in t.split()]
    lengths = rng.integers(4, 21, size=count)
    picked = rng.choice(len(words), size=int(lengths.sum()))
    ends = np.cumsum(lengths)
    return [
        " ".join(words[i] for i in picked[end - n : end])
        for n, end in zip(lengths, ends, strict=True)
    ]
