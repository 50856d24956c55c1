"""Lightning's W&B logger with what a recmig run needs from it: quiet, and resumable.

- **Quiet.** W&B prints a header (version, offline notice, a ``wandb leet`` tip) and a footer
  (a sync hint in raw ANSI colours when the output is not a terminal), and Lightning passes an
  ``anonymous`` setting that W&B warns is deprecated. W&B's console output is off
  (``settings=wandb.Settings(silent=True)``; its errors still raise): the run's own last line
  says where its results, W&B's ``wandb/`` folder among them, were written, and
  ``wandb sync <run>/wandb/offline-run-*`` uploads an offline run.
- **Resumable.** ``resume=<checkpoint>`` continues the W&B run of the run being resumed (same
  run id) instead of starting a second one beside it, whether the resumed run writes into its old
  folder or a new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

WANDB_FOLDER = "wandb"
"""W&B's folder under ``save_dir``: ``offline-run-<time>-<id>`` or ``run-<time>-<id>`` inside."""


def resumed_run_id(save_dir: str | Path | None, resume: str | Path | None) -> str | None:
    """The W&B run id a resumed run continues; None for a run that is not resumed.

    A resumed run's W&B run is found where it was written: in this run's own folder (resumed in
    place) or in the folder of the run the checkpoint belongs to (``<run>/checkpoints/x.ckpt``).
    The newest one wins when a folder holds several."""
    if not resume:
        return None
    folders = [Path(save_dir)] if save_dir else []
    folders.append(Path(resume).resolve().parent.parent)
    for folder in folders:
        runs = sorted((folder / WANDB_FOLDER).glob("*run-*-*"), key=lambda p: p.name.split("-")[-2])
        runs = [r for r in runs if r.is_dir() and not r.is_symlink()]
        if runs:
            return runs[-1].name.rsplit("-", 1)[1]
    return None


class WandbLogger(LightningWandbLogger):
    """``lightning.pytorch.loggers.WandbLogger``, quiet and resumable (module docstring).

    ``resume_from`` is the run's ``resume`` option (the checkpoint it continues, or None); every
    other argument is Lightning's (and through it ``wandb.init``'s): an explicit ``id`` or
    ``settings`` wins over what this class would choose."""

    def __init__(self, *, resume_from: str | None = None, **kwargs: Any) -> None:
        import wandb

        if kwargs.get("id") is None and kwargs.get("version") is None:
            kwargs["id"] = resumed_run_id(kwargs.get("save_dir"), resume_from)
        kwargs.setdefault("settings", wandb.Settings(silent=True))
        super().__init__(**kwargs)
        # Lightning always passes anonymous=None, which W&B warns about on every run.
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
