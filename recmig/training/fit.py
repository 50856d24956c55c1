"""How a strategy learns: the one place that tells the two kinds of strategy apart.

A trained strategy (:class:`recmig.strategy.TransferStrategy`) learns for epochs, which each
caller runs its own way (``recmig train`` with checkpoints and resumption, the benchmark and the
sweep-cost estimate timing a few epochs); a closed-form strategy
(:class:`recmig.closed_form.ClosedFormStrategy`) is fitted once on the training interactions.
Everything after learning (validation, test, serving) treats both alike, through
:meth:`recmig.strategy.Strategy.target_scores`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from recmig.closed_form import ClosedFormStrategy
from recmig.data.tensors import ScenarioTensors, TrainingMatrix
from recmig.strategy import Strategy, TransferStrategy


class Fit(NamedTuple):
    """What :func:`fit_strategy` did."""

    closed_form: bool
    """The strategy was fitted once: its model exists only in memory until a checkpoint of it
    is saved (a trained run's best epoch is already in one)."""
    result: Any
    """What ``train`` (trained) or ``fit_once`` (closed form) returned."""


def fit_strategy(
    strategy: Strategy,
    tensors: ScenarioTensors,
    train: Callable[[], Any],
    fit_once: Callable[[TrainingMatrix], Any] | None = None,
) -> Fit:
    """Let ``strategy`` learn from ``tensors``' training data: ``train()`` for a trained
    strategy; for a closed-form one ``fit_once(matrix)`` on the training interactions (default:
    its ``fit``)."""
    if isinstance(strategy, ClosedFormStrategy):
        matrix = tensors.training_matrix()
        return Fit(True, fit_once(matrix) if fit_once is not None else strategy.fit(matrix))
    if isinstance(strategy, TransferStrategy):
        return Fit(False, train())
    raise TypeError(
        f"{type(strategy).__name__} is neither trained (recmig.strategy.TransferStrategy) nor "
        "fitted once (recmig.closed_form.ClosedFormStrategy): subclass one of them"
    )
