"""What a strategy reads: the two batch types of the strategy contract, and the one builder of
user batches.

- :class:`TrainBatch`: next-item windows of the streams a trained strategy learns from, with
  each row's user histories (the DataModule's training loader);
- :class:`UserBatch`: users whose target catalogue is scored, each from a history of both
  domains. :func:`user_batch` builds it, from a scenario's users (the DataModule's validation
  and test batches) and from any history (the :class:`recmig.serving.Recommender`), so what
  serving scores is what evaluation scored.

A strategy declares which of the optional inputs it reads (``reads``, a subset of
:data:`READABLE`) and the builders provide exactly those: the three histories as (B, L) token
rows for a sequence model, ``inputs`` as a sparse row per user for a closed-form one; an input
it does not declare is None. Fields are attributes (``batch.inputs``); ``batch["inputs"]``
reads the same field (a ``KeyError`` naming the declaration when it is absent), for plugins
written against the string keys recmig batches had before.

Tokens: 0 padding, 1..N items, N + 1 BOS (:mod:`recmig.tokens`). Shapes: B rows, L =
``loader.max_len``, N_t target catalogue items, V vocabulary size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import torch

from recmig.data.scenario import SOURCE, TARGET
from recmig.data.tensors import ScenarioTensors, history_tokens

HISTORIES = ("source", "target", "pooled")
"""The histories a batch can hold (field ``<name>_hist``): the user's source items (every source
domain merged), target items, and both merged in time order."""
READABLE = frozenset({*(f"{name}_hist" for name in HISTORIES), "inputs"})
"""What a strategy may declare in ``reads``."""
WHOLE_FIELDS = frozenset({"new_items"})
"""Fields that describe the catalogue, not one row each."""
SEQUENCES = frozenset(f"{name}_hist" for name in HISTORIES)
"""The reads of a sequence model: every history (the default of trained strategies)."""
MATRIX_ROWS = frozenset({"inputs"})
"""The reads of a model of the interaction matrix (the default of closed-form strategies)."""


def check_reads(reads: frozenset[str], owner: str) -> frozenset[str]:
    """``reads`` itself, or a ValueError naming ``owner`` and what it may declare."""
    unknown = sorted(set(reads) - READABLE)
    if unknown:
        raise ValueError(f"{owner}.reads: unknown inputs {unknown}; known: {sorted(READABLE)}")
    return frozenset(reads)


@dataclass(kw_only=True)
class Batch:
    """What both batch types hold and do: the user's histories when the strategy reads them,
    field access by name, and row selection. Histories end at what the model may see: training
    interactions in a training batch; at test, the warm validation items too."""

    source_hist: torch.Tensor | None = None
    """(B, L) the last L source items (every source domain merged), when read."""
    target_hist: torch.Tensor | None = None
    """(B, L) the last L target items, when read."""
    pooled_hist: torch.Tensor | None = None
    """(B, L) the last L items of both domains in time order, when read."""

    def __getitem__(self, name: str):
        value = getattr(self, name, None) if name in self._names() else None
        if value is None:
            present = sorted(n for n in self._names() if getattr(self, n) is not None)
            raise KeyError(
                f"{type(self).__name__} has no {name!r} (present: {present}); a strategy gets "
                f"the inputs it declares in its reads (one of {sorted(READABLE)})"
            )
        return value

    __iter__ = None  # (a batch is not a sequence of its fields; ``__getitem__`` reads one)

    def __contains__(self, name: str) -> bool:
        return name in self._names() and getattr(self, name) is not None

    def get(self, name: str, default=None):
        return self[name] if name in self else default

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def __len__(self) -> int:
        return len(self["user"])

    def select(self, keep: torch.Tensor) -> Self:
        """The rows where ``keep`` (B,) is true; fields that are not per row (``new_items``)
        are kept whole."""

        def part(name: str):
            value = getattr(self, name)
            per_row = isinstance(value, torch.Tensor) and name not in WHOLE_FIELDS
            return value[keep] if per_row else value

        return dataclasses.replace(self, **{n: part(n) for n in self._names()})

    def history(self, name: str) -> torch.Tensor:
        """(B, L) the ``name`` history (one of :data:`HISTORIES`)."""
        return self[f"{name}_hist"]


@dataclass(kw_only=True)
class TrainBatch(Batch):
    """B training windows of the streams a trained strategy learns from
    (:mod:`recmig.data.loaders`)."""

    user: torch.Tensor
    """(B,) user index of each row."""
    stream: torch.Tensor
    """(B,) stream id (``recmig.tokens.STREAM_ID``) of each row."""
    tokens: torch.Tensor
    """(B, L) input tokens of a window (an ``overlap`` row has none: all padding)."""
    labels: torch.Tensor
    """(B, L) next-item labels of those positions (0: no label)."""
    label_ratings: torch.Tensor | None = None
    """(B, L) the ratings of ``labels`` (NaN: none); only under an objective that needs them."""
    source_hist_ratings: torch.Tensor | None = None
    """(B, L) the ratings of ``source_hist`` (NaN: none), with ``label_ratings``."""
    target_hist_ratings: torch.Tensor | None = None
    """(B, L) the ratings of ``target_hist`` (NaN: none), with ``label_ratings``."""
    pooled_hist_ratings: torch.Tensor | None = None
    """(B, L) the ratings of ``pooled_hist`` (NaN: none), with ``label_ratings``."""

    def history_ratings(self, name: str) -> torch.Tensor:
        """(B, L) the ratings of the ``name`` history."""
        return self[f"{name}_hist_ratings"]


@dataclass(kw_only=True)
class UserBatch(Batch):
    """B users to score: what :meth:`recmig.strategy.Strategy.target_scores` reads. Scoring must
    not depend on ``user``: a recommender scores histories of users outside the scenario
    (user -1) through the same methods. :func:`user_batch` always fills ``user``, ``is_cold``
    and ``excluded``, and the inputs the strategy reads; a strategy that scores for its own
    purpose (a distillation teacher's targets) may build one with only what it reads."""

    user: torch.Tensor | None = None
    """(B,) user index in the scenario (-1: a history from outside it)."""
    is_cold: torch.Tensor | None = None
    """(B,) the user has no target history."""
    excluded: torch.Tensor | None = None
    """(B, N_t) target items the user already has, never recommended again."""
    inputs: torch.Tensor | None = None
    """(B, V) sparse: 1 for every item of the whole history (a repeat counts once), when read."""
    input_ratings: torch.Tensor | None = None
    """(B, V) sparse: the last rating of each rated ``inputs`` item, with ``inputs`` under an
    objective that needs ratings."""
    relevant: torch.Tensor | None = None
    """(B, N_t) [evaluation] the held-out items."""
    relevant_ratings: torch.Tensor | None = None
    """(B, N_t) [evaluation] their ratings, NaN elsewhere; under an objective that needs them."""
    new_items: torch.Tensor | None = None
    """(N_t,) [evaluation] the catalogue items new by construction (the ``new_items`` group)."""


@dataclass
class HistoryLayout:
    """What :func:`user_batch` needs to know of a run to lay histories out."""

    item_domain: np.ndarray
    """(V - 1,) SOURCE or TARGET of each token below BOS (``Scenario.item_domain``)."""
    target_local: np.ndarray
    """(V,) column of each token in the target score matrix, -1 outside the catalogue."""
    max_len: int
    bos: int

    @property
    def vocab_size(self) -> int:
        return self.bos + 1

    @classmethod
    def of(cls, tensors: ScenarioTensors) -> HistoryLayout:
        """The layout of a scenario's tensors."""
        return cls(tensors.scenario.item_domain, tensors.target_local, tensors.max_len, tensors.bos)


def user_batch(
    histories: Sequence[Sequence[int]],
    layout: HistoryLayout,
    reads: frozenset[str],
    ratings: Sequence[Sequence[float]] | None = None,
    users: Sequence[int] | None = None,
    is_cold: torch.Tensor | None = None,
) -> UserBatch:
    """The batch of users with these histories: each one's item tokens in time order, and with
    ``ratings`` (NaN: unrated) ``input_ratings`` too when ``inputs`` is read. ``users``: their
    scenario indices (None: -1, histories from outside the scenario). ``is_cold`` (B,): the
    users' evaluation groups (None: cold when the history holds no target item)."""
    n = len(histories)
    arrays = [np.asarray(h, dtype=np.int64) for h in histories]
    domains = [layout.item_domain[a] for a in arrays]
    excluded = torch.zeros(n, int((layout.target_local >= 0).sum()), dtype=torch.bool)
    for row, (items, domain) in enumerate(zip(arrays, domains, strict=True)):
        excluded[row, layout.target_local[items[domain == TARGET]]] = True
    fields: dict[str, torch.Tensor] = {}
    sides = {"source": SOURCE, "target": TARGET, "pooled": None}  # pooled: both, in time order
    for name, side in sides.items():
        if f"{name}_hist" not in reads:
            continue
        rows = [
            history_tokens(
                items if side is None else items[domain == side], layout.max_len, layout.bos
            )
            for items, domain in zip(arrays, domains, strict=True)
        ]
        fields[f"{name}_hist"] = (
            torch.from_numpy(np.stack(rows))
            if rows
            else torch.zeros(0, layout.max_len, dtype=torch.long)
        )
    if "inputs" in reads:
        fields.update(_interaction_rows(arrays, ratings, layout.vocab_size))
    user = torch.as_tensor(list(users) if users is not None else [-1] * n, dtype=torch.long)
    cold = ~excluded.any(1) if is_cold is None else is_cold
    return UserBatch(user=user, is_cold=cold, excluded=excluded, **fields)


def _interaction_rows(
    arrays: list[np.ndarray], ratings: Sequence[Sequence[float]] | None, vocab: int
) -> dict[str, torch.Tensor]:
    """``inputs`` (and, given ratings, ``input_ratings``) of :class:`UserBatch`."""
    n = len(arrays)
    rows = np.repeat(np.arange(n, dtype=np.int64), [len(a) for a in arrays])
    keys = rows * vocab + (np.concatenate(arrays) if arrays else np.zeros(0, np.int64))
    # A repeated interaction counts once, as in training (np.unique: sorted, so the tensor is
    # coalesced by construction).
    out = {"inputs": _sparse(np.unique(keys), None, n, vocab)}
    if ratings is not None:  # the last rating of a pair; unrated ones absent
        values = np.concatenate([np.asarray(r, np.float64) for r in ratings] or [np.zeros(0)])
        rated = ~np.isnan(values)
        last = dict(zip(keys[rated].tolist(), values[rated], strict=True))
        ordered = np.array(sorted(last), np.int64)
        out["input_ratings"] = _sparse(ordered, np.array([last[k] for k in ordered]), n, vocab)
    return out


def _sparse(keys: np.ndarray, values: np.ndarray | None, n: int, vocab: int) -> torch.Tensor:
    """A coalesced sparse (n, vocab) float tensor from sorted row * vocab + token keys (values:
    1 when None)."""
    indices = torch.from_numpy(np.vstack([keys // vocab, keys % vocab]))
    data = torch.ones(len(keys)) if values is None else torch.as_tensor(values).float()
    return torch.sparse_coo_tensor(
        indices, data, (n, vocab), is_coalesced=True, check_invariants=False
    )
