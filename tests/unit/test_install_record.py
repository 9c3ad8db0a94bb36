"""scripts/install-record.sh and devstack.daprd: what the install scripts trust in ~/.dapr/bin, and how a
release archive is checked against the sha256 Dapr publishes beside it (file:// URLs stand in for the
release server, which curl reads the same way)."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from pathlib import Path

import pytest

from devstack.daprd import install_record, trusted_version

ROOT = Path(__file__).resolve().parents[2]


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f". {ROOT / 'scripts' / 'install-record.sh'}; {script}"], capture_output=True, text=True, cwd=cwd
    )


def archive(tmp_path: Path) -> Path:
    binary = tmp_path / "daprd"
    binary.write_text("#!/bin/sh\necho 1.18.2\n")
    path = tmp_path / "daprd_linux_amd64.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(binary, arcname="daprd")
    return path


def test_a_release_archive_is_taken_when_its_sha256_matches_the_published_one(tmp_path):
    path = archive(tmp_path)
    (tmp_path / f"{path.name}.sha256").write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    done = bash(f"download_verified file://{path} out.tgz && echo taken", tmp_path)
    assert done.stdout.strip() == "taken", done.stderr
    assert (tmp_path / "out.tgz").read_bytes() == path.read_bytes()


def test_a_release_archive_whose_sha256_differs_stops_the_install(tmp_path):
    path = archive(tmp_path)
    (tmp_path / f"{path.name}.sha256").write_text("0" * 64 + f"  {path.name}\n")
    done = bash(f"download_verified file://{path} out.tgz; echo went-on", tmp_path)
    assert done.returncode == 1 and "went-on" not in done.stdout
    assert "does not match the published" in done.stderr


@pytest.mark.parametrize("missing", ["archive", "checksum"])
def test_an_unreachable_release_falls_back_to_the_build(tmp_path, missing):
    path = archive(tmp_path)
    if missing == "archive":
        path.unlink()
    done = bash(f"download_verified file://{path} out.tgz || echo fall-back", tmp_path)
    assert done.stdout.strip() == "fall-back", done.stderr


def test_an_installed_binary_is_trusted_until_its_bytes_change(tmp_path):
    built = tmp_path / "built"
    built.write_text("#!/bin/sh\n")
    target = tmp_path / "bin" / "daprd"
    target.parent.mkdir()
    done = bash(f"install_recorded {built} {target} 1.18.2 build && trusted {target} 1.18.2 && echo trusted", tmp_path)
    assert done.stdout.strip() == "trusted", done.stderr
    assert install_record(target)["source"] == "build"
    assert trusted_version(target) == "1.18.2"
    assert bash(f"trusted {target} 1.18.3 || echo other-version", tmp_path).stdout.strip() == "other-version"
    target.write_text("#!/bin/sh\necho changed\n")  # replaced behind the scripts' back
    assert bash(f"trusted {target} 1.18.2 || echo untrusted", tmp_path).stdout.strip() == "untrusted"
    assert trusted_version(target) is None


def test_a_binary_without_a_record_is_not_trusted(tmp_path):
    binary = tmp_path / "daprd"
    binary.write_text("#!/bin/sh\necho 1.18.2\n")
    binary.chmod(0o755)
    assert trusted_version(binary) is None
    assert bash(f"trusted {binary} 1.18.2 || echo untrusted", tmp_path).stdout.strip() == "untrusted"
