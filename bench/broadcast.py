"""Broadcast throughput against the Telegram fake enforcing its flood limits.

Scenarios (each in its own process, so peak RSS is that scenario's):
  small  1,000 recipients at the free limit (30 msg/s overall, 1/s per chat)
  paid   100,000 recipients at the paid-broadcast tier (1,000 msg/s, `allow_paid_broadcast`)

The whole path is real: the fake Bot API runs as a separate process on 127.0.0.1 with flood
limits on (token buckets: 30/s overall, 1/s per private chat after a burst of 3, 1,000/s for
paid broadcasts); the bot is the real App (router, encrypted store, dispatcher, Telegram
transport on PTB + aiohttp); the coordinator types `/broadcast all ...` and `/confirm` into the
fake, and the broadcast streams from the store. Printed per scenario:

  achieved rate ÷ limit   (broadcast messages / time from the first to the last one)
  429s                    (answered by the fake's flood limiter)
  peak RSS                (resource.getrusage of the bot process; the fake is not counted)

Targets (issue 6): rate ≥ 0.95 of the limit, zero 429s, peak RSS ≤ 150 MB.
Key slots use the cheap test KDF (VIGIL_INSECURE_FAST_KDF): Argon2id's 256 MiB would otherwise
be the peak RSS, and unlocking is not what is measured here.

    .venv/bin/python bench/broadcast.py                 # both scenarios
    .venv/bin/python bench/broadcast.py --scenario small
    .venv/bin/python bench/broadcast.py --scenario paid --recipients 20000
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VIGIL_INSECURE_FAST_KDF", "1")

FIRST_USER = 100_000
COORDINATOR = 42
SCENARIOS = {"small": (1_000, 30.0, False), "paid": (100_000, 1000.0, True)}
PAID: contextvars.ContextVar[bool] = contextvars.ContextVar("paid", default=False)
TEXT = "Solidarity vigil for all political prisoners: Sunday 18:00 at the central square."


# -- the fake, in its own process ---------------------------------------------------------------


def serve_fake(users: int) -> None:
    """Child process: the Telegram fake with flood limits and `users` registered users."""
    from tests.fakes.telegram_api import FakeTelegram

    async def main() -> None:
        fake = FakeTelegram(flood=True, record_calls=False)
        fake.register_user(COORDINATOR, "Coordinator")
        for i in range(users):
            fake.register_user(FIRST_USER + i, "Supporter")
        await fake.start()
        print(fake.url, flush=True)
        await fake.serve_forever()

    asyncio.run(main())


def start_fake(users: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-fake", str(users)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1"):
        proc.kill()
        raise SystemExit("the Telegram fake did not start")
    return proc, url


# -- one scenario, in this process ----------------------------------------------------------------


def seed(conn: Any, recipients: int, now: float) -> None:
    conn.execute(
        "INSERT INTO members (id, role, language, created_at) VALUES (1, 'coordinator', 'en', ?)",
        (now,),
    )
    conn.execute(
        "INSERT INTO identities (transport, address, member_id, chat, created_at) "
        "VALUES ('telegram', ?, 1, ?, ?)",
        (str(COORDINATOR), str(COORDINATOR), now),
    )
    conn.executemany(
        "INSERT INTO members (id, role, language, created_at, vetted) "
        "VALUES (?, 'activist', 'en', ?, 1)",
        ((i + 2, now) for i in range(recipients)),
    )
    conn.executemany(
        "INSERT INTO identities (transport, address, member_id, chat, created_at) "
        "VALUES ('telegram', ?, ?, ?, ?)",
        ((str(FIRST_USER + i), i + 2, str(FIRST_USER + i), now) for i in range(recipients)),
    )


async def run_scenario(recipients: int, rate: float, paid: bool) -> dict[str, Any]:
    from bot.app import App
    from bot.config import Settings
    from bot.messages import Outgoing, Priority
    from bot.transports.base import Limits
    from bot.transports.telegram import TelegramTransport
    from storage.store import init_network
    from tests.fakes.telegram_api import DEFAULT_TOKEN, ControlClient

    class PaidTelegram(TelegramTransport):
        """The paid-broadcast tier: 1,000 msg/s with `allow_paid_broadcast` on bulk sends."""

        limits = Limits(per_second=1000, per_chat_per_second=1, chat_burst=3, in_flight=48)

        async def _call(self, method: str, params: Any, **kw: Any) -> Any:
            if method == "sendMessage" and PAID.get():
                params = {**params, "allow_paid_broadcast": True}
            return await super()._call(method, params, **kw)

        async def send(self, out: Outgoing) -> str | None:
            PAID.set(out.priority == Priority.BULK)  # this send's task only
            return await super().send(out)

    fake, url = start_fake(recipients)
    control = ControlClient(url)
    tmp = tempfile.TemporaryDirectory()
    try:
        store = init_network(Path(tmp.name) / "data", "bench passphrase")
        store.db.run_sync(seed, recipients, time.time())
        settings = Settings(
            data_dir=Path(tmp.name) / "data",
            telegram_token=DEFAULT_TOKEN,
            telegram_api_url=f"{url}/bot",
        )
        transport = PaidTelegram(settings) if paid else TelegramTransport(settings)
        assert transport.limits.per_second == rate
        bulk: dict[str, float] = {"n": 0, "first": 0.0, "last": 0.0}
        original = transport.send

        async def counting(out: Outgoing) -> str | None:
            ref = await original(out)
            if out.priority == Priority.BULK:
                now = time.monotonic()
                bulk["n"] += 1
                bulk["first"] = bulk["first"] or now
                bulk["last"] = now
            return ref

        transport.send = counting  # type: ignore[method-assign]
        app = App(store, settings, [transport])
        stop = asyncio.Event()
        runner = asyncio.create_task(app.run(stop))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(
            control.call, "user_sends", user_id=COORDINATOR, text=f"/broadcast all {TEXT}"
        )
        await asyncio.sleep(1.0)  # the preview
        started = time.monotonic()
        await asyncio.to_thread(control.call, "user_sends", user_id=COORDINATOR, text="/confirm")
        expected = recipients + 1  # "all" includes the coordinator
        budget = expected / rate * 3 + 30
        while bulk["n"] < expected and time.monotonic() - started < budget:
            await asyncio.sleep(0.25)
        elapsed = bulk["last"] - bulk["first"]
        achieved = (bulk["n"] - 1) / elapsed if elapsed > 0 else 0.0
        await asyncio.sleep(1.5)  # let the final summary go out
        stats = await asyncio.to_thread(control.stats)
        fake_cpu = _cpu_seconds(fake.pid)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        stop.set()
        await runner
        store.close()
        return {
            "recipients": recipients,
            "limit": rate,
            "sent": int(bulk["n"]),
            "seconds": round(elapsed, 2),
            "rate": round(achieved, 1),
            "ratio": round(achieved / rate, 3),
            "429s": stats["flood_429"],
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "bot_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "fake_cpu_s": round(fake_cpu, 1),
        }
    finally:
        control.close()
        fake.terminate()
        fake.wait(10)
        tmp.cleanup()


def _cpu_seconds(pid: int) -> float:
    """CPU time of another process (Linux /proc), to show the fake is not the bottleneck."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


# -- command line ---------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    ap.add_argument("--recipients", type=int, help="override the scenario's recipient count")
    ap.add_argument("--serve-fake", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_fake is not None:
        serve_fake(args.serve_fake)
        return 0
    if args.child:
        recipients, rate, paid = SCENARIOS[args.scenario]
        result = asyncio.run(run_scenario(args.recipients or recipients, rate, paid))
        print(json.dumps(result), flush=True)
        return 0
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    print(
        f"{'scenario':8} {'recipients':>10} {'limit/s':>8} {'sent':>8} {'s':>7} {'rate/s':>8} "
        f"{'ratio':>6} {'429s':>5} {'peak RSS MB':>12} {'CPU s bot/fake':>15}"
    )
    ok = True
    for name in names:
        cmd = [sys.executable, __file__, "--child", "--scenario", name]
        if args.recipients:
            cmd += ["--recipients", str(args.recipients)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not lines:
            print(f"{name}: failed\n{out.stderr[-2000:]}")
            ok = False
            continue
        r = json.loads(lines[-1])
        print(
            f"{name:8} {r['recipients']:>10} {r['limit']:>8.0f} {r['sent']:>8} {r['seconds']:>7} "
            f"{r['rate']:>8} {r['ratio']:>6} {r['429s']:>5} {r['peak_rss_mb']:>12} "
            f"{r['bot_cpu_s']:>7}/{r['fake_cpu_s']:<7}"
        )
        ok &= r["ratio"] >= 0.95 and r["429s"] == 0 and r["peak_rss_mb"] <= 150
    print("targets: ratio >= 0.95, zero 429s, peak RSS <= 150 MB:", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
