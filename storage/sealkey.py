"""The sealing key pair's files, and its fingerprint as words a person can read aloud.

The pair is born where its private half lives (THREATS rule 13): `vigil keys sealing-new --out
FILE` runs on an offline computer with no data dir and writes two files:

* FILE — the private key wrapped under a passphrase of its own (Argon2id -> AES-256-GCM, AAD
  aad("sealing-key/v2", key=<key id>)), kind "vigil-sealing-key". It opens the archive and
  never goes near the server.
* FILE.pub — the public half, kind "vigil-sealing-public-key". `vigil keys sealing-import
  FILE.pub` pins it on the server.

The .pub file travels on a stick, which someone could swap on the way. Both commands print the
key's fingerprint as eight words; the person at the server reads them aloud to the person at
the laptop (or compares them on paper) before trusting the import.

Words. The BIP-39 English list (2048 words) via `mnemonic`, the Trezor reference
implementation that every hardware wallet's recovery sheet relies on: the words were chosen to
be read, written and spoken without confusion (no two share their first four letters, no
near-homophones), and the list is frozen by its standard, so the words for a key never change
with a library update. Eight words carry the first 88 bits of the key's SHA-256 fingerprint:
making another key whose words match costs about 2^88 hashing work. The 128-bit key id
(`crypto.key_fingerprint`) stays the exact name used in the database and exports.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from storage import crypto, keys

KEY_FILE_KIND = "vigil-sealing-key"
PUBLIC_FILE_KIND = "vigil-sealing-public-key"
KEY_FILE_VERSION = 2
READABLE_KEY_FILE_VERSIONS = (1, 2)
PUBLIC_FILE_VERSION = 1
PUBLIC_SUFFIX = ".pub"
WORDS = 8
MAX_KEY_FILE = 1 << 16


class SealingKeyError(Exception):
    """A key file cannot be used; the message is one sentence without secrets."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: object) -> bytes:
    return base64.b64decode(str(s), validate=True)


@cache
def _wordlist() -> tuple[str, ...]:
    from mnemonic import Mnemonic

    words = tuple(Mnemonic("english").wordlist)
    assert len(words) == 2048
    return words


def fingerprint_words(public: bytes) -> str:
    """Eight BIP-39 words naming a sealing public key (module docstring)."""
    bits = int.from_bytes(crypto.fingerprint_digest(public), "big")
    total = len(crypto.fingerprint_digest(public)) * 8
    out = []
    for i in range(WORDS):
        index = (bits >> (total - 11 * (i + 1))) & 0x7FF
        out.append(_wordlist()[index])
    return " ".join(out)


def public_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + PUBLIC_SUFFIX)


def _key_aad(key_id: str, version: int) -> bytes:
    if version == 1:
        return crypto.legacy_sealing_key_aad(key_id)
    return crypto.aad("sealing-key/v2", key=key_id)


# --- writing -------------------------------------------------------------------------------


def private_document(pair: crypto.SealingKeyPair, passphrase: str) -> dict[str, Any]:
    key_id = crypto.key_fingerprint(pair.public)
    params = keys.kdf_params_from_env()
    salt, wrapped = crypto.wrap_with_passphrase(
        pair.private, passphrase, params, _key_aad(key_id, KEY_FILE_VERSION)
    )
    return {
        "kind": KEY_FILE_KIND,
        "version": KEY_FILE_VERSION,
        "suite": crypto.SEALING_SUITE_NAME,
        "key_id": key_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "public": _b64(pair.public),
        "kdf": "argon2id",
        "kdf_params": params.as_dict(),
        "salt": _b64(salt),
        "cipher": "aes-256-gcm",
        "wrapped": _b64(wrapped),
    }


def public_document(public: bytes) -> dict[str, Any]:
    return {
        "kind": PUBLIC_FILE_KIND,
        "version": PUBLIC_FILE_VERSION,
        "suite": crypto.SEALING_SUITE_NAME,
        "key_id": crypto.key_fingerprint(public),
        "words": fingerprint_words(public),
        "public": _b64(public),
    }


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=1).encode()


# --- reading -------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_KEY_FILE:
            raise SealingKeyError(f"{path} is not a Vigil {what}.")
        doc = json.loads(path.read_bytes())
    except SealingKeyError:
        raise
    except OSError:
        raise SealingKeyError(f"Cannot read the {what} {path}.") from None
    except (ValueError, UnicodeDecodeError):
        raise SealingKeyError(f"{path} is not a Vigil {what}.") from None
    if not isinstance(doc, dict):
        raise SealingKeyError(f"{path} is not a Vigil {what}.")
    return doc


@dataclass(frozen=True)
class PublicKey:
    public: bytes
    key_id: str

    @property
    def words(self) -> str:
        return fingerprint_words(self.public)


def load_public(path: Path) -> PublicKey:
    """A .pub file (or, for convenience, the private key file, whose public half is in clear)."""
    doc = _read_json(path, "sealing public key file")
    if doc.get("kind") not in (PUBLIC_FILE_KIND, KEY_FILE_KIND):
        raise SealingKeyError(f"{path} is not a Vigil sealing public key file.")
    try:
        public = _unb64(doc["public"])
        key_id = str(doc["key_id"])
    except (KeyError, TypeError, ValueError):
        raise SealingKeyError(f"The sealing public key file {path} is damaged.") from None
    if doc.get("suite", crypto.SEALING_SUITE_NAME) != crypto.SEALING_SUITE_NAME:
        raise SealingKeyError(f"{path} holds a key for another kind of sealing.")
    if crypto.key_fingerprint(public) != key_id or not crypto.sealing_public_ok(public):
        raise SealingKeyError(f"The sealing public key file {path} is damaged.")
    return PublicKey(public, key_id)


def load_private(path: Path, passphrase: str) -> tuple[bytes, bytes, str]:
    """(private, public, key_id). SealingKeyError, one sentence, for every way it can fail."""
    doc = _read_json(path, "sealing key file")
    if doc.get("kind") != KEY_FILE_KIND:
        raise SealingKeyError(f"{path} is not a Vigil sealing key file.")
    try:
        version = doc.get("version")
        if version not in READABLE_KEY_FILE_VERSIONS or doc.get("kdf") != "argon2id":
            raise ValueError("format")
        public = _unb64(doc["public"])
        key_id = str(doc["key_id"])
        params = crypto.KdfParams.from_untrusted(doc["kdf_params"])
        salt, wrapped = _unb64(doc["salt"]), _unb64(doc["wrapped"])
    except crypto.ImplausibleCost:
        raise SealingKeyError(
            f"The sealing key file {path} asks for an implausible Argon2id cost; it is damaged "
            "or was altered."
        ) from None
    except (KeyError, TypeError, ValueError):
        raise SealingKeyError(f"The sealing key file {path} is damaged.") from None
    if crypto.key_fingerprint(public) != key_id:
        raise SealingKeyError(f"The sealing key file {path} is damaged.")
    try:
        private = crypto.unwrap_with_passphrase(
            wrapped, passphrase, salt, params, _key_aad(key_id, int(version))
        )
        if crypto.sealing_public_of(private) != public:
            raise crypto.CryptoError("pair")
    except crypto.CryptoError:
        raise SealingKeyError(
            "Wrong passphrase for the sealing key file, or the file is damaged."
        ) from None
    return private, public, key_id
