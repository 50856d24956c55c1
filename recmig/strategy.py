"""The contract a strategy fills in, and the parts strategies share.

Every strategy is a :class:`Strategy`: it scores the target catalogue for a batch of users
(:meth:`Strategy.target_scores`, what the evaluator and the recommender call) from the inputs it
declares in ``reads`` (:mod:`recmig.batches`: the users' histories as token rows, or their whole
histories as sparse matrix rows). How it learns makes two siblings, and one function,
:func:`recmig.training.fit.fit_strategy`, tells them apart:

- a **trained** strategy (:class:`TransferStrategy`) learns for epochs, in the shared Lightning
  module, from the training windows of its ``streams`` (``target``, ``source``, ``pooled``,
  ``overlap``; see :mod:`recmig.data.loaders`), in ``phases`` if it trains in stretches
  (:class:`Phase`). It fills in :meth:`TransferStrategy.training_loss` (the loss on a
  :class:`~recmig.batches.TrainBatch`), :meth:`TransferStrategy.target_interest` and
  :meth:`TransferStrategy.target_items` (a user vector and the target catalogue's item vectors,
  whose dot product ranks the catalogue);
- a **closed-form** strategy (:class:`recmig.closed_form.ClosedFormStrategy`: popularity,
  ItemKNN, EASE, ...) is fitted once from the training interactions as sparse matrices and
  fills in ``fit`` and :meth:`Strategy.target_scores`.

The abstract methods must be filled in: a subclass that lacks one fails when it is built, with
Python's ``TypeError`` naming the class and the method. Everything else is a hook with a
default, whose docstring says when to override it; :meth:`TransferStrategy.prepare`, for
example, receives the training interactions as sparse matrices before the first epoch (a
distillation teacher fitted in closed form).

A strategy is built as ``Strategy(context, **options)`` where ``options`` are the keys of its
Hydra config (``configs/strategy/<name>.yaml``) besides ``name``; an unknown key is an error.
It registers under the ``recmig.strategies`` entry-point group, exactly like a plugin.

What a batch holds is written in :mod:`recmig.batches` (fields, shapes, and which are there
when). Scoring must not depend on ``batch.user``: a recommender (:mod:`recmig.serving`) scores
histories of users outside the scenario (user -1) through the same methods.

The objective (``objective`` in the run config: ranking, rating or a plugin; see
:mod:`recmig.objectives`) is a component of the strategy, ``self.objective``: a strategy whose
losses come from its ``window_loss``, ``history_loss`` and ``soft_target_loss`` supports every
objective and lists the ones it was checked with in ``objectives``.
"""

from __future__ import annotations

import abc
import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, final

import torch
import torch.nn.functional as F
from torch import nn

from recmig.batches import SEQUENCES, TrainBatch, UserBatch
from recmig.encoders.item import IdItemEncoder, SupportsTokenTable
from recmig.objectives import Objective, RankingObjective
from recmig.tokens import STREAM_ID, bos_token, is_item
from recmig.users.interest import MeanInterest, SupportsInterest

if TYPE_CHECKING:  # (the accounting library loads only for runs that use privacy)
    from recmig.data.tensors import TrainingMatrix
    from recmig.privacy import GaussianRelease


@dataclass
class StrategyContext:
    """What every strategy is built from: sizes, catalogues and component factories."""

    vocab_size: int
    dim: int
    source_catalog: torch.Tensor
    """(N_s,) item indices of the source domain (empty in a single-domain scenario)."""
    target_catalog: torch.Tensor
    """(N_t,) item indices of the target domain; scores are computed over these."""
    make_item_encoder: Callable[[], SupportsTokenTable]
    make_user_model: Callable[[], SupportsInterest]
    objective: Objective | None = None
    """What the losses fit and the evaluator ranks by (None: ranking)."""
    source_names: tuple[str, ...] = ("source",)
    """The source domains' names (``Scenario.source_names``)."""
    item_source: torch.Tensor | None = None
    """(vocab_size,) index into ``source_names`` of each source item token, -1 elsewhere
    (padding, target items, BOS); None: every source catalogue item is in the one domain."""
    trained_items: torch.Tensor | None = None
    """(vocab_size,) bool: tokens with a training interaction, given to every item encoder
    that asks for it (``set_trained_items``; an ID residual only for items seen in training);
    None: not known (the encoder keeps its own default)."""
    release: GaussianRelease | None = None
    """The privacy mechanism a strategy sends each user's source representation through
    (``privacy`` in the run config; None or disabled: no mechanism)."""

    def __post_init__(self) -> None:
        if self.objective is None:
            self.objective = RankingObjective(bos=self.bos)
        if self.item_source is None:
            self.item_source = torch.full((self.vocab_size,), -1, dtype=torch.long)
            self.item_source[self.source_catalog] = 0

    @property
    def bos(self) -> int:
        """The BOS token (see :mod:`recmig.tokens`)."""
        return bos_token(self.vocab_size)

    @property
    def num_sources(self) -> int:
        return len(self.source_names)

    def item_encoder(self) -> SupportsTokenTable:
        """A new item encoder from ``make_item_encoder``, checked against the contract, told
        which items have training interactions when it asks (``set_trained_items``)."""
        encoder = conforming(self.make_item_encoder(), SupportsTokenTable, "encoder")
        if self.trained_items is not None and callable(getattr(encoder, "set_trained_items", None)):
            encoder.set_trained_items(self.trained_items)
        return encoder

    def user_model(self) -> SupportsInterest:
        """A new user model from ``make_user_model``, checked against the contract."""
        return conforming(self.make_user_model(), SupportsInterest, "user_model")

    def mean_model(self) -> SupportsInterest:
        """An order-free user model of the run's width (:class:`MeanInterest`), for a part of a
        strategy that reads a history as a set whatever the run's user model."""
        return MeanInterest(self.dim)

    def id_encoder(self) -> SupportsTokenTable:
        """A learned vector per item id of the run's width (:class:`IdItemEncoder`), whatever
        the run's encoder: for a part of a strategy that only ranks for users with
        interactions (a warm model), where the text's vectors are not what carries the signal."""
        return IdItemEncoder(self.vocab_size, self.dim)


def conforming(component: object, protocol: type, option: str):
    """``component`` itself when it has every method of ``protocol`` (inheriting the base class
    is optional); a TypeError naming its class and the missing methods otherwise, when the
    strategy is built rather than at its first batch."""
    methods = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
    missing = [
        name for name in ["__call__", *methods] if not callable(getattr(component, name, None))
    ]
    if missing:
        raise TypeError(
            f"{option}: {type(component).__name__} lacks {', '.join(missing)} "
            f"(the {protocol.__name__} contract, {protocol.__module__})"
        )
    return component


@dataclass(frozen=True)
class Phase:
    """A stretch of training epochs that learns from some of a strategy's streams."""

    streams: tuple[str, ...]
    epochs: int | None = None
    """How many epochs it lasts; None for the last phase, which runs until training ends."""


class Tower(nn.Module):
    """An item encoder and a user model that together score items for users."""

    def __init__(self, context: StrategyContext, items: SupportsTokenTable | None = None):
        """``items``: the item encoder (None: a new one of the run's, ``context.item_encoder``)."""
        super().__init__()
        self.items = context.item_encoder() if items is None else items
        self.users = context.user_model()

    def table(self, active: torch.Tensor | None) -> torch.Tensor:
        """The item encoder's token table for a batch whose items are ``active`` (None: no
        gradient wanted from the encoder; see :meth:`ItemEncoder.forward`)."""
        return self.items(active)

    def interests(self, tokens: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(B, L) tokens -> (B, L, D) interest after each position, over ``table``."""
        return self.users(lookup(table, tokens), tokens)

    def interest(self, tokens: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(B, L) history tokens -> (B, D) interest after the whole history, over ``table``."""
        return self.users.last(lookup(table, tokens), tokens)


def lookup(table: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``table[tokens]`` as an embedding lookup: the same values, but its backward pass adds
    rows (``index_add``) instead of indexing's accumulating ``index_put``, several times
    slower on a CPU."""
    return F.embedding(tokens, table)


def set_weight_streams(streams: tuple[str, ...], set_weight: float) -> tuple[str, ...]:
    """A strategy's streams with ``overlap`` added when its ``strategy.set_weight`` > 0 (the
    rows :meth:`TransferStrategy.with_set_loss` trains on); a negative weight is an error."""
    if set_weight < 0:
        raise ValueError(f"strategy.set_weight must be >= 0, got {set_weight}")
    return (*streams, "overlap") if set_weight > 0 else streams


def has_items(history: torch.Tensor, bos: int) -> torch.Tensor:
    """(B,) whether each (B, L) history holds any item besides padding and BOS."""
    return is_item(history, bos).any(1)


def domain_history(
    history: torch.Tensor, item_source: torch.Tensor, domain: int, bos: int
) -> torch.Tensor:
    """The items of one source domain in a (B, L) merged source history, as a history of its
    own: same order, left-aligned, BOS-prefixed when it fits (as the loaders build them), so
    every user model reads it like any history. With one source domain this returns exactly
    the merged history. (A merged history is the last L source items, so a domain's history
    is its items among those.)"""
    keep = item_source[history] == domain
    # A stable sort on "not kept" moves the kept tokens to the front in their order.
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    items = torch.where(keep, history, 0).gather(1, order)
    with_bos = torch.cat([torch.full_like(items[:, :1], bos), items[:, :-1]], dim=1)
    return torch.where((keep.sum(1) < history.shape[1]).unsqueeze(1), with_bos, items)


def combine_domains(values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(B, S, D) one vector per source domain -> (B, D) their mean over the domains where the
    user has history (``present`` (B, S)); over all domains for a user with none. With one
    domain this is the domain's vector exactly."""
    weights = present.to(values.dtype)
    weights = torch.where(present.any(1, keepdim=True), weights, torch.ones_like(weights))
    return (weights.unsqueeze(-1) * values).sum(1) / weights.sum(1, keepdim=True)


class Strategy(nn.Module, abc.ABC):
    """What every strategy provides, trained or closed form: scores of the target catalogue for
    a batch of users (:meth:`target_scores`). Subclass :class:`TransferStrategy` or
    :class:`recmig.closed_form.ClosedFormStrategy`, not this class."""

    kind: ClassVar[str] = ""
    """How the strategy learns, for ``recmig strategies`` (set by the two kinds' base classes)."""
    description: ClassVar[str] = ""
    """One line shown by ``recmig strategies``."""
    reads: ClassVar[frozenset[str]] = SEQUENCES
    """The batch inputs the strategy reads (:data:`recmig.batches.READABLE`); batches provide
    exactly these. A strategy whose options change what it reads sets it on the instance, as
    it does ``streams``."""
    streams: ClassVar[tuple[str, ...]] = ()
    """Training streams the strategy learns from (none: it has no training windows)."""
    needs_source: ClassVar[bool] = True
    """False only for strategies that also run on single-domain scenarios."""
    objectives: ClassVar[tuple[str, ...]] = ("ranking",)
    """Objectives the strategy supports: a trained strategy whose losses come from its
    objective's ``window_loss`` and ``history_loss`` supports ``rating`` too; a closed-form one
    lists those its fit and scores were written for."""
    releases_source: ClassVar[bool] = False
    """True for strategies whose target side reads a user's source history only through one
    per-user vector released once per run (``StrategyContext.release``), so ``privacy``
    applies to them."""

    def __init__(self, context: StrategyContext):
        super().__init__()
        self.context = context
        self.register_buffer("target_catalog", context.target_catalog, persistent=False)
        self.register_buffer("source_catalog", context.source_catalog, persistent=False)
        self.register_buffer("item_source", context.item_source, persistent=False)
        self.objective = context.objective

    def streams_for_epoch(self, epoch: int) -> tuple[str, ...]:
        """The streams one epoch trains on: what the DataModule serves that epoch."""
        return self.streams

    @property
    def min_epochs(self) -> int:
        """Epochs before early stopping may end training (none by default)."""
        return 0

    @abc.abstractmethod
    def target_scores(self, batch: UserBatch) -> torch.Tensor:
        """(B, N_t) what the evaluator ranks the target catalogue by, in ``target_catalog``
        order (under ``rating`` the predicted ratings)."""

    def scores_and_weights(self, batch: UserBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`target_scores` and :meth:`transfer_weights` of one batch (the evaluator's
        test pass). A strategy whose weights come out of its scoring overrides it to compute
        both in one forward pass."""
        return self.target_scores(batch), self.transfer_weights(batch)

    def refresh(self) -> None:
        """Called before each evaluation and at the start of training: recompute caches that
        depend on the weights (e.g. item vectors of a fine-tuned language model) in every
        component that has such a cache. Override only for a cache of the strategy itself
        (``super().refresh()`` first)."""
        for module in self.modules():
            if module is not self and callable(getattr(module, "refresh", None)):
                module.refresh()

    def upgraded_key(self, name: str) -> str | None:
        """The current name of a parameter an earlier recmig saved under ``name`` (None:
        unchanged), so earlier checkpoints still load. Subclasses add their own renames
        (``super().upgraded_key(name)`` first)."""
        return "objective.scale" if name == "rating_scale" else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            new = self.upgraded_key(key[len(prefix) :])
            if new is not None:
                state_dict[prefix + new] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def group_parameters(self) -> dict[str, tuple[str, ...]] | None:
        """The weights that score each user group, as name prefixes of this module's state
        (``{"cold": ("student.",), "warm": ("teacher.",)}``), when the groups share none; then
        ``callbacks=per_group`` keeps each group's weights from its own best validation epoch
        (:mod:`recmig.training.group_selection`). None (the default): the groups share
        weights, and one epoch is selected for both."""
        return None

    def transfer_weights(self, batch: UserBatch) -> dict[str, torch.Tensor]:
        """Per-user weights the strategy gave each domain when scoring ``batch`` (name ->
        (B,)), recorded per test user and summarised in ``metrics.json``; none by default.
        Override in a strategy that weighs source domains per user."""
        return {}

    def transfer_summary(self) -> dict[str, float]:
        """Strategy-level numbers for ``metrics.json`` (e.g. learned global domain weights);
        none by default. Override when the strategy learns such numbers."""
        return {}


class TransferStrategy(Strategy):
    """Base class of trained strategies (see the module docstring): subclasses set the class
    variables and must fill in the abstract methods; the other methods are hooks with
    defaults."""

    kind = "trained"
    streams: ClassVar[tuple[str, ...]] = ("target",)

    @property
    def phases(self) -> tuple[Phase, ...]:
        """The training schedule, in order; every phase but the last lasts ``epochs``. Override
        in a strategy that trains in phases (its option of how long a phase lasts is known
        only once it is built); default: one phase on every stream."""
        return (Phase(self.streams),)

    @final
    def phase_starts(self) -> list[int]:
        """The first (0-based) epoch of each of :attr:`phases`."""
        starts = [0]
        for phase in self.phases[:-1]:
            if not isinstance(phase.epochs, int) or phase.epochs < 1:
                raise TypeError(
                    f"{type(self).__name__}.phases: {phase} is not the last phase, so it needs "
                    "a number of epochs >= 1"
                )
            starts.append(starts[-1] + phase.epochs)
        return starts

    @final
    def streams_for_epoch(self, epoch: int) -> tuple[str, ...]:
        """The streams one epoch trains on, read from :attr:`phases`: what the DataModule
        serves that epoch."""
        return self.phases[bisect.bisect_right(self.phase_starts(), epoch) - 1].streams

    @final
    @property
    def min_epochs(self) -> int:
        """Epochs before early stopping may end training, from :attr:`phases`: the last phase
        must start and train one epoch (with a single phase, no minimum)."""
        starts = self.phase_starts()
        return starts[-1] + 1 if len(starts) > 1 else 0

    def prepare(self, matrix: TrainingMatrix) -> None:
        """Called once before training (every fit, resumed ones too) with the training
        interactions as sparse matrices: fit what the strategy learns from in closed form
        rather than by gradient (a distillation teacher). Default: nothing."""

    @abc.abstractmethod
    def training_loss(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """Losses on a training batch; key ``loss`` is optimised, all keys are logged."""

    @abc.abstractmethod
    def target_interest(self, batch: UserBatch) -> torch.Tensor:
        """(B, D) user vectors for the target domain, cold users included."""

    @abc.abstractmethod
    def target_items(self) -> torch.Tensor:
        """(N_t, D) vectors of the target catalogue, in ``target_catalog`` order."""

    def target_scores(self, batch: UserBatch) -> torch.Tensor:
        """The objective's predictions from interest . item vector (under ``rating`` the
        predicted ratings). Override only to score other than by that dot product."""
        return self.interest_scores(self.target_interest(batch))

    def interest_scores(self, interest: torch.Tensor) -> torch.Tensor:
        """(B, N_t) the objective's predictions from (B, D) target interests."""
        return self.objective.predictions(interest @ self.target_items().T, self.target_catalog)

    def source_histories(self, source_hist: torch.Tensor) -> list[torch.Tensor]:
        """The merged (B, L) source history split into one history per source domain, in
        ``context.source_names`` order (a one-source scenario: the history itself)."""
        return [
            domain_history(source_hist, self.item_source, d, self.context.bos)
            for d in range(self.context.num_sources)
        ]

    @staticmethod
    def rows(batch: TrainBatch, stream: str) -> TrainBatch:
        """The rows of a mixed batch that belong to one stream."""
        return batch.select(batch.stream == STREAM_ID[stream])

    def set_loss(
        self, interest: torch.Tensor, items: torch.Tensor, pairs: TrainBatch
    ) -> torch.Tensor:
        """The cold-start question as a loss: (B, D) interests read from each user's source
        history, scored over the (N_t, D) target catalogue's vectors, fit to the user's whole
        target training set (``pairs``: ``overlap`` rows) by the objective's
        :meth:`~recmig.objectives.Objective.history_loss` (under ``ranking`` the set-level
        multinomial likelihood of Mult-VAE and EASE's regression target)."""
        return self.objective.history_loss(interest @ items.T, pairs, "target", self.target_catalog)

    def with_set_loss(
        self,
        losses: dict[str, torch.Tensor],
        weight: float,
        tower: Tower,
        batch: TrainBatch,
        cold_interest: Callable[[TrainBatch, torch.Tensor], torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """``losses`` plus ``weight`` x :meth:`set_loss` on the batch's ``overlap`` rows (the
        stream a strategy adds when its ``set_weight`` > 0), logged as ``loss_set``.
        ``cold_interest(pairs, table)`` is the (B, D) interest the strategy gives a user with
        no target history, read from ``pairs.source_hist`` over ``tower``'s item table:
        what it ranks cold users by, so the loss trains exactly the cold path."""
        pairs = self.rows(batch, "overlap")
        if weight == 0 or len(pairs) == 0:
            return losses
        table = tower.table(pairs.target_hist)
        cold = self.set_loss(cold_interest(pairs, table), table[self.target_catalog], pairs)
        return {**losses, "loss": losses["loss"] + weight * cold, "loss_set": cold}

    def stream_loss(
        self, tower: Tower, batch: TrainBatch, stream: str, catalog: torch.Tensor
    ) -> torch.Tensor:
        """The objective on one stream's windows over one catalogue (0 when absent)."""
        part = self.rows(batch, stream)
        if len(part) == 0:
            return batch.tokens.new_zeros((), dtype=torch.float)
        table = tower.table(part.labels)
        interests = tower.interests(part.tokens, table)
        return self.objective.window_loss(interests, part, table, catalog)


class MappedTransfer(TransferStrategy):
    """Base of strategies that keep one tower per domain and map source to target interest.

    Each tower learns from its own domain's next-item loss; a subclass defines how a user's
    source history becomes a target interest (:meth:`map_interest`) and how that map is fit on
    warm overlapping users (:meth:`transfer_loss`, on ``overlap`` rows). Cold users are scored
    with the mapped interest, warm users with their own target interest.
    """

    streams = ("source", "target", "overlap")
    reads = frozenset({"source_hist", "target_hist"})
    objectives = ("ranking", "rating")

    def __init__(self, context: StrategyContext, transfer_weight: float = 1.0):
        super().__init__(context)
        self.source = Tower(context)
        self.target = Tower(context)
        self.transfer_weight = transfer_weight

    @abc.abstractmethod
    def map_domain(self, domain: int, history: torch.Tensor) -> torch.Tensor:
        """(B, L) history of one source domain -> (B, D) interest in the target tower's
        space, by that domain's map."""

    def map_interest(self, source_hist: torch.Tensor) -> torch.Tensor:
        """(B, L) merged source history -> (B, D): each source domain's history through its
        own map, averaged over the domains the user has history in. Override to combine the
        domains otherwise (e.g. with learned weights)."""
        histories = self.source_histories(source_hist)
        mapped = torch.stack([self.map_domain(d, h) for d, h in enumerate(histories)], 1)
        present = torch.stack([has_items(h, self.context.bos) for h in histories], 1)
        return combine_domains(mapped, present)

    @abc.abstractmethod
    def transfer_loss(self, pairs: TrainBatch) -> torch.Tensor:
        """Loss that fits the map on overlap rows (users with both histories)."""

    def training_loss(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        source_loss = self.stream_loss(self.source, batch, "source", self.source_catalog)
        target_loss = self.stream_loss(self.target, batch, "target", self.target_catalog)
        pairs = self.rows(batch, "overlap")
        transfer = self.transfer_loss(pairs) if len(pairs.user) else source_loss.new_zeros(())
        loss = source_loss + target_loss + self.transfer_weight * transfer
        return {
            "loss": loss,
            "loss_source": source_loss,
            "loss_target": target_loss,
            "loss_transfer": transfer,
        }

    def target_interest(self, batch: UserBatch) -> torch.Tensor:
        mapped = self.map_interest(batch.source_hist)
        own = self.target.interest(batch.target_hist, self.target.table(None))
        return torch.where(batch.is_cold.unsqueeze(1), mapped, own)

    def target_items(self) -> torch.Tensor:
        return self.target.table(None)[self.target_catalog]
