"""Item text encoded by a language model that is fine-tuned with adapters (peft) while training.

Only the adapter weights (LoRA on the attention projections, or IA3) and the projection to the
model width are trained; the language model's own weights stay frozen and are left out of
checkpoints (see ``TransferModule.on_save_checkpoint``).

Running the language model over the whole catalogue at every step would dominate training on
a CPU, so item vectors come from a cache that is recomputed efficiently as the adapters change:

- at every step, the items the batch predicts (at most ``grad_items`` of them, drawn at random)
  are re-encoded *with* gradients and written back into the cache;
- every other item uses its cached vector (no gradient) in the softmax;
- before every evaluation and at the start of training, ``refresh`` re-encodes the whole
  catalogue with the current adapters (``TransferStrategy.refresh``).
"""

from __future__ import annotations

import pandas as pd
import torch
from peft import IA3Config, LoraConfig, get_peft_model
from torch import nn

from recmig.dropout import use_fast_dropout
from recmig.encoders.item import ItemEncoder
from recmig.encoders.text import (
    AUTOCAST_DTYPES,
    DEFAULT_TEXT_MODEL,
    load_text_model,
    mean_pool,
    render_item_texts,
    resolve_precision,
)
from recmig.tokens import bos_token, is_item

METHODS = ("lora", "ia3")


def adapter_config(method: str, rank: int, alpha: int, dropout: float, target_modules: list[str]):
    """The peft config of one adapter method (BERT-style module names by default)."""
    if method == "lora":
        return LoraConfig(
            r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules)
        )
    if method == "ia3":
        # IA3 rescales keys, values and the feed-forward output; it has no rank or dropout.
        return IA3Config(
            target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"]
        )
    raise ValueError(f"encoder.method must be one of {METHODS}, got {method!r}")


def store_frozen_linears_in(model: nn.Module, dtype: torch.dtype | None) -> None:
    """Keep the frozen linear layers of ``model`` in the autocast ``dtype`` (None: leave them).
    Autocast casts a weight to that dtype at every call, and caches the cast only for weights
    that train: the language model's frozen weights were cast anew in every step, forward and
    backward (a sixth of the language model's step on the reference machine). Stored cast
    they give the same products; trained adapters stay fp32, and frozen weights are never
    checkpointed."""
    if dtype is None:
        return
    for module in model.modules():
        frozen = not any(p.requires_grad for p in module.parameters())
        if isinstance(module, nn.Linear) and frozen:
            module.to(dtype)


class AdaptedTextItemEncoder(ItemEncoder):
    def __init__(
        self,
        vocab_size: int,
        dim: int,
        items: pd.DataFrame,
        model: str = DEFAULT_TEXT_MODEL,
        template: str = "{title}. Genres: {genre}",
        max_length: int = 32,
        method: str = "lora",
        rank: int = 8,
        alpha: int = 16,
        dropout: float = 0.1,
        target_modules: tuple[str, ...] = ("query", "value"),
        grad_items: int = 64,
        batch_size: int = 256,
        precision: str = "fp32",
    ):
        """``precision``: what the language model's matrix products run in, in training and
        when the catalogue is re-encoded (autocast: weights, adapters and their gradients stay
        fp32); as :class:`~recmig.encoders.item.TextItemEncoder`'s option."""
        super().__init__(vocab_size, dim)
        tokenizer, base = load_text_model(model, torch.device("cpu"))
        self.precision = resolve_precision(precision, torch.device("cpu"))
        tokens = tokenizer(
            render_item_texts(items, template),
            padding="longest",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        self.register_buffer("input_ids", tokens["input_ids"], persistent=False)
        self.register_buffer("attention_mask", tokens["attention_mask"], persistent=False)
        self.lm = use_fast_dropout(
            get_peft_model(base, adapter_config(method, rank, alpha, dropout, list(target_modules)))
        )
        store_frozen_linears_in(self.lm, AUTOCAST_DTYPES.get(self.precision))
        self.grad_items = grad_items
        self.batch_size = batch_size
        hidden = base.config.hidden_size
        self.register_buffer("cache", torch.zeros(len(items), hidden), persistent=False)
        self.refresh()
        # Fixed standardisation (from the pretrained model's features), as TextItemEncoder.
        self.register_buffer("shift", self.cache.mean(0), persistent=False)
        self.register_buffer("scale", self.cache.std(0).clamp_min(1e-6), persistent=False)
        self.projection = nn.Linear(hidden, dim)

    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        """(R,) item rows (0-based) -> (R, H) mean-pooled language-model features."""
        mask = self.attention_mask[rows]
        width = int(mask.sum(1).max())  # drop all-padding columns: shorter sequences, less work
        device = self.input_ids.device.type
        dtype = AUTOCAST_DTYPES.get(self.precision)
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            out = self.lm(input_ids=self.input_ids[rows, :width], attention_mask=mask[:, :width])
        return mean_pool(out.last_hidden_state.float(), mask[:, :width])

    @torch.no_grad()
    def refresh(self) -> None:
        """Re-encode every item with the current adapters (eval mode: no adapter dropout)."""
        super().refresh()
        was_training = self.lm.training
        self.lm.eval()
        for start in range(0, len(self.cache), self.batch_size):
            rows = torch.arange(
                start, min(start + self.batch_size, len(self.cache)), device=self.cache.device
            )
            self.cache[rows] = self.encode(rows)
        self.lm.train(was_training)

    def item_vectors(self, active: torch.Tensor | None) -> torch.Tensor:
        features = self.cache
        if self.training and active is not None and torch.is_grad_enabled():
            items = active[is_item(active, bos_token(self.vocab_size))].unique()
            rows = items[torch.randperm(len(items), device=items.device)[: self.grad_items]] - 1
            if len(rows):
                fresh = self.encode(rows)
                self.cache[rows] = fresh.detach()
                features = features.index_copy(0, rows, fresh)
        return self.projection((features - self.shift) / self.scale)
