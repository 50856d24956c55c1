"""Scenario -> padded token tensors -> Lightning DataModule.

Tokens (0 padding, 1..N items, N + 1 BOS) are defined in :mod:`recmig.tokens`.

Training data are *streams* of next-item windows, chosen by the strategy:

- ``target``: each user's target-domain training sequence;
- ``source``: each user's source-domain sequence;
- ``pooled``: both domains merged in time order;
- ``overlap``: one example per warm user who has both source and target training data (what
  embedding-mapping strategies fit on).

A sequence ``s_1..s_n`` becomes inputs ``[BOS, s_1, ..., s_{n-1}]`` and labels ``s_1..s_n``,
cut from the end into windows of ``max_len`` positions, so every training item is predicted
exactly once per epoch in one causal pass. (RecBole's SASRec instead makes every prefix its own
sample, which costs ``n`` forward passes per user.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import DataLoader

from recmig.batches import (
    HISTORIES,
    SEQUENCES,
    HistoryLayout,
    TrainBatch,
    UserBatch,
    check_reads,
    user_batch,
)
from recmig.data.tensors import (
    ScenarioTensors,
    TrainingMatrix,
    history_tokens,
    sequence_windows,
    sparse_rows,
)
from recmig.tokens import STREAMS, is_item


@dataclass
class LoaderConfig:
    """Batching options."""

    max_len: int = 50
    """Longest history a user model sees (SASRec's max_seq_length)."""
    batch_size: int = 256
    """Training windows per batch."""
    eval_batch_size: int = 1024
    """Users per evaluation batch."""
    num_workers: int = 0
    """DataLoader workers; batches are gathered from in-memory tensors, so 0 is usually fastest."""
    item_mask_prob: float = 0.0
    """Augmentation: each input item of a training window is dropped (set to padding) with
    this probability, so the model cannot lean on any single past item. Labels are kept."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.item_mask_prob < 1.0:
            raise ValueError(f"loader.item_mask_prob must be in [0, 1), got {self.item_mask_prob}")


class CrossDomainDataModule(L.LightningDataModule):
    """Serves the training streams a strategy asks for and the val/test user batches."""

    def __init__(
        self,
        tensors: ScenarioTensors,
        streams: tuple[str, ...],
        cfg: LoaderConfig,
        schedule: Callable[[int], tuple[str, ...]] | None = None,
        ratings: bool = False,
        reads: frozenset[str] = SEQUENCES,
    ):
        """``streams``: every stream training may use (none for a closed-form strategy);
        ``schedule(epoch)``: the ones an epoch uses (default: all of them), for strategies that
        train in phases; ``ratings``: add the ratings the rating objective needs
        (:class:`TrainBatch` ``*_ratings``, :class:`UserBatch` ``relevant_ratings`` and, with
        ``inputs``, ``input_ratings``); ``reads``: the inputs the strategy reads (its
        ``reads``), which every batch provides (:mod:`recmig.batches`)."""
        super().__init__()
        unknown = set(streams) - set(STREAMS)
        if unknown:
            raise ValueError(f"unknown training streams {sorted(unknown)}; known: {STREAMS}")
        self.tensors = tensors
        self.cfg = cfg
        self.schedule = schedule or (lambda epoch: streams)
        self.ratings = ratings
        self.reads = check_reads(reads, "CrossDomainDataModule")
        self.windows = {s: tensors.windows(s) for s in streams}
        self.train_data = self.epoch_data(0) if streams else {}
        self.eval_data = {split: self._eval_batches(split) for split in ("val", "test")}

    def epoch_data(self, epoch: int) -> dict[str, torch.Tensor]:
        """The training rows of one epoch: its scheduled streams, stacked."""
        wanted = self.schedule(epoch)
        missing = set(wanted) - set(self.windows)
        if missing:
            raise ValueError(f"epoch {epoch} schedules streams {sorted(missing)} not prepared")
        return self._concat([self.windows[s] for s in wanted])

    @staticmethod
    def _concat(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Stack streams; the overlap stream has no windows, so its rows get padding tokens."""
        n = sum(len(p["user"]) for p in parts)
        max_len = max((p["tokens"].shape[1] for p in parts if "tokens" in p), default=1)
        out = {
            "tokens": torch.zeros(n, max_len, dtype=torch.long),
            "labels": torch.zeros(n, max_len, dtype=torch.long),
            "user": torch.cat([p["user"] for p in parts]),
            "stream": torch.cat([p["stream"] for p in parts]),
        }
        start = 0
        for p in parts:
            stop = start + len(p["user"])
            if "tokens" in p:
                out["tokens"][start:stop] = p["tokens"]
                out["labels"][start:stop] = p["labels"]
            start = stop
        return out

    def _eval_batches(self, split: str) -> list[UserBatch]:
        """Precomputed once: evaluation batches are identical every epoch. Each is the
        :func:`user_batch` of the users' histories as ``split`` sees them (the one builder the
        recommender uses too), plus what evaluation alone knows: the held-out items."""
        users = self.tensors.eval_users(split)
        layout = HistoryLayout.of(self.tensors)
        batches = []
        for start in range(0, len(users["user"]), self.cfg.eval_batch_size):
            u = users["user"][start : start + self.cfg.eval_batch_size]
            c = users["is_cold"][start : start + self.cfg.eval_batch_size]
            known = [self.tensors.known_interactions(user, split) for user in u.tolist()]
            batch = user_batch(
                [items for items, _, _ in known],
                layout,
                self.reads,
                ratings=[ratings for _, ratings, _ in known] if self.ratings else None,
                users=u.tolist(),
                is_cold=c,
            )
            batch.relevant = self.tensors.relevance(u, c, split)
            batch.new_items = self.tensors.new_item_mask  # (N_t,) or None: no new_items group
            if self.ratings:  # NaN except the held-out items' ratings
                catalog = self.tensors.target_catalog.expand(len(u), -1)
                ratings = self.tensors.ratings_of(u, catalog)
                batch.relevant_ratings = ratings.masked_fill(~batch.relevant, float("nan"))
            batches.append(batch)
        return batches

    def _train_batch(self, index: list[int]) -> TrainBatch:
        idx = torch.as_tensor(index)
        rows = {k: v[idx] for k, v in self.train_data.items()}
        if self.cfg.item_mask_prob > 0:
            tokens = rows["tokens"]
            real = is_item(tokens, self.tensors.bos)
            drop = real & (torch.rand(tokens.shape) < self.cfg.item_mask_prob)
            rows["tokens"] = tokens.masked_fill(drop, 0)
        users = rows["user"]
        histories = self.tensors.training_histories
        for name in HISTORIES:
            if f"{name}_hist" in self.reads:
                rows[f"{name}_hist"] = histories[name][users]
        if self.ratings:  # ratings of the labels and history items (NaN: none)
            rows["label_ratings"] = self.tensors.ratings_of(users, rows["labels"])
            for name in HISTORIES:
                if f"{name}_hist" in rows:
                    rows[f"{name}_hist_ratings"] = self.tensors.ratings_of(
                        users, rows[f"{name}_hist"]
                    )
        return TrainBatch(**rows)

    def train_dataloader(self) -> DataLoader:
        # Lightning asks again every epoch (reload_dataloaders_every_n_epochs=1 in the trainer
        # config), so a phased strategy gets the streams of the current phase.
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        self.train_data = self.epoch_data(epoch)
        return DataLoader(
            range(len(self.train_data["user"])),
            batch_size=self.cfg.batch_size,
            shuffle=True,
            collate_fn=self._train_batch,
            num_workers=self.cfg.num_workers,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.eval_data[split], batch_size=None, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


__all__ = [
    "CrossDomainDataModule",
    "LoaderConfig",
    "ScenarioTensors",
    "TrainingMatrix",
    "history_tokens",
    "sequence_windows",
    "sparse_rows",
]
