"""The journal of acknowledged updates: what ``update`` / ``POST /update`` folded in survives a
restart or a crash.

An append-only SQLite table (the standard library's ``sqlite3``) in WAL mode with
``synchronous=FULL``: an update is committed to disk before the recommender returns (and so
before the service answers 200), and a process killed at any moment leaves every committed row
readable. Rows are never changed or deleted; a user's history is the run's history of that user
followed by their rows in the order they were acknowledged, which is exactly how the live
recommender built it, so the lists after a restart are the lists before it.

The journal records which run it belongs to (the run's composed config, hashed): opened beside
another run, whose items and users differ, it is refused with an error naming both.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

JOURNAL_NAME = "updates.sqlite"
"""The journal's file name beside a run (``recmig serve``'s default)."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- acknowledgement order
    user TEXT NOT NULL,
    item_id TEXT NOT NULL,
    timestamp REAL,                          -- NULL: appended after the user's last event
    rating REAL,                             -- NULL: no rating
    acknowledged_at REAL NOT NULL            -- unix time the update was committed
);
CREATE INDEX IF NOT EXISTS updates_by_user ON updates (user, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Update:
    """One acknowledged update (``None``: not given)."""

    user: str
    item_id: str
    timestamp: float | None = None
    rating: float | None = None


def run_fingerprint(config_text: str) -> str:
    """The identity a journal keeps of its run: a hash of the run's composed config."""
    return hashlib.sha256(config_text.encode("utf-8")).hexdigest()[:16]


class UpdateJournal:
    """Append-only store of acknowledged updates (module docstring); thread safe."""

    def __init__(self, path: str | Path, run: str | None = None):
        """Open (or create) the journal at ``path``. ``run``: the run's fingerprint
        (:func:`run_fingerprint`); a journal written for another run is refused."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # committed = on disk, WAL included
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise ValueError(
                f"update journal {self.path}: not a readable SQLite file ({err})"
            ) from err
        if run is not None:
            stored = self.db.execute("SELECT value FROM meta WHERE key = 'run'").fetchone()
            if stored is None:
                self.db.execute("INSERT INTO meta VALUES ('run', ?)", (run,))
            elif stored[0] != run:
                raise ValueError(
                    f"update journal {self.path} belongs to another run (fingerprint "
                    f"{stored[0]}, this run's is {run}): give this run its own journal path"
                )

    def append(self, update: Update) -> None:
        """Commit one update to disk; returns only once it is durable."""
        with self.lock:
            self.db.execute(
                "INSERT INTO updates (user, item_id, timestamp, rating, acknowledged_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (update.user, update.item_id, update.timestamp, update.rating, time.time()),
            )

    def of_user(self, user: str) -> list[Update]:
        """Every update of ``user``, in acknowledgement order."""
        with self.lock:
            rows = self.db.execute(
                "SELECT user, item_id, timestamp, rating FROM updates WHERE user = ? ORDER BY seq",
                (user,),
            ).fetchall()
        return [Update(*row) for row in rows]

    def users(self) -> set[str]:
        """Every user with at least one update."""
        with self.lock:
            return {row[0] for row in self.db.execute("SELECT DISTINCT user FROM updates")}

    def item_ids(self) -> set[str]:
        """Every item id an update names (checked against the run when the journal opens)."""
        with self.lock:
            return {row[0] for row in self.db.execute("SELECT DISTINCT item_id FROM updates")}

    def __len__(self) -> int:
        with self.lock:
            return int(self.db.execute("SELECT COUNT(*) FROM updates").fetchone()[0])

    def size_bytes(self) -> int:
        """Bytes on disk: the database and its write-ahead log."""
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        return sum(f.stat().st_size for f in files if f.exists())

    def close(self) -> None:
        with self.lock:
            self.db.close()
