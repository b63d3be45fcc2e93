"""Key slots: the random master key wrapped under one or more passphrases, LUKS-style.

The master key never touches disk unwrapped. Each slot holds its own Argon2id salt and cost
and an AES-256-GCM wrap of the master key, so several people can each unlock the network and a
passphrase change rewrites one slot, not the database. Subkeys per purpose come from HKDF.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from storage import crypto
from storage.files import write_private_file

SLOTS_FILE = "keyslots.json"
FORMAT_VERSION = 1
MIN_PASSPHRASE_CHARS = 8


class KeyError_(Exception):
    """Base for unlock problems; its message is one user-facing sentence without secrets."""


class NoKeySlots(KeyError_):
    pass


class WrongPassphrase(KeyError_):
    pass


class DamagedKeySlots(KeyError_):
    pass


def kdf_params_from_env() -> crypto.KdfParams:
    """The production cost unless tests ask for a cheap one (recorded in the slot, so visible)."""
    if os.environ.get("VIGIL_INSECURE_FAST_KDF") == "1":
        return crypto.KdfParams(memory_kib=8192, iterations=1, lanes=1)
    return crypto.KdfParams()


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


@dataclass
class Slot:
    slot_id: str
    label: str
    salt: bytes
    params: crypto.KdfParams
    wrapped: bytes

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.slot_id,
            "label": self.label,
            "kdf": "argon2id",
            "kdf_params": self.params.as_dict(),
            "salt": _b64(self.salt),
            "cipher": "aes-256-gcm",
            "wrapped": _b64(self.wrapped),
        }

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Slot:
        p = d["kdf_params"]
        assert isinstance(p, dict)
        return cls(
            slot_id=str(d["id"]),
            label=str(d.get("label", "")),
            salt=_unb64(str(d["salt"])),
            params=crypto.KdfParams(int(p["memory_kib"]), int(p["iterations"]), int(p["lanes"])),
            wrapped=_unb64(str(d["wrapped"])),
        )


def _aad(slot_id: str) -> bytes:
    # Binds each wrap to its slot id so slots cannot be swapped or re-labelled unnoticed.
    return b"vigil/keyslot/" + slot_id.encode()


def _wrap(master: bytes, passphrase: str, label: str, params: crypto.KdfParams) -> Slot:
    slot_id = secrets.token_hex(4)
    salt, wrapped = crypto.wrap_with_passphrase(master, passphrase, params, _aad(slot_id))
    return Slot(slot_id, label, salt, params, wrapped)


@dataclass
class KeySlots:
    path: Path
    slots: list[Slot]
    sealing_public: bytes | None = None

    @classmethod
    def load(cls, data_dir: Path) -> KeySlots:
        path = data_dir / SLOTS_FILE
        if not path.exists():
            raise NoKeySlots(f"No key slots in {data_dir}: run `vigil init` first.")
        try:
            doc = json.loads(path.read_text("utf-8"))
            if doc.get("version") != FORMAT_VERSION:
                raise ValueError("version")
            slots = [Slot.from_json(s) for s in doc["slots"]]
            pub = doc.get("sealing_public")
            sealing = _unb64(pub) if pub else None
        except (ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError):
            raise DamagedKeySlots(f"The key slot file {path} is damaged.") from None
        if not slots:
            raise NoKeySlots("The key slot file holds no slot: the network cannot be unlocked.")
        return cls(path, slots, sealing)

    def save(self) -> None:
        doc = {
            "version": FORMAT_VERSION,
            "slots": [s.to_json() for s in self.slots],
            "sealing_public": _b64(self.sealing_public) if self.sealing_public else None,
        }
        write_private_file(self.path, json.dumps(doc, indent=1).encode())

    def unlock(self, passphrase: str) -> bytes:
        """Try every slot; a wrong passphrase and a damaged wrap fail alike."""
        for slot in self.slots:
            try:
                return crypto.unwrap_with_passphrase(
                    slot.wrapped, passphrase, slot.salt, slot.params, _aad(slot.slot_id)
                )
            except crypto.CryptoError:
                continue
        raise WrongPassphrase("Wrong passphrase: no key slot opens with it.")

    def add(self, master: bytes, passphrase: str, label: str = "") -> Slot:
        check_passphrase_strength(passphrase)
        slot = _wrap(master, passphrase, label, kdf_params_from_env())
        self.slots.append(slot)
        self.save()
        return slot

    def remove(self, slot_id: str) -> None:
        remaining = [s for s in self.slots if s.slot_id != slot_id]
        if len(remaining) == len(self.slots):
            raise KeyError_(f"There is no key slot {slot_id}.")
        if not remaining:
            raise KeyError_("Refusing to remove the last key slot: the network would be lost.")
        self.slots = remaining
        self.save()


def check_passphrase_strength(passphrase: str) -> None:
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise KeyError_(f"A passphrase needs at least {MIN_PASSPHRASE_CHARS} characters.")


def create(data_dir: Path, passphrase: str, label: str = "first") -> tuple[KeySlots, bytes]:
    """A new master key in a new slot file. The caller checks that no network exists yet."""
    check_passphrase_strength(passphrase)
    master = crypto.random_bytes()
    ks = KeySlots(data_dir / SLOTS_FILE, [_wrap(master, passphrase, label, kdf_params_from_env())])
    ks.save()
    return ks, master


@dataclass(frozen=True)
class Subkeys:
    """Per-purpose keys derived from the master key; only these leave this module's callers."""

    database: bytes
    index: bytes  # keyed hashes of invite codes and rate-limit buckets
    backup: bytes

    @classmethod
    def derive(cls, master: bytes) -> Subkeys:
        return cls(
            database=crypto.subkey(master, "sqlcipher"),
            index=crypto.subkey(master, "index"),
            backup=crypto.subkey(master, "backup"),
        )
