"""Strategy discovery through the ``recmig.strategies`` entry-point group.

Built-in strategies and third-party plugins register the same way (pyproject.toml):

    [project.entry-points."recmig.strategies"]
    my_strategy = "my_package.module:MyStrategy"
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from recmig.strategy import TransferStrategy

GROUP = "recmig.strategies"


def discover() -> dict[str, EntryPoint]:
    """Every registered strategy by name (not imported yet)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_strategy(name: str) -> type[TransferStrategy]:
    found = discover()
    if name not in found:
        raise ValueError(
            f"strategy.name={name!r} is not a registered strategy; known: {sorted(found)} "
            f"(entry-point group {GROUP!r})"
        )
    cls = found[name].load()
    if not (isinstance(cls, type) and issubclass(cls, TransferStrategy)):
        raise TypeError(f"entry point {found[name].value!r} is not a TransferStrategy subclass")
    return cls
