"""Authorization matrix: every registered chat command x every role (THREATS.md rule 3).

Built from the app's registry (`bot.app.default_registry()`), so a command someone adds is covered
or fails the suite: a
registered command missing from EXPECT fails `test_every_registered_command_is_in_the_table`.

Outcomes:
    A  allowed: the command acts (or answers); neither the unknown-command nor a not-found
       answer.
    R  refused with an explanation that reveals nothing (e.g. "Send /start to join first"),
       and nothing changes.
    U  denied by role: answered exactly like an unknown command, nothing changes.
    N  denied for this case (or its action, report, alert): answered exactly like the same
       command aimed at something that does not exist (PROBES), nothing changes.

"Nothing changes" compares a dump of every table before and after, leaving out the inbox row
and the one answer to the sender; notifications to anyone else count as changes. Independently
of the outcome, nobody but alpha's relatives, its coordinator and admins may change anything
that belongs to case alpha's authority (its sheet, updates, reports, alerts, actions,
invites, broadcasts to its followers).

Cells that currently break the rules are listed in FINDINGS with the reason; they run as
strict xfail, so they turn red the day they are fixed and the entry must go.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.app import default_registry
from bot.capability import may_use
from storage import members
from storage.store import init_network
from tests.authz_world import ROLES, SENDER, World, build_world
from tests.harness import PASSPHRASE, ChatHarness, Clock

A, R, U, N = "A", "R", "U", "N"


def row(nonmember: str, activist: str, family_this: str, family_other: str,
        coordinator: str, coordinator_other: str, admin: str) -> dict[str, str]:  # fmt: skip
    return dict(zip(ROLES, (nonmember, activist, family_this, family_other, coordinator,
                            coordinator_other, admin), strict=True))  # fmt: skip


# command -> (message, expectations). Placeholders: {alpha} etc. from World.ids.
EXPECT: dict[str, tuple[str, dict[str, str]]] = {
    # -- anyone ----------------------------------------------------------------------------
    "start": ("/start", row(A, R, R, R, R, R, R)),
    "help": ("/help", row(A, A, A, A, A, A, A)),
    "cases": ("/cases", row(A, A, A, A, A, A, A)),
    "case": ("/case alpha", row(N, N, A, N, A, A, A)),
    "letters": ("/letters alpha", row(N, N, A, N, A, A, A)),
    "language": ("/language en", row(R, A, A, A, A, A, A)),
    "timezone": ("/timezone Europe/Minsk", row(R, A, A, A, A, A, A)),
    "quiet": ("/quiet 22-7", row(R, A, A, A, A, A, A)),
    "mydata": ("/mydata", row(A, A, A, A, A, A, A)),
    "link": ("/link", row(R, A, A, A, A, A, A)),
    "unlink": ("/unlink signal", row(R, R, R, R, R, R, R)),
    "forgetme": ("/forgetme", row(R, A, A, A, A, A, A)),
    # Bare /cancel outside a dialog drops one's own pending broadcast (cob's and ada's drafts);
    # coo has several pending, so they are listed and an id is asked for (nothing changes).
    "cancel": ("/cancel", row(R, R, R, R, R, A, A)),
    # -- members ---------------------------------------------------------------------------
    "subscribe": ("/subscribe alpha", row(U, N, A, N, A, A, A)),
    "unsubscribe": ("/unsubscribe alpha", row(U, N, A, N, A, A, A)),
    "subscriptions": ("/subscriptions", row(U, A, A, A, A, A, A)),
    "actions": ("/actions", row(U, A, A, A, A, A, A)),
    "join": ("/join {action}", row(U, N, A, N, A, A, A)),
    "leave": ("/leave {action}", row(U, N, A, N, A, A, A)),
    "wrote": ("/wrote alpha", row(U, N, A, N, A, A, A)),
    # -- relatives -------------------------------------------------------------------------
    # A relative of another case files for their own case (the slug is read as text).
    "report": ("/report alpha The visit went well.", row(U, U, A, A, U, U, U)),
    "urgent": ("/urgent alpha He needs a doctor now.", row(U, U, A, A, U, U, U)),
    # -- coordinators ----------------------------------------------------------------------
    "newcase": ("/newcase gamma Gamma G.", row(U, U, U, U, A, A, A)),
    "editcase": ("/editcase alpha summary A new summary.", row(U, U, U, U, A, N, A)),
    "update": ("/update alpha hearing: Court on Monday.", row(U, U, U, U, A, N, A)),
    "reports": ("/reports alpha", row(U, U, U, U, A, N, A)),
    "publish": ("/publish {report} He is in good spirits.", row(U, U, U, U, A, N, A)),
    "ack": ("/ack {alert}", row(U, U, U, U, A, N, A)),
    "schedule": (
        "/schedule alpha 2026-12-02T10:00 Letters evening",
        row(U, U, U, U, A, N, A),
    ),
    "headcount": ("/headcount {action}", row(U, U, U, U, A, N, A)),
    "editaction": ("/editaction {action} title New title", row(U, U, U, U, A, N, A)),
    "unschedule": ("/unschedule {action}", row(U, U, U, U, A, N, A)),
    "template": ("/template oct30 on", row(U, U, U, U, A, A, A)),
    "broadcast": ("/broadcast case:alpha Come to the court.", row(U, U, U, U, A, N, A)),
    "invite": ("/invite family alpha", row(U, U, U, U, A, N, A)),
    "confirm": ("/confirm", row(U, U, U, U, A, A, A)),
    # A translation is its author's to add: anyone else hears "no such draft".
    "translate": ("/translate {b_draft} ru Приходите в суд.", row(U, U, U, U, A, N, N)),
    # A read of the member's own cases and requests: every coordinator gets an answer.
    "overview": ("/overview", row(U, U, U, U, A, A, A)),
    # -- administrators --------------------------------------------------------------------
    "promote": ("/promote {m_act} coordinator", row(U, U, U, U, U, U, A)),
    "revoke": ("/revoke {m_act}", row(U, U, U, U, U, U, A)),
    "audit": ("/audit", row(U, U, U, U, U, U, A)),
    "members": ("/members", row(U, U, U, U, U, U, A)),
    "assign": ("/assign {m_cob} alpha", row(U, U, U, U, U, U, A)),
    "unassign": ("/unassign {m_coo} alpha", row(U, U, U, U, U, U, A)),
    # -- the pending approval: coo's network-wide broadcast, waiting for a second person ----
    # Its initiator is told why not (R); the coordinator of another case is not eligible and
    # hears "no such request" (N); the admin decides.
    "approve": ("/approve {approval}", row(U, U, U, U, R, N, A)),
    "reject": ("/reject {approval}", row(U, U, U, U, R, N, A)),
    "captcha": ("/captcha signalcaptcha://x", row(U, U, U, U, U, U, A)),
    # Only a coordinator of the member's cases (or an admin) may confirm them; none is pending.
    "trust": ("/trust {m_act}", row(U, U, U, U, N, N, R)),
    "panic": ("/panic", row(U, U, U, U, U, U, A)),
}

REGISTRY = default_registry()

# The same command aimed at something that does not exist: what N must read like.
PROBES: dict[str, str] = {
    "case": "/case nosuchcase",
    "letters": "/letters nosuchcase",
    "subscribe": "/subscribe nosuchcase",
    "unsubscribe": "/unsubscribe nosuchcase",
    "join": "/join 987654",
    "leave": "/leave 987654",
    "wrote": "/wrote nosuchcase",
    "editcase": "/editcase nosuchcase summary A new summary.",
    "update": "/update nosuchcase hearing: Court on Monday.",
    "reports": "/reports nosuchcase",
    "publish": "/publish 987654 He is in good spirits.",
    "ack": "/ack 987654",
    "schedule": "/schedule nosuchcase 2026-12-02T10:00 Letters evening",
    "headcount": "/headcount 987654",
    "editaction": "/editaction 987654 title New title",
    "unschedule": "/unschedule 987654",
    "broadcast": "/broadcast case:nosuchcase Come to the court.",
    "invite": "/invite family nosuchcase",
    "trust": "/trust 987654",
    "approve": "/approve 987654",
    "translate": "/translate 987654 ru Приходите в суд.",
    "reject": "/reject 987654",
}

# The same commands aimed at one particular fan-out of case alpha's coordinator (coo), or at
# a network-wide audience: rows of their own, checked exactly like EXPECT's.
VARIANTS: dict[str, tuple[str, dict[str, str], str | None]] = {
    # A draft is its author's alone; a running fan-out also stops for an admin.
    "cancel-draft": ("/cancel {b_draft}", row(R, R, R, R, A, N, N), "/cancel 987654"),
    "cancel-running": ("/cancel {b_running}", row(R, R, R, R, A, N, A), "/cancel 987654"),
    "cancel-waiting": ("/cancel {b_waiting}", row(R, R, R, R, A, N, N), "/cancel 987654"),
    "confirm-draft": ("/confirm {b_draft}", row(U, U, U, U, A, N, N), "/confirm 987654"),
    # Waiting for approval: confirming again only says so, for its author.
    "confirm-waiting": ("/confirm {b_waiting}", row(U, U, U, U, A, N, N), "/confirm 987654"),
    "broadcast-all": ("/broadcast all Vigil at noon.", row(U, U, U, U, A, A, A), None),
    "broadcast-family": ("/broadcast role:family Vigil.", row(U, U, U, U, A, A, A), None),
    "broadcast-admins": ("/broadcast role:admin Vigil.", row(U, U, U, U, A, A, A), None),
    "broadcast-lang": ("/broadcast lang:en Vigil.", row(U, U, U, U, A, A, A), None),
}

FINDINGS: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir: Path = tmp_path_factory.mktemp("authz") / "data"
    store = init_network(data_dir, PASSPHRASE)
    try:
        yield build_world(ChatHarness(store, Clock()))
    finally:
        store.close()


def _cells() -> list[object]:
    out = []
    for name, (_text, expect) in EXPECT.items():
        if name not in REGISTRY.commands:
            continue
        for role in ROLES:
            marks = []
            if (name, role) in FINDINGS:
                marks.append(pytest.mark.xfail(strict=True, reason=FINDINGS[(name, role)]))
            out.append(pytest.param(name, role, id=f"{name}-{role}", marks=marks))
    return out


def test_every_registered_command_is_in_the_table() -> None:
    missing = sorted(set(REGISTRY.commands) - set(EXPECT))
    assert not missing, f"commands without authorization expectations: {missing}"
    gone = sorted(set(EXPECT) - set(REGISTRY.commands))
    assert not gone, f"expectations for commands that are not registered: {gone}"
    for name, _ in EXPECT.items():
        if name in REGISTRY.commands and any(v == N for v in EXPECT[name][1].values()):
            assert name in PROBES, f"/{name} has N cells but no probe"


def test_role_level_expectations_match_the_registry() -> None:
    """U exactly where the router's role check denies; nowhere else."""
    fake = {
        "nonmember": None,
        "activist": members.Member(1, "activist", None, None, None),
        "family_this": members.Member(2, "family", None, None, None),
        "family_other": members.Member(3, "family", None, None, None),
        "coordinator": members.Member(4, "coordinator", None, None, None),
        "coordinator_other": members.Member(5, "coordinator", None, None, None),
        "admin": members.Member(6, "admin", None, None, None),
    }
    for name, (_text, expect) in EXPECT.items():
        cmd = REGISTRY.commands.get(name)
        if cmd is None:
            continue
        for role in ROLES:
            assert (expect[role] == U) == (not may_use(cmd, fake[role])), (name, role)


@pytest.mark.parametrize(("name", "role"), _cells())
def test_matrix(world: World, name: str, role: str) -> None:
    text, expect = EXPECT[name]
    check(world, name, role, text, expect[role], PROBES.get(name))


@pytest.mark.parametrize(
    ("name", "role"), [pytest.param(n, r, id=f"{n}-{r}") for n in VARIANTS for r in ROLES]
)
def test_matrix_variants(world: World, name: str, role: str) -> None:
    text, expect, probe = VARIANTS[name]
    check(world, name, role, text, expect[role], probe)


def check(
    world: World, name: str, role: str, text: str, outcome: str, probe_text: str | None
) -> None:
    got = world.probe(role, world.fill(text))
    assert got.reply, f"/{name} as {role}: no answer at all"
    assert "Something went wrong" not in got.reply, f"/{name} as {role} crashed"
    unknown = world.unknown[role]
    if outcome == U:
        assert got.reply == unknown
    elif outcome == N:
        assert probe_text is not None, f"/{name} has N cells but no probe"
        probe = world.probe(role, world.fill(probe_text))
        assert got.reply == probe.reply, "a denial must read exactly like 'not found'"
        assert got.reply != unknown or probe.reply == unknown
    else:
        assert got.reply != unknown, f"/{name} as {role} was denied"
        # A variant's R is the same refusal as for a number that does not exist.
        if probe_text is not None and (outcome == A or name in EXPECT):
            probe = world.probe(role, world.fill(probe_text))
            assert got.reply != probe.reply, f"/{name} as {role} answered 'not found'"
    if outcome in (U, N, R):
        assert not got.changes, f"/{name} as {role} changed {sorted(got.changes)}"
        assert got.outbox_to_others == 0
    if role not in ("family_this", "coordinator", "admin"):
        assert not got.alpha_changed, f"/{name} as {role} touched case alpha"


def test_help_lists_exactly_the_allowed_commands(world: World) -> None:
    for role in ROLES:
        reply = world.probe(role, "/help").reply
        listed = {line.split(" ", 1)[0][1:] for line in reply.splitlines() if line.startswith("/")}
        allowed = {
            name
            for name, (_t, expect) in EXPECT.items()
            if name in REGISTRY.commands
            and expect[role] != U
            and not getattr(REGISTRY.commands[name], "hidden", False)  # wizard buttons
        }
        assert listed == allowed, role


def test_denied_commands_do_not_reveal_roles(world: World) -> None:
    """An admin-only command and a nonsense one read alike to every lesser role."""
    for role in ROLES[:-1]:
        assert world.probe(role, "/panic").reply == world.unknown[role]
        assert world.probe(role, "/audit").reply == world.unknown[role]


def test_senders_are_distinct() -> None:
    assert len(set(SENDER.values())) == len(ROLES)
