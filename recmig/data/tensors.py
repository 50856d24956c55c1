"""Scenario -> padded token tensors: what training, evaluation and serving all read.

Tokens (0 padding, 1..N items, N + 1 BOS) are defined in :mod:`recmig.tokens`. This module has
no Lightning in it, so a finished run is served without importing the training stack
(:mod:`recmig.data.loaders` builds the Lightning DataModule on top of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recmig.data.scenario import COLD_TEST, COLD_VAL, SOURCE, TARGET, Scenario
from recmig.tokens import STREAM_ID, bos_token, vocab_size


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


def items_by_user(rows: pd.DataFrame, column: str = "item") -> dict[int, list]:
    """Each user's ``column`` (default ``item``) in row order, keyed by ``user``: what
    ``rows.groupby("user")[column].agg(list)`` gives, without a Python call per user (most of
    the time it takes to open a run)."""
    users = rows["user"].to_numpy()
    order = np.argsort(users, kind="stable")  # stable: each user's rows keep their order
    users, items = users[order], rows[column].to_numpy()[order].tolist()
    if not len(users):
        return {}
    bounds = [*np.flatnonzero(np.r_[True, users[1:] != users[:-1]]).tolist(), len(users)]
    return {int(users[a]): items[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)}


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
        train = scenario.train
        by_user = {side: items_by_user(train[train["domain"] == side]) for side in (SOURCE, TARGET)}
        merged = items_by_user(train)
        self.sequences = {
            "source": by_user[SOURCE],
            "target": by_user[TARGET],
            "pooled": merged,
        }
        warm = scenario.warm
        self.warm_items = {
            split: items_by_user(warm[warm["split"] == split]) for split in ("val", "test")
        }
        # Their own ratings (a pair also in training keeps the rating of each interaction).
        self._warm_val_ratings = items_by_user(warm[warm["split"] == "val"], "rating")
        self.target_catalog = torch.from_numpy(scenario.catalog(TARGET))
        self.source_catalog = torch.from_numpy(scenario.catalog(SOURCE))
        local = np.full(self.vocab_size, -1, dtype=np.int64)
        local[scenario.catalog(TARGET)] = np.arange(len(self.target_catalog))
        self.target_local = local  # item index -> column in the target score matrix
        self.cold_items = items_by_user(scenario.cold)
        # (N_t,) bool: target catalogue positions of the items new by construction, or None.
        self.new_item_mask = (
            torch.from_numpy(np.isin(scenario.catalog(TARGET), scenario.new_items))
            if len(scenario.new_items)
            else None
        )

    def input_matrix(self, split: str) -> sp.csr_matrix:
        """(num_users, vocab_size) binary float32: every item a user had interacted with before
        ``split``'s held-out items, both domains: the training interactions, plus the warm
        validation items for ``test``. The same interactions the evaluator's batches hold
        (:meth:`known_interactions`), without their order."""
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
    def training_histories(self) -> dict[str, torch.Tensor]:
        """``training_histories[stream]``: (num_users, max_len) padded token histories of the
        training interactions (``source``, ``target``, ``pooled``), what training batches give
        each row's user (:class:`recmig.batches.TrainBatch`). Built on first use."""

        def table(per_user: dict[int, list[int]]) -> torch.Tensor:
            out = np.zeros((self.scenario.num_users, self.max_len), dtype=np.int64)
            for u in range(self.scenario.num_users):
                out[u] = history_tokens(per_user.get(u, []), self.max_len, self.bos)
            return torch.from_numpy(out)

        return {name: table(self.sequences[name]) for name in ("source", "target", "pooled")}

    @cached_property
    def _training_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each user's row range in the (user, time)-sorted training table, and its item,
        rating and timestamp columns: a user's history is slices, not a pandas query (which
        would dominate a one-user request)."""
        train = self.scenario.train
        bounds = np.searchsorted(train["user"].to_numpy(), np.arange(self.scenario.num_users + 1))
        return (
            bounds,
            train["item"].to_numpy(np.int64),
            train["rating"].to_numpy(np.float64),
            train["timestamp"].to_numpy(np.float64),
        )

    def training_interactions(self, user: int) -> tuple[list[int], list[float], list[float]]:
        """A user's training interactions of both domains in time order: items, ratings (NaN:
        unrated), timestamps."""
        bounds, *columns = self._training_rows
        start, stop = bounds[user], bounds[user + 1]
        items, ratings, times = (column[start:stop].tolist() for column in columns)
        return items, ratings, times

    def known_interactions(
        self, user: int, split: str
    ) -> tuple[list[int], list[float], list[float]]:
        """A user's history as the evaluator's ``split`` pass sees it (items, ratings, times):
        the training interactions, then for ``test`` the warm validation items, appended (as
        in leave-one-out evaluation; RecBole does the same) with the last training time."""
        items, ratings, times = self.training_interactions(user)
        extra = self.warm_items["val"].get(user, []) if split == "test" else []
        if extra:
            last = times[-1] if times else float("nan")
            items.extend(extra)
            ratings.extend(float(r) for r in self._warm_val_ratings[user])
            times.extend([last] * len(extra))
        return items, ratings, times

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

    def relevance(self, users: torch.Tensor, is_cold: torch.Tensor, split: str) -> torch.Tensor:
        """(B, N_target) bool: each user's held-out items on ``split`` (a cold user's: the
        target items of its cold group)."""
        relevant = torch.zeros(len(users), len(self.target_catalog), dtype=torch.bool)
        for row, (u, c) in enumerate(zip(users.tolist(), is_cold.tolist(), strict=True)):
            held = self.cold_items[u] if c else self.warm_items[split][u]
            relevant[row, self.target_local[np.asarray(held, dtype=np.int64)]] = True
        return relevant


def sparse_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    """Rows of a scipy matrix as a sparse COO torch tensor (len(rows), columns)."""
    part = matrix[rows].tocoo()
    indices = torch.from_numpy(np.vstack([part.row, part.col]).astype(np.int64))
    values = torch.from_numpy(part.data.astype(np.float32))
    return torch.sparse_coo_tensor(indices, values, part.shape, check_invariants=True).coalesce()


__all__ = ["ScenarioTensors", "TrainingMatrix", "history_tokens", "sequence_windows", "sparse_rows"]
