"""Checkpoint selection per user group: each group's weights from that group's best epoch.

The default selection (``callbacks=default``) keeps the epoch with the best *mean* of the cold
and warm validation metrics and stops when that mean stops improving. When the two groups
learn at different speeds, the mean trades one for the other: a cold path that peaks early
stops the run while the warm path is still improving (``distillation`` on the sparse proxy:
validation warm NDCG@10 rose from 0.029 to 0.052 over 20 epochs while the mean stopped one
run after 8). A strategy whose cold and warm users are scored by disjoint weights
(:meth:`~recmig.strategy.TransferStrategy.group_parameters`) can instead keep each group's
weights from that group's own best validation epoch: the merged model scores every validation
user exactly as the epoch selected for their group did, so no group is traded for the other.

``callbacks=per_group`` swaps the mean's checkpoint and early stopping for
:class:`GroupSelection`; training stops when every group has gone ``patience`` epochs without
improving. The merged model is written once, after training, as
``checkpoints/best-cold<epoch>-warm<epoch>.ckpt`` (a ``best-*`` checkpoint like any run's, so
evaluation, serving and export open it unchanged); until then the selected weights travel in
``last.ckpt`` (this callback's state), so a resumed run continues the same selection.
"""

from __future__ import annotations

import logging
import operator
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint

from recmig.run import STRATEGY_PREFIX

log = logging.getLogger(__name__)


class GroupSelection(Checkpoint):
    def __init__(self, dirpath: str, monitor: str, mode: str = "max", patience: int = 3):
        """``monitor``: the run's selection metric over both groups (``val/ndcg@10``); each
        group is selected on its own version (``val/cold/ndcg@10``, ``val/warm/ndcg@10``)."""
        if not monitor.startswith("val/") or monitor.count("/") != 1:
            raise ValueError(
                f"callbacks.group_selection.monitor={monitor!r}: expected a metric over both "
                "groups, val/<metric> (each group is selected on val/<group>/<metric>)"
            )
        if mode not in ("min", "max"):
            raise ValueError(f"callbacks.group_selection.mode={mode!r}: expected min or max")
        if patience < 1:
            raise ValueError(f"callbacks.group_selection.patience must be >= 1, got {patience}")
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.metric = monitor.removeprefix("val/")
        self.better = operator.gt if mode == "max" else operator.lt
        self.patience = patience
        self.best: dict[str, float] = {}  # group -> best validation value
        self.epoch: dict[str, int] = {}  # group -> the epoch it was reached at
        self.stale: dict[str, int] = {}  # group -> validations since it improved
        self.weights: dict[str, dict[str, torch.Tensor]] = {}  # group -> its selected weights
        self.best_model_path = ""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        strategy = type(pl_module.strategy).__name__
        self.groups = pl_module.strategy.group_parameters()
        if self.groups is None:
            raise ValueError(
                f"callbacks=per_group: strategy {strategy} scores "
                "cold and warm users with shared weights, so one group's best epoch cannot be "
                "kept apart from the other's; use callbacks=default (the mean of both groups)"
            )
        names = [n.removeprefix(STRATEGY_PREFIX) for n in pl_module.state_dict()]
        owners = {n: [g for g, p in self.groups.items() if n.startswith(tuple(p))] for n in names}
        for group, prefixes in self.groups.items():
            if not any(group in claimed for claimed in owners.values()):
                raise ValueError(
                    f"{strategy}.group_parameters(): group {group!r} names no weights "
                    f"({list(prefixes)})"
                )
        shared = [n for n, claimed in owners.items() if len(claimed) > 1]
        if shared:
            raise ValueError(f"{strategy}.group_parameters(): groups share weights {shared[:3]}")

    def group_weights(self, pl_module: L.LightningModule, group: str) -> dict[str, torch.Tensor]:
        """A CPU copy of the module's weights that score ``group``."""
        prefixes = tuple(STRATEGY_PREFIX + p for p in self.groups[group])
        return {
            name: value.detach().cpu().clone()
            for name, value in pl_module.state_dict().items()
            if name.startswith(prefixes)
        }

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for group in self.groups:
            value = trainer.callback_metrics.get(f"val/{group}/{self.metric}")
            if value is None:  # (no validation users in this group)
                continue
            value = float(value)
            if group not in self.best or self.better(value, self.best[group]):
                self.best[group], self.epoch[group] = value, trainer.current_epoch
                self.stale[group] = 0
                self.weights[group] = self.group_weights(pl_module, group)
            else:
                self.stale[group] += 1
        if self.stale and min(self.stale.values()) >= self.patience:
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Load every group's selected weights into the module and write it as the run's best
        checkpoint."""
        if not self.weights or trainer.fast_dev_run:  # (debug=one_batch writes no checkpoint)
            return
        pl_module.load_state_dict({**pl_module.state_dict(), **self.merged()})
        epochs = "-".join(f"{g}{self.epoch[g]:03d}" for g in self.groups if g in self.epoch)
        path = self.dirpath / f"best-{epochs}.ckpt"
        trainer.save_checkpoint(path)
        self.best_model_path = str(path)
        log.info(
            "per-group selection: %s",
            ", ".join(f"{g} epoch {self.epoch[g]} ({self.best[g]:.4f})" for g in self.epoch),
        )

    def merged(self) -> dict[str, torch.Tensor]:
        return {name: value for weights in self.weights.values() for name, value in weights.items()}

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "epoch": self.epoch,
            "stale": self.stale,
            "weights": self.weights,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.epoch = dict(state_dict["best"]), dict(state_dict["epoch"])
        self.stale, self.weights = dict(state_dict["stale"]), dict(state_dict["weights"])
