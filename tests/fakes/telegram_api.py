"""Faithful fake of the Telegram Bot API 10.0 on 127.0.0.1, checked against the published spec."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import functools
import html
import itertools
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import web

__all__ = [
    "DEFAULT_TOKEN",
    "ApiError",
    "ApiSpec",
    "Call",
    "ControlClient",
    "ControlError",
    "FakeChat",
    "FakeFile",
    "FakeMessage",
    "FakeStats",
    "FakeTelegram",
    "FakeUser",
    "Fault",
    "FloodLimits",
    "ThreadedFakeTelegram",
    "find_spec_path",
    "load_spec",
    "parse_formatted_text",
    "utf16_len",
]

DEFAULT_TOKEN = "123456789:TEST-vigil-fake_token"
SPEC_ENV = "VIGIL_TELEGRAM_SPEC"
SPEC_FILE = "api-10.0.json"
HOST = "127.0.0.1"

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_ANSWER = 200
MAX_DOWNLOAD = 20 * 1024 * 1024
MAX_UPLOAD = 50 * 1024 * 1024
LONG_POLL_MAX_TIMEOUT = 50
# The real server answers ~1-2 ms after the first update so that a burst leaves in one batch.
LONG_POLL_BATCH_DELAY = 0.002

# Update types the real server leaves out unless asked for explicitly (spec getUpdates).
DEFAULT_EXCLUDED_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

SEND_METHODS = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendAudio",
        "sendVideo",
        "sendAnimation",
        "sendVoice",
        "sendVideoNote",
        "sendPaidMedia",
        "sendMediaGroup",
        "sendLocation",
        "sendVenue",
        "sendContact",
        "sendPoll",
        "sendChecklist",
        "sendDice",
        "sendSticker",
        "sendInvoice",
        "sendGame",
        "copyMessage",
        "copyMessages",
        "forwardMessage",
        "forwardMessages",
    }
)
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
PARSE_MODES = {"html": "HTML", "markdown": "Markdown", "markdownv2": "MarkdownV2"}

_TOKEN_RE = re.compile(r"\d{1,20}:[A-Za-z0-9_-]{1,100}")
_INT_RE = re.compile(r"[+-]?\d{1,20}")
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")
_LANG_RE = re.compile(r"[a-z]{2}")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram entity offsets."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def _utf16_slice(text: str, offset: int, length: int) -> str:
    if text.isascii():
        return text[offset : offset + length]
    raw = text.encode("utf-16-le")
    return raw[2 * offset : 2 * (offset + length)].decode("utf-16-le", "replace")


def _now() -> int:
    return int(time.time())


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------
# The spec: precompiled per-method checkers built from api-10.0.json
# ---------------------------------------------------------------------------------------------


def find_spec_path() -> Path:
    """Locate api-10.0.json: $VIGIL_TELEGRAM_SPEC, else `specs/telegram-bot-api/` or
    `shared/specs/telegram-bot-api/` in this file's directory or any directory above it."""
    env = os.environ.get(SPEC_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    candidates = [
        parent / prefix / "telegram-bot-api" / SPEC_FILE
        for parent in here.parents
        for prefix in ("specs", "shared/specs")
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    repo_copy = here.parents[2] / "specs" / "telegram-bot-api" / SPEC_FILE
    raise FileNotFoundError(
        f"Telegram Bot API spec {SPEC_FILE} not found; set {SPEC_ENV} or copy it to {repo_copy}"
    )


class _Invalid(Exception):
    """One contract violation found while checking a request."""

    def __init__(self, message: str, description: str | None = None, lenient: bool = False):
        super().__init__(message)
        self.message = message
        self.description = description or f"Bad Request: {message}"
        # The real server silently ignores unknown names; other violations make it answer 400.
        self.lenient = lenient


@dataclass(frozen=True, slots=True)
class Upload:
    """A file part received in a multipart request."""

    data: bytes
    filename: str | None
    content_type: str | None


Converter = Callable[[Any, str, "_Ctx"], Any]


@dataclass(slots=True)
class _Ctx:
    files: dict[str, Upload]
    refs: set[str]


@dataclass(slots=True)
class FieldSpec:
    name: str
    types: tuple[str, ...]
    required: bool
    convert: Converter


@dataclass(slots=True)
class MethodSpec:
    name: str
    fields: dict[str, FieldSpec]
    required: tuple[str, ...]
    returns: tuple[str, ...]


_DISCRIMINATOR_RE = re.compile(r'(?:must be|always) "?([a-z_]+)"?')
_ENUM_RE = re.compile(r'"([a-z_]+)"')


class ApiSpec:
    """Method and type tables of one Bot API version, with converters compiled once per method."""

    def __init__(self, raw: dict[str, Any]):
        self.version: str = raw.get("version", "?")
        self._raw_types: dict[str, Any] = raw["types"]
        self._object_validators: dict[str, Callable[[Any, str, _Ctx], None]] = {}
        self._validators: dict[str, Callable[[Any, str, _Ctx], None]] = {}
        self._converters: dict[tuple[str, ...], Converter] = {}
        self.methods: dict[str, MethodSpec] = {}
        for name, m in raw["methods"].items():
            fields = {
                f["name"]: FieldSpec(
                    f["name"], tuple(f["types"]), f["required"], self._converter(tuple(f["types"]))
                )
                for f in m.get("fields", [])
            }
            required = tuple(n for n, f in fields.items() if f.required)
            self.methods[name.lower()] = MethodSpec(name, fields, required, tuple(m["returns"]))
        self.update_types: frozenset[str] = frozenset(
            f["name"] for f in self._raw_types["Update"]["fields"] if f["name"] != "update_id"
        )

    def method(self, name: str) -> MethodSpec | None:
        return self.methods.get(name.lower())

    def type_fields(self, type_name: str) -> list[dict[str, Any]]:
        return self._raw_types.get(type_name, {}).get("fields", [])

    # -- request checking ----------------------------------------------------------------------

    def check(
        self, spec: MethodSpec, params: dict[str, Any], files: dict[str, Upload]
    ) -> list[_Invalid]:
        """Convert params in place to Python types; return every violation found."""
        problems: list[_Invalid] = []
        ctx = _Ctx(files, set())
        unknown: list[str] = []
        for name, value in params.items():
            fs = spec.fields.get(name)
            if fs is None:
                unknown.append(name)
                continue
            try:
                params[name] = fs.convert(value, name, ctx)
            except _Invalid as exc:
                problems.append(exc)
        for name in spec.required:
            if name not in params:
                problems.append(_missing(name))
        for name in unknown:
            # A multipart part named by an attach://<name> reference is a file, not a parameter.
            if name in files and name in ctx.refs:
                del params[name]
                continue
            problems.append(_Invalid(f"unknown parameter '{name}'", lenient=True))
        return problems

    # -- converters ------------------------------------------------------------------------------

    def _converter(self, types: tuple[str, ...]) -> Converter:
        conv = self._converters.get(types)
        if conv is None:
            conv = self._converters[types] = self._build_converter(types)
        return conv

    def _build_converter(self, types: tuple[str, ...]) -> Converter:
        if types == ("Integer", "String"):
            return _conv_chat_id
        if types == ("InputFile", "String"):
            return _conv_file_or_str
        if types == ("InputFile",):
            return _conv_file
        if len(types) == 1 and types[0] in _SCALAR_CONVERTERS:
            return _SCALAR_CONVERTERS[types[0]]
        validators = [self._validator(t) for t in types]
        expected = " or ".join(types)

        def convert(value: Any, path: str, ctx: _Ctx) -> Any:
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    raise _Invalid(
                        f"{path}: not valid JSON (expected {expected})",
                        f"Bad Request: can't parse {path} JSON object",
                    ) from None
            first: _Invalid | None = None
            for validate in validators:
                try:
                    validate(value, path, ctx)
                    return value
                except _Invalid as exc:
                    first = first or exc
            assert first is not None
            raise first

        return convert

    def _validator(self, type_name: str) -> Callable[[Any, str, _Ctx], None]:
        """Structural validator for a JSON value of one spec type (strict JSON types)."""
        v = self._validators.get(type_name)
        if v is None:
            v = self._validators[type_name] = self._build_validator(type_name)
        return v

    def _build_validator(self, type_name: str) -> Callable[[Any, str, _Ctx], None]:
        if type_name.startswith("Array of "):
            item = self._validator(type_name[len("Array of ") :])

            def validate_array(value: Any, path: str, ctx: _Ctx) -> None:
                if not isinstance(value, list):
                    raise _Invalid(f"{path}: expected {type_name}")
                for i, v in enumerate(value):
                    item(v, f"{path}[{i}]", ctx)

            return validate_array
        if type_name in _JSON_SCALARS:
            return _JSON_SCALARS[type_name]
        if type_name == "InputFile":
            return _json_input_file

        def lazy(value: Any, path: str, ctx: _Ctx) -> None:
            v = self._object_validators.get(type_name)
            if v is None:
                v = self._object_validators[type_name] = self._build_object_validator(type_name)
            v(value, path, ctx)

        return lazy

    def _build_object_validator(self, type_name: str) -> Callable[[Any, str, _Ctx], None]:
        raw = self._raw_types.get(type_name)
        if raw is None:
            # Types the scrape does not describe are accepted as any JSON object.
            return lambda value, path, ctx: None
        subtypes: list[str] = raw.get("subtypes") or []
        if subtypes:
            by_tag: dict[str, str] = {}
            for sub in subtypes:
                tag = self._discriminator(sub)
                if tag is not None:
                    by_tag.setdefault(tag, sub)

            def validate_union(value: Any, path: str, ctx: _Ctx) -> None:
                if not isinstance(value, dict):
                    raise _Invalid(f"{path}: expected {type_name} object")
                if by_tag and "type" in value:
                    sub = by_tag.get(value["type"])
                    if sub is None:
                        raise _Invalid(f"{path}: unknown {type_name} type {value['type']!r}")
                    self._validator(sub)(value, path, ctx)
                    return
                first: _Invalid | None = None
                for sub in subtypes:
                    try:
                        self._validator(sub)(value, path, ctx)
                        return
                    except _Invalid as exc:
                        first = first or exc
                raise first or _Invalid(f"{path}: expected {type_name} object")

            return validate_union

        fields: dict[str, tuple[Callable[[Any, str, _Ctx], None], ...]] = {}
        literals: dict[str, frozenset[str]] = {}
        required: list[str] = []
        for f in raw.get("fields", []):
            fields[f["name"]] = tuple(self._validator(t) for t in f["types"])
            if f["required"]:
                required.append(f["name"])
            if f["name"] == "type" and f["types"] == ["String"]:
                desc = f["description"]
                m = _DISCRIMINATOR_RE.search(desc)
                if m:
                    literals["type"] = frozenset({m.group(1)})
                elif "can be" in desc or "one of" in desc:
                    literals["type"] = frozenset(_ENUM_RE.findall(desc))
        rule = _TYPE_RULES.get(type_name)
        string_ok = type_name == "KeyboardButton"  # the spec allows a bare String there

        def validate_object(value: Any, path: str, ctx: _Ctx) -> None:
            if string_ok and isinstance(value, str):
                return
            if not isinstance(value, dict):
                raise _Invalid(f"{path}: expected {type_name} object")
            for key, v in value.items():
                alts = fields.get(key)
                if alts is None:
                    raise _Invalid(f"{path}: unknown field '{key}' in {type_name}", lenient=True)
                if v is None:
                    continue
                err: _Invalid | None = None
                for alt in alts:
                    try:
                        alt(v, f"{path}.{key}", ctx)
                        err = None
                        break
                    except _Invalid as exc:
                        err = err or exc
                if err is not None:
                    raise err
            for key in required:
                if value.get(key) is None:
                    raise _Invalid(f"{path}: {type_name} lacks required field '{key}'")
            for key, allowed in literals.items():
                if value.get(key) not in allowed:
                    raise _Invalid(f"{path}.{key}: {value.get(key)!r} is not valid for {type_name}")
            if rule is not None:
                rule(value, path)

        return validate_object

    def _discriminator(self, type_name: str) -> str | None:
        for f in self.type_fields(type_name):
            if f["name"] == "type":
                m = _DISCRIMINATOR_RE.search(f["description"])
                return m.group(1) if m else None
        return None


def _missing(name: str) -> _Invalid:
    desc = (
        "Bad Request: message text is empty" if name == "text" else f"Bad Request: {name} is empty"
    )
    return _Invalid(f"missing required parameter '{name}'", desc)


# Top-level parameters arrive as strings (form, query, multipart) or JSON values (JSON body).
def _conv_int(value: Any, path: str, ctx: _Ctx) -> int:
    if type(value) is int:
        return value
    if type(value) is str and _INT_RE.fullmatch(value):
        return int(value)
    raise _Invalid(f"{path}: expected Integer, got {value!r:.40}", f"Bad Request: invalid {path}")


def _conv_str(value: Any, path: str, ctx: _Ctx) -> str:
    if type(value) is str:
        if value.startswith("attach://"):
            ctx.refs.add(value[9:])
        return value
    if isinstance(value, (int, float)):
        # The real server turns JSON scalars into their text before parsing.
        return json.dumps(value)
    raise _Invalid(f"{path}: expected String", f"Bad Request: invalid {path}")


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _conv_bool(value: Any, path: str, ctx: _Ctx) -> bool:
    if type(value) is bool:
        return value
    if type(value) is str:
        low = value.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise _Invalid(f"{path}: expected Boolean, got {value!r:.40}", f"Bad Request: invalid {path}")


def _conv_float(value: Any, path: str, ctx: _Ctx) -> float:
    if isinstance(value, (int, float)) and type(value) is not bool:
        return float(value)
    if type(value) is str:
        try:
            return float(value)
        except ValueError:
            pass
    raise _Invalid(f"{path}: expected Float, got {value!r:.40}", f"Bad Request: invalid {path}")


def _conv_chat_id(value: Any, path: str, ctx: _Ctx) -> int | str:
    if type(value) is int:
        return value
    if type(value) is str:
        if _INT_RE.fullmatch(value):
            return int(value)
        if value.startswith("@") and len(value) > 1:
            return value
    raise _Invalid(
        f"{path}: expected Integer or '@username', got {value!r:.40}",
        "Bad Request: chat not found",
    )


def _conv_file(value: Any, path: str, ctx: _Ctx) -> Upload:
    if isinstance(value, Upload):
        return value
    if type(value) is str and value.startswith("attach://"):
        name = value[9:]
        ctx.refs.add(name)
        if name in ctx.files:
            return ctx.files[name]
    raise _Invalid(f"{path}: expected an uploaded InputFile", f"Bad Request: invalid {path}")


def _conv_file_or_str(value: Any, path: str, ctx: _Ctx) -> Upload | str:
    if isinstance(value, Upload):
        return value
    if type(value) is str:
        if value.startswith("attach://"):
            return _conv_file(value, path, ctx)
        return value
    raise _Invalid(f"{path}: expected InputFile or String", f"Bad Request: invalid {path}")


_SCALAR_CONVERTERS: dict[str, Converter] = {
    "Integer": _conv_int,
    "String": _conv_str,
    "Boolean": _conv_bool,
    "True": _conv_bool,
    "Float": _conv_float,
}


# Inside JSON-serialized objects the types must already be right: PTB sends real JSON types.
def _json_int(value: Any, path: str, ctx: _Ctx) -> None:
    if type(value) is not int:
        raise _Invalid(f"{path}: expected Integer, got {value!r:.40}")


def _json_str(value: Any, path: str, ctx: _Ctx) -> None:
    if type(value) is not str:
        raise _Invalid(f"{path}: expected String, got {value!r:.40}")
    if value.startswith("attach://"):
        name = value[9:]
        ctx.refs.add(name)
        if name not in ctx.files:
            raise _Invalid(f"{path}: {value} names no uploaded part")


def _json_bool(value: Any, path: str, ctx: _Ctx) -> None:
    if type(value) is not bool:
        raise _Invalid(f"{path}: expected Boolean, got {value!r:.40}")


def _json_float(value: Any, path: str, ctx: _Ctx) -> None:
    if type(value) not in (int, float):
        raise _Invalid(f"{path}: expected Float, got {value!r:.40}")


def _json_input_file(value: Any, path: str, ctx: _Ctx) -> None:
    if type(value) is not str or not value.startswith("attach://"):
        raise _Invalid(f"{path}: expected attach://<name> for an InputFile")
    _json_str(value, path, ctx)


_JSON_SCALARS: dict[str, Callable[[Any, str, _Ctx], None]] = {
    "Integer": _json_int,
    "String": _json_str,
    "Boolean": _json_bool,
    "True": _json_bool,
    "Float": _json_float,
}

_BUTTON_PLAIN_FIELDS = frozenset({"text", "icon_custom_emoji_id", "style"})


def _rule_inline_button(value: dict[str, Any], path: str) -> None:
    actions = [k for k in value if k not in _BUTTON_PLAIN_FIELDS]
    if len(actions) != 1:
        raise _Invalid(
            f"{path}: an InlineKeyboardButton needs exactly one action field, has {actions}",
            "Bad Request: can't parse inline keyboard button: "
            "Text buttons are unallowed in the inline keyboard",
        )
    data = value.get("callback_data")
    if data is not None and not 1 <= len(data.encode()) <= 64:
        raise _Invalid(
            f"{path}.callback_data: must be 1-64 bytes, is {len(data.encode())}",
            "Bad Request: BUTTON_DATA_INVALID",
        )


def _rule_bot_command(value: dict[str, Any], path: str) -> None:
    if not _COMMAND_RE.fullmatch(value["command"]):
        raise _Invalid(
            f"{path}.command: {value['command']!r} is not 1-32 chars of [a-z0-9_]",
            "Bad Request: BOT_COMMAND_INVALID",
        )
    if not 1 <= len(value["description"]) <= 256:
        raise _Invalid(
            f"{path}.description: must be 1-256 characters",
            "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID",
        )


_TYPE_RULES: dict[str, Callable[[dict[str, Any], str], None]] = {
    "InlineKeyboardButton": _rule_inline_button,
    "BotCommand": _rule_bot_command,
}


@functools.lru_cache(maxsize=4)
def _load_spec_cached(path: str) -> ApiSpec:
    with open(path, encoding="utf-8") as fh:
        return ApiSpec(json.load(fh))


def load_spec(path: str | Path | None = None) -> ApiSpec:
    """Load (once per path) and compile the machine-readable Bot API spec."""
    return _load_spec_cached(str(path or find_spec_path()))


# ---------------------------------------------------------------------------------------------
# Formatted text: HTML, MarkdownV2 and legacy Markdown as the real server parses them
# ---------------------------------------------------------------------------------------------


class _ParseError(Exception):
    pass


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode())


_HTML_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
    "tg-time": "date_time",
}
_HTML_SPECIAL_RE = re.compile(r"[<&]")
_HTML_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*")
_HTML_ATTR_RE = re.compile(r"""([a-zA-Z-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_HTML_ENTITY_RE = re.compile(r"&(lt|gt|amp|quot|#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6});")
_HTML_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _html_entity(token: str) -> str:
    if token in _HTML_NAMED:
        return _HTML_NAMED[token]
    code = int(token[2:], 16) if token[1] in "xX" else int(token[1:])
    return chr(code) if 0 < code < 0x110000 else ""


def _parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    out: list[str] = []
    u16 = 0
    stack: list[tuple[str, int, dict[str, str], int]] = []
    entities: list[dict[str, Any]] = []
    i, n = 0, len(text)
    while i < n:
        m = _HTML_SPECIAL_RE.search(text, i)
        k = m.start() if m else n
        if k > i:
            chunk = text[i:k]
            out.append(chunk)
            u16 += utf16_len(chunk)
            i = k
            if i >= n:
                break
        if text[i] == "&":
            em = _HTML_ENTITY_RE.match(text, i)
            # An unknown entity stays literal text, as in tdlib.
            chunk = _html_entity(em.group(1)) if em else "&"
            i = em.end() if em else i + 1
            out.append(chunk)
            u16 += utf16_len(chunk)
            continue
        # "<"
        if text.startswith("</", i):
            j = text.find(">", i)
            if j < 0:
                raise _ParseError(f"Unclosed end tag at byte offset {_byte_offset(text, i)}")
            name = text[i + 2 : j].strip().lower()
            if not stack:
                raise _ParseError(f"Unexpected end tag at byte offset {_byte_offset(text, i)}")
            tag, start, attrs, _ = stack.pop()
            if name != tag:
                raise _ParseError(
                    f"Unmatched end tag at byte offset {_byte_offset(text, i)}, "
                    f'expected "</{tag}>", found "</{name}>"'
                )
            _close_html_entity(tag, start, u16, attrs, stack, entities)
            i = j + 1
            continue
        nm = _HTML_NAME_RE.match(text, i + 1)
        name = nm.group(0).lower() if nm else ""
        if name not in _HTML_TAGS:
            raise _ParseError(
                f'Unsupported start tag "{name}" at byte offset {_byte_offset(text, i)}'
            )
        j = text.find(">", i)
        if j < 0:
            raise _ParseError(f"Unclosed start tag at byte offset {_byte_offset(text, i)}")
        attrs = {
            a.group(1).lower(): html.unescape(a.group(2) or a.group(3) or a.group(4) or "")
            for a in _HTML_ATTR_RE.finditer(text, nm.end() if nm else i + 1, j)
        }
        if name == "span" and attrs.get("class") != "tg-spoiler":
            raise _ParseError('Tag "span" must have class "tg-spoiler"')
        if name == "tg-emoji" and "emoji-id" not in attrs:
            raise _ParseError('Tag "tg-emoji" must have attribute "emoji-id"')
        stack.append((name, u16, attrs, _byte_offset(text, i)))
        i = j + 1
    if stack:
        raise _ParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return "".join(out), sorted(entities, key=lambda e: (e["offset"], -e["length"]))


def _close_html_entity(
    tag: str,
    start: int,
    end: int,
    attrs: dict[str, str],
    stack: list[tuple[str, int, dict[str, str], int]],
    entities: list[dict[str, Any]],
) -> None:
    length = end - start
    if length <= 0:
        return
    kind = _HTML_TAGS[tag]
    ent: dict[str, Any] = {"type": kind, "offset": start, "length": length}
    if kind == "text_link":
        url = attrs.get("href", "")
        if not url:
            return
        m = re.fullmatch(r"tg://user\?id=(\d+)", url)
        if m:
            ent = {"type": "text_mention", "offset": start, "length": length}
            ent["user"] = {"id": int(m.group(1)), "is_bot": False, "first_name": ""}
        else:
            ent["url"] = url
    elif kind == "code":
        lang = attrs.get("class", "")
        if stack and stack[-1][0] == "pre" and lang.startswith("language-"):
            # <pre><code class="language-x"> is one pre entity with a language.
            stack[-1][2]["language"] = lang[len("language-") :]
            return
    elif kind == "pre" and attrs.get("language"):
        ent["language"] = attrs["language"]
    elif kind == "blockquote" and "expandable" in attrs:
        ent["type"] = "expandable_blockquote"
    elif kind == "custom_emoji":
        ent["custom_emoji_id"] = attrs["emoji-id"]
    elif kind == "date_time" and attrs.get("unix", "").isdigit():
        ent["unix_time"] = int(attrs["unix"])
    entities.append(ent)


_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MDV2_SPECIAL_RE = re.compile(r"[_*\[\]()~`>#+\-=|{}.!\\\n]")
_MDV2_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "code": "Code",
    "pre": "Pre",
    "link": "TextUrl",
}


def _parse_markdown_v2(text: str) -> tuple[str, list[dict[str, Any]]]:
    out: list[str] = []
    u16 = 0
    stack: list[tuple[str, int, int, str]] = []  # kind, u16 start, source index, extra
    entities: list[dict[str, Any]] = []
    quote_start: int | None = None
    line_start = True
    i, n = 0, len(text)

    def emit(chunk: str) -> None:
        nonlocal u16
        out.append(chunk)
        u16 += utf16_len(chunk)

    def reserved(c: str) -> _ParseError:
        return _ParseError(
            f"Character '{c}' is reserved and must be escaped with the preceding '\\'"
        )

    while i < n:
        top = stack[-1][0] if stack else None
        c = text[i]
        if c == "\\" and i + 1 < n and 0 < ord(text[i + 1]) <= 126:
            emit(text[i + 1])
            i += 2
            line_start = False
            continue
        if top in ("code", "pre"):
            if top == "code" and c == "`":
                kind, start, _, extra = stack.pop()
                if u16 > start:
                    entities.append({"type": "code", "offset": start, "length": u16 - start})
                i += 1
                continue
            if top == "pre" and text.startswith("```", i):
                kind, start, _, extra = stack.pop()
                if u16 > start:
                    ent = {"type": "pre", "offset": start, "length": u16 - start}
                    if extra:
                        ent["language"] = extra
                    entities.append(ent)
                i += 3
                continue
            emit(c)
            i += 1
            continue
        if c == "\n":
            emit(c)
            i += 1
            line_start = True
            if quote_start is not None and not text.startswith(">", i):
                entities.append(
                    {"type": "blockquote", "offset": quote_start, "length": u16 - 1 - quote_start}
                )
                quote_start = None
            continue
        if c not in _MDV2_RESERVED:
            m = _MDV2_SPECIAL_RE.search(text, i)
            k = m.start() if m else n
            emit(text[i:k])
            i = k
            line_start = False
            continue
        if c == ">" and line_start:
            if quote_start is None:
                quote_start = u16
            i += 1
            line_start = False
            continue
        line_start = False
        if c in "_*~|":
            if c == "_" and text.startswith("__", i):
                kind, width = "underline", 2
            elif c == "_":
                kind, width = "italic", 1
            elif c == "*":
                kind, width = "bold", 1
            elif c == "~":
                kind, width = "strikethrough", 1
            elif text.startswith("||", i):
                kind, width = "spoiler", 2
            else:
                raise reserved(c)
            if top == kind:
                _, start, _, _ = stack.pop()
                if u16 > start:
                    entities.append({"type": kind, "offset": start, "length": u16 - start})
            elif any(s[0] == kind for s in stack):
                raise _ParseError(
                    f"Can't find end of {_MDV2_NAMES[top or kind]} entity at byte offset "
                    f"{_byte_offset(text, stack[-1][2])}"
                )
            else:
                stack.append((kind, u16, i, ""))
            i += width
            continue
        if c == "`":
            if text.startswith("```", i):
                nl = text.find("\n", i + 3)
                lang = text[i + 3 : nl].strip() if nl >= 0 else ""
                stack.append(("pre", u16, i, lang))
                i = nl + 1 if nl >= 0 else i + 3
            else:
                stack.append(("code", u16, i, ""))
                i += 1
            continue
        if c == "!" and text.startswith("![", i):
            stack.append(("link", u16, i, "emoji"))
            i += 2
            continue
        if c == "[":
            stack.append(("link", u16, i, ""))
            i += 1
            continue
        if c == "]" and top == "link":
            _, start, _, extra = stack.pop()
            i += 1
            url = ""
            if text.startswith("(", i):
                j = i + 1
                buf: list[str] = []
                while j < n and text[j] != ")":
                    if text[j] == "\\" and j + 1 < n:
                        j += 1
                    buf.append(text[j])
                    j += 1
                if j >= n:
                    raise _ParseError("Can't find end of a URL at byte offset " + str(i))
                url = "".join(buf)
                i = j + 1
            if url and u16 > start:
                ent: dict[str, Any] = {"type": "text_link", "offset": start, "length": u16 - start}
                m = re.fullmatch(r"tg://user\?id=(\d+)", url)
                em = re.fullmatch(r"tg://emoji\?id=(\d+)", url)
                if extra == "emoji" and em:
                    ent = {"type": "custom_emoji", "offset": start, "length": u16 - start}
                    ent["custom_emoji_id"] = em.group(1)
                elif m:
                    ent = {"type": "text_mention", "offset": start, "length": u16 - start}
                    ent["user"] = {"id": int(m.group(1)), "is_bot": False, "first_name": ""}
                else:
                    ent["url"] = url
                entities.append(ent)
            continue
        raise reserved(c)
    if stack:
        kind, _, idx, _ = stack[-1]
        raise _ParseError(
            f"Can't find end of {_MDV2_NAMES[kind]} entity at byte offset {_byte_offset(text, idx)}"
        )
    if quote_start is not None and u16 > quote_start:
        entities.append({"type": "blockquote", "offset": quote_start, "length": u16 - quote_start})
    return "".join(out), sorted(entities, key=lambda e: (e["offset"], -e["length"]))


_MD_SPECIAL_RE = re.compile(r"[\\*_`\[]")


def _parse_markdown(text: str) -> tuple[str, list[dict[str, Any]]]:
    out: list[str] = []
    u16 = 0
    entities: list[dict[str, Any]] = []
    i, n = 0, len(text)
    marks = {"*": "bold", "_": "italic"}
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.append(text[i + 1])
            u16 += 1
            i += 2
            continue
        if c in marks or c == "`" or c == "[":
            start_idx = i
            if c == "`" and text.startswith("```", i):
                end = text.find("```", i + 3)
                kind, body_from, width = "pre", i + 3, 3
            elif c == "[":
                end = text.find("]", i + 1)
                kind, body_from, width = "text_link", i + 1, 1
            else:
                end = text.find(c, i + 1)
                kind, body_from, width = marks.get(c, "code"), i + 1, 1
            if end < 0:
                raise _ParseError(
                    "Can't find end of the entity starting at byte offset "
                    f"{_byte_offset(text, start_idx)}"
                )
            body = text[body_from:end]
            i = end + width
            ent: dict[str, Any] = {"type": kind, "offset": u16, "length": utf16_len(body)}
            if kind == "text_link":
                if text.startswith("(", i):
                    close = text.find(")", i)
                    if close < 0:
                        raise _ParseError(
                            "Can't find end of the entity starting at byte offset "
                            f"{_byte_offset(text, start_idx)}"
                        )
                    ent["url"] = text[i + 1 : close]
                    i = close + 1
                else:
                    ent = {}
            if kind == "pre" and "\n" in body:
                first, rest = body.split("\n", 1)
                if first and " " not in first:
                    ent["language"] = first
                    body = rest
                    ent["length"] = utf16_len(body)
            out.append(body)
            u16 += utf16_len(body)
            if ent and ent["length"] > 0:
                entities.append(ent)
            continue
        m = _MD_SPECIAL_RE.search(text, i)
        k = m.start() if m else n
        if k == i:
            k = i + 1
        chunk = text[i:k]
        out.append(chunk)
        u16 += utf16_len(chunk)
        i = k
    return "".join(out), entities


def parse_formatted_text(text: str, parse_mode: str | None) -> tuple[str, list[dict[str, Any]]]:
    """Return (plain text, entities) as the server would; raise ValueError on bad markup."""
    mode = (parse_mode or "").lower()
    try:
        if mode == "html":
            return _parse_html(text)
        if mode == "markdownv2":
            return _parse_markdown_v2(text)
        if mode == "markdown":
            return _parse_markdown(text)
    except _ParseError as exc:
        raise ValueError(str(exc)) from None
    return text, []


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer of the Bot API: status, description and optional parameters."""

    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


@dataclass(slots=True)
class FakeUser:
    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    is_bot: bool = False
    blocked_bot: bool = False
    deactivated: bool = False
    started: bool = True

    def api(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.last_name:
            d["last_name"] = self.last_name
        if self.username:
            d["username"] = self.username
        if self.language_code:
            d["language_code"] = self.language_code
        return d

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "username": self.username,
            "language_code": self.language_code,
            "blocked_bot": self.blocked_bot,
            "deactivated": self.deactivated,
            "started": self.started,
        }


@dataclass(slots=True)
class FakeChat:
    id: int
    type: str  # private | group | supergroup | channel
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    members: set[int] = field(default_factory=set)
    migrated_to: int | None = None
    bot_removed: bool = False
    next_message_id: int = 1
    _api: dict[str, Any] | None = None

    def api(self) -> dict[str, Any]:
        if self._api is None:
            d: dict[str, Any] = {"id": self.id, "type": self.type}
            for key in ("title", "username", "first_name", "last_name"):
                value = getattr(self, key)
                if value:
                    d[key] = value
            self._api = d
        return self._api

    def to_dict(self) -> dict[str, Any]:
        return {**self.api(), "members": sorted(self.members), "migrated_to": self.migrated_to}


@dataclass(slots=True)
class FakeFile:
    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    file_name: str | None = None
    mime_type: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(eq=False, slots=True)
class FakeMessage:
    """A message in a fake chat, sent by the bot or by a simulated user.

    `text` is what the recipient sees (markup parsed away); `raw_text` is what the bot sent.
    For media, `caption`/`raw_caption` play the same roles. `versions` holds every state the
    message has had (oldest first), so edits stay inspectable.
    """

    chat_id: int
    message_id: int
    date: int
    from_bot: bool
    sender_id: int
    kind: str  # text | photo | document | <method name> for other sends
    text: str | None = None
    raw_text: str | None = None
    caption: str | None = None
    raw_caption: str | None = None
    parse_mode: str | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    reply_markup: dict[str, Any] | None = None
    file_id: str | None = None
    reply_to_message_id: int | None = None
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    versions: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False
    edit_date: int | None = None
    update_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def content(self) -> str | None:
        """The visible text: the message text, or the media caption."""
        return self.text if self.text is not None else self.caption

    @property
    def edited(self) -> bool:
        return len(self.versions) > 1

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Inline keyboard buttons, flattened row by row."""
        if not self.reply_markup or "inline_keyboard" not in self.reply_markup:
            return []
        return [b for row in self.reply_markup["inline_keyboard"] for b in row]

    def button_data(self, label: str) -> str:
        """callback_data of the inline button whose text is (or contains) `label`."""
        for b in self.buttons:
            if b.get("text") == label:
                return b["callback_data"]
        for b in self.buttons:
            if label in b.get("text", "") and "callback_data" in b:
                return b["callback_data"]
        raise KeyError(f"no inline button {label!r} on message {self.message_id}")

    def snapshot(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "raw_text": self.raw_text,
            "caption": self.caption,
            "parse_mode": self.parse_mode,
            "entities": self.entities,
            "reply_markup": self.reply_markup,
            "date": self.edit_date or self.date,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "chat_id": self.chat_id,
            "message_id": self.message_id,
            "date": self.date,
            "from_bot": self.from_bot,
            "sender_id": self.sender_id,
            "kind": self.kind,
            "text": self.text,
            "raw_text": self.raw_text,
            "caption": self.caption,
            "raw_caption": self.raw_caption,
            "parse_mode": self.parse_mode,
            "entities": self.entities,
            "reply_markup": self.reply_markup,
            "file_id": self.file_id,
            "reply_to_message_id": self.reply_to_message_id,
            "method": self.method,
            "versions": self.versions,
            "deleted": self.deleted,
            "edit_date": self.edit_date,
            "update_id": self.update_id,
        }


@dataclass(slots=True)
class Call:
    """One Bot API request as the fake saw it."""

    method: str
    params: dict[str, Any]
    at: float
    status: int = 0
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "params": {k: _jsonable(v) for k, v in self.params.items()},
            "at": self.at,
            "status": self.status,
            "description": self.description,
        }


@dataclass
class FakeStats:
    calls: Counter[str] = field(default_factory=Counter)  # per canonical method name
    statuses: Counter[int] = field(default_factory=Counter)
    flood_429: int = 0  # 429s answered by the flood limiter
    early_retries: int = 0  # requests to a chat still inside the retry_after it was given
    injected: int = 0  # answers produced by fault injection
    conflicts: int = 0  # 409s on getUpdates
    downloads: int = 0  # files served from /file/bot<token>/...
    unimplemented: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "flood_429": self.flood_429,
            "early_retries": self.early_retries,
            "injected": self.injected,
            "conflicts": self.conflicts,
            "downloads": self.downloads,
            "unimplemented": dict(self.unimplemented),
        }


@dataclass
class FloodLimits:
    """Telegram's flood limits (Bots FAQ). Token buckets: `*_burst` sends at once, then the rate."""

    global_per_second: float = 30.0
    global_burst: int = 30
    private_per_second: float = 1.0
    private_burst: int = 3
    group_per_minute: float = 20.0
    group_burst: int = 20
    paid_per_second: float = 1000.0
    paid_burst: int = 1000
    min_retry_after: int = 1
    methods: frozenset[str] = SEND_METHODS

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["methods"] = sorted(self.methods)
        return d


@dataclass
class Fault:
    """The next `count` calls of `method` ("*" = any) answer `status` (None = just `delay`)."""

    method: str
    status: int | None = 500
    count: int | None = 1  # None = until cleared
    retry_after: int | None = None
    migrate_to_chat_id: int | None = None
    description: str | None = None
    delay: float = 0.0
    drop: bool = False  # close the connection without an answer
    chat_id: int | str | None = None

    def matches(self, method: str, params: dict[str, Any]) -> bool:
        if self.method != "*" and self.method.lower() != method.lower():
            return False
        return self.chat_id is None or params.get("chat_id") == self.chat_id


class _Bucket:
    __slots__ = ("blocked_until", "burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate = rate
        self.burst = float(max(1, burst))
        self.tokens = self.burst
        self.stamp = now
        self.blocked_until = 0.0

    def wait(self, now: float) -> float:
        """Seconds until one token is available (0 if available now)."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1.0


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Upload):
        return {"upload": obj.filename, "size": len(obj.data), "content_type": obj.content_type}
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    return obj


_COMMAND_ENTITY_RE = re.compile(r"(?<![\w/@])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/])")
_MENTION_RE = re.compile(r"(?<![\w@])@[A-Za-z][A-Za-z0-9_]{3,31}(?!\w)")
_URL_RE = re.compile(r"\bhttps?://[^\s<>\"]+")


def _detect_entities(text: str) -> list[dict[str, Any]]:
    """Entities the real server adds to incoming text: bot commands, mentions and URLs."""
    found: list[dict[str, Any]] = []
    for kind, rx in (
        ("bot_command", _COMMAND_ENTITY_RE),
        ("mention", _MENTION_RE),
        ("url", _URL_RE),
    ):
        for m in rx.finditer(text):
            found.append(
                {
                    "type": kind,
                    "offset": utf16_len(text[: m.start()]),
                    "length": utf16_len(m.group(0)),
                }
            )
    found.sort(key=lambda e: e["offset"])
    return found


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------

_UNAUTHORIZED = _dumps({"ok": False, "error_code": 401, "description": "Unauthorized"})
_BAD_TOKEN = _dumps(
    {"ok": False, "error_code": 401, "description": "Unauthorized: invalid token specified"}
)
_NOT_FOUND = _dumps({"ok": False, "error_code": 404, "description": "Not Found"})
_HTML_5XX = {
    code: (
        f"<html>\r\n<head><title>{code} {phrase}</title></head>\r\n<body>\r\n"
        f"<center><h1>{code} {phrase}</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
    for code, phrase in ((502, "Bad Gateway"), (504, "Gateway Time-out"))
}
_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_JSON_CT = "application/json"


class FakeTelegram:
    """A Bot API server for one bot token, with simulated users, chats, limits and faults.

    Run it in the caller's loop (`async with FakeTelegram() as fake`), in a thread
    (`with FakeTelegram.in_thread() as fake`) or as a process
    (`python -m tests.fakes.telegram_api`). All state methods must be called from the server's
    loop; the threaded wrapper does that.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        port: int = 0,
        bot_username: str = "vigil_test_bot",
        bot_first_name: str = "Vigil",
        flood: FloodLimits | bool | None = None,
        reject_violations: bool = True,
        privacy_mode: bool = True,
        check_buttons: bool = True,
        callback_query_ttl: float | None = 15.0,
        close_cooldown: float = 600.0,
        first_update_id: int = 1000,
        record_calls: bool = True,
        webhook_retry_delay: float = 1.0,
        spec: ApiSpec | str | Path | None = None,
    ):
        if not _TOKEN_RE.fullmatch(token):
            raise ValueError(f"malformed bot token {token!r}")
        self.token = token
        self.port = port
        self.spec = spec if isinstance(spec, ApiSpec) else load_spec(spec)
        self.bot_id = int(token.split(":", 1)[0])
        self.bot_username = bot_username
        self.bot_user: dict[str, Any] = {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": not privacy_mode,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
        self.flood: FloodLimits | None = FloodLimits() if flood is True else (flood or None)
        self.reject_violations = reject_violations
        self.privacy_mode = privacy_mode
        self.check_buttons = check_buttons
        self.callback_query_ttl = callback_query_ttl
        self.close_cooldown = close_cooldown
        self.record_calls = record_calls
        self.webhook_retry_delay = webhook_retry_delay

        self.violations: list[str] = []
        self.calls: list[Call] = []
        self.left_chats: list[int] = []  # chats the bot left with leaveChat, in order
        self.stats = FakeStats()
        self.faults: list[Fault] = []

        self._users: dict[int, FakeUser] = {}
        self._chats: dict[int, FakeChat] = {}
        self._chats_by_username: dict[str, FakeChat] = {}
        self._messages: dict[int, dict[int, FakeMessage]] = {}
        self._sent: list[FakeMessage] = []
        self._files: dict[str, FakeFile] = {}
        self._files_by_path: dict[str, FakeFile] = {}
        self._file_seq = itertools.count(1)
        self._callback_queries: dict[str, dict[str, Any]] = {}
        self._callback_seq = itertools.count(1)
        self._chat_actions: dict[int, list[str]] = {}
        self._commands: dict[tuple[str, str], list[dict[str, Any]]] = {}

        self._updates: deque[dict[str, Any]] = deque()
        self._next_update_id = first_update_id
        self._allowed_updates: frozenset[str] | None = None
        self._poll: asyncio.Future[str] | None = None
        self._webhook: dict[str, Any] | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._webhook_wakeup: asyncio.Event | None = None
        self._logged_out = False
        self._started_at = time.monotonic()

        self._buckets: dict[Any, _Bucket] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None

        self._handlers: dict[str, Callable[[dict[str, Any], dict[str, Upload]], Any]] = {}
        for spec_method in self.spec.methods.values():
            impl = getattr(self, f"_m_{spec_method.name}", None)
            if impl is not None:
                self._handlers[spec_method.name] = impl

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def in_thread(cls, **kwargs: Any) -> ThreadedFakeTelegram:
        """A context manager running the fake in its own thread and loop (for sync code)."""
        return ThreadedFakeTelegram(**kwargs)

    async def start(self) -> FakeTelegram:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._webhook_wakeup = asyncio.Event()
        app = web.Application(client_max_size=MAX_UPLOAD + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_route("*", "/bot{token}/", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        app.router.add_route("*", "/_control/{name}", self._handle_control)
        app.router.add_route("*", "/{tail:.*}", self._handle_other)
        # Cancelling handlers on disconnect lets a long poll abandoned by PTB end at once.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._started_at = time.monotonic()
        return self

    async def stop(self) -> None:
        if self._poll is not None and not self._poll.done():
            self._poll.set_result("closed")
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._webhook_task
            self._webhook_task = None
        for w in self._waiters:
            if not w.done():
                w.set_result(None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._stopped is not None:
            self._stopped.set()

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Wait until stop() or POST /_control/shutdown."""
        assert self._stopped is not None
        await self._stopped.wait()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """PTB `base_url` form: PTB appends the token."""
        return f"{self.url}/bot"

    @property
    def file_base_url(self) -> str:
        return f"{self.url}/file/bot"

    @property
    def control_url(self) -> str:
        return f"{self.url}/_control"

    @property
    def api_url(self) -> str:
        """Full prefix for raw requests: `{api_url}/sendMessage`."""
        return f"{self.base_url}{self.token}"

    # -- simulated users and chats ---------------------------------------------------------------

    def register_user(
        self,
        user_id: int,
        first_name: str = "User",
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        started: bool = True,
    ) -> FakeUser:
        """Create a user and their private chat. `started=False`: never wrote to the bot."""
        user = FakeUser(user_id, first_name, last_name, username, language_code, started=started)
        self._users[user_id] = user
        # Re-registering keeps the chat history but refreshes the names shown in updates.
        self._chats[user_id] = FakeChat(
            user_id,
            "private",
            username=username,
            first_name=first_name,
            last_name=last_name,
            next_message_id=self._chats[user_id].next_message_id if user_id in self._chats else 1,
        )
        self._messages.setdefault(user_id, {})
        return user

    def add_group(
        self,
        chat_id: int,
        title: str = "Group",
        *,
        type: str = "group",
        username: str | None = None,
        members: Iterable[int] = (),
    ) -> FakeChat:
        """Create a group, supergroup or channel (negative id) the bot is a member of."""
        if chat_id >= 0:
            raise ValueError("group and channel ids are negative")
        if type not in ("group", "supergroup", "channel"):
            raise ValueError(f"bad chat type {type!r}")
        chat = FakeChat(chat_id, type, title=title, username=username, members=set(members))
        self._chats[chat_id] = chat
        self._messages.setdefault(chat_id, {})
        if username:
            self._chats_by_username[username.lower()] = chat
        return chat

    def add_member(self, chat_id: int, user_id: int) -> None:
        self._chat(chat_id).members.add(user_id)

    def migrate_group(self, chat_id: int, new_chat_id: int) -> FakeChat:
        """Upgrade a group to a supergroup: sends to the old id answer migrate_to_chat_id."""
        old = self._chat(chat_id)
        new = self.add_group(new_chat_id, old.title or "Group", type="supergroup")
        new.members = set(old.members)
        old.migrated_to = new_chat_id
        return new

    def remove_bot_from_group(self, chat_id: int) -> None:
        self._chat(chat_id).bot_removed = True

    def bot_added_to(self, chat_id: int, by_user: int, status: str = "member") -> int:
        """`by_user` adds the bot to group, supergroup or channel `chat_id` (status "member"
        or "administrator"); queues the my_chat_member update Telegram sends. Returns its id."""
        chat = self._chat(chat_id)
        if chat.type == "private":
            raise ValueError("a bot is not added to a private chat")
        if status not in ("member", "administrator"):
            raise ValueError(f"bad status {status!r}")
        user = self._user(by_user)
        chat.bot_removed = False
        chat.members.add(by_user)
        new_member: dict[str, Any] = {"status": status, "user": self.bot_user_short}
        if status == "administrator":
            new_member.update(
                can_be_edited=False, is_anonymous=False, can_manage_chat=True,
                can_delete_messages=False, can_manage_video_chats=False,
                can_restrict_members=False, can_promote_members=False, can_change_info=False,
                can_invite_users=True, can_post_stories=False, can_edit_stories=False,
                can_delete_stories=False,
            )  # fmt: skip
            if chat.type == "channel":
                new_member.update(can_post_messages=True, can_edit_messages=False)
        return self._enqueue(
            {
                "my_chat_member": {
                    "chat": chat.api(),
                    "from": user.api(),
                    "date": _now(),
                    "old_chat_member": {"status": "left", "user": self.bot_user_short},
                    "new_chat_member": new_member,
                }
            }
        )

    def user_blocks_bot(self, user_id: int, *, notify: bool = True) -> None:
        """Sends to this user now answer 403; queues the my_chat_member update Telegram sends."""
        user = self._user(user_id)
        user.blocked_bot = True
        if notify:
            self._member_update(user, "member", "kicked")

    def user_unblocks_bot(self, user_id: int, *, notify: bool = True) -> None:
        user = self._user(user_id)
        user.blocked_bot = False
        if notify:
            self._member_update(user, "kicked", "member")

    def deactivate_user(self, user_id: int) -> None:
        self._user(user_id).deactivated = True

    def user_sends(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        reply_to_message_id: int | None = None,
    ) -> FakeMessage:
        """A user writes `text` (to the bot, or in group `chat_id`); queues a message update."""
        user, chat = self._user_and_chat(user_id, chat_id)
        msg = self._user_message(user, chat, "text", reply_to_message_id)
        msg.text = msg.raw_text = text
        msg.entities = _detect_entities(text)
        self._deliver_user_message(msg, user, chat)
        return msg

    def user_edits(
        self, user_id: int, message_id: int, text: str, *, chat_id: int | None = None
    ) -> FakeMessage:
        _user, chat = self._user_and_chat(user_id, chat_id)
        msg = self._messages[chat.id].get(message_id)
        if msg is None or msg.from_bot or msg.sender_id != user_id:
            raise ValueError(f"user {user_id} has no message {message_id} in chat {chat.id}")
        msg.text = msg.raw_text = text
        msg.entities = _detect_entities(text)
        msg.edit_date = _now()
        msg.versions.append(msg.snapshot())
        self._enqueue({"edited_message": self._message_api(msg)})
        return msg

    def user_sends_photo(
        self,
        user_id: int,
        data: bytes,
        caption: str | None = None,
        *,
        chat_id: int | None = None,
        width: int = 1280,
        height: int = 960,
    ) -> FakeMessage:
        """A user sends a photo; its file_id works with getFile and the file download URL."""
        user, chat = self._user_and_chat(user_id, chat_id)
        f = self._store_file(data, "photos", ".jpg", None, "image/jpeg")
        msg = self._user_message(user, chat, "photo", None)
        msg.file_id = f.file_id
        msg.extra["photo"] = self._photo_sizes(f, width, height)
        if caption:
            msg.caption = msg.raw_caption = caption
            msg.extra["caption_entities"] = _detect_entities(caption)
        self._deliver_user_message(msg, user, chat)
        return msg

    def user_sends_document(
        self,
        user_id: int,
        data: bytes,
        file_name: str = "file.bin",
        mime_type: str = "application/octet-stream",
        caption: str | None = None,
        *,
        chat_id: int | None = None,
    ) -> FakeMessage:
        user, chat = self._user_and_chat(user_id, chat_id)
        f = self._store_file(data, "documents", Path(file_name).suffix, file_name, mime_type)
        msg = self._user_message(user, chat, "document", None)
        msg.file_id = f.file_id
        msg.extra["document"] = self._document_api(f)
        if caption:
            msg.caption = msg.raw_caption = caption
        self._deliver_user_message(msg, user, chat)
        return msg

    def user_presses(
        self,
        user_id: int,
        message_id: int,
        callback_data: str,
        *,
        chat_id: int | None = None,
    ) -> str:
        """A user taps an inline button of a bot message; returns the callback_query id."""
        user, chat = self._user_and_chat(user_id, chat_id)
        msg = self._messages[chat.id].get(message_id)
        if msg is None or not msg.from_bot or msg.deleted:
            raise ValueError(f"no live bot message {message_id} in chat {chat.id}")
        if self.check_buttons and not any(
            b.get("callback_data") == callback_data for b in msg.buttons
        ):
            raise ValueError(
                f"message {message_id} has no button with callback_data {callback_data!r}; "
                f"buttons: {msg.buttons}"
            )
        qid = f"{self.bot_id % 100000}{next(self._callback_seq):012d}"
        self._callback_queries[qid] = {
            "user_id": user_id,
            "at": time.monotonic(),
            "answered": False,
            "answer": None,
        }
        query = {
            "id": qid,
            "from": self._user_api(user),
            "message": self._message_api(msg),
            "chat_instance": str(abs(hash((self.bot_id, chat.id))) % 10**18),
            "data": callback_data,
        }
        self._enqueue({"callback_query": query})
        return qid

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue a raw update (anything the helpers do not model); returns its update_id."""
        update = dict(update)
        update.pop("update_id", None)
        return self._enqueue(update)

    # -- inspection ------------------------------------------------------------------------------

    def sent(self, chat_id: int | None = None) -> list[FakeMessage]:
        """Messages the bot sent (to `chat_id`, or everywhere), oldest first, deleted included."""
        if chat_id is None:
            return list(self._sent)
        return [m for m in self._messages.get(chat_id, {}).values() if m.from_bot]

    def last_sent(self, chat_id: int | None = None) -> FakeMessage:
        msgs = self.sent(chat_id)
        if not msgs:
            raise LookupError(f"the bot sent nothing to {chat_id}")
        return msgs[-1]

    def messages(self, chat_id: int) -> list[FakeMessage]:
        """The whole chat history, both directions."""
        return list(self._messages.get(chat_id, {}).values())

    def get_message(self, chat_id: int, message_id: int) -> FakeMessage:
        return self._messages[chat_id][message_id]

    def user(self, user_id: int) -> FakeUser:
        return self._user(user_id)

    def chat(self, chat_id: int) -> FakeChat:
        return self._chat(chat_id)

    def callback_answer(self, callback_query_id: str) -> dict[str, Any] | None:
        """How the bot answered a callback query (text, show_alert, url, cache_time), or None."""
        q = self._callback_queries.get(callback_query_id)
        return q["answer"] if q else None

    def commands(
        self, scope: dict[str, Any] | None = None, language_code: str = ""
    ) -> list[dict[str, Any]]:
        return list(self._commands.get((_scope_key(scope), language_code), []))

    def chat_actions(self, chat_id: int) -> list[str]:
        return list(self._chat_actions.get(chat_id, []))

    def file_bytes(self, file_id: str) -> bytes:
        return self._files[file_id].data

    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates queued and not yet confirmed by an offset."""
        return list(self._updates)

    def webhook_info(self) -> dict[str, Any]:
        return self._webhook_info()

    @property
    def polling(self) -> bool:
        """True while a getUpdates long poll is being held."""
        return self._poll is not None and not self._poll.done()

    def calls_to(self, method: str) -> list[Call]:
        low = method.lower()
        return [c for c in self.calls if c.method.lower() == low]

    def assert_no_violations(self) -> None:
        if self.violations:
            listing = "\n  ".join(self.violations)
            raise AssertionError(
                f"{len(self.violations)} Bot API contract violation(s):\n  {listing}"
            )

    def clear_violations(self) -> list[str]:
        taken, self.violations = self.violations, []
        return taken

    def reset_records(self) -> None:
        """Forget calls, stats and violations (users, chats and messages stay)."""
        self.calls.clear()
        self.violations.clear()
        self.stats = FakeStats()

    # -- configuration ---------------------------------------------------------------------------

    def set_flood_limits(self, enabled: bool = True, **limits: Any) -> FloodLimits | None:
        """Switch flood control on (with FloodLimits overrides) or off."""
        if not enabled:
            self.flood = None
        else:
            if "methods" in limits:
                limits["methods"] = frozenset(limits["methods"])
            self.flood = FloodLimits(**limits)
        self._buckets.clear()
        return self.flood

    def inject_fault(
        self,
        method: str,
        status: int | None = 500,
        *,
        count: int | None = 1,
        retry_after: int | None = None,
        migrate_to_chat_id: int | None = None,
        description: str | None = None,
        delay: float = 0.0,
        drop: bool = False,
        chat_id: int | str | None = None,
    ) -> Fault:
        """Make the next `count` calls of `method` fail with `status`, after `delay` seconds."""
        if status == 429 and retry_after is None:
            retry_after = 1
        fault = Fault(
            method,
            status,
            count,
            retry_after,
            migrate_to_chat_id,
            description,
            delay,
            drop,
            chat_id,
        )
        self.faults.append(fault)
        return fault

    def inject_delay(self, method: str, seconds: float, *, count: int | None = 1) -> Fault:
        return self.inject_fault(method, None, count=count, delay=seconds)

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- waiting ---------------------------------------------------------------------------------

    async def wait_for(
        self,
        what: int | str | Callable[[FakeTelegram], Any],
        timeout: float = 5.0,
        *,
        chat_id: int | None = None,
    ) -> Any:
        """Wait until a condition holds, re-checked after every request and simulated event.

        `what`: a predicate on the fake (returns its truthy value); an int N (the bot has sent
        >= N messages, to `chat_id` if given; returns them); "polling" (a long poll is held);
        "updates_confirmed" (every queued update was confirmed by an offset).
        """
        check = self._condition(what, chat_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = check()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"wait_for({what!r}) timed out after {timeout}s; {self._summary()}"
                )
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                pass
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)

    async def next_sent(
        self, chat_id: int, timeout: float = 5.0, *, after: int | None = None
    ) -> FakeMessage:
        """The first bot message in `chat_id` newer than message `after` (default: newest now)."""
        chat_msgs = self._messages.setdefault(chat_id, {})
        floor = after if after is not None else max(chat_msgs, default=0)

        def newer() -> FakeMessage | None:
            for mid, m in chat_msgs.items():
                if mid > floor and m.from_bot:
                    return m
            return None

        return await self.wait_for(lambda _f: newer(), timeout)

    def _condition(self, what: Any, chat_id: int | None) -> Callable[[], Any]:
        if callable(what):
            return lambda: what(self)
        if isinstance(what, int):

            def enough() -> list[FakeMessage] | None:
                msgs = self.sent(chat_id)
                return msgs if len(msgs) >= what else None

            return enough
        if what == "polling":
            return lambda: self.polling
        if what == "updates_confirmed":
            return lambda: not self._updates
        raise ValueError(f"unknown wait condition {what!r}")

    def _summary(self) -> str:
        sent = [(m.chat_id, m.content) for m in self._sent[-5:]]
        return (
            f"sent={len(self._sent)} last={sent} pending_updates={len(self._updates)} "
            f"calls={dict(self.stats.calls)} violations={self.violations[-3:]}"
        )

    def _notify(self) -> None:
        if self._waiters:
            for w in self._waiters:
                if not w.done():
                    w.set_result(None)
            self._waiters.clear()

    # -- HTTP entry points -----------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        if token != self.token or self._logged_out:
            return _raw(401, _BAD_TOKEN if not _TOKEN_RE.fullmatch(token) else _UNAUTHORIZED)
        name = request.match_info.get("method", "")
        spec = self.spec.method(name)
        if spec is None:
            self._violation(name or "<empty>", "unknown method (not in the Bot API spec)")
            self._notify()
            return _raw(404, _NOT_FOUND)
        try:
            params, files = await self._read_params(request)
        except ApiError as exc:
            return self._error(exc)
        method = spec.name
        self.stats.calls[method] += 1
        call = Call(method, params, time.time())
        if self.record_calls:
            self.calls.append(call)
        try:
            response = await self._dispatch(request, spec, params, files)
        except asyncio.CancelledError:
            # The client went away (e.g. PTB cancelling its long poll on shutdown).
            call.status = 499
            raise
        call.status = response.status
        self.stats.statuses[response.status] += 1
        self._notify()
        return response

    async def _dispatch(
        self,
        request: web.Request,
        spec: MethodSpec,
        params: dict[str, Any],
        files: dict[str, Upload],
    ) -> web.StreamResponse:
        method = spec.name
        problems = self.spec.check(spec, params, files)
        if problems:
            for p in problems:
                self._violation(method, p.message)
            hard = [p for p in problems if not p.lenient]
            if hard or self.reject_violations:
                return self._error(ApiError(400, (hard or problems)[0].description))
        if self.faults:
            fault = self._take_fault(method, params)
            if fault is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.drop:
                    self.stats.injected += 1
                    if request.transport is not None:
                        request.transport.abort()
                    return web.Response(status=499)
                if fault.status is not None:
                    self.stats.injected += 1
                    return self._fault_response(fault)
        handler = self._handlers.get(method)
        try:
            if handler is None:
                result = self._m_generic(spec, params, files)
            else:
                result = handler(params, files)
                if isinstance(result, Awaitable):
                    result = await result
        except ApiError as exc:
            return self._error(exc)
        if isinstance(result, _WithDescription):
            body = {"ok": True, "result": result.result, "description": result.description}
        else:
            body = {"ok": True, "result": result}
        return web.Response(body=_dumps(body), content_type=_JSON_CT)

    async def _read_params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, Upload]]:
        params: dict[str, Any] = dict(request.query) if request.query_string else {}
        files: dict[str, Upload] = {}
        if not request.body_exists:
            return params, files
        ctype = request.content_type
        if ctype == _JSON_CT:
            try:
                body = await request.json()
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse JSON request body") from None
            if not isinstance(body, dict):
                raise ApiError(400, "Bad Request: JSON request body must be an object")
            params.update((k, v) for k, v in body.items() if v is not None)
        elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    up = Upload(value.file.read(), value.filename, value.content_type)
                    files[key] = up
                    params[key] = up
                else:
                    params[key] = value
        return params, files

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        # PTB quotes the whole path, so the token's ":" arrives as %3A; aiohttp decodes it.
        if request.match_info["token"] != self.token:
            return _raw(401, _UNAUTHORIZED)
        f = self._files_by_path.get(request.match_info["path"])
        if f is None:
            return _raw(404, _NOT_FOUND)
        self.stats.downloads += 1
        return web.Response(body=f.data, content_type=f.mime_type or "application/octet-stream")

    async def _handle_other(self, request: web.Request) -> web.StreamResponse:
        return _raw(404, _NOT_FOUND)

    # -- errors, faults and flood control --------------------------------------------------------

    def _violation(self, method: str, message: str) -> None:
        self.violations.append(f"{method}: {message}")

    def _error(self, exc: ApiError) -> web.Response:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": exc.status,
            "description": exc.description,
        }
        headers = None
        if exc.parameters:
            body["parameters"] = exc.parameters
            if "retry_after" in exc.parameters:
                headers = {"Retry-After": str(exc.parameters["retry_after"])}
        return web.Response(
            status=exc.status, body=_dumps(body), content_type=_JSON_CT, headers=headers
        )

    def _take_fault(self, method: str, params: dict[str, Any]) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, params):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def _fault_response(self, fault: Fault) -> web.Response:
        status = fault.status or 500
        if fault.description is None and status in _HTML_5XX:
            # Telegram's front nginx answers gateway errors with an HTML page, not JSON.
            return web.Response(status=status, body=_HTML_5XX[status], content_type="text/html")
        params: dict[str, Any] = {}
        if fault.retry_after is not None:
            params["retry_after"] = fault.retry_after
        if fault.migrate_to_chat_id is not None:
            params["migrate_to_chat_id"] = fault.migrate_to_chat_id
        desc = fault.description
        if desc is None:
            if status == 429:
                desc = f"Too Many Requests: retry after {fault.retry_after}"
            elif fault.migrate_to_chat_id is not None:
                desc = "Bad Request: group chat was upgraded to a supergroup chat"
            else:
                desc = _DEFAULT_DESCRIPTIONS.get(status, "Error")
        return self._error(ApiError(status, desc, params or None))

    def _flood_check(self, method: str, chat: FakeChat, paid: bool) -> None:
        limits = self.flood
        if limits is None or method not in limits.methods:
            return
        now = time.monotonic()
        if chat.type == "private":
            chat_bucket = self._bucket(
                ("chat", chat.id), limits.private_per_second, limits.private_burst, now
            )
        else:
            chat_bucket = self._bucket(
                ("chat", chat.id), limits.group_per_minute / 60.0, limits.group_burst, now
            )
        if paid:
            all_bucket = self._bucket("paid", limits.paid_per_second, limits.paid_burst, now)
        else:
            all_bucket = self._bucket("global", limits.global_per_second, limits.global_burst, now)
        # A client that comes back before its retry_after is still refused, for the rest of it.
        blocked = max(chat_bucket.blocked_until, all_bucket.blocked_until)
        if blocked > now:
            if chat_bucket.blocked_until > now:
                self.stats.early_retries += 1
            self._flood_429(max(limits.min_retry_after, math.ceil(blocked - now)))
        wait_chat = chat_bucket.wait(now)
        wait_all = all_bucket.wait(now)
        if wait_chat or wait_all:
            retry_after = max(limits.min_retry_after, math.ceil(max(wait_chat, wait_all)))
            for bucket, wait in ((chat_bucket, wait_chat), (all_bucket, wait_all)):
                if wait:
                    bucket.blocked_until = now + retry_after
            self._flood_429(retry_after)
        chat_bucket.take()
        all_bucket.take()

    def _flood_429(self, retry_after: int) -> None:
        self.stats.flood_429 += 1
        raise ApiError(
            429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
        )

    def _bucket(self, key: Any, rate: float, burst: int, now: float) -> _Bucket:
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(rate, burst, now)
        return b

    # -- state helpers ---------------------------------------------------------------------------

    def _user(self, user_id: int) -> FakeUser:
        try:
            return self._users[user_id]
        except KeyError:
            raise ValueError(f"unknown user {user_id}; call register_user first") from None

    def _chat(self, chat_id: int) -> FakeChat:
        try:
            return self._chats[chat_id]
        except KeyError:
            raise ValueError(f"unknown chat {chat_id}") from None

    def _user_and_chat(self, user_id: int, chat_id: int | None) -> tuple[FakeUser, FakeChat]:
        user = self._user(user_id)
        chat = self._chat(chat_id if chat_id is not None else user_id)
        if chat.type != "private":
            chat.members.add(user_id)
        return user, chat

    def _user_api(self, user: FakeUser) -> dict[str, Any]:
        return user.api()

    def _user_message(
        self, user: FakeUser, chat: FakeChat, kind: str, reply_to: int | None
    ) -> FakeMessage:
        if chat.type == "private":
            # Writing to a bot starts the conversation; a client must unblock a bot to write.
            user.started = True
            if user.blocked_bot:
                self.user_unblocks_bot(user.id)
        mid = chat.next_message_id
        chat.next_message_id += 1
        msg = FakeMessage(chat.id, mid, _now(), False, user.id, kind, reply_to_message_id=reply_to)
        self._messages[chat.id][mid] = msg
        return msg

    def _deliver_user_message(self, msg: FakeMessage, user: FakeUser, chat: FakeChat) -> None:
        msg.versions.append(msg.snapshot())
        if chat.type in ("group", "supergroup") and self.privacy_mode and not self._sees(msg):
            return
        msg.update_id = self._enqueue({"message": self._message_api(msg)})

    def _sees(self, msg: FakeMessage) -> bool:
        """Privacy mode: a group bot sees commands, replies to itself and mentions of itself."""
        text = msg.text or msg.caption or ""
        me = f"@{self.bot_username}".lower()
        for e in msg.entities:
            token = _utf16_slice(text, e["offset"], e["length"]).lower()
            if e["type"] == "bot_command" and ("@" not in token or token.endswith(me)):
                return True
            if e["type"] == "mention" and token == me:
                return True
        if msg.reply_to_message_id is not None:
            target = self._messages[msg.chat_id].get(msg.reply_to_message_id)
            return target is not None and target.from_bot
        return False

    def _member_update(self, user: FakeUser, old: str, new: str) -> None:
        chat = self._chats[user.id]
        bot = {k: self.bot_user[k] for k in ("id", "is_bot", "first_name", "username")}
        new_member: dict[str, Any] = {"status": new, "user": bot}
        if new == "kicked":
            new_member["until_date"] = 0
        old_member: dict[str, Any] = {"status": old, "user": bot}
        if old == "kicked":
            old_member["until_date"] = 0
        self._enqueue(
            {
                "my_chat_member": {
                    "chat": chat.api(),
                    "from": user.api(),
                    "date": _now(),
                    "old_chat_member": old_member,
                    "new_chat_member": new_member,
                }
            }
        )

    def _enqueue(self, payload: dict[str, Any]) -> int:
        kind = next(iter(payload))
        uid = self._next_update_id
        self._next_update_id += 1
        if not self._allowed(kind):
            # The real server does not even keep updates of types the bot did not ask for.
            return uid
        update = {"update_id": uid, **payload}
        self._updates.append(update)
        if self._poll is not None and not self._poll.done():
            self._poll.set_result("update")
        if self._webhook_wakeup is not None:
            self._webhook_wakeup.set()
        self._notify()
        return uid

    def _allowed(self, kind: str) -> bool:
        if self._allowed_updates is None:
            return kind not in DEFAULT_EXCLUDED_UPDATES
        return kind in self._allowed_updates

    def _message_api(self, m: FakeMessage) -> dict[str, Any]:
        chat = self._chats[m.chat_id]
        d: dict[str, Any] = {"message_id": m.message_id, "date": m.date, "chat": chat.api()}
        d["from"] = self.bot_user_short if m.from_bot else self._users[m.sender_id].api()
        if m.edit_date:
            d["edit_date"] = m.edit_date
        if m.reply_to_message_id is not None:
            target = self._messages[m.chat_id].get(m.reply_to_message_id)
            if target is not None and not target.deleted:
                d["reply_to_message"] = self._message_api_flat(target)
        if m.text is not None:
            d["text"] = m.text
            if m.entities:
                d["entities"] = m.entities
        if m.caption is not None:
            d["caption"] = m.caption
            if m.entities:
                d["caption_entities"] = m.entities
        d.update(m.extra)
        if m.reply_markup and "inline_keyboard" in m.reply_markup:
            d["reply_markup"] = m.reply_markup
        return d

    def _message_api_flat(self, m: FakeMessage) -> dict[str, Any]:
        saved, m.reply_to_message_id = m.reply_to_message_id, None
        try:
            return self._message_api(m)
        finally:
            m.reply_to_message_id = saved

    @functools.cached_property
    def bot_user_short(self) -> dict[str, Any]:
        return {k: self.bot_user[k] for k in ("id", "is_bot", "first_name", "username")}

    def _store_file(
        self, data: bytes, folder: str, suffix: str, file_name: str | None, mime: str | None
    ) -> FakeFile:
        n = next(self._file_seq)
        prefix = "AgAC" if folder == "photos" else "BQAC"
        f = FakeFile(
            file_id=f"{prefix}{self.bot_id:x}{n:08d}",
            file_unique_id=f"AQAD{n:06d}",
            file_path=f"{folder}/file_{n}{suffix or ''}",
            data=data,
            file_name=file_name,
            mime_type=mime,
        )
        self._files[f.file_id] = f
        self._files_by_path[f.file_path] = f
        return f

    @staticmethod
    def _photo_sizes(f: FakeFile, width: int, height: int) -> list[dict[str, Any]]:
        return [
            {
                "file_id": f.file_id,
                "file_unique_id": f.file_unique_id,
                "width": width,
                "height": height,
                "file_size": f.size,
            }
        ]

    @staticmethod
    def _document_api(f: FakeFile) -> dict[str, Any]:
        d: dict[str, Any] = {"file_id": f.file_id, "file_unique_id": f.file_unique_id}
        if f.file_name:
            d["file_name"] = f.file_name
        if f.mime_type:
            d["mime_type"] = f.mime_type
        d["file_size"] = f.size
        return d

    def _resolve_chat(self, chat_id: int | str) -> FakeChat:
        chat = (
            self._chats_by_username.get(chat_id[1:].lower())
            if isinstance(chat_id, str)
            else self._chats.get(chat_id)
        )
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        if chat.migrated_to is not None:
            raise ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": chat.migrated_to},
            )
        return chat

    def _check_can_write(self, chat: FakeChat) -> None:
        if chat.type == "private":
            user = self._users.get(chat.id)
            if user is None:
                raise ApiError(400, "Bad Request: chat not found")
            if user.deactivated:
                raise ApiError(403, "Forbidden: user is deactivated")
            if user.blocked_bot:
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            if not user.started:
                raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
        elif chat.bot_removed:
            kind = "group chat" if chat.type == "group" else f"{chat.type} chat"
            raise ApiError(403, f"Forbidden: bot was kicked from the {kind}")

    def _formatted(
        self, method: str, text: str, parse_mode: str | None, entities: Any, limit: int, what: str
    ) -> tuple[str, list[dict[str, Any]]]:
        if parse_mode and parse_mode.lower() not in PARSE_MODES:
            self._violation(method, f"unsupported parse_mode {parse_mode!r}")
            raise ApiError(400, "Bad Request: unsupported parse_mode")
        try:
            plain, ents = parse_formatted_text(text, parse_mode)
        except ValueError as exc:
            self._violation(method, f"can't parse entities ({parse_mode}): {exc}")
            raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        if entities and not parse_mode:
            ents = entities
        if what == "text" and not plain.strip():
            self._violation(method, "text is empty (spec: 1-4096 characters)")
            raise ApiError(400, "Bad Request: message text is empty")
        if len(plain) > limit:
            self._violation(method, f"{what} is {len(plain)} characters (spec limit {limit})")
            if what == "text":
                raise ApiError(400, "Bad Request: message is too long")
            raise ApiError(400, "Bad Request: message caption is too long")
        return plain, ents

    def _reply_target(self, chat: FakeChat, p: dict[str, Any]) -> int | None:
        rp = p.get("reply_parameters")
        if not rp:
            return None
        target_chat = rp.get("chat_id", chat.id)
        mid = rp["message_id"]
        target = self._messages.get(target_chat if isinstance(target_chat, int) else chat.id, {})
        msg = target.get(mid)
        if msg is None or msg.deleted:
            if rp.get("allow_sending_without_reply"):
                return None
            raise ApiError(400, "Bad Request: message to be replied not found")
        return mid

    def _bot_message(
        self, method: str, chat: FakeChat, kind: str, p: dict[str, Any]
    ) -> FakeMessage:
        mid = chat.next_message_id
        chat.next_message_id += 1
        stored = {k: v for k, v in p.items() if not isinstance(v, Upload)}
        msg = FakeMessage(
            chat.id, mid, _now(), True, self.bot_id, kind, method=method, params=stored
        )
        msg.parse_mode = p.get("parse_mode")
        msg.reply_markup = p.get("reply_markup")
        return msg

    def _commit(self, msg: FakeMessage) -> dict[str, Any]:
        msg.versions.append(msg.snapshot())
        self._messages[msg.chat_id][msg.message_id] = msg
        self._sent.append(msg)
        return self._message_api(msg)

    def _prepare_send(self, method: str, p: dict[str, Any]) -> FakeChat:
        chat = self._resolve_chat(p["chat_id"])
        self._check_can_write(chat)
        self._flood_check(method, chat, bool(p.get("allow_paid_broadcast")))
        return chat

    def _input_file(
        self, p: dict[str, Any], key: str, folder: str, default_name: str, mime: str
    ) -> FakeFile:
        value = p[key]
        if isinstance(value, Upload):
            name = value.filename or default_name
            return self._store_file(
                value.data, folder, Path(name).suffix, name, value.content_type or mime
            )
        if value.startswith(("http://", "https://")):
            # Never fetched: a fake must not touch the network. The file is an empty stand-in.
            name = value.rsplit("/", 1)[-1] or default_name
            return self._store_file(b"", folder, Path(name).suffix, name, mime)
        f = self._files.get(value)
        if f is None:
            raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        return f

    def _get_editable(self, method: str, p: dict[str, Any]) -> FakeMessage:
        if "inline_message_id" in p:
            raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
        if "chat_id" not in p or "message_id" not in p:
            self._violation(method, "needs chat_id and message_id, or inline_message_id")
            raise ApiError(400, "Bad Request: message identifier is not specified")
        chat = self._resolve_chat(p["chat_id"])
        msg = self._messages[chat.id].get(p["message_id"])
        if msg is None or msg.deleted:
            raise ApiError(400, "Bad Request: message to edit not found")
        if not msg.from_bot:
            raise ApiError(400, "Bad Request: message can't be edited")
        return msg

    def _record_edit(self, msg: FakeMessage) -> Any:
        msg.edit_date = _now()
        msg.versions.append(msg.snapshot())
        return self._message_api(msg)

    # -- Bot API methods -------------------------------------------------------------------------

    def _m_getMe(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        return self.bot_user

    def _m_logOut(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        # After logOut the cloud server refuses the token (401) until the fake is restarted.
        self._logged_out = True
        self._end_poll("closed")
        return True

    def _m_close(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        elapsed = time.monotonic() - self._started_at
        if elapsed < self.close_cooldown:
            wait = math.ceil(self.close_cooldown - elapsed)
            raise ApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
        self._end_poll("closed")
        return True

    async def _m_getUpdates(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        if self._webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        # The newest long poll wins; the one it replaces is answered 409 (as the real server).
        self._end_poll("conflict")
        offset = p.get("offset", 0)
        limit = min(max(p.get("limit", 100), 1), 100)
        timeout = min(max(p.get("timeout", 0), 0), LONG_POLL_MAX_TIMEOUT)
        if "allowed_updates" in p:
            bad = [u for u in p["allowed_updates"] if u not in self.spec.update_types]
            if bad:
                self._violation("getUpdates", f"allowed_updates has unknown update types {bad}")
            self._allowed_updates = frozenset(p["allowed_updates"]) or None
        self._confirm(offset)
        batch = self._take_updates(limit)
        if batch or timeout == 0:
            return batch
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str] = loop.create_future()
        self._poll = fut
        self._notify()
        try:
            outcome = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            outcome = "timeout"
        finally:
            if self._poll is fut:
                self._poll = None
        if outcome == "conflict":
            self.stats.conflicts += 1
            raise ApiError(
                409,
                "Conflict: terminated by other getUpdates request; "
                "make sure that only one bot instance is running",
            )
        if outcome == "setwebhook":
            self.stats.conflicts += 1
            raise ApiError(409, "Conflict: terminated by setWebhook request")
        if outcome == "update":
            await asyncio.sleep(LONG_POLL_BATCH_DELAY)
        return self._take_updates(limit)

    def _end_poll(self, outcome: str) -> None:
        if self._poll is not None and not self._poll.done():
            self._poll.set_result(outcome)
        self._poll = None

    def _confirm(self, offset: int) -> None:
        q = self._updates
        if offset > 0:
            while q and q[0]["update_id"] < offset:
                q.popleft()
        elif offset < 0:
            while len(q) > -offset:
                q.popleft()

    def _take_updates(self, limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for u in self._updates:
            kind = next(k for k in u if k != "update_id")
            if self._allowed(kind):
                out.append(u)
                if len(out) >= limit:
                    break
        return out

    def _m_setWebhook(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        url = p["url"]
        if not url:
            return self._m_deleteWebhook(p, files)
        parsed = _url_host(url)
        if parsed is None:
            self._violation("setWebhook", f"bad webhook url {url!r}")
            raise ApiError(400, "Bad Request: bad webhook: Failed to resolve host")
        scheme, host = parsed
        if scheme != "https" and host not in _LOOPBACK_HOSTS:
            self._violation("setWebhook", "webhook url must be HTTPS")
            raise ApiError(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        secret = p.get("secret_token")
        if secret is not None and not _SECRET_RE.fullmatch(secret):
            self._violation("setWebhook", "secret_token must be 1-256 chars of [A-Za-z0-9_-]")
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        max_conn = p.get("max_connections", 40)
        if not 1 <= max_conn <= 100:
            self._violation("setWebhook", f"max_connections {max_conn} outside 1-100")
        same = self._webhook is not None and self._webhook["url"] == url
        if p.get("drop_pending_updates"):
            self._updates.clear()
        if "allowed_updates" in p:
            self._allowed_updates = frozenset(p["allowed_updates"]) or None
        self._webhook = {
            "url": url,
            "secret_token": secret,
            "max_connections": max_conn,
            "has_custom_certificate": "certificate" in p,
            "ip_address": p.get("ip_address"),
            "loopback": host in _LOOPBACK_HOSTS,
            "last_error_date": None,
            "last_error_message": None,
        }
        self._end_poll("setwebhook")
        if self._webhook_task is None or self._webhook_task.done():
            self._webhook_task = asyncio.get_running_loop().create_task(self._webhook_loop())
        assert self._webhook_wakeup is not None
        self._webhook_wakeup.set()
        return _WithDescription(True, "Webhook is already set" if same else "Webhook was set")

    def _m_deleteWebhook(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        had = self._webhook is not None
        self._webhook = None
        if self._webhook_wakeup is not None:
            self._webhook_wakeup.set()
        if p.get("drop_pending_updates"):
            self._updates.clear()
        return _WithDescription(
            True, "Webhook was deleted" if had else "Webhook is already deleted"
        )

    def _m_getWebhookInfo(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        return self._webhook_info()

    def _webhook_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        wh = self._webhook
        if wh is not None:
            info["url"] = wh["url"]
            info["has_custom_certificate"] = wh["has_custom_certificate"]
            info["max_connections"] = wh["max_connections"]
            if wh["ip_address"]:
                info["ip_address"] = wh["ip_address"]
            if wh["last_error_date"]:
                info["last_error_date"] = wh["last_error_date"]
                info["last_error_message"] = wh["last_error_message"]
            if self._allowed_updates is not None:
                info["allowed_updates"] = sorted(self._allowed_updates)
        return info

    async def _webhook_loop(self) -> None:
        """Deliver queued updates one POST at a time, in order, retrying on any failure."""
        assert self._webhook_wakeup is not None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while True:
                wh = self._webhook
                if wh is None:
                    return
                self._webhook_wakeup.clear()
                update = next(
                    (
                        u
                        for u in self._updates
                        if self._allowed(next(k for k in u if k != "update_id"))
                    ),
                    None,
                )
                if update is None or not wh["loopback"]:
                    if update is not None and not wh["loopback"]:
                        wh["last_error_date"] = _now()
                        wh["last_error_message"] = "fake delivers webhooks to loopback only"
                    await self._webhook_wakeup.wait()
                    continue
                headers = {"Content-Type": _JSON_CT}
                if wh["secret_token"]:
                    headers["X-Telegram-Bot-Api-Secret-Token"] = wh["secret_token"]
                error: str | None = None
                try:
                    async with session.post(wh["url"], data=_dumps(update), headers=headers) as r:
                        await r.read()
                        if not 200 <= r.status < 300:
                            error = f"Wrong response from the webhook: {r.status} {r.reason}"
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    error = f"Connection failed: {exc.__class__.__name__}"
                if error is None:
                    with contextlib.suppress(ValueError):
                        self._updates.remove(update)
                    self._notify()
                    continue
                wh["last_error_date"] = _now()
                wh["last_error_message"] = error
                self._notify()
                await asyncio.sleep(self.webhook_retry_delay)

    def _m_sendMessage(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        text, ents = self._formatted(
            "sendMessage", p["text"], p.get("parse_mode"), p.get("entities"), MAX_TEXT, "text"
        )
        chat = self._prepare_send("sendMessage", p)
        reply_to = self._reply_target(chat, p)
        msg = self._bot_message("sendMessage", chat, "text", p)
        msg.text, msg.raw_text, msg.entities = text, p["text"], ents
        msg.reply_to_message_id = reply_to
        lpo = p.get("link_preview_options")
        if lpo:
            msg.extra["link_preview_options"] = lpo
        return self._commit(msg)

    def _send_media(self, method: str, p: dict[str, Any], kind: str) -> Any:
        caption = p.get("caption")
        cap_ents: list[dict[str, Any]] = []
        if caption is not None:
            caption, cap_ents = self._formatted(
                method,
                caption,
                p.get("parse_mode"),
                p.get("caption_entities"),
                MAX_CAPTION,
                "caption",
            )
        chat = self._prepare_send(method, p)
        reply_to = self._reply_target(chat, p)
        if kind == "photo":
            f = self._input_file(p, "photo", "photos", "photo.jpg", "image/jpeg")
        else:
            f = self._input_file(p, "document", "documents", "document", "application/octet-stream")
        msg = self._bot_message(method, chat, kind, p)
        msg.file_id = f.file_id
        msg.reply_to_message_id = reply_to
        if caption:
            msg.caption, msg.raw_caption, msg.entities = caption, p["caption"], cap_ents
        if kind == "photo":
            msg.extra["photo"] = self._photo_sizes(f, 1280, 960)
        else:
            msg.extra["document"] = self._document_api(f)
        return self._commit(msg)

    def _m_sendPhoto(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        return self._send_media("sendPhoto", p, "photo")

    def _m_sendDocument(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        return self._send_media("sendDocument", p, "document")

    def _m_editMessageText(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        msg = self._get_editable("editMessageText", p)
        text, ents = self._formatted(
            "editMessageText", p["text"], p.get("parse_mode"), p.get("entities"), MAX_TEXT, "text"
        )
        if msg.text is None:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        # Without reply_markup the inline keyboard is removed, as on the real server.
        markup = p.get("reply_markup")
        if text == msg.text and ents == msg.entities and markup == msg.reply_markup:
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        msg.text, msg.raw_text, msg.entities = text, p["text"], ents
        msg.parse_mode = p.get("parse_mode")
        msg.reply_markup = markup
        return self._record_edit(msg)

    def _m_editMessageCaption(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        msg = self._get_editable("editMessageCaption", p)
        caption, ents = self._formatted(
            "editMessageCaption",
            p.get("caption", ""),
            p.get("parse_mode"),
            p.get("caption_entities"),
            MAX_CAPTION,
            "caption",
        )
        if msg.kind == "text":
            raise ApiError(400, "Bad Request: there is no caption in the message to edit")
        markup = p.get("reply_markup")
        if caption == (msg.caption or "") and markup == msg.reply_markup:
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        msg.caption, msg.raw_caption, msg.entities = caption or None, p.get("caption"), ents
        msg.reply_markup = markup
        return self._record_edit(msg)

    def _m_editMessageReplyMarkup(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        msg = self._get_editable("editMessageReplyMarkup", p)
        markup = p.get("reply_markup")
        if markup == msg.reply_markup or (not markup and not msg.reply_markup):
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        msg.reply_markup = markup
        return self._record_edit(msg)

    def _m_deleteMessage(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(p["chat_id"])
        msg = self._messages[chat.id].get(p["message_id"])
        if msg is None or msg.deleted:
            raise ApiError(400, "Bad Request: message to delete not found")
        msg.deleted = True
        return True

    def _m_deleteMessages(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(p["chat_id"])
        ids = p["message_ids"]
        if not 1 <= len(ids) <= 100:
            self._violation("deleteMessages", "message_ids must hold 1-100 identifiers")
            raise ApiError(400, "Bad Request: too many message identifiers specified")
        for mid in ids:
            msg = self._messages[chat.id].get(mid)
            if msg is not None:
                msg.deleted = True
        return True

    def _m_answerCallbackQuery(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        text = p.get("text")
        if text is not None and len(text) > MAX_CALLBACK_ANSWER:
            self._violation("answerCallbackQuery", f"text is {len(text)} characters (spec 0-200)")
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        q = self._callback_queries.get(p["callback_query_id"])
        too_old = (
            q is not None
            and self.callback_query_ttl is not None
            and time.monotonic() - q["at"] > self.callback_query_ttl
        )
        if q is None or q["answered"] or too_old:
            raise ApiError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        q["answered"] = True
        q["answer"] = {
            "text": text,
            "show_alert": p.get("show_alert", False),
            "url": p.get("url"),
            "cache_time": p.get("cache_time", 0),
        }
        return True

    def _m_sendChatAction(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        if p["action"] not in CHAT_ACTIONS:
            self._violation("sendChatAction", f"unknown action {p['action']!r}")
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        chat = self._resolve_chat(p["chat_id"])
        self._check_can_write(chat)
        self._chat_actions.setdefault(chat.id, []).append(p["action"])
        return True

    def _commands_key(self, method: str, p: dict[str, Any]) -> tuple[str, str]:
        lang = p.get("language_code", "")
        if lang and not _LANG_RE.fullmatch(lang):
            self._violation(method, f"language_code {lang!r} is not a two-letter ISO 639-1 code")
            raise ApiError(400, "Bad Request: invalid language code specified")
        return _scope_key(p.get("scope")), lang

    def _m_setMyCommands(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        key = self._commands_key("setMyCommands", p)
        commands = p["commands"]
        if len(commands) > 100:
            self._violation("setMyCommands", f"{len(commands)} commands (spec: at most 100)")
            raise ApiError(400, "Bad Request: too many commands specified")
        if commands:
            self._commands[key] = [
                {"command": c["command"], "description": c["description"]} for c in commands
            ]
        else:
            self._commands.pop(key, None)
        return True

    def _m_getMyCommands(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        return self._commands.get(self._commands_key("getMyCommands", p), [])

    def _m_deleteMyCommands(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        self._commands.pop(self._commands_key("deleteMyCommands", p), None)
        return True

    def _m_getFile(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        f = self._files.get(p["file_id"])
        if f is None:
            raise ApiError(400, "Bad Request: wrong file_id or the file is temporarily unavailable")
        if f.size > MAX_DOWNLOAD:
            raise ApiError(400, "Bad Request: file is too big")
        return {
            "file_id": f.file_id,
            "file_unique_id": f.file_unique_id,
            "file_size": f.size,
            "file_path": f.file_path,
        }

    def _m_getChat(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(p["chat_id"])
        info = dict(chat.api())
        info["accent_color_id"] = 0
        info["max_reaction_count"] = 11
        info["accepted_gift_types"] = {
            f["name"]: False for f in self.spec.type_fields("AcceptedGiftTypes") if f["required"]
        }
        return info

    def _m_getChatMember(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(p["chat_id"])
        uid = p["user_id"]
        if uid == self.bot_id:
            return {"status": "member", "user": self.bot_user_short}
        user = self._users.get(uid)
        if user is None:
            raise ApiError(400, "Bad Request: user not found")
        if chat.type == "private":
            status = "member" if uid == chat.id else "left"
        else:
            status = "member" if uid in chat.members else "left"
        return {"status": status, "user": user.api()}

    def _m_leaveChat(self, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(p["chat_id"])
        if chat.type == "private":
            raise ApiError(400, "Bad Request: chat member status can't be changed in private chats")
        if chat.bot_removed:
            raise ApiError(403, f"Forbidden: bot is not a member of the {chat.type} chat")
        chat.bot_removed = True
        self.left_chats.append(chat.id)
        bot = self.bot_user_short
        self._enqueue(
            {
                "my_chat_member": {
                    "chat": chat.api(),
                    "from": {k: self.bot_user[k] for k in ("id", "is_bot", "first_name")},
                    "date": _now(),
                    "old_chat_member": {"status": "member", "user": bot},
                    "new_chat_member": {"status": "left", "user": bot},
                }
            }
        )
        return True

    def _m_generic(self, spec: MethodSpec, p: dict[str, Any], files: dict[str, Upload]) -> Any:
        """Methods without a model: plain success where the result needs no state."""
        if spec.returns == ("Boolean",):
            if "chat_id" in p:
                self._check_can_write(self._resolve_chat(p["chat_id"]))
            return True
        if spec.returns == ("Message",) and "chat_id" in p:
            chat = self._prepare_send(spec.name, p)
            msg = self._bot_message(spec.name, chat, spec.name, p)
            return self._commit(msg)
        self.stats.unimplemented[spec.name] += 1
        raise ApiError(501, f"Not Implemented: the fake Bot API does not model {spec.name}")

    # -- control API over HTTP -------------------------------------------------------------------

    async def _handle_control(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        action = _CONTROL.get(name)
        if action is None:
            return _control_reply(404, {"ok": False, "description": f"unknown control {name!r}"})
        try:
            args = await request.json() if request.body_exists else {}
            if not isinstance(args, dict):
                raise ValueError("control body must be a JSON object")
            if "data_b64" in args:
                args["data"] = base64.b64decode(args.pop("data_b64"))
            result = action(self, args)
            if isinstance(result, Awaitable):
                result = await result
        except TimeoutError as exc:
            return _control_reply(408, {"ok": False, "description": str(exc)})
        except (ValueError, TypeError, KeyError, LookupError) as exc:
            return _control_reply(400, {"ok": False, "description": f"{type(exc).__name__}: {exc}"})
        return _control_reply(200, {"ok": True, "result": _jsonable(result)})


@dataclass(slots=True)
class _WithDescription:
    result: Any
    description: str


def _raw(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type=_JSON_CT)


def _control_reply(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=_dumps(body), content_type=_JSON_CT)


def _scope_key(scope: dict[str, Any] | None) -> str:
    if not scope or scope.get("type") == "default":
        return '{"type":"default"}'
    return json.dumps(scope, sort_keys=True, separators=(",", ":"))


def _url_host(url: str) -> tuple[str, str] | None:
    m = re.match(r"(https?)://(\[[^\]]+\]|[^/:?#]+)", url)
    if not m:
        return None
    return m.group(1), m.group(2).strip("[]").lower()


def _kw(args: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: args[k] for k in names if k in args}


async def _control_shutdown(fake: FakeTelegram, args: dict[str, Any]) -> bool:
    assert fake._loop is not None
    # Answer first, then stop: stopping inside the handler would cancel this very response.
    fake._loop.call_later(0.05, lambda: asyncio.ensure_future(fake.stop()))
    return True


# Every entry is POST /_control/<name> with a JSON object of keyword arguments.
_CONTROL: dict[str, Callable[[FakeTelegram, dict[str, Any]], Any]] = {
    "register_user": lambda f, a: f.register_user(**a),
    "add_group": lambda f, a: f.add_group(**a),
    "add_member": lambda f, a: f.add_member(**a),
    "migrate_group": lambda f, a: f.migrate_group(**a),
    "remove_bot_from_group": lambda f, a: f.remove_bot_from_group(**a),
    "bot_added_to": lambda f, a: f.bot_added_to(**a),
    "left_chats": lambda f, a: f.left_chats,
    "user_sends": lambda f, a: f.user_sends(**a),
    "user_edits": lambda f, a: f.user_edits(**a),
    "user_presses": lambda f, a: f.user_presses(**a),
    "user_sends_photo": lambda f, a: f.user_sends_photo(**a),
    "user_sends_document": lambda f, a: f.user_sends_document(**a),
    "user_blocks_bot": lambda f, a: f.user_blocks_bot(**a),
    "user_unblocks_bot": lambda f, a: f.user_unblocks_bot(**a),
    "deactivate_user": lambda f, a: f.deactivate_user(**a),
    "push_update": lambda f, a: f.push_update(**a),
    "sent": lambda f, a: f.sent(**a),
    "messages": lambda f, a: f.messages(**a),
    "get_message": lambda f, a: f.get_message(**a),
    "callback_answer": lambda f, a: f.callback_answer(**a),
    "commands": lambda f, a: f.commands(**a),
    "chat_actions": lambda f, a: f.chat_actions(**a),
    "file_bytes": lambda f, a: f.file_bytes(**a),
    "pending_updates": lambda f, a: f.pending_updates(),
    "webhook_info": lambda f, a: f.webhook_info(),
    "calls": lambda f, a: f.calls_to(a["method"]) if "method" in a else f.calls,
    "stats": lambda f, a: f.stats,
    "violations": lambda f, a: f.violations,
    "clear_violations": lambda f, a: f.clear_violations(),
    "reset_records": lambda f, a: f.reset_records(),
    "set_flood_limits": lambda f, a: f.set_flood_limits(**a),
    "inject_fault": lambda f, a: f.inject_fault(**a),
    "inject_delay": lambda f, a: f.inject_delay(**a),
    "clear_faults": lambda f, a: f.clear_faults(),
    "wait_for": lambda f, a: f.wait_for(
        a.get("count", a.get("condition")), a.get("timeout", 5.0), **_kw(a, "chat_id")
    ),
    "next_sent": lambda f, a: f.next_sent(**a),
    "polling": lambda f, a: f.polling,
    "info": lambda f, a: {
        "url": f.url,
        "base_url": f.base_url,
        "file_base_url": f.file_base_url,
        "token": f.token,
        "bot": f.bot_user,
        "spec": f.spec.version,
        "flood": f.flood,
    },
    "shutdown": _control_shutdown,
}


# ---------------------------------------------------------------------------------------------
# Running in a thread, and driving a fake in another process
# ---------------------------------------------------------------------------------------------


class ThreadedFakeTelegram:
    """FakeTelegram in its own thread and loop; every attribute access runs in that loop.

    Methods block the caller until the fake's loop has run them, so this is safe from sync
    code and from another event loop (but blocking that loop while it waits).
    """

    def __init__(self, **kwargs: Any):
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._fake: FakeTelegram | None = None

    def start(self) -> ThreadedFakeTelegram:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fake-telegram", daemon=True)
        self._thread.start()

        async def make() -> FakeTelegram:
            return await FakeTelegram(**self._kwargs).start()

        self._fake = asyncio.run_coroutine_threadsafe(make(), loop).result(30)
        return self

    def stop(self) -> None:
        if self._loop is None or self._fake is None:
            return
        asyncio.run_coroutine_threadsafe(self._fake.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> ThreadedFakeTelegram:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def fake(self) -> FakeTelegram:
        """The underlying fake; touch it only from its own loop."""
        assert self._fake is not None
        return self._fake

    def _run(self, fn: Callable[[], Any], timeout: float | None = 60) -> Any:
        assert self._loop is not None

        async def call() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout)

    def wait_for(
        self,
        what: int | str | Callable[[FakeTelegram], Any],
        timeout: float = 5.0,
        *,
        chat_id: int | None = None,
    ) -> Any:
        return self._run(lambda: self.fake.wait_for(what, timeout, chat_id=chat_id), timeout + 5)

    def next_sent(self, chat_id: int, timeout: float = 5.0, *, after: int | None = None) -> Any:
        return self._run(lambda: self.fake.next_sent(chat_id, timeout, after=after), timeout + 5)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        fake = self.fake
        value = self._run(lambda: getattr(fake, name))
        if not callable(value):
            return value

        @functools.wraps(value)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return self._run(lambda: value(*args, **kwargs))

        return wrapper


class ControlError(RuntimeError):
    pass


class ControlClient:
    """Drive a fake in another process through /_control/* (results are plain JSON values)."""

    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=f"{self.url}/_control/", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, name: str, /, _http_timeout: float | None = None, **kwargs: Any) -> Any:
        """POST /_control/<name> with kwargs as the JSON body; return `result` or raise."""
        if isinstance(kwargs.get("data"), (bytes, bytearray)):
            kwargs["data_b64"] = base64.b64encode(kwargs.pop("data")).decode()
        if _http_timeout is None:
            r = self._http.post(name, json=kwargs)
        else:
            r = self._http.post(name, json=kwargs, timeout=_http_timeout)
        body = r.json()
        if not body.get("ok"):
            if r.status_code == 408:
                raise TimeoutError(body.get("description"))
            raise ControlError(f"{name}: {body.get('description')}")
        return body["result"]

    # Thin, typed wrappers; each maps to the FakeTelegram method of the same name.
    def info(self) -> dict[str, Any]:
        return self.call("info")

    def register_user(self, user_id: int, first_name: str = "User", **kw: Any) -> dict[str, Any]:
        return self.call("register_user", user_id=user_id, first_name=first_name, **kw)

    def add_group(self, chat_id: int, title: str = "Group", **kw: Any) -> dict[str, Any]:
        return self.call("add_group", chat_id=chat_id, title=title, **kw)

    def user_sends(self, user_id: int, text: str, **kw: Any) -> dict[str, Any]:
        return self.call("user_sends", user_id=user_id, text=text, **kw)

    def user_presses(self, user_id: int, message_id: int, callback_data: str, **kw: Any) -> str:
        return self.call(
            "user_presses",
            user_id=user_id,
            message_id=message_id,
            callback_data=callback_data,
            **kw,
        )

    def user_sends_photo(
        self, user_id: int, data: bytes, caption: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        return self.call("user_sends_photo", user_id=user_id, data=data, caption=caption, **kw)

    def user_blocks_bot(self, user_id: int) -> None:
        self.call("user_blocks_bot", user_id=user_id)

    def sent(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        return self.call("sent", **({} if chat_id is None else {"chat_id": chat_id}))

    def wait_for(self, count: int | str, timeout: float = 5.0, chat_id: int | None = None) -> Any:
        args: dict[str, Any] = {"timeout": timeout}
        args["count" if isinstance(count, int) else "condition"] = count
        if chat_id is not None:
            args["chat_id"] = chat_id
        return self.call("wait_for", _http_timeout=timeout + 10, **args)

    def next_sent(
        self, chat_id: int, timeout: float = 5.0, after: int | None = None
    ) -> dict[str, Any]:
        args: dict[str, Any] = {"chat_id": chat_id, "timeout": timeout}
        if after is not None:
            args["after"] = after
        return self.call("next_sent", _http_timeout=timeout + 10, **args)

    def file_bytes(self, file_id: str) -> bytes:
        return base64.b64decode(self.call("file_bytes", file_id=file_id))

    def violations(self) -> list[str]:
        return self.call("violations")

    def stats(self) -> dict[str, Any]:
        return self.call("stats")

    def set_flood_limits(self, enabled: bool = True, **limits: Any) -> Any:
        return self.call("set_flood_limits", enabled=enabled, **limits)

    def inject_fault(self, method: str, status: int | None = 500, **kw: Any) -> Any:
        return self.call("inject_fault", method=method, status=status, **kw)

    def shutdown(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.call("shutdown")


# ---------------------------------------------------------------------------------------------
# Process mode
# ---------------------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeTelegram(
        args.token,
        port=args.port,
        bot_username=args.bot_username,
        flood=True if args.flood else None,
        reject_violations=not args.lenient,
        spec=args.spec,
    )
    await fake.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(fake.stop()))
    # The first stdout line is the contract with whoever started us: the root URL.
    print(fake.url, flush=True)
    await fake.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.fakes.telegram_api",
        description="Fake Telegram Bot API on 127.0.0.1. Prints its root URL on the first line; "
        "PTB base_url is <root>/bot, control endpoints are POST <root>/_control/<name>.",
    )
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free one)")
    ap.add_argument("--token", default=DEFAULT_TOKEN)
    ap.add_argument("--bot-username", default="vigil_test_bot")
    ap.add_argument("--flood", action="store_true", help="enforce Telegram's flood limits")
    ap.add_argument(
        "--lenient", action="store_true", help="record unknown parameters but answer like Telegram"
    )
    ap.add_argument("--spec", default=None, help=f"path to {SPEC_FILE} (default: search)")
    args = ap.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
