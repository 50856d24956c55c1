"""``train(cfg)``: one run from a composed Hydra config to ``metrics.json``.

dataset -> scenario (domains, cold/warm split) -> tensors -> strategy (item encoder + user
model + transfer rule) -> Lightning Trainer -> best checkpoint -> val/test metrics.
"""

from __future__ import annotations

import json
import logging
import os
import time
from functools import partial
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recmig.data.loaders import CrossDomainDataModule, ScenarioTensors
from recmig.data.scenario import SOURCE, TARGET, Scenario, build_scenario
from recmig.registry import load_strategy
from recmig.strategy import StrategyContext
from recmig.training.module import TransferModule

log = logging.getLogger(__name__)


def build_strategy(cfg: DictConfig, tensors: ScenarioTensors):
    scenario = tensors.scenario
    options = OmegaConf.to_container(cfg.strategy, resolve=True)
    name = options.pop("name")
    cls = load_strategy(name)
    if cls.needs_source and not scenario.has_source:
        raise ValueError(
            f"strategy {name!r} transfers from a source domain, but the scenario has none "
            "(data.scenario.source_domains is empty)"
        )
    vocab = tensors.vocab_size
    context = StrategyContext(
        vocab_size=vocab,
        dim=cfg.dim,
        source_catalog=torch.from_numpy(scenario.catalog(SOURCE)),
        target_catalog=torch.from_numpy(scenario.catalog(TARGET)),
        make_item_encoder=partial(instantiate(cfg.encoder), vocab, cfg.dim, scenario.items),
        make_user_model=partial(instantiate(cfg.user_model), cfg.dim),
    )
    try:
        return cls(context, **options)
    except TypeError as err:
        raise ValueError(f"strategy {name!r}: {err} (check the keys under `strategy`)") from err


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write via a temporary file so a crash never leaves a truncated result."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


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
        tensors, strategy.streams, loader_cfg, schedule=strategy.streams_for_epoch
    )
    module = TransferModule(strategy, instantiate(cfg.optimizer), ks=tuple(cfg.ks))
    return RunParts(scenario, datamodule, module, timings)


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one configuration end to end; returns the flat metrics written to metrics.json."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    scenario, datamodule, module, timings = build_run(cfg)
    write_json_atomic(output_dir / "scenario.json", scenario.stats)

    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values()]
    loggers = [instantiate(c) for c in (cfg.logger or {}).values()]
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        min_epochs=max(cfg.trainer.get("min_epochs") or 0, module.strategy.min_epochs),
    )
    for logger in loggers:
        logger.log_hyperparams(
            {"config": OmegaConf.to_container(cfg, resolve=True), "scenario": scenario.stats}
        )

    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("resume"))
    timings["time/fit_s"] = time.perf_counter() - start
    timings["epochs"] = trainer.current_epoch
    # The checkpoint that watches a metric holds the best model (the other one, `last`).
    selecting = [c for c in trainer.checkpoint_callbacks if c.monitor]
    ckpt = (selecting[0].best_model_path or None) if selecting else None
    val = trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)[0]
    test = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)[0]

    metrics = {k: float(v) for k, v in {**val, **test}.items()}
    metrics.update(timings)
    metrics.update({f"scenario/{k}": v for k, v in scenario.stats.items()})
    write_json_atomic(output_dir / "metrics.json", metrics)
    for logger in loggers:
        logger.log_metrics({k: v for k, v in metrics.items() if k.startswith(("test/", "time/"))})
    print(format_table(metrics, cfg.strategy.name))
    return metrics


def format_table(metrics: dict[str, float], title: str) -> str:
    """A short cold/warm table of the test metrics for the end of a run."""
    names = [k.split("/", 2)[2] for k in metrics if k.startswith("test/warm/")]
    groups = [g for g in ("cold", "warm") if f"test/{g}/ndcg@10" in metrics]
    lines = [f"test metrics ({title})", "metric      " + "".join(f"{g:>10}" for g in groups)]
    for name in names:
        if name.endswith("@10") or name.endswith("@20"):
            row = "".join(f"{metrics[f'test/{g}/{name}']:>10.4f}" for g in groups)
            lines.append(f"{name:<12}{row}")
    return "\n".join(lines)
