"""Where recmig keeps what it downloads and computes once."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$RECMIG_CACHE_DIR``, else ``$XDG_CACHE_HOME/recmig``, else ``~/.cache/recmig``."""
    explicit = os.environ.get("RECMIG_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "recmig"


def run_config_path(run_dir: str | Path) -> Path:
    """The Hydra config of a finished run folder; FileNotFoundError saying whether the path is
    missing or is not a run. Cheap (no heavy imports), so commands check it before loading."""
    run = Path(run_dir).expanduser()
    if not run.exists():
        raise FileNotFoundError(f"{run}: no such run folder (the path does not exist)")
    config = run / ".hydra" / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{run}: not a recmig run folder (no .hydra/config.yaml)")
    return config
