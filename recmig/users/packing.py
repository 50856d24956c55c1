"""Sequence packing: several short right-padded windows share one row of a causal model.

A batch of next-item windows is mostly padding (on the default ML-1M scenario 43% of the
training positions, and a cold user's target history is BOS alone in a row of 50), and a
causal transformer spends the same work on a padding position as on a real one. Packing moves
the windows of a (B, L) batch into R <= B rows of the same length L, several windows end to
end in a row (best-fit decreasing bin packing), and gives the model what keeps each window on
its own: the position of each slot inside its window (position embeddings restart at 0) and a
block-diagonal causal attention mask (a slot attends to the earlier slots of its own window
only). Every real position then computes exactly what it computed in the padded batch, up to
the order of floating-point sums; only the padding work is gone.

Windows must be right-padded, their real tokens a prefix of the row (as the loaders build
them); :meth:`Packing.of` declines (returns None) a batch where that does not hold (e.g. with
``loader.item_mask_prob``, which blanks items inside a window) or where packing saves no row.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import torch


def best_fit_rows(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Bin packing, best-fit decreasing: each length (longest first) goes into the open row
    with the least room that still holds it, else a new row. Returns each item's row and
    offset in it, and the number of rows."""
    order = np.argsort(-lengths, kind="stable")
    row_of = np.empty(len(lengths), dtype=np.int64)
    offset_of = np.empty(len(lengths), dtype=np.int64)
    room: list[tuple[int, int]] = []  # (room left, row), sorted
    used: list[int] = []  # filled length per row
    for i in order.tolist():
        need = int(lengths[i])
        at = bisect.bisect_left(room, (need, -1))
        if at < len(room):
            left, row = room.pop(at)
            if left - need > 0:
                bisect.insort(room, (left - need, row))
        else:
            row = len(used)
            used.append(0)
            if capacity - need > 0:
                bisect.insort(room, (capacity - need, row))
        row_of[i], offset_of[i] = row, used[row]
        used[row] += need
    return row_of, offset_of, len(used)


@dataclass
class Packing:
    """Where each real position of a (B, L) batch sits in the (R, L) packed rows."""

    batch: int
    length: int
    source: torch.Tensor
    """(P,) flat indices (b * L + t) of the batch's real positions ..."""
    target: torch.Tensor
    """(P,) ... and the flat indices (r * L + s) of the slots they move to."""
    slots: torch.Tensor
    """(R * L,) for each packed slot the flat batch index it holds; B * L for an empty slot."""
    positions: torch.Tensor
    """(R, L) each slot's position inside its window (0 for an empty slot)."""
    blocked: torch.Tensor
    """(R, 1, L, L) bool, True where a query slot may not attend a key slot (another window,
    or a later position of its own); broadcasts over attention heads."""

    @classmethod
    def of(cls, tokens: torch.Tensor) -> Packing | None:
        """The packing of a (B, L) right-padded token batch (token 0 is padding); None when
        its windows are not prefixes of their rows or packing would not save a row."""
        batch, length = tokens.shape
        real = tokens != 0
        count = real.sum(1)
        steps = torch.arange(length, device=tokens.device)
        if batch < 2 or not torch.equal(real, steps < count.unsqueeze(1)):
            return None
        # A row with no token keeps its first position (padding), as the padded batch computes it.
        lengths = count.clamp_min(1)
        row_of, offset_of, rows = best_fit_rows(lengths.cpu().numpy(), length)
        if rows >= batch:
            return None
        device = tokens.device
        start = torch.from_numpy(row_of * length + offset_of).to(device)
        inside = steps < lengths.unsqueeze(1)  # (B, L) positions that move
        window = torch.arange(batch, device=device).unsqueeze(1).expand(-1, length)
        source = (window * length + steps)[inside]
        target = (start.unsqueeze(1) + steps)[inside]
        step_of = steps.expand(batch, -1)[inside]
        slots = torch.full((rows * length,), batch * length, dtype=torch.long, device=device)
        slots[target] = source
        positions = torch.zeros(rows * length, dtype=torch.long, device=device)
        positions[target] = step_of
        segment = torch.full((rows * length,), -1, dtype=torch.long, device=device)
        segment[target] = window[inside]
        positions, segment = positions.view(rows, length), segment.view(rows, length)
        # Empty slots form one segment of position-0 slots per row: they attend each other,
        # so no softmax row is empty, and never a real slot.
        blocked = (segment.unsqueeze(2) != segment.unsqueeze(1)) | (
            positions.unsqueeze(1) > positions.unsqueeze(2)
        )
        return cls(batch, length, source, target, slots, positions, blocked.unsqueeze(1))

    @property
    def rows(self) -> int:
        return self.positions.shape[0]

    def pack(self, values: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (R, L, D); empty slots are zeros (a padding item's vector)."""
        flat = values.reshape(self.batch * self.length, -1)
        flat = torch.cat([flat, flat.new_zeros(1, flat.shape[1])])
        return flat.index_select(0, self.slots).view(self.rows, self.length, -1)

    def unpack(self, values: torch.Tensor) -> torch.Tensor:
        """(R, L, D) -> (B, L, D); zeros at the batch's padding positions."""
        flat = values.reshape(self.rows * self.length, -1)
        out = flat.new_zeros(self.batch * self.length, flat.shape[1])
        out = out.index_copy(0, self.source, flat.index_select(0, self.target))
        return out.view(self.batch, self.length, -1)
