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
from functools import cached_property

import lightning as L
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader

from recmig.data.scenario import COLD_TEST, COLD_VAL, SOURCE, TARGET, Scenario
from recmig.tokens import STREAM_ID, STREAMS, bos_token, is_item, vocab_size


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


def history_tokens(items: list[int] | np.ndarray, max_len: int, bos: int) -> np.ndarray:
    """The last ``max_len`` tokens a model sees for a history, BOS-prefixed when it fits."""
    items = list(items)
    tokens = items[-max_len:] if len(items) >= max_len else [bos, *items]
    out = np.zeros(max_len, dtype=np.int64)
    out[: len(tokens)] = tokens
    return out


def sequence_windows(seq: np.ndarray, max_len: int, bos: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut one sequence into (inputs, labels) windows of ``max_len`` positions, right-padded."""
    tokens = np.concatenate([[bos], seq])
    n = len(seq)
    inputs, labels = [], []
    for end in range(n, 0, -max_len):
        start = max(0, end - max_len)
        window_in = np.zeros(max_len, dtype=np.int64)
        window_out = np.zeros(max_len, dtype=np.int64)
        window_in[: end - start] = tokens[start:end]
        window_out[: end - start] = seq[start:end]
        inputs.append(window_in)
        labels.append(window_out)
    return np.stack(inputs), np.stack(labels)


@dataclass
class TrainingMatrix:
    """The training interactions as sparse user x token matrices: what a closed-form strategy
    (:class:`recmig.closed_form.ClosedFormStrategy`) is fitted on. Columns are tokens (0 padding,
    1..N items, N + 1 BOS: those two columns stay empty), rows are user indices."""

    interactions: sp.csr_matrix
    """(num_users, vocab_size) float32: 1 where the user interacted with the item in training,
    both domains (a cold user's row holds only source items)."""
    ratings: sp.csr_matrix
    """(num_users, vocab_size) float32: the rating of each rated training interaction (explicit
    entries; pairs without a rating are absent, so a dataset without ratings gives none)."""
    item_domain: np.ndarray
    """(vocab_size - 1,) SOURCE or TARGET per token below BOS (``Scenario.item_domain``)."""
    zero_shot: bool = False
    """The target domain has no training interaction by design (``Scenario.zero_shot``)."""


class ScenarioTensors:
    """Per-user histories and evaluation targets of a scenario, as tensors."""

    def __init__(self, scenario: Scenario, max_len: int):
        self.scenario = scenario
        self.max_len = max_len
        self.vocab_size = vocab_size(scenario.num_items)
        self.bos = bos_token(self.vocab_size)
        n_users = scenario.num_users
        train = scenario.train
        by_user = {
            side: train[train["domain"] == side].groupby("user")["item"].agg(list).to_dict()
            for side in (SOURCE, TARGET)
        }
        merged = train.groupby("user")["item"].agg(list).to_dict()
        self.sequences = {
            "source": by_user[SOURCE],
            "target": by_user[TARGET],
            "pooled": merged,
        }
        warm = scenario.warm
        self.warm_items = {
            split: warm[warm["split"] == split].groupby("user")["item"].agg(list).to_dict()
            for split in ("val", "test")
        }
        val_items = self.warm_items["val"]

        def table(per_user: dict[int, list[int]], extra: dict[int, list[int]] | None = None):
            out = np.zeros((n_users, max_len), dtype=np.int64)
            for u in range(n_users):
                items = list(per_user.get(u, []))
                if extra is not None and u in extra:
                    items.extend(extra[u])
                out[u] = history_tokens(items, max_len, self.bos)
            return torch.from_numpy(out)

        # Validation histories stop at the training data; test histories add the validation
        # items, as in leave-one-out evaluation (RecBole does the same). Under a random split
        # they are appended after the training items in time order.
        self.history = {
            "val": {
                "source": table(by_user[SOURCE]),
                "target": table(by_user[TARGET]),
                "pooled": table(merged),
            },
            "test": {
                "source": table(by_user[SOURCE]),
                "target": table(by_user[TARGET], val_items),
                "pooled": table(merged, val_items),
            },
        }
        self.target_catalog = torch.from_numpy(scenario.catalog(TARGET))
        self.source_catalog = torch.from_numpy(scenario.catalog(SOURCE))
        local = np.full(self.vocab_size, -1, dtype=np.int64)
        local[scenario.catalog(TARGET)] = np.arange(len(self.target_catalog))
        self.target_local = local  # item index -> column in the target score matrix
        self.target_train_items = by_user[TARGET]
        self.cold_items = scenario.cold.groupby("user")["item"].agg(list).to_dict()
        # (N_t,) bool: target catalogue positions of the items new by construction, or None.
        self.new_item_mask = (
            torch.from_numpy(np.isin(scenario.catalog(TARGET), scenario.new_items))
            if len(scenario.new_items)
            else None
        )

    def input_matrix(self, split: str) -> sp.csr_matrix:
        """(num_users, vocab_size) binary float32: every item a user had interacted with before
        ``split``'s held-out items, both domains: the training interactions, plus the warm
        validation items for ``test``. The same histories the sequence models see at
        evaluation (:attr:`history`), without their ``max_len`` cut."""
        train = self.scenario.train
        users, items = train["user"].to_numpy(), train["item"].to_numpy()
        if split == "test":
            val = self.scenario.warm[self.scenario.warm["split"] == "val"]
            users = np.concatenate([users, val["user"].to_numpy()])
            items = np.concatenate([items, val["item"].to_numpy()])
        shape = (self.scenario.num_users, self.vocab_size)
        matrix = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=shape)
        matrix.data[:] = 1.0  # a repeated interaction counts once
        return matrix

    def rating_matrix(self, split: str) -> sp.csr_matrix:
        """(num_users, vocab_size) float32: the ratings of :meth:`input_matrix`'s interactions
        (explicit entries; pairs without a rating are absent), the last one of a repeated pair."""
        rated = self.scenario.train
        if split == "test":
            val = self.scenario.warm[self.scenario.warm["split"] == "val"]
            rated = pd.concat([rated, val])
        rated = rated.dropna(subset=["rating"]).drop_duplicates(["user", "item"], keep="last")
        shape = (self.scenario.num_users, self.vocab_size)
        values = rated["rating"].to_numpy(np.float32)
        return sp.csr_matrix((values, (rated["user"], rated["item"])), shape=shape)

    @cached_property
    def target_popularity(self) -> torch.Tensor:
        """(N_t,) training users of each target item, in catalogue order: how a user whose
        scores carry no signal is ranked (:func:`recmig.evaluation.ranking.with_fallback`), the
        counts the popularity baseline ranks by."""
        train = self.scenario.train
        pairs = train.loc[train["domain"] == TARGET, ["user", "item"]].drop_duplicates()
        counts = np.bincount(pairs["item"].to_numpy(), minlength=self.vocab_size)
        return torch.from_numpy(counts[self.target_catalog.numpy()].astype(np.float32))

    def training_matrix(self) -> TrainingMatrix:
        """The training interactions as sparse matrices (see :class:`TrainingMatrix`)."""
        return TrainingMatrix(
            self.input_matrix("val"),
            self.rating_matrix("val"),
            self.scenario.item_domain,
            zero_shot=self.scenario.zero_shot,
        )

    @cached_property
    def _rating_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every (user, item) rating of the scenario, training and held out, as sorted keys
        and their ratings, for vectorised lookup: the rating objective reads its labels
        (training positions only) and its evaluation targets (held-out items) here. Built on
        first use, so ranking runs never pay for it."""
        scenario = self.scenario
        rated = pd.concat([scenario.train, scenario.cold, scenario.warm])
        keys = rated["user"].to_numpy(np.int64) * self.vocab_size + rated["item"].to_numpy()
        order = np.argsort(keys, kind="stable")
        values = rated["rating"].to_numpy(np.float32)[order]
        return torch.from_numpy(keys[order]), torch.from_numpy(values)

    def ratings_of(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Rating user ``users[b]`` gave each item of ``items[b, ...]``; NaN where there is none
        (padding, BOS, unrated pairs, datasets without ratings)."""
        known, values = self._rating_index
        if len(known) == 0:
            return torch.full(items.shape, float("nan"))
        shape = (-1,) + (1,) * (items.dim() - 1)
        keys = (users.view(shape) * self.vocab_size + items).reshape(-1)
        pos = torch.searchsorted(known, keys).clamp(max=len(known) - 1)
        nan = torch.tensor(float("nan"))
        return torch.where(known[pos] == keys, values[pos], nan).reshape(items.shape)

    def windows(self, stream: str) -> dict[str, torch.Tensor]:
        """All training windows of one stream."""
        if stream == "overlap":
            users = sorted(set(self.sequences["source"]) & set(self.sequences["target"]))
            users_t = torch.tensor(users, dtype=torch.long)
            return {"user": users_t, "stream": torch.full_like(users_t, STREAM_ID[stream])}
        if not self.sequences[stream]:
            raise ValueError(
                f"the strategy trains on the {stream!r} stream, but this scenario has no "
                f"{stream} training interaction"
                + (
                    " (data.scenario.zero_shot: the target platform has no history); strategies "
                    "that reach target items from source histories through text run there "
                    "(content_knn, text_prior, pooled)"
                    if self.scenario.zero_shot
                    else ""
                )
            )
        inputs, labels, users = [], [], []
        for u, seq in sorted(self.sequences[stream].items()):
            x, y = sequence_windows(np.asarray(seq), self.max_len, self.bos)
            inputs.append(x)
            labels.append(y)
            users.extend([u] * len(x))
        users_t = torch.tensor(users, dtype=torch.long)
        return {
            "tokens": torch.from_numpy(np.concatenate(inputs)),
            "labels": torch.from_numpy(np.concatenate(labels)),
            "user": users_t,
            "stream": torch.full_like(users_t, STREAM_ID[stream]),
        }

    def eval_users(self, split: str) -> dict[str, torch.Tensor]:
        """Users evaluated on a split: warm (held-out items) then cold (their cold group)."""
        warm = torch.from_numpy(np.sort(self.scenario.warm["user"].unique()))
        group = COLD_VAL if split == "val" else COLD_TEST
        cold_rows = self.scenario.cold[self.scenario.cold["group"] == group]
        cold = torch.from_numpy(np.sort(cold_rows["user"].unique()))
        return {
            "user": torch.cat([warm, cold]),
            "is_cold": torch.cat(
                [torch.zeros_like(warm, dtype=torch.bool), torch.ones_like(cold, dtype=torch.bool)]
            ),
        }

    def relevance_and_exclusion(self, users: torch.Tensor, is_cold: torch.Tensor, split: str):
        """(B, N_target) bool masks: the held-out items, and the training items to skip."""
        n = len(self.target_catalog)
        relevant = torch.zeros(len(users), n, dtype=torch.bool)
        excluded = torch.zeros(len(users), n, dtype=torch.bool)
        for row, (u, c) in enumerate(zip(users.tolist(), is_cold.tolist(), strict=True)):
            if c:
                relevant[row, self.target_local[np.asarray(self.cold_items[u])]] = True
                continue
            seen = list(self.target_train_items.get(u, []))
            if split == "test":
                seen.extend(self.warm_items["val"][u])
            excluded[row, self.target_local[np.asarray(seen, dtype=np.int64)]] = True
            relevant[row, self.target_local[np.asarray(self.warm_items[split][u])]] = True
        return relevant, excluded


def sparse_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    """Rows of a scipy matrix as a sparse COO torch tensor (len(rows), columns)."""
    part = matrix[rows].tocoo()
    indices = torch.from_numpy(np.vstack([part.row, part.col]).astype(np.int64))
    values = torch.from_numpy(part.data.astype(np.float32))
    return torch.sparse_coo_tensor(indices, values, part.shape, check_invariants=True).coalesce()


class CrossDomainDataModule(L.LightningDataModule):
    """Serves the training streams a strategy asks for and the val/test user batches."""

    def __init__(
        self,
        tensors: ScenarioTensors,
        streams: tuple[str, ...],
        cfg: LoaderConfig,
        schedule: Callable[[int], tuple[str, ...]] | None = None,
        ratings: bool = False,
        input_matrix: bool = False,
    ):
        """``streams``: every stream training may use (none for a closed-form strategy);
        ``schedule(epoch)``: the ones an epoch uses (default: all of them), for strategies that
        train in phases; ``ratings``: add the ratings batch keys the rating objective needs
        (``label_ratings``, ``<name>_hist_ratings``, ``relevant_ratings``); ``input_matrix``:
        add ``inputs`` to evaluation batches, each user's whole history as a sparse (B,
        vocab_size) row (:meth:`ScenarioTensors.input_matrix`), what closed-form strategies
        score from (with ``ratings`` also ``input_ratings``, the ratings of those histories)."""
        super().__init__()
        unknown = set(streams) - set(STREAMS)
        if unknown:
            raise ValueError(f"unknown training streams {sorted(unknown)}; known: {STREAMS}")
        self.tensors = tensors
        self.cfg = cfg
        self.schedule = schedule or (lambda epoch: streams)
        self.ratings = ratings
        self.input_matrix = input_matrix
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

    def _eval_batches(self, split: str) -> list[dict[str, torch.Tensor]]:
        """Precomputed once: evaluation batches are identical every epoch."""
        users = self.tensors.eval_users(split)
        inputs = self.tensors.input_matrix(split) if self.input_matrix else None
        rated = self.tensors.rating_matrix(split) if self.input_matrix and self.ratings else None
        batches = []
        for start in range(0, len(users["user"]), self.cfg.eval_batch_size):
            u = users["user"][start : start + self.cfg.eval_batch_size]
            c = users["is_cold"][start : start + self.cfg.eval_batch_size]
            relevant, excluded = self.tensors.relevance_and_exclusion(u, c, split)
            batch = {"user": u, "is_cold": c, "relevant": relevant, "excluded": excluded}
            if self.tensors.new_item_mask is not None:  # (N_t,): the evaluator's new_items group
                batch["new_items"] = self.tensors.new_item_mask
            if self.ratings:  # NaN except the held-out items' ratings
                catalog = self.tensors.target_catalog.expand(len(u), -1)
                ratings = self.tensors.ratings_of(u, catalog)
                batch["relevant_ratings"] = ratings.masked_fill(~relevant, float("nan"))
            batch.update({f"{k}_hist": v[u] for k, v in self.tensors.history[split].items()})
            if inputs is not None:
                batch["inputs"] = sparse_rows(inputs, u.numpy())
            if rated is not None:
                batch["input_ratings"] = sparse_rows(rated, u.numpy())
            batches.append(batch)
        return batches

    def _train_batch(self, index: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(index)
        batch = {k: v[idx] for k, v in self.train_data.items()}
        if self.cfg.item_mask_prob > 0:
            tokens = batch["tokens"]
            real = is_item(tokens, self.tensors.bos)
            drop = real & (torch.rand(tokens.shape) < self.cfg.item_mask_prob)
            batch["tokens"] = tokens.masked_fill(drop, 0)
        users = batch["user"]
        batch.update({f"{k}_hist": v[users] for k, v in self.tensors.history["val"].items()})
        if self.ratings:  # ratings of the labels and history items (NaN: none)
            batch["label_ratings"] = self.tensors.ratings_of(users, batch["labels"])
            for k in self.tensors.history["val"]:
                batch[f"{k}_hist_ratings"] = self.tensors.ratings_of(users, batch[f"{k}_hist"])
        return batch

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
