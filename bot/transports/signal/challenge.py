"""Signal's rate-limit challenge: suspending sends, telling the admins, lifting it with a captcha.

When Signal wants proof that a person runs the account (json-rpc mode: HTTP 429 with
`challenge_tokens`; normal mode: a 400 saying "CAPTCHA proof required … challenge token …"),
sending is suspended for `suspend_seconds` (the "wait N seconds" of the answer when given;
doubled, up to a day, when it trips again within an hour of the last one):

* ALERT and BULK rows get `Suspended` without calling the API (a `RetryLater` whose
  `retry_after` is at most RECHECK, so the dispatcher pauses them without spending attempts
  and asks again soon);
* EMERGENCY rows are always tried; REPLY rows get a budget of one per `reply_interval` s;
* a send that began after the challenge and succeeds proves the limit lifted: sending
  resumes at once. So does a solved captcha.

The admins are told exactly what to do (`alert_text`): open the captcha page that signal-cli
names for rate-limit challenges, solve it, copy the `signalcaptcha://…` link, and give it to
Vigil with `/captcha signalcaptcha://…` in chat or `vigil signal captcha` on the server. That
ends in `SignalTransport.solve_challenge`, which submits it with the pending challenge token
(`POST /v1/accounts/{number}/rate-limit-challenge`). The token stays in this process's
memory only; neither it nor a captcha ever reaches a log line or an alert.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections.abc import Callable

import httpx

from bot.messages import Priority
from bot.transports.base import RetryLater
from bot.transports.signal.rest import SignalRest, error_text

log = logging.getLogger(__name__)

# signal-cli's own pointer for rate-limit challenges (man page, submitRateLimitChallenge):
# the registration captcha page gives a token Signal refuses here ("invalid captcha action").
CAPTCHA_PAGE = "https://signalcaptchas.org/challenge/generate.html"
CAPTCHA_SCHEME = "signalcaptcha://"
MAX_CAPTCHA = 4096
MAX_SUSPENSION = 86_400.0
MIN_SUSPENSION = 60.0
ESCALATION_WINDOW = 3600.0
# The longest pause handed to the dispatcher at a time: after a solved captcha, alerts and
# broadcasts held back by an earlier answer go out within this many seconds.
RECHECK = 15.0

_TOKEN = re.compile(r"[A-Za-z0-9+/=_.:-]{1,512}")
_CAPTCHA = re.compile(r"signalcaptcha://[!-~]{1,4000}")  # printable ASCII, no spaces


class Suspended(RetryLater):
    """Not sent, the API was not called: Signal sending is suspended for this priority."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("suspended", max(0.1, retry_after))


class ChallengeOutcome(enum.Enum):
    """What became of a captcha given to `solve_challenge`; `text` says it in plain words."""

    SOLVED = "solved"
    REJECTED = "rejected"
    NOT_PENDING = "not_pending"
    MALFORMED = "malformed"
    UNAVAILABLE = "unavailable"

    @property
    def text(self) -> str:
        return _OUTCOME_TEXT[self]

    @property
    def ok(self) -> bool:
        return self is ChallengeOutcome.SOLVED


_OUTCOME_TEXT = {
    ChallengeOutcome.SOLVED: (
        "Signal accepted the captcha. Sending has resumed: messages that waited go out now."
    ),
    ChallengeOutcome.REJECTED: (
        "Signal rejected this captcha: it may be too old, already used, or solved from a "
        "different network. Sending is still paused. Solve a new one and send it within a "
        "few minutes."
    ),
    ChallengeOutcome.NOT_PENDING: (
        "Signal is not asking for a captcha at the moment: nothing to do."
    ),
    ChallengeOutcome.MALFORMED: (
        "That is not a captcha link. After solving the captcha, copy the link that starts "
        "with signalcaptcha:// and send all of it."
    ),
    ChallengeOutcome.UNAVAILABLE: (
        "The captcha could not be handed to Signal (signal-cli-rest-api did not answer). "
        "Sending is still paused. Try again in a minute."
    ),
}


def clean_captcha(raw: str) -> str | None:
    """The captcha link as Signal wants it, or None. People paste it with spaces, quotes or
    angle brackets around it, or the page's "Open Signal" text in front."""
    text = raw.strip().strip("<>\"'`").strip()
    at = text.find(CAPTCHA_SCHEME)
    if at < 0:
        return None
    text = text[at:].split()[0].strip("<>\"'`")
    if len(text) > MAX_CAPTCHA or not _CAPTCHA.fullmatch(text):
        return None
    return text


def alert_text(minutes: int, reply_interval: float, has_token: bool) -> str:
    """What the admins are told, on every transport, when Signal demands a challenge."""
    lines = [
        f"Signal has paused Vigil's sending (a rate limit) for up to {minutes} minutes. "
        "Alerts and broadcasts wait; replies go out at most one every "
        f"{reply_interval:.0f} seconds; emergencies are still tried.",
    ]
    if has_token:
        lines += [
            "To lift it now, one admin:",
            f"1) opens {CAPTCHA_PAGE} in a browser and solves the captcha;",
            '2) copies the link the page then offers ("Open Signal"): it starts with '
            "signalcaptcha://",
            "3) sends it to this bot as /captcha signalcaptcha://… , or runs "
            "vigil signal captcha 'signalcaptcha://…' on the server.",
            "A captcha is only good for a few minutes. Vigil says whether Signal accepted it.",
        ]
    else:
        lines.append(
            "Signal gave no challenge to solve: it resumes by itself. Keep broadcasts small "
            "for a while."
        )
    return "\n".join(lines)


RESUMED_TEXT = "Signal sending has resumed: alerts and broadcasts that waited go out now, slowly."


class Suspension:
    """The suspension state and the pending challenge token (clock seconds)."""

    def __init__(
        self,
        *,
        suspend_seconds: float = 3600.0,
        reply_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.suspend_seconds = suspend_seconds
        self.reply_interval = reply_interval
        self.clock = clock
        self.until = 0.0
        self.length = 0.0
        self.began = 0.0
        self.ended = -ESCALATION_WINDOW * 2
        self.next_reply = 0.0
        self._token: str | None = None

    @property
    def active(self) -> bool:
        return self.clock() < self.until

    @property
    def pending(self) -> bool:
        """A challenge token waits for a captcha."""
        return self._token is not None and self.active

    @property
    def token(self) -> str | None:
        return self._token if self.active else None

    def gate(self, priority: int) -> str | None:
        """Raise Suspended when a message of this priority must wait; returns a reason to
        announce ("the suspension period ended") when the suspension just lapsed."""
        now = self.clock()
        if self.until == 0.0:
            return None
        if now >= self.until:
            self.lift()
            return "the suspension period ended"
        if priority == Priority.EMERGENCY:
            return None  # always tried: a possible delay is worse than another challenge
        if priority == Priority.REPLY:
            if now >= self.next_reply:
                self.next_reply = now + self.reply_interval
                return None
            raise Suspended(min(RECHECK, self.next_reply - now))
        raise Suspended(min(RECHECK, self.until - now))

    def proves_lifted(self, started: float) -> bool:
        """A send that began after the challenge succeeded (one already in flight when the
        429 came may still succeed and proves nothing)."""
        return bool(self.until) and started >= self.began

    def lift(self) -> None:
        self.until = 0.0
        self.ended = self.clock()
        self._token = None

    def begin(self, wait: float | None, tokens: list[str]) -> tuple[float, int | None]:
        """Enter (or extend) the suspension. Returns (pause for the dispatcher, minutes to
        announce or None when it was already suspended)."""
        now = self.clock()
        token = next((t for t in reversed(tokens) if _TOKEN.fullmatch(t)), None)
        if token is not None:
            self._token = token  # the newest challenge is the one Signal will check
        seconds = wait if wait is not None else self.suspend_seconds
        if now < self.until:
            self.until = max(self.until, now + seconds)
            return min(RECHECK, self.until - now), None
        if token is None:
            self._token = None  # an old token from a lapsed suspension is no good
        if now - self.ended < ESCALATION_WINDOW and wait is None:
            seconds = max(seconds, self.length * 2)
        seconds = min(MAX_SUSPENSION, max(MIN_SUSPENSION, seconds))
        self.length = seconds
        self.began = now
        self.until = now + seconds
        self.next_reply = now + self.reply_interval
        return min(RECHECK, seconds), max(1, round(seconds / 60))


class ChallengeDesk:
    """Suspends and resumes sending, tells the admins, and submits captchas.

    `alert(text)` reaches the admins on every transport; `on_resume`, when set, is told that
    sending resumed (the app can wake its dispatcher instead of waiting up to RECHECK s)."""

    def __init__(
        self, rest: SignalRest, suspension: Suspension, alert: Callable[[str], None]
    ) -> None:
        self.rest = rest
        self.suspension = suspension
        self.alert = alert
        self.on_resume: Callable[[], None] | None = None
        self._alerted_token = False

    def gate(self, priority: int) -> None:
        """Raises Suspended when a message of this priority must wait."""
        lapsed = self.suspension.gate(priority)
        if lapsed is not None:
            self._resumed(lapsed)

    def succeeded(self, started: float) -> None:
        """A send that began at `started` succeeded."""
        if self.suspension.proves_lifted(started):
            self.resume("a send succeeded")

    def suspend(self, wait: float | None, tokens: list[str]) -> float:
        """Enter (or extend) the suspension; returns the pause for the dispatcher."""
        pause, minutes = self.suspension.begin(wait, tokens)
        has_token = self.suspension.token is not None
        if minutes is not None:
            log.warning("Signal sending SUSPENDED by a rate-limit challenge for up to %d min; "
                        "the admins were told how to lift it (%s)", minutes,
                        "a captcha is asked" if has_token else "no captcha offered")  # fmt: skip
            self._alerted_token = has_token
            self.alert(alert_text(minutes, self.suspension.reply_interval, has_token))
        elif has_token and not self._alerted_token:
            # The first answers came without a challenge; this one offers a captcha.
            self._alerted_token = True
            left = max(1, round((self.suspension.until - self.suspension.clock()) / 60))
            self.alert(alert_text(left, self.suspension.reply_interval, True))
        return pause

    async def solve(self, captcha: str) -> ChallengeOutcome:
        link = clean_captcha(captcha)
        if link is None:
            return ChallengeOutcome.MALFORMED
        token = self.suspension.token
        if token is None:
            return ChallengeOutcome.NOT_PENDING
        try:
            resp = await self.rest.submit_challenge(token, link)
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("rate-limit challenge: the captcha could not be submitted (%s)",
                        type(exc).__name__)  # fmt: skip
            return ChallengeOutcome.UNAVAILABLE
        if resp.status_code in (200, 204):
            log.warning("rate-limit challenge: Signal accepted the captcha")
            self.resume("the captcha was accepted")
            return ChallengeOutcome.SOLVED
        text = error_text(resp).lower() if resp.status_code == 400 else ""
        if "captcha rejected" in text or "invalid captcha" in text:
            log.warning("rate-limit challenge: Signal rejected the captcha; still suspended")
            return ChallengeOutcome.REJECTED
        log.warning("rate-limit challenge: the captcha could not be submitted (HTTP %d)",
                    resp.status_code)  # fmt: skip
        return ChallengeOutcome.UNAVAILABLE

    def resume(self, why: str) -> None:
        self.suspension.lift()
        self._resumed(why)

    def _resumed(self, why: str) -> None:
        self._alerted_token = False
        log.warning("Signal sending resumed: %s", why)
        self.alert(RESUMED_TEXT)
        if self.on_resume is not None:
            try:
                self.on_resume()
            except Exception as exc:
                log.warning("resume hook failed: %s", type(exc).__name__)
