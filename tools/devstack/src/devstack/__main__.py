"""``python -m devstack run``: the whole pipeline until Ctrl-C, billable-proc's lines on the terminal."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from devstack.processes import StackError
from devstack.stack import Stack, say

ROOT = Path(__file__).resolve().parents[4]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start everything and stream billable-proc's 'Data received' lines")
    run.add_argument("--run-file", type=Path, default=ROOT / "dapr.yaml")
    run.add_argument("--run-dir", type=Path, default=ROOT / ".devstack" / "last-run")
    run.add_argument("--window", help="override the joiner's window (e.g. 5s)")
    run.add_argument(
        "--joiner-replicas",
        type=int,
        default=1,
        help="run the joiner as N replicas (join-tenants-poweruse-0..N-1, docs/scaling.md)",
    )
    run.add_argument(
        "--streams-on",
        choices=("redis+rabbitmq", "kafka"),
        default="redis+rabbitmq",
        help="the brokers of the two streams: Redis and RabbitMQ (the example's), or one Kafka (docs/scaling.md)",
    )
    commands.add_parser(
        "install",
        help="install what is missing: daprd, sentry and the dapr CLI (pinned), redis-server, rabbitmq-server",
    )
    commands.add_parser(
        "sentry", help="for `dapr run -f .`: sentry on localhost:50001 until Ctrl-C, and the exports the run needs"
    )
    args = parser.parse_args(argv)
    if args.command == "install":
        return install()
    if args.command == "sentry":
        return sentry_for_the_cli()

    # Ctrl-C and SIGTERM both end the loop below; the Stack's exit stops every process
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    overrides = {"join-tenants-poweruse": {"JOINER_WINDOW_SIZE": args.window}} if args.window else {}
    try:
        with Stack(
            args.run_file, args.run_dir, overrides, joiner_replicas=args.joiner_replicas, streams_on=args.streams_on
        ) as stack:
            proc = stack.apps["billable-proc"]
            say(
                f"all up; logs in {args.run_dir / 'logs'}, the run's API tokens in {args.run_dir / 'tokens.env'}; "
                "billable rows follow (Ctrl-C stops everything)"
            )
            say(f"dashboard: {dashboard_url(proc.app_port)} (live billing and pipeline health)")
            readiness = ReadinessWatch(stack.apps[stack.instances_of("join-tenants-poweruse")[0]])
            follow(proc.app.log_path, "Data received", lambda: proc.app.death() or proc.sidecar.death(), readiness)
    except KeyboardInterrupt:
        say("stopping")
        return 0
    except StackError as error:
        say(f"error: {error}")
        return 1
    return 0


def dashboard_url(app_port: int) -> str:
    """billable-proc's dashboard (message_proc.dashboard), on its app port: open without the app token."""
    return f"http://127.0.0.1:{app_port}/dashboard"


def sentry_for_the_cli() -> int:
    """`dapr run` gives every sidecar ``--sentry-address localhost:50001`` when the Configuration has mTLS on:
    run sentry there, its keys and the name-resolution database in ``.dapr/`` (0700) of the project."""
    import secrets

    from devstack.sentry import start_sentry

    private = ROOT / ".dapr"
    private.mkdir(mode=0o700, exist_ok=True)
    private.chmod(0o700)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        sentry = start_sentry(private, port=50001)
    except StackError as error:
        say(f"error: {error} (is port 50001 taken?)")
        return 1
    try:
        anchors = sentry.credentials / "ca.crt"
        say(f"sentry on {sentry.address}; in the shell that runs `dapr run -f .`:")
        print(f'export DAPR_TRUST_ANCHORS="$(cat {anchors})"')
        print(
            f"export DAPR_API_TOKEN={secrets.token_urlsafe(32)} APP_API_TOKEN={secrets.token_urlsafe(32)}", flush=True
        )
        while (death := sentry.process.death()) is None:
            time.sleep(0.5)
        say(f"error: {death}")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        sentry.stop()


def install() -> int:
    from devstack.brokers import RABBITMQ_SERVER, ensure_debian_package
    from devstack.daprd import ensure_dapr_cli, ensure_daprd, ensure_sentry

    try:
        path, version = ensure_daprd()
        say(f"daprd {version} at {path}")
        path, version = ensure_sentry()
        say(f"sentry {version} at {path}")
        path, version = ensure_dapr_cli()
        say(f"dapr CLI {version} at {path}")
        say(f"redis-server at {ensure_debian_package('redis-server', 'redis-server')}")
        say(f"rabbitmq-server at {ensure_debian_package(RABBITMQ_SERVER, 'rabbitmq-server')}")
    except StackError as error:
        say(f"error: {error}")
        return 1
    return 0


class ReadinessWatch:
    """Says when the joiner turns unready (deliveries failing, windows parked) and when it is ready again."""

    def __init__(self, joiner, every: float = 5.0) -> None:
        self.joiner = joiner
        self.every = every
        self.next_check = time.monotonic() + every
        self.problems: list[str] = []

    def __call__(self) -> None:
        if time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + self.every
        try:
            answer = self.joiner.get("/readyz")
            problems = (
                [] if answer.status_code == 200 else answer.json().get("problems", [f"HTTP {answer.status_code}"])
            )
        except Exception as error:  # noqa: BLE001 - a slow answer is reported, it stops nothing
            problems = [f"/readyz did not answer: {error}"]
        if problems != self.problems:
            say("joiner ready again" if not problems else "joiner NOT ready: " + "; ".join(problems))
            self.problems = problems


def follow(path: Path, marker: str, dead, idle=lambda: None) -> None:
    with open(path, errors="replace") as log:
        while True:
            line = log.readline()
            if line:
                if marker in line:
                    print(line.rstrip("\n"), flush=True)
                continue
            if death := dead():
                raise StackError(death)
            idle()
            time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
