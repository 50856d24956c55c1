"""Hydra search-path plugin: installed recmig plugins add their configs to recmig's groups.

For every strategy registered under the ``recmig.strategies`` entry-point group by a package
other than recmig itself, the sibling package ``<top-level package>.conf`` (when it exists) is
appended to Hydra's search path, so its ``strategy/<name>.yaml`` becomes a ``strategy=<name>``
option after a plain ``pip install`` of the plugin.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import entry_points

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

BUILTIN = "recmig_strategies"


def plugin_config_packages() -> list[str]:
    """``<package>.conf`` of every installed strategy plugin that ships one, sorted."""
    packages = set()
    for entry in entry_points(group="recmig.strategies"):
        top = entry.value.split(":")[0].split(".")[0]
        if top == BUILTIN:
            continue
        try:
            if importlib.util.find_spec(f"{top}.conf") is not None:
                packages.add(f"{top}.conf")
        except (
            ImportError
        ):  # a broken plugin must not break every run; `recmig strategies` says why
            continue
    return sorted(packages)


class RecmigSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for package in plugin_config_packages():
            search_path.append(provider=f"recmig-plugin:{package}", path=f"pkg://{package}")
