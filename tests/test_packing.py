"""Packed windows compute what padded ones compute: SASRec's outputs at every real position and
the gradients they send back are the padded batch's, and batches that cannot be packed are not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recmig.users.interest import CausalTransformer
from recmig.users.packing import Packing, best_fit_rows


def right_padded(lengths: list[int], width: int) -> torch.Tensor:
    lengths_t = torch.tensor(lengths)
    tokens = torch.randint(1, 100, (len(lengths), width))
    return tokens * (torch.arange(width) < lengths_t.unsqueeze(1))


@pytest.mark.parametrize("seed", range(3))
def test_best_fit_rows_place_every_window_without_overlap(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 51, size=300)
    row_of, offset_of, rows = best_fit_rows(lengths, 50)
    used = np.zeros((rows, 50), dtype=int)
    for length, row, offset in zip(lengths, row_of, offset_of, strict=True):
        assert offset + length <= 50
        used[row, offset : offset + length] += 1
    assert used.max() == 1  # no slot holds two windows
    assert used.sum() == lengths.sum()
    assert rows <= int(np.ceil(lengths.sum() / 50 * 11 / 9)) + 1  # best-fit decreasing's bound


@pytest.mark.parametrize("training", [False, True])
def test_packed_sasrec_equals_padded_sasrec_and_its_gradients(training):
    torch.manual_seed(0)
    width = 20
    lengths = [20, 20, 3, 1, 7, 13, 2, 1, 1, 17, 5, 0]  # (the last row: no token at all)
    tokens = right_padded(lengths, width)
    model = CausalTransformer(16, max_len=width, dropout=0.0).train(training)
    packing = Packing.of(tokens)
    assert packing is not None and packing.rows < len(lengths)
    items = torch.randn(len(lengths), width, 16) * (tokens != 0).unsqueeze(-1)
    outputs, grads = [], []
    for pack in (True, False):
        model.pack = pack
        model.zero_grad()
        x = items.clone().requires_grad_()
        out = model(x, tokens)
        real = (tokens != 0).unsqueeze(-1)
        real[-1, 0] = True  # the empty row's first position is computed both ways
        (out * real * torch.linspace(-1, 1, 16)).sum().backward()
        outputs.append(out * real)
        grads.append((x.grad, model.positions.weight.grad.clone()))
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5)


def test_a_batch_that_is_not_right_padded_or_does_not_shrink_is_left_as_it_is():
    tokens = right_padded([5, 5, 5], 10)
    tokens[0, 2] = 0  # an item blanked inside a window (loader.item_mask_prob)
    assert Packing.of(tokens) is None
    assert Packing.of(right_padded([10, 9, 8], 10)) is None  # no two windows share a row
    # The model falls back to the padded rows: still causal, still the same outputs.
    model = CausalTransformer(8, max_len=10).eval()
    items = torch.randn(3, 10, 8)
    model.pack = False
    expected = model(items, tokens)
    model.pack = True
    assert torch.equal(model(items, tokens), expected)
