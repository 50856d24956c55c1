"""A finished run as a recommender: top-k lists, explanations and live updates of histories.

    rec = Recommender.from_run("outputs/runs/<run>")
    rec.recommend(source_history=["Toy Story (1995)"], k=10)      # a new, cold user
    rec.recommend(user="42")                                     # a user of the scenario
    rec.explain(user="42")                                       # which history items drove it
    rec.update("42", "Matrix, The (1999)")                       # one more interaction

Every strategy is served through the same two strategy methods the evaluator calls
(:meth:`recmig.strategy.Strategy.target_scores` on a batch built from histories), so a
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
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate

from recmig.batches import HistoryLayout, UserBatch, user_batch
from recmig.data.scenario import SOURCE, TARGET, build_scenario
from recmig.data.scenario_snapshot import SNAPSHOT, load_scenario
from recmig.data.tensors import ScenarioTensors
from recmig.encoders.item import ItemEncoder
from recmig.evaluation.ranking import top_items, with_fallback
from recmig.paths import run_config_path
from recmig.run import (
    build_strategy,
    load_finished_run,
    load_plain_checkpoint,
    load_strategy_weights,
)
from recmig.serving.journal import Update, UpdateJournal, run_fingerprint
from recmig.strategy import Strategy

DOMAIN_NAMES = {SOURCE: "source", TARGET: "target"}
FALLBACK = "target popularity: the history gives this strategy nothing to score by"
"""Why a list is the target domain's popularity (:func:`recmig.evaluation.ranking.with_fallback`):
an empty history, or one without any item the strategy reads (a model of one source domain given
none of its items). The evaluator ranks such users the same way."""
NO_CAUSE = {"item_id": None, "title": None, "domain": None, "contribution": float("nan")}
ItemRef = str | int | tuple[str | int, float]
"""A history entry: an item id, or (item id, rating) for strategies that read ratings."""


class RequestError(ValueError):
    """A request the recommender refuses (bad value; the HTTP service answers 422). Raised
    before any state changes."""


class UnknownIdError(RequestError):
    """An item or user id the run does not know (the HTTP service answers 404)."""


MAX_ECHO = 80
"""Longest part of a request's value an error message repeats."""


def shown(value: object, limit: int = MAX_ECHO) -> str:
    """``value`` as an error message quotes it: its repr, cut to ``limit`` characters (an id
    of 5,000 characters must not come back in full)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 4]}...{text[-1]}"


def _finite(value: float | None, where: str) -> float:
    """A rating or timestamp as a float (NaN for None); inf and NaN given explicitly are errors
    (stored, they would poison every later score of the user)."""
    if value is None:
        return float("nan")
    number = float(value)
    if not np.isfinite(number):
        raise RequestError(f"{where}: must be a finite number, got {shown(value)}")
    return number


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

    def __init__(
        self,
        strategy: Strategy,
        tensors: ScenarioTensors,
        name: str = "",
        journal: UpdateJournal | None = None,
        max_users: int | None = None,
    ):
        """``journal``: where acknowledged updates are kept and read back from (None: in memory
        only, lost when the process ends). ``max_users``: most users whose updated histories
        stay in memory (least recently used leave; the journal keeps them, so it is required)."""
        if max_users is not None and (max_users < 1 or journal is None):
            raise ValueError(
                f"max_users={max_users}: must be a positive number of users, and needs an update "
                "journal (users that leave memory are read back from it)"
            )
        self.strategy = strategy.eval()
        self.tensors = tensors
        self.name = name or type(strategy).__name__
        scenario = tensors.scenario
        self.scenario = scenario
        self.item_ids = scenario.items["item_id"].astype(str).to_numpy()
        titles = scenario.items["title"] if "title" in scenario.items else scenario.items["item_id"]
        self.titles = titles.astype(str).to_numpy()
        self.token_of = {item: i + 1 for i, item in enumerate(self.item_ids)}
        self.user_index = {str(u): i for i, u in enumerate(scenario.user_ids)}
        self.domain_of = scenario.item_domain
        self.catalog = tensors.target_catalog.numpy()
        self.local = tensors.target_local
        self.rating_objective = strategy.objective.needs_ratings
        self.layout = HistoryLayout.of(tensors)
        # Updated users' histories, least recently used first (bounded by max_users).
        self.histories: OrderedDict[str, History] = OrderedDict()
        self.max_users = max_users
        self.journal = journal
        self.journal_users = journal.users() if journal is not None else set()
        self.lock = threading.RLock()
        if journal is not None:
            unknown = sorted(journal.item_ids() - self.token_of.keys())
            if unknown:
                raise ValueError(
                    f"update journal {journal.path}: item id {shown(unknown[0])} (and "
                    f"{len(unknown) - 1} more) is not in this run's scenario"
                )
        with torch.no_grad():
            strategy.refresh()
            for module in strategy.modules():
                if isinstance(module, ItemEncoder):
                    module.freeze()

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        journal: str | Path | None = None,
        max_users: int | None = None,
    ) -> Recommender:
        """Load a finished run (``recmig train``'s output folder): its config, its scenario
        (the run's own ``scenario/`` snapshot; rebuilt from the dataset with the run's split
        seed for runs made before it existed) and its best checkpoint.
        ``journal``: the update journal to keep updates in and replay (``recmig serve`` uses
        ``<run>/updates.sqlite``; None: updates stay in memory); ``max_users``: see
        :class:`Recommender`."""
        run_dir = Path(run_dir)
        if journal is not None:  # a journal of another run fails before the model loads
            fingerprint = run_fingerprint(run_config_path(run_dir).read_text())
            journal = UpdateJournal(journal, run=fingerprint)
        cfg, best = load_finished_run(run_dir)
        scenario = load_scenario(run_dir / SNAPSHOT)  # saved by the run; older runs rebuild it
        if scenario is None:
            dataset = instantiate(cfg.data.dataset)
            scenario = build_scenario(dataset, instantiate(cfg.data.scenario))
        # max_len read, not instantiated: LoaderConfig lives beside the Lightning DataModule.
        tensors = ScenarioTensors(scenario, int(cfg.loader.max_len))
        strategy = build_strategy(cfg, tensors)
        # Tensors and plain containers only: a checkpoint is never unpickled as code.
        load_strategy_weights(strategy, load_plain_checkpoint(best, "checkpoint"))
        return cls(strategy, tensors, str(cfg.strategy.name), journal=journal, max_users=max_users)

    # ----------------------------------------------------------------- histories
    def token(self, item_id: str | int, where: str = "item id") -> int:
        token = self.token_of.get(str(item_id))
        if token is None:
            raise UnknownIdError(
                f"{where}: item id {shown(str(item_id))} is not in this run's scenario (unknown to "
                "the dataset, or dropped by its k-core filtering)"
            )
        return token

    def catalog_position(self, token: int) -> int:
        """Column of a target item's token in the score matrix (-1: not a target item)."""
        return int(self.local[token])

    def _index(self, user: str | int) -> int:
        index = self.user_index.get(str(user))
        if index is None:
            raise UnknownIdError(f"user id {shown(str(user))} is not a user of this run's scenario")
        return index

    def training_history(self, user: str | int) -> History:
        """A scenario user's training interactions of both domains, in time order."""
        return History(*self.tensors.training_interactions(self._index(user)))

    def known_history(self, user: str | int) -> History:
        """A scenario user's history as the evaluator's test pass sees it: the training
        interactions, then the warm validation items (appended, as the evaluator does)."""
        return History(*self.tensors.known_interactions(self._index(user), "test"))

    def history_of(self, user: str | int) -> History:
        """The current history of a user (a copy): the scenario's with every acknowledged
        update (in memory, or read back from the journal)."""
        with self.lock:
            return self._current(str(user)).copy()

    def _current(self, key: str) -> History:
        """The live history of ``key`` (not a copy; hold the lock)."""
        history = self.histories.get(key)
        if history is not None:
            self.histories.move_to_end(key)
            return history
        if key not in self.journal_users:
            return self.known_history(key)  # no update: rebuilt from the scenario, not kept
        history = self.known_history(key) if key in self.user_index else History()
        for update in self.journal.of_user(key):  # as update() built it, in the same order
            rating = float("nan") if update.rating is None else update.rating
            history.add(self.token(update.item_id, "journal"), rating, update.timestamp)
        self._remember(key, history)
        return history

    def _remember(self, key: str, history: History) -> None:
        self.histories[key] = history
        self.histories.move_to_end(key)
        while self.max_users is not None and len(self.histories) > self.max_users:
            self.histories.popitem(last=False)  # the journal keeps it

    def history_table(self, history: History) -> pd.DataFrame:
        """A history as its reader sees it: ``item_id``, ``title``, ``domain``, ``rating``,
        ``timestamp`` (NaN where not given), in time order."""
        tokens = np.asarray(history.tokens, dtype=np.int64)
        return pd.DataFrame(
            {
                "item_id": self.item_ids[tokens - 1],
                "title": self.titles[tokens - 1],
                "domain": [self.domain_name(t) for t in history.tokens],
                "rating": history.ratings,
                "timestamp": history.times,
            }
        )

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
                    raise RequestError(
                        f"{name}[{position}]: item {shown(str(item))} belongs to the {other} "
                        f"domain of this scenario; pass it in {other}_history"
                    )
                history.add(token, _finite(rating, f"{name}[{position}] rating"))
        return history

    def update(
        self,
        user: str | int,
        item_id: str | int,
        timestamp: float | None = None,
        rating: float | None = None,
    ) -> pd.DataFrame:
        """Fold one new interaction into ``user``'s history (a user unknown to the scenario
        starts empty), so the next :meth:`recommend` reflects it; validated before anything
        changes, and written to the journal (when there is one) before it returns. Returns the
        updated history (:meth:`history_table`)."""
        token = self.token(item_id, "update")
        rating_value = _finite(rating, "update rating")
        time = None if timestamp is None else _finite(timestamp, "update timestamp")
        with self.lock:
            key = str(user)
            if key in self.histories or key in self.journal_users:
                history = self._current(key).copy()
            else:
                history = self.known_history(key) if key in self.user_index else History()
            history.add(token, rating_value, time)
            if self.journal is not None:  # acknowledged only once it is on disk
                self.journal.append(
                    Update(key, str(item_id), time, None if rating is None else rating_value)
                )
                self.journal_users.add(key)
            self._remember(key, history)
            return self.history_table(history)

    # ----------------------------------------------------------------- scoring
    def batch(self, histories: Sequence[History], users: Sequence[int] | None = None) -> UserBatch:
        """The batch of these histories: what the strategy reads (its ``reads``) and
        ``excluded``, the target items each user already has, never recommended again. Built
        by :func:`recmig.batches.user_batch`, as the evaluator's batches are."""
        return user_batch(
            [h.tokens for h in histories],
            self.layout,
            self.strategy.reads,
            ratings=[h.ratings for h in histories] if self.rating_objective else None,
            users=users,
        )

    @torch.inference_mode()
    def scores(self, histories: Sequence[History], users: Sequence[int] | None = None):
        """(B, N_t) scores over the target catalogue and (B, N_t) excluded masks."""
        batch = self.batch(histories, users)
        with self.lock:
            return self.strategy.target_scores(batch), batch.excluded

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

    def _resolve(
        self,
        user: str | int | None = None,
        source_history: Sequence[ItemRef] = (),
        target_history: Sequence[ItemRef] = (),
        history: Sequence[ItemRef] = (),
    ) -> tuple[History, int]:
        """The history a query names, and its user index (-1: not a scenario user)."""
        if user is not None and (source_history or target_history or history):
            raise RequestError("give either user or a history (source/target/history), not both")
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
        answer = self.answer(
            k,
            user=user,
            source_history=source_history,
            target_history=target_history,
            history=history,
        )
        table = pd.DataFrame(answer["items"], columns=["rank", "item_id", "title", "score"])
        table.attrs["fallback"] = answer["fallback"]
        return table

    def recommend_list(self, k: int = 10, **query) -> list[dict]:
        """:meth:`recommend` (same keyword arguments) as a list of dicts, without the cost of a
        DataFrame (most of a one-user request)."""
        return self.answer(k, **query)["items"]

    def answer(self, k: int = 10, **query) -> dict:
        """What the HTTP service returns for :meth:`recommend`'s arguments: ``items`` (the
        list of :meth:`recommend_list`) and ``fallback`` (``FALLBACK`` when the history carried
        no signal and the list is the target domain's popularity, else None)."""
        history, index = self._resolve(**query)
        lists, fallbacks = self.rankings([history], [index], k)
        return {"items": lists[0], "fallback": fallbacks[0]}

    def top_k(self, histories: Sequence[History], users: Sequence[int], k: int) -> list[list[dict]]:
        """Each history's top-k records (see :meth:`recommend_list`), scored in one batch."""
        return self.rankings(histories, users, k)[0]

    def rankings(
        self, histories: Sequence[History], users: Sequence[int], k: int
    ) -> tuple[list[list[dict]], list[str | None]]:
        """:meth:`top_k`'s lists and, for each, ``FALLBACK`` where the list is the target
        domain's popularity because the history carried no signal (None: the model's list)."""
        if k < 1:
            raise RequestError(f"k must be a positive integer, got {k}")
        scores, excluded = self.scores(histories, users)
        # The evaluator's own fallback and top-k (same tie order): the lists it scores.
        scores, flat = with_fallback(scores, excluded, self.tensors.target_popularity)
        top = top_items(scores, excluded, k)
        picked = scores.masked_fill(excluded, float("-inf")).gather(1, top)
        # When k exceeds what is left, the list is shorter: excluded items never pad it.
        lists = [
            self._records(t[s > float("-inf")].numpy(), s[s > float("-inf")].numpy())
            for t, s in zip(top, picked, strict=True)
        ]
        return lists, [FALLBACK if f else None for f in flat.tolist()]

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

        Where the score is a sum over history items (EASE, ItemKNN, and ridge_transfer while
        the user stays on the same side of cold/warm) this is exactly the item-item weight
        w[j, i]; for sequence models, and for nonlinear closed forms (user_bias's shrunk mean),
        it is the effect of taking the item out of the history, order and context included.
        """
        items = list(dict.fromkeys(history.tokens))
        # The whole history is row 0 of the first batch, its leave-one-out variants the rest.
        variants = [history, *(history.without([t]) for t in items)]
        rows = []
        for start in range(0, len(variants), 256):
            part, _ = self.scores(variants[start : start + 256])
            rows.append(part[:, positions])
        scored = torch.cat(rows)
        return (scored[:1] - scored[1:]).numpy(), items

    def explain(
        self,
        user: str | int | None = None,
        source_history: Sequence[ItemRef] = (),
        target_history: Sequence[ItemRef] = (),
        k: int = 10,
        per_item: int = 3,
        history: Sequence[ItemRef] = (),
    ) -> pd.DataFrame:
        """:meth:`recommend`'s list with, for each item, the (at most ``per_item``) history
        items that raised its score most (:meth:`explain_list`): one row per (recommendation,
        cause) with ``cause_item_id``, ``cause_title``, ``cause_domain`` and ``contribution``;
        a recommendation without causes gets one row with none."""
        query = dict(user=user, source_history=source_history, target_history=target_history)
        rows = []
        for record in self.explain_list(k, per_item, history=history, **query):
            causes = record.pop("because") or [NO_CAUSE]
            rows.extend({**record, **{f"cause_{k}": v for k, v in c.items()}} for c in causes)
        columns = ["rank", "item_id", "title", "score", "cause_item_id", "cause_title"]
        table = pd.DataFrame(rows, columns=[*columns, "cause_domain", "cause_contribution"])
        return table.rename(columns={"cause_contribution": "contribution"})

    def explain_list(self, k: int = 10, per_item: int = 3, **query) -> list[dict]:
        """The top-k records of :meth:`recommend_list` (same keyword arguments), each with
        ``because``: the (at most ``per_item``) history items that raised its score most
        (:meth:`attributions`; only positive contributions, in score points: the record's
        ``score`` is the whole history's), as ``item_id``, ``title``, ``domain``,
        ``contribution``. A recommendation no history item raised (popularity; a target-only
        model for a cold user) has none."""
        history, index = self._resolve(**query)
        records = self.top_k([history], [index], k)[0]
        contributions, items = np.zeros((0, len(records))), []  # an empty history: no causes
        if records and history.tokens:
            positions = self.local[np.array([self.token_of[r["item_id"]] for r in records])]
            contributions, items = self.attributions(history, positions)
        for column, record in enumerate(records):
            order = np.argsort(-contributions[:, column], kind="stable")[:per_item]
            record["because"] = [
                {
                    "item_id": self.item_ids[items[j] - 1],
                    "title": self.titles[items[j] - 1],
                    "domain": self.domain_name(items[j]),
                    "contribution": float(contributions[j, column]),
                }
                for j in order
                if contributions[j, column] > 0
            ]
        return records

    def domain_name(self, token: int) -> str:
        """``target``, or the item's source domain: ``source``, or its name when the scenario
        has several (an explanation then says which domain drove a recommendation)."""
        side = int(self.domain_of[token])
        names = self.scenario.source_names
        if side == SOURCE and len(names) > 1:
            return names[int(self.scenario.item_source[token])]
        return DOMAIN_NAMES[side]


__all__ = ["FALLBACK", "History", "Recommender", "RequestError", "UnknownIdError"]
