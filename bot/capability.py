"""What a capability adds to the app, and the registry the app composes from a list of them.

Each package under `handlers/` exposes `capability() -> Capability`: its commands, flows,
periodic jobs, outbox producers, alarm and status sources. `bot/app.py` composes the list it is
given (all of `handlers.capabilities()` by default; tests may pass a subset). Nothing registers
itself in a global at import: a capability that needs another calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from bot.context import Context
from bot.flows import Flow
from bot.jobs import Alarm, PeriodicJob, Producer, Upcoming
from storage.members import Member

Handler = Callable[[Context, str], None]
# A member's plain text that no flow took and that is not a command: True when taken (a
# relative's news offered as a report), False to let the next one, or "not understood", answer.
FreeText = Callable[[Context, str], bool]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    roles: frozenset[str] | None  # None: anyone, members or not
    summary: str
    order: int = 50
    hidden: bool = False  # not listed in /help or platform menus


def may_use(cmd: Command, member: Member | None) -> bool:
    if cmd.roles is None:
        return True
    return member is not None and member.role in cmd.roles


class Commands:
    """A capability's command table, filled by decorating its handlers (one per package)."""

    def __init__(self) -> None:
        self.table: dict[str, Command] = {}

    def command(
        self,
        name: str,
        *,
        roles: frozenset[str] | None,
        summary: str,
        order: int = 50,
        hidden: bool = False,
    ) -> Callable[[Handler], Handler]:
        def add(fn: Handler) -> Handler:
            if name in self.table:
                raise RuntimeError(f"command /{name} declared twice")
            self.table[name] = Command(name, fn, roles, summary, order, hidden)
            return fn

        return add

    def __iter__(self) -> Iterator[Command]:
        return iter(self.table.values())


@dataclass(frozen=True)
class Capability:
    name: str
    commands: tuple[Command, ...] = ()
    flows: tuple[Flow, ...] = ()
    jobs: tuple[PeriodicJob, ...] = ()
    producers: tuple[Producer, ...] = ()
    alarm: Alarm | None = None
    upcoming: tuple[Upcoming, ...] = ()
    free_text: tuple[FreeText, ...] = ()


@dataclass
class Registry:
    """The composed app: every command and flow by name, and the background work to run."""

    commands: dict[str, Command] = field(default_factory=dict)
    flows: dict[str, Flow] = field(default_factory=dict)
    jobs: list[PeriodicJob] = field(default_factory=list)
    producers: list[Producer] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
    upcoming: list[Upcoming] = field(default_factory=list)
    free_text: list[FreeText] = field(default_factory=list)

    @classmethod
    def of(cls, capabilities: Iterable[Capability]) -> Registry:
        reg = cls()
        for cap in capabilities:
            for cmd in cap.commands:
                if cmd.name in reg.commands:
                    raise RuntimeError(f"command /{cmd.name} declared by two capabilities")
                reg.commands[cmd.name] = cmd
            for flow in cap.flows:
                if flow.name in reg.flows:
                    raise RuntimeError(f"flow {flow.name} declared by two capabilities")
                reg.flows[flow.name] = flow
            reg.jobs += cap.jobs
            reg.producers += cap.producers
            reg.alarms += [cap.alarm] if cap.alarm is not None else []
            reg.upcoming += cap.upcoming
            reg.free_text += cap.free_text
        return reg

    def allowed(self, member: Member | None) -> list[Command]:
        out = [c for c in self.commands.values() if not c.hidden and may_use(c, member)]
        return sorted(out, key=lambda c: (c.order, c.name))
