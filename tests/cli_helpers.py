"""Running `.venv/bin/vigil` as an operator would, for the CLI, backup, keys and wipe tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.e2e import vigil_command
from tests.harness import PASSPHRASE


def vigil(
    *args: str,
    data_dir: Path,
    passphrase: str | None = PASSPHRASE,
    extra: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(VIGIL_DATA_DIR=str(data_dir), VIGIL_INSECURE_FAST_KDF="1", PYTHONUNBUFFERED="1")
    if passphrase is not None:
        env["VIGIL_PASSPHRASE"] = passphrase
    env.update(extra or {})
    return subprocess.run(
        [*vigil_command(), *args],
        env=env,
        cwd=cwd or data_dir.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2 with exactly one line on stderr starting 'vigil: ', never a traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vigil: "), result.stderr
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    if not directory.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
