"""What the end-to-end and fault tiers share: a run file of part of dapr.yaml, and polling with a deadline."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

from devstack.stack import RunningApp, Stack

ROOT = Path(__file__).resolve().parents[2]


def run_file_of(app_ids: Iterable[str], run_dir: Path) -> Path:
    """A copy of dapr.yaml in ``run_dir`` with only these apps (its paths made absolute)."""
    keep = set(app_ids)
    spec = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    spec["common"] = {key: str(ROOT / value) for key, value in spec["common"].items()}
    spec["apps"] = [app for app in spec["apps"] if app["appID"] in keep]
    for app in spec["apps"]:
        app["appDirPath"] = str(ROOT / app["appDirPath"])
    path = run_dir / "dapr.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def death_of(running: RunningApp) -> str | None:
    """How an app or its sidecar ended (a sidecar's Go panic line first), None while both run."""
    if death := running.app.death():
        return death
    if death := running.sidecar.death():
        log = running.sidecar.log_path.read_text(errors="replace").splitlines()
        return "\n".join([line for line in log if line.startswith("panic:")][:1] + [death])
    return None


def poll(condition, timeout: float, what: str, stack: Stack, down: Iterable[str] = ()):
    """``condition``'s first true value within ``timeout``; fails at once when an app or a sidecar dies,
    but those of ``down`` (taken away by the test itself)."""
    taken_away = set(down)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        for app_id, running in stack.apps.items():
            if app_id not in taken_away and (death := death_of(running)):
                pytest.fail(death)
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout:.0f}s")
