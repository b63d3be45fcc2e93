"""The SQLCipher database: opening with a raw key, migrations, and the one writer thread.

All access goes through one thread that owns the connection. Work is submitted as a function
of the connection; the thread runs each function inside its own SAVEPOINT and commits a batch
of them at once (group commit), because one commit per row costs ~1.9x under SQLCipher. A
function that raises is rolled back alone; its caller gets the exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import sqlcipher3

log = logging.getLogger(__name__)

DB_FILE = "vigil.db"
T = TypeVar("T")
Connection = sqlcipher3.Connection
MAX_BATCH = 256


class StoreError(Exception):
    """The store cannot be opened or used; the message is one sentence without secrets."""


def _migrations() -> list[tuple[int, str]]:
    out = []
    for entry in resources.files("storage.schema").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            out.append((int(name[:3]), entry.read_text("utf-8")))
    return sorted(out)


def _keyed(target: str, key: bytes, *, uri: bool = False) -> Connection:
    conn = sqlcipher3.connect(target, isolation_level=None, check_same_thread=False, uri=uri)
    # A raw 256-bit key skips SQLCipher's own PBKDF2: stretching happened once, in the key slot.
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    return conn


def verify(path: Path, key: bytes) -> None:
    """Check key and every page's HMAC without writing anything (not even -wal/-shm files):
    a damaged store must fail with one sentence and be left exactly as it was."""
    conn = _keyed(f"{path.resolve().as_uri()}?immutable=1", key, uri=True)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        problems = conn.execute("PRAGMA cipher_integrity_check").fetchall()
    except sqlcipher3.DatabaseError:
        raise StoreError(
            "The database does not open with this key: it is damaged or belongs to other key slots."
        ) from None
    finally:
        conn.close()
    if problems:
        raise StoreError("The database is damaged; restore it from a backup (`vigil restore`).")


def _open_connection(path: Path, key: bytes) -> Connection:
    conn = _keyed(str(path), key)
    if os.environ.get("VIGIL_MEMORY_SECURITY") == "1":
        # Wipes SQLite's own allocations on free. Off by default: it multiplied the cost of
        # our write workload ~4x in bench/storage.py, and Python's copies of query results are
        # not wiped anyway, so it narrows the live-seizure window less than it costs.
        conn.execute("PRAGMA cipher_memory_security = ON")
    for pragma in (
        "journal_mode = WAL",
        "synchronous = FULL",  # "nothing lost" includes power loss
        "secure_delete = ON",
        "temp_store = MEMORY",  # no plaintext temp files
        "foreign_keys = ON",
        "busy_timeout = 5000",
    ):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def create_database_file(path: Path) -> None:
    """Pre-create the file 0600; SQLite gives -wal and -shm the same mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


def migrate(conn: Connection) -> int:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for version, sql in _migrations():
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split_sql(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        current = version
    return current


def _split_sql(script: str) -> list[str]:
    """Statements of a migration; complete_statement keeps triggers and strings intact."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        if not buf and line.strip().startswith("--"):
            continue
        buf += line
        if sqlcipher3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)


_STOP = object()


def _fail(future: concurrent.futures.Future[Any], exc: BaseException) -> None:
    if not future.done():  # a cancelled caller must not break the others' answers
        future.set_exception(exc)


class Database:
    """One connection, one writer thread; `await db.run(fn, ...)` runs fn(conn, ...) in a txn."""

    def __init__(self, conn: Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._writer, name="vigil-db-writer", daemon=True)
        self._thread.start()
        self.commits = 0

    @classmethod
    def open(cls, data_dir: Path, key: bytes, *, create: bool = False) -> Database:
        path = data_dir / DB_FILE
        if create:
            create_database_file(path)
        elif not path.exists():
            raise StoreError(f"No database in {data_dir}: run `vigil init` first.")
        else:
            verify(path, key)
        conn = _open_connection(path, key)
        try:
            migrate(conn)
        except sqlcipher3.DatabaseError:
            conn.close()
            raise StoreError("The database is damaged: schema migration failed.") from None
        return cls(conn, path)

    # -- running work -------------------------------------------------------------------

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        job = _Job(fn, args)
        self._queue.put(job)
        return job.future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self.submit(fn, *args))

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return self.submit(fn, *args).result()

    def _writer(self) -> None:
        conn = self._conn
        while True:  # nothing may end this loop but _STOP: callers would wait forever
            item = self._queue.get()
            if item is _STOP:
                break
            batch: list[_Job] = [item]
            stop_after = False
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop_after = True
                    break
                batch.append(nxt)
            try:
                self._run_batch(conn, batch)
            except BaseException as exc:  # last resort: fail the batch, keep the thread
                log.error("writer batch failed: %s", type(exc).__name__)
                for job in batch:
                    if not job.future.done():
                        _fail(job.future, StoreError("the database refused the write"))
            if stop_after:
                break
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlcipher3.Error:
            log.warning("checkpoint at close failed")
        conn.close()

    def _run_batch(self, conn: Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlcipher3.Error as exc:
            for job in batch:
                _fail(job.future, StoreError(f"database unavailable: {type(exc).__name__}"))
            return
        for job in batch:
            conn.execute("SAVEPOINT job")
            try:
                result = job.fn(conn, *job.args)
            except BaseException as exc:
                try:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                except sqlcipher3.Error:
                    # The transaction itself is gone (I/O error, corruption): fail them all.
                    with contextlib.suppress(sqlcipher3.Error):
                        conn.execute("ROLLBACK")
                    for j in batch:
                        if not j.future.done() and j is not job:
                            _fail(j.future, StoreError("the database refused the write"))
                    _fail(job.future, exc)
                    return
                outcomes.append((job, None, exc))
            else:
                conn.execute("RELEASE job")
                outcomes.append((job, result, None))
        try:
            conn.execute("COMMIT")
            self.commits += 1
        except sqlcipher3.Error as exc:
            with contextlib.suppress(sqlcipher3.Error):
                conn.execute("ROLLBACK")
            log.error("commit failed: %s", type(exc).__name__)
            for job in batch:
                _fail(job.future, StoreError("the database refused the write"))
            return
        for job, result, error in outcomes:
            if job.future.done():  # the caller gave up (cancelled); the write stands
                continue
            if error is None:
                job.future.set_result(result)
            else:
                _fail(job.future, error)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
