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
    whenever the weights changed (:meth:`recmig.strategy.TransferStrategy.refresh`). A
    ``set_trained_items(mask)`` method, when present, receives the (vocab_size,) bool mask of
    the tokens with a training interaction as soon as the encoder is built
    (:meth:`recmig.strategy.StrategyContext.item_encoder`)."""

    def __call__(self, active: torch.Tensor | None) -> torch.Tensor:
        """The (vocab_size, dim) token table; see :meth:`ItemEncoder.forward`."""


@runtime_checkable
class SupportsTextFeatures(Protocol):
    """An item encoder that reads item text with a frozen language model and exposes those
    features: what the strategies that compare items by their text (``content_knn``,
    ``text_ease``, ``ridge_transfer``'s text neighbours, ``text_prior``) read, through
    :func:`recmig.linear.item_text`."""

    def text_features(self) -> torch.Tensor:
        """(N, d) the language model's features of items 1..N (row j is token j + 1)."""


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

    def text_features(self) -> torch.Tensor:
        """The frozen, standardised features the projection reads (text feature protocol)."""
        return self.features


class TextIdItemEncoder(TextItemEncoder):
    """Text vectors plus a learned ID residual for the items seen in training ("text + ID"):

        e_i = P t_i + m_i r_i,    m_i = 1 if item i has a training interaction, else 0

    ``P t_i`` is :class:`TextItemEncoder`'s projection of the frozen language-model vector;
    ``r_i`` (D,) starts at zero, so training starts from the text model, and lets an item
    that users did interact with move away from where its text puts it (collaborative signal
    a 384 -> D projection shared by all items cannot express). An item nobody interacted with
    in training (a new item, a zero-shot catalogue) keeps exactly its text vector: its
    residual is masked out, so the softmax's push on it as a negative never reaches ``r_i``.
    The mask is a saved buffer, so a served model scores with the mask it was trained with.
    """

    def __init__(self, vocab_size: int, dim: int, items: pd.DataFrame, **text_options):
        super().__init__(vocab_size, dim, items, **text_options)
        self.residual = nn.Parameter(torch.zeros(vocab_size - 2, dim))
        # Until set_trained_items: no item is known to be trained, so none gets a residual.
        self.register_buffer("trained", torch.zeros(vocab_size - 2, 1))

    def set_trained_items(self, mask: torch.Tensor) -> None:
        """``mask`` (vocab_size,) bool: tokens with a training interaction (padding and BOS
        rows are ignored)."""
        if mask.shape != (self.vocab_size,):
            raise ValueError(
                f"trained-item mask of shape {tuple(mask.shape)}, expected ({self.vocab_size},)"
            )
        self.trained.copy_(mask[1:-1].to(self.trained.dtype).unsqueeze(1))
        self.refresh()

    def item_vectors(self, active: torch.Tensor | None) -> torch.Tensor:
        return super().item_vectors(active) + self.residual * self.trained
