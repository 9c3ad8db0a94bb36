"""One logging set-up for every service: timestamped lines on stdout, key=value details."""

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y/%m/%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # uvicorn's access log repeats every delivery; keep it for debugging only
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def printable(value: object, limit: int = 200) -> str:
    """A value as one log field: control characters and non-ASCII escaped, so that text from an event
    (an id, a reason quoting it) cannot start a line of its own; cut at ``limit`` characters."""
    text = "(none)" if value is None else str(value)
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[:limit] + f"...({len(text) - limit} more)"


class ErrorReport:
    """Unexpected errors (our bugs, met on some input) logged without flooding: the first of each kind
    (exception type and where it was met) with its traceback, later ones as one line at most every
    ``every`` seconds with the number since; all of them counted in ``counts``."""

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self.logger = logger
        self.every = every
        self.counts: dict[str, int] = {}
        self._last: dict[str, tuple[float, int]] = {}

    def __call__(self, where: str, error: BaseException, detail: str = "") -> None:
        import time

        kind = f"{where}: {type(error).__name__}"
        self.counts[kind] = self.counts.get(kind, 0) + 1
        message = f"unexpected error in {where}: {type(error).__name__}: {printable(error)}"
        if detail:
            message += f" ({printable(detail)})"
        now = time.monotonic()
        if kind not in self._last:
            self._last[kind] = (now, self.counts[kind])
            self.logger.error("%s; first of its kind, traceback follows", message, exc_info=error)
        elif now - self._last[kind][0] >= self.every:
            since = self.counts[kind] - self._last[kind][1]
            self._last[kind] = (now, self.counts[kind])
            self.logger.error("%s; %d of this kind since the last line", message, since)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class LogBudget:
    """Lines that input can cause (a dropped event each), logged without flooding: per ``key`` at most
    ``burst`` lines every ``period`` seconds; past that they are counted, and the first line of the next
    period says how many were left out. Counters (``/stats``) count every one; the log samples them."""

    def __init__(self, logger: logging.Logger, burst: int = 20, period: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self._spent: dict[str, tuple[float, int, int]] = {}  # key -> (period start, lines logged, left out)

    def warning(self, key: str, message: str, *args: object) -> None:
        import time

        now = time.monotonic()
        start, logged, left_out = self._spent.get(key, (now, 0, 0))
        if now - start >= self.period:
            if left_out:
                self.logger.warning(
                    "%d more like the lines above (%s) were not logged in %.0fs; all are counted",
                    left_out,
                    key,
                    now - start,
                )
            start, logged, left_out = now, 0, 0
        if logged < self.burst:
            self.logger.warning(message, *args, stacklevel=2)  # the line names the caller, not this class
            logged += 1
        else:
            left_out += 1
        self._spent[key] = (start, logged, left_out)
