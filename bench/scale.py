"""A large network at rest: 100,000 members and 100,000 subscriptions.

Builds the network in a fresh encrypted store (`vigil init`'s key slots, then members,
Telegram identities, subscriptions and a history of 100,000 delivered outbox rows written
directly), then starts `vigil run` as an operator would, against the Telegram fake running in
its own process on 127.0.0.1, and measures:

  start → ready   from spawning `vigil run` to its "running with 1 transport(s)" log line
                  (unlock with Argon2id, migrations, outbox recovery, scheduler, transport)
  RSS at rest     VmRSS of the `vigil run` process after it has idled for a few seconds
  peak RSS        VmHWM of the same process (the unlock's Argon2id memory shows here)

Targets (issue 6): start → ready ≤ 2 s, RSS at rest ≤ 150 MB.
By default the key slot uses the production Argon2id cost (256 MiB); `--fast-kdf` uses the
tests' cheap cost to show what the rest of the start-up costs.

    .venv/bin/python bench/scale.py [--members 100000] [--fast-kdf]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PASSPHRASE = "bench passphrase for the scale run"
READY = "running with"


def build(data_dir: Path, members: int, cases: int) -> float:
    from storage.store import init_network

    started = time.perf_counter()
    store = init_network(data_dir, PASSPHRASE)
    now = time.time()

    def seed(conn: Any) -> None:
        conn.executemany(
            "INSERT INTO cases (slug, name, visibility, created_at) VALUES (?, ?, 'public', ?)",
            ((f"case{i}", f"Case {i}", now) for i in range(cases)),
        )
        conn.executemany(
            "INSERT INTO members (id, role, language, timezone, quiet_hours, created_at) "
            "VALUES (?, 'activist', 'en', 'Europe/Berlin', ?, ?)",
            ((i, "22-07" if i % 3 == 0 else None, now) for i in range(1, members + 1)),
        )
        conn.executemany(
            "INSERT INTO identities (transport, address, member_id, chat, created_at) "
            "VALUES ('telegram', ?, ?, ?, ?)",
            ((str(10**6 + i), i, str(10**6 + i), now) for i in range(1, members + 1)),
        )
        # One subscription per member, spread over the cases; a tenth follow everything.
        conn.executemany(
            "INSERT INTO subscriptions (case_id, member_id, mode, created_at) VALUES (?, ?, ?, ?)",
            (
                (0 if i % 10 == 0 else 1 + i % cases, i, "digest" if i % 4 == 0 else "instant", now)
                for i in range(1, members + 1)
            ),
        )
        # Yesterday's broadcast to everyone, delivered: the outbox a busy network carries.
        body = '{"text":"Vigil tonight"}'
        conn.executemany(
            "INSERT INTO outbox (transport, chat, member_id, priority, state, body, idem_key, "
            "attempts, created_at, done_at, platform_ref) "
            "VALUES ('telegram', ?, ?, 3, 'sent', ?, ?, 1, ?, ?, '1')",
            (
                (str(10**6 + i), i, body, f"b0:{i}:telegram", now - 86400, now)
                for i in range(1, members + 1)
            ),
        )

    store.db.run_sync(seed)
    store.close()
    return time.perf_counter() - started


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--fast-kdf", action="store_true", help="the tests' cheap Argon2id cost")
    ap.add_argument("--rest", type=float, default=5.0, help="seconds of idling before RSS")
    ap.add_argument("--log", action="store_true", help="print vigil's log (where start-up goes)")
    args = ap.parse_args()
    if args.fast_kdf:
        os.environ["VIGIL_INSECURE_FAST_KDF"] = "1"
    else:
        os.environ.pop("VIGIL_INSECURE_FAST_KDF", None)

    from tests.fakes.telegram_api import DEFAULT_TOKEN

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        built = build(data_dir, args.members, args.cases)
        passfile = Path(tmp) / "passphrase"
        passfile.write_text(PASSPHRASE)
        passfile.chmod(0o600)
        fake = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.telegram_api"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert fake.stdout is not None
        url = fake.stdout.readline().strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        env.update(
            VIGIL_DATA_DIR=str(data_dir),
            VIGIL_PASSPHRASE_FILE=str(passfile),
            VIGIL_TELEGRAM_TOKEN=DEFAULT_TOKEN,
            VIGIL_TELEGRAM_API_URL=f"{url}/bot",
            VIGIL_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        if args.fast_kdf:
            env["VIGIL_INSECURE_FAST_KDF"] = "1"
        vigil = Path(sys.executable).parent / "vigil"
        cmd = [str(vigil)] if vigil.exists() else [sys.executable, "-m", "bot.cli"]
        log_path = Path(tmp) / "vigil.log"
        with log_path.open("wb") as log:
            started = time.perf_counter()
            proc = subprocess.Popen([*cmd, "run"], env=env, cwd=ROOT, stdout=log, stderr=log)
            try:
                while READY not in log_path.read_text(errors="replace"):
                    if proc.poll() is not None:
                        print(log_path.read_text(errors="replace")[-3000:])
                        raise SystemExit("vigil run exited before it was ready")
                    if time.perf_counter() - started > 120:
                        raise SystemExit("vigil run was not ready within 120 s")
                    time.sleep(0.01)
                ready = time.perf_counter() - started
                spawned = time.time() - ready
                time.sleep(args.rest)
                at_rest = rss_mb(proc.pid)
                peak = rss_mb(proc.pid, "VmHWM")
            finally:
                proc.terminate()
                code = proc.wait(30)
                fake.terminate()
                fake.wait(10)
        if args.log:
            print(f"spawned at {time.strftime('%H:%M:%S', time.localtime(spawned))}"
                  f".{int(spawned % 1 * 1000):03d}")  # fmt: skip
            print(log_path.read_text(errors="replace"))
        kdf = "test (cheap) Argon2id" if args.fast_kdf else "production Argon2id (256 MiB)"
        print(f"network: {args.members} members, {args.members} subscriptions, {args.cases} "
              f"cases, {args.members} delivered outbox rows (built in {built:.1f} s)")  # fmt: skip
        print(f"key slot: {kdf}")
        print(f"start -> ready: {ready:.2f} s   (target <= 2 s)")
        print(f"RSS at rest:    {at_rest:.1f} MB (target <= 150 MB); peak {peak:.1f} MB")
        print(f"exit code at SIGTERM: {code}")
        ok = ready <= 2.0 and at_rest <= 150
        print("targets:", "met" if ok else "NOT met")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
