"""The `vigil` command line. Exit codes: 0 ok, 1 runtime failure (a full disk among them),
2 bad usage or bad configuration (one sentence on stderr, never a traceback).

One module per group of commands; each `register`s its subcommands with
`set_defaults(func=...)`, and `main` calls `args.func(args, settings)`:

* network.py      init, run, demo, invite
* status.py       status
* slots.py        keys list, add, remove, rotate
* sealing.py      keys sealing-new, sealing-import; reports export
* maintenance.py  backup, restore, wipe, retention
* signal.py       signal captcha (handed to the running bot)
* common.py       what they share (imported by all of them, importing none of them)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import sqlcipher3

from bot import config, logs
from bot.cli import maintenance, network, sealing, signal, slots, status
from bot.cli.common import EXIT_FAILURE, EXIT_USAGE, Parser, UsageError
from storage import keys, sealkey
from storage.db import DiskFull, StoreError, is_disk_full

LONG_RUNNING = (network.cmd_run, network.cmd_demo)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="vigil", description="Vigil: keep political prisoners from being forgotten.")
    p.add_argument("--config", metavar="FILE", help="a TOML configuration file (or VIGIL_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    network.register(sub)
    status.register(sub)
    k = sub.add_parser(
        "keys",
        help="key slots and the sealing key",
        description="Key slots (who can unlock the network) and the sealing key (who can read "
        "the reports).",
    )
    ksub = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    slots.register_keys(ksub)
    sealing.register_keys(ksub)
    sealing.register(sub)
    maintenance.register(sub)
    signal.register(sub)
    return p


def _harden_process() -> None:
    """No core dumps and no debugger attach by other processes of the same user: the master
    key lives in this process's memory."""
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        pass  # not Linux; RLIMIT_CORE still applies


def _fail(message: str, code: int) -> int:
    print(f"vigil: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # nothing Vigil writes is for other users' eyes
    _harden_process()
    args = parser().parse_args(argv)
    where: Path | None = None
    try:
        settings = config.load(args.config)
        where = settings.data_dir
        # One-shot commands print their result; a log line would be a second, noisy one.
        level = settings.log_level
        if args.func not in LONG_RUNNING and level != "DEBUG":
            level = "ERROR"
        logs.setup(level)
        return int(args.func(args, settings))
    except DiskFull as err:
        return _fail(str(err), EXIT_FAILURE)
    except (
        UsageError,
        config.ConfigError,
        keys.KeyError_,
        StoreError,
        sealkey.SealingKeyError,
    ) as err:
        return _fail(str(err), EXIT_USAGE)
    except OSError as err:
        if is_disk_full(err):
            return _fail(str(DiskFull(Path(err.filename).parent if err.filename else where)), 1)
        what = err.strerror or type(err).__name__
        return _fail(f"{what}{f': {err.filename}' if err.filename else ''}.", EXIT_FAILURE)
    except sqlcipher3.Error as err:
        if is_disk_full(err, where):
            return _fail(str(DiskFull(where)), EXIT_FAILURE)
        return _fail(f"The database failed ({type(err).__name__}).", EXIT_FAILURE)
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
