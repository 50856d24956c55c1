"""Contracts between strategies and their components that a refactor could silently break."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest
import torch
from recmig_strategies.lora import LoRA
from torch import nn

from recmig.closed_form import ClosedFormStrategy
from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors
from recmig.data.scenario import SOURCE, TARGET, ScenarioConfig, build_scenario
from recmig.encoders.adapted import AdaptedTextItemEncoder
from recmig.encoders.item import IdItemEncoder, ItemEncoder
from recmig.registry import discover, load_strategy
from recmig.strategy import MappedTransfer, Phase, StrategyContext, TransferStrategy
from recmig.tokens import STREAM_ID
from recmig.users.interest import MeanInterest, SupportsInterest, UserModel
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
        if entry.value.startswith("recmig_strategies.")
        and issubclass(load_strategy(name), TransferStrategy)
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


class NoItems(TransferStrategy):
    """A plugin that forgot ``target_items``."""

    def training_loss(self, batch):
        return {"loss": torch.zeros(())}

    def target_interest(self, batch):
        return torch.zeros(len(batch["user"]), 1)


class NoTransferLoss(MappedTransfer):
    def map_domain(self, domain, history):
        return self.source.interest(history, self.source.table(None))


class NoFit(ClosedFormStrategy):
    def target_scores(self, batch):
        return torch.zeros(len(batch["user"]), len(self.target_catalog))


class NoScores(ClosedFormStrategy):
    def fit(self, matrix):
        pass


@pytest.mark.parametrize(
    ("cls", "method"),
    [
        (NoItems, "target_items"),
        (NoTransferLoss, "transfer_loss"),
        (NoFit, "fit"),
        (NoScores, "target_scores"),
    ],
)
def test_a_strategy_missing_a_required_method_fails_when_built(setup, cls, method):
    _, tensors = setup
    with pytest.raises(TypeError, match=rf"{cls.__name__}.*{method}"):
        cls(context(setup, partial(IdItemEncoder, tensors.vocab_size, 8)))


def test_components_missing_their_required_method_fail_when_built(setup):
    class NoVectors(ItemEncoder):
        pass

    class NoForward(UserModel):
        pass

    _, tensors = setup
    with pytest.raises(TypeError, match=r"NoVectors.*item_vectors"):
        NoVectors(tensors.vocab_size, 8)
    with pytest.raises(TypeError, match=r"NoForward.*forward"):
        NoForward()


class SumInterest(nn.Module):
    """A user model that satisfies the protocol without inheriting UserModel."""

    def __init__(self, dim: int):
        super().__init__()
        self.out = nn.Linear(dim, dim)

    def forward(self, items, tokens):
        return self.out(torch.cumsum(items, 1))

    def last(self, items, tokens):
        return self(items, tokens)[:, -1]


class Unfinished(SumInterest):
    last = None  # e.g. a sequence model wrapped without the whole-history read-out


def test_a_user_model_needs_the_protocol_not_the_base_class(setup):
    scenario, tensors = setup
    cls = load_strategy("target_only")
    base = context(setup, partial(IdItemEncoder, tensors.vocab_size, 8))
    strategy = cls(replace(base, make_user_model=partial(SumInterest, 8)))
    assert isinstance(strategy.tower.users, SupportsInterest)
    batch = stream_batches(strategy, tensors)["target"]
    loss = strategy.training_loss(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and strategy.tower.users.out.weight.grad.abs().sum() > 0
    with pytest.raises(TypeError, match=r"user_model: Unfinished lacks last"):
        cls(replace(base, make_user_model=partial(Unfinished, 8)))
    with pytest.raises(TypeError, match=r"encoder: Tensor lacks __call__"):
        cls(replace(base, make_item_encoder=lambda: torch.zeros(tensors.vocab_size, 8)))


class ThreePhases(LoRA):
    """Source, then both domains, then target: a schedule no built-in strategy has."""

    @property
    def phases(self):
        return (Phase(("source",), 2), Phase(("source", "target"), 1), Phase(("target",)))


def test_the_phase_schedule_decides_each_epochs_streams_and_the_minimum_epochs(setup):
    _, tensors = setup
    make = context(setup, partial(IdItemEncoder, tensors.vocab_size, 8))
    three = ThreePhases(make)
    expected = [("source",)] * 2 + [("source", "target")] + [("target",)] * 3
    assert [three.streams_for_epoch(e) for e in range(6)] == expected
    assert three.min_epochs == 4  # the last phase starts at epoch 3 and must train once
    dm = CrossDomainDataModule(
        tensors, three.streams, LoaderConfig(max_len=6), schedule=three.streams_for_epoch
    )
    for epoch, streams in enumerate(expected):
        served = {int(s) for s in dm.epoch_data(epoch)["stream"].unique()}
        assert served == {STREAM_ID[s] for s in streams}
    lora = load_strategy("lora")(make, source_epochs=3)
    assert [lora.streams_for_epoch(e) for e in range(5)] == [("source",)] * 3 + [("target",)] * 2
    assert lora.min_epochs == 4
    single = load_strategy("target_only")(make)
    assert single.phases == (Phase(single.streams),) and single.min_epochs == 0
    assert [single.streams_for_epoch(e) for e in range(3)] == [single.streams] * 3


class EndlessFirstPhase(ThreePhases):
    @property
    def phases(self):
        return (Phase(("source",)), Phase(("target",)))


def test_only_the_last_phase_may_run_until_training_ends(setup):
    _, tensors = setup
    strategy = EndlessFirstPhase(context(setup, partial(IdItemEncoder, tensors.vocab_size, 8)))
    with pytest.raises(TypeError, match=r"EndlessFirstPhase.phases: .*source.* epochs >= 1"):
        strategy.streams_for_epoch(0)
