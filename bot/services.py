"""What handlers and jobs may use besides the connection: keys, settings and app hooks, no I/O."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bot.transports.base import Capabilities
from storage import crypto


def _nothing() -> None:
    return None


@dataclass
class Services:
    index_key: bytes
    invite_only: bool = False
    # Audiences larger than this need a second person's approval (issue 14, two-person rule).
    approval_threshold: int = 200
    default_language: str = "en"
    default_timezone: str = "UTC"
    bot_links: dict[str, str] = field(default_factory=dict)  # transport -> deep-link prefix
    sealing_public: bytes | None = None
    delete_reports: bool = True  # remove relatives' report messages from platforms that allow it
    max_attachment_bytes: int = 10 * 1024 * 1024
    max_attachments: int = 5
    # What each running transport can do (filled by the app); handlers ask it instead of
    # branching on a transport's name.
    transports: dict[str, Capabilities] = field(default_factory=dict)
    # Wizard drafts are sealed under this key; it lives only in this process's memory, so a
    # restart (or a seized, powered-off server) leaves unfinished drafts unreadable.
    draft_key: bytes = field(default_factory=crypto.random_bytes, repr=False)
    # Set by the app. `panic` schedules the panic wipe (thread-safe, non-blocking);
    # `poke_alarm` re-arms the actions alarm after a schedule changed (also thread-safe).
    panic: Callable[[], None] | None = None
    poke_alarm: Callable[[], None] = _nothing

    def capabilities(self, transport: str) -> Capabilities:
        return self.transports.get(transport, Capabilities())
