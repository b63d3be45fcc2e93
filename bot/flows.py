"""Wizards as declared flows: steps with a question and a parser, local commands, abandon, end.

A `Flow` lists its `Step`s in order. Each step asks a question (with choices: buttons on
Telegram, numbered lines on Signal) and parses the answer; a handler moves on with
`fc.next()`, jumps with `fc.goto()`, asks again with `fc.again(problem)` or closes with
`fc.end()`. The engine owns what every wizard shares, so no flow writes it twice:

* Buttons are bound to their step: a choice's value becomes `/pick STEP VALUE`, so a button of
  an earlier question is recognised as such, and a bare number on Signal maps to it.
* `/skip` exists only on steps that declare `skip` (and only those offer a Skip choice): no
  choice is offered that would then be refused. `/back` returns to the previous step.
* Bare `/cancel` abandons the open flow. Any other registered command abandons it too, then
  runs; `on_abandon` cleans up either way. A flow's own commands (`commands`) stay local.
* State lives in the encrypted conversations table. A `secret` flow's data (a report draft) is
  additionally sealed under a key held only in this process's memory, so a restart or a seized,
  powered-off server leaves it unreadable; the member is then told the draft was lost.
* `raise fc.fail(message)` ends the flow and answers; the end survives the rollback of
  everything else the message did (see `bot.context.FlowFailed`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.context import Context, FlowFailed
from bot.i18n import N_
from bot.messages import Choice
from storage import conversations, crypto
from storage.conversations import SEALED_PREFIX, Conversation

DAY = 86400.0
PICK = "pick"


def _no_choices(fc: FlowContext) -> tuple[Choice, ...]:
    return ()


@dataclass(frozen=True)
class Step:
    name: str
    ask: Callable[[FlowContext], str]
    answer: Callable[[FlowContext, str], None]
    choices: Callable[[FlowContext], tuple[Choice, ...]] = _no_choices
    skip: Callable[[FlowContext], None] | None = None  # None: this question cannot be skipped
    skip_label: str = N_("Skip")
    files: bool = False  # photos and documents are an answer here


LocalCommand = Callable[["FlowContext", str], None]


@dataclass(frozen=True)
class Flow:
    name: str
    steps: tuple[Step, ...]
    commands: Mapping[str, LocalCommand] = field(default_factory=dict)
    secret: bool = False
    on_abandon: Callable[[FlowContext], None] | None = None
    on_message: Callable[[FlowContext], None] | None = None  # each message the flow takes
    lost: str = N_("Your unfinished answers were lost when the bot restarted. Please start again.")
    ttl: float = 2 * DAY
    back: bool = True
    files_later: str = N_("Please answer this question first.")

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def after(self, name: str) -> str | None:
        names = [s.name for s in self.steps]
        i = names.index(name)
        return names[i + 1] if i + 1 < len(names) else None


class FlowContext:
    """An open flow for one message: its step, its data, and how to move on."""

    def __init__(
        self,
        engine: Flows,
        ctx: Context,
        flow: Flow,
        step: str,
        data: dict[str, Any],
        history: list[str],
    ) -> None:
        self.engine = engine
        self.ctx = ctx
        self.flow = flow
        self.step = step
        self.data = data
        self.history = history
        self.ended = False

    @property
    def current(self) -> Step:
        return self.flow.step(self.step)

    def ask(self, note: str | None = None) -> None:
        """Send the current step's question (after `note`, if any) and keep the state."""
        self.save()
        step = self.current
        text = step.ask(self)
        self.ctx.reply(f"{note}\n\n{text}" if note else text, self.choices())

    def choices(self) -> tuple[Choice, ...]:
        step = self.current
        out = [
            c if c.value.startswith("/") else Choice(c.label, f"/{PICK} {step.name} {c.value}")
            for c in step.choices(self)
        ]
        if step.skip is not None and not any(c.value == "/skip" for c in out):
            out.append(Choice(self.ctx._(step.skip_label), "/skip"))
        return tuple(out)

    def next(self, note: str | None = None) -> None:
        following = self.flow.after(self.step)
        if following is None:
            raise RuntimeError(f"flow {self.flow.name}: no step after {self.step}")
        self.goto(following, note)

    def goto(self, step: str, note: str | None = None) -> None:
        self.flow.step(step)  # a typo is a bug, not a stuck member
        if step != self.step:
            self.history.append(self.step)
        self.step = step
        self.ask(note)

    def again(self, problem: str) -> None:
        self.ask(problem)

    def back(self) -> bool:
        if not self.history:
            return False
        self.step = self.history.pop()
        self.ask()
        return True

    def end(self) -> None:
        self.ended = True
        self.save()

    def fail(self, message: str) -> FlowFailed:
        self.end()
        return FlowFailed(message)

    def match(self, text: str) -> str | None:
        """A typed answer to a choice step (the label, its number, or the value) -> the value."""
        t = text.strip().lower()
        if not t:
            return None
        for i, c in enumerate(self.current.choices(self), 1):
            label = c.label.lower().removeprefix("✓ ").strip()
            if t in (c.value.lower(), label, str(i)):
                return c.value
        return None

    def save(self) -> None:
        self.engine.save(self)


class Flows:
    """The flow engine the router consults before commands: one per router."""

    def __init__(self, flows: Mapping[str, Flow]) -> None:
        self.flows = dict(flows)
        self.local_names = {PICK, "skip", "back"} | {n for f in flows.values() for n in f.commands}

    # -- state ----------------------------------------------------------------------------------

    def start(
        self, ctx: Context, flow: Flow, data: dict[str, Any], *, step: str | None, note: str | None
    ) -> FlowContext:
        member = ctx.require_member()
        assert self.flows.get(flow.name) is flow, f"flow {flow.name} is not part of this app"
        del member
        fc = FlowContext(self, ctx, flow, step or flow.steps[0].name, data, [])
        fc.ask(note)
        return fc

    def current(self, ctx: Context) -> FlowContext | None:
        found = self._load(ctx)
        return found if isinstance(found, FlowContext) else None

    def _load(self, ctx: Context) -> FlowContext | Flow | None:
        """The open flow; a `Flow` alone when its sealed draft could not be opened (lost)."""
        if ctx.member is None:
            return None
        conv = conversations.get(ctx.conn, ctx.member.id)
        if conv is None:
            return None
        flow = self.flows.get(conv.flow)
        if flow is None or conv.updated_at < ctx.now - flow.ttl:
            conversations.clear(ctx.conn, ctx.member.id)
            return None
        try:
            state = json.loads(self._open(ctx, flow, conv.data))
        except (crypto.CryptoError, ValueError):
            conversations.clear(ctx.conn, ctx.member.id)
            return flow
        return FlowContext(self, ctx, flow, conv.step, state["d"], state["h"])

    def save(self, fc: FlowContext) -> None:
        member = fc.ctx.require_member()
        if fc.ended:
            conversations.clear(fc.ctx.conn, member.id)
            return
        payload = json.dumps({"d": fc.data, "h": fc.history}, ensure_ascii=False)
        if fc.flow.secret:
            blob = crypto.aead_seal(fc.ctx.services.draft_key, payload.encode(), _aad(fc))
            payload = SEALED_PREFIX + base64.b64encode(blob).decode()
        conv = Conversation(fc.flow.name, fc.step, payload)
        conversations.put(fc.ctx.conn, member.id, conv, fc.ctx.now)

    def _open(self, ctx: Context, flow: Flow, payload: str) -> str:
        if not flow.secret:
            return payload
        if not payload.startswith(SEALED_PREFIX):
            raise ValueError("unsealed draft of a secret flow")
        blob = base64.b64decode(payload[len(SEALED_PREFIX) :])
        assert ctx.member is not None
        aad = _aad_for(ctx.member.id, flow.name)
        return crypto.aead_open(ctx.services.draft_key, blob, aad).decode()

    def clear(self, ctx: Context) -> None:
        if ctx.member is not None:
            conversations.clear(ctx.conn, ctx.member.id)

    def abandon(self, fc: FlowContext) -> None:
        if fc.flow.on_abandon is not None:
            fc.flow.on_abandon(fc)
        fc.end()

    # -- routing --------------------------------------------------------------------------------

    def handle(self, ctx: Context, text: str) -> bool:
        """Give the message to the member's open flow; False when it is not the flow's."""
        found = self._load(ctx)
        is_command = text.startswith("/")
        name, _, args = text[1:].partition(" ") if is_command else ("", "", text)
        name = name.split("@", 1)[0].lower()
        if isinstance(found, Flow):
            if is_command and name not in self.local_names and name != "cancel":
                return False
            ctx.reply(ctx._(found.lost))
            return True
        fc = found
        if fc is None:
            if is_command and name == PICK:  # a button whose flow has ended
                ctx.reply(ctx._("That menu has closed. Send the command again to see a new one."))
                return True
            if is_command and name == "skip":
                ctx.reply(ctx._("There is nothing to skip."))
                return True
            return False
        if fc.flow.on_message is not None and (not is_command or self._is_local(fc, name)):
            fc.flow.on_message(fc)
        if not is_command:
            if ctx.incoming.attachments and not fc.current.files:
                fc.again(ctx._(fc.flow.files_later))
                return True
            fc.current.answer(fc, text)
            return True
        args = args.strip()
        if name == "cancel" and not args:
            self.abandon(fc)
            ctx.reply(ctx._("Cancelled. Nothing was saved."))
        elif name == PICK:
            step, _, value = args.partition(" ")
            if step != fc.step:
                fc.again(ctx._("That button belongs to an earlier question."))
            else:
                fc.current.answer(fc, value)
        elif name == "skip":
            skip = fc.current.skip
            if skip is None:
                fc.again(ctx._("This question cannot be skipped."))
            else:
                skip(fc)
        elif name == "back" and fc.flow.back:
            if not fc.back():
                fc.again(ctx._("This is the first question."))
        elif name in fc.flow.commands:
            fc.flow.commands[name](fc, args)
        else:
            return False
        return True

    @staticmethod
    def _is_local(fc: FlowContext, name: str) -> bool:
        return name in (PICK, "skip", "back") or name in fc.flow.commands


def _aad(fc: FlowContext) -> bytes:
    member = fc.ctx.require_member()
    return _aad_for(member.id, fc.flow.name)


def _aad_for(member_id: int, flow: str) -> bytes:
    return f"vigil/flow-draft|member={member_id}|flow={flow}".encode()
