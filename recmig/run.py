"""Opening a run: the strategy a config builds and the finished run a folder holds.

What serving, reports and benchmarks need from a run without the training stack: nothing here
imports Lightning, so ``recmig recommend`` and ``recmig serve`` start in the time it takes to
import torch and read the run (:mod:`recmig.train` builds on the same functions).
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recmig.data.scenario import SOURCE, TARGET
from recmig.data.tensors import ScenarioTensors
from recmig.objectives import load_objective
from recmig.paths import run_config_path
from recmig.privacy import GaussianRelease, PrivacyConfig
from recmig.registry import discover, load_strategy
from recmig.strategy import Strategy, StrategyContext

T = TypeVar("T")

STRATEGY_PREFIX = "strategy."
"""Where a run checkpoint keeps the strategy's weights (the Lightning module's attribute)."""


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
    if "overlap" in cls.streams and scenario.stats.get("overlap/users", 0) == 0:
        raise ValueError(
            f"strategy {name!r} learns from users active in both domains, but this scenario "
            f"has none (data {cfg.data.dataset.get('_target_', '?')}); strategies that "
            "transfer through items (pooled, lora, ...) work without them"
        )
    privacy = privacy_config(cfg.get("privacy"))
    if privacy.enabled and not cls.releases_source:
        supported = sorted(n for n in discover() if load_strategy(n).releases_source)
        raise ValueError(
            f"privacy.epsilon={privacy.epsilon}: strategy {name!r} reads users' raw source "
            "histories during training (its source representation changes with every step, "
            "so a one-time private release cannot stand in for it); strategies that release "
            f"one vector per user: {supported}"
        )
    objective = cfg.get("objective", "ranking")
    if objective not in cls.objectives:
        raise ValueError(
            f"objective={objective!r}: strategy {name!r} supports {list(cls.objectives)}"
        )
    vocab = tensors.vocab_size
    item_source = torch.full((vocab,), -1, dtype=torch.long)
    item_source[: vocab - 1] = torch.from_numpy(scenario.item_source.astype(np.int64))
    context = StrategyContext(
        vocab_size=vocab,
        dim=cfg.dim,
        source_catalog=torch.from_numpy(scenario.catalog(SOURCE)),
        target_catalog=torch.from_numpy(scenario.catalog(TARGET)),
        source_names=scenario.source_names,
        item_source=item_source,
        trained_items=trained_items(scenario, vocab),
        release=GaussianRelease(privacy, seed=int(cfg.seed)) if privacy.enabled else None,
        make_item_encoder=config_built(
            "encoder", partial(instantiate(cfg.encoder), vocab, cfg.dim, scenario.items)
        ),
        make_user_model=config_built("user_model", partial(instantiate(cfg.user_model), cfg.dim)),
        objective=load_objective(objective).for_run(cfg, scenario, vocab),
    )
    try:
        inspect.signature(cls).bind(context, **options)
    except TypeError as err:
        raise ValueError(f"strategy {name!r}: {err} (check the keys under `strategy`)") from err
    return cls(context, **options)


def config_built(group: str, factory: Callable[[], T]) -> Callable[[], T]:
    """``factory`` (a config group's partially applied target), whose argument errors name
    the group: a strategy builds its encoder and user model, and a key one of them does not
    take (an experiment's ``encoder.template`` under ``encoder=id``) is that group's error."""

    def build() -> T:
        try:
            inspect.signature(factory).bind()
        except (TypeError, ValueError) as err:  # (a partial with a bad keyword: ValueError)
            reason = err.__cause__ or err
            raise ValueError(f"{group}: {reason} (check the keys under `{group}`)") from err
        return factory()

    return build


def trained_items(scenario, vocab: int) -> torch.Tensor:
    """(vocab,) bool: the tokens with a training interaction in ``scenario``."""
    mask = torch.zeros(vocab, dtype=torch.bool)
    mask[torch.from_numpy(scenario.train["item"].to_numpy(np.int64, copy=True))] = True
    return mask


def privacy_config(options: DictConfig | None) -> PrivacyConfig:
    """The run's ``privacy`` block (absent: no mechanism); unknown keys are named."""
    values = OmegaConf.to_container(options, resolve=True) if options else {}
    unknown = sorted(set(values) - set(PrivacyConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(
            f"privacy: unknown key {unknown[0]!r}; the keys are "
            f"{sorted(PrivacyConfig.__dataclass_fields__)}"
        )
    return PrivacyConfig(**values)


def load_plain_checkpoint(path: str | Path, what: str) -> dict:
    """A checkpoint read as tensors and plain containers only (``weights_only=True``), so a
    checkpoint someone handed over never runs code; ValueError naming ``what`` otherwise.
    Lightning loads checkpoints again itself, with whatever default the installed torch has:
    every path to it goes through here first."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{what}={path}: the checkpoint holds pickled objects besides tensors and plain "
            f"containers, which recmig does not load ({str(err).splitlines()[0]})"
        ) from err


def restore_frozen(module: torch.nn.Module, state: dict) -> None:
    """Add ``module``'s frozen parameters missing from ``state`` (checkpoints leave the
    pretrained language model under adapters out: it is rebuilt from its source), so loading
    ``state`` can stay strict for everything else."""
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad and name not in state:
            state[name] = parameter.detach().clone()


def load_strategy_weights(strategy: Strategy, checkpoint: dict) -> None:
    """Put a run checkpoint's strategy weights into ``strategy`` (built from the run's config),
    strictly, without the Lightning module that saved them (its ``strategy.`` prefix dropped)."""
    state = {
        name.removeprefix(STRATEGY_PREFIX): value
        for name, value in checkpoint["state_dict"].items()
        if name.startswith(STRATEGY_PREFIX)
    }
    restore_frozen(strategy, state)
    strategy.load_state_dict(state)


MOVED_TARGETS = {
    "recmig.data.datasets.load_movielens": "recmig.data.movielens.load_movielens",
    "recmig.data.datasets.load_movielens_pair": "recmig.data.movielens.load_movielens_pair",
    "recmig.data.datasets.load_table_dataset": "recmig.data.tables.load_table_dataset",
    "recmig.data.datasets.load_amazon": "recmig.data.amazon.load_amazon",
}
"""Dataset loaders an earlier recmig named in run configs (``recmig.data.datasets`` was split
by source family), so runs made before the split still evaluate and serve."""


def load_finished_run(run_dir: Path) -> tuple[DictConfig, Path]:
    """A finished run's composed config (``output_dir`` pointed at ``run_dir``) and the path of
    its best checkpoint; FileNotFoundError naming what is missing."""
    run_dir = Path(run_dir)
    config_path = run_config_path(run_dir)
    best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    if not best:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'}: no best-*.ckpt (unfinished run?)")
    cfg = OmegaConf.load(config_path)
    dataset = cfg.get("data", {}).get("dataset", {})
    if dataset.get("_target_") in MOVED_TARGETS:
        dataset["_target_"] = MOVED_TARGETS[dataset["_target_"]]
    cfg.paths.output_dir = str(run_dir)
    return cfg, best[-1]
