"""Training objectives: what a strategy's losses fit and what the evaluator ranks by.

A strategy never asks which objective it runs under; it asks the objective (``self.objective``,
built once per run and shared by every loss of the strategy):

- :meth:`Objective.window_loss`: the loss on next-item windows (a tower's own training);
- :meth:`Objective.history_loss`: a user-level prediction fit to a user's history (mapped,
  bridged or distilled interests);
- :meth:`Objective.soft_target_loss`: one prediction fit to another's (distillation);
- :meth:`Objective.predictions`: dot-product scores -> what the evaluator ranks and scores;
- ``needs_ratings`` (the loaders add the ratings batch keys) and ``error_metrics`` (the
  evaluator also logs the predictions' errors against held-out ratings).

``ranking`` fits next-item cross-entropy over a catalogue (the RecBole SASRec loss), or, with
``sampled_negatives=N``, a logQ-corrected sampled softmax for catalogues too large for it.
``rating`` fits offset + scale * (interest . item vector) to the rating by squared error, the
matrix-factorisation view of EMCDR/PTUPCDR (protocol P2), on a fixed baseline rating per item.

Objectives register under the ``recmig.objectives`` entry-point group, as strategies do, and
are chosen with ``objective=<name>``; ``selection.<name>`` in the run config says which
validation metric selects the checkpoint (and what a Hydra sweeper optimises).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recmig.batches import TrainBatch
from recmig.plugins import load_registered, registered
from recmig.tokens import bos_token, catalog_positions, is_item

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from recmig.data.scenario import Scenario

GROUP = "recmig.objectives"


# --------------------------------------------------------------------------- ranking losses


def catalog_cross_entropy(
    interests: torch.Tensor,
    labels: torch.Tensor,
    item_table: torch.Tensor,
    catalog: torch.Tensor,
) -> torch.Tensor:
    """Full-softmax next-item loss over one catalogue (as RecBole's SASRec with CE loss).

    interests (B, L, D), labels (B, L) item indices (0 = no label), item_table (V, D),
    catalog (C,) item indices -> scalar mean over labelled positions.
    """
    keep = labels != 0
    local = catalog_positions(catalog, item_table.shape[0])
    logits = interests[keep] @ item_table.index_select(0, catalog).T  # (backward: index_add)
    return F.cross_entropy(logits, local[labels[keep]])


def sampled_catalog_cross_entropy(
    interests: torch.Tensor,
    labels: torch.Tensor,
    item_table: torch.Tensor,
    catalog: torch.Tensor,
    log_q: torch.Tensor,
    negatives: int,
) -> torch.Tensor:
    """Sampled softmax over one catalogue with the logQ correction (Bengio & Senecal 2008;
    Yi et al. 2019): the cost of :func:`catalog_cross_entropy` without its C-wide logits.

    ``negatives`` items are drawn with replacement from the catalogue with probabilities
    ``exp(log_q)`` (C,), shared by every labelled position of the batch. Each position's true
    item and the draws form its candidates; every candidate's logit is lowered by the log of
    its expected count in the draw (log negatives + log q), so the sampled loss estimates the
    full softmax's gradient instead of one biased towards popular negatives. A draw that is
    the position's own label is masked out (an accidental hit)."""
    keep = labels != 0
    local = catalog_positions(catalog, item_table.shape[0])[labels[keep]]
    drawn = torch.multinomial(log_q.exp(), negatives, replacement=True)
    user = interests[keep]
    correction = math.log(negatives) + log_q
    positive = (user * item_table[catalog[local]]).sum(-1) - correction[local]
    sampled = user @ item_table[catalog[drawn]].T - correction[drawn]
    sampled = sampled.masked_fill(drawn[None, :] == local[:, None], float("-inf"))
    logits = torch.cat([positive[:, None], sampled], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(local))


def history_likelihood_loss(
    scores: torch.Tensor, history: torch.Tensor, catalog: torch.Tensor, bos: int
) -> torch.Tensor:
    """- mean log softmax(scores)[i] over the items i of each user's history.

    scores (B, C) over ``catalog``; history (B, L) tokens of the user's items in that
    catalogue (padding and BOS are skipped). This is how a user-level prediction (a mapped or
    distilled interest) is fit to everything the user interacted with (Mult-VAE's likelihood).
    """
    local = catalog_positions(catalog, bos + 1)
    positives = is_item(history, bos)
    picked = torch.log_softmax(scores, dim=1).gather(1, local[history].clamp_min(0))
    return -(picked * positives).sum() / positives.sum().clamp_min(1)


def distillation_kl(teacher: torch.Tensor, student: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 * KL(softmax(teacher / tau) || softmax(student / tau)), mean over rows.

    teacher, student: (B, C) scores over the same C items. tau^2 keeps the gradient scale
    independent of the temperature (Hinton et al., 2015).
    """
    log_p_teacher = F.log_softmax(teacher / tau, dim=-1)
    log_p_student = F.log_softmax(student / tau, dim=-1)
    return tau**2 * F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")


# --------------------------------------------------------------------------- rating losses


def _offset_of(offset: torch.Tensor | float, tokens: torch.Tensor) -> torch.Tensor | float:
    """The rating baseline of each token: ``offset`` is one number or one per token (V,)."""
    return offset[tokens] if torch.is_tensor(offset) and offset.ndim else offset


def rating_squared_error(
    interests: torch.Tensor,
    labels: torch.Tensor,
    ratings: torch.Tensor,
    item_table: torch.Tensor,
    offset: torch.Tensor | float = 0.0,
    scale: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """Mean of (offset + scale * <interest_t, item vector of label_t> - rating_t)^2 over
    labelled positions that carry a rating. interests (B, L, D), labels and ratings (B, L),
    item_table (V, D); offset: one number or one per token (V,)."""
    keep = (labels != 0) & ~torch.isnan(ratings)
    base = _offset_of(offset, labels[keep])
    predicted = base + scale * (interests[keep] * item_table[labels[keep]]).sum(-1)
    if predicted.numel() == 0:
        return interests.new_zeros(())
    return F.mse_loss(predicted, ratings[keep])


def history_rating_error(
    scores: torch.Tensor,
    history: torch.Tensor,
    ratings: torch.Tensor,
    catalog: torch.Tensor,
    bos: int,
    offset: torch.Tensor | float = 0.0,
    scale: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """The rating counterpart of :func:`history_likelihood_loss`: mean squared error between a
    user-level prediction's scores (B, C) over ``catalog`` and the ratings (B, L) the user gave
    the items of ``history`` (B, L) in that catalogue."""
    local = catalog_positions(catalog, bos + 1)[history]
    keep = is_item(history, bos) & (local >= 0) & ~torch.isnan(ratings)
    picked = _offset_of(offset, history) + scale * scores.gather(1, local.clamp_min(0))
    squared = (picked - ratings.nan_to_num()) ** 2
    return (squared * keep).sum() / keep.sum().clamp_min(1)


# --------------------------------------------------------------------------- objectives


class Objective(nn.Module):
    """What every objective provides. Parameters it owns (a rating scale) train with the
    strategy and are saved in its checkpoints under ``objective.``."""

    name: ClassVar[str] = ""
    needs_ratings: ClassVar[bool] = False
    """The batches must carry ratings (:mod:`recmig.batches`): ``label_ratings`` and
    ``<name>_hist_ratings`` in training, ``relevant_ratings`` in evaluation, and
    ``input_ratings`` beside ``inputs`` for a strategy that reads them."""
    error_metrics: ClassVar[tuple[str, ...]] = ()
    """Errors of :meth:`predictions` against held-out ratings that the evaluator logs."""

    def __init__(self, bos: int):
        super().__init__()
        self.bos = bos

    @classmethod
    def for_run(cls, cfg: DictConfig | Mapping, scenario: Scenario, vocab_size: int) -> Objective:
        """The objective of one run (``cfg``: the run config, or any mapping of its top-level
        options: ``dim``, ``rating_baseline``, ``rating_shrinkage``)."""
        return cls(bos=bos_token(vocab_size))

    def window_loss(
        self,
        interests: torch.Tensor,
        part: TrainBatch,
        table: torch.Tensor,
        catalog: torch.Tensor,
    ) -> torch.Tensor:
        """Loss of (B, L, D) ``interests`` on the windows ``part`` (their ``labels``), items
        from ``table`` (V, D), over ``catalog``."""
        raise NotImplementedError

    def history_loss(
        self,
        scores: torch.Tensor,
        part: TrainBatch,
        history: str,
        catalog: torch.Tensor,
    ) -> torch.Tensor:
        """Fit a user-level prediction (B, C) over ``catalog`` to the user's ``history``
        (``target`` -> the batch key ``target_hist``)."""
        raise NotImplementedError

    def soft_target_loss(
        self, teacher: torch.Tensor, student: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """Fit (B, C) ``student`` scores to a teacher's scores of the same items."""
        raise NotImplementedError

    def predictions(self, scores: torch.Tensor, catalog: torch.Tensor) -> torch.Tensor:
        """(B, C) interest . item scores over ``catalog`` -> what the evaluator ranks."""
        return scores

    def frozen(self) -> Objective:
        """This objective with its own parameters out of the gradient, for a loss that must
        not move what other (frozen) predictions share."""
        return self


class RankingObjective(Objective):
    name = "ranking"

    def __init__(
        self, bos: int, negatives: int | None = None, popularity: torch.Tensor | None = None
    ):
        """``negatives``: None trains on the full softmax over the catalogue (exact, the
        default); N trains next-item windows on a sampled softmax with N negatives per batch,
        drawn in proportion to ``popularity`` (V,) training counts plus one, so the cost of a
        step no longer grows with the catalogue. History and distillation losses stay full:
        they score one row per user, not one per position."""
        super().__init__(bos)
        if negatives is not None and negatives < 1:
            raise ValueError(f"sampled_negatives: must be >= 1 or null, got {negatives}")
        self.negatives = negatives
        if negatives is not None:
            counts = torch.as_tensor(popularity, dtype=torch.float) + 1.0
            self.register_buffer("log_counts", counts.log(), persistent=False)

    @classmethod
    def for_run(cls, cfg, scenario, vocab_size):
        negatives = cfg.get("sampled_negatives")
        if negatives is None:
            return cls(bos=bos_token(vocab_size))
        counts = np.bincount(scenario.train["item"].to_numpy(), minlength=vocab_size)
        return cls(bos_token(vocab_size), int(negatives), torch.from_numpy(counts[:vocab_size]))

    def window_loss(self, interests, part, table, catalog):
        if self.negatives is None:
            return catalog_cross_entropy(interests, part.labels, table, catalog)
        log_q = torch.log_softmax(self.log_counts[catalog], dim=0)
        return sampled_catalog_cross_entropy(
            interests, part.labels, table, catalog, log_q, self.negatives
        )

    def history_loss(self, scores, part, history, catalog):
        return history_likelihood_loss(scores, part.history(history), catalog, self.bos)

    def soft_target_loss(self, teacher, student, temperature):
        return distillation_kl(teacher, student, temperature)


class RatingObjective(Objective):
    name = "rating"
    needs_ratings = True
    error_metrics = ("mae", "rmse")

    def __init__(self, bos: int, offsets: torch.Tensor, dim: int):
        """``offsets`` (vocab_size,): each token's baseline rating (:func:`rating_baselines`),
        rebuilt from the data like the catalogues, so not part of checkpoints."""
        super().__init__(bos)
        self.register_buffer("offsets", torch.as_tensor(offsets, dtype=torch.float), False)
        # predicted rating = offset + scale * (interest . item). At initialisation that dot
        # product of two random D-d vectors is several rating points off (std ~4.6 for SASRec
        # over text vectors at D=64); a learned scale starting at 1/D starts every model close
        # to the baseline predictor. (Starting at exactly 0 leaves the vectors without
        # gradient: the scale then random-walks around 0 and the model never leaves the
        # baselines.)
        self.scale = nn.Parameter(torch.tensor(1.0 / dim))
        self.scale_trains = True

    @classmethod
    def for_run(cls, cfg, scenario, vocab_size):
        kind, shrinkage = cfg.get("rating_baseline", "item"), cfg.get("rating_shrinkage", 10.0)
        offsets = torch.from_numpy(rating_baselines(scenario, kind, shrinkage))
        return cls(bos=bos_token(vocab_size), offsets=offsets, dim=int(cfg["dim"]))

    def _scale(self) -> torch.Tensor:
        return self.scale if self.scale_trains else self.scale.detach()

    def window_loss(self, interests, part, table, catalog):
        return rating_squared_error(
            interests, part.labels, part.label_ratings, table, self.offsets, self._scale()
        )

    def history_loss(self, scores, part, history, catalog):
        tokens, ratings = part.history(history), part.history_ratings(history)
        return history_rating_error(
            scores, tokens, ratings, catalog, self.bos, self.offsets, self._scale()
        )

    def soft_target_loss(self, teacher, student, temperature):
        # Both predict offset + scale * score with the same per-item offsets, so the squared
        # difference of the predicted ratings is that of the scaled scores.
        scale = self._scale()
        return F.mse_loss(scale * student, scale * teacher)

    def predictions(self, scores, catalog):
        return self.offsets[catalog] + self._scale() * scores

    def frozen(self) -> RatingObjective:
        view = copy.copy(self)  # shares parameters and buffers; only the flag differs
        object.__setattr__(view, "scale_trains", False)
        return view


def rating_baselines(scenario: Scenario, kind: str = "item", shrinkage: float = 10.0) -> np.ndarray:
    """The rating objective's baseline per token, shape (num_items + 2,): what an item is
    predicted before any user interest is added (Koren's baseline predictor, fixed up front).

    ``global``: the mean target training rating everywhere. ``item``: each item's mean training
    rating shrunk towards its domain's mean by ``shrinkage`` pseudo-ratings, the domain's mean
    for items without training ratings. Item vectors projected from text cannot represent a
    free per-item bias, so without it a text model's cold users stay far from the item means.
    """
    from recmig.data.scenario import TARGET

    if kind not in ("global", "item"):
        raise ValueError(f"rating_baseline must be 'global' or 'item', got {kind!r}")
    if shrinkage < 0:
        raise ValueError(f"rating_shrinkage must be >= 0, got {shrinkage}")
    rated = scenario.train.dropna(subset=["rating"])
    target = rated.loc[rated["domain"] == TARGET, "rating"]
    if target.empty:
        raise ValueError("objective='rating' needs ratings, but the target domain has none")
    offsets = np.full(len(scenario.item_domain) + 1, target.mean(), dtype=np.float32)
    if kind == "global":
        return offsets
    for domain, part in rated.groupby("domain"):
        mean = part["rating"].mean()
        offsets[np.flatnonzero(scenario.item_domain == domain)] = mean
        totals = part.groupby("item")["rating"].agg(["sum", "count"])
        shrunk = (totals["sum"] + shrinkage * mean) / (totals["count"] + shrinkage)
        offsets[totals.index.to_numpy()] = shrunk.to_numpy()
    offsets[0] = offsets[-1] = target.mean()  # padding and BOS: never scored
    return offsets


def objective_names() -> list[str]:
    return sorted(registered(GROUP))


def load_objective(name: str) -> type[Objective]:
    """The objective class registered as ``name``."""
    return load_registered(GROUP, name, Objective, "objective")
