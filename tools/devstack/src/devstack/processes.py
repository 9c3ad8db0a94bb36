"""Child processes in their own process group, with output to a log file, stopped for sure."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO


class StackError(RuntimeError):
    """Something the stack needs is missing or did not start; the message says which."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port the kernel picks for us (bind to 0) is an ephemeral one, which any outgoing connection may
    take before the process we give it to listens on it: seen with daprd, which listens on its gRPC
    port about ten seconds after it starts when a scheduler address is set (as `dapr run` sets it).
    Ports below the range are never used for outgoing connections."""
    low = 20000
    high = max(low + 1000, _ephemeral_range()[0])
    for _ in range(200):
        port = random.randrange(low, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise StackError(f"no free port between {low} and {high}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.1,
    alive: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``condition`` until true; StackError naming ``what`` on timeout or when ``alive`` reports a death."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if alive is not None and (death := alive()):
            raise StackError(f"{what}: {death}")
        time.sleep(interval)
    raise StackError(f"{what}: not ready after {timeout:.0f}s")


def die_with_parent() -> None:
    """In the child: ask Linux for SIGTERM when the launcher dies, even by SIGKILL (no orphans)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Process:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env or os.environ)
        self.cwd = cwd
        self._popen: subprocess.Popen | None = None

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab", buffering=0) as log:  # the child holds its own copy
            self._start(log)
        return self

    def _start(self, log: IO[bytes]) -> None:
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        except OSError as error:
            raise StackError(f"{self.name}: cannot start {self.argv[0]}: {error.strerror}") from None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def death(self) -> str | None:
        """None while running; otherwise how it ended and the end of its log."""
        if self._popen is None or self._popen.poll() is None:
            return None
        return f"{self.name} exited with code {self._popen.returncode}; last log lines:\n{self.tail()}"

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        if self._popen is None or self._popen.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self._popen.wait(5)
        # children (erlang's beam, uvicorn workers) share the group: make sure none is left
        self._signal(signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL, at once (a crash); waits until it is gone."""
        if self._popen is None or self._popen.poll() is not None:
            return
        self._signal(signal.SIGKILL)
        self._popen.wait(5)

    def _signal(self, sig: int) -> None:
        if self._popen is None:
            return
        try:
            os.killpg(self._popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
