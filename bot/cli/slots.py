"""`vigil keys list|add|remove|rotate`: the operator's side of storage/keyadmin.py.

`keys add` asks first for an existing passphrase of the network (VIGIL_PASSPHRASE(_FILE) or a
prompt), then for the new one (VIGIL_NEW_PASSPHRASE(_FILE) or typed twice). `keys rotate` asks
on a terminal for each other slot's passphrase to keep it; without a terminal it keeps only
the slot that unlocked it and lists the others as dropped.

Exit codes as everywhere: 0 done; 1 a full disk; 2 wrong passphrase, missing, damaged or
altered files, a bot running where it must not, bad usage (one sentence, files unchanged).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from bot import config
from bot.cli.common import EXIT_OK, ProgressBar, network_passphrase, new_passphrase
from storage import keyadmin, keys


def register_keys(ksub: Any) -> None:
    ksub.add_parser(
        "list",
        help="the key slots: ids, labels and Argon2id memory; no secrets",
        description="List the key slots (ids, labels, Argon2id memory). Needs no passphrase.",
    ).set_defaults(func=cmd_keys_list)
    ka = ksub.add_parser(
        "add",
        help="a new key slot for another passphrase holder",
        description="Add a key slot: asks for an existing passphrase of this network, then for "
        f"the new one (at least {keys.MIN_PASSPHRASE_CHARS} characters, typed twice, or from "
        "VIGIL_NEW_PASSPHRASE_FILE).",
    )
    ka.add_argument(
        "--label",
        metavar="TEXT",
        help="who holds it, kept in clear beside the slot (signed, so it cannot be edited)",
    )
    ka.set_defaults(func=cmd_keys_add)
    kr = ksub.add_parser(
        "remove",
        help="remove a key slot (never the last one)",
        description="Remove a key slot; any holder's passphrase authorises it. Backups made "
        "before still open with the removed passphrase.",
    )
    kr.add_argument("slot", metavar="SLOT_ID", help="the slot's id, as `vigil keys list` shows it")
    kr.set_defaults(func=cmd_keys_remove)
    ksub.add_parser(
        "rotate",
        help="new master key: re-encrypt the db, re-wrap the slots you keep",
        description="Make a new master key, re-encrypt the database under it, and re-wrap the "
        "slots whose passphrases are given (asked on a terminal; Enter drops a slot). "
        "Unredeemed invite codes stop working. Refused while `vigil run` is running.",
    ).set_defaults(func=cmd_keys_rotate)


def _recover_first(settings: config.Settings, passphrase: str) -> None:
    outcome = keyadmin.recover(settings.data_dir, passphrase)
    if outcome == "finished":
        print("An interrupted key change was completed first.")
    elif outcome == "undone":
        print("An interrupted key change was undone first; nothing of it had taken effect.")


def cmd_keys_list(args: argparse.Namespace, settings: config.Settings) -> int:
    for slot in keyadmin.list_slots(settings.data_dir):
        label = slot.label or "-"
        print(f"{slot.slot_id}  {label:20} argon2id {slot.memory_mib} MiB")
    if keyadmin.pending_change(settings.data_dir):
        print("An interrupted key change is pending; any `vigil keys` command completes it.")
    return EXIT_OK


def cmd_keys_add(args: argparse.Namespace, settings: config.Settings) -> int:
    passphrase = network_passphrase(settings, prompt="An existing passphrase of this network: ")
    keys.KeySlots.load(settings.data_dir)  # a missing network fails before the second prompt
    new = new_passphrase(check=keys.check_passphrase_strength)
    _recover_first(settings, passphrase)
    slot_id = keyadmin.add_slot(settings.data_dir, passphrase, new, args.label or "")
    print(f"Added key slot {slot_id}. Its passphrase now unlocks the network.")
    return EXIT_OK


def cmd_keys_remove(args: argparse.Namespace, settings: config.Settings) -> int:
    passphrase = network_passphrase(settings)
    _recover_first(settings, passphrase)
    keyadmin.remove_slot(settings.data_dir, passphrase, args.slot)
    print(f"Removed key slot {args.slot}; its passphrase no longer unlocks this network.")
    print("Backups made before still open with it: make a new backup and destroy the old ones.")
    return EXIT_OK


def cmd_keys_rotate(args: argparse.Namespace, settings: config.Settings) -> int:
    passphrase = network_passphrase(settings)
    _recover_first(settings, passphrase)
    interactive = sys.stdin.isatty()

    def ask(slot: keys.Slot) -> str | None:
        if not interactive:
            return None
        label = f" ({slot.label})" if slot.label else ""
        value = getpass.getpass(
            f"Passphrase of slot {slot.slot_id}{label} to keep it (Enter drops it): "
        )
        return value or None

    bar = ProgressBar()
    try:
        result = keyadmin.rotate(settings.data_dir, passphrase, ask=ask, progress=bar)
    finally:
        bar.close()
    print("New master key; the database is re-encrypted under it.")
    for slot_id, label in result.kept:
        print(f"kept     {slot_id}  {label or '-'}")
    for slot_id, label in result.dropped:
        print(f"dropped  {slot_id}  {label or '-'}  (its holder must `vigil keys add` again)")
    print("Unredeemed invite codes no longer work; create new ones. Old backups keep their")
    print("old slots: make a new backup and destroy the old ones.")
    return EXIT_OK
