"""How a user-fixable error reaches the terminal: one line, ``recmig: error: ...``, exit 2.

Errors a user can fix (a misspelled option, a missing file, a bad value, no network) are
``ValueError`` or ``FileNotFoundError`` naming the option, field or file, or a ``DownloadError``
naming the URL; everything else is a bug and keeps its traceback. Every command (``recmig
train``, ``analyse``, ``stream``, ...) reports them alike.
"""

from __future__ import annotations

import sys


class DownloadError(OSError):
    """A download that failed or timed out; the message names what was fetched and from where.

    An OSError, so code that falls back on network trouble (GroupLens -> PyPI) still catches it,
    but only this kind of OSError is the user's to fix (a network, a proxy): a disk error from
    elsewhere keeps its traceback."""


USER_ERRORS = (ValueError, FileNotFoundError, DownloadError)


def one_line(err: BaseException) -> str:
    """The error's message on one line (Hydra and pandas messages span several)."""
    text = str(err).strip() or type(err).__name__
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def exit_with_error(err: BaseException | str) -> None:
    """End a command the way every user error ends: one ``recmig: error:`` line, exit 2
    (``err``: the error, or a message already composed from one)."""
    print(f"recmig: error: {err if isinstance(err, str) else one_line(err)}", file=sys.stderr)
    sys.exit(2)


def user_error(err: BaseException) -> BaseException | None:
    """The user-facing cause inside Hydra's InstantiationException wrappers, if any."""
    from hydra.errors import InstantiationException

    wrapped = False
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err, wrapped = err.__cause__, True
    if isinstance(err, InstantiationException) or (wrapped and isinstance(err, TypeError)):
        return err  # a bad key in a `_target_` config: the message names key and target
    return err if isinstance(err, USER_ERRORS) else None
