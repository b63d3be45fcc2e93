"""`vigil signal captcha`: give the running bot a solved Signal captcha from the server's shell."""

from __future__ import annotations

import argparse
import time
from typing import Any

from bot import captcha_drop, config
from bot.cli.common import EXIT_FAILURE, EXIT_OK, UsageError, whole_number
from bot.transports.signal.challenge import CAPTCHA_PAGE, clean_captcha


def register(sub: Any) -> None:
    s = sub.add_parser(
        "signal",
        help="Signal account chores: the rate-limit captcha",
        description="Chores of the network's Signal account.",
    )
    ssub = s.add_subparsers(dest="signal_command", required=True, metavar="ACTION")
    c = ssub.add_parser(
        "captcha",
        help="pass a solved rate-limit captcha to the running bot",
        description=(
            "When Signal pauses sending with a rate-limit challenge, open "
            f"{CAPTCHA_PAGE} in a browser, solve it, copy the link the page offers "
            "(it starts with signalcaptcha://) and give it here, quoted. The running "
            "`vigil run` of this data directory submits it with the challenge token it holds "
            "and this command prints whether Signal accepted it. Same as /captcha in chat."
        ),
    )
    c.add_argument("link", metavar="LINK", help="the whole signalcaptcha://… link, in quotes")
    c.add_argument(
        "--wait",
        metavar="SECONDS",
        type=whole_number("--wait", 1, 600, 60),
        default=60,
        help="how long to wait for the running bot's answer (1 to 600, default 60)",
    )
    c.set_defaults(func=cmd_captcha)


def cmd_captcha(args: argparse.Namespace, settings: config.Settings) -> int:
    link = clean_captcha(args.link)
    if link is None:
        raise UsageError(
            "That is not a Signal captcha: copy the whole link that starts with signalcaptcha://"
        )
    data_dir = settings.data_dir
    if not data_dir.is_dir():
        raise UsageError(f"No Vigil network in {data_dir}.")
    captcha_drop.drop(data_dir, link)
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        outcome = captcha_drop.take_result(data_dir)
        if outcome is not None:
            print(outcome.text)
            return EXIT_OK if outcome.ok else EXIT_FAILURE
        time.sleep(0.2)
    captcha_drop.withdraw(data_dir)
    print(
        f"No answer from a running Vigil in {data_dir} within {args.wait} s: is `vigil run` "
        "running with Signal? The captcha was withdrawn; solve a fresh one and try again."
    )
    return EXIT_FAILURE
