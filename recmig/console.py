"""What ``recmig train`` prints: the run folder, the scenario, the progress bar, the metric table,
where the results went, and warnings that matter. Nothing twice, no advertising.

Lightning gives its loggers a console handler of their own when it is imported before logging is
configured, and Hydra then adds its own to the root logger: every Lightning line came out twice.
Lightning's INFO lines (devices found, fit stopped) go to the run's log file only; its warnings
still reach the console. Lines that say nothing about the run (a product tip, the hint to use
``srun`` for single-device jobs started by a SLURM launcher) are dropped everywhere.
"""

from __future__ import annotations

import logging
import re
import warnings

LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
NOISE = re.compile(r"Tip: For seamless")  # Lightning's advertisement for its cloud logger
"""Messages from Lightning's loggers dropped from every handler."""


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not NOISE.search(record.getMessage())


class _FileOnlyInfo(logging.Filter):
    """On a console handler: Lightning's records below WARNING stay in the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith("lightning")


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler
    )


def quiet_console() -> None:
    """Route Lightning's output through the root logger's handlers (Hydra's console and run log)
    once, keep its INFO lines off the console, and drop the lines in ``NOISE``. Idempotent."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if _is_console(h)]:
            logger.removeHandler(handler)
        logger.propagate = True
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _DropNoise) for f in handler.filters):
            handler.addFilter(_DropNoise())
        if _is_console(handler) and not any(isinstance(f, _FileOnlyInfo) for f in handler.filters):
            handler.addFilter(_FileOnlyInfo())
    # Jobs a SLURM launcher (submitit) starts are single-device runs: Lightning's advice to start
    # them with srun does not apply, and it would print on every machine where srun exists.
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system")
