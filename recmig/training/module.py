"""The one Lightning module every strategy trains in.

It owns the optimisation and the evaluation; the strategy owns the model and the loss. Each
validation/test batch ranks the whole target catalogue for its users, and metrics are
averaged per user group (``cold`` and ``warm``). The selection metric (``val/ndcg@10`` by
default; the run config's ``selection``) is the mean of the groups' values, so a strategy is
selected for cold and warm users alike, on validation users only. The test pass also keeps every
user's metrics and top-K list (:meth:`TransferModule.test_users`), for significance tests over
users, beyond-accuracy metrics and demographic slices.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics import MeanMetric

from recmig.evaluation.ranking import (
    METRICS,
    NEW_ITEMS,
    metrics_of_top,
    new_item_metrics,
    top_items,
    with_fallback,
)
from recmig.run import restore_frozen
from recmig.strategy import TransferStrategy
from recmig.training.rng import RNG_KEY, rng_states, set_rng_states

GROUPS = ("cold", "warm")
# NEW_ITEMS, where the scenario has new items (data.scenario.new_item_fraction): every metric
# over the new items alone (ranked among themselves, the held-out ones relevant), over the users
# (cold and warm) who have one: how well a model orders items it never saw interacted with; and
# share@K, the share of the full ranking's top-K slots given to new items, over every evaluated
# user: how far it lets them in. Not part of the selection metric's mean.
ERROR_METRICS = ("mae", "rmse")
"""Errors of predictions against held-out ratings the evaluator can compute per group."""


class TransferModule(L.LightningModule):
    def __init__(
        self,
        strategy: TransferStrategy,
        optimizer: Callable[..., torch.optim.Optimizer],
        ks: tuple[int, ...] = (5, 10, 20),
        selection: str = "val/ndcg@10",
        fallback: torch.Tensor | None = None,
    ):
        """``selection``: the validation metric checkpointing and early stopping watch (shown
        on the progress bar); it must be one this module logs. The strategy's objective says
        which errors of its predictions against held-out ratings are logged too
        (``Objective.error_metrics``: MAE and RMSE under ``rating``). ``fallback`` (N_t,): how
        users whose scores carry no signal are ranked (:func:`with_fallback`; None: as scored)."""
        super().__init__()
        self.strategy = strategy
        # Not persistent: rebuilt from the scenario, so checkpoints stay as they were.
        self.register_buffer("fallback", fallback, persistent=False)
        self.make_optimizer = optimizer
        self.ks = tuple(ks)
        names = [f"{m}@{k}" for m in METRICS for k in self.ks]
        self.metric_names = names
        self.new_item_names = (*names, *(f"share@{k}" for k in self.ks))
        self.means = torch.nn.ModuleDict(
            {f"{g}_{n}".replace("@", "_"): MeanMetric() for g in GROUPS for n in names}
            | {f"{NEW_ITEMS}_{n}".replace("@", "_"): MeanMetric() for n in self.new_item_names}
        )
        self.users_seen = {g: 0 for g in GROUPS}
        self.test_records: list[dict[str, torch.Tensor]] = []
        # Rating errors are averaged over held-out interactions (as PTUPCDR), not users.
        self.error_names = tuple(strategy.objective.error_metrics)
        unknown = set(self.error_names) - set(ERROR_METRICS)
        if unknown:
            raise ValueError(
                f"objective {strategy.objective.name!r}: error metrics {sorted(unknown)} are "
                f"not computed by the evaluator (it computes {list(ERROR_METRICS)})"
            )
        self.rating_means = torch.nn.ModuleDict(
            {f"{g}_{kind}": MeanMetric() for g in GROUPS for kind in ("abs", "sq")}
            if self.error_names
            else {}
        )
        metrics = (*names, *self.error_names)
        logged = [f"val/{prefix}{n}" for prefix in ("", "cold/", "warm/") for n in metrics]
        if selection not in logged:
            raise ValueError(
                f"selection monitor {selection!r} is not a metric this run logs (ks={list(ks)}, "
                f"objective {strategy.objective.name!r}); it logs "
                f"{[f'val/{n}' for n in metrics]} and their val/cold/, val/warm/ versions: "
                "set selection.<objective>.monitor or ks"
            )
        self.selection = selection.removeprefix("val/")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Leave frozen weights (e.g. a pretrained language model under adapters) out of
        checkpoints: they are rebuilt from their source when the module is built. Keep the
        random number generators' states, so a resumed run draws the batch order and dropout
        the uninterrupted run would have drawn (Lightning saves neither)."""
        frozen = {name for name, p in self.named_parameters() if not p.requires_grad}
        for name in frozen:
            checkpoint["state_dict"].pop(name, None)
        checkpoint[RNG_KEY] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        restore_frozen(self, checkpoint["state_dict"])  # left out by on_save_checkpoint
        # Only a resumed fit continues the random streams; evaluating a checkpoint draws none.
        resuming = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        if resuming and RNG_KEY in checkpoint:
            set_rng_states(checkpoint[RNG_KEY])

    def configure_optimizers(self):
        return self.make_optimizer(params=[p for p in self.parameters() if p.requires_grad])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.strategy.training_loss(batch)
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"non-finite training loss {losses['loss'].item()}")
        self.log_dict(
            {f"train/{k}": v for k, v in losses.items()},
            prog_bar=True,
            batch_size=len(batch["user"]),
        )
        return losses["loss"]

    def _evaluate(self, batch: dict[str, torch.Tensor]) -> None:
        if self.trainer.testing:  # the per-user records keep each user's domain weights
            scores, weights = self.strategy.scores_and_weights(batch)
        else:
            scores, weights = self.strategy.target_scores(batch), {}
        ranked, _ = with_fallback(scores, batch["excluded"], self.fallback)
        top = top_items(ranked, batch["excluded"], max(self.ks))
        values = metrics_of_top(top, batch["relevant"], self.ks)
        # Predicted minus held-out rating (B, items) where the user rated the item. The mask
        # comes from the ratings, not the errors, so a NaN prediction stays NaN in the results
        # instead of passing for an item nobody rated.
        errors, rated = None, None
        if self.error_names:
            rated = ~torch.isnan(batch["relevant_ratings"])
            errors = scores - batch["relevant_ratings"]
            values.update(self._user_errors(errors, rated))
        new_values = self._new_item_metrics(scores, top, batch) if NEW_ITEMS in batch else {}
        if self.trainer.testing:
            self.test_records.append(
                {
                    "user": batch["user"],
                    "is_cold": batch["is_cold"],
                    "top": top,
                    **values,
                    **new_values,
                    **weights,
                }
            )
        for group, rows in (("cold", batch["is_cold"]), ("warm", ~batch["is_cold"])):
            if rows.any():
                self.users_seen[group] += int(rows.sum())
                for name in self.metric_names:
                    self.means[f"{group}_{name}".replace("@", "_")].update(values[name][rows])
                if errors is not None:
                    self._update_errors(group, rows.unsqueeze(1) & rated, errors)

    def _new_item_metrics(
        self, scores: torch.Tensor, top: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The ``new_items`` group's per-user values (:func:`new_item_metrics`), added to its
        running means."""
        out = new_item_metrics(
            scores, top, batch["relevant"], batch["excluded"], batch[NEW_ITEMS], self.ks
        )
        for name, column in out.items():
            defined = ~torch.isnan(column)
            if defined.any():
                self.means[f"{NEW_ITEMS}_{name}".replace("@", "_")].update(column[defined])
        return {f"{NEW_ITEMS}/{name}": column for name, column in out.items()}

    @staticmethod
    def _user_errors(errors: torch.Tensor, rated: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each user's MAE and RMSE over their own held-out ratings (NaN without any): the
        per-user rows behind paired tests; the logged aggregates stay interaction-level."""
        count = rated.sum(1)
        missing = torch.where(count > 0, 0.0, torch.nan)
        errors = torch.where(rated, errors, 0.0)
        return {
            "mae": errors.abs().sum(1) / count.clamp_min(1) + missing,
            "rmse": ((errors**2).sum(1) / count.clamp_min(1)).sqrt() + missing,
        }

    def _update_errors(self, group: str, rated: torch.Tensor, errors: torch.Tensor) -> None:
        """Interaction-level sums of one group; ``rated`` (B, items): its users' rated items."""
        if rated.any():
            error = errors[rated]
            self.rating_means[f"{group}_abs"].update(error.abs())
            self.rating_means[f"{group}_sq"].update(error**2)

    def _log_epoch(self, split: str) -> None:
        logged = {}
        for group in GROUPS:
            if self.users_seen[group] == 0:
                continue
            for name in self.metric_names:
                metric = self.means[f"{group}_{name}".replace("@", "_")]
                logged[f"{split}/{group}/{name}"] = metric.compute()
            if self.error_names and self.rating_means[f"{group}_abs"].update_called:
                logged[f"{split}/{group}/mae"] = self.rating_means[f"{group}_abs"].compute()
                logged[f"{split}/{group}/rmse"] = self.rating_means[f"{group}_sq"].compute().sqrt()
        for name in (*self.metric_names, *self.error_names):
            per_group = [
                logged[f"{split}/{g}/{name}"] for g in GROUPS if f"{split}/{g}/{name}" in logged
            ]
            if per_group:  # (rating errors need ratings: none when the dataset has none)
                logged[f"{split}/{name}"] = torch.stack(per_group).mean()
        for name in self.new_item_names:  # (none updated: the scenario has no new items)
            metric = self.means[f"{NEW_ITEMS}_{name}".replace("@", "_")]
            if metric.update_called:
                logged[f"{split}/{NEW_ITEMS}/{name}"] = metric.compute()
        headline = f"{split}/{self.selection}"
        if headline in logged:  # (a per-group headline is absent when that group is)
            self.log(headline, logged.pop(headline), prog_bar=True)
        self.log_dict(logged, prog_bar=False)
        for metric in (*self.means.values(), *self.rating_means.values()):
            metric.reset()
        self.users_seen = {g: 0 for g in GROUPS}

    def on_fit_start(self) -> None:
        self.strategy.prepare(self.trainer.datamodule.tensors.training_matrix())

    def on_train_start(self) -> None:
        self.strategy.refresh()

    def on_validation_epoch_start(self) -> None:
        self.strategy.refresh()
        self.users_seen = {g: 0 for g in GROUPS}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_start(self) -> None:
        self.strategy.refresh()
        self.users_seen = {g: 0 for g in GROUPS}
        self.test_records = []

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def test_users(self) -> pd.DataFrame:
        """One row per user of the last test pass: ``user`` (index), ``group`` (cold/warm),
        every metric (with the rating objective also the user's ``mae`` and ``rmse``), and
        ``top``: the top-K target catalogue positions, best first; and the strategy's
        per-user domain weights (``weight/<domain>``, :meth:`TransferStrategy.transfer_weights`);
        with new items, the ``new_items/<metric>`` columns (NaN where the user has none)."""
        if not self.test_records:
            raise RuntimeError("test_users() needs a finished test pass (trainer.test)")
        records = self.test_records
        joined = {k: torch.cat([r[k] for r in records]).cpu() for k in records[0]}
        extra = [k for k in joined if k.startswith(("weight/", f"{NEW_ITEMS}/"))]
        columns = (*self.metric_names, *self.error_names, *extra)
        table = pd.DataFrame({name: joined[name].numpy() for name in columns})
        table.insert(0, "group", ["cold" if c else "warm" for c in joined["is_cold"].tolist()])
        table.insert(0, "user", joined["user"].numpy())
        table["top"] = list(joined["top"].numpy())
        return table
