"""The rating objective (protocol P2's rating view): rating lookup, MAE/RMSE, option checks."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from test_strategies import MAX_LEN, make_context

from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors
from recmig.data.scenario import build_scenario
from recmig.registry import load_strategy
from recmig.training.module import TransferModule


def test_ratings_of_finds_each_pairs_rating_and_nan_elsewhere(data, scenario_cfg):
    scenario = build_scenario(data, scenario_cfg)
    tensors = ScenarioTensors(scenario, MAX_LEN)
    row = scenario.cold.iloc[0]
    users = torch.tensor([row["user"], row["user"]])
    items = torch.tensor([[row["item"], 0, tensors.bos], [row["item"], row["item"], 0]])
    got = tensors.ratings_of(users, items)
    assert got[0, 0].item() == pytest.approx(row["rating"])  # held out, still looked up
    assert torch.isnan(got[0, 1:]).all() and torch.isnan(got[1, 2])
    ids = data.interactions.set_index(["user_id", "item_id"])["rating"]
    expected = ids[(scenario.user_ids[row["user"]], scenario.items["item_id"][row["item"] - 1])]
    assert row["rating"] == pytest.approx(expected)


def test_module_logs_mae_and_rmse_over_held_out_ratings(data, scenario_cfg):
    torch.manual_seed(0)
    scenario = build_scenario(data, scenario_cfg)
    tensors = ScenarioTensors(scenario, MAX_LEN)
    strategy = load_strategy("target_only")(make_context(scenario, tensors, objective="rating"))
    dm = CrossDomainDataModule(
        tensors, strategy.streams, LoaderConfig(max_len=MAX_LEN), ratings=True
    )
    assert (
        "relevant_ratings"
        not in CrossDomainDataModule(
            tensors, strategy.streams, LoaderConfig(max_len=MAX_LEN)
        ).eval_data["test"][0]
    )  # ranking runs carry no ratings
    offset = 3.0  # predicted rating = offset + score
    module = TransferModule(strategy, torch.optim.Adam, ks=(5, 10), rating_offset=offset)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    logged = trainer.test(module, datamodule=dm, verbose=False)[0]

    strategy.eval()
    errors = {"cold": [], "warm": []}
    per_user = {}
    with torch.no_grad():
        for batch in dm.eval_data["test"]:
            scores = strategy.target_interest(batch) @ strategy.target_items().T
            rated = ~torch.isnan(batch["relevant_ratings"])
            for row in range(len(batch["user"])):
                group = "cold" if batch["is_cold"][row] else "warm"
                predicted = offset + scores[row][rated[row]]
                diff = predicted - batch["relevant_ratings"][row][rated[row]]
                errors[group].append(diff)
                per_user[batch["user"][row].item()] = diff
    for group, parts in errors.items():
        diff = torch.cat(parts)
        assert logged[f"test/{group}/mae"] == pytest.approx(diff.abs().mean().item(), rel=1e-5)
        rmse = diff.pow(2).mean().sqrt().item()
        assert logged[f"test/{group}/rmse"] == pytest.approx(rmse, rel=1e-5)
    # Cold users: every held-out target rating counts (interaction-level, as PTUPCDR).
    cold_test = scenario.cold[scenario.cold["group"] == "cold_test"]
    assert len(torch.cat(errors["cold"])) == len(cold_test)
    assert np.isfinite(logged["test/rmse"])
    # Per-user rows (for paired tests): each user's own MAE / RMSE, NaN without ratings.
    rows = module.test_users().set_index("user")
    assert set(rows.index) == set(per_user)
    for user, diff in per_user.items():
        if len(diff) == 0:
            assert np.isnan(rows.loc[user, "mae"]) and np.isnan(rows.loc[user, "rmse"])
        else:
            assert rows.loc[user, "mae"] == pytest.approx(diff.abs().mean().item(), rel=1e-5)
            assert rows.loc[user, "rmse"] == pytest.approx(
                diff.pow(2).mean().sqrt().item(), rel=1e-5
            )


def test_strategy_without_the_objective_is_refused(monkeypatch):
    from recmig.config import compose_config
    from recmig.train import build_run

    cls = load_strategy("target_only")
    monkeypatch.setattr(cls, "objectives", ("ranking",))
    cfg = compose_config(["data=ml100k_genres", "encoder=id", "objective=rating"])
    with pytest.raises(ValueError, match="objective='rating': strategy 'target_only' supports"):
        build_run(cfg)
