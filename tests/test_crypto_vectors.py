"""Known answers for every construction in storage/crypto.py (issue 17 item 6).

Each construction is pinned twice where it can be: against an independent implementation or a
published vector (so the primitive is right), and against bytes recorded here (so Vigil's own
choices — labels, AAD strings, layouts — cannot drift without a test failing; data at rest
depends on them). The sealing is checked against tests/xwing_reference.py, which shares no
code with `cryptography`'s HPKE.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from storage import backup, crypto, keys, reports, sealkey
from tests import xwing_reference as ref

# Fixed inputs (never secrets of any network).
SEED = bytes(range(64))
X_SCALAR = bytes(range(64, 96))
PRIVATE = SEED + X_SCALAR
INFO = b"vigil/report/v1|report=7|case=3"


# --- the aad builder: one format, and the formats already at rest unchanged ---------------------


def test_aad_format_is_exact() -> None:
    assert crypto.aad("report/v1", report=7, case=3) == INFO
    assert crypto.aad("keyslot/v2", slot="0011aabb") == b"vigil/keyslot/v2|slot=0011aabb"
    assert (
        crypto.aad("backup/v2/chunk", header=bytes(2), index=4, final=1)
        == b"vigil/backup/v2/chunk|header=0000|index=4|final=1"
    )
    assert crypto.aad("v1/sqlcipher") == b"vigil/v1/sqlcipher"


def test_formats_at_rest_are_byte_for_byte_what_they_were() -> None:
    """Reports and attachments sealed before the builder existed still open: same info."""
    assert reports.report_info(7, 3) == f"vigil/report/v1|report={7}|case={3}".encode()
    assert reports.attachment_info(5, 7) == b"vigil/attachment/v1|attachment=5|report=7"
    assert crypto.legacy_keyslot_aad("0011aabb") == b"vigil/keyslot/0011aabb"
    assert crypto.legacy_sealing_key_aad("ab12") == b"vigil/sealing-key/v1|ab12"
    assert crypto.legacy_backup_key_aad("ff") == b"vigil/backup/v1/archive-key|ff"
    assert crypto.legacy_backup_chunk_aad(b"\x11" * 32, 2, True) == (
        b"\x11" * 32 + b"\x00\x00\x00\x00\x00\x00\x00\x02\x01"
    )


@pytest.mark.parametrize(
    ("purpose", "ids"),
    [("a|b", {}), ("a=b", {}), ("", {}), ("x", {"k": "a|b"}), ("x", {"k": ""}), ("x", {"k": True})],
)
def test_aad_refuses_ambiguous_input(purpose: str, ids: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        crypto.aad(purpose, **ids)


# --- HPKE sealing (X-Wing) ---------------------------------------------------------------------


def test_the_reference_x25519_meets_rfc_7748() -> None:
    scalar = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    expected = "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
    assert ref.x25519(scalar, u).hex() == expected


def test_sealing_key_derivation_matches_the_reference() -> None:
    public = crypto.sealing_public_of(PRIVATE)
    assert public == ref.public_of(PRIVATE)
    assert (
        hashlib.sha256(public).hexdigest()
        == "d99e4496af749b54ee4a2d270c8057450624ecc5dc0866295ffc504a26134ad4"
    )


def test_a_blob_sealed_by_the_reference_opens_and_is_pinned() -> None:
    public = ref.public_of(PRIVATE)
    sealed = ref.seal(public, b"the cell is cold", INFO, b"\x42" * 32, b"\x24" * 32)
    assert (
        hashlib.sha256(sealed).hexdigest()
        == "daa644e672b40bb8a1023bb0d79123b4fb2341f84153516293824949bcb0774a"
    )
    assert crypto.open_sealed(PRIVATE, sealed, INFO) == b"the cell is cold"
    with pytest.raises(crypto.CryptoError):
        crypto.open_sealed(PRIVATE, sealed, reports.report_info(8, 3))


def test_what_vigil_seals_the_reference_opens() -> None:
    pair = crypto.sealing_keypair()
    assert ref.public_of(pair.private) == pair.public
    sealed = crypto.seal_to(pair.public, b"sealed by vigil", INFO)
    assert ref.open_(pair.private, sealed, INFO) == b"sealed by vigil"


def test_fingerprint_and_words_are_pinned() -> None:
    public = ref.public_of(PRIVATE)
    assert crypto.key_fingerprint(public) == "07aadb4bd04131545b4088418c5eb9ef"
    digest = hashlib.sha256(b"vigil/sealing-key/v1\x00" + public).hexdigest()
    assert digest.startswith(crypto.key_fingerprint(public))
    # The words come from a frozen standard list: a library update must never change them.
    assert sealkey.fingerprint_words(public) == "amateur fine spray party basic pretty home baby"


# --- AEAD ----------------------------------------------------------------------------------------


def test_aead_layout_and_known_answer() -> None:
    key, aad = bytes(range(32)), crypto.aad("test/v1", row=1)
    pinned = bytes.fromhex("00000000000000000000000078d5d2b7d9853865b7a5326bac0b6b7477c38c589e")
    assert crypto.aead_open(key, pinned, aad) == b"vigil"
    blob = crypto.aead_seal(key, b"vigil", aad)  # nonce || ciphertext || tag
    assert len(blob) == crypto.NONCE_BYTES + 5 + crypto.TAG_BYTES
    assert AESGCM(key).decrypt(blob[:12], blob[12:], aad) == b"vigil"
    for wrong in (crypto.aad("test/v1", row=2), b""):
        with pytest.raises(crypto.CryptoError):
            crypto.aead_open(key, pinned, wrong)


# --- key slots: Argon2id then AES-256-GCM ---------------------------------------------------------


def test_argon2id_primitive_meets_rfc_9106() -> None:
    tag = Argon2id(
        salt=b"\x02" * 16, length=32, iterations=3, lanes=4, memory_cost=32,
        ad=b"\x04" * 12, secret=b"\x03" * 8,
    ).derive(b"\x01" * 32)  # fmt: skip
    assert tag.hex() == "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"


def test_key_slot_wrap_known_answer() -> None:
    params = crypto.KdfParams(8192, 1, 1)
    kek = crypto.stretch_passphrase(b"correct horse", bytes(range(16)), params)
    assert kek.hex() == "68aa6b3e6343f355586e5dd84710fb380cc542b0a47fa8a06ad81318fa48e3b3"
    wrapped = bytes.fromhex(
        "070707070707070707070707b56bddc62ec26a9df36af4ef8cbdb9c8c7294fdbfe96c52d4a383dbb939da2"
        "76b92e35793f82b905786d830da6e55835"
    )
    master = crypto.unwrap_with_passphrase(
        wrapped, "correct horse", bytes(range(16)), params, keys.slot_aad("0011aabb")
    )
    assert master == bytes(range(100, 132))
    with pytest.raises(crypto.CryptoError):  # the wrap is bound to its slot id
        crypto.unwrap_with_passphrase(
            wrapped, "correct horse", bytes(range(16)), params, keys.slot_aad("0011aabc")
        )


def test_keyslots_document_mac_known_answer() -> None:
    expected = "b48c90515230deed4f3688dd516731af140ae63b49da6adec9c55f55e00dc0cf"
    assert crypto.mac(bytes(32), "keyslots/v2", b"{}").hex() == expected
    reference = hmac.new(bytes(32), b"vigil/keyslots/v2\x00{}", hashlib.sha256).hexdigest()
    assert reference == expected
    assert crypto.mac_ok(bytes(32), "keyslots/v2", b"{}", bytes.fromhex(expected))
    assert not crypto.mac_ok(bytes(32), "keyslots/v2", b"{ }", bytes.fromhex(expected))


# --- HKDF subkeys ----------------------------------------------------------------------------


def test_subkeys_match_rfc_5869_hkdf() -> None:
    master = bytes(32)
    sub = keys.Subkeys.derive(master)
    assert sub.database.hex() == "da33cc473a6d734eddec829d4b0082ed36ca39331150550a052e110ca968d3d1"
    for purpose, value in (
        ("sqlcipher", sub.database),
        ("index", sub.index),
        ("backup", sub.backup),
        ("keyslots", crypto.subkey(master, "keyslots")),
    ):
        assert value == ref.hkdf_sha256(master, b"vigil/v1/" + purpose.encode())  # fmt: skip
    assert len({sub.database, sub.index, sub.backup}) == 3


def test_keyed_hash_is_hmac_sha256() -> None:
    key = bytes(range(32))
    assert (
        crypto.keyed_hash(key, "invite:ABCD")
        == hmac.new(key, b"invite:ABCD", hashlib.sha256).hexdigest()
    )


# --- backup chunks ---------------------------------------------------------------------------


def test_backup_chunk_known_answer() -> None:
    chunk = bytes.fromhex(
        "050505050505050505050505ac1fc33860f86628304b9fc728c17c8066afc1e6788a8c4754ca"
    )
    key = bytes([9] * 32)
    aad = backup.chunk_aad(bytes(32), 0, True, 2)
    assert aad == b"vigil/backup/v2/chunk|header=" + b"00" * 32 + b"|index=0|final=1"
    assert crypto.aead_open(key, chunk, aad) == b"chunk zero"
    for moved in (
        backup.chunk_aad(bytes(32), 1, True, 2),
        backup.chunk_aad(bytes(32), 0, False, 2),
    ):
        with pytest.raises(crypto.CryptoError):  # reordered or no longer the last one
            crypto.aead_open(key, chunk, moved)
    assert backup.chunk_aad(bytes(32), 0, True, 1) == crypto.legacy_backup_chunk_aad(
        bytes(32), 0, True
    )
