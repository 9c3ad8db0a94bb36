"""The multi-app run file (``dapr.yaml``, as read by ``dapr run -f``): the apps and their settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devstack.processes import StackError


@dataclass(frozen=True)
class AppSpec:
    app_id: str
    app_dir: Path
    app_port: int
    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunFile:
    root: Path
    resources_path: Path
    config_path: Path
    apps: tuple[AppSpec, ...]
    common_env: dict[str, str]

    def app(self, app_id: str) -> AppSpec:
        for spec in self.apps:
            if spec.app_id == app_id:
                return spec
        raise StackError(f"dapr.yaml has no app {app_id!r}")


def read_run_file(path: Path) -> RunFile:
    root = path.parent.resolve()
    document = yaml.safe_load(path.read_text())
    common = document.get("common") or {}
    apps = []
    for entry in document.get("apps") or []:
        apps.append(
            AppSpec(
                app_id=entry["appID"],
                app_dir=(root / entry.get("appDirPath", ".")).resolve(),
                app_port=int(entry.get("appPort", 0)),
                command=tuple(entry["command"]),
                env={key: str(value) for key, value in (entry.get("env") or {}).items()},
            )
        )
    return RunFile(
        root=root,
        resources_path=(root / common.get("resourcesPath", "components")).resolve(),
        config_path=(root / common.get("configFilePath", "components/config.yaml")).resolve(),
        apps=tuple(apps),
        common_env={key: str(value) for key, value in (common.get("env") or {}).items()},
    )
