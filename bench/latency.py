"""Reply latency, idle and while a broadcast runs at the platform's limit, side by side.

A supporter types `/cases` again and again; the time from the moment the message is handed to
the platform (the fake) to the moment the bot's answer has been accepted by the platform is
one sample. First with nothing else going on (idle), then while a coordinator's broadcast to
every member runs. Printed per platform: p50 and p99 of both phases, the broadcast's
achieved rate as a share of the limit, and the 429s the platform answered.

  Telegram  the Telegram fake in its own process with flood limits on (30/s overall, 1/s per
            chat after a burst of 3); 600 recipients; target p99 <= 0.25 s during the
            broadcast, the broadcast >= 0.95 of the limit, zero 429s.
  Signal    the real signal-cli-rest-api binary in front of its scripted daemon
            (/work/shared/signal-cli-rest-api, or $SIGNAL_CLI_REST_API); 1/s; 60 recipients;
            target p99 <= one slot (1 s) during the broadcast.

The bot is the real App (router, encrypted store, dispatcher, transport) in a child process
per platform, so the platforms do not share a CPU budget; each child prints one JSON line.
Samples are sequential (the next /cases is typed after the previous answer came), so the
figure is what one person feels.

    .venv/bin/python bench/latency.py                       # both platforms
    .venv/bin/python bench/latency.py --platform telegram --recipients 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VIGIL_INSECURE_FAST_KDF", "1")  # unlocking is not what is measured

COORDINATOR_TG = 42
FIRST_ASKER_TG = 50
ASKERS = 16  # taking turns: one person asking again and again would meet the per-chat limit
FIRST_USER = 100_000
TEXT = "Solidarity vigil for all political prisoners: Sunday 18:00 at the central square."
SIGNAL_NUMBER = "+15550000001"
SIGNAL_HOME = Path(os.environ.get("SIGNAL_CLI_REST_API", "/work/shared/signal-cli-rest-api"))
DEFAULTS = {"telegram": (600, 30), "signal": (60, 10)}  # recipients, idle samples
TARGET_P99 = {"telegram": 0.25, "signal": 1.0}  # Signal: one slot, plus the idle answer time


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- shared by both platforms ---------------------------------------------------------------


def seed(
    conn: Any, transport: str, coordinator: str, askers: list[str], recipients: list[str]
) -> None:
    rows = [(coordinator, "coordinator")] + [(a, "activist") for a in askers + recipients]
    for i, (address, role) in enumerate(rows, start=1):
        conn.execute(
            "INSERT INTO members (id, role, language, created_at, vetted) "
            "VALUES (?, ?, 'en', 0, 1)",
            (i, role),
        )
        conn.execute(
            "INSERT INTO identities (transport, address, member_id, chat, created_at) "
            "VALUES (?, ?, ?, ?, 0)",
            (transport, address, i, address),
        )


class Probe:
    """Wraps a transport's send: when did the asker's answer go out, how fast did bulk flow."""

    def __init__(self, transport: Any, askers: list[str]) -> None:
        from bot.messages import Priority

        self.askers = set(askers)
        self.answered = asyncio.Event()
        self.answered_at = 0.0
        self.bulk = 0
        self.bulk_first = 0.0
        self.bulk_last = 0.0
        self.sends: list[float] = []  # every send's time, whatever its priority
        original = transport.send

        async def send(out: Any) -> str | None:
            ref = await original(out)
            now = time.monotonic()
            self.sends.append(now)
            if out.priority == Priority.BULK:
                self.bulk += 1
                self.bulk_first = self.bulk_first or now
                self.bulk_last = now
            elif out.chat in self.askers:
                self.answered_at = now
                self.answered.set()
            return ref

        transport.send = send

    def rates(self) -> tuple[float, float]:
        """(bulk messages/s, all messages/s) from the broadcast's first to its last message."""
        span = self.bulk_last - self.bulk_first
        if span <= 0:
            return 0.0, 0.0
        during = sum(1 for t in self.sends if self.bulk_first <= t <= self.bulk_last)
        return (self.bulk - 1) / span, (during - 1) / span


async def ask_repeatedly(
    ask: Any, probe: Probe, *, count: int | None, while_: Any, pause: tuple[float, float]
) -> list[float]:
    """Sequential samples: one of the askers types, the answer comes, a short pause, again."""
    samples: list[float] = []
    turn = 0
    while (count is None or len(samples) < count) and while_():
        probe.answered.clear()
        sent_at = time.monotonic()
        await ask(turn % ASKERS)
        turn += 1
        await asyncio.wait_for(probe.answered.wait(), 30)
        samples.append(probe.answered_at - sent_at)
        await asyncio.sleep(random.uniform(*pause))  # not in step with the send clock
    return samples


async def measure(
    app: Any, probe: Probe, ask: Any, say_coordinator: Any, recipients: int, idle: int
) -> dict[str, Any]:
    # Replies take every slot they want, so the askers leave most of them to the broadcast:
    # about one slot in ten on Telegram, one in three on Signal (which sends one a second).
    limit = app.transports[0].limits.per_second
    pause = (0.2, 0.4) if limit >= 10 else (2.5, 3.5)
    stop = asyncio.Event()
    runner = asyncio.create_task(app.run(stop))
    await asyncio.sleep(1.0)
    try:
        for _ in range(1):  # warm connections and caches; not counted
            await ask_repeatedly(ask, probe, count=ASKERS, while_=lambda: True, pause=(0, 0.1))
        await asyncio.sleep(2.0)  # the warm-up used the send clock; let it run free again
        idle_samples = await ask_repeatedly(
            ask, probe, count=idle, while_=lambda: True, pause=pause
        )
        await say_coordinator(f"/broadcast all {TEXT}")
        await asyncio.sleep(1.0)  # the preview
        await say_coordinator("/confirm")
        expected = recipients + 1 + ASKERS  # "all" includes the coordinator and the askers
        async with asyncio.timeout(expected / app.transports[0].limits.per_second * 3 + 60):
            while probe.bulk < 3:
                await asyncio.sleep(0.01)
        busy = await ask_repeatedly(
            ask, probe, count=None, while_=lambda: probe.bulk < expected - 3, pause=pause
        )
        async with asyncio.timeout(60):
            while probe.bulk < expected:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await runner
    bulk_rate, all_rate = probe.rates()
    return {
        "idle": idle_samples,
        "broadcast": busy,
        "ratio": all_rate / limit,
        "bulk_ratio": bulk_rate / limit,
        "bulk": probe.bulk,
    }


# -- Telegram -------------------------------------------------------------------------------


def serve_telegram_fake(users: int) -> None:
    from tests.fakes.telegram_api import FakeTelegram

    async def main() -> None:
        fake = FakeTelegram(flood=True, record_calls=False)
        for uid in (COORDINATOR_TG, *range(FIRST_ASKER_TG, FIRST_ASKER_TG + ASKERS)):
            fake.register_user(uid, "Person")
        for i in range(users):
            fake.register_user(FIRST_USER + i, "Supporter")
        await fake.start()
        print(fake.url, flush=True)
        await fake.serve_forever()

    asyncio.run(main())


async def telegram_run(recipients: int, idle: int) -> dict[str, Any]:
    from bot import logs
    from bot.app import App
    from bot.config import Settings
    from bot.transports.telegram import TelegramTransport
    from storage.store import init_network
    from tests.fakes.telegram_api import DEFAULT_TOKEN, ControlClient

    logs.setup("WARNING")
    fake = subprocess.Popen(
        [sys.executable, __file__, "--serve-telegram", str(recipients)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert fake.stdout is not None
    url = fake.stdout.readline().strip()
    control = ControlClient(url)
    tmp = tempfile.TemporaryDirectory()
    try:
        data = Path(tmp.name) / "data"
        store = init_network(data, "bench passphrase")
        people = [str(FIRST_USER + i) for i in range(recipients)]
        askers = [str(FIRST_ASKER_TG + i) for i in range(ASKERS)]
        store.db.run_sync(seed, "telegram", str(COORDINATOR_TG), askers, people)
        settings = Settings(
            data_dir=data, telegram_token=DEFAULT_TOKEN, telegram_api_url=f"{url}/bot"
        )
        transport = TelegramTransport(settings)
        probe = Probe(transport, askers)
        app = App(store, settings, [transport])

        async def ask(who: int) -> None:
            user = FIRST_ASKER_TG + who
            await asyncio.to_thread(control.call, "user_sends", user_id=user, text="/cases")

        async def coordinator(text: str) -> None:
            await asyncio.to_thread(control.call, "user_sends", user_id=COORDINATOR_TG, text=text)

        result = await measure(app, probe, ask, coordinator, recipients, idle)
        result["429s"] = (await asyncio.to_thread(control.stats))["flood_429"]
        store.close()
        return result
    finally:
        control.close()
        fake.terminate()
        fake.wait(10)
        tmp.cleanup()


# -- Signal ---------------------------------------------------------------------------------


def free_port_block() -> int:
    """A port P with P, P+1 and P+2 free (the REST API, the daemon, its control API)."""
    for _ in range(100):
        port = random.randrange(20_000, 40_000)
        try:
            for p in (port, port + 1, port + 2):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise SystemExit("no free ports")


async def signal_run(recipients: int, idle: int) -> dict[str, Any]:
    import httpx

    from bot import logs
    from bot.app import App
    from bot.config import Settings
    from bot.transports.signal import SignalTransport
    from storage.store import init_network

    logs.setup("WARNING")
    if not (SIGNAL_HOME / "run.sh").exists():
        raise SystemExit(f"no signal-cli-rest-api at {SIGNAL_HOME} (set SIGNAL_CLI_REST_API)")
    port = free_port_block()
    started = subprocess.run(
        [str(SIGNAL_HOME / "run.sh"), str(port), "--detach"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "READY" not in started.stdout:
        raise SystemExit(f"signal-cli-rest-api did not start: {started.stdout[-500:]}")
    control = httpx.Client(base_url=f"http://127.0.0.1:{port + 2}", timeout=10, trust_env=False)
    tmp = tempfile.TemporaryDirectory()
    try:
        data = Path(tmp.name) / "data"
        store = init_network(data, "bench passphrase")
        coordinator = str(uuid.uuid4())
        askers = [str(uuid.uuid4()) for _ in range(ASKERS)]
        people = [str(uuid.uuid4()) for _ in range(recipients)]
        store.db.run_sync(seed, "signal", coordinator, askers, people)
        settings = Settings(
            data_dir=data, signal_api_url=f"http://127.0.0.1:{port}", signal_number=SIGNAL_NUMBER
        )
        transport = SignalTransport(settings, typing=False)
        probe = Probe(transport, askers)
        app = App(store, settings, [transport])

        def inject(who: str, text: str) -> None:
            body = {"account": SIGNAL_NUMBER, "source": who, "source_uuid": who, "message": text}
            control.post("/inject", json=body).raise_for_status()

        async def ask(who: int) -> None:
            await asyncio.to_thread(inject, askers[who], "/cases")

        async def say(text: str) -> None:
            await asyncio.to_thread(inject, coordinator, text)

        result = await measure(app, probe, ask, say, recipients, idle)
        result["429s"] = app.dispatchers["signal"].rate_limited  # rate-limit answers seen
        store.close()
        return result
    finally:
        control.close()
        subprocess.run([str(SIGNAL_HOME / "stop.sh"), str(port)], capture_output=True, check=False)
        tmp.cleanup()


# -- command line ---------------------------------------------------------------------------


def child(platform: str, recipients: int, idle: int) -> None:
    run = telegram_run if platform == "telegram" else signal_run
    result = asyncio.run(run(recipients, idle))
    print(json.dumps(result), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--platform", choices=["telegram", "signal", "all"], default="all")
    ap.add_argument("--recipients", type=int, help="broadcast size (default 600 / 40)")
    ap.add_argument("--serve-telegram", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child", choices=["telegram", "signal"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_telegram is not None:
        serve_telegram_fake(args.serve_telegram)
        return 0
    if args.child:
        recipients, idle = DEFAULTS[args.child]
        child(args.child, args.recipients or recipients, idle)
        return 0
    platforms = ["telegram", "signal"] if args.platform == "all" else [args.platform]
    header = (
        f"{'platform':9} {'limit/s':>7} {'recipients':>10} | {'idle p50':>9} {'idle p99':>9} "
        f"{'n':>3} | {'bcast p50':>9} {'bcast p99':>9} {'n':>4} | {'all/limit':>9} "
        f"{'bulk/limit':>10} {'429s':>5} | target p99"
    )
    print(header)
    ok = True
    for platform in platforms:
        cmd = [sys.executable, __file__, "--child", platform]
        if args.recipients:
            cmd += ["--recipients", str(args.recipients)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not lines:
            print(f"{platform}: failed\n{out.stderr[-2000:]}")
            ok = False
            continue
        r = json.loads(lines[-1])
        limit = 30 if platform == "telegram" else 1
        idle, busy = r["idle"], r["broadcast"]
        p99 = percentile(busy, 0.99)
        # Telegram: the absolute figure. Signal: "at most one slot": the answer may
        # wait one whole slot (1 s) for the bulk message that just took it, on top of what
        # an answer costs when idle (the request itself); it can never be faster than that
        # without breaking the rate.
        target = TARGET_P99[platform]
        if platform == "signal":
            target += percentile(idle, 0.5)
        met = p99 <= target and r["ratio"] >= 0.95 and r["429s"] == 0
        ok &= met
        print(
            f"{platform:9} {limit:>7} {r['bulk'] - 1 - ASKERS:>10} | "
            f"{percentile(idle, 0.5) * 1000:>7.0f}ms {percentile(idle, 0.99) * 1000:>7.0f}ms "
            f"{len(idle):>3} | {statistics.median(busy) * 1000:>7.0f}ms {p99 * 1000:>7.0f}ms "
            f"{len(busy):>4} | {r['ratio']:>9.3f} {r['bulk_ratio']:>10.3f} {r['429s']:>5} | "
            f"<= {target * 1000:.0f} ms "
            f"{'met' if met else 'NOT met'}"
        )
    print(
        "targets (issue 15): p99 during the broadcast within the target; the platform's limit\n"
        "used >= 0.95 (all/limit: broadcast and the replies that overtook it, from the\n"
        "broadcast's first message to its last; bulk/limit is the broadcast alone); no 429"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
