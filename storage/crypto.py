"""Every use of `cryptography` in Vigil: KDFs, AEAD, blind hashes, HPKE sealing, and the one
format of associated data.

Kept in one reviewed module (after Hush Line's crypto.py) so that a reviewer can audit all
cryptographic decisions in a single read. Nothing else in the code base imports `cryptography`.

Contracts (each pinned by a known-answer test in tests/test_crypto_vectors.py):

* `aad(purpose, **ids)` is the only way to name what a ciphertext, a MAC or a subkey belongs
  to: ``b"vigil/<purpose>|name=value|..."``. Every AEAD, HPKE `info`, MAC and HKDF `info` in
  storage/ and bot/ is built with it, so a blob cannot be moved to another row, slot, file or
  purpose and still open. Two formats written before it existed are still *read* (never
  written): `legacy_keyslot_aad`, `legacy_sealing_key_aad` and the backup v1 pair; the formats
  that already matched (reports, attachments, HKDF subkeys) produce the very same bytes.
* `aead_seal`/`aead_open`: AES-256-GCM, random 96-bit nonce, output nonce || ct || tag.
* `subkey(master, purpose)`: HKDF-SHA256, no salt, info = aad("v1/" + purpose).
* `wrap_with_passphrase`: Argon2id(passphrase, 16-byte salt, cost) -> AES-256-GCM key.
* `seal_to`/`open_sealed`: HPKE base mode, KEM MLKEM768-X25519 (X-Wing, 0x647a),
  HKDF-SHA256, AES-256-GCM; the private key is kept expanded (ML-KEM seed || X25519 key).
* `mac`/`mac_ok`: HMAC-SHA256 over aad(purpose) || 0x00 || data.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


class CryptoError(Exception):
    """Decryption or authentication failed. Carries no detail on purpose."""


def random_bytes(n: int = KEY_BYTES) -> bytes:
    return os.urandom(n)


# --- the one format of associated data ----------------------------------------------------


def aad(purpose: str, **ids: str | int | bytes) -> bytes:
    """``b"vigil/<purpose>|name=value|..."``, names in the order given. Bytes values are
    written as hex; text values must not contain the separators, so two different id sets can
    never produce the same string."""
    if not purpose or "|" in purpose or "=" in purpose:
        raise ValueError("bad aad purpose")
    parts = ["vigil/" + purpose]
    for name, value in ids.items():
        if isinstance(value, bool):
            raise TypeError("aad ids are ints, text or bytes, not booleans")
        if isinstance(value, bytes):
            text = value.hex()
        elif isinstance(value, int):
            text = str(value)
        else:
            text = str(value)
            if not text or "|" in text or "=" in text:
                raise ValueError("bad aad value")
        parts.append(f"{name}={text}")
    return "|".join(parts).encode()


def legacy_keyslot_aad(slot_id: str) -> bytes:
    """Key slots written by format 1 (read only; format 2 uses aad("keyslot/v2", slot=...))."""
    return b"vigil/keyslot/" + slot_id.encode()


def legacy_sealing_key_aad(key_id: str) -> bytes:
    """Sealing key files of version 1 (read only)."""
    return b"vigil/sealing-key/v1|" + key_id.encode()


def legacy_backup_key_aad(backup_id: str) -> bytes:
    """Backups of version 1: the wrap of the archive key (read only)."""
    return b"vigil/backup/v1/archive-key|" + backup_id.encode()


def legacy_backup_chunk_aad(header_hash: bytes, index: int, final: bool) -> bytes:
    """Backups of version 1: each chunk (read only)."""
    return header_hash + struct.pack(">QB", index, int(final))


# --- MACs over documents kept outside the database ----------------------------------------


def mac(key: bytes, purpose: str, data: bytes) -> bytes:
    """HMAC-SHA256 bound to a purpose, for files that must not be edited unnoticed."""
    return hmac.new(key, aad(purpose) + b"\x00" + data, hashlib.sha256).digest()


def mac_ok(key: bytes, purpose: str, data: bytes, tag: bytes) -> bool:
    return hmac.compare_digest(mac(key, purpose, data), tag)


# --- passphrase stretching -------------------------------------------------------------


# What a key slot, key file or backup header may ask for. The cost is read from a file an
# adversary may have edited: without a bound, `memory_kib = 2**40` would make every unlock
# die of memory exhaustion, and a huge `iterations` would hang it for hours.
MAX_MEMORY_KIB = 2 * 1024 * 1024  # 2 GiB
MAX_ITERATIONS = 16
MAX_LANES = 16
MAX_WORK_KIB = 8 * 1024 * 1024  # memory x iterations: about 30 s on a small server
MIN_MEMORY_KIB = 8 * 1024  # the tests' cheap cost


class ImplausibleCost(CryptoError):
    """A KDF cost read from a file is outside what Vigil ever writes."""


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost. Stored beside each key slot so it can be raised without breaking old slots."""

    memory_kib: int = 262_144  # 256 MiB: THREATS.md asks for at least this against cold seizure
    iterations: int = 3
    lanes: int = 4

    def as_dict(self) -> dict[str, int]:
        return {"memory_kib": self.memory_kib, "iterations": self.iterations, "lanes": self.lanes}

    @classmethod
    def from_untrusted(cls, doc: object) -> KdfParams:
        """Parse a cost from a file; ImplausibleCost for anything outside the bounds above."""
        if not isinstance(doc, dict):
            raise ImplausibleCost("kdf parameters")
        try:
            values = [doc["memory_kib"], doc["iterations"], doc["lanes"]]
        except KeyError:
            raise ImplausibleCost("kdf parameters") from None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ImplausibleCost("kdf parameters")
        memory, iterations, lanes = values
        if not (
            MIN_MEMORY_KIB <= memory <= MAX_MEMORY_KIB
            and 1 <= iterations <= MAX_ITERATIONS
            and 1 <= lanes <= MAX_LANES
            and memory * iterations <= MAX_WORK_KIB
            and memory >= 8 * lanes
        ):
            raise ImplausibleCost("kdf cost out of bounds")
        return cls(memory, iterations, lanes)


def stretch_passphrase(passphrase: bytes, salt: bytes, params: KdfParams) -> bytes:
    kdf = Argon2id(
        salt=salt,
        length=KEY_BYTES,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    return kdf.derive(passphrase)


# --- symmetric sealing -----------------------------------------------------------------


def aead_seal(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """AES-256-GCM with a random 96-bit nonce; output is nonce || ciphertext+tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_open(key: bytes, blob: bytes, aad: bytes = b"") -> bytes:
    if len(blob) < NONCE_BYTES + 16:
        raise CryptoError("sealed data is truncated")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise CryptoError("authentication failed") from None


def subkey(master: bytes, purpose: str) -> bytes:
    """HKDF-SHA256 subkey per purpose, so one leaked subkey does not expose the others.
    info = aad("v1/" + purpose): the same bytes as before the aad builder existed."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=None,
        info=aad("v1/" + purpose),
    ).derive(master)


def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256 hex: stores a secret (an invite code) so it can be matched but not read back."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


# --- HPKE: sealing to a key the server does not hold ------------------------------------

# Reports must stay closed for decades: a hybrid post-quantum KEM, so an archive recorded
# today cannot be opened by a future quantum computer.
SEALING_SUITE_NAME = "MLKEM768_X25519/HKDF_SHA256/AES_256_GCM"
_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_X25519_BYTES = 32


@dataclass(frozen=True)
class SealingKeyPair:
    private: bytes  # ML-KEM-768 seed || X25519 private key; must leave the server
    public: bytes  # ML-KEM-768 public key || X25519 public key


def sealing_keypair() -> SealingKeyPair:
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

    m = mlkem.MLKEM768PrivateKey.generate()
    x = x25519.X25519PrivateKey.generate()
    return SealingKeyPair(
        private=m.private_bytes_raw() + x.private_bytes_raw(),
        public=m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw(),
    )


def _public(public: bytes) -> hpke.MLKEM768X25519PublicKey:
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

    m, x = public[:-_X25519_BYTES], public[-_X25519_BYTES:]
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(m), x25519.X25519PublicKey.from_public_bytes(x)
    )


def _private(private: bytes) -> hpke.MLKEM768X25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

    m, x = private[:-_X25519_BYTES], private[-_X25519_BYTES:]
    return hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(m), x25519.X25519PrivateKey.from_private_bytes(x)
    )


def seal_to(public: bytes, plaintext: bytes, info: bytes) -> bytes:
    """HPKE base mode: only the holder of the private half can open the result. `info` is an
    aad(...) naming the row the blob belongs to."""
    return _SUITE.encrypt(plaintext, _public(public), info=info)


def open_sealed(private: bytes, sealed: bytes, info: bytes) -> bytes:
    try:
        return _SUITE.decrypt(sealed, _private(private), info=info)
    except Exception:
        # A wrong key and a damaged blob must look alike to the caller.
        raise CryptoError("cannot open sealed data") from None


def sealing_public_of(private: bytes) -> bytes:
    """The public half that belongs to a sealing private key (checks a key file's claim)."""
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

    try:
        m = mlkem.MLKEM768PrivateKey.from_seed_bytes(private[:-_X25519_BYTES])
        x = x25519.X25519PrivateKey.from_private_bytes(private[-_X25519_BYTES:])
    except Exception:
        raise CryptoError("not a sealing private key") from None
    return m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()


def fingerprint_digest(public: bytes) -> bytes:
    """SHA-256 of a sealing public key under its own domain (the NUL keeps it apart from
    every aad(...) string): `key_fingerprint` and the words people read aloud come from it."""
    return hashlib.sha256(b"vigil/sealing-key/v1\x00" + public).digest()


def key_fingerprint(public: bytes) -> str:
    """A short, stable name for a sealing public key: which key a report was sealed to."""
    return fingerprint_digest(public).hex()[:32]


def sealing_public_ok(public: bytes) -> bool:
    """Whether bytes are a well-formed MLKEM768-X25519 public key (a .pub file's claim)."""
    try:
        _public(public)
    except Exception:
        return False
    return True


# --- secrets kept under a passphrase (key slots, the sealing key file) ---------------------


def wrap_with_passphrase(
    secret: bytes, passphrase: str, params: KdfParams, context: bytes
) -> tuple[bytes, bytes]:
    """Argon2id(passphrase) -> AES-256-GCM over `secret`, bound to `context` as AAD.
    Returns (salt, wrapped)."""
    salt = random_bytes(16)
    kek = stretch_passphrase(passphrase.encode(), salt, params)
    return salt, aead_seal(kek, secret, context)


def unwrap_with_passphrase(
    wrapped: bytes, passphrase: str, salt: bytes, params: KdfParams, context: bytes
) -> bytes:
    """Raises CryptoError alike for a wrong passphrase and a damaged file."""
    kek = stretch_passphrase(passphrase.encode(), salt, params)
    return aead_open(kek, wrapped, context)
