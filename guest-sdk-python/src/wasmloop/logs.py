"""The standard `logging` module mapped to the host's log: a record goes to stderr
as `LEVEL message`, which the host logs at that level with the request id, tenant
and app. The host's `--log-level` decides what is shown, so every level is passed.
"""

from __future__ import annotations

import logging
import sys

_LEVELS = {
    logging.CRITICAL: "ERROR",
    logging.ERROR: "ERROR",
    logging.WARNING: "WARN",
    logging.INFO: "INFO",
    logging.DEBUG: "DEBUG",
}


class HostHandler(logging.Handler):
    """Writes each record as one `LEVEL message` line per line of its text."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = _LEVELS.get(record.levelno)
            if level is None:
                level = "ERROR" if record.levelno > logging.ERROR else "DEBUG"
                for threshold in sorted(_LEVELS):
                    if record.levelno <= threshold:
                        level = _LEVELS[threshold]
                        break
            text = self.format(record)
            for line in text.splitlines() or [""]:
                sys.stderr.write(f"{level} {line}\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging never fails a request
            self.handleError(record)


_installed = False


def install() -> None:
    """Routes the root logger to the host, once."""
    global _installed
    if _installed:
        return
    _installed = True
    root = logging.getLogger()
    handler = HostHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
