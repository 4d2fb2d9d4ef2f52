"""SQLite for the reference gallery: one connection per thread, WAL, explicit write transactions."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    filename TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    processing_status TEXT NOT NULL DEFAULT 'pending',
    faces_processed_at TEXT
);
CREATE INDEX IF NOT EXISTS photos_user_created ON photos (user_id, created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS ml_results (
    photo_id INTEGER NOT NULL REFERENCES photos (id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    modality TEXT NOT NULL,
    dim INTEGER NOT NULL,
    embedding BLOB,
    ml_result TEXT,
    status TEXT NOT NULL,
    error TEXT,
    caption TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (photo_id, model, modality)
);
CREATE INDEX IF NOT EXISTS ml_results_model ON ml_results (model, modality);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    photo_id INTEGER NOT NULL REFERENCES photos (id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    dim INTEGER NOT NULL,
    embedding BLOB NOT NULL,
    bbox TEXT NOT NULL,
    score REAL,
    landmarks TEXT
);
CREATE INDEX IF NOT EXISTS faces_photo ON faces (photo_id);
CREATE TABLE IF NOT EXISTS text_queries (
    request_id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    dim INTEGER NOT NULL,
    embedding BLOB NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS albums (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS album_photos (
    album_id INTEGER NOT NULL REFERENCES albums (id) ON DELETE CASCADE,
    photo_id INTEGER NOT NULL REFERENCES photos (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    PRIMARY KEY (album_id, photo_id)
);
"""
"""The whole schema; `CREATE ... IF NOT EXISTS` so opening an existing database is a no-op."""

BUSY_TIMEOUT_MS = 5000
"""How long a writer waits for another thread's write lock before giving up with `database is locked`."""


class Database:
    """Hands each thread its own connection to one SQLite file; all of them closed by `close()`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._closed = False
        self.connection().executescript(SCHEMA)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        with self._guard:
            if self._closed:
                raise sqlite3.ProgrammingError(f"database {self.path} is closed")
            # isolation_level=None: we issue BEGIN ourselves. check_same_thread=False only so that
            # close() may run on another thread; each connection is otherwise used by its own thread.
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
            self._all.append(conn)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._local.conn = conn
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; BEGIN IMMEDIATE takes the write lock up front so upgrades never deadlock."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several SELECTs see one consistent snapshot."""
        conn = self.connection()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def journal_mode(self) -> str:
        """The journal mode SQLite really uses (tests assert it is `wal`)."""
        return str(self.connection().execute("PRAGMA journal_mode").fetchone()[0])

    def close(self) -> None:
        """Close every thread's connection; later use raises."""
        with self._guard:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


def utc_now() -> str:
    """Timestamps as ISO-8601 UTC with microseconds: they sort as strings."""
    return datetime.now(UTC).isoformat(timespec="microseconds")
