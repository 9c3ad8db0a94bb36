"""Fixtures of the deploy tier: rendered kustomize output and migrated original manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streaming_migrate import Migration, migrate_text
from tests.deploy.support import (
    DEPLOY,
    ORIGINAL_MANIFESTS,
    ROOT,
    copy_deploy_with_dev_secrets,
    kustomize_build,
)

SMALL_ORIGINAL = ROOT / "tests" / "data" / "original-manifests-small.yaml"
ODD_ORIGINAL = ROOT / "tests" / "data" / "original-manifests-odd.yaml"


@pytest.fixture(scope="session")
def base() -> list[dict[str, Any]]:
    return kustomize_build(DEPLOY / "base")


@pytest.fixture(scope="session")
def dev_deploy(tmp_path_factory) -> Path:
    """A copy of deploy/ whose dev overlay has its generated secrets (the repository's copy never does)."""
    return copy_deploy_with_dev_secrets(tmp_path_factory.mktemp("dev"))


@pytest.fixture(scope="session")
def dev(dev_deploy) -> list[dict[str, Any]]:
    return kustomize_build(dev_deploy / "overlays" / "dev")


@pytest.fixture(scope="session")
def migrated_power_usage() -> Migration:
    return migrate_text(ORIGINAL_MANIFESTS.read_text())


@pytest.fixture(scope="session")
def migrated_small() -> Migration:
    return migrate_text(SMALL_ORIGINAL.read_text(), registry="registry.example.com/pu", tag="1.2.3")


@pytest.fixture(scope="session")
def migrated_odd() -> Migration:
    return migrate_text(ODD_ORIGINAL.read_text())
