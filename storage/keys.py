"""Key slots: the random master key wrapped under one or more passphrases, LUKS-style.

The master key never touches disk unwrapped. Each slot holds its own Argon2id salt and cost
and an AES-256-GCM wrap of the master key, so several people can each unlock the network and a
passphrase change rewrites one slot, not the database. Subkeys per purpose come from HKDF.

What keyslots.json says is authenticated (THREATS rule 13). Format 2 carries `auth`, an
HMAC-SHA256 under the master key's `keyslots` subkey over the whole document (slot ids, labels,
costs, salts, wraps, the sealing public key). Anyone can edit the file, but after unlocking,
an edited one — a sealing key swapped for one the editor holds, a label changed to mislead an
operator, a slot dropped — fails the check and the network refuses to start (exit 2).

Format 1 (no `auth`, slot wraps bound by `crypto.legacy_keyslot_aad`) is still read. The first
unlock that opens it rewrites it as format 2 — the old wraps stay as they are, marked
`"wrap_aad": 1` and covered by the MAC, since re-wrapping a slot needs its holder's passphrase
— and records `keyslots.format = 2` in the encrypted database (storage/store.py), so a file
later turned back into format 1 to shed its MAC is refused.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage import crypto
from storage.files import write_private_file

SLOTS_FILE = "keyslots.json"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MIN_PASSPHRASE_CHARS = 8
MAX_SLOTS_FILE = 1 << 20  # bytes; a real one is a few KiB
MAC_PURPOSE = "keyslots/v2"


class KeyError_(Exception):
    """Base for unlock problems; its message is one user-facing sentence without secrets."""


class NoKeySlots(KeyError_):
    pass


class WrongPassphrase(KeyError_):
    pass


class DamagedKeySlots(KeyError_):
    pass


class ImplausibleKdfCost(DamagedKeySlots):
    """A slot asks for an Argon2id cost outside the bounds in storage/crypto.py."""


class AlteredKeySlots(KeyError_):
    """keyslots.json opened, but its authentication failed: someone edited it."""


def kdf_params_from_env() -> crypto.KdfParams:
    """The production cost unless tests ask for a cheap one (recorded in the slot, so visible)."""
    if os.environ.get("VIGIL_INSECURE_FAST_KDF") == "1":
        return crypto.KdfParams(memory_kib=8192, iterations=1, lanes=1)
    return crypto.KdfParams()


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: object) -> bytes:
    return base64.b64decode(str(s), validate=True)


def slot_aad(slot_id: str, version: int = FORMAT_VERSION) -> bytes:
    # Binds each wrap to its slot id so slots cannot be swapped or re-labelled unnoticed.
    if version == 1:
        return crypto.legacy_keyslot_aad(slot_id)
    return crypto.aad("keyslot/v2", slot=slot_id)


@dataclass
class Slot:
    slot_id: str
    label: str
    salt: bytes
    params: crypto.KdfParams
    wrapped: bytes
    # Which AAD the wrap is bound with. A slot made under format 1 keeps its wrap when the file
    # is upgraded (re-wrapping needs that holder's passphrase); the document MAC covers it.
    version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "id": self.slot_id,
            "label": self.label,
            "kdf": "argon2id",
            "kdf_params": self.params.as_dict(),
            "salt": _b64(self.salt),
            "cipher": "aes-256-gcm",
            "wrapped": _b64(self.wrapped),
        }
        if self.version != FORMAT_VERSION:
            out["wrap_aad"] = self.version
        return out

    @classmethod
    def from_json(cls, d: object, version: int = FORMAT_VERSION) -> Slot:
        """ValueError/KeyError/TypeError for a malformed slot; ImplausibleCost for a KDF cost
        outside the bounds (so an edited file cannot make unlock exhaust memory or hang)."""
        if not isinstance(d, dict) or d.get("kdf", "argon2id") != "argon2id":
            raise ValueError("slot")
        slot_id = d["id"]
        if not isinstance(slot_id, str) or not slot_id or "|" in slot_id or "=" in slot_id:
            raise ValueError("slot id")
        wrap_aad = d.get("wrap_aad", version)
        if wrap_aad not in READABLE_VERSIONS or wrap_aad > version:
            raise ValueError("wrap aad")
        return cls(
            slot_id=slot_id,
            label=str(d.get("label", "")),
            salt=_unb64(d["salt"]),
            params=crypto.KdfParams.from_untrusted(d["kdf_params"]),
            wrapped=_unb64(d["wrapped"]),
            version=int(wrap_aad),
        )


def _wrap(master: bytes, passphrase: str, label: str, params: crypto.KdfParams) -> Slot:
    slot_id = secrets.token_hex(4)
    salt, wrapped = crypto.wrap_with_passphrase(master, passphrase, params, slot_aad(slot_id))
    return Slot(slot_id, label, salt, params, wrapped)


def _canonical(doc: dict[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "auth"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class KeySlots:
    path: Path
    slots: list[Slot]
    sealing_public: bytes | None = None
    version: int = FORMAT_VERSION
    auth: bytes | None = field(default=None, repr=False)  # as read from the file

    @classmethod
    def load(cls, data_dir: Path) -> KeySlots:
        path = data_dir / SLOTS_FILE
        if not path.exists():
            raise NoKeySlots(f"No key slots in {data_dir}: run `vigil init` first.")
        return cls.read(path)

    @classmethod
    def read(cls, path: Path) -> KeySlots:
        """Parse a slot file at any path (keyslots.json, a pending .next, a backup's copy)."""
        try:
            if path.stat().st_size > MAX_SLOTS_FILE:
                raise ValueError("size")
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise NoKeySlots(f"No key slots in {path.parent}: run `vigil init` first.") from None
        except (OSError, ValueError, UnicodeDecodeError):
            raise DamagedKeySlots(f"The key slot file {path} is damaged.") from None
        return cls.from_document(path, doc)

    @classmethod
    def from_document(cls, path: Path, doc: object) -> KeySlots:
        try:
            if not isinstance(doc, dict) or doc.get("version") not in READABLE_VERSIONS:
                raise ValueError("version")
            version = int(doc["version"])
            slots = [Slot.from_json(s, version) for s in doc["slots"]]
            pub = doc.get("sealing_public")
            sealing = _unb64(pub) if pub else None
            auth = _unb64(doc["auth"]) if version >= 2 else None
        except crypto.ImplausibleCost:
            raise ImplausibleKdfCost(
                f"The key slot file {path} asks for an implausible Argon2id cost; it is damaged "
                "or was altered, and was not used."
            ) from None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise DamagedKeySlots(f"The key slot file {path} is damaged.") from None
        if not slots:
            raise NoKeySlots("The key slot file holds no slot: the network cannot be unlocked.")
        return cls(path, slots, sealing, version, auth)

    # -- writing --------------------------------------------------------------------------

    def _body(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "slots": [s.to_json() for s in self.slots],
            "sealing_public": _b64(self.sealing_public) if self.sealing_public else None,
        }

    def document(self, master: bytes | None = None) -> dict[str, Any]:
        """The file's content. With `master`, freshly authenticated (format 2); without, as
        it was read (a backup carries the slot file exactly, MAC included)."""
        if master is None:
            if self.version < FORMAT_VERSION or self.auth is None:
                return self._legacy_body()
            doc = self._body()
            doc["auth"] = _b64(self.auth)
            return doc
        doc = self._body()
        doc["auth"] = _b64(
            crypto.mac(crypto.subkey(master, "keyslots"), MAC_PURPOSE, _canonical(doc))
        )
        return doc

    def _legacy_body(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "slots": [s.to_json() for s in self.slots],
            "sealing_public": _b64(self.sealing_public) if self.sealing_public else None,
        }

    def save(self, master: bytes) -> None:
        doc = self.document(master)
        write_private_file(self.path, json.dumps(doc, indent=1).encode())
        self.version, self.auth = FORMAT_VERSION, _unb64(doc["auth"])

    # -- reading ------------------------------------------------------------------------------

    def unlock(self, passphrase: str) -> bytes:
        """Try every slot; a wrong passphrase and a damaged wrap fail alike. The master key is
        returned only after the document's authentication passed (format 2)."""
        master = self.open_slot(passphrase)[1]
        self.check(master)
        return master

    def open_slot(self, passphrase: str) -> tuple[Slot, bytes]:
        """The slot this passphrase opens and the master key (Argon2id once per slot tried);
        the document is not checked yet (`check`)."""
        for slot in self.slots:
            try:
                return slot, crypto.unwrap_with_passphrase(
                    slot.wrapped, passphrase, slot.salt, slot.params,
                    slot_aad(slot.slot_id, slot.version),
                )  # fmt: skip
            except crypto.CryptoError:
                continue
        raise WrongPassphrase("Wrong passphrase: no key slot opens with it.")

    def check(self, master: bytes) -> None:
        """AlteredKeySlots unless the file is the one this network's master key signed."""
        if self.version < FORMAT_VERSION:
            return  # format 1 has no MAC; store.unlock upgrades it and pins the upgrade
        body = self._body()
        if self.auth is None or not crypto.mac_ok(
            crypto.subkey(master, "keyslots"), MAC_PURPOSE, _canonical(body), self.auth
        ):
            raise AlteredKeySlots(
                f"The key slot file {self.path} was altered (its sealing key, labels or slots "
                "are not what this network signed), so it was not used."
            )

    def add(self, master: bytes, passphrase: str, label: str = "") -> Slot:
        check_passphrase_strength(passphrase)
        slot = _wrap(master, passphrase, label, kdf_params_from_env())
        self.slots.append(slot)
        self.save(master)
        return slot

    def remove(self, slot_id: str, master: bytes) -> None:
        remaining = [s for s in self.slots if s.slot_id != slot_id]
        if len(remaining) == len(self.slots):
            raise KeyError_(f"There is no key slot {slot_id}.")
        if not remaining:
            raise KeyError_("Refusing to remove the last key slot: the network would be lost.")
        self.slots = remaining
        self.save(master)


def check_passphrase_strength(passphrase: str) -> None:
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise KeyError_(f"A passphrase needs at least {MIN_PASSPHRASE_CHARS} characters.")


def create(data_dir: Path, passphrase: str, label: str = "first") -> tuple[KeySlots, bytes]:
    """A new master key in a new slot file. The caller checks that no network exists yet."""
    check_passphrase_strength(passphrase)
    master = crypto.random_bytes()
    ks = KeySlots(data_dir / SLOTS_FILE, [_wrap(master, passphrase, label, kdf_params_from_env())])
    ks.save(master)
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
