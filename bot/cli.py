"""The `vigil` command line. Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bot import config, logs
from storage import keys
from storage.db import StoreError
from storage.store import Store, init_network, unlock

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage: one sentence on stderr, exit 2."""


def _passphrase(settings: config.Settings, *, confirm: bool = False) -> str:
    if settings.passphrase:
        return settings.passphrase
    if not sys.stdin.isatty():
        raise UsageError(
            "No passphrase: set VIGIL_PASSPHRASE_FILE (or VIGIL_PASSPHRASE), or run on a terminal."
        )
    first = getpass.getpass("Passphrase: ")
    if confirm and getpass.getpass("Repeat the passphrase: ") != first:
        raise UsageError("The two passphrases differ.")
    return first


def _unlock(settings: config.Settings) -> Store:
    return unlock(settings.data_dir, _passphrase(settings))


# --- commands ------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, settings: config.Settings) -> int:
    from handlers.invites import DEFAULT_EXPIRY, create_invite

    store = init_network(settings.data_dir, _passphrase(settings, confirm=True))
    try:
        code = store.db.run_sync(
            lambda conn: create_invite(
                conn, store.subkeys.index, role="admin", case_slug=None, uses=1,
                expires_in=DEFAULT_EXPIRY, created_by=None, now=time.time(),
            )
        )  # fmt: skip
    finally:
        store.close()
    print(f"Created a new Vigil network in {settings.data_dir}")
    print("Admin invite (one use, valid 7 days). Send it to the bot as: /start CODE")
    print(code)
    return EXIT_OK


def cmd_invite(args: argparse.Namespace, settings: config.Settings) -> int:
    from handlers.invites import InviteError, create_invite, parse_duration

    try:
        expires_in = parse_duration(args.expires)
    except InviteError:
        raise UsageError("--expires takes a number and a unit: 30m, 12h, 7d or 2w.") from None
    store = _unlock(settings)
    try:
        code = store.db.run_sync(
            lambda conn: create_invite(
                conn, store.subkeys.index, role=args.role, case_slug=args.case, uses=args.uses,
                expires_in=expires_in, created_by=None, now=time.time(),
            )
        )  # fmt: skip
        store.db.run_sync(_audit_cli, "invite.created", f"role:{args.role}")
    except InviteError as err:
        raise UsageError(
            {
                "no_case": f"There is no case {args.case!r}.",
                "family_needs_case": "A family invite needs --case SLUG.",
                "bad_uses": "--uses must be between 1 and 10000.",
            }.get(err.code, "That invite cannot be created.")
        ) from None
    finally:
        store.close()
    print(code)
    if settings.telegram_enabled:
        username = _telegram_username(settings)
        if username:
            print(f"https://t.me/{username}?start={code.replace('-', '')}")
    return EXIT_OK


def _audit_cli(conn, action: str, target: str) -> None:  # type: ignore[no-untyped-def]
    from storage import audit

    audit.record(conn, None, action, target, time.time())


def _telegram_username(settings: config.Settings) -> str | None:
    try:
        from bot.transports.telegram import fetch_username
    except ImportError:
        return None
    try:
        return asyncio.run(fetch_username(settings))
    except Exception:
        return None


def cmd_status(args: argparse.Namespace, settings: config.Settings) -> int:
    from storage import members, outbox

    for key, value in settings.summary().items():
        print(f"{key:14} {value}")
    store = _unlock(settings)
    try:
        depth = store.db.run_sync(outbox.depth)
        count = store.db.run_sync(members.count)
        version = store.db.run_sync(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0])
        upcoming = store.db.run_sync(_upcoming_jobs)
    finally:
        store.close()
    print(f"{'store':14} unlocked, schema version {version}, {count} members")
    print(f"{'key slots':14} {len(store.slots.slots)}")
    if not depth:
        print(f"{'outbox':14} empty")
    for transport, states in sorted(depth.items()):
        line = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        print(f"{'outbox':14} {transport}: {line}")
    for t in _build_transports(settings):
        try:
            health = asyncio.run(t.probe())
        except Exception as exc:
            health = f"unreachable ({type(exc).__name__})"
        print(f"{t.name:14} {health}")
    if upcoming:
        for when, what in upcoming:
            print(f"{'next job':14} {when} {what}")
    else:
        print(f"{'next jobs':14} none scheduled")
    return EXIT_OK


def _upcoming_jobs(conn) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Scheduled work from our own tables (actions add theirs through this hook)."""
    from bot.app import upcoming_jobs

    return upcoming_jobs(conn)


def _build_transports(settings: config.Settings) -> list:  # type: ignore[type-arg]
    from bot.app import build_transports

    return build_transports(settings)


def _run_app(
    store: Store,
    settings: config.Settings,
    transports: list,
    on_ready: Callable[[object], None] | None = None,
) -> int:  # type: ignore[type-arg]
    from bot.app import App

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        app = App(store, settings, transports)
        if on_ready:
            on_ready((app, stop))
        await app.run(stop)

    try:
        asyncio.run(main())
    finally:
        store.close()
    return EXIT_OK


def cmd_run(args: argparse.Namespace, settings: config.Settings) -> int:
    transports = _build_transports(settings)
    if not transports:
        raise UsageError(
            "No transport configured: set VIGIL_TELEGRAM_TOKEN for Telegram, or "
            "VIGIL_SIGNAL_API_URL and VIGIL_SIGNAL_NUMBER for Signal (or try `vigil demo`)."
        )
    from storage.wipe import RunLock

    store = _unlock(settings)
    try:
        lock = RunLock(settings.data_dir).acquire()  # one bot per data dir
    except StoreError:
        store.close()
        raise
    try:
        return _run_app(store, settings, transports)
    finally:
        lock.release()


def cmd_demo(args: argparse.Namespace, settings: config.Settings) -> int:
    from bot import demo
    from bot.transports.console import ConsoleTransport

    os.environ["VIGIL_INSECURE_FAST_KDF"] = "1"  # the demo passphrase is public anyway
    if "VIGIL_LOG_LEVEL" not in os.environ:
        logs.setup("WARNING")  # log lines would interleave with the conversation
    tmp = None
    if args.data_dir:
        data_dir = Path(args.data_dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="vigil-demo-")
        data_dir = Path(tmp.name) / "data"
    fresh = not (data_dir / keys.SLOTS_FILE).exists()
    store = (init_network if fresh else unlock)(data_dir, demo.DEMO_PASSPHRASE)
    if fresh:
        store.db.run_sync(demo.seed, store.subkeys.index)
        demo.seal_to_throwaway_key(store)
    settings.data_dir = data_dir
    console = ConsoleTransport(demo.PERSONAS, "newcomer", intro=demo.INTRO)

    def ready(pair: object) -> None:
        app, stop = pair  # type: ignore[misc]
        console.settle = app.settle
        console.on_quit = stop.set

    try:
        return _run_app(store, settings, [console], ready)
    finally:
        if tmp is not None:
            tmp.cleanup()


# --- entry point ---------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vigil", description="Vigil: keep political prisoners from being forgotten."
    )
    p.add_argument("--config", help="TOML configuration file (or VIGIL_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("init", help="create the data dir, key slots and encrypted database")
    sub.add_parser("run", help="run the bot on every configured transport")
    d = sub.add_parser("demo", help="a seeded demo network in this terminal, nothing to configure")
    d.add_argument("--data-dir", help="keep the demo network here instead of a throw-away dir")
    i = sub.add_parser("invite", help="print a new invite code")
    i.add_argument("--role", required=True, choices=["activist", "family", "coordinator", "admin"])
    i.add_argument("--case", help="case slug (required for family)")
    i.add_argument("--uses", type=int, default=1)
    i.add_argument("--expires", default="7d", help="lifetime: 30m, 12h, 7d, 2w")
    sub.add_parser("status", help="configuration, store, transports, outbox depth; no secrets")
    k = sub.add_parser("keys", help="key slots and the sealing key")
    ksub = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    ksub.add_parser("list", help="the key slots (ids and labels; no secrets)")
    ka = ksub.add_parser("add", help="a new key slot for another passphrase holder")
    ka.add_argument("--label", help="who holds it (kept in clear beside the slot)")
    kr = ksub.add_parser("remove", help="remove a key slot (never the last one)")
    kr.add_argument("slot", metavar="SLOT_ID")
    ksub.add_parser("rotate", help="new master key: re-encrypt the db, re-wrap the slots you keep")
    ks = ksub.add_parser("sealing-new", help="new sealing key pair; the private half goes to FILE")
    ks.add_argument("--out", required=True, metavar="FILE", help="where to write the key file")
    ks.add_argument("--replace", action="store_true", help="supersede the current sealing key")
    r = sub.add_parser("reports", help="the sealed report archive")
    rsub = r.add_subparsers(dest="reports_command", required=True, metavar="ACTION")
    re_ = rsub.add_parser("export", help="open the archive offline with the sealing key file")
    re_.add_argument("--sealing-key", required=True, metavar="FILE")
    re_.add_argument("--format", choices=["json", "csv"], default="json")
    re_.add_argument("--out", metavar="FILE", help="write here (0600) instead of stdout")
    re_.add_argument("--case", metavar="SLUG", help="only this case")
    re_.add_argument("--attachments-dir", metavar="DIR", help="write attachments as files here")
    b = sub.add_parser("backup", help="write an encrypted backup (opens with a slot passphrase)")
    b.add_argument("out", metavar="OUT", help="the backup file to write")
    b.add_argument("--force", action="store_true", help="replace OUT if it exists")
    rs = sub.add_parser("restore", help="restore a backup into the data dir")
    rs.add_argument("archive", metavar="IN", help="the backup file")
    rs.add_argument("--force", action="store_true", help="replace an existing network")
    w = sub.add_parser("wipe", help="panic: crypto-erase the keys, delete the data (see docs)")
    w.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    t = sub.add_parser("retention", help="how long each kind of data is kept; change one")
    t.add_argument("kind", nargs="?", metavar="KIND")
    t.add_argument("days", nargs="?", type=float, metavar="DAYS")
    return p


def _cli_reports(name: str) -> Callable[[argparse.Namespace, config.Settings], int]:
    def run(args: argparse.Namespace, settings: config.Settings) -> int:
        from bot import cli_reports

        return getattr(cli_reports, name)(args, settings)

    return run


def _cli_admin(name: str) -> Callable[[argparse.Namespace, config.Settings], int]:
    def run(args: argparse.Namespace, settings: config.Settings) -> int:
        from bot import cli_admin

        return getattr(cli_admin, name)(args, settings)

    return run


KEY_COMMANDS: dict[str, Callable[[argparse.Namespace, config.Settings], int]] = {
    "sealing-new": _cli_reports("cmd_sealing_new"),
    "list": _cli_admin("cmd_keys_list"),
    "add": _cli_admin("cmd_keys_add"),
    "remove": _cli_admin("cmd_keys_remove"),
    "rotate": _cli_admin("cmd_keys_rotate"),
}
REPORT_COMMANDS: dict[str, Callable[[argparse.Namespace, config.Settings], int]] = {
    "export": _cli_reports("cmd_export"),
}


def cmd_keys(args: argparse.Namespace, settings: config.Settings) -> int:
    return KEY_COMMANDS[args.keys_command](args, settings)


def cmd_reports(args: argparse.Namespace, settings: config.Settings) -> int:
    return REPORT_COMMANDS[args.reports_command](args, settings)


COMMANDS: dict[str, Callable[[argparse.Namespace, config.Settings], int]] = {
    "init": cmd_init,
    "run": cmd_run,
    "demo": cmd_demo,
    "invite": cmd_invite,
    "status": cmd_status,
    "keys": cmd_keys,
    "reports": cmd_reports,
    "backup": _cli_admin("cmd_backup"),
    "restore": _cli_admin("cmd_restore"),
    "wipe": _cli_admin("cmd_wipe"),
    "retention": _cli_admin("cmd_retention"),
}


def _harden_process() -> None:
    """No core dumps and no debugger attach by other processes of the same user: the master
    key lives in this process's memory."""
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        pass  # not Linux; RLIMIT_CORE still applies


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # nothing Vigil writes is for other users' eyes
    _harden_process()
    args = parser().parse_args(argv)
    try:
        settings = config.load(args.config)
        logs.setup(settings.log_level)
        return COMMANDS[args.command](args, settings)
    except (UsageError, config.ConfigError, keys.KeyError_, StoreError) as err:
        print(f"vigil: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
