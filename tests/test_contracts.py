"""Contracts between strategies and their components that a refactor could silently break."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors
from recmig.data.scenario import SOURCE, TARGET, ScenarioConfig, build_scenario
from recmig.encoders.adapted import AdaptedTextItemEncoder
from recmig.encoders.item import IdItemEncoder
from recmig.registry import discover, load_strategy
from recmig.strategy import StrategyContext
from recmig.users.interest import MeanInterest
from tests.conftest import synthetic_data

# Every built-in strategy that trains an item encoder in its loop (closed-form ones do not).
TOWER_STRATEGIES = {
    "bridge",
    "distillation",
    "feature_averaging",
    "fusion",
    "lora",
    "mapping",
    "pooled",
    "target_only",
}


def built_in_trained() -> list[str]:
    return sorted(
        name
        for name, entry in discover().items()
        if entry.value.startswith("recmig_strategies.") and not load_strategy(name).fitted_once
    )


def test_every_trained_built_in_is_checked_below():
    assert built_in_trained() == sorted(TOWER_STRATEGIES)


@pytest.fixture(scope="module")
def setup():
    data = synthetic_data(n_users=30, n_items=24, per_user=10)
    config = ScenarioConfig(
        source_domains=["Books"], target_domains=["Films"], cold_fraction=0.3, seed=1
    )
    scenario = build_scenario(data, config)
    return scenario, ScenarioTensors(scenario, 6)


def context(setup, make_encoder) -> StrategyContext:
    scenario, tensors = setup
    return StrategyContext(
        vocab_size=tensors.vocab_size,
        dim=8,
        source_catalog=torch.from_numpy(scenario.catalog(SOURCE)),
        target_catalog=torch.from_numpy(scenario.catalog(TARGET)),
        make_item_encoder=make_encoder,
        make_user_model=partial(MeanInterest, 8),
    )


def stream_batches(strategy, tensors):
    """Every training window of the strategy's streams, one batch per stream."""
    dm = CrossDomainDataModule(tensors, strategy.streams, LoaderConfig(max_len=6))
    everything = dm._train_batch(list(range(len(dm.train_data["user"]))))
    return {s: strategy.rows(everything, s) for s in strategy.streams}


@pytest.mark.parametrize("name", sorted(TOWER_STRATEGIES))
def test_adapters_get_gradient_from_every_stream_that_trains_the_encoder(setup, name):
    """Under encoder=lora_text every loss that trains an item encoder must reach the adapters
    (the encoder re-encodes the batch's items with gradient only when the batch's items are
    passed to it). ``overlap`` losses fit maps on detached towers by design, so they are not
    expected to."""
    scenario, tensors = setup
    make = partial(
        AdaptedTextItemEncoder, tensors.vocab_size, 8, scenario.items, max_length=12, grad_items=4
    )
    torch.manual_seed(0)
    strategy = load_strategy(name)(context(setup, make))
    with torch.no_grad():  # LoRA's B starts at 0, which zeroes A's gradient; B's is what we read
        for n, p in strategy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    strategy.train()
    for stream, batch in stream_batches(strategy, tensors).items():
        if stream == "overlap":
            continue
        strategy.zero_grad()
        strategy.training_loss(batch)["loss"].backward()
        adapters = [p for n, p in strategy.named_parameters() if "lora_" in n]
        assert adapters
        moved = sum(float(p.grad.abs().sum()) for p in adapters if p.grad is not None)
        assert moved > 0, f"{name}: the {stream} loss gives the LoRA adapters no gradient"


@pytest.mark.parametrize("name", sorted(TOWER_STRATEGIES))
def test_a_batch_missing_a_stream_gives_a_finite_loss(setup, name):
    """A batch may hold rows of only some of a strategy's streams (the last batch of an epoch,
    a phase); the losses of the absent streams are 0, never NaN."""
    _, tensors = setup
    make = partial(IdItemEncoder, tensors.vocab_size, 8)
    strategy = load_strategy(name)(context(setup, make))
    strategy.train()
    batches = stream_batches(strategy, tensors)
    for stream, batch in batches.items():
        losses = strategy.training_loss(batch)
        for key, value in losses.items():
            assert torch.isfinite(value), f"{name}: {key} is {value} on a batch of {stream} rows"


def test_run_folders_made_before_the_data_split_still_load(tmp_path):
    """An earlier run config names recmig.data.datasets.<loader>; evaluating or serving it
    must find the loader where it lives now."""
    from hydra.utils import get_method
    from omegaconf import OmegaConf

    from recmig.train import MOVED_TARGETS, load_finished_run

    (tmp_path / ".hydra").mkdir()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best-epoch=1.ckpt").write_bytes(b"")
    for old, new in MOVED_TARGETS.items():
        config = {"data": {"dataset": {"_target_": old}}, "paths": {"output_dir": "elsewhere"}}
        OmegaConf.save(config, tmp_path / ".hydra" / "config.yaml")
        cfg, best = load_finished_run(tmp_path)
        assert cfg.data.dataset._target_ == new and best.name == "best-epoch=1.ckpt"
        assert callable(get_method(new))
        assert cfg.paths.output_dir == str(tmp_path)
