"""Loading a component that registers through an entry-point group (strategies, objectives).

Built-in components and third-party plugins register the same way in their pyproject.toml,
so a plugin is found exactly like a built-in one.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points


def registered(group: str) -> dict[str, EntryPoint]:
    """Every component registered in ``group``, by name (not imported yet)."""
    return {ep.name: ep for ep in entry_points(group=group)}


def load_registered(group: str, name: str, base: type, option: str) -> type:
    """The class registered as ``name`` in ``group``, checked to subclass ``base``; an unknown
    name is a ValueError naming ``option`` (the config key that chose it) and the known ones."""
    found = registered(group)
    if name not in found:
        raise ValueError(
            f"{option}={name!r} is not registered; known: {sorted(found)} "
            f"(entry-point group {group!r})"
        )
    cls = found[name].load()
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"entry point {found[name].value!r} is not a {base.__name__} subclass")
    return cls
