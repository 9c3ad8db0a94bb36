"""What the replay writes: windows and late events as JSON lines (msgspec, else Python's json), gathered
into large writes, times in RFC 3339."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import IO, Any, TextIO

import msgspec

from joiner.core import LateEvent
from joiner.engine.windows import Window

OUTPUT_BYTES = 1 << 20  # written when this much has gathered

_ENCODE = msgspec.json.Encoder().encode


def dumps(record: Any) -> bytes:
    try:
        return _ENCODE(record)
    except (TypeError, ValueError, OverflowError):  # what msgspec cannot write (a key that is not text)
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


class Lines:
    """Lines written to ``out`` in large writes: as bytes to its binary buffer where it has one (stdout, a
    file), so that a window's line, megabytes long, is not copied into text and back."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.binary: IO[bytes] | None = getattr(out, "buffer", None)
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, line: bytes) -> None:
        self.parts.append(line)
        self.parts.append(b"\n")
        self.size += len(line)
        if self.size >= OUTPUT_BYTES:
            self.flush()

    def text(self, line: str) -> None:
        self.add(line.encode())

    def flush(self) -> None:
        if self.parts:
            parts, self.parts, self.size = self.parts, [], 0
            if self.binary is not None:
                self.out.flush()  # what was written as text before goes first
                self.binary.writelines(parts)
                self.binary.flush()
            else:
                self.out.write(b"".join(parts).decode())
        self.out.flush()


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


def window_line(window: Window, rows: list[Any]) -> bytes:
    return dumps(
        {"window_start": rfc3339(window.start), "window_end": rfc3339(window.end), "window_id": window.id, "rows": rows}
    )


def late_record(late: LateEvent) -> dict[str, Any]:
    record = late.as_record()
    record["window_start"], record["window_end"] = rfc3339(late.window.start), rfc3339(late.window.end)
    return record
