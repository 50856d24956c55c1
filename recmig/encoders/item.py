"""Item encoders: every item index -> a vector of the model's width.

An item encoder returns the whole token table at once, shape ``(vocab_size, dim)``: row 0 is
padding (zeros), rows ``1..N`` are items, row ``N + 1`` is BOS (see :mod:`recmig.data.loaders`).
Returning the table lets one matrix product score a user against a domain's full catalogue.

What a strategy needs of an item encoder is :class:`SupportsTokenTable`; :class:`ItemEncoder`
is the base class that fills in the padding and BOS rows and the serving cache, and leaves one
abstract method, :meth:`ItemEncoder.item_vectors`.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Protocol, runtime_checkable

import pandas as pd
import torch
from torch import nn

from recmig.dropout import FastDropout
from recmig.encoders.text import DEFAULT_TEXT_MODEL, encode_texts, render_item_texts


@runtime_checkable
class SupportsTokenTable(Protocol):
    """What a strategy calls on an item encoder (``encoder._target_`` may name any class that
    has it, an :class:`ItemEncoder` or not). A ``refresh()`` method, when present, is called
    whenever the weights changed (:meth:`recmig.strategy.TransferStrategy.refresh`)."""

    def __call__(self, active: torch.Tensor | None) -> torch.Tensor:
        """The (vocab_size, dim) token table; see :meth:`ItemEncoder.forward`."""


class ItemEncoder(nn.Module, abc.ABC):
    """Base: subclasses must fill :meth:`item_vectors`; padding and BOS rows are handled here."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.dim = dim
        self.bos = nn.Parameter(torch.randn(dim) * 0.02)
        self.frozen: torch.Tensor | None = None  # see freeze(); never saved in checkpoints

    @abc.abstractmethod
    def item_vectors(self, active: torch.Tensor | None) -> torch.Tensor:
        """(vocab_size - 2, dim): vectors of items 1..N. ``active``: see :meth:`forward`."""

    @torch.no_grad()
    def freeze(self) -> None:
        """Serving: compute the token table once and return it from every later evaluation-mode
        call, until :meth:`refresh` (a recommender scores one user at a time, and recomputing
        a 15k-item projection per request would dominate its latency)."""
        self.frozen = None
        self.frozen = self(None)

    def refresh(self) -> None:
        """The weights changed: drop the frozen table. Override in an encoder that caches
        anything computed from its weights (``super().refresh()`` first)."""
        self.frozen = None

    def forward(self, active: torch.Tensor | None) -> torch.Tensor:
        """The (vocab_size, dim) token table. ``active``: the item tokens of the training batch
        the table is for (any shape; padding and BOS are ignored), so that an encoder too
        costly to run on the whole catalogue per step (the adapted language model) spends its
        gradient-carrying work on them; None where no gradient is wanted from the encoder
        (evaluation, a frozen teacher, a detached use). It is required so no training path
        can forget it: a bare call once left LoRA adapters without gradient in a strategy."""
        if self.frozen is not None and not self.training:
            return self.frozen
        items = self.item_vectors(active)
        pad = items.new_zeros(1, self.dim)
        return torch.cat([pad, items, self.bos[None]], dim=0)


class IdItemEncoder(ItemEncoder):
    """A learned embedding per item id: no sharing across domains beyond the user model."""

    def __init__(self, vocab_size: int, dim: int, items: pd.DataFrame | None = None):
        super().__init__(vocab_size, dim)
        self.embedding = nn.Parameter(torch.randn(vocab_size - 2, dim) * 0.02)

    def item_vectors(self, active: torch.Tensor | None) -> torch.Tensor:
        return self.embedding


class TextItemEncoder(ItemEncoder):
    """Frozen language-model embeddings of item text, projected to the model width.

    The language model runs once per (model, template, texts) and its output is cached on disk
    (:func:`recmig.encoders.text.encode_texts`); training only learns the projection. Because
    items of every domain go through the same model and projection, a user's interest in one
    domain is comparable with items of another even when no item id is shared.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        items: pd.DataFrame,
        model: str = DEFAULT_TEXT_MODEL,
        template: str = "{title}. Genres: {genre}",
        max_length: int = 64,
        batch_size: int = 256,
        cache_dir: str | Path | None = None,
        dropout: float = 0.0,
        precision: str = "auto",
    ):
        super().__init__(vocab_size, dim)
        if len(items) != vocab_size - 2:
            raise ValueError(f"encoder: {len(items)} item rows for a vocabulary of {vocab_size}")
        texts = render_item_texts(items, template)
        features = encode_texts(
            texts,
            model,
            cache_dir=cache_dir,
            batch_size=batch_size,
            max_length=max_length,
            precision=precision,
        )
        # Standardising the frozen features keeps the projection's start well-conditioned:
        # sentence embeddings share a large common direction that carries no item identity.
        features = (features - features.mean(0)) / features.std(0).clamp_min(1e-6)
        # Not saved in checkpoints: rebuilt (from the on-disk cache) when the module is built.
        self.register_buffer("features", features, persistent=False)
        self.projection = nn.Sequential(FastDropout(dropout), nn.Linear(features.shape[1], dim))

    def item_vectors(self, active: torch.Tensor | None) -> torch.Tensor:
        return self.projection(self.features)
