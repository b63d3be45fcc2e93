"""Settings from the environment, or a TOML file named by --config / VIGIL_CONFIG.

Every variable may also be given as NAME_FILE pointing to a file (systemd credentials, Docker
secrets), so secrets need not sit in the environment. The environment wins over the file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org/bot"
YEAR = 365 * 86400


class ConfigError(Exception):
    """Bad configuration: one sentence for stderr, exit code 2."""


def _truthy(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"Expected yes or no, got {value!r}.")


def _seconds(value: str | None, default: int, name: str, most: int) -> int:
    if value is None or value == "":
        return default
    try:
        seconds = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number of seconds.") from None
    if not 0 <= seconds <= most:
        raise ConfigError(f"{name} must be between 0 and {most} seconds.")
    return seconds


@dataclass
class Settings:
    data_dir: Path
    passphrase: str | None = field(default=None, repr=False)
    telegram_token: str | None = field(default=None, repr=False)
    telegram_api_url: str = DEFAULT_TELEGRAM_API_URL
    telegram_webhook_url: str | None = None
    telegram_webhook_listen: str = "127.0.0.1:8443"
    telegram_webhook_secret: str | None = field(default=None, repr=False)
    telegram_delete_reports: bool = True
    signal_api_url: str | None = None
    signal_number: str | None = field(default=None, repr=False)
    signal_disappearing_seconds: int = 0  # timer for relatives' Signal chats; 0 = leave as is
    signal_poll_timeout: int = 1  # normal/native mode: seconds each receive call waits
    timezone: str = "UTC"
    language: str = "en"
    log_level: str = "INFO"
    invite_only: bool = False
    approval_threshold: int = 200

    def take_passphrase(self) -> str | None:
        """The network passphrase, once: it leaves these settings and the environment as it
        is handed over, so nothing reachable keeps it after the unlock that needed it."""
        secret, self.passphrase = self.passphrase, None
        os.environ.pop("VIGIL_PASSPHRASE", None)
        return secret

    @property
    def telegram_enabled(self) -> bool:
        return bool(self.telegram_token)

    @property
    def signal_enabled(self) -> bool:
        return bool(self.signal_api_url and self.signal_number)

    def summary(self) -> dict[str, str]:
        """What `vigil status` may show: no secrets, no numbers."""
        return {
            "data dir": str(self.data_dir),
            "telegram": "enabled" if self.telegram_enabled else "off",
            "telegram api": _host_only(self.telegram_api_url) if self.telegram_enabled else "-",
            "signal": "enabled" if self.signal_enabled else "off",
            "signal api": _host_only(self.signal_api_url or "") if self.signal_enabled else "-",
            "timezone": self.timezone,
            "language": self.language,
            "invite only": "yes" if self.invite_only else "no",
            "approval over": f"{self.approval_threshold} people",
        }


def _host_only(url: str) -> str:
    # A Bot API URL may embed the token when misconfigured; show scheme and host only.
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}" if rest else "-"


_KEYS = {
    "data_dir", "passphrase", "telegram_token", "telegram_api_url", "telegram_webhook_url",
    "telegram_webhook_listen", "telegram_webhook_secret", "telegram_delete_reports",
    "signal_api_url", "signal_number", "signal_disappearing_seconds", "signal_poll_timeout",
    "timezone", "language", "log_level", "invite_only",
    "approval_threshold",
}  # fmt: skip


def load(config_file: str | None = None, env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    values: dict[str, str] = {}
    path = config_file or env.get("VIGIL_CONFIG")
    if path:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError:
            raise ConfigError(f"Cannot read the configuration file {path}.") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"The configuration file {path} is not valid TOML ({err}).") from None
        for key, value in doc.items():
            if key not in _KEYS:
                raise ConfigError(f"Unknown setting {key!r} in {path}.")
            values[key] = str(value).lower() if isinstance(value, bool) else str(value)
    for key in _KEYS:
        name = "VIGIL_" + key.upper()
        if env.get(name):
            values[key] = env[name]
        elif env.get(name + "_FILE"):
            try:
                values[key] = Path(env[name + "_FILE"]).read_text("utf-8").strip()
            except OSError:
                raise ConfigError(f"Cannot read the file named by {name}_FILE.") from None
    data_dir = Path(values.get("data_dir") or platformdirs.user_data_dir("vigil")).expanduser()
    s = Settings(data_dir=data_dir)
    s.passphrase = values.get("passphrase")
    s.telegram_token = values.get("telegram_token") or None
    s.telegram_api_url = values.get("telegram_api_url") or DEFAULT_TELEGRAM_API_URL
    s.telegram_webhook_url = values.get("telegram_webhook_url") or None
    s.telegram_webhook_listen = values.get("telegram_webhook_listen") or s.telegram_webhook_listen
    s.telegram_webhook_secret = values.get("telegram_webhook_secret") or None
    s.telegram_delete_reports = _truthy(values.get("telegram_delete_reports"), True)
    s.signal_api_url = values.get("signal_api_url") or None
    s.signal_number = values.get("signal_number") or None
    s.signal_disappearing_seconds = _seconds(
        values.get("signal_disappearing_seconds"), 0, "VIGIL_SIGNAL_DISAPPEARING_SECONDS", YEAR
    )
    s.signal_poll_timeout = _seconds(
        values.get("signal_poll_timeout"), 1, "VIGIL_SIGNAL_POLL_TIMEOUT", 300
    )
    s.timezone = values.get("timezone") or "UTC"
    s.language = values.get("language") or "en"
    s.log_level = (values.get("log_level") or "INFO").upper()
    s.invite_only = _truthy(values.get("invite_only"), False)
    s.approval_threshold = _count(values.get("approval_threshold"), 200)
    _validate(s)
    return s


def _count(raw: str | None, default: int) -> int:
    if not raw:
        return default
    if not raw.strip().isascii() or not raw.strip().isdigit() or not 1 <= int(raw) <= 10_000_000:
        raise ConfigError("VIGIL_APPROVAL_THRESHOLD must be a whole number of people, at least 1.")
    return int(raw)


def _validate(s: Settings) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"Unknown time zone {s.timezone!r} in VIGIL_TIMEZONE.") from None
    if s.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("VIGIL_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR.")
    if bool(s.signal_api_url) != bool(s.signal_number):
        raise ConfigError("Signal needs both VIGIL_SIGNAL_API_URL and VIGIL_SIGNAL_NUMBER.")
    for name, url in (
        ("VIGIL_TELEGRAM_API_URL", s.telegram_api_url),
        ("VIGIL_SIGNAL_API_URL", s.signal_api_url),
    ):
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must start with http:// or https://.")
