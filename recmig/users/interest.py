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

from recmig.dropout import FastDropout, use_fast_dropout
from recmig.users.packing import Packing


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
        self.dropout = FastDropout(dropout)
        self.out = nn.Linear(dim, dim)

    def forward(self, items: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != 0).unsqueeze(-1).to(items.dtype)
        running = torch.cumsum(self.dropout(items) * mask, dim=1)
        count = torch.cumsum(mask, dim=1).clamp_min(1.0)
        return self.out(running / count)


def additive_mask(blocked: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean attention mask (True: may not attend) as the additive one attention scores
    take: 0 where attending is allowed, -inf where it is not."""
    return torch.zeros_like(blocked, dtype=dtype).masked_fill(blocked, float("-inf"))


class SelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` (batch first, same parameters) whose training forward pass
    computes the attention itself, so that the attention probabilities' dropout is a
    :class:`~recmig.dropout.FastDropout` on a CPU: inside
    ``scaled_dot_product_attention`` it is PyTorch's per-element Bernoulli draw. Evaluation and
    other devices use ``scaled_dot_product_attention``. Self-attention only (query = key =
    value), as ``nn.TransformerEncoderLayer`` calls it."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__(dim, num_heads, dropout=dropout, batch_first=True)
        self.attention_dropout = FastDropout(dropout)

    def forward(self, query, key, value, attn_mask=None, need_weights=False, **unused):
        batch, length, dim = query.shape
        heads = self.num_heads
        qkv = torch.nn.functional.linear(query, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = additive_mask(attn_mask, q.dtype)
        if self.training and query.device.type == "cpu":
            scores = q @ k.transpose(-1, -2) * (dim // heads) ** -0.5
            if attn_mask is not None:
                scores = scores + attn_mask
            out = self.attention_dropout(scores.softmax(-1)) @ v
        else:
            p = self.dropout if self.training else 0.0
            out = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=p
            )
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))
        return out, None


class CausalTransformer(UserModel):
    """SASRec (Kang & McAuley, 2018): self-attention over the history with a causal mask.

    Defaults follow RecBole's SASRec: 2 layers, 2 heads, inner size 256, dropout 0.5,
    learned positions, post-layer-norm blocks with GELU.

    ``pack``: run a batch's windows packed several to a row (:mod:`recmig.users.packing`):
    the same outputs at every real position without the padding work (on the default scenario
    0.57 of a training batch's positions are real; a cold user's target history is one). The
    outputs at padding positions are zeros then. False runs the padded rows as they are.
    """

    def __init__(
        self,
        dim: int,
        max_len: int = 50,
        num_layers: int = 2,
        num_heads: int = 2,
        inner_dim: int = 256,
        dropout: float = 0.5,
        pack: bool = True,
    ):
        super().__init__()
        self.pack = pack
        self.positions = nn.Embedding(max_len, dim)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = FastDropout(dropout)
        layer = nn.TransformerEncoderLayer(
            dim,
            num_heads,
            inner_dim,
            dropout,
            activation="gelu",
            batch_first=True,
            layer_norm_eps=1e-12,
        )
        # Same parameters (and checkpoint keys) as torch's; only the dropouts draw cheaper masks.
        layer.self_attn = SelfAttention(dim, num_heads, dropout)
        encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.encoder = use_fast_dropout(encoder)
        self.register_buffer(
            "causal",
            torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), 1),
            persistent=False,
        )

    def forward(self, items: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        packing = Packing.of(tokens) if self.pack else None
        if packing is None:
            length = tokens.shape[1]
            x = items + self.positions.weight[:length]
            return self.blocks(x, self.causal[:length, :length])
        x = packing.pack(items) + self.positions(packing.positions)
        return packing.unpack(self.blocks(x, packing.blocked))

    def blocks(self, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        """Embedding norm and dropout, then the transformer blocks, each computed as torch's
        post-norm ``TransformerEncoderLayer`` computes it (same modules), with ``blocked``
        (True: may not attend) as an additive mask made once for every layer."""
        x = self.dropout(self.norm(x))
        mask = additive_mask(blocked, x.dtype)
        for layer in self.encoder.layers:
            x = layer.norm1(x + layer.dropout1(layer.self_attn(x, x, x, attn_mask=mask)[0]))
            inner = layer.dropout(layer.activation(layer.linear1(x)))
            x = layer.norm2(x + layer.dropout2(layer.linear2(inner)))
        return x
