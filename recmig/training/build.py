"""A run's parts from its config: dataset -> scenario -> tensors -> strategy -> Lightning module.

Shared by ``recmig train`` (:mod:`recmig.train`), the benchmark and the sweep-cost estimate,
so none of them imports another's entry point.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from hydra.utils import instantiate
from omegaconf import DictConfig

from recmig.data.loaders import CrossDomainDataModule, ScenarioTensors
from recmig.data.scenario import Scenario, build_scenario
from recmig.run import build_strategy
from recmig.training.module import TransferModule


class RunParts(NamedTuple):
    """Everything a run trains and evaluates, built from a config (also used by the benchmark)."""

    scenario: Scenario
    datamodule: CrossDomainDataModule
    module: TransferModule
    timings: dict[str, float]


def build_run(cfg: DictConfig) -> RunParts:
    """dataset -> scenario -> tensors -> strategy -> Lightning module, timing each stage."""
    timings = {}
    start = time.perf_counter()
    data = instantiate(cfg.data.dataset)
    scenario = build_scenario(data, instantiate(cfg.data.scenario))
    loader_cfg = instantiate(cfg.loader)
    tensors = ScenarioTensors(scenario, loader_cfg.max_len)
    timings["time/data_s"] = time.perf_counter() - start

    start = time.perf_counter()
    strategy = build_strategy(cfg, tensors)
    timings["time/model_build_s"] = time.perf_counter() - start
    datamodule = CrossDomainDataModule(
        tensors,
        strategy.streams,
        loader_cfg,
        schedule=strategy.streams_for_epoch,
        ratings=strategy.objective.needs_ratings,
        reads=strategy.reads,
    )
    module = TransferModule(
        strategy,
        instantiate(cfg.optimizer),
        ks=tuple(cfg.ks),
        selection=selection_metric(cfg),
        fallback=tensors.target_popularity,
    )
    return RunParts(scenario, datamodule, module, timings)


def selection_metric(cfg: DictConfig) -> str:
    """The validation metric that selects the checkpoint, stops training and is what a Hydra
    sweeper optimises: ``selection.<objective>.monitor`` (``val/...`` only: selecting on test
    users would leak them into the choice)."""
    objective = cfg.get("objective", "ranking")
    rule = (cfg.get("selection") or {}).get(objective)
    if rule is None or "monitor" not in rule or rule.get("mode") not in ("min", "max"):
        raise ValueError(
            f"selection.{objective}: expected {{monitor: val/<metric>, mode: min|max}} for "
            f"objective={objective}, got {rule}"
        )
    if not str(rule.monitor).startswith("val/"):
        raise ValueError(
            f"selection.{objective}.monitor={rule.monitor!r}: must be a validation metric (val/...)"
        )
    return str(rule.monitor)
