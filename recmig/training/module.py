"""The one Lightning module every strategy trains in.

It owns the optimisation and delegates evaluation to :class:`recmig.evaluation.evaluator.
Evaluator` (groups, per-user records, the metrics the objective declares); the strategy owns
the model and the loss. The selection metric (``val/ndcg@10`` by default; the run config's
``selection``) is the mean of the cold and warm groups' values, so a strategy is selected for
cold and warm users alike, on validation users only.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.trainer.states import TrainerFn

from recmig.batches import TrainBatch, UserBatch
from recmig.evaluation.evaluator import Evaluator
from recmig.run import restore_frozen
from recmig.strategy import Strategy
from recmig.training.rng import RNG_KEY, rng_states, set_rng_states


class TransferModule(L.LightningModule):
    def __init__(
        self,
        strategy: Strategy,
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
        self.make_optimizer = optimizer
        self.evaluator = Evaluator(
            ks, strategy.objective.error_metrics, strategy.objective.name, fallback
        )
        logged = [f"val/{name}" for name in self.evaluator.logged()]
        if selection not in logged:
            raise ValueError(
                f"selection monitor {selection!r} is not a metric this run logs (ks={list(ks)}, "
                f"objective {strategy.objective.name!r}); it logs "
                f"{[n for n in logged if n.count('/') == 1]} and their val/cold/, val/warm/ "
                "versions: set selection.<objective>.monitor or ks"
            )
        self.selection = selection.removeprefix("val/")

    @property
    def ks(self) -> tuple[int, ...]:
        """The list lengths every ranking metric is computed at."""
        return self.evaluator.ks

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

    def training_step(self, batch: TrainBatch, batch_idx: int) -> torch.Tensor:
        losses = self.strategy.training_loss(batch)
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"non-finite training loss {losses['loss'].item()}")
        self.log_dict(
            {f"train/{k}": v for k, v in losses.items()},
            prog_bar=True,
            batch_size=len(batch.user),
        )
        return losses["loss"]

    def _evaluate(self, batch: UserBatch) -> None:
        if self.trainer.testing:  # the per-user records keep each user's domain weights
            scores, weights = self.strategy.scores_and_weights(batch)
            self.evaluator.update(scores, batch, weights)
        else:
            self.evaluator.update(self.strategy.target_scores(batch), batch)

    def _log_epoch(self, split: str) -> None:
        logged = self.evaluator.compute(split)
        headline = f"{split}/{self.selection}"
        if headline in logged:  # (a per-group headline is absent when that group is)
            self.log(headline, logged.pop(headline), prog_bar=True)
        self.log_dict(logged, prog_bar=False)

    def on_fit_start(self) -> None:
        self.strategy.prepare(self.trainer.datamodule.tensors.training_matrix())

    def on_train_start(self) -> None:
        self.strategy.refresh()

    def on_validation_epoch_start(self) -> None:
        self.strategy.refresh()
        self.evaluator.start(keep_records=False)

    def validation_step(self, batch: UserBatch, batch_idx: int) -> None:
        self._evaluate(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_start(self) -> None:
        self.strategy.refresh()
        self.evaluator.start(keep_records=True)

    def test_step(self, batch: UserBatch, batch_idx: int) -> None:
        self._evaluate(batch)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def test_users(self) -> pd.DataFrame:
        """The last test pass's per-user rows (:meth:`Evaluator.test_users`)."""
        return self.evaluator.test_users()
