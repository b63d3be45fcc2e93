"""Blanked means gone (THREATS rule 12): after a scrub, neither the database file nor its WAL
holds the old text, searched page by page *decrypted with the key* (tests/sqlcipher_pages.py),
as someone holding the data dir and the database key would."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.router import CommandRateLimiter
from storage import crypto, outbox
from storage.db import DB_FILE, scrubbed
from storage.store import Store
from tests import sqlcipher_pages as pages
from tests.harness import ChatHarness

SENTINEL = "SENTINEL-scrub-Qx71-cell-nine"
ADDRESS = "SENTINEL-address-8f2c1d"  # a relative's platform id


def network(store: Store) -> ChatHarness:
    chat = ChatHarness(store)
    chat.router.limiter = CommandRateLimiter(rate_per_minute=100_000, burst=100_000)
    chat.services.sealing_public = crypto.sealing_keypair().public
    chat.case("nasrin", "Nasrin S.", "restricted")
    chat.member("coo", "coordinator", coordinates=("nasrin",))
    chat.member("rana", "family", family_of=("nasrin",))
    return chat


def wal_size(store: Store) -> int:
    wal = store.data_dir / (DB_FILE + "-wal")
    return wal.stat().st_size if wal.exists() else 0


# --- the decryptor itself ------------------------------------------------------------------


def test_the_decryptor_reads_known_pages_and_refuses_a_wrong_key(store: Store) -> None:
    """A positive control: what is stored *is* found, in the WAL while the store is open and in
    the database file after a checkpoint; page 1 carries SQLite's header fields after the salt."""
    key = store.subkeys.database
    store.db.run_sync(lambda c: c.execute("INSERT INTO settings VALUES ('probe', ?)", (SENTINEL,)))
    assert wal_size(store) > 0
    assert ("wal", SENTINEL) in {(s, n) for s, _i, n in pages.find(store.data_dir, key, SENTINEL)}
    salt = pages.database_salt(store.data_dir / DB_FILE)
    assert len(salt) == 16 and salt != b"SQLite format 3\x00"  # the salt, not the header
    store.db.run_sync(scrubbed)  # the writer checkpoints once the (empty) job commits
    assert wal_size(store) == 0
    found = pages.find(store.data_dir, key, SENTINEL)
    assert [s for s, _i, _n in found] == ["db"]
    first = next(pages.db_pages(store.data_dir / DB_FILE, key))
    pages.check_header(first.plaintext)
    with pytest.raises(pages.PageError):
        pages.all_pages(store.data_dir, crypto.random_bytes())
    raw = (store.data_dir / DB_FILE).read_bytes()
    assert SENTINEL.encode() not in raw  # and without the key, nothing (as before)


# --- live copies ------------------------------------------------------------------------------


def test_blanked_live_copies_are_in_no_page_and_no_frame(store: Store) -> None:
    chat = network(store)
    chat.say("rana", f"/report cold cell {SENTINEL}")
    chat.say("rana", f"/urgent taken away {SENTINEL}")
    key = store.subkeys.database
    assert pages.find(store.data_dir, key, SENTINEL), "the live copy waits for delivery"
    now = chat.clock()
    for item in chat.run(outbox.claim, "console", 1000, now):
        chat.run(outbox.mark_sent, item.id, "ref", now)
    before = store.db.scrub_checkpoints
    chat.run(outbox.scrub_final)  # deletes the delivered copies: a scrub
    assert store.db.scrub_checkpoints == before + 1
    assert wal_size(store) == 0  # truncated right after the commit, the store still open
    assert pages.find(store.data_dir, key, SENTINEL) == []


def test_a_scrub_that_rolls_back_checkpoints_nothing_it_did_not_do(store: Store) -> None:
    def scrub_then_fail(conn: object) -> None:
        outbox.scrub_final(conn)  # type: ignore[arg-type]
        scrubbed(conn)  # type: ignore[arg-type]
        raise ValueError("the handler failed")

    chat = network(store)
    chat.say("rana", f"/report cold cell {SENTINEL}")
    with pytest.raises(ValueError):
        store.db.run_sync(scrub_then_fail)
    # The live copy is undelivered and the scrub rolled back: it must still be there.
    assert pages.find(store.data_dir, store.subkeys.database, SENTINEL)


# --- drafts ---------------------------------------------------------------------------------


def test_a_deleted_draft_leaves_no_page_behind(store: Store) -> None:
    chat = network(store)
    for text in ["/report", "/pick kind visit", "/pick date today", "/pick health concern"]:
        chat.say("rana", text)
    chat.say("rana", f"cold cell {SENTINEL}")
    payload = chat.run(lambda c: c.execute("SELECT data FROM conversations").fetchone()[0])
    blob = payload.encode()[:64]  # the sealed draft as stored (base64), a page's worth
    key = store.subkeys.database
    # The draft is AEAD-sealed under a key held only in memory: its words are never there...
    assert pages.find(store.data_dir, key, SENTINEL) == []
    holding = [p for p in pages.all_pages(store.data_dir, key) if bytes(blob) in p.plaintext]
    assert holding, "positive control: the sealed draft itself is on a page"
    # ...and once the flow ends (/cancel), not even its ciphertext stays.
    assert "Cancelled" in chat.say("rana", "/cancel")
    assert chat.run(lambda c: c.execute("SELECT count(*) FROM conversations").fetchone()[0]) == 0
    assert wal_size(store) == 0
    assert [p for p in pages.all_pages(store.data_dir, key) if bytes(blob) in p.plaintext] == []


# --- /forgetme --------------------------------------------------------------------------------


def test_forgetme_leaves_the_address_in_no_page_and_no_frame(store: Store) -> None:
    chat = network(store)
    chat.member(ADDRESS, "family", family_of=("nasrin",))
    chat.say(ADDRESS, "/subscribe nasrin")
    chat.say(ADDRESS, "/timezone Europe/Minsk")
    chat.say(ADDRESS, f"/report nasrin {SENTINEL}")
    key = store.subkeys.database
    assert pages.find(store.data_dir, key, ADDRESS), "positive control: the address is stored"
    chat.say(ADDRESS, "/forgetme delete me")
    assert wal_size(store) == 0
    # What remains is the goodbye itself, queued to that chat: one row, one occurrence. Every
    # deleted row (identity, its index entry, subscriptions, earlier replies) left no copy.
    (goodbye,) = chat.run(
        lambda c: c.execute("SELECT body FROM outbox WHERE chat = ?", (ADDRESS,)).fetchall()
    )
    assert "Everything Vigil kept about you is deleted" in goodbye[0]
    all_pages = pages.all_pages(store.data_dir, key)
    assert sum(p.plaintext.count(ADDRESS.encode()) for p in all_pages) == 1


def test_revoke_scrubs_the_cancelled_messages(store: Store) -> None:
    chat = network(store)
    chat.member("ada", "admin")
    coo2 = chat.member("coo2", "coordinator")
    chat.run(lambda c: c.execute(
        "INSERT INTO case_members (case_id, member_id, relation) "
        "SELECT id, ?, 'coordinator' FROM cases WHERE slug = 'nasrin'", (coo2,)))  # fmt: skip
    chat.say("rana", f"/report {SENTINEL}")  # a live copy queued to coo2, undelivered
    key = store.subkeys.database
    assert pages.find(store.data_dir, key, SENTINEL)
    from storage import privacy

    chat.run(privacy.revoke_member, coo2, chat.clock())
    chat.run(privacy.revoke_member, chat.members["coo"], chat.clock())
    assert wal_size(store) == 0
    assert pages.find(store.data_dir, key, SENTINEL) == []


def test_data_dir_of_a_closed_store(data_dir: Path, store: Store) -> None:
    """After close (checkpoint at the end), the file alone still decrypts page by page."""
    chat = network(store)
    chat.say("rana", f"/report {SENTINEL}")
    key = store.subkeys.database
    store.close()
    assert not (data_dir / (DB_FILE + "-wal")).exists()
    assert pages.find(data_dir, key, SENTINEL), "undelivered: still queued, so still there"
