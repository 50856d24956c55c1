"""The random number generators' states as plain tensors and numbers, for checkpoints.

A checkpoint must load with ``torch.load(..., weights_only=True)``: no numpy arrays or other
objects that need unpickling code, so numpy's key array travels as a tensor.
"""

from __future__ import annotations

import random

import numpy as np
import torch

RNG_KEY = "recmig_rng_states"
"""Where a checkpoint keeps them (beside Lightning's own entries)."""


def rng_states() -> dict:
    """The current states of Python's, numpy's and torch's (CPU and CUDA) global generators."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict) -> None:
    """Continue every generator from states :func:`rng_states` returned."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = states["numpy"]
    np.random.set_state(
        (
            numpy["name"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["gauss"],
        )
    )
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
