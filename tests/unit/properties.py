"""What the unit tests' properties (hypothesis) share: their settings, and the fixed day the
rules that depend on the date (identifiers, declarations) are checked on."""

from __future__ import annotations

from datetime import date

from hypothesis import settings

__all__ = ["TODAY", "examples"]

#: The day the date-dependent rules are checked on, whatever the machine's clock says.
TODAY = date(2026, 6, 15)


def examples(count: int) -> settings:
    """Settings for a property checked on ``count`` generated examples; no deadline per
    example (the test machines are shared and slow at times)."""
    return settings(max_examples=count, deadline=None)
