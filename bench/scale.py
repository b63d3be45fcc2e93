"""A large network at rest: 100,000 members and 100,000 subscriptions.

Builds the network in a fresh encrypted store (`vigil init`'s key slots, then members,
Telegram identities, subscriptions and a history of 100,000 delivered outbox rows written
directly), then starts `vigil run` as an operator would, against the Telegram fake running in
its own process on 127.0.0.1, and measures:

  start → ready   from spawning `vigil run` to its "running with 1 transport(s)" log line
                  (unlock with Argon2id, migrations, outbox recovery, scheduler, transport)
  RSS at rest     VmRSS of the `vigil run` process after it has idled for a few seconds
  peak RSS        VmHWM of the same process (the unlock's Argon2id memory shows here)

Targets (issue 6, issue 15 item 5): start → ready ≤ 2 s, RSS at rest ≤ 150 MB.
By default the key slot uses the production Argon2id cost (256 MiB); `--fast-kdf` uses the
tests' cheap cost to show what the rest of the start-up costs.

Side by side, interleaved in one run: the serial start path (unlock — Argon2id, then the
integrity check — and only then import and build the bot; `VIGIL_SERIAL_UNLOCK=1`) against the
default one, where the unlock runs on a worker thread while the bot is imported and built.

    .venv/bin/python bench/scale.py [--members 100000] [--rounds 3] [--fast-kdf]
"""

from __future__ import annotations

import argparse
import os
import statistics
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
            "INSERT INTO members (id, role, language, timezone, quiet_hours, created_at, vetted) "
            "VALUES (?, 'activist', 'en', 'Europe/Berlin', ?, ?, 1)",
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


def start_once(cmd: list[str], env: dict[str, str], log_path: Path, rest: float) -> dict[str, Any]:
    """Spawn `vigil run`, time it to its ready line; optionally idle and read its RSS."""
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
                time.sleep(0.005)
            out: dict[str, Any] = {"ready": time.perf_counter() - started}
            if rest:
                time.sleep(rest)
                out["rss"] = rss_mb(proc.pid)
                out["peak"] = rss_mb(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            out_code = proc.wait(30)
    out["code"] = out_code
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--fast-kdf", action="store_true", help="the tests' cheap Argon2id cost")
    ap.add_argument("--rest", type=float, default=5.0, help="seconds of idling before RSS")
    ap.add_argument("--rounds", type=int, default=3, help="starts per start-up path")
    ap.add_argument("--log", action="store_true", help="print vigil's last log (where time goes)")
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
        paths = {
            "serial (unlock, then import)": {**env, "VIGIL_SERIAL_UNLOCK": "1"},
            "overlapped (default)": env,
        }
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
        try:
            for i in range(args.rounds):  # interleaved, so drift on a shared machine hits both
                for name, path_env in paths.items():
                    last = i == args.rounds - 1 and name == "overlapped (default)"
                    results[name].append(
                        start_once(cmd, path_env, log_path, args.rest if last else 0.0)
                    )
        finally:
            fake.terminate()
            fake.wait(10)
        if args.log:
            print(log_path.read_text(errors="replace"))
        kdf = "test (cheap) Argon2id" if args.fast_kdf else "production Argon2id (256 MiB)"
        print(f"network: {args.members} members, {args.members} subscriptions, {args.cases} "
              f"cases, {args.members} delivered outbox rows (built in {built:.1f} s)")  # fmt: skip
        print(f"key slot: {kdf}; {args.rounds} starts per path, interleaved")
        print(f"{'start -> ready':32} {'median':>8} {'best':>8} {'worst':>8}")
        medians = {}
        for name, runs in results.items():
            times = sorted(r["ready"] for r in runs)
            medians[name] = statistics.median(times)
            print(f"  {name:30} {medians[name]:7.2f}s {times[0]:7.2f}s {times[-1]:7.2f}s")
        final = results["overlapped (default)"][-1]
        print(f"RSS at rest (default path): {final['rss']:.1f} MB (target <= 150 MB); "
              f"peak {final['peak']:.1f} MB")  # fmt: skip
        codes = {r["code"] for runs in results.values() for r in runs}
        print(f"exit codes at SIGTERM: {sorted(codes)}")
        ok = medians["overlapped (default)"] <= 2.0 and final["rss"] <= 150
        print("targets (start <= 2 s, RSS <= 150 MB):", "met" if ok else "NOT met")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
