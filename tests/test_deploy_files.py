"""Static checks on the deployment files: each test fails if a protection is removed.

The files are read as text. PyYAML is not a dependency, so the compose file is read with
a small indentation-based reader. It understands the plain block style the file uses:
`key: value`, nested mappings and `- item` lists.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "vigil.service"
TEMPLATE = DEPLOY / "vigil@.service"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
GUIDE = ROOT / "docs" / "deploy.md"
ALL_FILES = [UNIT, TEMPLATE, COMPOSE, DOCKERFILE, GUIDE]

SIGNAL_CLI_DATA = "/home/.local/share/signal-cli"


# --- systemd unit -----------------------------------------------------------------


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every assignment in file order (systemd: repeated keys add up)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"unparsable unit line: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def unit_env(service: dict[str, list[str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in service.get("Environment", []):
        for word in shlex.split(value):
            name, _, val = word.partition("=")
            env[name] = val
    return env


# The last assignment wins in systemd, so that is the one checked.
UNIT_SETTINGS = {
    "User": "vigil",
    "DynamicUser": "no",
    "ExecStart": "/opt/vigil/.venv/bin/vigil run",
    "StateDirectory": "vigil",
    "StateDirectoryMode": "0700",
    "EnvironmentFile": "-/etc/vigil/vigil.env",
    "UMask": "0077",
    "LimitCORE": "0",
    "MemorySwapMax": "0",
    "MemoryDenyWriteExecute": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "Restart": "on-failure",
    "KillSignal": "SIGTERM",
    "TimeoutStopSec": "30",
}


@pytest.mark.parametrize(("key", "expected"), sorted(UNIT_SETTINGS.items()))
def test_unit_setting(service, key, expected):
    assert key in service, f"{key}= is missing from the unit"
    assert service[key][-1] == expected, f"{key}={service[key][-1]!r}, expected {expected!r}"


def test_unit_address_families_are_only_inet_and_unix(service):
    families = " ".join(service.get("RestrictAddressFamilies", [])).split()
    assert set(families) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_unit_syscall_filter(service):
    filters = service.get("SystemCallFilter", [])
    assert "@system-service" in filters
    assert "" not in filters, "an empty SystemCallFilter= resets the filter"


def test_unit_does_not_restart_on_bad_config_or_wrong_passphrase(service):
    assert "2" in " ".join(service.get("RestartPreventExitStatus", [])).split()


def test_unit_passphrase_comes_from_a_credential(service):
    creds = service.get("LoadCredential", []) + service.get("LoadCredentialEncrypted", [])
    assert any(c.startswith("passphrase:") for c in creds)
    env = unit_env(service)
    assert env["VIGIL_PASSPHRASE_FILE"] == "%d/passphrase"
    assert env["VIGIL_DATA_DIR"] == "/var/lib/vigil"


def test_unit_telegram_token_if_any_comes_from_a_credential(service):
    env = unit_env(service)
    if "VIGIL_TELEGRAM_TOKEN_FILE" in env:
        assert env["VIGIL_TELEGRAM_TOKEN_FILE"] == "%d/telegram-token"
        creds = service.get("LoadCredential", []) + service.get("LoadCredentialEncrypted", [])
        assert any(c.startswith("telegram-token:") for c in creds)


def test_unit_secrets_never_in_the_environment(service):
    env = unit_env(service)
    for name in ("VIGIL_PASSPHRASE", "VIGIL_TELEGRAM_TOKEN", "VIGIL_INSECURE_FAST_KDF"):
        assert name not in env
    unset = " ".join(service.get("UnsetEnvironment", [])).split()
    assert {"VIGIL_PASSPHRASE", "VIGIL_TELEGRAM_TOKEN", "VIGIL_INSECURE_FAST_KDF"} <= set(unset)


# --- the template unit: one instance per network ----------------------------------

# What an instance has of its own; everything else must read as in vigil.service.
PER_NETWORK = {"Description", "User", "Group", "StateDirectory", "Environment",
               "LoadCredential", "LoadCredentialEncrypted", "EnvironmentFile"}  # fmt: skip


@pytest.fixture(scope="module")
def template() -> dict[str, list[str]]:
    return parse_unit(TEMPLATE.read_text())["Service"]


def test_template_hardening_is_the_single_units(service, template):
    shared = (set(service) | set(template)) - PER_NETWORK
    drift = {k: (service.get(k), template.get(k)) for k in shared}
    drift = {k: pair for k, pair in drift.items() if pair[0] != pair[1]}
    assert not drift, f"vigil@.service drifted from vigil.service: {drift}"
    env, tenv = unit_env(service), unit_env(template)
    assert {k: v for k, v in env.items() if k != "VIGIL_DATA_DIR"} == {
        k: v for k, v in tenv.items() if k != "VIGIL_DATA_DIR"
    }


def test_template_gives_each_network_its_own_user_store_secrets_and_settings(template):
    assert template["User"][-1] == template["Group"][-1] == "vigil-%i"
    assert template["StateDirectory"][-1] == "vigil-networks/%i"
    env = unit_env(template)
    assert env["VIGIL_DATA_DIR"] == "/var/lib/vigil-networks/%i"
    assert env["VIGIL_PASSPHRASE_FILE"] == "%d/passphrase"
    creds = template.get("LoadCredential", []) + template.get("LoadCredentialEncrypted", [])
    assert creds and all(c.split(":", 1)[1].startswith("/etc/vigil/%i/") for c in creds)
    assert template["EnvironmentFile"][-1] == "-/etc/vigil/%i/vigil.env"


@pytest.mark.parametrize("unit", ["service", "template"])
def test_units_tell_systemd_when_ready_and_keep_its_watchdog(request, unit):
    settings = request.getfixturevalue(unit)
    assert settings["Type"][-1] == "notify"
    assert settings.get("NotifyAccess", ["main"])[-1] == "main"
    seconds = settings["WatchdogSec"][-1].removesuffix("s")
    # Longer than the dispatcher's own heartbeat check would be pointless; far shorter
    # would restart a bot that is merely busy.
    assert 10 <= int(seconds) <= 120
    assert settings["Restart"][-1] == "on-failure"


def _runnable_copy(path: Path, tmp_path: Path, name: str) -> Path:
    """The unit with ExecStart pointing at this checkout's vigil: `verify` insists that the
    binary exists, and /opt/vigil is not installed on a test machine. Nothing else changes."""
    vigil = Path(sys.executable).parent / "vigil"
    if not vigil.exists():
        pytest.skip("no vigil script next to this Python")
    text = path.read_text().replace("/opt/vigil/.venv/bin/vigil", str(vigil))
    copy = tmp_path / name
    copy.write_text(text)
    return copy


UNITS = [(UNIT, "vigil.service"), (TEMPLATE, "vigil@net1.service")]


@pytest.mark.parametrize(("path", "name"), UNITS, ids=["vigil.service", "vigil@.service"])
def test_unit_passes_systemd_analyze_verify(path, name, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = _runnable_copy(path, tmp_path, name)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip(), done.stderr


@pytest.mark.parametrize(("path", "name"), UNITS, ids=["vigil.service", "vigil@.service"])
def test_unit_exposure_stays_low(path, name, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = _runnable_copy(path, tmp_path, name)
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert found, done.stdout[-500:] + done.stderr
    exposure = float(found.group(1))
    print(f"{name}: systemd-analyze security exposure {exposure}")
    assert exposure <= 1.5


# --- compose file -----------------------------------------------------------------


def _strip_comment(line: str) -> str:
    """Drop a YAML comment: '#' at the start or after whitespace, outside quotes."""
    single = double = False
    for i, ch in enumerate(line):
        if ch == "'" and not double:
            single = not single
        elif ch == '"' and not single:
            double = not double
        elif ch == "#" and not single and not double and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def active_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = _strip_comment(raw).rstrip()
        if line.strip():
            assert "\t" not in line[: len(line) - len(line.lstrip())], "tabs in YAML indent"
            lines.append(line)
    return lines


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def block(lines: list[str], *path: str) -> list[str]:
    """The lines nested under a key path, e.g. block(lines, "services", "vigil")."""
    current = lines
    for key in path:
        base = min(_indent(line) for line in current)
        for i, line in enumerate(current):
            if _indent(line) == base and line.strip() == f"{key}:":
                child = []
                for nxt in current[i + 1 :]:
                    if _indent(nxt) <= base:
                        break
                    child.append(nxt)
                current = child
                break
        else:
            raise KeyError("/".join(path))
        assert current, f"{'/'.join(path)} is empty"
    return current


def keys(lines: list[str]) -> list[str]:
    """The mapping keys directly in this block."""
    base = min(_indent(line) for line in lines)
    found = []
    for line in lines:
        text = line.strip()
        if _indent(line) == base and not text.startswith("- ") and ":" in text:
            found.append(text.split(":", 1)[0].strip())
    return found


def scalar(lines: list[str], key: str) -> str | None:
    """The value of `key: value` directly in this block, or None."""
    base = min(_indent(line) for line in lines)
    for line in lines:
        if _indent(line) == base and line.strip().startswith(f"{key}:"):
            value = line.strip()[len(key) + 1 :].strip()
            return _unquote(value) if value else None
    return None


def items(lines: list[str]) -> list[str]:
    """The `- item` entries directly in this block (an inline `[a, b]` list too)."""
    base = min(_indent(line) for line in lines)
    out = []
    for line in lines:
        text = line.strip()
        if _indent(line) == base and text.startswith("- "):
            out.append(_unquote(text[2:]))
    return out


def listing(lines: list[str], key: str) -> list[str]:
    inline = scalar(lines, key)
    if inline is not None:
        assert inline.startswith("[") and inline.endswith("]"), f"{key}: {inline}"
        return [_unquote(v) for v in inline[1:-1].split(",") if v.strip()]
    return items(block(lines, key)) if key in keys(lines) else []


def environment(lines: list[str]) -> dict[str, str]:
    if "environment" not in keys(lines):
        return {}
    env_lines = block(lines, "environment")
    listed = items(env_lines)
    if listed:
        return dict(item.partition("=")[::2] for item in listed)
    return {k: scalar(env_lines, k) or "" for k in keys(env_lines)}


@pytest.fixture(scope="module")
def compose() -> list[str]:
    return active_lines(COMPOSE.read_text())


@pytest.fixture(scope="module")
def signal_api(compose) -> list[str]:
    return block(compose, "services", "signal-api")


@pytest.fixture(scope="module")
def vigil(compose) -> list[str]:
    return block(compose, "services", "vigil")


def test_compose_has_both_services(compose):
    assert {"signal-api", "vigil"} <= set(keys(block(compose, "services")))


def test_signal_api_publishes_no_port(signal_api):
    # No authentication: a published port would hand the bot's account to anyone who reaches it.
    assert "ports" not in keys(signal_api)
    assert "network_mode" not in keys(signal_api), "host networking exposes port 8080"


def test_no_service_publishes_a_port(compose):
    assert not [line for line in compose if re.match(r"\s*ports\s*:", line)]
    assert not [line for line in compose if re.match(r"\s*network_mode\s*:", line)]


def test_signal_api_runs_json_rpc_and_never_debug_logs(signal_api):
    env = environment(signal_api)
    assert env.get("MODE") == "json-rpc"
    assert env.get("LOG_LEVEL", "info").lower() != "debug"


def test_signal_api_image_is_pinned(signal_api):
    image = scalar(signal_api, "image") or ""
    name, _, tag = image.partition("@")[0].partition(":")
    assert name == "bbernhard/signal-cli-rest-api"
    assert tag and tag != "latest"


def test_signal_api_data_dir_is_never_created_on_the_plain_disk(signal_api):
    volumes = block(signal_api, "volumes")
    text = "\n".join(volumes)
    assert f"target: {SIGNAL_CLI_DATA}" in text
    assert "create_host_path: false" in text


def test_signal_api_reachable_only_over_internal_networks(compose, signal_api, vigil):
    defined = block(compose, "networks")

    def internal(name: str) -> bool:
        if name not in keys(defined):
            return False
        return scalar(block(defined, name), "internal") == "true"

    api_nets = set(listing(signal_api, "networks"))
    vigil_nets = set(listing(vigil, "networks"))
    shared = api_nets & vigil_nets
    assert shared, "vigil cannot reach signal-api"
    assert all(internal(n) for n in shared), "signal-api must meet vigil on an internal network"
    # Its egress network (needed to reach Signal's servers) must be its own.
    services = block(compose, "services")
    for other in keys(services):
        if other == "signal-api":
            continue
        other_nets = set(listing(block(services, other), "networks"))
        for net in api_nets & other_nets:
            assert internal(net), f"{other} shares the non-internal network {net} with signal-api"


def test_vigil_passphrase_is_a_compose_secret(compose, vigil):
    env = environment(vigil)
    path = env.get("VIGIL_PASSPHRASE_FILE", "")
    assert path.startswith("/run/secrets/")
    name = path.removeprefix("/run/secrets/")
    assert name in listing(vigil, "secrets")
    assert scalar(block(compose, "secrets", name), "file")


def test_vigil_secrets_are_never_values(vigil):
    env = environment(vigil)
    for name in ("VIGIL_PASSPHRASE", "VIGIL_TELEGRAM_TOKEN", "VIGIL_INSECURE_FAST_KDF"):
        assert name not in env
    if "VIGIL_TELEGRAM_TOKEN_FILE" in env:
        assert env["VIGIL_TELEGRAM_TOKEN_FILE"].startswith("/run/secrets/")


def test_vigil_talks_to_signal_api_by_service_name(vigil):
    env = environment(vigil)
    assert env.get("VIGIL_SIGNAL_API_URL") == "http://signal-api:8080"
    assert env.get("VIGIL_DATA_DIR") == "/data"
    assert "VIGIL_SIGNAL_NUMBER" in env


def test_vigil_container_is_locked_down(vigil):
    assert scalar(vigil, "read_only") == "true"
    assert "ALL" in listing(vigil, "cap_drop")
    assert "no-new-privileges:true" in listing(vigil, "security_opt")
    assert scalar(block(vigil, "ulimits"), "core") == "0"
    assert scalar(vigil, "restart")
    assert scalar(vigil, "stop_grace_period")


def test_vigil_builds_from_the_repo(vigil):
    build = block(vigil, "build")
    assert scalar(build, "context") == ".."
    assert scalar(build, "dockerfile") == "deploy/Dockerfile"


def test_signal_api_has_no_new_privileges_and_no_core_dumps(signal_api):
    assert "no-new-privileges:true" in listing(signal_api, "security_opt")
    assert scalar(block(signal_api, "ulimits"), "core") == "0"


# --- Dockerfile -------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    joined, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        joined.append(buf + line)
        buf = ""
    out = []
    for instr in joined:
        word, _, rest = instr.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def runtime_stage() -> list[tuple[str, str]]:
    instrs = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instrs) if word == "FROM")
    return instrs[last_from:]


def test_dockerfile_bases_on_python_311_slim():
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            assert rest.split()[0].split("@")[0] == "python:3.11-slim"


def test_dockerfile_runs_as_non_root():
    users = [rest for word, rest in runtime_stage() if word == "USER"]
    assert users, "the runtime stage has no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_dockerfile_entrypoint_and_environment():
    stage = runtime_stage()
    assert json.loads(next(r for w, r in stage if w == "ENTRYPOINT")) == ["vigil"]
    assert json.loads(next(r for w, r in stage if w == "CMD")) == ["run"]
    env = {}
    for word, rest in stage:
        if word == "ENV":
            env.update(w.partition("=")[::2] for w in shlex.split(rest))
    assert env.get("VIGIL_DATA_DIR") == "/data"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    volumes = [r for w, r in stage if w == "VOLUME"]
    assert any("/data" in v for v in volumes)


def test_dockerfile_bakes_in_no_secret_and_no_dev_deps():
    for word, rest in dockerfile_instructions():
        if word in {"ENV", "ARG"}:
            assert not re.search(r"PASSPHRASE|TOKEN|SECRET", rest, re.IGNORECASE), rest
        if word in {"COPY", "ADD"}:
            sources = [s for s in rest.split()[:-1] if not s.startswith("--")]
            assert "." not in sources and "./" not in sources, "copies the whole context"
        if word == "RUN" and "pip install" in rest:
            assert "[dev]" not in rest and " -e " not in rest


# --- every deployment file and the guide ---------------------------------------------

TELEGRAM_TOKEN = re.compile(r"\b\d{6,12}:[A-Za-z0-9_-]{30,}\b")
SECRET_VALUE = re.compile(r"\bVIGIL_(?:PASSPHRASE|TELEGRAM_TOKEN)\s*[=:]\s*\S")
FAST_KDF = re.compile(r"\bVIGIL_INSECURE_FAST_KDF\s*[=:]")
PUBLISH = re.compile(r"(?:\s-p|--publish)[ =](\S+)")


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_no_plaintext_secrets(path):
    text = path.read_text()
    assert not TELEGRAM_TOKEN.search(text), "something that looks like a bot token"
    assert not SECRET_VALUE.search(text), "a secret given as a value, not as a *_FILE"
    assert not FAST_KDF.search(text), "the test-only cheap KDF switch"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_signal_api_port_is_only_ever_published_on_loopback(path):
    for spec in PUBLISH.findall(path.read_text()):
        if "8080" in spec:
            assert spec.startswith("127.0.0.1:"), f"publishes the API beyond loopback: {spec}"
