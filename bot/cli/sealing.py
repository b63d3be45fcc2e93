"""`vigil keys sealing-new`, `vigil keys sealing-import` and `vigil reports export`: the sealing
key pair and the sealed report archive from the command line (file formats: storage/sealkey.py).

The key is born where it lives (THREATS rule 13):

1. On an offline computer, with no data dir: `vigil keys sealing-new --out sealing.key` writes
   the private key (under a passphrase of its own, from VIGIL_SEALING_PASSPHRASE(_FILE) or
   typed twice) and `sealing.key.pub`, and prints the key's eight words.
2. On the server: `vigil keys sealing-import sealing.key.pub` shows the same words, stores the
   public half in keyslots.json (signed under the master key) and pins its fingerprint in the
   encrypted database. Restart `vigil run`: new reports are sealed to it.

`sealing-new` refuses to run beside a network (the private half would be born on the server,
and its deleted blocks could be recovered there) unless `--on-server` says so; then it also
imports the key, with a warning. `--replace` (on `sealing-import`, or `sealing-new
--on-server`) supersedes an existing key; keep the old key file, it still opens older reports.

The export. `vigil reports export --sealing-key FILE` opens the archive, best on an offline
machine with a copy of the data directory (or a restored backup) and the key file. It writes
JSON (attachments inline as base64, or as files with --attachments-dir) or CSV (one row per
report; cells that a spreadsheet would run as a formula are prefixed with an apostrophe).
The output is plaintext: it is written 0600 and should stay on an encrypted device.
Exit codes: 0 ok; 2 wrong passphrase, wrong or damaged key file, bad usage; 1 when some
report in the archive is damaged (the others are still exported), or the disk is full.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot import config
from bot.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    audit_cli,
    network_passphrase,
    sealing_passphrase,
    unlock_store,
    warn,
)
from storage import cases, crypto, reports, sealkey
from storage.backup import network_exists
from storage.files import ensure_private_dir, write_private_file
from storage.store import Store, unlock

EXPORT_KIND = "vigil-reports-export"
MIN_SEALING_PASSPHRASE = 12


def register_keys(ksub: Any) -> None:
    n = ksub.add_parser(
        "sealing-new",
        help="new sealing key pair, on an offline computer: FILE and FILE.pub",
        description="Make the key pair that seals relatives' reports, on an offline computer: "
        "writes FILE (the private key, under its own passphrase of at least "
        f"{MIN_SEALING_PASSPHRASE} characters) and FILE.pub, and prints the key's eight words. "
        "Needs no data dir. Then run `vigil keys sealing-import FILE.pub` on the server.",
    )
    n.add_argument(
        "--out", required=True, metavar="FILE", help="where to write the private key file"
    )
    n.add_argument(
        "--on-server",
        action="store_true",
        help="generate beside this machine's network and import it at once (weaker: the "
        "private key is born on the server)",
    )
    n.add_argument(
        "--replace",
        action="store_true",
        help="with --on-server: supersede the network's current sealing key",
    )
    n.set_defaults(func=cmd_sealing_new)
    i = ksub.add_parser(
        "sealing-import",
        help="pin a sealing public key (FILE.pub from sealing-new) on this server",
        description="Store the sealing public key in this network and show its eight words: "
        "they must match the words sealing-new printed. Restart `vigil run` afterwards.",
    )
    i.add_argument("public", metavar="FILE.pub", help="the public key file sealing-new wrote")
    i.add_argument(
        "--replace",
        action="store_true",
        help="supersede the network's current sealing key (keep the old key file)",
    )
    i.set_defaults(func=cmd_sealing_import)


def register(sub: Any) -> None:
    r = sub.add_parser(
        "reports",
        help="the sealed report archive",
        description="The sealed report archive: open it offline with the sealing key file.",
    )
    rsub = r.add_subparsers(dest="reports_command", required=True, metavar="ACTION")
    e = rsub.add_parser(
        "export",
        help="open the archive offline with the sealing key file",
        description="Open every report sealed to the key in FILE and write them out in "
        "plaintext (0600). Best done on an offline computer with a copy of the data dir.",
    )
    e.add_argument(
        "--sealing-key", required=True, metavar="FILE", help="the private key file (not .pub)"
    )
    e.add_argument(
        "--format", choices=["json", "csv"], default="json", help="json (default) or csv"
    )
    e.add_argument("--out", metavar="FILE", help="write here (0600) instead of to stdout")
    e.add_argument("--case", metavar="SLUG", help="only the reports of this case")
    e.add_argument(
        "--attachments-dir", metavar="DIR", help="write attachments as files here, not inline"
    )
    e.set_defaults(func=cmd_export)


def _check_sealing_passphrase(passphrase: str) -> None:
    if len(passphrase) < MIN_SEALING_PASSPHRASE:
        raise UsageError(
            f"The sealing key passphrase needs at least {MIN_SEALING_PASSPHRASE} characters."
        )


def _writable_out(out: Path) -> None:
    for path in (out, sealkey.public_path(out)):
        if path.exists():
            raise UsageError(f"{path} already exists; refusing to overwrite a key file.")
    if not out.parent.is_dir():
        raise UsageError(f"The directory {out.parent} does not exist.")


def _write_pair(out: Path, passphrase: str) -> crypto.SealingKeyPair:
    pair = crypto.sealing_keypair()
    write_private_file(out, sealkey.encode(sealkey.private_document(pair, passphrase)))
    try:
        write_private_file(
            sealkey.public_path(out), sealkey.encode(sealkey.public_document(pair.public))
        )
    except BaseException:
        out.unlink(missing_ok=True)  # half a pair is no use to anyone
        raise
    return pair


# --- vigil keys sealing-new ------------------------------------------------------------------


def cmd_sealing_new(args: argparse.Namespace, settings: config.Settings) -> int:
    out = Path(args.out).expanduser()
    _writable_out(out)
    beside = network_exists(settings.data_dir)
    if beside and not args.on_server:
        raise UsageError(
            f"This computer holds a Vigil network ({settings.data_dir}): make the sealing key "
            "on an offline computer instead, or add --on-server if you accept that its private "
            "half is born here."
        )
    if args.on_server and not beside:
        raise UsageError(f"--on-server needs a network in {settings.data_dir}; there is none.")
    if args.replace and not args.on_server:
        raise UsageError("--replace belongs to `vigil keys sealing-import` (or --on-server).")
    if args.on_server:
        return _sealing_new_on_server(args, settings, out)
    passphrase = sealing_passphrase(confirm=True, check=_check_sealing_passphrase)
    pair = _write_pair(out, passphrase)
    print(f"Sealing key written to {out} (keep it, and a copy, off the server).")
    print(f"Public half written to {sealkey.public_path(out)}.")
    print(f"Its words: {sealkey.fingerprint_words(pair.public)}")
    print("Next: copy the .pub file to the server and run there:")
    print(f"    vigil keys sealing-import {sealkey.public_path(out).name}")
    print("It shows the same words; compare them aloud before you trust it.")
    return EXIT_OK


def _sealing_new_on_server(args: argparse.Namespace, settings: config.Settings, out: Path) -> int:
    network = network_passphrase(settings)
    store = _unlock_with(settings, network)
    try:
        _refuse_silent_replacement(store, args.replace)
        passphrase = sealing_passphrase(confirm=True, check=_check_sealing_passphrase)
        if passphrase == network:
            raise UsageError("The sealing key passphrase must differ from the network passphrase.")
        pair = _write_pair(out, passphrase)
        old = _pin(store, pair.public, "keys.sealing_new")
    finally:
        store.close()
    warn(
        "the sealing private key was generated on this server; move FILE off it now, and "
        "prefer `vigil keys sealing-new` on an offline computer next time."
    )
    if _inside(out, settings.data_dir):
        warn(
            "the key file is inside the data directory; a copy of the data directory would "
            "carry the key that opens the archive."
        )
    print(f"Sealing key written to {out}; public half in {sealkey.public_path(out)}.")
    print(f"Its words: {sealkey.fingerprint_words(pair.public)}")
    _print_replaced(old)
    print("Move the key file off this server now and delete it here; keep copies with two")
    print("coordinators. Then restart `vigil run`: new reports are sealed to this key.")
    return EXIT_OK


def _inside(path: Path, directory: Path) -> bool:
    try:
        return path.resolve().is_relative_to(directory.resolve())
    except OSError:
        return False


# --- vigil keys sealing-import ---------------------------------------------------------------


def cmd_sealing_import(args: argparse.Namespace, settings: config.Settings) -> int:
    public = sealkey.load_public(Path(args.public).expanduser())
    store = unlock_store(settings)
    try:
        if store.slots.sealing_public == public.public:
            print(f"This is already the network's sealing key. Its words: {public.words}")
            return EXIT_OK
        _refuse_silent_replacement(store, args.replace)
        old = _pin(store, public.public, "keys.sealing_imported")
    finally:
        store.close()
    print(f"Sealing key imported. Its words: {public.words}")
    print("They must be the words `vigil keys sealing-new` printed; if not, someone swapped")
    print("the file: import the right one with --replace.")
    _print_replaced(old)
    print("Restart `vigil run`: new reports are sealed to this key.")
    return EXIT_OK


def _refuse_silent_replacement(store: Store, replace: bool) -> None:
    old = store.slots.sealing_public
    if old and not replace:
        raise UsageError(
            f"This network already has a sealing key ({sealkey.fingerprint_words(old)}). "
            "Use --replace to supersede it, and keep the old key file: it still opens the "
            "reports sealed to it."
        )


def _pin(store: Store, public: bytes, action: str) -> bytes | None:
    """The new key into keyslots.json (signed) and its fingerprint into the database. The
    database goes first: on a full disk it fails before the slot file changes."""
    old = store.slots.sealing_public
    key_id = crypto.key_fingerprint(public)
    old_pin = store.db.run_sync(reports.pinned_key)
    store.db.run_sync(_record_key, key_id, action)
    store.slots.sealing_public = public
    try:
        store.slots.save(store.master)
    except BaseException:
        store.slots.sealing_public = old
        if old_pin is not None:
            store.db.run_sync(reports.pin_key, old_pin)
        raise
    return old


def _record_key(conn: Any, key_id: str, action: str) -> None:
    reports.pin_key(conn, key_id)
    audit_cli(conn, action, None)


def _print_replaced(old: bytes | None) -> None:
    if old:
        print(f"It replaces the key {sealkey.fingerprint_words(old)}; keep that key file for")
        print("the reports sealed before.")


def _unlock_with(settings: config.Settings, passphrase: str) -> Store:
    return unlock(settings.data_dir, passphrase)


# --- vigil reports export ------------------------------------------------------------------


CSV_COLUMNS = [
    "report_id", "case_slug", "case_name", "received_at_utc", "source", "urgent", "kind",
    "contact_date", "health", "conditions", "needs", "text", "attachments",
    "published_update_id",
]  # fmt: skip


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _export_rows(store: Store, case_slug: str | None) -> list[reports.SealedRow]:
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


def open_report(
    store: Store, row: reports.SealedRow, private: bytes, files_dir: Path | None
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
            item["data_base64"] = base64.b64encode(data).decode()
        out["attachments"].append(item)
    return out


def _csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text  # a spreadsheet must not run a relative's words as a formula
    return text


def to_csv(items: list[dict[str, Any]]) -> str:
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
    private, _public, key_id = sealkey.load_private(key_path, sealing_passphrase(confirm=False))
    files_dir = Path(args.attachments_dir).expanduser() if args.attachments_dir else None
    store = unlock_store(settings)
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
                items.append(open_report(store, row, private, files_dir))
            except (crypto.CryptoError, ValueError, KeyError):
                damaged.append(row.report.id)
        store.db.run_sync(audit_cli, "reports.exported", f"reports:{len(items)}")
    finally:
        store.close()
    if args.format == "csv":
        text = to_csv(items)
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
