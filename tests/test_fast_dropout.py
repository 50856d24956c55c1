"""FastDropout is dropout: the keep rate, the expectation, the gradient and the seed behave as
``nn.Dropout``'s; and the SASRec block built from it is torch's block with cheaper masks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from recmig.dropout import FastDropout, keep_mask, use_fast_dropout
from recmig.users.interest import CausalTransformer, SelfAttention


# 0.25, 0.5 and 0.75 are drawn a bit plane at a time, 0.1 and 0.9 as 16-bit numbers.
@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.75, 0.9])
def test_the_keep_rate_and_the_expectation_are_dropouts(p):
    torch.manual_seed(0)
    keep, scale = keep_mask(torch.Size([999, 1001]), p)  # (not a multiple of 64 elements)
    assert keep.float().mean().item() == pytest.approx(1 - p, abs=0.003)
    assert scale == pytest.approx(1 / (1 - p), rel=1e-4)
    out = FastDropout(p).train()(torch.ones(1000, 1000))
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)
    values = out.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(scale)
    # Elements that share a draw (the quarters of one 64-bit word, or the bits of one byte
    # and of one word of a bit plane) are independent.
    flat = keep.flatten().float()
    for gap in (1, 8, 16, 64):
        both = (flat[:-gap] * flat[gap:]).mean().item()
        assert both == pytest.approx((1 - p) ** 2, abs=0.003), gap


def test_the_gradient_passes_the_kept_elements_scaled():
    x = torch.randn(64, 33, requires_grad=True)
    out = FastDropout(0.3).train()(x)
    out.sum().backward()
    kept = out != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.7), rtol=1e-4)
    assert (x.grad[~kept] == 0).all()
    assert 0.6 < kept.float().mean().item() < 0.8


def test_the_mask_follows_the_global_seed():
    x = torch.ones(10, 50)
    torch.manual_seed(3)
    first = FastDropout(0.5).train()(x)
    torch.manual_seed(3)
    again = FastDropout(0.5).train()(x)
    assert torch.equal(first, again)
    assert not torch.equal(first, FastDropout(0.5).train()(x))  # the stream moved on


def test_evaluation_and_p_zero_return_the_input():
    x = torch.randn(5, 7)
    assert FastDropout(0.5).eval()(x) is x
    assert FastDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\)"):
        keep_mask(torch.Size([4]), 1.0)


def test_use_fast_dropout_replaces_every_dropout_module_in_place():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2), nn.Sequential(nn.Dropout(0.7)))
    assert use_fast_dropout(model) is model
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [type(m) for m in drops] == [FastDropout, FastDropout]
    assert [m.p for m in drops] == [0.2, 0.7]


def test_sasrec_is_torchs_block_with_the_same_parameters():
    torch.manual_seed(0)
    stock = nn.TransformerEncoderLayer(
        32, 2, 64, 0.0, activation="gelu", batch_first=True, layer_norm_eps=1e-12
    )
    ours = copy.deepcopy(stock)
    ours.self_attn = SelfAttention(32, 2, 0.0)
    ours.load_state_dict(stock.state_dict())  # strict: the same keys
    x = torch.randn(6, 20, 32)
    causal = torch.triu(torch.ones(20, 20, dtype=torch.bool), 1)
    for training in (True, False):  # (training: this module's own attention; eval: torch's)
        stock.train(training)
        ours.train(training)
        expected = stock(x, src_mask=causal, is_causal=True)
        assert torch.allclose(ours(x, src_mask=causal, is_causal=True), expected, atol=1e-5)

    model = CausalTransformer(32, max_len=20).train()
    assert not [m for m in model.modules() if type(m) is nn.Dropout]
    # Causal in training too: a later item does not change an earlier output.
    items, tokens = torch.randn(3, 20, 32), torch.ones(3, 20, dtype=torch.long)
    changed = items.clone()
    changed[:, 10:] = torch.randn(3, 10, 32)
    torch.manual_seed(1)
    a = model(items, tokens)
    torch.manual_seed(1)
    b = model(changed, tokens)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:])
