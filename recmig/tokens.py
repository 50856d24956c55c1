"""The token vocabulary every loader, encoder, user model and strategy shares.

0 is padding, 1..N are items (the scenario's item indices, in order), N + 1 is BOS: the
"no history yet" token that lets a user model produce an interest for a user with an empty
history (a cold-start user in the target domain). An item table therefore has N + 2 rows.

Model code imports these from here rather than from the data loaders, so that what a token
means is one small dependency-free contract.
"""

from __future__ import annotations

import torch

PAD = 0
"""The padding token (its row of an item table is zeros)."""

STREAMS = ("target", "source", "pooled", "overlap")
"""The kinds of training windows a strategy may ask for (see :mod:`recmig.data.loaders`)."""
STREAM_ID = {name: i for i, name in enumerate(STREAMS)}
"""The ``stream`` batch key's value for each stream."""


def vocab_size(num_items: int) -> int:
    """Tokens for ``num_items`` items: padding, the items, BOS."""
    return num_items + 2


def bos_token(vocab: int) -> int:
    """The BOS token of a vocabulary of ``vocab`` tokens: its last one."""
    return vocab - 1


def catalog_positions(catalog: torch.Tensor, vocab: int) -> torch.Tensor:
    """(vocab,) column of each token in a catalogue's score matrix; -1 if not in it."""
    local = torch.full((vocab,), -1, dtype=torch.long, device=catalog.device)
    local[catalog] = torch.arange(len(catalog), device=catalog.device)
    return local


def is_item(tokens: torch.Tensor, bos: int) -> torch.Tensor:
    """Where a token tensor holds an item (not padding, not BOS)."""
    return (tokens != PAD) & (tokens != bos)
