"""Several source domains: the scenario's split, per-domain histories and domain-weighted fusion,
and transfer under a privacy budget (ridge_transfer's released source rows)."""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import numpy as np
import pytest
import torch
from conftest import synthetic_data

from recmig.batches import MATRIX_ROWS
from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors
from recmig.data.scenario import SOURCE, TARGET, ScenarioConfig, build_scenario
from recmig.data.schema import InteractionData
from recmig.encoders.item import IdItemEncoder, TextItemEncoder
from recmig.privacy import GaussianRelease, PrivacyConfig
from recmig.registry import load_strategy
from recmig.strategy import StrategyContext, combine_domains, domain_history
from recmig.users.interest import MeanInterest

MAX_LEN = 8
GROUPS = {"books": ["Books"], "music": ["Music"]}


def three_domain_data(n_users: int = 90) -> InteractionData:
    """Items 0-19 Books, 20-39 Music, 40-59 Films; users rate across all three."""
    data = synthetic_data(n_users=n_users, n_items=60, per_user=18)
    kinds = ["Books"] * 20 + ["Music"] * 20 + ["Films"] * 20
    items = data.items.assign(genre=kinds).astype("string")
    return InteractionData(data.interactions, items, None, "three_domains")


def multi_scenario(**kwargs):
    cfg = ScenarioConfig(
        source_domains=GROUPS, target_domains=["Films"], cold_fraction=0.3, seed=1, **kwargs
    )
    return build_scenario(three_domain_data(), cfg)


def context_of(scenario, tensors, release=None, item_encoder=None, dim=16):
    vocab = tensors.vocab_size
    item_source = torch.full((vocab,), -1, dtype=torch.long)
    item_source[: vocab - 1] = torch.from_numpy(scenario.item_source.astype(np.int64))
    return StrategyContext(
        vocab_size=vocab,
        dim=dim,
        source_catalog=torch.from_numpy(scenario.catalog(SOURCE)),
        target_catalog=torch.from_numpy(scenario.catalog(TARGET)),
        make_item_encoder=item_encoder or partial(IdItemEncoder, vocab, dim),
        make_user_model=partial(MeanInterest, dim, max_len=MAX_LEN),
        source_names=scenario.source_names,
        item_source=item_source,
        release=release,
    )


def test_multi_source_scenario_keeps_domains_disjoint_and_cold_items_out_of_training():
    s = multi_scenario()
    assert s.source_names == ("books", "music")
    genre = s.items["genre"].to_numpy()
    # Every item's source domain is its genre's group; target items have none.
    assert set(genre[s.item_source[1:] == 0]) == {"Books"}
    assert set(genre[s.item_source[1:] == 1]) == {"Music"}
    assert set(genre[s.item_domain[1:] == TARGET]) == {"Films"}
    assert (s.item_source[1:][s.item_domain[1:] == TARGET] == -1).all()
    # No cold user's target interaction reaches training; each has source history.
    cold_users = set(s.cold["user"])
    train_target = s.train[s.train["domain"] == TARGET]
    assert cold_users and not cold_users & set(train_target["user"])
    assert cold_users <= set(s.train.loc[s.train["domain"] == SOURCE, "user"])
    # Statistics per domain add up to the source totals.
    for key in ("items", "interactions"):
        parts = sum(s.stats[f"source/{name}/{key}"] for name in s.source_names)
        assert parts == s.stats[f"source/{key}"]


def test_one_source_list_is_the_one_source_scenario():
    data = three_domain_data()
    one = ScenarioConfig(source_domains=["Books", "Music"], target_domains=["Films"], seed=1)
    named = ScenarioConfig(source_domains={"source": ["Books", "Music"]}, target_domains=["Films"])
    a, b = build_scenario(data, one), build_scenario(data, ScenarioConfig(**{**named.__dict__}))
    assert a.source_names == ("source",) and (a.item_source[a.item_domain == SOURCE] == 0).all()
    assert "source/source/users" not in a.stats  # one domain: the totals only, as before
    assert a.train.equals(build_scenario(data, one).train)
    assert b.source_names == ("source",)


def test_use_sources_keeps_the_split_and_drops_the_other_domains():
    full, music = multi_scenario(), multi_scenario(use_sources=["music"])
    assert full.cold.equals(music.cold) and full.warm.equals(music.warm)
    # Strategies see the used domain only; the unused one's items are in no domain.
    assert music.source_names == ("music",)
    source_rows = music.train[music.train["domain"] == SOURCE]
    assert (music.item_source[source_rows["item"]] == 0).all()
    books = full.item_source == 0
    assert (music.item_source[books] == -1).all() and (music.item_domain[books] == SOURCE).all()
    assert not set(np.flatnonzero(books)) & set(source_rows["item"])
    target = full.train[full.train["domain"] == TARGET].reset_index(drop=True)
    assert target.equals(music.train[music.train["domain"] == TARGET].reset_index(drop=True))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"source_domains": {"a": ["Books"], "b": ["Books", "Music"]}}, "in both groups"),
        ({"source_domains": {"a": []}}, r"source_domains\.a must be a non-empty list"),
        ({"source_domains": GROUPS, "use_sources": ["films"]}, "use_sources must name"),
        ({"source_domains": {"a": ["Books"], "b": ["Films"]}}, "both source_domains and"),
    ],
)
def test_bad_source_groups_name_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScenarioConfig(target_domains=["Films"], **kwargs)


def test_a_source_domain_emptied_by_filtering_is_named():
    data = three_domain_data()
    inter = data.interactions
    music = inter["item_id"].isin(data.items.loc[data.items["genre"] == "Music", "item_id"])
    # One music interaction per user: a 2-core leaves the music domain empty.
    first_music = music & ~inter.assign(m=music)[music].duplicated("user_id").reindex(
        inter.index, fill_value=True
    )
    sparse = inter[~music | first_music]
    data = InteractionData(sparse, data.items, None, "three_domains")
    cfg = ScenarioConfig(source_domains=GROUPS, target_domains=["Films"], user_core=2)
    with pytest.raises(ValueError, match="source domain 'music'.*no interactions left"):
        build_scenario(data, cfg)


def test_domain_history_splits_a_merged_history_and_is_the_identity_for_one_domain():
    bos = 9
    item_source = torch.tensor([-1, 0, 0, 1, 1, -1, -1, -1, -1, -1])
    hist = torch.tensor([[bos, 1, 3, 2, 4, 0], [3, 1, 4, 2, 3, 1]])  # the second was cut
    assert domain_history(hist, item_source, 0, bos).tolist() == [
        [bos, 1, 2, 0, 0, 0],
        [bos, 1, 2, 1, 0, 0],
    ]
    assert domain_history(hist, item_source, 1, bos).tolist() == [
        [bos, 3, 4, 0, 0, 0],
        [bos, 3, 4, 3, 0, 0],
    ]
    one = torch.where(item_source >= 0, 0, -1)
    assert torch.equal(domain_history(hist, one, 0, bos), hist)
    # Means over the domains with history; all of them for a user with none.
    values = torch.tensor([[[1.0, 1.0], [3.0, 5.0]], [[2.0, 0.0], [4.0, 0.0]]])
    present = torch.tensor([[True, False], [False, False]])
    assert combine_domains(values, present).tolist() == [[1.0, 1.0], [3.0, 0.0]]


@pytest.fixture
def multi_setup():
    scenario = multi_scenario()
    tensors = ScenarioTensors(scenario, MAX_LEN)
    return scenario, tensors


def eval_batch(tensors, streams):
    return CrossDomainDataModule(tensors, streams, LoaderConfig(max_len=MAX_LEN)).eval_data["test"][
        0
    ]


def test_fixed_fusion_weights_reduce_exactly_and_a_domain_without_history_gets_none(multi_setup):
    scenario, tensors = multi_setup
    cls = load_strategy("fusion")
    batch = eval_batch(tensors, cls.streams)
    cold = batch["is_cold"]
    torch.manual_seed(0)
    only_books = cls(context_of(scenario, tensors), mode="fixed", alpha=[1.0, 0.0])
    books_hist = only_books.source_histories(batch["source_hist"])[0]
    # Weight 1 on one domain: exactly that domain's interest, for cold and warm users.
    assert torch.equal(
        only_books.target_interest(batch),
        only_books.tower.interest(books_hist, only_books.tower.table(None)),
    )
    no_sources = cls(context_of(scenario, tensors), mode="fixed", alpha=[0.0, 0.0])
    no_sources.load_state_dict(only_books.state_dict())
    target = no_sources.tower.interest(batch["target_hist"], no_sources.tower.table(None))
    assert torch.equal(no_sources.target_interest(batch)[~cold], target[~cold])
    # A user whose music history is removed gives music weight 0; a cold user's sources take
    # all the weight.
    even = cls(context_of(scenario, tensors), mode="fixed", alpha=[0.25, 0.25])
    music_items = torch.from_numpy(scenario.catalog(SOURCE))[
        torch.from_numpy(scenario.item_source[scenario.catalog(SOURCE)]) == 1
    ]
    trimmed = dataclasses.replace(
        batch,
        source_hist=torch.where(torch.isin(batch.source_hist, music_items), 0, batch.source_hist),
    )
    weights = even.transfer_weights(trimmed)
    assert (weights["weight/music"] == 0).all()
    assert torch.allclose(weights["weight/books"][cold], torch.ones(int(cold.sum())))
    warm = ~cold
    # A warm user's missing share goes to the target: books 0.25, target 0.75 (as a = 0.25).
    assert torch.allclose(weights["weight/books"][warm], torch.full((int(warm.sum()),), 0.25))
    assert torch.allclose(weights["weight/target"][warm], torch.full((int(warm.sum()),), 0.75))
    with pytest.raises(ValueError, match="alpha has 3 weights but the scenario has 2 source"):
        cls(context_of(scenario, tensors), mode="fixed", alpha=[0.2, 0.2, 0.2])


@pytest.mark.parametrize("mode", ["learned", "gate"])
def test_learned_and_gated_weights_sum_to_one_train_and_are_reported(multi_setup, mode):
    scenario, tensors = multi_setup
    cls = load_strategy("fusion")
    torch.manual_seed(0)
    fusion = cls(context_of(scenario, tensors), mode=mode, alpha=[0.3, 0.2], gate_context=True)
    batch = eval_batch(tensors, cls.streams)
    weights = fusion.transfer_weights(batch)
    total = sum(weights.values())
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)
    assert (weights["weight/target"][batch["is_cold"]] == 0).all()
    if mode == "learned":  # started at alpha: (0.3, 0.2, 0.5) for every user with history
        summary = fusion.transfer_summary()
        assert summary["fusion/weight/books"] == pytest.approx(0.3, abs=1e-5)
        assert summary["fusion/weight/target"] == pytest.approx(0.5, abs=1e-5)
    else:
        assert weights["weight/books"][~batch["is_cold"]].unique().numel() > 1  # per user
        assert fusion.transfer_summary() == {}
    dm = CrossDomainDataModule(tensors, cls.streams, LoaderConfig(max_len=MAX_LEN))
    loss = fusion.training_loss(dm._train_batch(list(range(len(dm.train_data["user"])))))
    loss["loss"].backward()
    weighting = fusion.weighting
    weight_params = [weighting.logit] if mode == "learned" else [weighting.gate.weight]
    if mode == "gate":
        weight_params += [weighting.domain_bias, weighting.history_slopes]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weight_params)


def test_mapped_transfer_has_one_map_per_source_domain_averaged_over_present_domains(
    multi_setup,
):
    scenario, tensors = multi_setup
    mapping = load_strategy("mapping")(context_of(scenario, tensors))
    assert len(mapping.mappers) == 2
    batch = eval_batch(tensors, mapping.streams)
    books, music = mapping.source_histories(batch["source_hist"])
    table = mapping.source.table(None)
    by_books = mapping.mappers[0](mapping.source.interest(books, table))
    by_music = mapping.mappers[1](mapping.source.interest(music, table))
    assert torch.allclose(mapping.map_interest(batch["source_hist"]), (by_books + by_music) / 2)
    # Without books history, a user's transferred interest is the music map's alone.
    hist = batch["source_hist"]
    music_only = torch.where(mapping.item_source[hist] == 0, 0, hist)
    assert torch.allclose(mapping.map_interest(music_only), by_music, atol=1e-6)


def ridge(scenario, tensors, tmp_path, release=None):
    text = partial(TextItemEncoder, tensors.vocab_size, 16, scenario.items, cache_dir=tmp_path)
    strategy = load_strategy("ridge_transfer")(
        context_of(scenario, tensors, release=release, item_encoder=text), text_neighbours=5
    )
    strategy.fit(tensors.training_matrix())
    return strategy


def closed_form_batch(tensors):
    dm = CrossDomainDataModule(tensors, (), LoaderConfig(max_len=MAX_LEN), reads=MATRIX_ROWS)
    return dm.eval_data["test"][0]


def test_epsilon_inf_is_exactly_no_privacy_and_a_finite_budget_releases_fixed_noise(
    multi_setup, tmp_path
):
    scenario, tensors = multi_setup
    batch = closed_form_batch(tensors)
    plain = ridge(scenario, tensors, tmp_path).target_scores(batch)
    off = GaussianRelease(PrivacyConfig(epsilon=math.inf), seed=0)
    assert torch.equal(ridge(scenario, tensors, tmp_path, release=off).target_scores(batch), plain)
    private = ridge(scenario, tensors, tmp_path, GaussianRelease(PrivacyConfig(epsilon=1.0), 0))
    scores = private.target_scores(batch)
    cold = batch["is_cold"]
    assert not torch.allclose(scores[cold], plain[cold])
    assert torch.equal(private.target_scores(batch), scores)  # one release per user and run
    # Warm users are scored from target items alone: EASE without any source column.
    source_rows = private.warm.weights[private.source_catalog]
    assert source_rows.abs().sum() == 0
    # A huge budget and a clip above every row: releases of two noise seeds nearly agree.
    loose = [GaussianRelease(PrivacyConfig(epsilon=1e9, clip=100.0), seed) for seed in (0, 1)]
    a, b = (ridge(scenario, tensors, tmp_path, r).private.releases for r in loose)
    assert loose[0].sigma < 1e-2 and a.norm(dim=1).max() < 100
    assert torch.allclose(a, b, atol=0.05) and not torch.equal(a, b)
    # A history from outside the scenario was never released.
    outside = dataclasses.replace(batch, user=torch.full_like(batch.user, -1))
    with pytest.raises(ValueError, match="scores the scenario's users only"):
        private.target_scores(outside)


def test_the_private_maps_shrink_is_a_fitted_buffer_and_older_checkpoints_load(
    multi_setup, tmp_path
):
    """gamma travels in the checkpoint (reported after loading); a checkpoint made when the
    private path's buffers sat at the strategy's top level loads into the same scores."""
    scenario, tensors = multi_setup
    batch = closed_form_batch(tensors)
    release = GaussianRelease(PrivacyConfig(epsilon=1.0), 0)
    fitted = ridge(scenario, tensors, tmp_path, release)
    gamma = fitted.transfer_summary()["privacy/map_shrink"]
    text = partial(TextItemEncoder, tensors.vocab_size, 16, scenario.items, cache_dir=tmp_path)

    def unfitted():
        context = context_of(scenario, tensors, release=release, item_encoder=text)
        return load_strategy("ridge_transfer")(context, text_neighbours=5)

    loaded = unfitted()
    loaded.load_state_dict(fitted.state_dict())
    assert loaded.transfer_summary() == {"privacy/map_shrink": gamma}
    assert torch.equal(loaded.target_scores(batch), fitted.target_scores(batch))
    old_names = {"weights": "cold_weights"}
    legacy = {
        (old_names.get(k[8:], k[8:]) if k.startswith("private.") else k): v
        for k, v in fitted.state_dict().items()
        if k != "private.shrink"
    }
    assert "releases" in legacy and "cold_weights" in legacy
    old = unfitted()
    old.load_state_dict(legacy)
    assert torch.equal(old.target_scores(batch), fitted.target_scores(batch))
    assert old.transfer_summary() == {}  # gamma was not kept then


@pytest.mark.parametrize("basis", ["public", "source_model"])
def test_release_basis_decides_what_the_release_depends_on(multi_setup, tmp_path, basis):
    scenario, tensors = multi_setup
    matrix = tensors.training_matrix()
    strategy = ridge(scenario, tensors, tmp_path, GaussianRelease(PrivacyConfig(1.0), 0))
    strategy.private.basis = basis
    x = strategy.item_matrix(matrix).tocsc()
    source = np.flatnonzero(matrix.item_domain[1:] == SOURCE)
    public = strategy.public_basis(source)

    def basis_of(rows):
        return strategy.private.release_basis(rows, public, strategy.densifier(rows, source))

    x_source = x[:, source].tocsr()
    f = basis_of(x_source)
    assert f.shape == (len(source), 8)
    # The public basis reads no interaction: other users' histories leave it unchanged.
    g = basis_of(x_source[: x_source.shape[0] // 2])
    assert np.allclose(f, g) == (basis == "public")


@pytest.mark.parametrize(
    ("privacy", "strategy", "match"),
    [
        ({"epsilon": 0}, "ridge_transfer", r"privacy\.epsilon must be > 0"),
        ({"epsilon": 1, "delta": 1.0}, "ridge_transfer", r"privacy\.delta must be in \(0, 1\)"),
        ({"epsilon": 1, "clip": -1}, "ridge_transfer", r"privacy\.clip must be > 0"),
        ({"epsilon": 1, "budget": 3}, "ridge_transfer", r"privacy: unknown key 'budget'"),
        ({"epsilon": 1}, "fusion", r"privacy\.epsilon=1\.0: strategy 'fusion' reads"),
    ],
)
def test_bad_privacy_options_name_the_option(multi_setup, privacy, strategy, match):
    from omegaconf import OmegaConf

    from recmig.train import build_strategy

    _, tensors = multi_setup
    cfg = OmegaConf.create({"strategy": {"name": strategy}, "privacy": privacy, "dim": 8})
    with pytest.raises(ValueError, match=match):
        build_strategy(cfg, tensors)


@pytest.mark.parametrize(
    ("name", "rename"),
    [
        ("mapping", lambda k: k.replace("mappers.0.", "mapper.")),
        ("bridge", lambda k: k.replace("attention.0.", "attention.").replace("meta.0.", "meta.")),
    ],
)
def test_checkpoints_from_before_per_domain_maps_still_load(multi_setup, name, rename):
    from recmig.data.scenario import ScenarioConfig as Config

    data = three_domain_data()
    one = build_scenario(data, Config(source_domains=["Books"], target_domains=["Films"]))
    tensors = ScenarioTensors(one, MAX_LEN)
    cls = load_strategy(name)
    torch.manual_seed(0)
    saved = cls(context_of(one, tensors)).state_dict()
    old = {rename(k): v for k, v in saved.items()}
    assert set(old) != set(saved)
    fresh = cls(context_of(one, tensors))
    fresh.load_state_dict(old)  # strict
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())


def test_amazon_categories_as_several_source_domains(tmp_path):
    """Amazon Reviews 2023 files, one per category: Books and Movies as sources for CDs."""
    import json

    from recmig.data.amazon import load_amazon

    rng = np.random.default_rng(0)
    reviews, meta = {}, {}
    for domain in ("books", "movies", "cds"):
        records = [
            {
                "user_id": f"U{u}",
                "parent_asin": f"{domain}{item}",
                "rating": 5.0,
                "timestamp": 1_600_000_000_000 + int(rng.integers(10**9)),
            }
            for u in range(30)
            for item in rng.choice(12, size=5, replace=False)
        ]
        reviews[domain] = tmp_path / f"{domain}.jsonl"
        reviews[domain].write_text("".join(json.dumps(r) + "\n" for r in records))
        meta[domain] = tmp_path / f"meta_{domain}.jsonl"
        titles = [{"parent_asin": f"{domain}{i}", "title": f"{domain} {i}"} for i in range(12)]
        meta[domain].write_text("".join(json.dumps(r) + "\n" for r in titles))
    data = load_amazon(
        {k: str(v) for k, v in reviews.items()}, {k: str(v) for k, v in meta.items()}, 2023
    )
    cfg = ScenarioConfig(
        domain_field=None,
        source_domains={"books": ["books"], "movies": ["movies"]},
        target_domains=["cds"],
        cold_fraction=0.3,
    )
    s = build_scenario(data, cfg)
    assert s.source_names == ("books", "movies")
    assert s.stats["source/books/items"] == s.stats["source/movies/items"] == 12
    ids = s.items["item_id"].to_numpy()
    assert all(ids[i - 1].startswith("books") for i in np.flatnonzero(s.item_source == 0))
    assert all(ids[i - 1].startswith("cds") for i in s.catalog(TARGET))
