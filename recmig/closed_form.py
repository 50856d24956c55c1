"""The closed-form sibling of the strategy contract: fitted once, then scored by the shared
evaluator.

Popularity, ItemKNN and EASE are not trained for epochs; pretending they were (a loss, an
optimizer, early stopping) would only cost time and hide what they are. A closed-form strategy
is a :class:`recmig.strategy.Strategy` like a trained one and fills in two methods:

1. :meth:`ClosedFormStrategy.fit` receives the training interactions as sparse user x token
   matrices (:class:`recmig.data.loaders.TrainingMatrix`) and stores what it learns in
   *fitted buffers* (:meth:`ClosedFormStrategy.register_fitted`), which go into the run's
   checkpoint like any weights;
2. :meth:`recmig.strategy.Strategy.target_scores` scores the target catalogue for a
   :class:`recmig.batches.UserBatch` whose ``inputs`` hold each user's whole history (training
   interactions of both domains, plus the warm validation items at test) as a sparse
   (B, vocab_size) tensor (``reads``: ``inputs`` by default).

``recmig train`` fits it once (:func:`recmig.training.fit.fit_strategy`) instead of
``Trainer.fit``, then validates and tests with the same module, metrics, ``metrics.json`` and
``test_users.parquet`` as every other strategy. Both methods are abstract here: a closed-form
strategy that lacks one fails when it is built.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recmig.batches import MATRIX_ROWS, UserBatch
from recmig.data.scenario import TARGET
from recmig.data.tensors import TrainingMatrix
from recmig.sparse_ridge import columns_matrix, sparse_product
from recmig.strategy import Strategy, StrategyContext


class FittedBuffers(nn.Module):
    """A module whose buffers are filled by fitting (:meth:`register_fitted`): a closed-form
    strategy, or a part of one (:class:`recmig.private_map.PrivateColdMap`)."""

    def register_fitted(self, name: str) -> None:
        """A buffer that ``fit`` fills: saved in checkpoints, sized when one is loaded (its
        shape is known only after fitting)."""
        self.register_buffer(name, torch.empty(0))
        if "_fitted" not in self.__dict__:
            self._fitted: list[str] = []
        self._fitted.append(name)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self.__dict__.get("_fitted", ()):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ClosedFormStrategy(Strategy, FittedBuffers):
    """Base of strategies fitted once from the training matrix (see the module docstring)."""

    kind = "closed form: fitted once on the training interactions"
    reads: ClassVar[frozenset[str]] = MATRIX_ROWS
    needs_source: ClassVar[bool] = False

    def __init__(self, context: StrategyContext):
        super().__init__(context)
        self._sparse: dict[str, sp.csr_matrix] = {}

    def register_sparse(self, name: str) -> None:
        """Sparse (vocab_size, N_t) weights that ``fit`` fills with :meth:`set_sparse`: k
        input tokens per target column (``{name}_tokens``, -1 where there are fewer) and their
        weights (``{name}_weights``), as the neighbourhood solver of
        :mod:`recmig.sparse_ridge` returns them."""
        self.register_fitted(f"{name}_tokens")
        self.register_fitted(f"{name}_weights")

    def set_sparse(self, name: str, columns: np.ndarray, weights: np.ndarray) -> None:
        """Fill sparse weights ``name`` from (N_t, k) item ``columns`` (-1: none) and weights."""
        setattr(self, f"{name}_tokens", torch.from_numpy(np.where(columns >= 0, columns + 1, -1)))
        setattr(self, f"{name}_weights", torch.from_numpy(weights))
        self._sparse.pop(name, None)

    def sparse_scores(self, name: str, inputs: torch.Tensor) -> torch.Tensor:
        """Sparse (B, vocab_size) histories times sparse weights ``name`` -> dense (B, N_t)."""
        if name not in self._sparse:  # built once per fit or load, from the fitted buffers
            self._sparse[name] = columns_matrix(
                getattr(self, f"{name}_tokens"),
                getattr(self, f"{name}_weights"),
                self.context.vocab_size,
            )
        return sparse_product(inputs, self._sparse[name])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._sparse.clear()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @abc.abstractmethod
    def fit(self, matrix: TrainingMatrix) -> None:
        """Learn from the training interactions; fill the fitted buffers."""

    @abc.abstractmethod
    def target_scores(self, batch: UserBatch) -> torch.Tensor:
        """(B, N_t) scores of the target catalogue from each user's sparse ``batch.inputs``
        row (under ``rating`` the predicted ratings)."""

    def item_matrix(self, matrix: TrainingMatrix) -> sp.csr_matrix:
        """(num_users, N) binary interactions over the item tokens 1..N of both domains
        (padding and BOS columns dropped); column j is token j + 1. Fails when the target
        domain has no training interaction (nothing to learn the target catalogue from),
        unless the scenario is zero-shot by design: then a model of interactions alone has
        nothing to go on and scores every target item alike, which is the finding."""
        items = matrix.interactions[:, 1 : self.context.bos].tocsc()
        target = matrix.item_domain[1:] == TARGET
        if items[:, target].nnz == 0 and not matrix.zero_shot:
            raise ValueError(
                f"strategy {type(self).__name__}: the scenario has no training interactions in "
                "the target domain (every target user is cold?), so there is nothing to fit "
                "the target catalogue on; lower data.scenario.cold_fraction"
            )
        return items.tocsr()

    def token_rows(self, item_rows: torch.Tensor) -> torch.Tensor:
        """(N, C) rows indexed by item column -> (vocab_size, C), padding and BOS rows 0, so
        that a sparse (B, vocab_size) ``inputs`` batch multiplies it directly."""
        out = item_rows.new_zeros(self.context.vocab_size, item_rows.shape[1])
        out[1 : self.context.bos] = item_rows
        return out

    def target_columns(self) -> np.ndarray:
        """Item-column index (token - 1) of each target catalogue item, in catalogue order."""
        return self.context.target_catalog.numpy() - 1

    @staticmethod
    def multiply(inputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Sparse (B, V) histories times dense (V, C) weights -> dense (B, C)."""
        return torch.sparse.mm(inputs, weights)
