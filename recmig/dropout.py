"""Dropout whose CPU mask costs a quarter of PyTorch's, or less.

On a CPU, ``torch.nn.Dropout`` draws its mask with ``bernoulli_``, one 32-bit number of the
Mersenne Twister per element, serially: about 17 ns an element on the reference machine. That
made dropout half of every SASRec training step (128 windows x 50 positions x 256 inner units
per feed-forward layer) and a third of a LoRA step. :class:`FastDropout` draws one 64-bit
number per four elements instead and compares each 16-bit quarter with a threshold; a
probability with few significant bits (SASRec's 0.5: one) is compared a bit plane at a time,
one random bit per element and bit (:func:`keep_mask`). It draws from the same global
generator, so ``seed_everything`` and checkpointed generator states govern it exactly as
before. The drop probability is rounded to a multiple of 1/65536 (0.5 and 0.1 become 0.5 and
0.100006...) and the kept values are scaled by the inverse of the rounded keep rate, so the
expectation is unchanged. Elsewhere (CUDA, whose fused dropout is fast) and in evaluation mode
it is ``nn.Dropout``.
"""

from __future__ import annotations

import torch
from torch import nn

_LEVELS = 1 << 16  # the drop probability's resolution: 16 bits
_BIT_VALUES = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
_MAX_BIT_PLANES = 4  # above this many random words per 64 elements, 16-bit draws cost less


def _random_words(count: int) -> torch.Tensor:
    """``count`` uniform 64-bit words from the global generator."""
    return torch.randint(-(2**63), 2**63 - 1, (count,), dtype=torch.int64)


def _below_by_bit_planes(n: int, dropped: int) -> torch.Tensor:
    """(n,) bool: a uniform 16-bit number U < ``dropped`` for each of n elements, compared one
    bit plane at a time, 64 elements per word (bit-sliced): from the most significant bit
    down to ``dropped``'s lowest set bit (below it no U can fall under ``dropped`` unless it
    already has), so a probability with few significant bits (0.5: one) takes that many
    random words per 64 elements instead of 16."""
    words = (n + 63) // 64
    lowest = (dropped & -dropped).bit_length() - 1
    below = torch.zeros(words, dtype=torch.int64)
    equal = torch.full((words,), -1, dtype=torch.int64)  # U's bits so far equal dropped's
    for bit in range(15, lowest - 1, -1):
        draw = _random_words(words)
        if (dropped >> bit) & 1:
            below |= equal & ~draw
            equal &= draw
        else:
            equal &= ~draw
    return ((below.view(torch.uint8).unsqueeze(-1) & _BIT_VALUES) != 0).view(-1)[:n]


def keep_mask(shape: torch.Size, p: float) -> tuple[torch.Tensor, float]:
    """A boolean mask of ``shape`` whose entries are True with probability ``1 - p`` (``p``
    rounded to a multiple of 1/65536) and the scale that keeps the expectation: 1 / keep rate."""
    dropped = round(p * _LEVELS)
    if not 0 <= dropped < _LEVELS:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    n = shape.numel()
    scale = _LEVELS / (_LEVELS - dropped)
    if dropped == 0:
        return torch.ones(shape, dtype=torch.bool), scale
    planes = 16 - ((dropped & -dropped).bit_length() - 1)
    if planes <= _MAX_BIT_PLANES:
        return ~_below_by_bit_planes(n, dropped).view(shape), scale
    draws = _random_words((n + 3) // 4).view(torch.int16)[:n].view(shape)  # on [-32768, 32767]
    return draws >= dropped - _LEVELS // 2, scale


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with the cheaper CPU mask of :func:`keep_mask` (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.numel() == 0:
            return x
        if x.device.type != "cpu":
            return super().forward(x)
        keep, scale = keep_mask(x.shape, self.p)
        return x * keep * scale


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Dropout`` submodule of ``model`` (a user model, a Hugging Face
    language model, peft's adapter dropouts) with a :class:`FastDropout` of the same
    probability, in place; returns ``model``. Dropout a model applies functionally (attention
    probabilities inside ``scaled_dot_product_attention``) stays PyTorch's."""
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
    return model
