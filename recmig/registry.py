"""Strategy discovery through the ``recmig.strategies`` entry-point group.

Built-in strategies and third-party plugins register the same way (pyproject.toml):

    [project.entry-points."recmig.strategies"]
    my_strategy = "my_package.module:MyStrategy"
"""

from __future__ import annotations

from importlib.metadata import EntryPoint

from recmig.plugins import load_registered, registered
from recmig.strategy import Strategy

GROUP = "recmig.strategies"


def discover() -> dict[str, EntryPoint]:
    """Every registered strategy by name (not imported yet)."""
    return registered(GROUP)


def load_strategy(name: str) -> type[Strategy]:
    return load_registered(GROUP, name, Strategy, "strategy.name")
