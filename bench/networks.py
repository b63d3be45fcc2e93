"""Many networks on one host: N idle `vigil run` processes, the memory each holds at rest.

Each network is what `deploy/vigil@.service` runs: its own data dir, key slots, store and
`vigil run` process, here with its own Telegram bot (one fake Bot API per network, with its
own token and port) and, with `--signal`, its own signal-cli-rest-api fake as well. The fakes
all live in one separate process, so they are not counted. The networks are started one after
another (as `systemctl start vigil@NAME` does with Type=notify). Once all are up they are left
alone for `--rest` seconds, and then each one's memory is read from /proc:

  RSS  resident set: what `ps` and `top` show. Shared libraries (libpython, OpenSSL,
       SQLCipher, cryptography's Rust core) are counted whole in every process.
  PSS  proportional set: shared pages divided among the processes that share them. The
       sum of PSS over all networks is what the host really spends.
  USS  private (unshared) memory: what stopping that one network would give back.

Target (issue 15): <= 60 MB per network. Key slots use the cheap test KDF: Argon2id's
256 MiB is a start-up peak that is given back (see docs/deploy.md, "Many networks").

    .venv/bin/python bench/networks.py                  # 20 networks, Telegram
    .venv/bin/python bench/networks.py --networks 5 --signal
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PASSPHRASE = "bench passphrase for many networks"
READY = "running with"


def serve(count: int, with_signal: bool) -> None:
    """Child process: one fake Bot API (and signal-cli-rest-api) per network."""
    from tests.fakes.signal_api import FakeSignal
    from tests.fakes.telegram_api import FakeTelegram

    async def main() -> None:
        fakes: list[object] = []
        for i in range(count):
            tg = FakeTelegram(f"{700000 + i}:bench-network-{i:02d}", record_calls=False)
            await tg.start()
            fakes.append(tg)
            line = f"{tg.token} {tg.base_url}"
            if with_signal:
                sg = FakeSignal(number=f"+1555000{i:04d}")
                await sg.start()
                fakes.append(sg)
                line += f" {sg.url} {sg.number}"
            print(line, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass
class Network:
    name: str
    workdir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "vigil.log"


def vigil() -> list[str]:
    script = Path(sys.executable).parent / "vigil"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def start(net: Network, timeout: float = 60) -> float:
    subprocess.run([*vigil(), "init"], env=net.env, capture_output=True, check=True)
    began = time.monotonic()
    with open(net.log, "ab") as log:
        net.proc = subprocess.Popen(
            [*vigil(), "run"], env=net.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    while READY not in net.log.read_text(errors="replace"):
        if net.proc.poll() is not None or time.monotonic() - began > timeout:
            raise SystemExit(f"{net.name} did not start:\n{net.log.read_text()[-1500:]}")
        time.sleep(0.05)
    return time.monotonic() - began


def memory(pid: int) -> dict[str, float]:
    """RSS, PSS and USS of a process in MB (Linux: /proc/PID/smaps_rollup)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            fields[key] = int(rest.split()[0]) / 1024
    private = fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0)
    return {"rss": fields["Rss"], "pss": fields["Pss"], "uss": private}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--networks", type=int, default=20)
    ap.add_argument("--signal", action="store_true", help="each network also on Signal")
    ap.add_argument("--rest", type=float, default=30.0, help="seconds idle before measuring")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        serve(args.serve, args.signal)
        return 0

    fakes = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(args.networks)]
        + (["--signal"] if args.signal else []),
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert fakes.stdout is not None
    tmp = tempfile.TemporaryDirectory(prefix="vigil-networks-")
    nets: list[Network] = []
    try:
        base = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        for i in range(args.networks):
            parts = fakes.stdout.readline().split()
            if len(parts) < 2:
                raise SystemExit("the fakes did not start")
            workdir = Path(tmp.name) / f"net{i + 1:02d}"
            workdir.mkdir()
            (workdir / "passphrase").write_text(PASSPHRASE)
            env = base | {
                "VIGIL_DATA_DIR": str(workdir / "data"),
                "VIGIL_PASSPHRASE_FILE": str(workdir / "passphrase"),
                "VIGIL_INSECURE_FAST_KDF": "1",
                "VIGIL_LOG_LEVEL": "INFO",  # the ready line is logged at INFO
                "VIGIL_TELEGRAM_TOKEN": parts[0],
                "VIGIL_TELEGRAM_API_URL": parts[1],
            }
            if args.signal:
                env |= {"VIGIL_SIGNAL_API_URL": parts[2], "VIGIL_SIGNAL_NUMBER": parts[3]}
            nets.append(Network(f"net{i + 1:02d}", workdir, env))
        starts = [start(net) for net in nets]
        print(
            f"{len(nets)} networks up (start {statistics.median(starts):.1f} s median, "
            f"one after another); idle for {args.rest:.0f} s ...",
            flush=True,
        )
        time.sleep(args.rest)
        figures = {net.name: memory(net.proc.pid) for net in nets if net.proc is not None}
    finally:
        for net in nets:
            if net.proc is not None and net.proc.poll() is None:
                net.proc.send_signal(signal.SIGTERM)
        for net in nets:
            if net.proc is not None:
                try:
                    net.proc.wait(30)
                except subprocess.TimeoutExpired:
                    net.proc.kill()
        fakes.terminate()
        fakes.wait(10)
        tmp.cleanup()

    transports = "Telegram + Signal" if args.signal else "Telegram"
    print(f"\nidle networks ({transports}), memory at rest in MB")
    print(f"{'network':8} {'RSS':>7} {'PSS':>7} {'USS':>7}")
    for name, m in figures.items():
        print(f"{name:8} {m['rss']:7.1f} {m['pss']:7.1f} {m['uss']:7.1f}")
    for label, fn in (("median", statistics.median), ("max", max)):
        row = [fn(m[k] for m in figures.values()) for k in ("rss", "pss", "uss")]
        print(f"{label:8} {row[0]:7.1f} {row[1]:7.1f} {row[2]:7.1f}")
    total = {k: sum(m[k] for m in figures.values()) for k in ("rss", "pss", "uss")}
    print(f"{'total':8} {total['rss']:7.1f} {total['pss']:7.1f} {total['uss']:7.1f}")
    worst = max(m["rss"] for m in figures.values())
    print(
        f"host total (sum of PSS): {total['pss']:.0f} MB for {len(figures)} networks, "
        f"{total['pss'] / len(figures):.1f} MB each"
    )
    print(f"target <= 60 MB RSS per network: {'met' if worst <= 60 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
