"""The pinned ``daprd``, ``sentry`` and Dapr CLI in ``~/.dapr/bin`` (where ``dapr init --slim`` puts daprd),
installed by ``scripts/install-daprd.sh`` / ``scripts/install-dapr-cli.sh`` (official release checked
against its published sha256, or a build from the Go module proxy) when missing or not trusted.

A binary is trusted when the install record the scripts write beside it (``<binary>.install``) names the
pinned version and the binary's current sha256: one that was put there by hand, or changed since, is
installed again rather than run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from devstack.processes import StackError

ROOT = Path(__file__).resolve().parents[4]


def pinned_version() -> str:
    return (ROOT / "dapr.version").read_text().strip()


def cli_pinned_version() -> str:
    return (ROOT / "dapr-cli.version").read_text().strip()


def bin_dir() -> Path:
    return Path(os.environ.get("DAPR_BIN_DIR", Path.home() / ".dapr" / "bin"))


def daprd_path() -> Path:
    return bin_dir() / "daprd"


def sentry_path() -> Path:
    return bin_dir() / "sentry"


def dapr_cli_path() -> Path:
    return bin_dir() / "dapr"


def install_record(path: Path) -> dict[str, str]:
    """The ``key=value`` lines the install scripts wrote beside ``path``; empty when there is none."""
    try:
        lines = path.with_name(path.name + ".install").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as binary:
        for block in iter(lambda: binary.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def trusted_version(path: Path) -> str | None:
    """The version ``path`` was installed at, when its record matches its bytes; None otherwise."""
    record = install_record(path)
    if not os.access(path, os.X_OK) or not record.get("sha256"):
        return None
    return record.get("version") if record["sha256"] == sha256_of(path) else None


def installed_version(path: Path) -> str | None:
    """What a binary says of itself (``daprd --version``), for reports; trust is ``trusted_version``."""
    if not os.access(path, os.X_OK):
        return None
    done = subprocess.run([str(path), "--version"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_daprd() -> tuple[Path, str]:
    """The daprd binary at the pinned version, installing it (and sentry) first if needed."""
    return _ensure("daprd", daprd_path(), pinned_version(), "install-daprd.sh")


def ensure_sentry() -> tuple[Path, str]:
    """Dapr's certificate authority at the runtime's pinned version (installed with daprd)."""
    return _ensure("sentry", sentry_path(), pinned_version(), "install-daprd.sh")


def ensure_dapr_cli() -> tuple[Path, str]:
    """The Dapr CLI at the pinned version (for ``dapr run -f .``), installing it first if needed."""
    return _ensure("the dapr CLI", dapr_cli_path(), cli_pinned_version(), "install-dapr-cli.sh")


def _ensure(name: str, path: Path, version: str, script: str) -> tuple[Path, str]:
    """``path`` trusted at ``version``, running ``scripts/<script>`` first when it is not; StackError naming ``name``."""
    if trusted_version(path) != version:
        script_path = ROOT / "scripts" / script
        if subprocess.run(["bash", str(script_path)]).returncode != 0:
            raise StackError(f"{name} {version} is missing and {script_path} could not install it (see its output)")
    found = trusted_version(path)
    if found != version:
        raise StackError(
            f"{name} at {path} is not the one {script} installed at {version} "
            f"(install record: {install_record(path) or 'none'})"
        )
    return path, version
