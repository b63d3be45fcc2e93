"""Signal transport over signal-cli-rest-api (httpx for REST, websockets for the receive stream).

Contract and pitfalls: `shared/research/signal.md` and `shared/signal-cli-rest-api/README.md`
(what the real REST layer does, observed). The package, one job per module:
  rest.py         the HTTP calls, each under a deadline; identities
  receive.py      the receive stream (WebSocket or polling) into a bounded queue
  frames.py       what one frame means (message, group, changed safety number, ignored)
  sending.py      the /v2/send body and what each answer means
  challenge.py    rate-limit challenges: suspension, the admins' steps, captcha outcomes
  attachments.py  files on the REST API's disk: read when asked, deleted in any case
  transport.py    `SignalTransport`, which the core sees

Public names are re-exported here (`from bot.transports.signal import SignalTransport`).
"""

from bot.transports.signal.challenge import CAPTCHA_PAGE, ChallengeOutcome, Suspended
from bot.transports.signal.rest import SignalApiError, SignalIdentity
from bot.transports.signal.transport import SignalTransport

__all__ = [
    "CAPTCHA_PAGE",
    "ChallengeOutcome",
    "SignalApiError",
    "SignalIdentity",
    "SignalTransport",
    "Suspended",
]
