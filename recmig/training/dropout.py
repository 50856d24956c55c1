"""Dropout whose CPU mask costs a quarter of PyTorch's.

On a CPU, ``torch.nn.Dropout`` draws its mask with ``bernoulli_``, one 32-bit number of the
Mersenne Twister per element, serially: about 17 ns an element on the reference machine. That
made dropout half of every SASRec training step (128 windows x 50 positions x 256 inner units
per feed-forward layer) and a third of a LoRA step. :class:`FastDropout` draws one 64-bit
number per four elements instead and compares each 16-bit quarter with a threshold, from the
same global generator, so ``seed_everything`` and checkpointed generator states govern it
exactly as before. The drop probability is rounded to a multiple of 1/65536 (0.5 and 0.1 become
0.5 and 0.100006...) and the kept values are scaled by the inverse of the rounded keep rate, so
the expectation is unchanged. Elsewhere (CUDA, whose fused dropout is fast) and in evaluation
mode it is ``nn.Dropout``.
"""

from __future__ import annotations

import torch
from torch import nn

_LEVELS = 1 << 16  # one draw of 64 bits gives four 16-bit uniform draws


def keep_mask(shape: torch.Size, p: float) -> tuple[torch.Tensor, float]:
    """A boolean mask of ``shape`` whose entries are True with probability ``1 - p`` (``p``
    rounded to a multiple of 1/65536) and the scale that keeps the expectation: 1 / keep rate."""
    dropped = round(p * _LEVELS)
    if not 0 <= dropped < _LEVELS:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    n = shape.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    draws = words.view(torch.int16)[:n].view(shape)  # uniform on [-32768, 32767]
    return draws >= dropped - _LEVELS // 2, _LEVELS / (_LEVELS - dropped)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with the cheaper CPU mask of :func:`keep_mask` (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.numel() == 0:
            return x
        if x.device.type != "cpu":
            return super().forward(x)
        keep, scale = keep_mask(x.shape, self.p)
        return x * (keep.to(x.dtype) * scale)


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
