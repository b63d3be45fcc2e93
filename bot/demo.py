"""The embedded demo: a seeded network on the console transport, nothing to configure."""

from __future__ import annotations

import time

from bot.i18n import Translator
from handlers.common import role_label
from handlers.invites import create_invite
from storage import cases, crypto, members, reports
from storage.db import Connection
from storage.store import Store

DEMO_PASSPHRASE = "demo-only-not-secret"  # noqa: S105  (the demo holds invented people only)

PERSONAS = {  # what each one is now (their role, or not a member yet) is added by :who
    "admin": "Ada, who runs this network",
    "coordinator": "Chen, a coordinator",
    "relative": "Rana, sister of Nasrin Sotoudeh-Demo",
    "activist": "Alex, a supporter",
    "newcomer": "someone who just found the bot",
}
# `:as Rana` works as well as `:as relative`, in any case.
ALIASES = {"ada": "admin", "chen": "coordinator", "rana": "relative", "alex": "activist"}

CASES = [
    ("ales-demo", "Ales Demo-Bialiatski", "public"),
    ("narges-demo", "Narges Demo-Mohammadi", "public"),
    ("aung-demo", "Aung Demo-Kyi", "public"),
    ("nasrin-demo", "Nasrin Sotoudeh-Demo", "restricted"),
]

INTRO = """\
Welcome to the Vigil demo. Everything here is invented and lives in a throw-away store.

You can be any of these people; switch with  :as NAME  (list with :who, leave with :quit):
  admin, coordinator, relative, activist, newcomer
or, with :as and a name of your own, someone new who can join with an invite code.

A short tour:
  1. You are the newcomer. Send /start, then /cases and /case ales-demo.
  2. :as relative    then /help: a relative sees what a relative may do.
  3. :as coordinator then /invite activist  — an invite code to pass on.
  4. :as newcomer    then /start CODE with that code.
Menus are numbered: answer with the number. Every command is in /help.
"""


def seal_to_throwaway_key(store: Store) -> None:
    """Reports in the demo are sealed to a key pair whose private half is simply forgotten,
    the way a real network's lives off the server (`vigil keys sealing-new` offline)."""
    pair = crypto.sealing_keypair()
    store.slots.sealing_public = pair.public
    store.slots.save(store.master)
    store.db.run_sync(reports.pin_key, crypto.key_fingerprint(pair.public))


def people(conn: Connection) -> dict[str, str]:
    """Everyone on the console who is a member now, and as what, for `:who`."""
    tr = Translator("en")
    return {name: role_label(tr, role) for name, role in members.roles_on(conn, "console").items()}


def seed(conn: Connection, index_key: bytes) -> None:
    now = time.time()
    made = {slug: cases.create(conn, slug, name, vis, now) for slug, name, vis in CASES}
    roles = {
        "admin": "admin",
        "coordinator": "coordinator",
        "relative": "family",
        "activist": "activist",
    }
    for persona, role in roles.items():
        m = members.create(
            conn,
            role=role,
            transport="console",
            address=persona,
            chat=persona,
            now=now,
            language="en",
        )
        if persona == "relative":
            cases.link_member(conn, made["nasrin-demo"].id, m.id, "family")
    # One ready invite so the newcomer can try redeeming without switching personas first.
    create_invite(
        conn,
        index_key,
        role="activist",
        case_slug=None,
        uses=5,
        expires_in=86400,
        created_by=None,
        now=now,
    )
