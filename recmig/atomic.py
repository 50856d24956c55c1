"""The one way recmig writes a file: to a temporary file beside it, then renamed onto it.

A rename within one folder is atomic, so a reader (a report over a running sweep, a second
run sharing a cache) sees the old file or the new one, never a half-written one, and a crash
or Ctrl-C mid-write leaves what was there before. The temporary name is unique per writer, so
two processes writing the same path do not clobber each other's partial file; the last
rename wins.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

FILE_MODE = 0o644
"""Results and caches may be shared between users; mkstemp alone would make them 0600."""


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` writes the content to the path it is given; that file then replaces
    ``path``. Nothing is left behind when ``write`` raises. (``write`` must not infer the
    format from the file name: the temporary one ends in ``.tmp``.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, payload: dict) -> None:
    """``payload`` as indented JSON with sorted keys (stable diffs of committed results)."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_csv_atomic(path: str | Path, frame, **options) -> None:
    """A pandas table as CSV (``options`` go to ``DataFrame.to_csv``)."""
    write_atomic(path, lambda tmp: frame.to_csv(tmp, **options))


def pyplot():
    """matplotlib's pyplot drawing to files only (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | Path, dpi: int = 120) -> None:
    """A matplotlib figure in the format its file name says (``.png``, ``.pdf``, ...)."""
    path = Path(path)
    write_atomic(path, lambda tmp: figure.savefig(tmp, format=path.suffix[1:], dpi=dpi))


DIRECTORY_MODE = 0o755
"""mkdtemp makes folders 0700; a shared cache must stay readable."""


def write_directory_atomic(
    path: str | Path, write: Callable[[Path], object], keep_existing: Callable[[], bool]
) -> None:
    """``write(tmp)`` fills a fresh folder beside ``path`` that then replaces it, so a reader
    sees a complete folder or none. A stale folder at ``path`` is removed first; when the final
    rename fails because another writer put a folder there in between, ``keep_existing()``
    says whether that one is complete (then it stays and ours is dropped)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        write(tmp)
        tmp.chmod(DIRECTORY_MODE)
        if path.exists():
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)
        except OSError:
            if not keep_existing():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
