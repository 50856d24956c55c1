from functools import partial

import pytest
import torch

from recmig.closed_form import ClosedFormStrategy
from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors
from recmig.data.scenario import SOURCE, TARGET, build_scenario
from recmig.encoders.item import IdItemEncoder, TextItemEncoder
from recmig.objectives import (
    catalog_cross_entropy,
    distillation_kl,
    history_rating_error,
    load_objective,
    rating_squared_error,
)
from recmig.registry import discover, load_strategy
from recmig.strategy import StrategyContext
from recmig.tokens import STREAM_ID
from recmig.users.interest import CausalTransformer, MeanInterest

MAX_LEN = 8


@pytest.fixture
def setup(data, scenario_cfg):
    scenario = build_scenario(data, scenario_cfg)
    tensors = ScenarioTensors(scenario, MAX_LEN)
    return scenario, tensors


def make_context(
    scenario, tensors, user_model=MeanInterest, dim=16, objective="ranking", item_encoder=None
):
    return StrategyContext(
        vocab_size=tensors.vocab_size,
        dim=dim,
        source_catalog=torch.from_numpy(scenario.catalog(SOURCE)),
        target_catalog=torch.from_numpy(scenario.catalog(TARGET)),
        make_item_encoder=item_encoder or partial(IdItemEncoder, tensors.vocab_size, dim),
        make_user_model=partial(user_model, dim, max_len=MAX_LEN),
        # A rating run starts from the per-item baseline ratings, as `recmig train` builds it.
        objective=load_objective(objective).for_run({"dim": dim}, scenario, tensors.vocab_size),
    )


@pytest.mark.parametrize("name", sorted(discover()))
@pytest.mark.parametrize("user_model", [MeanInterest, CausalTransformer])
@pytest.mark.parametrize("objective", ["ranking", "rating"])
def test_every_strategy_learns_and_scores_cold_and_warm_users(
    setup, name, user_model, objective, tmp_path
):
    cls = load_strategy(name)
    if objective not in cls.objectives:
        pytest.skip(f"{name} supports {cls.objectives}")
    torch.manual_seed(0)
    scenario, tensors = setup
    # Closed-form strategies may read the language model's item text: give them the real one.
    text = partial(TextItemEncoder, tensors.vocab_size, 16, scenario.items, cache_dir=tmp_path)
    encoder = text if issubclass(cls, ClosedFormStrategy) else None
    strategy = cls(
        make_context(scenario, tensors, user_model, objective=objective, item_encoder=encoder)
    )
    dm = CrossDomainDataModule(
        tensors,
        strategy.streams,
        LoaderConfig(max_len=MAX_LEN),
        ratings=objective == "rating",
        reads=strategy.reads,
    )
    if isinstance(strategy, ClosedFormStrategy):  # fitted once, scored (test_closed_form.py)
        strategy.fit(tensors.training_matrix())
        for eval_batch in dm.eval_data["test"]:
            scores = strategy.target_scores(eval_batch)
            assert scores.shape == (len(eval_batch["user"]), len(scenario.catalog(TARGET)))
            assert torch.isfinite(scores).all()
        return
    batch = dm._train_batch(list(range(len(dm.train_data["user"]))))
    optimizer = torch.optim.Adam(strategy.parameters(), lr=0.01)

    def loss_without_dropout() -> float:  # (a dropout-0.5 loss moves by chance over 15 steps)
        strategy.eval()
        with torch.no_grad():
            return strategy.training_loss(batch)["loss"].item()

    initial = loss_without_dropout()
    strategy.train()
    losses = []
    for _ in range(15):
        loss = strategy.training_loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert loss_without_dropout() < initial
    strategy.eval()
    for eval_batch in dm.eval_data["test"]:
        interest = strategy.target_interest(eval_batch)
        items = strategy.target_items()
        assert interest.shape == (len(eval_batch["user"]), 16)
        assert items.shape == (len(scenario.catalog(TARGET)), 16)
        assert torch.isfinite(interest @ items.T).all()


def test_catalog_cross_entropy_matches_hand_softmax():
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    interests = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[3, 0]])  # second position unlabelled
    catalog = torch.tensor([2, 3])
    loss = catalog_cross_entropy(interests, labels, table, catalog)
    logits = torch.tensor([0.0, 2.0])  # interest . e_2, interest . e_3
    assert loss.item() == pytest.approx(-torch.log_softmax(logits, 0)[1].item())


def test_rating_squared_error_matches_hand_dot_products():
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    interests = torch.tensor([[[2.0, 1.0], [1.0, 1.0], [5.0, 5.0]]])
    labels = torch.tensor([[3, 1, 0]])  # third position unlabelled
    ratings = torch.tensor([[4.0, 1.0, float("nan")]])
    # predictions: (2,1).(1,1) = 3 for rating 4; (1,1).(1,0) = 1 for rating 1
    assert rating_squared_error(interests, labels, ratings, table).item() == pytest.approx(0.5)
    shifted = rating_squared_error(interests, labels, ratings, table, offset=1.0)
    assert shifted.item() == pytest.approx(((4 - 4) ** 2 + (2 - 1) ** 2) / 2)
    unrated = torch.tensor([[float("nan"), 1.0, float("nan")]])
    assert rating_squared_error(interests, labels, unrated, table).item() == pytest.approx(0.0)


def test_history_rating_error_reads_the_scores_of_rated_history_items():
    catalog = torch.tensor([2, 3])
    bos = 4
    scores = torch.tensor([[3.0, 5.0]])  # item 2 -> 3.0, item 3 -> 5.0
    history = torch.tensor([[bos, 2, 3, 1, 0]])  # BOS, two catalogue items, one outside, pad
    ratings = torch.tensor([[float("nan"), 4.0, 2.0, 5.0, float("nan")]])
    error = history_rating_error(scores, history, ratings, catalog, bos)
    assert error.item() == pytest.approx(((3 - 4) ** 2 + (5 - 2) ** 2) / 2)


def test_bridge_rating_objective_fits_ratings_of_the_users_target_items(setup):
    scenario, tensors = setup
    bridge = load_strategy("bridge")(make_context(scenario, tensors, objective="rating"))
    with torch.no_grad():  # predicted rating = item baseline + scale * (interest . item)
        bridge.objective.offsets.copy_(torch.linspace(2.0, 4.0, len(bridge.objective.offsets)))
        bridge.objective.scale.fill_(0.8)
    dm = CrossDomainDataModule(tensors, bridge.streams, LoaderConfig(max_len=MAX_LEN), ratings=True)
    pairs = bridge.rows(dm._train_batch(list(range(len(dm.train_data["user"])))), "overlap")
    pairs = pairs.select(torch.arange(len(pairs)) == 0)
    mapped = bridge.map_interest(pairs["source_hist"])[0]
    table = bridge.target.table(None)
    user = pairs["user"][0].item()
    train = scenario.train
    rows = train[(train["user"] == user) & (train["domain"] == TARGET)]
    errors = [
        (bridge.objective.offsets[i] + 0.8 * mapped @ table[i] - r) ** 2
        for i, r in zip(rows["item"], rows["rating"], strict=True)
    ]
    expected = torch.stack(errors[-MAX_LEN:]).mean()  # the history the model sees
    assert bridge.transfer_loss(pairs).item() == pytest.approx(expected.item(), rel=1e-5)


def test_feature_averaging_equation(setup):
    scenario, tensors = setup
    cls = load_strategy("feature_averaging")
    fa = cls(make_context(scenario, tensors), alpha=0.25)
    batch = CrossDomainDataModule(tensors, cls.streams, LoaderConfig(max_len=MAX_LEN)).eval_data[
        "test"
    ][0]
    source = fa.tower.interest(batch["source_hist"], fa.tower.table(None))
    target = fa.tower.interest(batch["target_hist"], fa.tower.table(None))
    cold = batch["is_cold"]
    mixed = fa.target_interest(batch)
    assert cold.any() and (~cold).any()
    # Warm users (all with both sides here) mix; cold users get the source side alone.
    assert torch.allclose(mixed[~cold], 0.25 * source[~cold] + 0.75 * target[~cold], atol=1e-6)
    assert torch.equal(mixed[cold], source[cold])
    # No source history: the target side alone (weights for present = (no source, target)).
    w = fa.weighting(source[:1, None], target[:1, None], torch.tensor([[False, True]]), None)
    assert w.flatten().tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="alpha"):
        cls(make_context(scenario, tensors), alpha=1.5)


@pytest.mark.parametrize("mode", ["fixed", "learned", "gate"])
def test_fusion_reduces_exactly_to_each_side(setup, mode):
    scenario, tensors = setup
    cls = load_strategy("fusion")
    dm = CrossDomainDataModule(tensors, cls.streams, LoaderConfig(max_len=MAX_LEN))
    batch = dm.eval_data["test"][0]
    warm = ~batch["is_cold"]
    for alpha in (0.0, 1.0):
        torch.manual_seed(0)
        fusion = cls(make_context(scenario, tensors), mode=mode, alpha=alpha)
        saturated = 1e4 if alpha else -1e4  # sigmoid(saturated) is exactly alpha in float32
        if mode == "gate":
            torch.nn.init.zeros_(fusion.weighting.gate.weight)
            torch.nn.init.constant_(fusion.weighting.gate.bias, saturated)
        elif mode == "learned":
            torch.nn.init.constant_(fusion.weighting.logit, saturated)
        fused = fusion.target_interest(batch)
        side = "source_hist" if alpha == 1.0 else "target_hist"
        assert torch.allclose(
            fused[warm],
            fusion.tower.interest(batch[side][warm], fusion.tower.table(None)),
            atol=1e-6,
        )
    # Cold users always get the source side, whatever a is.
    cold = batch["is_cold"]
    assert torch.allclose(
        fused[cold], fusion.tower.interest(batch["source_hist"][cold], fusion.tower.table(None))
    )


def test_fusion_gate_is_per_user_and_learned_weight_trains(setup):
    scenario, tensors = setup
    cls = load_strategy("fusion")
    gate = cls(make_context(scenario, tensors), mode="gate")
    s, t = torch.randn(5, 1, 16), torch.randn(5, 1, 16)
    w = gate.weighting(s, t, torch.ones(5, 2, dtype=torch.bool), torch.ones(5, 2))
    a = w[:, 0, 0]
    assert w.shape == (5, 2, 1) and torch.allclose(w.sum(1), torch.ones(5, 1))
    assert ((a > 0) & (a < 1)).all() and a.unique().numel() > 1
    learned = cls(make_context(scenario, tensors), mode="learned", alpha=0.3)
    assert torch.sigmoid(learned.weighting.logit).item() == pytest.approx(0.3, abs=1e-5)
    dm = CrossDomainDataModule(tensors, cls.streams, LoaderConfig(max_len=MAX_LEN))
    learned.training_loss(dm._train_batch(list(range(len(dm.train_data["user"])))))[
        "loss"
    ].backward()
    assert learned.weighting.logit.grad is not None and learned.weighting.logit.grad.abs() > 0
    with pytest.raises(ValueError, match="strategy.mode"):
        cls(make_context(scenario, tensors), mode="sometimes")


def test_mapping_scores_cold_users_through_the_mapper_and_leaves_towers_alone(setup):
    scenario, tensors = setup
    mapping = load_strategy("mapping")(make_context(scenario, tensors))
    dm = CrossDomainDataModule(tensors, mapping.streams, LoaderConfig(max_len=MAX_LEN))
    batch = dm.eval_data["test"][0]
    cold = batch["is_cold"]
    assert cold.any() and (~cold).any()
    interest = mapping.target_interest(batch)
    expected_cold = mapping.mappers[0](
        mapping.source.interest(batch["source_hist"][cold], mapping.source.table(None))
    )
    expected_warm = mapping.target.interest(batch["target_hist"][~cold], mapping.target.table(None))
    assert torch.allclose(interest[cold], expected_cold)
    assert torch.allclose(interest[~cold], expected_warm)
    # The mapping loss trains the mapper only: no gradient reaches the towers through it.
    train = dm._train_batch(list(range(len(dm.train_data["user"]))))
    overlap_only = mapping.rows(train, "overlap")
    mapping.training_loss(overlap_only)["loss_transfer"].backward()
    assert all(p.grad is None for p in mapping.source.parameters())
    assert all(p.grad is None for p in mapping.target.parameters())
    assert any(p.grad is not None for p in mapping.mappers.parameters())


def test_bridge_is_personal_starts_at_identity_and_trains_only_the_meta_network(setup):
    scenario, tensors = setup
    bridge = load_strategy("bridge")(make_context(scenario, tensors))
    dm = CrossDomainDataModule(tensors, bridge.streams, LoaderConfig(max_len=MAX_LEN))
    batch = dm.eval_data["test"][0]
    cold = batch["is_cold"]
    # Fresh meta-network: W_u = I, so a cold user's interest is their source interest.
    expected = bridge.source.interest(batch["source_hist"][cold], bridge.source.table(None))
    assert torch.allclose(bridge.target_interest(batch)[cold], expected, atol=1e-6)
    train = dm._train_batch(list(range(len(dm.train_data["user"]))))
    pairs = bridge.rows(train, "overlap")
    bridge.training_loss(pairs)["loss_transfer"].backward()
    assert all(p.grad is None for p in bridge.source.parameters())
    assert all(p.grad is None for p in bridge.target.parameters())
    assert bridge.meta[0][-1].weight.grad.abs().sum() > 0
    # After a step the bridges differ from user to user.
    torch.optim.SGD(bridge.parameters(), lr=1.0).step()
    matrices = bridge.bridges(0, pairs["source_hist"][:4])
    assert not torch.allclose(matrices[0], matrices[1])


def test_bridge_loss_is_the_softmax_likelihood_of_the_users_target_items(setup):
    scenario, tensors = setup
    bridge = load_strategy("bridge")(make_context(scenario, tensors))
    dm = CrossDomainDataModule(tensors, bridge.streams, LoaderConfig(max_len=MAX_LEN))
    pairs = bridge.rows(dm._train_batch(list(range(len(dm.train_data["user"])))), "overlap")
    pairs = pairs.select(torch.arange(len(pairs)) == 0)
    mapped = bridge.map_interest(pairs["source_hist"])[0]
    catalog = bridge.target_catalog.tolist()
    log_probs = torch.log_softmax(mapped @ bridge.target.table(None)[catalog].T, 0)
    items = [i for i in pairs["target_hist"][0].tolist() if i not in (0, tensors.bos)]
    expected = -torch.stack([log_probs[catalog.index(i)] for i in items]).mean()
    assert bridge.transfer_loss(pairs).item() == pytest.approx(expected.item(), rel=1e-5)


def test_distillation_kl_matches_the_hand_formula():

    teacher = torch.tensor([[2.0, 0.0, -1.0]])
    student = torch.tensor([[0.5, 0.5, 0.0]])
    tau = 2.0
    p = torch.softmax(teacher / tau, 1)
    q = torch.softmax(student / tau, 1)
    expected = tau**2 * (p * (p.log() - q.log())).sum()
    assert distillation_kl(teacher, student, tau).item() == pytest.approx(expected.item(), 1e-6)
    assert distillation_kl(teacher, teacher, tau).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("objective", ["ranking", "rating"])
def test_distillation_phases_freeze_the_teacher_and_split_cold_from_warm(setup, objective):
    scenario, tensors = setup
    cls = load_strategy("distillation")
    distill = cls(make_context(scenario, tensors, objective=objective), teacher_epochs=2)
    assert [distill.streams_for_epoch(e) for e in range(4)] == [
        ("pooled",),
        ("pooled",),
        ("overlap",),
        ("overlap",),
    ]
    assert distill.min_epochs == 3
    dm = CrossDomainDataModule(
        tensors,
        cls.streams,
        LoaderConfig(max_len=MAX_LEN),
        schedule=distill.streams_for_epoch,
        ratings=objective == "rating",
    )
    assert set(dm.epoch_data(0)["stream"].tolist()) == {STREAM_ID["pooled"]}
    student_phase = dm.epoch_data(2)
    assert set(student_phase["stream"].tolist()) == {STREAM_ID["overlap"]}
    dm.train_data = student_phase
    batch = dm._train_batch(list(range(len(student_phase["user"]))))
    before = {k: v.clone() for k, v in distill.teacher.state_dict().items()}
    optimizer = torch.optim.Adam(distill.parameters(), lr=0.1)
    losses = distill.training_loss(batch)
    assert losses["loss_distill"] > 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(p.grad is None for p in distill.teacher.parameters())
    if objective == "rating":  # the teacher's warm predictions use the scale: frozen too
        assert distill.objective.scale.grad is None
    optimizer.step()
    after = distill.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen teacher
    assert any(p.grad is not None for p in distill.student.parameters())
    eval_batch = dm.eval_data["test"][0]
    cold = eval_batch["is_cold"]
    table = distill.teacher.table(None)
    scores = distill.target_scores(eval_batch)
    student = distill.student_scores(eval_batch["source_hist"][cold], table)
    predictions = distill.objective.predictions
    assert torch.allclose(scores[cold], predictions(student, distill.target_catalog))
    warm = distill.teacher.interest(eval_batch["pooled_hist"][~cold], table)
    warm = predictions(warm @ table[distill.target_catalog].T, distill.target_catalog)
    assert torch.allclose(scores[~cold], warm)


def test_unknown_strategy_name_lists_known_ones():
    with pytest.raises(ValueError, match="known: .*target_only"):
        load_strategy("no_such_strategy")


def test_rating_distillation_fits_the_teachers_predicted_ratings(setup):
    scenario, tensors = setup
    distill = load_strategy("distillation")(make_context(scenario, tensors, objective="rating"))
    with torch.no_grad():
        distill.objective.scale.fill_(0.5)
    teacher, student = torch.randn(3, 5), torch.randn(3, 5)
    expected = ((0.5 * student - 0.5 * teacher) ** 2).mean()
    assert distill.objective.soft_target_loss(teacher, student, 1.0).item() == pytest.approx(
        expected.item()
    )
