"""User interest models: a history of item vectors -> the user's interest after each step.

Both models are causal: output ``t`` depends on inputs ``0..t`` only, so one forward pass over
a window trains every next-item prediction in it. Inputs are right-padded (token 0), so a real
position never attends to padding and no key mask is needed.

Shapes: ``items`` (B, L, D) item vectors, ``tokens`` (B, L) token ids -> (B, L, D).

What a strategy needs of a user model is :class:`SupportsInterest`; :class:`UserModel` is the
base class that derives ``last`` from the abstract ``forward``.
"""

from __future__ import annotations

import abc
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class SupportsInterest(Protocol):
    """What a strategy calls on a user model (``user_model._target_`` may name any class that
    has both, a :class:`UserModel` or not)."""

    def __call__(self, items: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, D) item vectors, (B, L) tokens -> (B, L, D) interest after each position."""

    def last(self, items: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B, D): the interest after the whole history."""


class UserModel(nn.Module, abc.ABC):
    """Base: subclasses must fill :meth:`forward`, causally (see the module docstring)."""

    @abc.abstractmethod
    def forward(self, items: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, D) item vectors, (B, L) tokens -> (B, L, D) interest after each position."""

    def last(self, items: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B, D): the interest after the whole history (last non-padding position). Override
        when the model has a cheaper way than running :meth:`forward` over every position."""
        out = self(items, tokens)
        last = (tokens != 0).sum(1).clamp_min(1) - 1
        return out[torch.arange(len(out), device=out.device), last]


class MeanInterest(UserModel):
    """Interest = W * mean of the item vectors seen so far (BOS included, which acts as a prior)."""

    def __init__(self, dim: int, max_len: int = 50, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, dim)

    def forward(self, items: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != 0).unsqueeze(-1).to(items.dtype)
        running = torch.cumsum(self.dropout(items) * mask, dim=1)
        count = torch.cumsum(mask, dim=1).clamp_min(1.0)
        return self.out(running / count)


class CausalTransformer(UserModel):
    """SASRec (Kang & McAuley, 2018): self-attention over the history with a causal mask.

    Defaults follow RecBole's SASRec: 2 layers, 2 heads, inner size 256, dropout 0.5,
    learned positions, post-layer-norm blocks with GELU.
    """

    def __init__(
        self,
        dim: int,
        max_len: int = 50,
        num_layers: int = 2,
        num_heads: int = 2,
        inner_dim: int = 256,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.positions = nn.Embedding(max_len, dim)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            dim,
            num_heads,
            inner_dim,
            dropout,
            activation="gelu",
            batch_first=True,
            layer_norm_eps=1e-12,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.register_buffer(
            "causal",
            torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), 1),
            persistent=False,
        )

    def forward(self, items: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        x = items + self.positions.weight[:length]
        x = self.dropout(self.norm(x))
        return self.encoder(x, mask=self.causal[:length, :length], is_causal=True)
