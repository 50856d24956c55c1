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
