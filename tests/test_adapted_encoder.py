"""LoRA / IA3 adapters on the real MiniLM: what trains, what stays frozen, what is saved."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors
from recmig.data.scenario import SOURCE, TARGET, build_scenario
from recmig.encoders.adapted import AdaptedTextItemEncoder
from recmig.registry import load_strategy
from recmig.strategy import StrategyContext
from recmig.training.module import TransferModule
from recmig.users.interest import MeanInterest


def build(data, scenario_cfg, **encoder_options):
    scenario = build_scenario(data, scenario_cfg)
    tensors = ScenarioTensors(scenario, 8)
    context = StrategyContext(
        vocab_size=tensors.vocab_size,
        dim=16,
        source_catalog=torch.from_numpy(scenario.catalog(SOURCE)),
        target_catalog=torch.from_numpy(scenario.catalog(TARGET)),
        make_item_encoder=partial(
            AdaptedTextItemEncoder,
            tensors.vocab_size,
            16,
            scenario.items,
            grad_items=8,
            **encoder_options,
        ),
        make_user_model=partial(MeanInterest, 16),
    )
    strategy = load_strategy("lora")(context, source_epochs=1)
    dm = CrossDomainDataModule(
        tensors, strategy.streams, LoaderConfig(max_len=8), schedule=strategy.streams_for_epoch
    )
    return strategy, dm


def test_only_adapters_projection_and_user_model_train(data, scenario_cfg):
    strategy, dm = build(data, scenario_cfg)
    encoder = strategy.tower.items
    trainable = {n for n, p in strategy.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable)
    lm_trainable = {n for n in trainable if n.startswith("tower.items.lm.")}
    assert lm_trainable and all("lora_" in n for n in lm_trainable)
    base_before = {n: p.clone() for n, p in encoder.lm.named_parameters() if "lora_" not in n}
    batch = dm._train_batch(list(range(len(dm.train_data["user"]))))
    strategy.train()
    loss = strategy.training_loss(batch)["loss"]
    loss.backward()
    assert all(p.grad is None for n, p in encoder.lm.named_parameters() if "lora_" not in n)
    lora_b = [p for n, p in encoder.lm.named_parameters() if "lora_B" in n]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
    torch.optim.Adam([p for p in strategy.parameters() if p.requires_grad], lr=1e-2).step()
    after = dict(encoder.lm.named_parameters())
    assert all(torch.equal(base_before[n], after[n]) for n in base_before)


def test_active_items_are_reencoded_and_refresh_updates_the_rest(data, scenario_cfg):
    strategy, dm = build(data, scenario_cfg)
    encoder = strategy.tower.items
    stale = encoder.cache.clone()
    with torch.no_grad():  # move the adapters away from their zero start
        for name, p in encoder.lm.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    strategy.train()
    labels = torch.tensor([[3, 5, 0]])
    encoder(active=labels)
    changed = (encoder.cache != stale).any(1).nonzero().flatten().tolist()
    assert changed == [2, 4]  # rows of items 3 and 5, re-encoded with the new adapters
    strategy.refresh()
    assert (encoder.cache != stale).any(1).all()
    # refresh encodes in eval mode (no adapter dropout), whatever mode the model is in.
    strategy.eval()
    with torch.no_grad():
        expected = encoder.encode(torch.arange(len(encoder.cache)))
    assert torch.allclose(encoder.cache, expected, atol=1e-5)


def test_checkpoints_hold_no_frozen_language_model_weights(data, scenario_cfg):
    strategy, _ = build(data, scenario_cfg)
    module = TransferModule(strategy, partial(torch.optim.Adam, lr=1e-3))
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    saved = checkpoint["state_dict"]
    lm_keys = [k for k in saved if ".lm." in k]
    assert lm_keys and all("lora_" in k for k in lm_keys)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)


def test_ia3_variant_trains_only_its_scaling_vectors(data, scenario_cfg):
    strategy, dm = build(data, scenario_cfg, method="ia3")
    trainable = [n for n, p in strategy.tower.items.lm.named_parameters() if p.requires_grad]
    assert trainable and all("ia3_" in n for n in trainable)
    with pytest.raises(ValueError, match="encoder.method"):
        build(data, scenario_cfg, method="prefix")
