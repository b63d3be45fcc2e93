"""Every use of `cryptography` in Vigil: KDFs, AEAD, blind hashes and HPKE sealing.

Kept in one reviewed module (after Hush Line's crypto.py) so that a reviewer can audit all
cryptographic decisions in a single read. Nothing else in the code base imports `cryptography`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12


class CryptoError(Exception):
    """Decryption or authentication failed. Carries no detail on purpose."""


def random_bytes(n: int = KEY_BYTES) -> bytes:
    return os.urandom(n)


# --- passphrase stretching -------------------------------------------------------------


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost. Stored beside each key slot so it can be raised without breaking old slots."""

    memory_kib: int = 262_144  # 256 MiB: THREATS.md asks for at least this against cold seizure
    iterations: int = 3
    lanes: int = 4

    def as_dict(self) -> dict[str, int]:
        return {"memory_kib": self.memory_kib, "iterations": self.iterations, "lanes": self.lanes}


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
    """HKDF-SHA256 subkey per purpose, so one leaked subkey does not expose the others."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=None,
        info=b"vigil/v1/" + purpose.encode(),
    ).derive(master)


def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256 hex: stores a secret (an invite code) so it can be matched but not read back."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


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


def seal_to(public: bytes, plaintext: bytes, info: bytes = b"vigil/report") -> bytes:
    """HPKE base mode: only the holder of the private half can open the result."""
    return _SUITE.encrypt(plaintext, _public(public), info=info)


def open_sealed(private: bytes, sealed: bytes, info: bytes = b"vigil/report") -> bytes:
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


def key_fingerprint(public: bytes) -> str:
    """A short, stable name for a sealing public key: which key a report was sealed to."""
    return hashlib.sha256(b"vigil/sealing-key/v1\x00" + public).hexdigest()[:32]


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
