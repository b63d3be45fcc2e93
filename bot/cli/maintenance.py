"""`vigil backup`, `vigil restore`, `vigil wipe` and `vigil retention`: the operator's side of
storage/backup.py, wipe.py and retention.py.

Exit codes as everywhere: 0 done; 1 a full disk; 2 wrong passphrase, missing or damaged files,
a network in the way, a bot running where it must not, bad usage (one sentence on stderr,
files unchanged).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bot import config
from bot.cli.common import (
    EXIT_OK,
    ProgressBar,
    UsageError,
    audit_cli,
    days_number,
    network_passphrase,
    unlock_store,
)
from storage import backup, retention, wipe


def _retention_epilog() -> str:
    defaults = retention.Retention()
    rows = [f"  {'KIND':20} {'default':>9}   allowed"]
    for kind in retention.KINDS:
        least, most = retention.BOUNDS[kind]
        rows.append(
            f"  {kind:20} {defaults.days(kind):>4} days   {least / retention.DAY:g} to "
            f"{most / retention.DAY:g} days"
        )
    return (
        "kinds of data, how long each is kept by default, and the bounds:\n"
        + "\n".join(rows)
        + "\n\nShortening report_bodies deletes the sealed reports older than the new period at "
        "the next housekeeping run; the command says how many and asks first (--yes skips "
        "the question)."
    )


def register(sub: Any) -> None:
    b = sub.add_parser(
        "backup",
        help="write an encrypted backup (opens with a slot passphrase)",
        description="Write a consistent, encrypted snapshot of the network to OUT (0600). It "
        "opens with any passphrase whose key slot exists now. Works beside a running bot.",
    )
    b.add_argument("out", metavar="OUT", help="the backup file to write")
    b.add_argument("--force", action="store_true", help="replace OUT if it exists")
    b.set_defaults(func=cmd_backup)

    rs = sub.add_parser(
        "restore",
        help="restore a backup into the data dir",
        description="Verify the whole backup, then install it in VIGIL_DATA_DIR. Asks for a "
        "passphrase that was valid when the backup was made.",
    )
    rs.add_argument("archive", metavar="IN", help="the backup file")
    rs.add_argument(
        "--force", action="store_true", help="replace an existing network (never a running one)"
    )
    rs.set_defaults(func=cmd_restore)

    w = sub.add_parser(
        "wipe",
        help="panic: crypto-erase the keys, delete the data (see docs)",
        description="Overwrite and delete the key slots, then delete the database and the "
        "backups kept in the data dir. Best effort on SSDs and copy-on-write filesystems: "
        "what protects you is that the key slots are gone. Needs no passphrase.",
    )
    w.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    w.set_defaults(func=cmd_wipe)

    t = sub.add_parser(
        "retention",
        help="how long each kind of data is kept; change one",
        description="Without arguments: list how long each kind of data is kept. With KIND and "
        "DAYS: change one period, within its bounds.",
        epilog=_retention_epilog(),
    )
    t.add_argument(
        "kind",
        nargs="?",
        metavar="KIND",
        choices=retention.KINDS,
        help="the kind of data (listed below)",
    )
    t.add_argument("days", nargs="?", type=days_number, metavar="DAYS", help="the new period")
    t.add_argument(
        "--yes", action="store_true", help="do not ask before a change that deletes reports"
    )
    t.set_defaults(func=cmd_retention)


# --- backup and restore ----------------------------------------------------------------------


def cmd_backup(args: argparse.Namespace, settings: config.Settings) -> int:
    out = Path(args.out).expanduser()
    if out.exists() and not args.force:
        raise UsageError(f"{out} already exists; use --force to replace it.")
    if not out.parent.is_dir():
        raise UsageError(f"The directory {out.parent} does not exist.")
    passphrase = network_passphrase(settings)
    bar = ProgressBar()
    try:
        info = backup.create_backup(settings.data_dir, passphrase, out, progress=bar)
    finally:
        bar.close()
    print(f"Backup written to {info.path} ({info.size} bytes, {info.slots} key slot(s)).")
    print("It opens with any of those slots' passphrases. Keep it off this server.")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace, settings: config.Settings) -> int:
    source = Path(args.archive).expanduser()
    if not source.is_file():
        raise UsageError(f"There is no backup file {source}.")
    if backup.network_exists(settings.data_dir) and not args.force:
        raise backup.NetworkExists(
            f"A network already exists in {settings.data_dir}; refusing to overwrite it "
            "(use --force to replace it with the backup)."
        )
    backup.read_archive(source, settings.data_dir)  # not a backup: say so before asking
    passphrase = network_passphrase(settings)
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


# --- retention -------------------------------------------------------------------------------


def _reports_doomed_by(conn: Any, days: float) -> int:
    """Sealed reports the shorter period would delete that the current one keeps."""
    now = time.time()
    current = retention.current(conn).report_bodies
    new = days * retention.DAY
    if new >= current:
        return 0
    return conn.execute(
        "SELECT count(*) FROM reports WHERE created_at < ? AND created_at >= ?",
        (now - new, now - current),
    ).fetchone()[0]


def _confirm_report_deletion(n: int, days: float, yes: bool) -> bool:
    print(
        f"Keeping sealed reports {days:g} days deletes {n} report(s) older than that, for good, "
        "at the next housekeeping run (within 6 hours). Export them first if they are needed "
        "(`vigil reports export`)."
    )
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(
            f"Refusing to shorten report_bodies without confirmation: it deletes {n} report(s); "
            "add --yes."
        )
    return input("Type DELETE to go on: ").strip() == "DELETE"


def cmd_retention(args: argparse.Namespace, settings: config.Settings) -> int:
    if (args.kind is None) != (args.days is None):
        raise UsageError("Give both KIND and DAYS to change a period, or neither to list them.")
    if args.kind is not None:
        least, most = retention.BOUNDS[args.kind]
        if not least <= args.days * retention.DAY <= most:
            raise UsageError(
                f"{args.kind} must be kept between {least / retention.DAY:g} and "
                f"{most / retention.DAY:g} days."
            )
    store = unlock_store(settings)
    try:
        if args.kind == "report_bodies":
            doomed = store.db.run_sync(_reports_doomed_by, args.days)
            if doomed and not _confirm_report_deletion(doomed, args.days, args.yes):
                print("Nothing was changed.")
                return EXIT_OK
        if args.kind is not None:

            def change(conn: Any) -> None:
                retention.set_period(conn, args.kind, args.days)
                audit_cli(conn, "retention.changed", f"kind:{args.kind}")

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
