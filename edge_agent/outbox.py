"""The store-and-forward outbox: every outgoing message is on disk before it is sent.

A SQLite database in WAL mode with full sync: a message `put` survives the agent being killed and
the device losing power, and stays until the broker acknowledges it (`ack`). The outbox is bounded
by message count and bytes; when full, the oldest messages go first and are counted as dropped
(the count survives restarts too). It also hands out the device's sequence numbers, persisted, so
they only ever grow, across reboots, for every message kind. They are reserved on disk a block at
a time (one synced write per `SEQ_BLOCK` messages instead of one per message); a crash skips the
rest of its block, which leaves a gap but never a repeat.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edge_agent.exceptions import AgentError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

SEQ_BLOCK = 256
"""Sequence numbers reserved per disk write."""


class OutboxError(AgentError):
    """The outbox file cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A stored message waiting for the broker's acknowledgement."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float


class Outbox:
    """A bounded, durable FIFO of MQTT messages; safe to share between threads."""

    def __init__(
        self, path: Path, *, max_messages: int, max_bytes: int, durable: bool = True
    ) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise OutboxError("the outbox needs room for at least one message")
        self.path = path
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        # Re-entrant: next_seq reserves a block inside a transaction while holding it.
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL syncs every commit (survives power loss); NORMAL only survives process death,
            # which is enough for simulated devices sharing one disk.
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
            self._resync()
            self._seq_next = self._seq_limit = self._counter("seq")
        except (OSError, sqlite3.Error) as e:
            raise OutboxError(f"cannot open the outbox {path}: {e}") from e

    def _resync(self) -> None:
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(topic)), 0) FROM messages"
        ).fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; any SQLite error rolls back and is wrapped."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._resync()  # counts set inside the failed transaction are void
                raise OutboxError(f"cannot {doing} in {self.path}: {e}") from e

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def next_seq(self) -> int:
        """The next sequence number of this device (its block is on disk before it is returned)."""
        with self._lock:
            if self._seq_next >= self._seq_limit:
                limit = self._seq_next + SEQ_BLOCK
                with self._transaction("reserve sequence numbers") as db:
                    db.execute(
                        "INSERT INTO counters(name, value) VALUES ('seq', ?) "
                        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                        (limit,),
                    )
                self._seq_limit = limit
            value = self._seq_next
            self._seq_next += 1
        return value

    def put(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Store a message (committed to disk on return); return its id."""
        size = len(payload) + len(topic.encode())
        if size > self.max_bytes:
            raise OutboxError(f"a {size}-byte message cannot fit an outbox of {self.max_bytes}")
        with self._transaction("store a message") as db:
            cursor = db.execute(
                "INSERT INTO messages(topic, payload, qos, retain, created) VALUES (?, ?, ?, ?, ?)",
                (topic, payload, qos, int(retain), time.time()),
            )
            count, total = self._count + 1, self._bytes + size
            dropped = 0
            while count > self.max_messages or total > self.max_bytes:
                oldest = db.execute(
                    "SELECT id, LENGTH(payload) + LENGTH(topic) FROM messages ORDER BY id LIMIT 1"
                ).fetchone()
                db.execute("DELETE FROM messages WHERE id = ?", (oldest[0],))
                count, total, dropped = count - 1, total - int(oldest[1]), dropped + 1
            if dropped:
                db.execute(
                    "INSERT INTO counters(name, value) VALUES ('dropped', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (dropped,),
                )
            self._count, self._bytes = count, total
        return int(cursor.lastrowid or 0)

    def pending(self, limit: int, *, after: int = 0) -> list[OutboxMessage]:
        """Up to `limit` stored messages with ids above `after`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, created FROM messages WHERE id > ? "
                "ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
        return [
            OutboxMessage(int(r[0]), r[1], bytes(r[2]), int(r[3]), bool(r[4]), float(r[5]))
            for r in rows
        ]

    def ack(self, ids: Iterable[int]) -> int:
        """Delete acknowledged messages; return how many were still stored."""
        wanted = list(ids)
        if not wanted:
            return 0
        marks = ",".join("?" * len(wanted))
        with self._transaction("acknowledge messages") as db:
            size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(topic)), 0) "  # noqa: S608
                f"FROM messages WHERE id IN ({marks})",
                wanted,
            ).fetchone()
            db.execute(f"DELETE FROM messages WHERE id IN ({marks})", wanted)  # noqa: S608
            self._count -= int(size[0])
            self._bytes -= int(size[1])
        return int(size[0])

    @property
    def depth(self) -> int:
        """Messages waiting."""
        return self._count

    @property
    def size_bytes(self) -> int:
        """Bytes of the messages waiting (payload and topic)."""
        return self._bytes

    @property
    def dropped(self) -> int:
        """Messages dropped because the outbox was full, since it was created."""
        with self._lock:
            return self._counter("dropped")

    def close(self) -> None:
        """Close the database (every stored message is already on disk)."""
        with self._lock:
            self._db.close()
