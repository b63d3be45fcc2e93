"""`vigil init`, `vigil run`, `vigil demo` and `vigil invite`: making, running and joining a
network."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot import config, logs
from bot.cli.common import (
    EXIT_OK,
    UsageError,
    audit_cli,
    network_passphrase,
    unlock_store,
    whole_number,
)
from storage import keys, members
from storage.db import StoreError
from storage.store import NetworkExists, Store, begin_unlock, init_network, unlock


def _role(word: str) -> str:
    """`--role supporter` or `--role activist`: the words of /invite (storage.members)."""
    role = members.parse_role(word)
    if role is None:
        raise argparse.ArgumentTypeError(
            f"unknown role {word!r}: use supporter, relative, coordinator or admin"
        )
    return role


NEXT_STEP = """\
Next step: the sealing key, which opens relatives' reports. Until this network has one,
reports are refused. Make it on an offline computer (not this server):
    vigil keys sealing-new --out sealing.key
then copy sealing.key.pub here and run:
    vigil keys sealing-import sealing.key.pub
Both commands show the same eight words: read them aloud to each other to be sure."""


def register(sub: Any) -> None:
    i = sub.add_parser(
        "init",
        help="create the data dir, key slots and encrypted database",
        description="Create a new network in VIGIL_DATA_DIR: the key slots, the encrypted "
        "database, and a one-time admin invite code. Asks for a passphrase (at least "
        f"{keys.MIN_PASSPHRASE_CHARS} characters) twice unless VIGIL_PASSPHRASE(_FILE) is set. "
        "Never overwrites an existing network.",
    )
    i.set_defaults(func=cmd_init)

    r = sub.add_parser(
        "run",
        help="run the bot on every configured transport",
        description="Run the bot on every configured transport until SIGINT or SIGTERM, then "
        "drain the outbox and exit 0.",
    )
    r.set_defaults(func=cmd_run)

    d = sub.add_parser(
        "demo",
        help="a seeded demo network in this terminal, nothing to configure",
        description="A seeded demo network on the console: invented people only.",
    )
    d.add_argument(
        "--data-dir", metavar="DIR", help="keep the demo network here instead of a throw-away dir"
    )
    d.set_defaults(func=cmd_demo)

    v = sub.add_parser(
        "invite",
        help="print a new invite code",
        description="Print a new invite code (and a Telegram link when the bot's name is known).",
    )
    v.add_argument(
        "--role",
        required=True,
        type=_role,
        metavar="ROLE",
        help="what the invited person becomes: supporter (or activist), relative (or family), "
        "coordinator or admin",
    )
    v.add_argument("--case", metavar="SLUG", help="the case they join (required for family)")
    v.add_argument(
        "--uses",
        type=whole_number("--uses", 1, 10_000, 5),
        default=1,
        help="how many people may redeem it, 1 to 10000 (default 1)",
    )
    v.add_argument(
        "--expires",
        default="7d",
        metavar="DURATION",
        help="how long it stays valid: 30m, 12h, 7d or 2w (default 7d)",
    )
    v.set_defaults(func=cmd_invite)


# --- init ----------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, settings: config.Settings) -> int:
    from handlers.invites import DEFAULT_EXPIRY, create_invite
    from storage.backup import network_exists

    if network_exists(settings.data_dir):  # before asking for a passphrase twice
        raise NetworkExists(
            f"A network already exists in {settings.data_dir}; refusing to overwrite it "
            "(use `vigil wipe` first if you really mean to start over)."
        )
    passphrase = network_passphrase(settings, confirm=True, check=keys.check_passphrase_strength)
    store = init_network(settings.data_dir, passphrase)
    del passphrase
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
    print()
    print(NEXT_STEP)
    return EXIT_OK


# --- invite --------------------------------------------------------------------------------


def cmd_invite(args: argparse.Namespace, settings: config.Settings) -> int:
    from handlers.invites import InviteError, create_invite, parse_duration

    try:
        expires_in = parse_duration(args.expires)
    except InviteError:
        raise UsageError("--expires takes a number and a unit: 30m, 12h, 7d or 2w.") from None
    store = unlock_store(settings)
    try:
        code = store.db.run_sync(
            lambda conn: create_invite(
                conn, store.subkeys.index, role=args.role, case_slug=args.case, uses=args.uses,
                expires_in=expires_in, created_by=None, now=time.time(),
            )
        )  # fmt: skip
        store.db.run_sync(audit_cli, "invite.created", f"role:{args.role}")
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


def _telegram_username(settings: config.Settings) -> str | None:
    try:
        from bot.transports.telegram import fetch_username
    except ImportError:
        return None
    try:
        return asyncio.run(fetch_username(settings))
    except Exception:
        return None


# --- run and demo --------------------------------------------------------------------------


def run_app(
    store: Store,
    settings: config.Settings,
    transports: list[Any],
    on_ready: Callable[[Any, asyncio.Event], None] | None = None,
) -> int:
    from bot.app import App

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        app = App(store, settings, transports)
        if on_ready:
            on_ready(app, stop)
        await app.run(stop)

    try:
        asyncio.run(main())
    finally:
        store.close()
    return EXIT_OK


def cmd_run(args: argparse.Namespace, settings: config.Settings) -> int:
    if not (settings.telegram_enabled or settings.signal_enabled):
        raise UsageError(
            "No transport configured: set VIGIL_TELEGRAM_TOKEN for Telegram, or "
            "VIGIL_SIGNAL_API_URL and VIGIL_SIGNAL_NUMBER for Signal (or try `vigil demo`)."
        )
    from storage.wipe import RunLock

    # Unlock (Argon2id, then the integrity check) runs on a worker thread while this one
    # imports and builds the bot: start-up costs the longer of the two, not their sum.
    # VIGIL_SERIAL_UNLOCK=1 does one after the other, for bench/scale.py's side-by-side.
    pending = begin_unlock(settings.data_dir, network_passphrase(settings))
    if os.environ.get("VIGIL_SERIAL_UNLOCK") == "1":
        concurrent.futures.wait([pending])
    try:
        from bot.app import build_transports  # importing the bot is most of the work here

        transports = build_transports(settings)
    except BaseException:
        with contextlib.suppress(BaseException):
            pending.result().close()
        raise
    store = pending.result()
    try:
        lock = RunLock(settings.data_dir).acquire()  # one bot per data dir
    except StoreError:
        store.close()
        raise
    try:
        return run_app(store, settings, transports)
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

    async def people() -> dict[str, str]:
        return await store.db.run(demo.people)

    console = ConsoleTransport(
        demo.PERSONAS, "newcomer", intro=demo.INTRO, aliases=demo.ALIASES, people=people
    )

    def ready(app: Any, stop: asyncio.Event) -> None:
        console.settle = app.settle
        console.on_quit = stop.set

    try:
        return run_app(store, settings, [console], ready)
    finally:
        if tmp is not None:
            tmp.cleanup()
