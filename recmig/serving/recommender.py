"""A finished run as a recommender: top-k lists, explanations and live updates of histories.

    rec = Recommender.from_run("outputs/runs/<run>")
    rec.recommend(source_history=["Toy Story (1995)"], k=10)      # a new, cold user
    rec.recommend(user="42")                                     # a user of the scenario
    rec.explain(user="42")                                       # which history items drove it
    rec.update("42", "Heat (1995)")                              # one more interaction

Every strategy is served through the same two strategy methods the evaluator calls
(:meth:`recmig.strategy.TransferStrategy.target_scores` on a batch built from histories), so a
known user's list here is exactly the evaluator's list for that user, and a history the
scenario never saw (a new user, or a known one after :meth:`Recommender.update`) is scored the
same way: a forward pass over the extended history for sequence models, the closed-form
fold-in (history row times item weights) for linear ones. Nothing is retrained.

Item and user ids are the dataset's own (strings; numbers are accepted and compared as text).
Each history item belongs to the domain the scenario gave it; items the scenario dropped
(k-core filtering) or never had are errors that name the id.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate

from recmig.data.loaders import ScenarioTensors, history_tokens
from recmig.data.scenario import SOURCE, TARGET, build_scenario
from recmig.encoders.item import ItemEncoder
from recmig.evaluation.ranking import top_items
from recmig.strategy import TransferStrategy

DOMAIN_NAMES = {SOURCE: "source", TARGET: "target"}
ItemRef = str | int | tuple[str | int, float]
"""A history entry: an item id, or (item id, rating) for strategies that read ratings."""


class UnknownIdError(ValueError):
    """An item or user id the run does not know (the HTTP service answers 404)."""


@dataclass
class History:
    """One user's interactions in time order (parallel lists of tokens, ratings, times)."""

    tokens: list[int] = field(default_factory=list)
    ratings: list[float] = field(default_factory=list)  # NaN: no rating
    times: list[float] = field(default_factory=list)  # NaN: no timestamp

    def add(self, token: int, rating: float = float("nan"), time: float | None = None) -> None:
        """Insert in time order: after every event not later than ``time`` (appended when
        ``time`` is None, or later than everything, or the history has no timestamps)."""
        stamp = float("nan") if time is None else float(time)
        position = len(self.tokens)
        if time is not None:
            while position > 0 and self.times[position - 1] > stamp:
                position -= 1
        self.tokens.insert(position, token)
        self.ratings.insert(position, rating)
        self.times.insert(position, stamp)

    def without(self, drop: Iterable[int]) -> History:
        """A copy without every interaction with the tokens in ``drop``."""
        drop = set(drop)
        keep = [i for i, t in enumerate(self.tokens) if t not in drop]
        return History(
            [self.tokens[i] for i in keep],
            [self.ratings[i] for i in keep],
            [self.times[i] for i in keep],
        )

    def copy(self) -> History:
        return History(list(self.tokens), list(self.ratings), list(self.times))


class Recommender:
    """Scores, explains and updates users of one trained (or fitted) strategy; see the module
    docstring. Safe to share between threads (one lock around histories and scoring)."""

    def __init__(self, strategy: TransferStrategy, tensors: ScenarioTensors, name: str = ""):
        self.strategy = strategy.eval()
        self.tensors = tensors
        self.name = name or type(strategy).__name__
        scenario = tensors.scenario
        self.scenario = scenario
        self.bos, self.max_len = tensors.bos, tensors.max_len
        self.item_ids = scenario.items["item_id"].astype(str).to_numpy()
        titles = scenario.items["title"] if "title" in scenario.items else scenario.items["item_id"]
        self.titles = titles.astype(str).to_numpy()
        self.token_of = {item: i + 1 for i, item in enumerate(self.item_ids)}
        self.user_index = {str(u): i for i, u in enumerate(scenario.user_ids)}
        self.domain_of = scenario.item_domain
        self.catalog = tensors.target_catalog.numpy()
        self.local = tensors.target_local
        self.rating_objective = strategy.context.objective == "rating"
        self.histories: dict[str, History] = {}  # users seen or updated since loading
        self.lock = threading.RLock()
        # Training interactions as arrays with each user's row range: a history is two
        # slices, not a pandas query (which would dominate a one-user request).
        train = scenario.train
        self._train_bounds = np.searchsorted(
            train["user"].to_numpy(), np.arange(scenario.num_users + 1)
        )
        self._train_columns = (
            train["item"].to_numpy(np.int64),
            train["rating"].to_numpy(np.float64),
            train["timestamp"].to_numpy(np.float64),
        )
        with torch.no_grad():
            strategy.refresh()
            for module in strategy.modules():
                if isinstance(module, ItemEncoder):
                    module.freeze()

    @classmethod
    def from_run(cls, run_dir: str | Path) -> Recommender:
        """Load a finished run (``recmig train``'s output folder): its config, its scenario
        (rebuilt from the dataset cache with the run's split seed) and its best checkpoint."""
        from recmig.train import build_strategy, load_finished_run
        from recmig.training.module import TransferModule

        cfg, best = load_finished_run(Path(run_dir))
        scenario = build_scenario(instantiate(cfg.data.dataset), instantiate(cfg.data.scenario))
        tensors = ScenarioTensors(scenario, instantiate(cfg.loader).max_len)
        module = TransferModule(build_strategy(cfg, tensors), optimizer=None, ks=tuple(cfg.ks))
        checkpoint = torch.load(best, map_location="cpu", weights_only=False)
        module.on_load_checkpoint(checkpoint)  # frozen language-model weights come from the build
        module.load_state_dict(checkpoint["state_dict"])
        return cls(module.strategy, tensors, name=str(cfg.strategy.name))

    # ----------------------------------------------------------------- histories
    def token(self, item_id: str | int, where: str = "item id") -> int:
        token = self.token_of.get(str(item_id))
        if token is None:
            raise UnknownIdError(
                f"{where}: item id {str(item_id)!r} is not in this run's scenario (unknown to "
                "the dataset, or dropped by its k-core filtering)"
            )
        return token

    def catalog_position(self, token: int) -> int:
        """Column of a target item's token in the score matrix (-1: not a target item)."""
        return int(self.local[token])

    def known_history(self, user: str | int) -> History:
        """A scenario user's history as the evaluator's test pass sees it: every training
        interaction of both domains in time order, then the warm validation items."""
        index = self.user_index.get(str(user))
        if index is None:
            raise UnknownIdError(f"user id {str(user)!r} is not a user of this run's scenario")
        start, stop = self._train_bounds[index], self._train_bounds[index + 1]
        items, ratings, times = (column[start:stop].tolist() for column in self._train_columns)
        history = History(items, ratings, times)
        last = history.times[-1] if history.times else float("nan")
        for item, rating in self._validation_items().get(index, []):
            history.tokens.append(item)
            history.ratings.append(rating)
            history.times.append(last)  # after training, as the evaluator appends them
        return history

    def _validation_items(self) -> dict[int, list[tuple[int, float]]]:
        if not hasattr(self, "_val_items"):
            val = self.scenario.warm[self.scenario.warm["split"] == "val"]
            pairs = zip(val["item"].tolist(), val["rating"].astype(float).tolist(), strict=True)
            grouped: dict[int, list[tuple[int, float]]] = {}
            for user, pair in zip(val["user"].tolist(), pairs, strict=True):
                grouped.setdefault(user, []).append(pair)
            self._val_items = grouped
        return self._val_items

    def history_of(self, user: str | int) -> History:
        """The current history of a user: updated since loading, else the scenario's."""
        with self.lock:
            return self.histories.get(str(user)) or self.known_history(user)

    def parse_history(
        self,
        source: Sequence[ItemRef] = (),
        target: Sequence[ItemRef] = (),
        mixed: Sequence[ItemRef] = (),
    ) -> History:
        """A history from item ids (or (id, rating) pairs): ``source`` then ``target`` items,
        each checked to belong to that domain (their interleaving in time is unknown), then
        ``mixed``: items of either domain in time order, each in the domain the scenario
        gave it."""
        history = History()
        for side, entries in ((SOURCE, source), (TARGET, target), (None, mixed)):
            name = "history" if side is None else f"{DOMAIN_NAMES[side]}_history"
            for position, entry in enumerate(entries):
                item, rating = entry if isinstance(entry, tuple | list) else (entry, None)
                token = self.token(item, f"{name}[{position}]")
                if side is not None and self.domain_of[token] != side:
                    other = self.domain_name(token)
                    raise ValueError(
                        f"{name}[{position}]: item {str(item)!r} belongs to the {other} domain "
                        f"of this scenario; pass it in {other}_history"
                    )
                history.add(token, float("nan") if rating is None else float(rating))
        return history

    def update(
        self,
        user: str | int,
        item_id: str | int,
        timestamp: float | None = None,
        rating: float | None = None,
    ) -> History:
        """Fold one new interaction into ``user``'s history (a user unknown to the scenario
        starts empty), so the next :meth:`recommend` reflects it; validated before anything
        changes. Returns the updated history."""
        token = self.token(item_id, "update")
        with self.lock:
            key = str(user)
            history = self.histories.get(key)
            if history is None:
                history = self.known_history(key) if key in self.user_index else History()
            history = history.copy()
            history.add(token, float("nan") if rating is None else float(rating), timestamp)
            self.histories[key] = history
            return history

    # ----------------------------------------------------------------- scoring
    def batch(self, histories: Sequence[History], users: Sequence[int] | None = None) -> dict:
        """The evaluation batch of these histories: what every strategy's ``target_scores``
        reads (see :mod:`recmig.strategy`), plus ``excluded``: the target items each user
        already has, never recommended again."""
        n = len(histories)
        columns = {"source": [], "target": [], "pooled": []}
        excluded = torch.zeros(n, len(self.catalog), dtype=torch.bool)
        rows, cols, ratings = [], [], []  # every interaction: (row, token, rating)
        for row, history in enumerate(histories):
            tokens = np.asarray(history.tokens, dtype=np.int64)
            domain = self.domain_of[tokens]
            for name, keep in (("source", domain == SOURCE), ("target", domain == TARGET)):
                columns[name].append(history_tokens(tokens[keep], self.max_len, self.bos))
            columns["pooled"].append(history_tokens(tokens, self.max_len, self.bos))
            excluded[row, self.local[tokens[domain == TARGET]]] = True
            rows.extend([row] * len(tokens))
            cols.extend(history.tokens)
            ratings.extend(history.ratings)
        batch = {f"{k}_hist": torch.from_numpy(np.stack(v)) for k, v in columns.items()}
        batch["is_cold"] = ~excluded.any(1)
        batch["excluded"] = excluded
        batch["user"] = torch.as_tensor(list(users) if users is not None else [-1] * n)
        if self.strategy.fitted_once:
            keys = np.asarray(rows, np.int64) * self.tensors.vocab_size + np.asarray(cols)
            # A repeated interaction counts once, as in training (np.unique: sorted, so the
            # tensor is coalesced by construction).
            batch["inputs"] = self._sparse(np.unique(keys), None, n)
            if self.rating_objective:  # the last rating of a pair; unrated ones absent
                rated = ~np.isnan(np.asarray(ratings, np.float64))
                last = dict(zip(keys[rated].tolist(), np.asarray(ratings)[rated], strict=True))
                batch["input_ratings"] = self._sparse(
                    np.array(sorted(last), np.int64), np.array([last[k] for k in sorted(last)]), n
                )
        return batch

    def _sparse(self, keys: np.ndarray, values: np.ndarray | None, n: int) -> torch.Tensor:
        """A coalesced sparse (n, vocab_size) float tensor from sorted row * vocab + token
        keys (values: 1 when None)."""
        vocab = self.tensors.vocab_size
        indices = torch.from_numpy(np.vstack([keys // vocab, keys % vocab]))
        data = torch.ones(len(keys)) if values is None else torch.as_tensor(values).float()
        return torch.sparse_coo_tensor(
            indices, data, (n, vocab), is_coalesced=True, check_invariants=False
        )

    @torch.inference_mode()
    def scores(self, histories: Sequence[History], users: Sequence[int] | None = None):
        """(B, N_t) scores over the target catalogue and (B, N_t) excluded masks."""
        batch = self.batch(histories, users)
        with self.lock:
            return self.strategy.target_scores(batch), batch["excluded"]

    def _records(self, positions: np.ndarray, scores: np.ndarray) -> list[dict]:
        tokens = self.catalog[positions]
        return [
            {
                "rank": rank,
                "item_id": self.item_ids[t - 1],
                "title": self.titles[t - 1],
                "score": score,
            }
            for rank, t, score in zip(
                range(1, len(tokens) + 1), tokens, scores.tolist(), strict=True
            )
        ]

    def _resolve(self, user, source_history, target_history, history) -> tuple[History, int]:
        if user is not None and (source_history or target_history or history):
            raise ValueError("give either user or a history (source/target/history), not both")
        if user is not None:
            return self.history_of(user), self.user_index.get(str(user), -1)
        return self.parse_history(source_history, target_history, history), -1

    def recommend(
        self,
        user: str | int | None = None,
        source_history: Sequence[ItemRef] = (),
        target_history: Sequence[ItemRef] = (),
        k: int = 10,
        history: Sequence[ItemRef] = (),
    ) -> pd.DataFrame:
        """The top-k target items (``rank``, ``item_id``, ``title``, ``score``) for a user of
        the scenario (with any updates) or for the given histories (a new user; see
        :meth:`parse_history`); target items already in the history are never recommended."""
        return pd.DataFrame(
            self.recommend_list(user, source_history, target_history, k, history),
            columns=["rank", "item_id", "title", "score"],
        )

    def recommend_list(
        self,
        user: str | int | None = None,
        source_history: Sequence[ItemRef] = (),
        target_history: Sequence[ItemRef] = (),
        k: int = 10,
        history: Sequence[ItemRef] = (),
    ) -> list[dict]:
        """:meth:`recommend` as a list of dicts: what the HTTP service returns, without the
        cost of a DataFrame (which is most of a one-user request)."""
        history, index = self._resolve(user, source_history, target_history, history)
        return self.top_k([history], [index], k)[0]

    def top_k(self, histories: Sequence[History], users: Sequence[int], k: int) -> list[list[dict]]:
        """Each history's top-k records (see :meth:`recommend_list`), scored in one batch."""
        if k < 1:
            raise ValueError(f"k must be a positive integer, got {k}")
        scores, excluded = self.scores(histories, users)
        top = top_items(scores, excluded, k)  # the evaluator's own top-k (same tie order)
        picked = scores.masked_fill(excluded, float("-inf")).gather(1, top)
        # When k exceeds what is left, the list is shorter: excluded items never pad it.
        return [
            self._records(t[s > float("-inf")].numpy(), s[s > float("-inf")].numpy())
            for t, s in zip(top, picked, strict=True)
        ]

    def recommend_users(
        self, users: Sequence[str | int], k: int = 10, batch_size: int = 512
    ) -> pd.DataFrame:
        """Top-k lists of several users, scored in batches: one long table with ``user_id``."""
        rows = []
        for start in range(0, len(users), batch_size):
            chunk = [str(u) for u in users[start : start + batch_size]]
            histories = [self.history_of(u) for u in chunk]
            lists = self.top_k(histories, [self.user_index.get(u, -1) for u in chunk], k)
            for user, records in zip(chunk, lists, strict=True):
                rows.extend({"user_id": user, **r} for r in records)
        return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "title", "score"])

    # ----------------------------------------------------------------- explanations
    def attributions(self, history: History, positions: np.ndarray) -> tuple[np.ndarray, list]:
        """Leave-one-out contributions of each distinct history item to the scores of target
        catalogue ``positions``: score with the whole history minus score without every
        interaction with that item, shape (n_items, len(positions)), and those items' tokens.

        For the linear closed-form models (EASE, ItemKNN, ridge_transfer) this is exactly the
        item-item weight w[j, i] (the score is a sum over history items); for sequence models
        it is the effect of taking the item out of the sequence, order and context included.
        """
        items = list(dict.fromkeys(history.tokens))
        variants = [history.without([t]) for t in items]
        rows = []
        for start in range(0, len(variants), 256):
            part, _ = self.scores(variants[start : start + 256])
            rows.append(part[:, positions])
        full, _ = self.scores([history])
        if not rows:
            return np.zeros((0, len(positions)), np.float32), items
        return (full[:, positions] - torch.cat(rows)).numpy(), items

    def explain(
        self,
        user: str | int | None = None,
        source_history: Sequence[ItemRef] = (),
        target_history: Sequence[ItemRef] = (),
        k: int = 10,
        per_item: int = 3,
        history: Sequence[ItemRef] = (),
    ) -> pd.DataFrame:
        """The top-k list with, for each recommended item, the (at most ``per_item``) history
        items that raised its score most (:meth:`attributions`; only positive contributions):
        one row per (recommendation, cause) with ``cause_item_id``, ``cause_title``,
        ``cause_domain`` and ``contribution`` (score points; the recommendation's ``score`` is
        the whole history's). A recommendation no history item raised (popularity, or a
        target-only model for a cold user) gets one row with no cause."""
        history, index = self._resolve(user, source_history, target_history, history)
        top = pd.DataFrame(
            self.top_k([history], [index], k)[0], columns=["rank", "item_id", "title", "score"]
        )
        contributions, items = np.zeros((0, len(top))), []
        if not top.empty and history.tokens:
            positions = self.local[np.array([self.token_of[i] for i in top["item_id"]])]
            contributions, items = self.attributions(history, positions)
        rows = []
        for column, rec in enumerate(top.itertuples(index=False)):
            order = np.argsort(-contributions[:, column], kind="stable")[:per_item]
            causes = [j for j in order if contributions[j, column] > 0]
            for j in causes or [None]:
                token = None if j is None else items[j]
                rows.append(
                    {
                        **rec._asdict(),
                        "cause_item_id": None if j is None else self.item_ids[token - 1],
                        "cause_title": None if j is None else self.titles[token - 1],
                        "cause_domain": None if j is None else self.domain_name(token),
                        "contribution": np.nan if j is None else float(contributions[j, column]),
                    }
                )
        columns = [*top.columns, "cause_item_id", "cause_title", "cause_domain", "contribution"]
        return pd.DataFrame(rows, columns=columns)

    def domain_name(self, token: int) -> str:
        return DOMAIN_NAMES[int(self.domain_of[token])]


__all__ = ["History", "Recommender", "UnknownIdError"]
