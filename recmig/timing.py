"""Timing pieces shared by ``recmig benchmark`` and its sweep estimate: a scratch config, a
quiet trainer, epoch wall times."""

from __future__ import annotations

import statistics
import tempfile
import time

import lightning as L
from omegaconf import open_dict

from recmig.config import compose_config


class EpochTimer(L.Callback):
    """Wall time of each training epoch (validation excluded)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def compose_scratch(overrides: list[str]):
    """The composed config, its outputs in a fresh temporary folder."""
    cfg = compose_config(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = tempfile.mkdtemp(prefix="recmig-bench-")
    return cfg


def quiet_trainer(cfg, **options) -> L.Trainer:
    """A Lightning trainer on the run's accelerator, one device, without logger, progress bar
    or model summary: what the timed loops run in."""
    return L.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator=cfg.trainer.accelerator,
        devices=1,
        **options,
    )


def time_epochs(cfg, datamodule, module, epochs: int) -> dict[str, float]:
    """Median seconds of a training epoch (validation excluded)."""
    timer = EpochTimer()
    trainer = quiet_trainer(
        cfg, max_epochs=epochs, enable_checkpointing=False, limit_val_batches=0, callbacks=[timer]
    )
    trainer.fit(module, datamodule=datamodule)
    return {
        "training epoch, median (s)": statistics.median(timer.seconds),
        "training windows per epoch": len(datamodule.train_data["user"]),
    }
