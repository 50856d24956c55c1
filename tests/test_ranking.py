import math

import pytest
import torch
from torchmetrics.functional.retrieval import retrieval_precision, retrieval_recall
from torchmetrics.retrieval import (
    RetrievalHitRate,
    RetrievalMRR,
    RetrievalNormalizedDCG,
    RetrievalPrecision,
    RetrievalRecall,
)

from recmig.evaluation.ranking import METRICS, ranking_metrics


def test_hand_computed_single_relevant_item():
    # Ranking of user 0: items 3 > 1 > 0 > 2 ; relevant item 0 sits at rank 3.
    scores = torch.tensor([[0.5, 0.8, 0.1, 0.9]])
    relevant = torch.tensor([[True, False, False, False]])
    m = ranking_metrics(scores, relevant, ks=(2, 3))
    assert m["hit@2"].item() == 0 and m["hit@3"].item() == 1
    assert m["recall@3"].item() == 1
    assert m["ndcg@3"].item() == pytest.approx(1 / math.log2(4))
    assert m["mrr@3"].item() == pytest.approx(1 / 3)
    assert m["mrr@2"].item() == 0
    assert m["precision@2"].item() == 0 and m["f1@2"].item() == 0  # P + R = 0: F1 is 0
    assert m["precision@3"].item() == pytest.approx(1 / 3)
    assert m["f1@3"].item() == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))  # = 0.5
    assert set(m) == {f"{name}@{k}" for name in METRICS for k in (2, 3)}


def test_hand_computed_exclusion_and_several_relevant():
    # Item 3 was seen in training: excluded, so the ranking is 1 > 0 > 2.
    scores = torch.tensor([[0.5, 0.8, 0.1, 0.9]])
    relevant = torch.tensor([[True, True, False, False]])
    excluded = torch.tensor([[False, False, False, True]])
    m = ranking_metrics(scores, relevant, excluded, ks=(1, 2))
    assert m["recall@1"].item() == pytest.approx(0.5)
    assert m["recall@2"].item() == pytest.approx(1.0)
    assert m["ndcg@2"].item() == pytest.approx(1.0)  # both relevant items on top: ideal
    assert m["ndcg@1"].item() == pytest.approx(1.0)
    assert m["mrr@1"].item() == 1
    # Two relevant items, one at rank 1, one at rank 3 (with K=3): DCG / IDCG.
    relevant = torch.tensor([[False, True, True, False]])
    m = ranking_metrics(scores, relevant, excluded, ks=(3,))
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg@3"].item() == pytest.approx((1 + 1 / math.log2(4)) / idcg)
    assert m["recall@3"].item() == pytest.approx(1.0)
    assert m["precision@3"].item() == pytest.approx(2 / 3)
    assert m["f1@3"].item() == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))  # = 0.8


def test_precision_divides_by_k_when_the_catalogue_is_smaller():
    # RecBole's Precision@K is over K slots: a 4-item catalogue fills at most 4 of 10, so the
    # first user's two relevant items give 2/10, not 2/4 (min(K, catalogue)) nor 2/3 (the items
    # left once the training item is excluded).
    scores = torch.tensor([[0.5, 0.8, 0.1, 0.9], [0.5, 0.8, 0.1, 0.9]])
    relevant = torch.tensor([[True, True, False, False], [False, False, True, False]])
    excluded = torch.tensor([[False, False, False, True], [False, False, False, False]])
    m = ranking_metrics(scores, relevant, excluded, ks=(2, 10))
    assert m["precision@10"].tolist() == pytest.approx([2 / 10, 1 / 10])
    assert m["recall@10"].tolist() == pytest.approx([1.0, 1.0])
    assert m["f1@10"].tolist() == pytest.approx([2 * 2 / (10 + 2), 2 * 1 / (10 + 1)])
    # At K=2 the second user's relevant item (rank 4) is out of the list.
    assert m["precision@2"].tolist() == pytest.approx([1.0, 0.0])
    assert m["f1@2"].tolist() == pytest.approx([1.0, 0.0])


@pytest.mark.parametrize("k", [1, 5, 10, 60])
def test_agrees_with_torchmetrics(k):
    gen = torch.Generator().manual_seed(k)
    # Positive scores: torchmetrics (1.9) counts a relevant item only where its score is > 0
    # (the sigmoid keeps the ranking of the normal draws). k=60 is beyond the 50 items.
    scores = torch.randn(32, 50, generator=gen).sigmoid()
    relevant = torch.rand(32, 50, generator=gen) < 0.08
    relevant[relevant.sum(1) == 0, 0] = True
    ours = ranking_metrics(scores, relevant, ks=(k,))
    indexes = torch.arange(32).unsqueeze(1).expand(-1, 50)
    reference = {
        "recall": RetrievalRecall(top_k=k),
        "ndcg": RetrievalNormalizedDCG(top_k=k),
        "hit": RetrievalHitRate(top_k=k),
        "mrr": RetrievalMRR(top_k=k),
        # adaptive_k=False (the default, spelled out): over k even beyond the catalogue, as RecBole
        "precision": RetrievalPrecision(top_k=k, adaptive_k=False),
    }
    for name, metric in reference.items():
        expected = metric(scores.flatten(), relevant.flatten(), indexes=indexes.flatten())
        assert ours[f"{name}@{k}"].mean().item() == pytest.approx(expected.item(), abs=1e-6), name
    # Per user: precision as torchmetrics', F1 as the harmonic mean of its precision and recall.
    users = list(zip(scores, relevant, strict=True))
    precision = torch.stack([retrieval_precision(s, r, top_k=k) for s, r in users])
    recall = torch.stack([retrieval_recall(s, r, top_k=k) for s, r in users])
    both = precision + recall
    f1 = torch.where(both > 0, 2 * precision * recall / both, torch.zeros_like(both))
    assert torch.allclose(ours[f"precision@{k}"], precision, atol=1e-6)
    assert torch.allclose(ours[f"f1@{k}"], f1, atol=1e-6)
    if k < 50:  # both branches of the F1 formula are exercised (at 60 every user has a hit)
        assert (f1 == 0).any() and (f1 > 0).any()


def test_user_without_relevant_item_is_rejected():
    with pytest.raises(ValueError, match="relevant"):
        ranking_metrics(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))


def test_ties_break_by_catalogue_order_whatever_the_batch():
    from recmig.evaluation.ranking import top_items

    torch.manual_seed(0)
    scores = torch.randint(0, 4, (300, 1000)).float()  # many ties, as popularity counts have
    alone = torch.cat([top_items(row[None], None, 10) for row in scores])
    together = top_items(scores, None, 10)
    assert torch.equal(alone, together)
    first = scores[0]
    expected = sorted(range(1000), key=lambda i: (-first[i].item(), i))[:10]
    assert together[0].tolist() == expected


@pytest.mark.parametrize("seed", range(4))
def test_top_items_equals_a_stable_descending_sort(seed):
    """top_items picks the first k without sorting the catalogue; whatever the ties (few score
    levels, excluded items at -inf, k beyond the catalogue, NaN) it must return exactly what a
    stable descending sort returns."""
    from recmig.evaluation.ranking import top_items

    generator = torch.Generator().manual_seed(seed)
    for _ in range(100):
        rows, items = (int(torch.randint(1, 30, (), generator=generator)) for _ in range(2))
        levels = int(torch.randint(1, 6, (), generator=generator))
        scores = torch.randint(0, levels, (rows, items), generator=generator).float()
        if seed == 3:  # continuous scores with a NaN
            scores = torch.randn(rows, items, generator=generator)
            scores[0, int(torch.randint(0, items, (), generator=generator))] = float("nan")
        excluded = torch.rand(rows, items, generator=generator) < 0.3
        k = int(torch.randint(1, 40, (), generator=generator))
        for mask in (excluded, None):
            masked = scores if mask is None else scores.masked_fill(mask, float("-inf"))
            expected = masked.sort(dim=1, descending=True, stable=True).indices[:, :k]
            assert torch.equal(top_items(scores, mask, k), expected)


@pytest.mark.parametrize("seed", range(3))
def test_rank_in_list_is_the_position_in_the_list_top_items_makes(seed):
    # What the streaming analysis ranks an event by must be where the recommender lists it,
    # ties and excluded items included.
    from recmig.evaluation.ranking import rank_in_list, top_items

    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 3, (40, 25), generator=generator).float()
    excluded = torch.rand(40, 25, generator=generator) < 0.2
    positions = torch.randint(0, 25, (40,), generator=generator)
    excluded[torch.arange(40), positions] = False
    full = top_items(scores, excluded, 25)
    expected = (full == positions[:, None]).float().argmax(1) + 1
    assert torch.equal(rank_in_list(scores, excluded, positions), expected)
