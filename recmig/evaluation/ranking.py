"""Full-ranking metrics over a whole catalogue, one value per user.

Definitions (RecBole's, which torchmetrics' retrieval metrics share; tests check both agree):
    Hit@K       = 1 if any relevant item is in the top K
    Recall@K    = |relevant in top K| / |relevant|
    NDCG@K      = sum_{r <= K, item_r relevant} 1/log2(r + 1) / IDCG@K,
                  IDCG@K = sum_{r <= min(K, |relevant|)} 1/log2(r + 1)
    MRR@K       = 1 / rank of the first relevant item if it is in the top K, else 0
    Precision@K = |relevant in top K| / K, over K even where the catalogue holds fewer than K
                  items (RecBole's; torchmetrics' RetrievalPrecision with adaptive_k=False)
    F1@K        = 2 Precision@K Recall@K / (Precision@K + Recall@K), 0 where both are 0,
                  i.e. 2 |relevant in top K| / (K + |relevant|) (no RecBole metric: the formula)
Items a user saw in training are excluded from the ranking (their scores set to -inf) before
the top K is taken. Ties are broken by catalogue order (a stable sort), never by relevance, and
never by how the users happen to be batched (torch.topk's order among ties depends on the
shape of its input, so a user's list would differ between a 1,024-user evaluation batch and a
one-user request).
"""

from __future__ import annotations

import torch

NEW_ITEMS = "new_items"
"""The metric group of items with no training interaction (``data.scenario.new_item_fraction``):
``<split>/new_items/<metric>`` in metrics.json, ``new_items/<metric>`` in test_users.parquet."""

METRICS = ("recall", "ndcg", "hit", "mrr", "precision", "f1")

GROUPS = ("cold", "warm")
"""The user groups every metric is averaged over (the selection metric is their mean):
``<split>/<group>/<metric>`` in metrics.json."""


def top_items(scores: torch.Tensor, excluded: torch.Tensor | None, k: int) -> torch.Tensor:
    """(B, N) scores -> (B, min(k, N)) catalogue positions of the best items, best first."""
    if excluded is not None:
        scores = scores.masked_fill(excluded, float("-inf"))
    k = min(k, scores.shape[1])
    # The first k of a stable descending sort, without sorting the catalogue: topk's items are
    # the same set wherever no other item ties the k-th best score ...
    values, picked = scores.topk(k, dim=1)
    if k == 0 or torch.isnan(values).any():  # (topk ranks NaN first: keep the sort's order)
        return scores.sort(dim=1, descending=True, stable=True).indices[:, :k]
    picked = picked.sort(dim=1).values  # ... ranked by score, ties in catalogue order
    top = picked.gather(1, scores.gather(1, picked).sort(dim=1, descending=True, stable=True)[1])
    crowded = (scores >= values[:, -1:]).sum(1) > k  # more items tie the k-th than fit
    if crowded.any():
        top[crowded] = scores[crowded].sort(dim=1, descending=True, stable=True).indices[:, :k]
    return top


def rank_in_list(
    scores: torch.Tensor, excluded: torch.Tensor | None, positions: torch.Tensor
) -> torch.Tensor:
    """(B,) 1-based rank of catalogue position ``positions[b]`` in the list :func:`top_items`
    makes of row b: among the items not excluded, ties in catalogue order, so the item is in
    ``top_items(scores, excluded, k)`` exactly when its rank is at most k. (Rows with NaN
    scores, which ``top_items`` sorts apart, are not ranked here: their rank is the count of
    items not below the item's score, NaNs excluded.)"""
    if excluded is not None:
        scores = scores.masked_fill(excluded, float("-inf"))
    own = scores.gather(1, positions[:, None])
    earlier = torch.arange(scores.shape[1], device=scores.device) < positions[:, None]
    ahead = (scores > own) | ((scores == own) & earlier)
    return ahead.sum(1) + 1


def with_fallback(
    scores: torch.Tensor, excluded: torch.Tensor | None, fallback: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores`` (B, N) with every row that carries no signal replaced by ``fallback`` (N,),
    and the (B,) bool mask of those rows; ``fallback`` None changes nothing.

    A row carries no signal when every item it may recommend scores the same: an empty history,
    or one the strategy reads nothing from (a closed-form model given no item of its source
    domain). Ranked as it is, such a row would list the catalogue in id order; the evaluator and
    the recommender rank it by ``fallback`` instead, the target domain's training popularity
    (``ScenarioTensors.target_popularity``), as the popularity baseline would."""
    if fallback is None:
        return scores, torch.zeros(len(scores), dtype=torch.bool)
    high, low = scores, scores
    if excluded is not None:
        high = scores.masked_fill(excluded, float("-inf"))
        low = scores.masked_fill(excluded, float("inf"))
    flat = high.amax(1) == low.amin(1)  # False for NaN rows and rows with nothing left
    if flat.any():
        scores = torch.where(flat[:, None], fallback.to(scores.dtype).expand_as(scores), scores)
    return scores, flat


def ranking_metrics(
    scores: torch.Tensor,
    relevant: torch.Tensor,
    excluded: torch.Tensor | None = None,
    ks: tuple[int, ...] = (5, 10, 20),
) -> dict[str, torch.Tensor]:
    """scores (B, N) float, relevant (B, N) bool, excluded (B, N) bool -> {"ndcg@10": (B,)}.

    Every user needs at least one relevant item (a user without one has no defined recall).
    """
    if scores.shape != relevant.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and relevant {tuple(relevant.shape)}")
    return metrics_of_top(top_items(scores, excluded, max(ks)), relevant, ks)


def metrics_of_top(
    top: torch.Tensor, relevant: torch.Tensor, ks: tuple[int, ...] = (5, 10, 20)
) -> dict[str, torch.Tensor]:
    """Metrics from ranked catalogue positions ``top`` (B, k_max) and ``relevant`` (B, N)."""
    n_relevant = relevant.sum(1)
    if (n_relevant == 0).any():
        raise ValueError("every evaluated user needs at least one relevant item")
    k_max = top.shape[1]
    hits = relevant.gather(1, top).float()  # (B, k_max)
    ranks = torch.arange(1, k_max + 1, device=top.device, dtype=torch.float)
    discount = 1.0 / torch.log2(ranks + 1)
    first_hit = torch.where(hits.bool(), ranks, torch.full_like(hits, float("inf"))).amin(1)
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        kk = min(k, k_max)
        hit_k = hits[:, :kk]
        ideal = torch.cumsum(discount, 0)[(n_relevant.clamp(max=kk) - 1)]
        found = hit_k.sum(1)
        recall = found / n_relevant
        precision = found / k  # k, not kk: the slots a short catalogue leaves empty count
        both = precision + recall
        out[f"recall@{k}"] = recall
        out[f"ndcg@{k}"] = (hit_k * discount[:kk]).sum(1) / ideal
        out[f"hit@{k}"] = (found > 0).float()
        out[f"mrr@{k}"] = torch.where(first_hit <= kk, 1.0 / first_hit, torch.zeros_like(first_hit))
        out[f"precision@{k}"] = precision
        out[f"f1@{k}"] = torch.where(both > 0, 2 * precision * recall / both, 0.0)
    return out


def new_item_metrics(
    scores: torch.Tensor,
    top: torch.Tensor,
    relevant: torch.Tensor,
    excluded: torch.Tensor | None,
    is_new: torch.Tensor,
    ks: tuple[int, ...] = (5, 10, 20),
) -> dict[str, torch.Tensor]:
    """The ``new_items`` group per user: every metric with the new items (``is_new``, (N,)
    bool) ranked among themselves and only the held-out new ones relevant (NaN for a user who
    has none), and ``share@K``, the share of the full ranking ``top``'s first K slots that
    are new items (every user)."""
    relevant = relevant & is_new
    rows = relevant.any(1)
    out = {}
    if rows.any():
        known = ~is_new.expand(int(rows.sum()), -1)
        if excluded is not None:
            known = known | excluded[rows]
        new_top = top_items(scores[rows], known, max(ks))
        for name, value in metrics_of_top(new_top, relevant[rows], ks).items():
            column = torch.full(rows.shape, float("nan"), device=top.device)
            column[rows] = value
            out[name] = column
    for k in ks:
        out[f"share@{k}"] = is_new[top[:, :k]].float().sum(1) / k
    return out
