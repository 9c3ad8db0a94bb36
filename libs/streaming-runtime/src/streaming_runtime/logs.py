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
