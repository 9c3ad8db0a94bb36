"""devstack's own helpers (the stack itself is exercised by the end-to-end tests)."""

from __future__ import annotations

import socket

from devstack.processes import _ephemeral_range, free_port
from devstack.stack import clear_previous_run


def test_a_new_run_does_not_see_the_last_runs_logs(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "billable-proc.log").write_text("Data received: [1]\n")
    (tmp_path / "rabbitmq" / "mnesia").mkdir(parents=True)
    (tmp_path / "nr.db").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    clear_previous_run(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


def test_free_ports_are_distinct_free_and_below_the_ephemeral_range():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(port < _ephemeral_range()[0] for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # free indeed
