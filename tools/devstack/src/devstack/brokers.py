"""Private Redis and RabbitMQ servers for one run, on free loopback ports (Kafka: :mod:`devstack.kafka`).

Missing servers are installed from Debian's packages (``redis-server``, ``rabbitmq-server``)
when running as root with apt-get available; otherwise the error says what to install.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from devstack.processes import Process, StackError, free_port, port_open, wait_until

ROOT = Path(__file__).resolve().parents[4]
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
REDIS_USERS = ROOT / "deploy" / "base" / "brokers" / "redis-users.acl"


def ensure_debian_package(binary: str, package: str) -> str:
    found = shutil.which(binary) or (binary if os.path.exists(binary) else None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise StackError(f"{binary} is missing: install the Debian package {package} (apt-get install {package})")
    print(f"[devstack] installing {package} from Debian's packages", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
    found = shutil.which(binary) or (binary if os.path.exists(binary) else None)
    if not found:
        raise StackError(f"{package} installed but {binary} is still missing")
    return found


@dataclass
class Broker:
    """A broker for the run: one we started (``process``), or one configured outside (``None``)."""

    process: Process | None
    host: str
    port: int
    url: str
    # what the components read through the local-env secret store (POWER_USAGE_<name>)
    secrets: dict[str, str] = field(default_factory=dict)
    admin_password: str = ""  # Redis' default user (redis-cli in tests and by hand)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """kill -9 (a crash: what it did not write is gone); only a broker we started."""
        if self.process is None:
            raise StackError("a broker configured outside the stack cannot be killed by it")
        self.process.kill()

    def restart(self, timeout: float = 90) -> None:
        """Start a killed broker again on the same port and data; returns once it listens."""
        if self.process is None:
            raise StackError("a broker configured outside the stack cannot be restarted by it")
        self.process.start()
        wait_until(
            lambda: port_open(self.port),
            timeout,
            f"{self.process.name} restarted",
            interval=0.25,
            alive=self.process.death,
        )


def configured_redis() -> Broker | None:
    """``REDIS_HOST=host:port`` (and ``REDIS_PASSWORD``, of its default user) in the environment: use that
    server instead of a private one."""
    address = os.environ.get("REDIS_HOST")
    if not address:
        return None
    host, _, port = address.rpartition(":")
    password = os.environ.get("REDIS_PASSWORD", "")
    secrets_ = redis_secrets(address, {"pubsub": ("", password), "state": ("", password)})
    return Broker(None, host or "127.0.0.1", int(port or 6379), address, secrets_, password)


def redis_secrets(address: str, users: dict[str, tuple[str, str]]) -> dict[str, str]:
    """What the Redis components read (components/*.yaml): the address, and per component user (pubsub,
    state) its name and password; an empty name is Redis' default user."""
    found = {"REDIS_HOST": address}
    for role, (name, password) in users.items():
        found |= {f"REDIS_{role.upper()}_USERNAME": name, f"REDIS_{role.upper()}_PASSWORD": password}
    return found


def configured_rabbitmq() -> Broker | None:
    """``RABBITMQ_URL=amqp://user:pass@host:port`` in the environment: use that server."""
    url = os.environ.get("RABBITMQ_URL")
    if not url:
        return None
    parsed = urlsplit(url)
    return Broker(None, parsed.hostname or "127.0.0.1", parsed.port or 5672, url, {"RABBITMQ_URL": url})


def private_file(path: Path, text: str) -> Path:
    """``text`` in a file only the owner can read, created so (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write(text)
    return path


def redis_users(passwords: dict[str, str], template: Path = REDIS_USERS) -> str:
    """The ACL file of Redis' users (deploy/base/brokers/redis-users.acl), each ``{user}`` given its password."""
    lines = [line for line in template.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return "\n".join(lines).format(**passwords) + "\n"


def start_redis(run_dir: Path) -> Broker:
    """A private redis-server on loopback, with its users of least privilege (the pub/sub's, the state
    stores') and passwords generated for this run. The settings are in files only the owner can read: a
    password on the command line is visible to every user in ``ps``."""
    binary = ensure_debian_package("redis-server", "redis-server")
    port = free_port()
    passwords = {user: secrets.token_urlsafe(24) for user in ("default", "pubsub", "state")}
    data = run_dir / "redis"
    users = private_file(data / "users.acl", redis_users(passwords))
    config = private_file(
        data / "redis.conf",
        "\n".join(
            [
                f"port {port}",
                "bind 127.0.0.1",
                "protected-mode yes",
                f"aclfile {users}",
                # appendonly: what Redis acknowledged survives a kill -9 (streams, the joiner's handover), as in deploy/
                'save ""',
                "appendonly yes",
                "appendfsync everysec",
                f"dir {data}",
            ]
        )
        + "\n",
    )
    process = Process("redis", [binary, str(config)], run_dir / "logs" / "redis.log").start()
    try:
        wait_until(lambda: port_open(port), 20, "redis-server", alive=process.death)
    except StackError:
        process.stop()
        raise
    address = f"127.0.0.1:{port}"
    secrets_ = redis_secrets(address, {user: (user, passwords[user]) for user in ("pubsub", "state")})
    return Broker(process, "127.0.0.1", port, address, secrets_, passwords["default"])


def start_rabbitmq(run_dir: Path) -> Broker:
    ensure_debian_package(RABBITMQ_SERVER, "rabbitmq-server")
    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    home = run_dir / "rabbitmq"
    home.mkdir(parents=True, exist_ok=True)
    (home / "enabled_plugins").write_text("[].\n")
    # a user and password generated for this run, in place of guest/guest; not an administrator
    user, password = f"power-usage-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    private_file(
        home / "rabbitmq.conf",
        "\n".join(
            [
                f"listeners.tcp.1 = 127.0.0.1:{port}",
                f"default_user = {user}",
                f"default_pass = {password}",
                "default_user_tags.administrator = false",
                "loopback_users.guest = true",
            ]
        )
        + "\n",
    )
    env = {
        **os.environ,
        "HOME": str(home),  # the Erlang cookie lives here
        "RABBITMQ_NODENAME": f"devstack{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        # the node's distribution port takes every interface unless told otherwise
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
        "RABBITMQ_LOGS": "-",
    }
    process = Process("rabbitmq", [RABBITMQ_SERVER], run_dir / "logs" / "rabbitmq.log", env=env).start()
    try:
        wait_until(lambda: port_open(port), 90, "rabbitmq-server", interval=0.25, alive=process.death)
    except StackError:
        _stop_rabbitmq(process, epmd_port)
        raise
    url = f"amqp://{user}:{password}@127.0.0.1:{port}"
    broker = Broker(process, "127.0.0.1", port, url, {"RABBITMQ_URL": url})
    broker.stop = lambda: _stop_rabbitmq(process, epmd_port)  # type: ignore[method-assign]
    return broker


def _stop_rabbitmq(process: Process, epmd_port: int) -> None:
    process.stop()
    # the node started its own epmd on a private port; it outlives the node unless told to go
    epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
    if os.path.exists(epmd):
        subprocess.run(
            [epmd, "-port", str(epmd_port), "-kill"],
            capture_output=True,
            env={**os.environ, "ERL_EPMD_PORT": str(epmd_port)},
        )
