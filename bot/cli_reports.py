"""`vigil keys sealing-new` and `vigil reports export`: the sealed report archive from the CLI.

The sealing key pair. `vigil keys sealing-new --out FILE` makes an HPKE key pair
(MLKEM768_X25519), writes the private half to FILE wrapped under a passphrase of its own
(Argon2id -> AES-256-GCM), stores only the public half in keyslots.json, and pins its
fingerprint in the encrypted database. FILE must then leave the server (an encrypted stick
held by a coordinator); the server can seal new reports but never open old ones. The
running bot reads the public key at start: restart `vigil run` after this command.
With `--replace` a new pair supersedes the old one; keep the old file, it still opens the
reports sealed before.

The passphrase of the key file comes from VIGIL_SEALING_PASSPHRASE(_FILE) or a terminal
prompt, and must differ from the network passphrase: whoever can compel one should not get
both the database and the archive.

The export. `vigil reports export --sealing-key FILE` opens the archive, best on an offline
machine with a copy of the data directory (or a restored backup) and the key file. It writes
JSON (attachments inline as base64, or as files with --attachments-dir) or CSV (one row per
report; cells that a spreadsheet would run as a formula are prefixed with an apostrophe).
The output is plaintext: it is written 0600 and should stay on an encrypted device.
Exit codes: 0 ok; 2 wrong passphrase, wrong or damaged key file, bad usage; 1 when some
report in the archive is damaged (the others are still exported).
"""

from __future__ import annotations

import argparse
import base64
import csv
import getpass
import io
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot import config
from bot.cli import EXIT_FAILURE, EXIT_OK, UsageError, _passphrase
from storage import audit, cases, crypto, keys, reports
from storage.files import ensure_private_dir, write_private_file
from storage.store import unlock

KEY_FILE_KIND = "vigil-sealing-key"
KEY_FILE_VERSION = 1
EXPORT_KIND = "vigil-reports-export"
MIN_SEALING_PASSPHRASE = 12


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: object) -> bytes:
    return base64.b64decode(str(s), validate=True)


def _key_aad(key_id: str) -> bytes:
    return b"vigil/sealing-key/v1|" + key_id.encode()


def _sealing_passphrase(*, confirm: bool) -> str:
    value = os.environ.get("VIGIL_SEALING_PASSPHRASE")
    if value:
        return value
    path = os.environ.get("VIGIL_SEALING_PASSPHRASE_FILE")
    if path:
        try:
            return Path(path).read_text("utf-8").strip()
        except OSError:
            raise UsageError(
                "Cannot read the file named by VIGIL_SEALING_PASSPHRASE_FILE."
            ) from None
    if not sys.stdin.isatty():
        raise UsageError(
            "No passphrase for the sealing key file: set VIGIL_SEALING_PASSPHRASE_FILE (or "
            "VIGIL_SEALING_PASSPHRASE), or run on a terminal."
        )
    first = getpass.getpass("Passphrase for the sealing key file: ")
    if confirm and getpass.getpass("Repeat it: ") != first:
        raise UsageError("The two passphrases differ.")
    return first


# --- the key file --------------------------------------------------------------------------


def key_file_document(pair: crypto.SealingKeyPair, passphrase: str) -> dict[str, Any]:
    key_id = crypto.key_fingerprint(pair.public)
    params = keys.kdf_params_from_env()
    salt, wrapped = crypto.wrap_with_passphrase(pair.private, passphrase, params, _key_aad(key_id))
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


def load_key_file(path: Path, passphrase: str) -> tuple[bytes, bytes, str]:
    """(private, public, key_id). UsageError, one sentence, for every way it can fail."""
    try:
        doc = json.loads(path.read_bytes())
    except OSError:
        raise UsageError(f"Cannot read the sealing key file {path}.") from None
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"{path} is not a Vigil sealing key file.") from None
    if not isinstance(doc, dict) or doc.get("kind") != KEY_FILE_KIND:
        raise UsageError(f"{path} is not a Vigil sealing key file.")
    try:
        if doc.get("version") != KEY_FILE_VERSION or doc.get("kdf") != "argon2id":
            raise ValueError("format")
        public = _unb64(doc["public"])
        key_id = str(doc["key_id"])
        p = doc["kdf_params"]
        params = crypto.KdfParams(int(p["memory_kib"]), int(p["iterations"]), int(p["lanes"]))
        if not (params.memory_kib <= 4 << 20 and params.iterations <= 64 and params.lanes <= 64):
            raise ValueError("implausible cost")
        salt, wrapped = _unb64(doc["salt"]), _unb64(doc["wrapped"])
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"The sealing key file {path} is damaged.") from None
    if crypto.key_fingerprint(public) != key_id:
        raise UsageError(f"The sealing key file {path} is damaged.")
    try:
        private = crypto.unwrap_with_passphrase(wrapped, passphrase, salt, params, _key_aad(key_id))
        if crypto.sealing_public_of(private) != public:
            raise crypto.CryptoError("pair")
    except crypto.CryptoError:
        raise UsageError(
            "Wrong passphrase for the sealing key file, or the file is damaged."
        ) from None
    return private, public, key_id


# --- vigil keys sealing-new ------------------------------------------------------------------


def cmd_sealing_new(args: argparse.Namespace, settings: config.Settings) -> int:
    out = Path(args.out).expanduser()
    if out.exists():
        raise UsageError(f"{out} already exists; refusing to overwrite a key file.")
    if not out.parent.is_dir():
        raise UsageError(f"The directory {out.parent} does not exist.")
    network_passphrase = _passphrase(settings)
    store = unlock(settings.data_dir, network_passphrase)
    try:
        old = store.slots.sealing_public
        if old and not args.replace:
            raise UsageError(
                f"This network already has a sealing key ({crypto.key_fingerprint(old)}). "
                "Use --replace to make a new one, and keep the old key file: it still opens "
                "the reports sealed to it."
            )
        passphrase = _sealing_passphrase(confirm=True)
        if len(passphrase) < MIN_SEALING_PASSPHRASE:
            raise UsageError(
                f"The sealing key passphrase needs at least {MIN_SEALING_PASSPHRASE} characters."
            )
        if passphrase == network_passphrase:
            raise UsageError("The sealing key passphrase must differ from the network passphrase.")
        pair = crypto.sealing_keypair()
        doc = key_file_document(pair, passphrase)
        write_private_file(out, json.dumps(doc, indent=1).encode())
        store.slots.sealing_public = pair.public
        store.slots.save()
        key_id = doc["key_id"]
        store.db.run_sync(_record_new_key, key_id)
    finally:
        store.close()
    print(f"Sealing key written to {out} (fingerprint {key_id}).")
    if old:
        print(f"It replaces {crypto.key_fingerprint(old)}; keep that key file for older reports.")
    print("Move the file off this server now and delete it here; keep copies with two")
    print("coordinators. Then restart `vigil run`: new reports are sealed to this key.")
    try:
        if out.resolve().is_relative_to(settings.data_dir.resolve()):
            print(
                "vigil: warning: the key file is inside the data directory; a copy of the data "
                "directory would carry the key that opens the archive.",
                file=sys.stderr,
            )
    except OSError:
        pass
    return EXIT_OK


def _record_new_key(conn: Any, key_id: str) -> None:
    reports.pin_key(conn, key_id)
    audit.record(conn, None, "keys.sealing_new", None, time.time())


# --- vigil reports export ------------------------------------------------------------------


CSV_COLUMNS = [
    "report_id", "case_slug", "case_name", "received_at_utc", "source", "urgent", "kind",
    "contact_date", "health", "conditions", "needs", "text", "attachments",
    "published_update_id",
]  # fmt: skip


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _export_rows(store: Any, case_slug: str | None) -> list[reports.SealedRow]:
    def query(conn: Any) -> list[reports.SealedRow] | None:
        case_id = None
        if case_slug:
            case = cases.by_slug(conn, case_slug)
            if case is None:
                return None
            case_id = case.id
        return reports.sealed_rows(conn, case_id)

    rows = store.db.run_sync(query)
    if rows is None:
        raise UsageError(f"There is no case {case_slug!r}.")
    return rows


def _suffix(name: str, mime: str) -> str:
    ext = Path(name).suffix.lower()
    if ext and len(ext) <= 8 and ext[1:].isalnum():
        return ext
    return {"image/jpeg": ".jpg", "image/png": ".png", "application/pdf": ".pdf"}.get(mime, ".bin")


def _open_report(
    store: Any, row: reports.SealedRow, private: bytes, files_dir: Path | None
) -> dict[str, Any]:
    r = row.report
    body = json.loads(crypto.open_sealed(private, row.sealed, reports.report_info(r.id, r.case_id)))
    out: dict[str, Any] = {
        "report_id": r.id,
        "case_slug": row.case_slug,
        "case_name": row.case_name,
        "received_at_utc": _utc(r.created_at),
        "source": r.source,
        "urgent": r.urgent,
        "kind": r.kind,
        "health": r.health,
        "published_update_id": r.published_update_id,
        "body": body,
        "attachments": [],
    }
    for att in store.db.run_sync(reports.sealed_attachments, r.id):
        envelope = crypto.open_sealed(private, att.sealed, reports.attachment_info(att.id, r.id))
        header, data = reports.unpack_attachment(envelope)
        item = {
            "id": att.id,
            "kind": att.kind,
            "name": header.get("name", ""),
            "mime": header.get("mime", ""),
            "size": len(data),
            "metadata_stripped": header.get("metadata_stripped", False),
        }
        if files_dir is not None:
            path = files_dir / f"report-{r.id}-file-{att.id}{_suffix(item['name'], item['mime'])}"
            write_private_file(path, data)
            item["file"] = str(path)
        else:
            item["data_base64"] = _b64(data)
        out["attachments"].append(item)
    return out


def _csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text  # a spreadsheet must not run a relative's words as a formula
    return text


def _to_csv(items: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for it in items:
        body = it["body"]
        files = [a.get("file") or a.get("name") or f"file {a['id']}" for a in it["attachments"]]
        writer.writerow(
            [
                _csv_cell(v)
                for v in (
                    it["report_id"], it["case_slug"], it["case_name"], it["received_at_utc"],
                    it["source"], "yes" if it["urgent"] else "no", it["kind"],
                    body.get("contact_date"), it["health"], body.get("conditions"),
                    "; ".join(body.get("needs") or []), body.get("text"), "; ".join(files),
                    it["published_update_id"],
                )
            ]
        )  # fmt: skip
    return buf.getvalue()


def cmd_export(args: argparse.Namespace, settings: config.Settings) -> int:
    key_path = Path(args.sealing_key).expanduser()
    private, _public, key_id = load_key_file(key_path, _sealing_passphrase(confirm=False))
    files_dir = Path(args.attachments_dir).expanduser() if args.attachments_dir else None
    store = unlock(settings.data_dir, _passphrase(settings))
    try:
        rows = _export_rows(store, args.case)
        mine = [r for r in rows if r.report.key_id == key_id]
        if rows and not mine:
            raise UsageError(
                f"This sealing key opens none of the {len(rows)} reports in the archive: they "
                "were sealed to another key."
            )
        if files_dir is not None:
            ensure_private_dir(files_dir)
        items, damaged = [], []
        for row in mine:
            try:
                items.append(_open_report(store, row, private, files_dir))
            except (crypto.CryptoError, ValueError, KeyError):
                damaged.append(row.report.id)
        store.db.run_sync(
            lambda conn: audit.record(
                conn, None, "reports.exported", f"reports:{len(items)}", time.time()
            )
        )
    finally:
        store.close()
    if args.format == "csv":
        text = _to_csv(items)
    else:
        text = json.dumps(
            {
                "kind": EXPORT_KIND,
                "version": 1,
                "exported_at_utc": _utc(time.time()),
                "key_id": key_id,
                "reports": items,
                "sealed_to_other_keys": len(rows) - len(mine),
                "damaged_report_ids": damaged,
            },
            ensure_ascii=False,
            indent=1,
        )
    if args.out:
        write_private_file(Path(args.out).expanduser(), text.encode())
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    note = f"vigil: exported {len(items)} report(s)"
    if len(rows) - len(mine):
        note += f"; {len(rows) - len(mine)} sealed to other keys were left out"
    if damaged:
        note += f"; {len(damaged)} damaged could not be opened"
    print(note + ". The export is plaintext: keep it on an encrypted device.", file=sys.stderr)
    return EXIT_FAILURE if damaged else EXIT_OK
