"""structlog set-up: JSON lines on stdout (or a readable console on a TTY), one place.

The level can change while the daemon runs (SIGHUP re-reads ``log_level``,
:func:`set_level`): loggers are cached on first use, so the level is not baked into their
class (structlog's filtering loggers) but checked by the first processor, against a value
this module keeps. The cost is one call per logged event, and nothing is logged per
envelope.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure", "set_level"]

#: Level names: the configurable ones (``log_level``) and structlog's method names.
_NAMES = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "warn": logging.WARNING, "error": logging.ERROR, "exception": logging.ERROR,
          "critical": logging.CRITICAL}
_threshold = logging.INFO


def set_level(level: str) -> None:
    """Log events of ``level`` and above from now on (``debug``, ``info``, ...)."""
    global _threshold
    _threshold = _NAMES[level]


def _by_level(logger: object, method: str, event: dict[str, object]) -> dict[str, object]:
    if _NAMES.get(method, logging.CRITICAL) < _threshold:
        raise structlog.DropEvent
    return event


def configure(level: str = "info", json: bool | None = None, role: str = "") -> None:
    if json is None:
        json = not sys.stdout.isatty()
    set_level(level)
    processors: list[structlog.typing.Processor] = [
        _by_level,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if role:
        processors.insert(1, _bind_role(role))
    renderer = (structlog.processors.JSONRenderer() if json
                else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )


def _bind_role(role: str) -> structlog.typing.Processor:
    def processor(logger: object, method: str, event: dict[str, object]) -> dict[str, object]:
        event.setdefault("role", role)
        return event

    return processor
