"""The rating objective (protocol P2's rating view): rating lookup, MAE/RMSE, option checks."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from test_strategies import MAX_LEN, make_context

from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors
from recmig.data.scenario import TARGET, build_scenario
from recmig.evaluation.evaluator import user_errors
from recmig.objectives import rating_baselines, rating_squared_error
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
    # predicted rating = the item's baseline + scale * score
    # A fresh model starts close to the baselines: its scale is 1 / dim.
    assert strategy.objective.scale.item() == pytest.approx(1 / strategy.context.dim)
    with torch.no_grad():
        strategy.objective.offsets.copy_(3.0 + torch.rand(len(strategy.objective.offsets)))
        strategy.objective.scale.fill_(0.7)
    offset = strategy.objective.offsets[strategy.target_catalog]
    module = TransferModule(strategy, torch.optim.Adam, ks=(5, 10), selection="val/rmse")
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
                predicted = offset[rated[row]] + 0.7 * scores[row][rated[row]]
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


def test_item_baselines_are_shrunk_item_means_within_each_domain(data, scenario_cfg):
    scenario = build_scenario(data, scenario_cfg)
    rated = scenario.train.dropna(subset=["rating"])
    target_mean = rated.loc[rated["domain"] == TARGET, "rating"].mean()
    assert np.allclose(rating_baselines(scenario, "global"), target_mean)

    exact = rating_baselines(scenario, "item", shrinkage=0)
    for item, ratings in rated.groupby("item")["rating"]:
        assert exact[item] == pytest.approx(ratings.mean(), rel=1e-5)
    shrunk = rating_baselines(scenario, "item", shrinkage=4)
    item, ratings = next(iter(rated.groupby("item")["rating"]))
    domain_mean = rated.loc[rated["domain"] == scenario.item_domain[item], "rating"].mean()
    expected = (ratings.sum() + 4 * domain_mean) / (len(ratings) + 4)
    assert shrunk[item] == pytest.approx(expected, rel=1e-5)
    unrated = np.setdiff1d(scenario.catalog(TARGET), rated["item"].unique())
    assert np.allclose(shrunk[unrated], target_mean)  # no training rating: the domain mean
    with pytest.raises(ValueError, match="rating_baseline must be 'global' or 'item'"):
        rating_baselines(scenario, "user")


def test_rating_loss_adds_each_labels_baseline():
    interests = torch.randn(2, 3, 4)
    table = torch.randn(6, 4)
    labels = torch.tensor([[1, 2, 0], [3, 4, 5]])
    ratings = torch.tensor([[4.0, float("nan"), float("nan")], [2.0, 5.0, 1.0]])
    offsets = torch.arange(6, dtype=torch.float)
    keep = (labels != 0) & ~torch.isnan(ratings)
    predicted = offsets[labels[keep]] + (interests[keep] * table[labels[keep]]).sum(-1)
    expected = ((predicted - ratings[keep]) ** 2).mean()
    got = rating_squared_error(interests, labels, ratings, table, offsets)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    scaled = offsets[labels[keep]] + 0.5 * (predicted - offsets[labels[keep]])
    got = rating_squared_error(interests, labels, ratings, table, offsets, scale=0.5)
    assert got.item() == pytest.approx(((scaled - ratings[keep]) ** 2).mean().item(), rel=1e-6)
    # One number is the same baseline for every item.
    same = rating_squared_error(interests, labels, ratings, table, torch.full((6,), 2.0))
    assert same.item() == pytest.approx(
        rating_squared_error(interests, labels, ratings, table, 2.0).item(), rel=1e-6
    )


def test_per_user_errors_skip_unrated_items_but_keep_a_nan_prediction():
    ratings = torch.tensor([[4.0, float("nan"), 2.0], [float("nan")] * 3, [3.0, 5.0, 1.0]])
    predicted = torch.tensor([[3.0, 9.0, 4.0], [1.0, 1.0, 1.0], [float("nan"), 5.0, 1.0]])
    errors = user_errors(predicted - ratings, ~torch.isnan(ratings))
    assert errors["mae"][0].item() == pytest.approx(1.5)  # |-1| and |2|; the 9 is unrated
    assert errors["rmse"][0].item() == pytest.approx((2.5) ** 0.5)
    assert torch.isnan(errors["mae"][1])  # no held-out rating at all
    assert torch.isnan(errors["rmse"][2])  # a diverged prediction is not hidden


@pytest.mark.parametrize(
    ("objective", "monitor", "mode"),
    [("ranking", "val/ndcg@10", "max"), ("rating", "val/rmse", "min")],
)
def test_checkpoint_selection_and_early_stopping_follow_the_objective(objective, monitor, mode):
    from recmig.config import compose_config

    cfg = compose_config([f"objective={objective}"])
    for callback in ("model_checkpoint", "early_stopping"):
        assert cfg.callbacks[callback].monitor == monitor
        assert cfg.callbacks[callback].mode == mode


@pytest.mark.parametrize(
    ("objective", "direction"), [("ranking", "maximize"), ("rating", "minimize")]
)
def test_an_optuna_search_optimises_the_objectives_selection_metric(objective, direction):
    """The sweeper's direction follows `selection.<objective>.mode` (an RMSE search that
    maximised would pick the worst trial)."""
    from hydra import compose, initialize_config_dir

    from recmig.config import CONFIG_DIR, enable_plugin_configs

    enable_plugin_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hparams_search=optuna_bridge", f"objective={objective}"],
            return_hydra_config=True,
        )
    assert cfg.hydra.sweeper.direction == direction


def test_selection_must_be_a_logged_validation_metric(data, scenario_cfg):
    scenario = build_scenario(data, scenario_cfg)
    tensors = ScenarioTensors(scenario, MAX_LEN)
    strategy = load_strategy("target_only")(make_context(scenario, tensors))
    # ks without 10: the default monitor is named, with what the run logs instead.
    with pytest.raises(ValueError, match=r"'val/ndcg@10' is not a metric .*ks=\[5, 20\]"):
        TransferModule(strategy, torch.optim.Adam, ks=(5, 20))
    module = TransferModule(strategy, torch.optim.Adam, ks=(5, 20), selection="val/ndcg@20")
    assert module.selection == "ndcg@20"
    with pytest.raises(ValueError, match="'val/rmse' is not a metric"):  # ranking logs no RMSE
        TransferModule(strategy, torch.optim.Adam, selection="val/rmse")


def test_a_checkpoint_saved_before_the_objective_owned_its_scale_still_loads(data, scenario_cfg):
    scenario = build_scenario(data, scenario_cfg)
    tensors = ScenarioTensors(scenario, MAX_LEN)
    strategy = load_strategy("target_only")(make_context(scenario, tensors, objective="rating"))
    state = strategy.state_dict()
    state["rating_scale"] = torch.tensor(0.25)  # the earlier name of the parameter
    del state["objective.scale"]
    strategy.load_state_dict(state, strict=True)
    assert strategy.objective.scale.item() == 0.25


def test_the_evaluator_refuses_an_error_metric_it_does_not_compute():
    """An objective's error metrics must be ones the evaluator computes (ERROR_METRICS), named
    in the error, so a plugin objective cannot ask for one that would silently be missing."""
    from recmig.evaluation.evaluator import ERROR_METRICS, Evaluator

    assert set(ERROR_METRICS) == {"mae", "rmse"}
    Evaluator((10,), ("rmse",), "rating")  # a subset is fine: only its running mean is kept
    with pytest.raises(ValueError, match=r"objective 'odd': error metrics \['mape'\] are not"):
        Evaluator((10,), ("mae", "mape"), "odd")
