"""structlog set-up: JSON lines on stdout (or a readable console on a TTY), one place."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure(level: str = "info", json: bool | None = None, role: str = "") -> None:
    if json is None:
        json = not sys.stdout.isatty()
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if role:
        processors.insert(0, _bind_role(role))
    renderer = (structlog.processors.JSONRenderer() if json
                else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )


def _bind_role(role: str) -> structlog.typing.Processor:
    def processor(logger: object, method: str, event: dict[str, object]) -> dict[str, object]:
        event.setdefault("role", role)
        return event

    return processor
