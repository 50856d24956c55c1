"""The machinery that makes trained strategies compete with closed-form ones: the set-level
likelihood of a user's target items, text + ID item vectors, a closed-form teacher."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial

import pandas as pd
import pytest
import torch

from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors
from recmig.data.scenario import build_scenario
from recmig.encoders.item import IdItemEncoder, TextIdItemEncoder, TextItemEncoder
from recmig.evaluation.ranking import ranking_metrics
from recmig.objectives import history_likelihood_loss
from recmig.registry import load_strategy
from recmig.run import trained_items
from recmig.strategy import StrategyContext
from recmig.tokens import STREAM_ID
from tests.test_configs import recmig_train
from tests.test_strategies import make_context

MAX_LEN = 8


def context_for(scenario, tensors, dim=16, item_encoder=None) -> StrategyContext:
    """test_strategies' context, told which items have training interactions (as
    ``recmig train`` builds it)."""
    context = make_context(scenario, tensors, dim=dim, item_encoder=item_encoder)
    context.trained_items = trained_items(scenario, tensors.vocab_size)
    return context


def test_set_level_likelihood_matches_its_formula():
    """- mean over the users' target items of log softmax(scores) (Mult-VAE's multinomial
    likelihood), padding and BOS skipped, computed by hand on a toy batch."""
    bos = 9
    catalog = torch.tensor([2, 3, 5, 7])
    scores = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, 0.3, 2.0, 1.0]])
    history = torch.tensor([[bos, 3, 7, 0], [5, 2, 3, 0]])
    log_p = torch.log_softmax(scores, dim=1)
    # user 0: items 3, 7 (catalogue positions 1, 3); user 1: items 5, 2, 3 (2, 0, 1)
    expected = -(log_p[0, 1] + log_p[0, 3] + log_p[1, 2] + log_p[1, 0] + log_p[1, 1]) / 5
    loss = history_likelihood_loss(scores, history, catalog, bos)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.fixture
def new_item_setup(data, scenario_cfg, tmp_path):
    scenario = build_scenario(data, replace(scenario_cfg, new_item_fraction=0.25))
    tensors = ScenarioTensors(scenario, MAX_LEN)
    text = partial(TextIdItemEncoder, tensors.vocab_size, 8, scenario.items, cache_dir=tmp_path)
    return scenario, tensors, context_for(scenario, tensors, dim=8, item_encoder=text)


def test_id_residual_is_zero_for_items_unseen_in_training(new_item_setup, tmp_path):
    scenario, tensors, context = new_item_setup
    strategy = load_strategy("target_only")(context)
    encoder = strategy.tower.items
    dm = CrossDomainDataModule(tensors, strategy.streams, LoaderConfig(max_len=MAX_LEN))
    batch = dm._train_batch(list(range(len(dm.train_data["user"]))))
    optimizer = torch.optim.Adam(strategy.parameters(), lr=0.05)
    for _ in range(10):
        optimizer.zero_grad()
        strategy.training_loss(batch)["loss"].backward()
        optimizer.step()
    new = torch.from_numpy(scenario.new_items)
    seen = torch.from_numpy(scenario.train["item"].unique())
    table = encoder(None)
    text_only = encoder.projection(encoder.features)  # the text part alone, rows 1..N
    # New items (and source items the target stream never trains) keep their text vector.
    assert torch.equal(table[new], text_only[new - 1])
    # Their residual never even moved (a softmax negative's push is masked out).
    assert encoder.trained[new - 1].eq(0).all() and encoder.residual[new - 1].eq(0).all()
    # Items with training interactions did move off their text vector.
    target_seen = seen[torch.isin(seen, context.target_catalog)]
    assert (table[target_seen] - text_only[target_seen - 1]).abs().sum(1).gt(0).all()
    # The mask is saved with the weights: a served model scores with the trained mask.
    state = encoder.state_dict()
    assert "trained" in state and state["trained"][new - 1].eq(0).all()
    plain = TextItemEncoder(tensors.vocab_size, 8, scenario.items, cache_dir=tmp_path)
    assert set(state) - set(plain.state_dict()) == {"residual", "trained"}


def test_distillation_from_a_closed_form_teacher_reaches_its_ranking(data, scenario_cfg):
    """The student, trained on the closed-form teacher's soft targets alone, ranks the
    target catalogue for held-out cold users as the teacher does (its top 5 as the relevant
    items)."""
    torch.manual_seed(0)
    scenario = build_scenario(data, scenario_cfg)
    tensors = ScenarioTensors(scenario, MAX_LEN)
    distill = load_strategy("distillation")(
        context_for(scenario, tensors),
        teacher="ridge_map",
        teacher_options={"lam": 5.0, "map_lam": 2.0},
        temperature=0.5,
        distill_weight=1.0,
    )
    distill.prepare(tensors.training_matrix())
    dm = CrossDomainDataModule(
        tensors, distill.streams, LoaderConfig(max_len=MAX_LEN), schedule=distill.streams_for_epoch
    )
    dm.train_data = dm.epoch_data(distill.teacher_epochs)  # the student's phase
    rows = torch.nonzero(dm.train_data["stream"] == STREAM_ID["overlap"]).squeeze(1).tolist()
    pairs = distill.rows(dm._train_batch(rows), "overlap")
    teacher_model = distill._closed_form
    cold = dm.eval_data["test"][0]
    users = cold["user"][cold["is_cold"]]
    teacher = distill.closed_form_scores(users)
    source_hist = cold["source_hist"][cold["is_cold"]]

    def agreement() -> float:
        """Mean NDCG@5 of the student's ranking against the teacher's top 5."""
        with torch.no_grad():
            student = distill.student_scores(source_hist, distill.student_items(None))
        top = torch.zeros_like(teacher, dtype=torch.bool)
        top.scatter_(1, teacher.topk(5, dim=1).indices, True)
        return ranking_metrics(student, top, ks=(5,))["ndcg@5"].mean().item()

    before = agreement()
    optimizer = torch.optim.Adam(
        [*distill.student.parameters(), *distill.student_items.parameters()], lr=0.05
    )
    for _ in range(300):
        student = distill.student_scores(
            pairs["source_hist"], distill.student_items(pairs["source_hist"])
        )
        soft = distill.objective.soft_target_loss(
            distill.closed_form_scores(pairs["user"]), student, distill.temperature
        )
        optimizer.zero_grad()
        soft.backward()
        optimizer.step()
    assert teacher_model is distill._closed_form and not list(teacher_model.parameters())
    # (measured: 0.20 before, 0.82 after, on cold test users the student never trained on)
    assert agreement() > 0.75 and before < 0.4
    # The fitted teacher is no part of the strategy's weights (never saved, never trained).
    assert not any(k.startswith("_closed_form") for k in distill.state_dict())


def test_a_trained_strategy_is_no_closed_form_teacher(data, scenario_cfg):
    scenario = build_scenario(data, scenario_cfg)
    tensors = ScenarioTensors(scenario, MAX_LEN)
    with pytest.raises(ValueError, match="strategy.teacher='bridge'.*closed-form.*ridge_map"):
        load_strategy("distillation")(context_for(scenario, tensors), teacher="bridge")
    with pytest.raises(ValueError, match="teacher_options: only for a closed-form teacher"):
        load_strategy("distillation")(context_for(scenario, tensors), teacher_options={"lam": 1})


@pytest.mark.parametrize("name", ["pooled", "feature_averaging", "fusion", "lora"])
def test_set_weight_adds_the_cold_start_question(data, scenario_cfg, name):
    """The shared-tower strategies' set loss: a warm overlapping user's whole target set
    scored from the interest a cold user gets (one source domain: the source history's),
    trained in the last phase (lora's target phase)."""
    scenario = build_scenario(data, scenario_cfg)
    tensors = ScenarioTensors(scenario, MAX_LEN)
    plain = load_strategy(name)(context_for(scenario, tensors))
    strategy = load_strategy(name)(context_for(scenario, tensors), set_weight=0.5)
    assert strategy.streams == (*plain.streams, "overlap")
    assert "overlap" not in plain.streams
    assert "overlap" in strategy.phases[-1].streams
    dm = CrossDomainDataModule(tensors, strategy.streams, LoaderConfig(max_len=MAX_LEN))
    batch = dm._train_batch(list(range(len(dm.train_data["user"]))))
    strategy.eval()  # (no dropout: the loss is recomputed by hand below)
    losses = strategy.training_loss(batch)
    pairs = strategy.rows(batch, "overlap")
    assert len(pairs["user"]) > 0
    table = strategy.tower.table(None)
    items = table[strategy.target_catalog]
    scores = strategy.tower.interest(pairs["source_hist"], table) @ items.T
    by_hand = history_likelihood_loss(
        scores, pairs["target_hist"], strategy.target_catalog, strategy.context.bos
    )
    assert losses["loss_set"].item() == pytest.approx(by_hand.item(), rel=1e-6)
    plain.load_state_dict(strategy.state_dict())  # the same weights, without the set loss
    plain.eval()
    windows_only = plain.training_loss(batch)["loss"]
    assert losses["loss"].item() == pytest.approx(
        windows_only.item() + 0.5 * by_hand.item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="set_weight must be >= 0"):
        load_strategy(name)(context_for(scenario, tensors), set_weight=-1)


def test_per_group_selection_keeps_each_groups_best_epoch(tmp_path):
    """callbacks=per_group: the merged checkpoint scores cold validation users as their best
    epoch did and warm ones as theirs did (distillation beside a closed-form teacher: the
    groups share no weights), and a strategy whose groups share weights is refused."""
    out = tmp_path / "run"
    recmig_train(
        tmp_path,
        out,
        *("strategy=distillation", "strategy.teacher=ridge_map", "strategy.student=mean"),
        *("callbacks=per_group", "logger=csv", "trainer.max_epochs=6"),
    )
    log = pd.read_csv(out / "csv" / "version_0" / "metrics.csv")
    epochs = log.dropna(subset=["val/cold/ndcg@10"]).iloc[:-1]  # (the last: the merged model)
    metrics = json.loads((out / "metrics.json").read_text())
    (best,) = (out / "checkpoints").glob("best-*.ckpt")
    for group in ("cold", "warm"):
        curve = epochs[f"val/{group}/ndcg@10"].to_numpy()
        assert metrics[f"val/{group}/ndcg@10"] == pytest.approx(curve.max(), abs=1e-6)
        assert f"{group}{int(epochs['epoch'].iloc[curve.argmax()]):03d}" in best.name
    refused = tmp_path / "refused"
    with pytest.raises(AssertionError, match="shares? weights|shared weights"):
        recmig_train(tmp_path, refused, "strategy=target_only", "callbacks=per_group")


def test_distillation_warm_model_reads_id_items_when_asked(new_item_setup):
    """warm_items=id: the warm model learns ID vectors, the student keeps the run's encoder."""
    _, _, context = new_item_setup
    build = partial(load_strategy("distillation"), context, teacher="ridge_map", student="mean")
    strategy = build(warm_items="id")
    assert isinstance(strategy.teacher.items, IdItemEncoder)
    assert isinstance(strategy.student_items, TextIdItemEncoder)
    assert isinstance(build().teacher.items, TextIdItemEncoder)
    with pytest.raises(ValueError, match="warm_items=id: only beside a closed-form teacher"):
        load_strategy("distillation")(context, warm_items="id")
    with pytest.raises(ValueError, match="strategy.warm_items='text'"):
        build(warm_items="text")
