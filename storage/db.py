"""The SQLCipher database: opening with a raw key, migrations, and the one writer thread.

All access goes through one thread that owns the connection. Work is submitted as a function
of the connection; the thread runs each function inside its own SAVEPOINT and commits a batch
of them at once (group commit), because one commit per row costs ~1.9x under SQLCipher. A
function that raises is rolled back alone; its caller gets the exception.

Blanked means gone (THREATS rule 12). SQLite in WAL mode writes every changed page to the
`-wal` file first; the page as it was before a scrub stays there until a checkpoint copies the
new version home and the log is reset. A repository that erases something (a live report copy
blanked, a draft or a member deleted) calls `scrubbed(conn)` inside its transaction; right after
that batch commits, the writer runs `PRAGMA wal_checkpoint(TRUNCATE)`, so the old page
versions are overwritten in the database file (`secure_delete` zeroes freed space there) and the
log is cut to 0 bytes. `journal_size_limit` bounds what an ordinary checkpoint leaves behind.
Truncation hands the log's blocks back to the filesystem; the disk itself may keep them until
they are reused, which is why the data dir belongs on an encrypted disk (docs/deploy.md).

What unlock refuses (THREATS rule 4, issue 13 item 4), each without writing a byte:

* a 0-byte database file (SQLite would happily treat it as a new, empty database, and Vigil
  would start a fresh network beside the old key slots);
* a `-wal` file in which a frame of the current log generation fails its checksum while a
  commit follows it: SQLite would silently stop reading the log at the damage and roll back
  every committed transaction after it. Damage inside the very last transaction of the log
  cannot be told from a write torn by a power cut (which was never acknowledged) and is left
  to SQLite's own recovery;
* a page whose HMAC does not match (`PRAGMA cipher_integrity_check`).
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

from storage.errors import (  # re-exported: callers import the store's errors from here
    DAMAGED,
    EMPTY,
    WAL_DAMAGED,
    WRONG_KEY,
    DiskFull,
    StoreError,
    is_disk_full,
)
from storage.integrity import (
    WAL_SUFFIX,
    check_files,
    check_wal,
    missing_companions,
    remove_leftover_companions,
)

log = logging.getLogger(__name__)

__all__ = [
    "DAMAGED", "EMPTY", "WAL_DAMAGED", "WAL_SUFFIX", "WRONG_KEY", "DiskFull", "StoreError",
    "check_files", "check_wal", "is_disk_full", "missing_companions",
    "remove_leftover_companions",
]  # fmt: skip

DB_FILE = "vigil.db"
T = TypeVar("T")
Connection = sqlcipher3.Connection
MAX_BATCH = 256
JOURNAL_SIZE_LIMIT = 1 << 20  # bytes of -wal an ordinary checkpoint may leave behind
SCRUB_BUSY_MS = 200  # how long a scrub checkpoint waits for a reader (a running backup)

# --- keyed connections ---------------------------------------------------------------------


def connect_keyed(
    target: str | Path, key: bytes, *, uri: bool = False, busy_ms: int | None = None
) -> Connection:
    """The one way Vigil opens SQLCipher. A raw 256-bit key skips SQLCipher's own PBKDF2:
    stretching happened once, in the key slot (Argon2id)."""
    if len(key) != 32:
        raise ValueError("a database key is 32 bytes")
    conn = sqlcipher3.connect(str(target), isolation_level=None, check_same_thread=False, uri=uri)
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    conn.execute("PRAGMA temp_store = MEMORY")  # no plaintext temp files
    if busy_ms is not None:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
    return conn


# --- scrubs ----------------------------------------------------------------------------------

# ids of connections whose current transaction erased something. Connections do not take
# weak references, so the id is the handle; the owning Database drops it when it closes.
_scrubbed: set[int] = set()


def scrubbed(conn: Connection) -> None:
    """Call inside a transaction that erased something: once it commits, the writer folds the
    WAL into the database and truncates it, so no old page version survives in the log."""
    _scrubbed.add(id(conn))


def checkpoint_truncate(conn: Connection) -> bool:
    """Fold the whole WAL into the database and cut it to 0 bytes. False when a reader kept
    part of it (the caller tries again after its next commit)."""
    row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return row is not None and row[0] == 0


def _migrations() -> list[tuple[int, str]]:
    out = []
    for entry in resources.files("storage.schema").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            out.append((int(name[:3]), entry.read_text("utf-8")))
    return sorted(out)


# --- checking a store without touching it ---------------------------------------------------


def verify(path: Path, key: bytes, *, peek: tuple[str, ...] = ()) -> dict[str, str]:
    """Check key, log and every page's HMAC without writing anything (not even -wal/-shm
    files): a damaged store must fail with one sentence and be left exactly as it was.
    Returns the `settings` rows named in `peek` (read from the same untouched snapshot)."""
    check_files(path)
    # immutable=1: SQLite opens no -wal/-shm and never writes. The log was checked above.
    conn = connect_keyed(f"{path.resolve().as_uri()}?immutable=1", key, uri=True)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        problems = conn.execute("PRAGMA cipher_integrity_check").fetchall()
        found: dict[str, str] = {}
        if peek and _has_settings(conn):
            marks = ",".join("?" * len(peek))
            found = dict(
                conn.execute(f"SELECT key, value FROM settings WHERE key IN ({marks})", peek)
            )
    except sqlcipher3.DatabaseError:
        raise StoreError(WRONG_KEY) from None
    finally:
        conn.close()
    if problems:
        raise StoreError(DAMAGED)
    return found


def _has_settings(conn: Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'settings'"
    ).fetchone()
    return row is not None


def _open_connection(path: Path, key: bytes) -> Connection:
    conn = connect_keyed(path, key)
    if os.environ.get("VIGIL_MEMORY_SECURITY") == "1":
        # Wipes SQLite's own allocations on free. Off by default: it multiplied the cost of
        # our write workload ~4x in bench/storage.py, and Python's copies of query results are
        # not wiped anyway, so it narrows the live-seizure window less than it costs.
        conn.execute("PRAGMA cipher_memory_security = ON")
    for pragma in (
        "journal_mode = WAL",
        "synchronous = FULL",  # "nothing lost" includes power loss
        "secure_delete = ON",
        f"journal_size_limit = {JOURNAL_SIZE_LIMIT}",
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

    def __init__(self, conn: Connection, path: Path, created: set[str] | None = None) -> None:
        self._conn = conn
        self.path = path
        self._created = created or set()  # -wal/-shm this process brought into being
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._writer, name="vigil-db-writer", daemon=True)
        self.commits = 0
        self.scrub_checkpoints = 0
        self._thread.start()

    @classmethod
    def open(
        cls, data_dir: Path, key: bytes, *, create: bool = False, verified: bool = False
    ) -> Database:
        """Open read-write. Unless `create`, the store is verified first (`verify`), so a
        damaged one fails before any byte is written; `verified` says the caller just did."""
        path = data_dir / DB_FILE
        if create:
            create_database_file(path)
        elif not path.exists():
            raise StoreError(f"No database in {data_dir}: run `vigil init` first.")
        elif not verified:
            verify(path, key)
        created = missing_companions(path)
        try:
            conn = _open_connection(path, key)
        except sqlcipher3.Error as exc:
            remove_leftover_companions(path, created)
            if is_disk_full(exc, data_dir):
                raise DiskFull(data_dir) from None
            raise StoreError(WRONG_KEY) from None
        try:
            migrate(conn)
        except sqlcipher3.DatabaseError as exc:
            conn.close()
            remove_leftover_companions(path, created)
            if is_disk_full(exc, data_dir):
                raise DiskFull(data_dir) from None
            raise StoreError("The database is damaged: schema migration failed.") from None
        return cls(conn, path, created)

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
                        _fail(job.future, self._refused(exc))
            if stop_after:
                break
        try:
            checkpoint_truncate(conn)
        except sqlcipher3.Error as exc:
            if not is_disk_full(exc, self.path.parent):
                log.warning("checkpoint at close failed")
        _scrubbed.discard(id(conn))
        conn.close()
        remove_leftover_companions(self.path, self._created)

    def _refused(self, exc: BaseException) -> StoreError:
        if is_disk_full(exc, self.path.parent):
            return DiskFull(self.path.parent)
        return StoreError("the database refused the write")

    def _after_commit(self, conn: Connection) -> None:
        """A scrub committed: fold and truncate the log now (module docstring)."""
        if id(conn) not in _scrubbed:
            return
        try:
            conn.execute(f"PRAGMA busy_timeout = {SCRUB_BUSY_MS}")
            if checkpoint_truncate(conn):
                _scrubbed.discard(id(conn))
                self.scrub_checkpoints += 1
            # else: a reader holds an old snapshot; the flag stays for the next commit
        except sqlcipher3.Error as exc:
            log.warning("scrub checkpoint failed: %s", type(exc).__name__)
        finally:
            with contextlib.suppress(sqlcipher3.Error):
                conn.execute("PRAGMA busy_timeout = 5000")

    def _run_batch(self, conn: Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlcipher3.Error as exc:
            refused = (
                DiskFull(self.path.parent)
                if is_disk_full(exc, self.path.parent)
                else StoreError(f"database unavailable: {type(exc).__name__}")
            )
            for job in batch:
                _fail(job.future, refused)
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
                            _fail(j.future, self._refused(exc))
                    _scrubbed.discard(id(conn))
                    full = is_disk_full(exc, self.path.parent)
                    _fail(job.future, self._refused(exc) if full else exc)
                    return
                full = is_disk_full(exc, self.path.parent)
                outcomes.append((job, None, self._refused(exc) if full else exc))
            else:
                conn.execute("RELEASE job")
                outcomes.append((job, result, None))
        try:
            conn.execute("COMMIT")
            self.commits += 1
        except sqlcipher3.Error as exc:
            with contextlib.suppress(sqlcipher3.Error):
                conn.execute("ROLLBACK")
            _scrubbed.discard(id(conn))
            refused = self._refused(exc)
            if isinstance(refused, DiskFull):
                log.warning("commit failed: disk full")
            else:
                log.error("commit failed: %s", type(exc).__name__)
            for job in batch:
                _fail(job.future, refused)
            return
        self._after_commit(conn)
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
