"""The pinned ``daprd`` and Dapr CLI: found in ``~/.dapr/bin`` (where ``dapr init --slim`` puts daprd),
else installed by ``scripts/install-daprd.sh`` / ``scripts/install-dapr-cli.sh`` (official release, or a
build from the Go module proxy)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from devstack.processes import StackError

ROOT = Path(__file__).resolve().parents[4]


def pinned_version() -> str:
    return (ROOT / "dapr.version").read_text().strip()


def daprd_path() -> Path:
    return Path(os.environ.get("DAPR_BIN_DIR", Path.home() / ".dapr" / "bin")) / "daprd"


def installed_version(path: Path) -> str | None:
    if not os.access(path, os.X_OK):
        return None
    done = subprocess.run([str(path), "--version"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_daprd() -> tuple[Path, str]:
    """The daprd binary at the pinned version, installing it first if needed."""
    return _ensure("daprd", daprd_path(), pinned_version(), installed_version, "install-daprd.sh")


def _ensure(name: str, path: Path, version: str, installed: Callable[[Path], str | None], script: str) -> tuple[Path, str]:
    """``path`` at ``version``, running ``scripts/<script>`` first when it is not; StackError naming ``name``."""
    if installed(path) != version:
        script_path = ROOT / "scripts" / script
        if subprocess.run(["bash", str(script_path)]).returncode != 0:
            raise StackError(f"{name} {version} is missing and {script_path} could not install it (see its output)")
    found = installed(path)
    if found != version:
        raise StackError(f"{name} at {path} reports version {found!r}, expected {version}")
    return path, version


def dapr_cli_path() -> Path:
    return daprd_path().with_name("dapr")


def cli_pinned_version() -> str:
    return (ROOT / "dapr-cli.version").read_text().strip()


def cli_installed_version(path: Path) -> str | None:
    if not os.access(path, os.X_OK):
        return None
    done = subprocess.run([str(path), "--version"], capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("CLI version:"):
            return line.split(":", 1)[1].strip()
    return None


def ensure_dapr_cli() -> tuple[Path, str]:
    """The Dapr CLI at the pinned version (for ``dapr run -f .``), installing it first if needed."""
    return _ensure("the dapr CLI", dapr_cli_path(), cli_pinned_version(), cli_installed_version, "install-dapr-cli.sh")
