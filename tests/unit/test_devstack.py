"""devstack's own helpers (the stack itself is exercised by the end-to-end tests)."""

from __future__ import annotations

import socket
import stat

import pytest

from devstack.brokers import private_file, redis_users
from devstack.processes import _ephemeral_range, free_port
from devstack.stack import clear_previous_run


def test_a_new_run_does_not_see_the_last_runs_logs(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "billable-proc.log").write_text("Data received: [1]\n")
    (tmp_path / "rabbitmq" / "mnesia").mkdir(parents=True)
    (tmp_path / "nr.db").write_bytes(b"old")
    (tmp_path / "tokens.env").write_text("APP_API_TOKEN=old")
    (tmp_path / "sentry" / "credentials").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("mine")
    clear_previous_run(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700  # its keys, tokens and passwords are the owner's


def test_free_ports_are_distinct_free_and_below_the_ephemeral_range():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(port < _ephemeral_range()[0] for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # free indeed


def test_private_files_are_the_owners_alone_from_the_start(tmp_path):
    path = private_file(tmp_path / "secrets" / "redis.conf", "requirepass x\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert private_file(path, "again\n").read_text() == "again\n"  # replaced, never appended to


def test_redis_users_get_their_passwords_and_nothing_else_of_the_template():
    text = redis_users({"default": "d-pw", "pubsub": "p-pw", "state": "s-pw"})
    lines = text.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["user", "default", "on"],
        ["user", "pubsub", "on"],
        ["user", "state", "on"],
    ]
    assert ">d-pw " in lines[0] and ">p-pw " in lines[1] and ">s-pw " in lines[2]
    assert "-@all" in lines[1] and "+@stream" in lines[1] and "~tenants" in lines[1]
    assert "-@all" in lines[2] and "+@stream" not in lines[2] and "~billable-proc||*" in lines[2]
    with pytest.raises(KeyError):
        redis_users({"default": "d"})
