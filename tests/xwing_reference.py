"""An independent HPKE X-Wing implementation, for known-answer tests of storage/crypto.py.

Built from other code than `cryptography`'s: ML-KEM-768 from kyber-py (a pure-Python FIPS 203
implementation), X25519 from RFC 7748 §5 written out here, the X-Wing combiner
(draft-connolly-cfrg-xwing-kem: SHA3-256 over ss_M || ss_X || ct_X || pk_X || "\\.//^\\"), and
RFC 9180's key schedule over stdlib HMAC-SHA256. Only AES-256-GCM comes from `cryptography`
(it is not what is under test). HPKE suite: KEM 0x647a (X-Wing, "MLKEM768-X25519"), KDF 0x0001
(HKDF-SHA256), AEAD 0x0002 (AES-256-GCM), base mode, single-shot (sequence number 0).

Keys are in Vigil's expanded form: private = ML-KEM seed (64 bytes, d || z) || X25519 scalar;
public = ML-KEM encapsulation key (1184 bytes) || X25519 public key.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from kyber_py.ml_kem import ML_KEM_768

P = 2**255 - 19
BASE = (9).to_bytes(32, "little")
XWING_LABEL = b"\\.//^\\"
SUITE_ID = b"HPKE" + struct.pack(">HHH", 0x647A, 0x0001, 0x0002)
MLKEM_CT = 1088
ENC = MLKEM_CT + 32


def x25519(scalar: bytes, u: bytes) -> bytes:
    """RFC 7748 §5: the Montgomery ladder on Curve25519."""
    k = bytearray(scalar)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    kn = int.from_bytes(k, "little")
    x1 = int.from_bytes(u, "little") & ((1 << 255) - 1)
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in reversed(range(255)):
        bit = (kn >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = x2 + z2, x2 - z2
        aa, bb = a * a, b * b
        e = aa - bb
        c, d = x3 + z3, x3 - z3
        da, cb = d * a, c * b
        x3 = (da + cb) ** 2 % P
        z3 = x1 * (da - cb) ** 2 % P
        x2 = aa * bb % P
        z2 = e * (aa + 121665 * e) % P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, P - 2, P) % P).to_bytes(32, "little")


def public_of(private: bytes) -> bytes:
    ek, _dk = ML_KEM_768.key_derive(private[:64])
    return ek + x25519(private[64:], BASE)


def _combine(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()


def encapsulate(public: bytes, m: bytes, ephemeral: bytes) -> tuple[bytes, bytes]:
    """Deterministic X-Wing encapsulation: (shared secret, enc)."""
    pk_m, pk_x = public[:-32], public[-32:]
    ss_m, ct_m = ML_KEM_768._encaps_internal(pk_m, m)
    ct_x = x25519(ephemeral, BASE)
    ss_x = x25519(ephemeral, pk_x)
    return _combine(ss_m, ss_x, ct_x, pk_x), ct_m + ct_x


def decapsulate(private: bytes, enc: bytes) -> bytes:
    _ek, dk = ML_KEM_768.key_derive(private[:64])
    ct_m, ct_x = enc[:MLKEM_CT], enc[MLKEM_CT:]
    ss_m = ML_KEM_768.decaps(dk, ct_m)
    sk_x = private[64:]
    return _combine(ss_m, x25519(sk_x, ct_x), ct_x, x25519(sk_x, BASE))


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or b"\0" * 32, ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def hkdf_sha256(ikm: bytes, info: bytes, length: int = 32, salt: bytes = b"") -> bytes:
    """RFC 5869, for the subkeys' known answers too."""
    return _expand(_extract(salt, ikm), info, length)


def _labeled_extract(salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + SUITE_ID + label + ikm)


def _labeled_expand(prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _expand(prk, struct.pack(">H", length) + b"HPKE-v1" + SUITE_ID + label + info, length)


def key_schedule(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    """RFC 9180 §5.1, base mode: (key, base_nonce)."""
    context = (
        b"\x00"
        + _labeled_extract(b"", b"psk_id_hash", b"")
        + _labeled_extract(b"", b"info_hash", info)
    )
    secret = _labeled_extract(shared_secret, b"secret", b"")
    return (
        _labeled_expand(secret, b"key", context, 32),
        _labeled_expand(secret, b"base_nonce", context, 12),
    )


def seal(public: bytes, plaintext: bytes, info: bytes, m: bytes, ephemeral: bytes) -> bytes:
    """enc || ciphertext, the layout `crypto.seal_to` returns."""
    shared, enc = encapsulate(public, m, ephemeral)
    key, nonce = key_schedule(shared, info)
    return enc + AESGCM(key).encrypt(nonce, plaintext, b"")


def open_(private: bytes, sealed: bytes, info: bytes) -> bytes:
    key, nonce = key_schedule(decapsulate(private, sealed[:ENC]), info)
    return AESGCM(key).decrypt(nonce, sealed[ENC:], b"")
