"""Where recmig's Hydra configs live, and composing them outside ``recmig train``."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.recmig_searchpath import RecmigSearchPathPlugin

CONFIG_DIR = str(files("recmig.conf"))


def sweep_group() -> str | None:
    """The running multirun's folder name (``${recmig_sweep_group:}`` in configs), so W&B puts
    all runs of one sweep in one group; None outside a multirun."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


OmegaConf.register_new_resolver("recmig_sweep_group", sweep_group, replace=True)


def optimisation_direction(mode: str) -> str:
    """A selection ``mode`` (max/min) as a sweeper's direction (Optuna: maximize/minimize)."""
    directions = {"max": "maximize", "min": "minimize"}
    if mode not in directions:
        raise ValueError(f"selection mode must be 'max' or 'min', got {mode!r}")
    return directions[mode]


OmegaConf.register_new_resolver("recmig_direction", optimisation_direction, replace=True)


def enable_plugin_configs() -> None:
    """Make installed plugins' configs visible to Hydra.

    Hydra finds ``hydra_plugins.recmig_searchpath`` by scanning the ``hydra_plugins`` namespace
    package, which works for regular installs but not through setuptools' editable-install
    finder; registering the class directly covers both (Hydra ignores a second registration).
    The same holds for ``hydra_plugins.recmig_launcher``, whose import also stores its
    ``hydra/launcher=recmig_parallel`` config.
    """
    from hydra_plugins.recmig_launcher import ParallelLauncher

    Plugins.instance().register(RecmigSearchPathPlugin)
    Plugins.instance().register(ParallelLauncher)


def compose_config(
    overrides: list[str], config_name: str = "train", *, with_hydra: bool = False
) -> DictConfig:
    """The config `recmig train <overrides>` would run (without Hydra's runtime fields);
    ``with_hydra`` keeps the ``hydra`` node too (launcher, sweeper), for checking it."""
    enable_plugin_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=with_hydra)
