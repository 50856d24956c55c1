"""The recommender API, its explanations, live updates and the HTTP service, on synthetic data
(every strategy); tests/test_every_strategy.py repeats the main checks on real runs."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from functools import partial

import numpy as np
import pytest
import torch

from recmig.closed_form import ClosedFormStrategy
from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors
from recmig.data.scenario import COLD_TEST, SOURCE, TARGET, build_scenario
from recmig.encoders.item import IdItemEncoder, TextItemEncoder
from recmig.evaluation.ranking import top_items, with_fallback
from recmig.objectives import load_objective
from recmig.registry import discover, load_strategy
from recmig.serving import Recommender, RequestError, UnknownIdError
from recmig.serving.analysis import (
    deletion_test,
    streaming_evaluation,
    summarise_deletion,
    summarise_streaming,
)
from recmig.serving.http import BackgroundServer, create_app
from recmig.serving.journal import UpdateJournal
from recmig.serving.recommender import FALLBACK
from recmig.strategy import StrategyContext
from recmig.users.interest import CausalTransformer

MAX_LEN = 8


@pytest.fixture
def setup(data, scenario_cfg):
    scenario = build_scenario(data, scenario_cfg)
    return scenario, ScenarioTensors(scenario, MAX_LEN)


def build(setup, name: str, tmp_path, **options):
    """Strategy ``name`` as `recmig train` builds it (id or text items, SASRec users), fitted
    when closed-form (neural ones keep their random initialisation: scoring is what is tested)."""
    scenario, tensors = setup
    cls = load_strategy(name)
    objective = "ranking" if "ranking" in cls.objectives else "rating"
    text = partial(TextItemEncoder, tensors.vocab_size, 16, scenario.items, cache_dir=tmp_path)
    context = StrategyContext(
        vocab_size=tensors.vocab_size,
        dim=16,
        source_catalog=torch.from_numpy(scenario.catalog(SOURCE)),
        target_catalog=torch.from_numpy(scenario.catalog(TARGET)),
        make_item_encoder=text
        if issubclass(cls, ClosedFormStrategy)
        else partial(IdItemEncoder, tensors.vocab_size, 16),
        make_user_model=partial(CausalTransformer, 16, max_len=MAX_LEN),
        objective=load_objective(objective).for_run({"dim": 16}, scenario, tensors.vocab_size),
    )
    torch.manual_seed(0)
    strategy = cls(context, **options)
    if isinstance(strategy, ClosedFormStrategy):
        strategy.fit(tensors.training_matrix())
    return Recommender(strategy, tensors, name=name), objective


def evaluator_top(rec: Recommender, objective: str, k: int = 10) -> dict[str, list[str]]:
    """What the evaluator ranks for each test user (TransferModule._evaluate's top-k)."""
    dm = CrossDomainDataModule(
        rec.tensors,
        (),
        LoaderConfig(max_len=MAX_LEN),
        ratings=objective == "rating",
        reads=rec.strategy.reads,
    )
    out = {}
    with torch.no_grad():
        for batch in dm.eval_data["test"]:
            scores = rec.strategy.target_scores(batch)
            ranked, _ = with_fallback(scores, batch["excluded"], rec.tensors.target_popularity)
            top = top_items(ranked, batch["excluded"], k)
            for user, row in zip(batch["user"].tolist(), top.numpy(), strict=True):
                tokens = rec.catalog[row]
                out[str(rec.scenario.user_ids[user])] = list(rec.item_ids[tokens - 1])
    return out


@pytest.mark.parametrize("name", sorted(discover()))
def test_every_strategy_recommends_the_evaluators_list_and_serves_new_users(setup, name, tmp_path):
    rec, objective = build(setup, name, tmp_path)
    expected = evaluator_top(rec, objective)
    got = rec.recommend_users(list(expected), k=10)
    for user, items in expected.items():
        assert got.loc[got["user_id"] == user, "item_id"].tolist() == items, user
    # A new user given only a cold test user's source history gets that user's list.
    scenario = rec.scenario
    cold_user = int(scenario.cold.loc[scenario.cold["group"] == COLD_TEST, "user"].iloc[0])
    user_id = str(scenario.user_ids[cold_user])
    source = scenario.train[(scenario.train["user"] == cold_user)]
    ids = [rec.item_ids[t - 1] for t in source["item"]]
    ratings = source["rating"].tolist()
    new = rec.recommend(source_history=list(zip(ids, ratings, strict=True)), k=10)
    assert new["item_id"].tolist() == expected[user_id]
    assert set(new["item_id"]) <= set(rec.item_ids[rec.catalog - 1])
    assert (np.diff(new["score"].to_numpy()) <= 0).all()
    # Explanations exist for every strategy (possibly without causes) and never fail.
    explained = rec.explain(user=user_id, k=3)
    assert explained["item_id"].drop_duplicates().tolist() == expected[user_id][:3]


def test_unknown_ids_and_wrong_domains_are_errors_that_name_them(setup, tmp_path):
    rec, _ = build(setup, "ease", tmp_path)
    with pytest.raises(UnknownIdError, match=r"source_history\[1\]: item id 'no-such-item'"):
        rec.recommend(source_history=["i0", "no-such-item"])
    with pytest.raises(UnknownIdError, match=r"user id 'nobody'"):
        rec.recommend(user="nobody")
    target_item = rec.item_ids[rec.catalog[0] - 1]
    with pytest.raises(ValueError, match=rf"'{target_item}' belongs to the target domain"):
        rec.recommend(source_history=[target_item])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        rec.recommend(source_history=["i0"], k=0)
    with pytest.raises(ValueError, match="either user or a history"):
        rec.recommend(user="u1", source_history=["i0"])
    before = rec.recommend(user="u1")
    with pytest.raises(UnknownIdError):
        rec.update("u1", "no-such-item")
    assert rec.recommend(user="u1").equals(before)  # a rejected update changes nothing


def test_update_folds_in_interactions_and_a_cold_user_becomes_warm(setup, tmp_path):
    rec, _ = build(setup, "ease", tmp_path, lam=1.0)
    scenario = rec.scenario
    cold = scenario.cold[scenario.cold["group"] == COLD_TEST]
    user = int(cold["user"].iloc[0])
    user_id = str(scenario.user_ids[user])
    first = rec.recommend(user=user_id, k=5)
    assert rec.batch([rec.history_of(user_id)])["is_cold"].item()
    item = first["item_id"].iloc[0]
    history = rec.update(user_id, item, timestamp=1e12)
    assert history["item_id"].iloc[-1] == item and history["domain"].iloc[-1] == "target"
    assert history["item_id"].tolist() == [
        rec.item_ids[t - 1] for t in rec.history_of(user_id).tokens
    ]
    assert not rec.batch([rec.history_of(user_id)])["is_cold"].item()  # warm now
    after = rec.recommend(user=user_id, k=5)
    assert item not in after["item_id"].tolist()
    # EASE's fold-in is exact: the new scores are the old ones plus the item's weight row.
    weights = rec.strategy.weights[rec.token_of[item]]
    old = rec.scores([rec.known_history(user_id)])[0][0]
    new = rec.scores([rec.history_of(user_id)])[0][0]
    torch.testing.assert_close(new, old + weights)
    # A user the scenario never had starts empty and builds up.
    rec.update("someone-new", "i0")
    assert rec.history_of("someone-new").tokens == [rec.token_of["i0"]]
    # Timestamps order the history: an event dated earlier goes before later ones.
    times = rec.history_of(user_id).times
    rec.update(user_id, "i1", timestamp=times[0] - 1)
    assert rec.history_of(user_id).tokens[0] == rec.token_of["i1"]


def test_linear_attributions_are_exactly_the_item_item_weights(setup, tmp_path):
    rec, _ = build(setup, "ease", tmp_path, lam=2.0)
    user_id = str(rec.scenario.user_ids[int(rec.scenario.warm["user"].iloc[0])])
    history = rec.history_of(user_id)
    positions = np.arange(len(rec.catalog))
    contributions, tokens = rec.attributions(history, positions)
    expected = rec.strategy.weights[torch.as_tensor(tokens)].numpy()
    np.testing.assert_allclose(contributions, expected, rtol=1e-4, atol=1e-6)
    explained = rec.explain(user=user_id, k=2, per_item=2)
    for row in explained.itertuples(index=False):
        token, column = rec.token_of[row.cause_item_id], rec.local[rec.token_of[row.item_id]]
        weight = rec.strategy.weights[token, column].item()
        assert row.contribution == pytest.approx(weight, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", ["ease", "target_only"])
def test_streaming_and_deletion_analyses_run_on_every_test_user(setup, name, tmp_path):
    rec, _ = build(setup, name, tmp_path)
    stream = streaming_evaluation(rec, max_events=5)
    scenario = rec.scenario
    cold_events = scenario.cold[scenario.cold["group"] == COLD_TEST].groupby("user").size()
    cold = stream[stream["group"] == "cold"]
    assert len(cold) == int(cold_events.clip(upper=5).sum())
    first = stream[stream["step"] == 0]  # nothing folded in yet: both rankings agree
    assert (first["rank_updated"] == first["rank_frozen"]).all()
    assert stream[["ndcg_updated", "ndcg_frozen"]].le(1).all().all()
    summary = summarise_streaming(stream)
    assert {"cold/ndcg_updated", "cold/ndcg_frozen", "warm/gain"} <= set(summary)
    deletion = deletion_test(rec, max_users=10)
    assert len(deletion) > 0 and (deletion["history_items"] > 3).all()
    if name == "ease":  # linear: removing the top contributors removes the most score
        assert (deletion["drop_explained"] >= deletion["drop_random"] - 1e-6).all()
    assert {"warm/drop_explained", "warm/explained_wins"} <= set(summarise_deletion(deletion))


def call(url: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_http_service_over_a_real_server(setup, tmp_path):
    rec, _ = build(setup, "ease", tmp_path)
    user = str(rec.scenario.user_ids[int(rec.scenario.warm["user"].iloc[0])])
    with BackgroundServer(create_app(rec)) as url:
        status, health = call(url, "/health")
        assert status == 200 and health["strategy"] == "ease"
        status, listed = call(url, "/recommend", {"user": user, "k": 4})
        assert status == 200
        assert [i["item_id"] for i in listed["items"]] == rec.recommend(user=user, k=4)[
            "item_id"
        ].tolist()
        status, new = call(
            url, "/recommend", {"source_history": ["i0", {"item_id": "i1", "rating": 4}]}
        )
        assert status == 200 and len(new["items"]) == 10
        status, why = call(url, "/explain", {"user": user, "k": 2, "per_item": 2})
        assert status == 200 and len(why["items"]) == 2
        assert all(len(i["because"]) <= 2 for i in why["items"])
        assert {c["domain"] for i in why["items"] for c in i["because"]} <= {"source", "target"}
        # Bad requests: 404 for unknown ids, 422 for malformed bodies; nothing changes.
        status, error = call(url, "/update", {"user": user, "item_id": "no-such-item"})
        assert status == 404 and "no-such-item" in error["detail"]
        status, error = call(url, "/recommend", {"user": user, "k": "ten"})
        assert status == 422
        status, error = call(url, "/recommend", {"source_history": ["i0"], "bogus": 1})
        assert status == 422
        status, error = call(url, "/recommend", {"user": "nobody"})
        assert status == 404
        status, error = call(url, "/update", {"user": user, "item_id": "i0", "rating": 1e999})
        assert status == 422  # Infinity: refused by validation, never stored
        assert call(url, "/recommend", {"user": user, "k": 4})[1] == listed
        # An update is reflected by the next request.
        top = listed["items"][0]["item_id"]
        status, updated = call(url, "/update", {"user": user, "item_id": top})
        assert status == 200 and updated["cold"] is False
        after = call(url, "/recommend", {"user": user, "k": 4})[1]
        assert top not in [i["item_id"] for i in after["items"]]


def test_synthetic_dataset_has_the_asked_catalogues_and_errors_name_options():
    from recmig.data.scenario import ScenarioConfig
    from recmig.data.synthetic import synthetic_interactions

    data = synthetic_interactions(users=300, source_items=40, target_items=150, per_user=20)
    scenario = build_scenario(
        data, ScenarioConfig(source_domains=["Books"], target_domains=["Films"])
    )
    assert len(scenario.catalog(SOURCE)) <= 40 and 140 <= len(scenario.catalog(TARGET)) <= 150
    assert scenario.stats["cold/test_users"] > 0
    with pytest.raises(ValueError, match="data.dataset.target_items must be a positive integer"):
        synthetic_interactions(target_items=0)
    with pytest.raises(ValueError, match=r"data.dataset.clusters must be in \[0, 40\]"):
        synthetic_interactions(users=10, source_items=40, target_items=150, clusters=41)
    with pytest.raises(ValueError, match="data.dataset.affinity must be in"):
        synthetic_interactions(users=10, clusters=5, affinity=1.5)


@pytest.mark.parametrize("affinity", [0.3, 0.8])
def test_synthetic_taste_clusters_tie_a_users_domains_together(affinity):
    """With clusters, a user's most frequent cluster is the same in both domains, and about
    affinity + (1 - affinity) / clusters of their items come from it (popular picks land in
    it by chance too); without clusters, only popularity links the domains."""
    from recmig.data.synthetic import synthetic_interactions

    def own_cluster_share(data, clusters):
        rows = data.interactions.assign(item=data.interactions["item_id"].astype(int))
        rows["target"] = rows["item"] >= 100
        rows["cluster"] = (rows["item"] - 100 * rows["target"]) % clusters
        top = rows.groupby(["user_id", "target"])["cluster"].agg(lambda c: c.mode().iloc[0])
        share = rows.groupby("user_id")["cluster"].agg(lambda c: c.value_counts().iloc[0] / len(c))
        same = (top.unstack()[False] == top.unstack()[True]).mean()
        return share.mean(), same

    clusters = 10
    data = synthetic_interactions(
        users=400,
        source_items=100,
        target_items=300,
        per_user=40,
        clusters=clusters,
        affinity=affinity,
        exponent=0.5,
    )
    share, same = own_cluster_share(data, clusters)
    assert share == pytest.approx(affinity + (1 - affinity) / clusters, abs=0.06)
    assert same > 0.9
    plain = synthetic_interactions(
        users=400, source_items=100, target_items=300, per_user=40, exponent=0.5
    )
    assert own_cluster_share(plain, clusters)[1] < 0.5  # (popular items share cluster 0)


def test_non_finite_ratings_and_timestamps_are_refused_before_anything_changes(setup, tmp_path):
    rec, _ = build(setup, "user_bias", tmp_path)
    before = rec.recommend(user="u1")
    for bad in ({"rating": float("inf")}, {"rating": float("nan")}, {"timestamp": float("nan")}):
        with pytest.raises(RequestError, match="must be a finite number"):
            rec.update("u1", "i0", **bad)
    with pytest.raises(RequestError, match=r"source_history\[0\] rating"):
        rec.recommend(source_history=[("i0", float("inf"))])
    assert rec.recommend(user="u1").equals(before)
    # The rating a user gives counts at once (user_bias reads the history's ratings).
    source_item = next(i for i in rec.item_ids if rec.domain_name(rec.token_of[i]) == "source")
    rec.update("u1", source_item, rating=5.0)
    assert (rec.recommend(user="u1")["score"] > before["score"]).any()


def send(url: str, path: str, data: bytes, kind: str = "application/json") -> tuple[int, dict]:
    """A raw body, as a careless or hostile client sends it."""
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": kind})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def announce_large_body(url: str, path: str, length: int) -> tuple[int, dict]:
    """Announce a ``length``-byte JSON body, send its first kilobyte, read the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n"
        )
        conn.sendall(head.encode() + b'{"source_history": [' + b'"i0", ' * 170)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    return status, json.loads(reply.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize("name", ["ease", "itemknn", "ridge_transfer", "target_only"])
def test_a_history_with_nothing_to_score_by_gets_target_popularity_and_says_so(
    setup, name, tmp_path
):
    rec, _ = build(setup, name, tmp_path)
    popularity, _ = build(setup, "popularity", tmp_path)
    empty = rec.recommend(history=[], k=5)
    expected = popularity.recommend(history=[], k=5)
    if name == "target_only":  # a sequence model scores an empty history by its own prior
        assert empty.attrs["fallback"] is None
        return
    assert empty["item_id"].tolist() == expected["item_id"].tolist()
    assert empty.attrs["fallback"] == FALLBACK
    assert (empty["score"] > 0).all()  # popularity counts, not the flat zeros
    user = str(rec.scenario.user_ids[int(rec.scenario.warm["user"].iloc[0])])
    assert rec.recommend(user=user).attrs["fallback"] is None  # a real history: the model's
    with BackgroundServer(create_app(rec)) as url:
        status, answer = call(url, "/recommend", {"source_history": [], "k": 5})
    assert status == 200 and answer["fallback"] == FALLBACK
    assert [i["item_id"] for i in answer["items"]] == expected["item_id"].tolist()


def test_with_fallback_replaces_only_rows_without_signal():
    scores = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 5.0], [2.0, 1.0, 0.0], [float("nan")] * 3])
    excluded = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]], dtype=torch.bool)
    ranked, flat = with_fallback(scores, excluded, torch.tensor([1.0, 3.0, 2.0]))
    assert flat.tolist() == [True, True, False, False]  # row 1: equal among what may be shown
    assert ranked[0].tolist() == [1.0, 3.0, 2.0] and ranked[2].tolist() == [2.0, 1.0, 0.0]
    assert with_fallback(scores, excluded, None)[0] is scores


def test_http_refuses_what_it_cannot_read_in_one_clear_answer(setup, tmp_path):
    rec, _ = build(setup, "ease", tmp_path)
    user = str(rec.scenario.user_ids[int(rec.scenario.warm["user"].iloc[0])])
    with BackgroundServer(create_app(rec)) as url:
        status, error = send(url, "/recommend", b'{"user": "\xff\xfe"}')
        assert status == 422, error  # not UTF-8: the README's 422, not a 400
        status, error = send(url, "/recommend", json.dumps({"user": user}).encode(), "text/plain")
        assert status == 415 and "application/json" in error["detail"]
        body = b'{"user": "%s", "item_id": "i0", "rating": NaN}' % user.encode()
        status, error = send(url, "/update", body)
        assert status == 422 and len(error["detail"]) == 1  # one field, one error
        assert error["detail"][0]["loc"] == ["body", "rating"]
        # 50 MB announced: answered 413 after the first kilobyte, the rest never read.
        status, error = announce_large_body(url, "/recommend", 50_000_000)
        assert status == 413 and "bytes" in error["detail"]
        status, error = call(url, "/recommend", {"user": "x" * 5126})
        assert status == 422 and len(json.dumps(error)) < 500  # refused, not echoed back
        status, error = call(url, "/update", {"user": user, "item_id": "y" * 900})
        assert status == 404 and len(error["detail"]) < 300 and "yyyy..." in error["detail"]
        status, health = call(url, "/health")
        assert status == 200 and health["journal"] is None


def test_updates_survive_in_the_journal_and_memory_stays_bounded(setup, tmp_path):
    rec, _ = build(setup, "ease", tmp_path)
    journal = UpdateJournal(tmp_path / "updates.sqlite", run="run-a")
    bounded = Recommender(rec.strategy, rec.tensors, "ease", journal=journal, max_users=2)
    users = [str(u) for u in rec.scenario.user_ids[:3]]
    for user, item in zip([*users, users[0]], ["i0", "i1", "i2", "i3"], strict=True):
        bounded.update(user, item)
    bounded.update("someone-new", "i4", rating=4.0, timestamp=1e12)
    assert len(bounded.histories) == 2 and len(journal) == 5  # the bound holds; nothing lost
    lists = {u: bounded.recommend(user=u) for u in [*users, "someone-new"]}
    # A restarted service (a fresh recommender on the same journal) answers the same lists.
    again = Recommender(
        rec.strategy, rec.tensors, "ease", journal=UpdateJournal(journal.path, run="run-a")
    )
    for user, table in lists.items():
        assert again.recommend(user=user).equals(table), user
    assert again.history_of(users[0]).tokens[-2:] == [rec.token_of["i0"], rec.token_of["i3"]]
    with pytest.raises(ValueError, match="belongs to another run"):
        UpdateJournal(journal.path, run="run-b")
    with pytest.raises(ValueError, match="needs an update journal"):
        Recommender(rec.strategy, rec.tensors, max_users=5)
    # A rejected update is never journalled.
    with pytest.raises(UnknownIdError):
        again.update(users[1], "no-such-item")
    assert len(journal) == 5
