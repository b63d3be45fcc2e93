"""`vigil backup`, `vigil restore`, `vigil wipe`, `vigil keys list|add|remove|rotate` and
`vigil retention`: the operator's side of storage/backup.py, wipe.py, keyadmin.py, retention.py.

Passphrases: the network passphrase comes from VIGIL_PASSPHRASE(_FILE) or a terminal prompt,
as for every command. A new slot's passphrase (`keys add`) comes from VIGIL_NEW_PASSPHRASE_FILE
(or VIGIL_NEW_PASSPHRASE) or is typed twice on a terminal. `keys rotate` asks on a terminal for
each other slot's passphrase to keep it; without a terminal it keeps only the slot that
unlocked it and lists the others as dropped.

Exit codes as everywhere: 0 done; 2 wrong passphrase, missing or damaged files, a network in
the way, a bot running where it must not, bad usage (one sentence on stderr, files unchanged).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from pathlib import Path

from bot import config
from bot.cli import EXIT_OK, UsageError, _passphrase
from storage import keys

BAR_AFTER = 0.5  # seconds before a progress bar appears (short jobs print nothing)
BAR_WIDTH = 30
PHASES = {
    "snapshot": "copying",
    "encrypt": "encrypting",
    "verify": "verifying",
    "restore": "restoring",
    "rotate": "re-encrypting",
}


class ProgressBar:
    """A one-line bar on stderr when it is a terminal and the work takes a while."""

    def __init__(self, stream=None) -> None:  # type: ignore[no-untyped-def]
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled or time.monotonic() - self.started < BAR_AFTER:
            return
        frac = min(1.0, done / total) if total else 1.0
        filled = int(frac * BAR_WIDTH)
        label = PHASES.get(phase, phase)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\r{label:14} [{bar}] {frac * 100:5.1f}%")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _secret_from_env(name: str) -> str | None:
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(name + "_FILE")
    if path:
        try:
            return Path(path).read_text("utf-8").strip()
        except OSError:
            raise UsageError(f"Cannot read the file named by {name}_FILE.") from None
    return None


def _new_passphrase() -> str:
    value = _secret_from_env("VIGIL_NEW_PASSPHRASE")
    if value:
        return value
    if not sys.stdin.isatty():
        raise UsageError(
            "No new passphrase: set VIGIL_NEW_PASSPHRASE_FILE (or VIGIL_NEW_PASSPHRASE), or "
            "run on a terminal."
        )
    first = getpass.getpass("New passphrase for the slot: ")
    if getpass.getpass("Repeat the new passphrase: ") != first:
        raise UsageError("The two passphrases differ.")
    return first


# --- backup and restore ----------------------------------------------------------------------


def cmd_backup(args: argparse.Namespace, settings: config.Settings) -> int:
    from storage import backup

    out = Path(args.out).expanduser()
    if out.exists() and not args.force:
        raise UsageError(f"{out} already exists; use --force to replace it.")
    if not out.parent.is_dir():
        raise UsageError(f"The directory {out.parent} does not exist.")
    passphrase = _passphrase(settings)
    bar = ProgressBar()
    try:
        info = backup.create_backup(settings.data_dir, passphrase, out, progress=bar)
    finally:
        bar.close()
    print(f"Backup written to {info.path} ({info.size} bytes, {info.slots} key slot(s)).")
    print("It opens with any of those slots' passphrases. Keep it off this server.")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace, settings: config.Settings) -> int:
    from storage import backup

    source = Path(args.archive).expanduser()
    if not source.is_file():
        raise UsageError(f"There is no backup file {source}.")
    if backup.network_exists(settings.data_dir) and not args.force:
        raise backup.NetworkExists(
            f"A network already exists in {settings.data_dir}; refusing to overwrite it "
            "(use --force to replace it with the backup)."
        )
    backup.read_archive(source, settings.data_dir)  # not a backup: say so before asking
    passphrase = _passphrase(settings)
    bar = ProgressBar()
    try:
        archive = backup.restore_backup(
            source, settings.data_dir, passphrase, force=args.force, progress=bar
        )
    finally:
        bar.close()
    created = archive.header.get("created", "?")
    print(f"Restored the backup of {created} into {settings.data_dir}.")
    print("It opens with the passphrases that were valid when the backup was made.")
    return EXIT_OK


# --- wipe ------------------------------------------------------------------------------------


def cmd_wipe(args: argparse.Namespace, settings: config.Settings) -> int:
    from storage import wipe

    data_dir = settings.data_dir
    if not data_dir.exists():
        print(f"Nothing to wipe: {data_dir} does not exist.")
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("Refusing to wipe without a terminal to confirm; add --yes.")
        print(f"This destroys the Vigil network in {data_dir} for good: key slots, database,")
        print("backups in that directory. Copies elsewhere are not touched.")
        if input("Type WIPE to go on: ").strip() != "WIPE":
            print("Nothing was wiped.")
            return EXIT_OK
    running = wipe.in_use(data_dir)
    report = wipe.wipe(data_dir)
    print(
        f"Key slots erased ({len(report.erased)} file(s) overwritten and deleted); "
        f"{len(report.deleted)} other file(s) deleted."
    )
    if report.leftovers:
        print(f"Left in {data_dir} (not Vigil's): {', '.join(report.leftovers)}")
    if running:
        print(
            "A running Vigil had the database open. It stops by itself once it notices its key "
            "slots are gone; if it is still running, stop it now (e.g. systemctl stop vigil).",
            file=sys.stderr,
        )
    return EXIT_OK


# --- keys ------------------------------------------------------------------------------------


def _recover_first(settings: config.Settings, passphrase: str) -> None:
    from storage import keyadmin

    outcome = keyadmin.recover(settings.data_dir, passphrase)
    if outcome == "finished":
        print("An interrupted key change was completed first.")
    elif outcome == "undone":
        print("An interrupted key change was undone first; nothing of it had taken effect.")


def cmd_keys_list(args: argparse.Namespace, settings: config.Settings) -> int:
    from storage import keyadmin

    for slot in keyadmin.list_slots(settings.data_dir):
        label = slot.label or "-"
        print(f"{slot.slot_id}  {label:20} argon2id {slot.memory_mib} MiB")
    if keyadmin.pending_change(settings.data_dir):
        print("An interrupted key change is pending; any `vigil keys` command completes it.")
    return EXIT_OK


def cmd_keys_add(args: argparse.Namespace, settings: config.Settings) -> int:
    from storage import keyadmin

    passphrase = _passphrase(settings)
    keys.KeySlots.load(settings.data_dir)  # a missing network fails before the second prompt
    new = _new_passphrase()
    _recover_first(settings, passphrase)
    slot_id = keyadmin.add_slot(settings.data_dir, passphrase, new, args.label or "")
    print(f"Added key slot {slot_id}. Its passphrase now unlocks the network.")
    return EXIT_OK


def cmd_keys_remove(args: argparse.Namespace, settings: config.Settings) -> int:
    from storage import keyadmin

    passphrase = _passphrase(settings)
    _recover_first(settings, passphrase)
    keyadmin.remove_slot(settings.data_dir, passphrase, args.slot)
    print(f"Removed key slot {args.slot}; its passphrase no longer unlocks this network.")
    print("Backups made before still open with it: make a new backup and destroy the old ones.")
    return EXIT_OK


def cmd_keys_rotate(args: argparse.Namespace, settings: config.Settings) -> int:
    from storage import keyadmin

    passphrase = _passphrase(settings)
    _recover_first(settings, passphrase)
    interactive = sys.stdin.isatty()

    def ask(slot: keys.Slot) -> str | None:
        if not interactive:
            return None
        label = f" ({slot.label})" if slot.label else ""
        value = getpass.getpass(
            f"Passphrase of slot {slot.slot_id}{label} to keep it (Enter drops it): "
        )
        return value or None

    bar = ProgressBar()
    try:
        result = keyadmin.rotate(settings.data_dir, passphrase, ask=ask, progress=bar)
    finally:
        bar.close()
    print("New master key; the database is re-encrypted under it.")
    for slot_id, label in result.kept:
        print(f"kept     {slot_id}  {label or '-'}")
    for slot_id, label in result.dropped:
        print(f"dropped  {slot_id}  {label or '-'}  (its holder must `vigil keys add` again)")
    print("Unredeemed invite codes no longer work; create new ones. Old backups keep their")
    print("old slots: make a new backup and destroy the old ones.")
    return EXIT_OK


# --- retention -------------------------------------------------------------------------------


def cmd_retention(args: argparse.Namespace, settings: config.Settings) -> int:
    from bot.cli import _unlock
    from storage import retention

    if (args.kind is None) != (args.days is None):
        raise UsageError("Give both KIND and DAYS to change a period, or neither to list them.")
    store = _unlock(settings)
    try:
        if args.kind is not None:

            def change(conn) -> None:  # type: ignore[no-untyped-def]
                retention.set_period(conn, args.kind, args.days)
                _audit(conn, "retention.changed", f"kind:{args.kind}")

            try:
                store.db.run_sync(change)
            except retention.RetentionError as err:
                raise UsageError(str(err)) from None
        current = store.db.run_sync(retention.current)
    finally:
        store.close()
    for kind in retention.KINDS:
        print(f"{kind:20} {current.days(kind)} days")
    return EXIT_OK


def _audit(conn, action: str, target: str | None) -> None:  # type: ignore[no-untyped-def]
    from storage import audit

    audit.record(conn, None, action, target, time.time())
