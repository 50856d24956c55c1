"""The evaluator: what a validation or test pass computes from a strategy's scores.

Each batch ranks the whole target catalogue for its users (:func:`top_items`, training items
excluded, users whose scores carry no signal ranked by ``fallback``) and adds every user's
metrics to the running means of their group: ``cold`` and ``warm``, and ``new_items`` where
the scenario has new items (every metric over the new items alone, ranked among themselves,
over the users who have one: how well a model orders items it never saw interacted with; and
share@K, the share of the full ranking's top-K slots given to new items, over every evaluated
user: how far it lets them in). The objective declares which errors of its predictions
against held-out ratings are computed too (``Objective.error_metrics``, from
:data:`ERROR_METRICS`), averaged over held-out interactions (as PTUPCDR), not users.

A test pass also keeps every user's metrics and top-K list (:meth:`Evaluator.test_users`), for
significance tests over users, beyond-accuracy metrics (:func:`per_user_results`) and
demographic slices. The Lightning module only feeds batches in and logs what comes out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchmetrics import MeanMetric

from recmig.batches import UserBatch
from recmig.data.scenario import TARGET, Scenario
from recmig.evaluation.beyond import beyond_accuracy, item_popularity
from recmig.evaluation.ranking import (
    GROUPS,
    METRICS,
    NEW_ITEMS,
    metrics_of_top,
    new_item_metrics,
    top_items,
    with_fallback,
)


def user_mae(errors: torch.Tensor, rated: torch.Tensor) -> torch.Tensor:
    """(B,) each user's mean absolute error over their rated items."""
    return errors.abs().sum(1) / rated.sum(1).clamp_min(1)


def user_rmse(errors: torch.Tensor, rated: torch.Tensor) -> torch.Tensor:
    """(B,) each user's root mean squared error over their rated items."""
    return ((errors**2).sum(1) / rated.sum(1).clamp_min(1)).sqrt()


ERROR_METRICS = {"mae": ("abs", user_mae), "rmse": ("sq", user_rmse)}
"""Rating errors the evaluator computes: name -> (the running mean it logs from, the per-user
value). A new error is one entry here (and its running mean in :meth:`Evaluator.logged`)."""


def user_errors(
    errors: torch.Tensor, rated: torch.Tensor, names: tuple[str, ...] = tuple(ERROR_METRICS)
) -> dict[str, torch.Tensor]:
    """Each user's errors ``names`` over their own held-out ratings (NaN without any): the
    per-user rows behind paired tests; the logged aggregates stay interaction-level.
    ``errors`` (B, items): predicted minus held-out rating; ``rated`` (B, items): where the
    user rated the item (a NaN prediction of a rated item stays NaN)."""
    missing = torch.where(rated.sum(1) > 0, 0.0, torch.nan)
    masked = torch.where(rated, errors, 0.0)
    return {name: ERROR_METRICS[name][1](masked, rated) + missing for name in names}


def key(group: str, name: str) -> str:
    """A running mean's name in a ModuleDict (no ``@``)."""
    return f"{group}_{name}".replace("@", "_")


class Evaluator(nn.Module):
    """Running means of one evaluation pass, per group; per-user rows of a test pass."""

    def __init__(
        self,
        ks: tuple[int, ...],
        error_metrics: tuple[str, ...] = (),
        objective: str = "ranking",
        fallback: torch.Tensor | None = None,
    ):
        """``error_metrics``: the objective's (``Objective.error_metrics``); ``fallback``
        (N_t,): how users whose scores carry no signal are ranked (:func:`with_fallback`;
        None: as scored)."""
        super().__init__()
        unknown = set(error_metrics) - set(ERROR_METRICS)
        if unknown:
            raise ValueError(
                f"objective {objective!r}: error metrics {sorted(unknown)} are not computed "
                f"by the evaluator (it computes {list(ERROR_METRICS)})"
            )
        # Not persistent: rebuilt from the scenario, so checkpoints stay as they were.
        self.register_buffer("fallback", fallback, persistent=False)
        self.ks = tuple(ks)
        self.metric_names = [f"{m}@{k}" for m in METRICS for k in self.ks]
        self.new_item_names = (*self.metric_names, *(f"share@{k}" for k in self.ks))
        self.error_names = tuple(error_metrics)
        self.means = nn.ModuleDict(
            {key(g, n): MeanMetric() for g in GROUPS for n in self.metric_names}
            | {key(NEW_ITEMS, n): MeanMetric() for n in self.new_item_names}
        )
        kinds = sorted({ERROR_METRICS[name][0] for name in self.error_names})
        self.rating_means = nn.ModuleDict(
            {key(g, kind): MeanMetric() for g in GROUPS for kind in kinds}
        )
        self.users_seen = {g: 0 for g in GROUPS}
        self.records: list[dict[str, torch.Tensor]] = []
        self.keep_records = False  # a test pass keeps per-user rows (start)

    def logged(self) -> list[str]:
        """The names :meth:`compute` can return (without the split prefix): every metric, of
        both groups together and of each (``cold/``, ``warm/``)."""
        metrics = (*self.metric_names, *self.error_names)
        return [f"{prefix}{n}" for prefix in ("", "cold/", "warm/") for n in metrics]

    def start(self, keep_records: bool) -> None:
        """A new pass: empty running means (and per-user rows when ``keep_records``)."""
        for metric in (*self.means.values(), *self.rating_means.values()):
            metric.reset()
        self.users_seen = {g: 0 for g in GROUPS}
        self.keep_records = keep_records
        if keep_records:  # (a validation pass leaves the last test pass's rows alone)
            self.records = []

    def update(
        self,
        scores: torch.Tensor,
        batch: UserBatch,
        weights: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Add a batch's (B, N_t) ``scores``; in a pass that keeps records (:meth:`start`),
        also its per-user rows with the strategy's per-user domain ``weights`` (name -> (B,))."""
        ranked, _ = with_fallback(scores, batch.excluded, self.fallback)
        top = top_items(ranked, batch.excluded, max(self.ks))
        values = metrics_of_top(top, batch.relevant, self.ks)
        # Predicted minus held-out rating (B, items) where the user rated the item. The mask
        # comes from the ratings, not the errors, so a NaN prediction stays NaN in the results
        # instead of passing for an item nobody rated.
        errors, rated = None, None
        if self.error_names:
            rated = ~torch.isnan(batch.relevant_ratings)
            errors = scores - batch.relevant_ratings
            values.update(user_errors(errors, rated, self.error_names))
        new_values = self._new_item_metrics(scores, top, batch) if NEW_ITEMS in batch else {}
        if self.keep_records:
            self.records.append(
                {
                    "user": batch.user,
                    "is_cold": batch.is_cold,
                    "top": top,
                    **values,
                    **new_values,
                    **(weights or {}),
                }
            )
        for group, rows in (("cold", batch.is_cold), ("warm", ~batch.is_cold)):
            if rows.any():
                self.users_seen[group] += int(rows.sum())
                for name in self.metric_names:
                    self.means[key(group, name)].update(values[name][rows])
                if errors is not None:
                    self._update_errors(group, rows.unsqueeze(1) & rated, errors)

    def _new_item_metrics(
        self, scores: torch.Tensor, top: torch.Tensor, batch: UserBatch
    ) -> dict[str, torch.Tensor]:
        """The ``new_items`` group's per-user values (:func:`new_item_metrics`), added to its
        running means."""
        out = new_item_metrics(
            scores, top, batch.relevant, batch.excluded, batch[NEW_ITEMS], self.ks
        )
        for name, column in out.items():
            defined = ~torch.isnan(column)
            if defined.any():
                self.means[key(NEW_ITEMS, name)].update(column[defined])
        return {f"{NEW_ITEMS}/{name}": column for name, column in out.items()}

    def _update_errors(self, group: str, rated: torch.Tensor, errors: torch.Tensor) -> None:
        """Interaction-level sums of one group; ``rated`` (B, items): its users' rated items."""
        if rated.any():
            error = errors[rated]
            if key(group, "abs") in self.rating_means:
                self.rating_means[key(group, "abs")].update(error.abs())
            if key(group, "sq") in self.rating_means:
                self.rating_means[key(group, "sq")].update(error**2)

    def compute(self, split: str) -> dict[str, torch.Tensor]:
        """``<split>/<group>/<metric>`` of the pass, each metric's mean over the groups
        (``<split>/<metric>``) and the new items' (``<split>/new_items/<metric>``)."""
        logged = {}
        for group in GROUPS:
            if self.users_seen[group] == 0:
                continue
            for name in self.metric_names:
                logged[f"{split}/{group}/{name}"] = self.means[key(group, name)].compute()
            for name in self.error_names:
                kind = ERROR_METRICS[name][0]
                mean = self.rating_means[key(group, kind)]
                if mean.update_called:
                    value = mean.compute()
                    logged[f"{split}/{group}/{name}"] = value.sqrt() if kind == "sq" else value
        for name in (*self.metric_names, *self.error_names):
            per_group = [
                logged[f"{split}/{g}/{name}"] for g in GROUPS if f"{split}/{g}/{name}" in logged
            ]
            if per_group:  # (rating errors need ratings: none when the dataset has none)
                logged[f"{split}/{name}"] = torch.stack(per_group).mean()
        for name in self.new_item_names:  # (none updated: the scenario has no new items)
            metric = self.means[key(NEW_ITEMS, name)]
            if metric.update_called:
                logged[f"{split}/{NEW_ITEMS}/{name}"] = metric.compute()
        return logged

    def test_users(self) -> pd.DataFrame:
        """One row per user of the last test pass: ``user`` (index), ``group`` (cold/warm),
        every metric (with the rating objective also the user's errors), and ``top``: the
        top-K target catalogue positions, best first; and the strategy's per-user domain
        weights (``weight/<domain>``); with new items, the ``new_items/<metric>`` columns (NaN
        where the user has none)."""
        if not self.records:
            raise RuntimeError("test_users() needs a finished test pass (trainer.test)")
        records = self.records
        joined = {k: torch.cat([r[k] for r in records]).cpu() for k in records[0]}
        extra = [k for k in joined if k.startswith(("weight/", f"{NEW_ITEMS}/"))]
        columns = (*self.metric_names, *self.error_names, *extra)
        table = pd.DataFrame({name: joined[name].numpy() for name in columns})
        table.insert(0, "group", ["cold" if c else "warm" for c in joined["is_cold"].tolist()])
        table.insert(0, "user", joined["user"].numpy())
        table["top"] = list(joined["top"].numpy())
        return table


def per_user_results(
    table: pd.DataFrame, scenario: Scenario, k: int
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Test users with ids, profile and top-K item ids; beyond-accuracy metrics per group, and
    the distribution of per-user domain weights (``weight/<domain>`` columns) per group."""
    catalog = scenario.catalog(TARGET)
    counts, n_users = item_popularity(scenario.train, catalog)
    metrics = {}
    weights = [c for c in table.columns if c.startswith("weight/")]
    for group, rows in table.groupby("group"):
        top = np.stack(rows["top"].to_numpy())
        for name, value in beyond_accuracy(top, counts, n_users, k).items():
            metrics[f"test/{group}/{name}"] = value
        for column in weights:
            values = rows[column].to_numpy(dtype=float)
            metrics[f"test/{group}/{column}/mean"] = float(values.mean())
            for q in (10, 50, 90):
                metrics[f"test/{group}/{column}/p{q}"] = float(np.percentile(values, q))
    item_ids = scenario.items["item_id"].to_numpy()
    table = table.assign(
        user_id=scenario.user_ids[table["user"].to_numpy()],
        top=[list(item_ids[catalog[positions] - 1]) for positions in table["top"]],
    )
    if scenario.user_profiles is not None:
        profiles = scenario.user_profiles.drop(columns="user_id")
        table = pd.concat(
            [table.reset_index(drop=True), profiles.iloc[table["user"]].reset_index(drop=True)],
            axis=1,
        )
    return table, metrics
