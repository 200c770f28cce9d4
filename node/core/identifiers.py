"""Belgian unique keys: citizen numbers (INSZ/NISS) and enterprise numbers (KBO/BCE).

Pure logic: no I/O; the clock is read (``date.today()``) only when no ``today`` is passed and the
2000s formula is the one that matched.

Citizen number (11 digits, ``YYMMDD NNN CC``)
---------------------------------------------
* ``CC`` (check digits) = 97 - (first 9 digits mod 97) for people born before 2000, and
  97 - (int("2" + first 9 digits) mod 97) for people born in 2000 or later. A number is valid if
  either formula matches; the 2000s formula only counts if 2000+YY is not after ``today``'s year.
  The formula that matches tells the century (both can never match: 2*10**9 is not a multiple
  of 97). A remainder of 0 gives CC 97, so ``00`` is never valid.
* ``NNN`` (serial): odd = man, even = woman; ``000`` is not allowed.
* ``MM``: 00-12 for the population register; bis numbers (people not in the register) add 20
  (sex unknown) or 40 (sex known), so valid months are 00-12, 20-32 and 40-52.
* ``DD``: 00-31. Month 00 or day 00 means that part of the birth date is unknown. When both month
  and day are known the date must exist in the calendar (using the real month of a bis number and
  the century told by the check digits, so 29 February follows the leap-year rules).
* ``YY 00 01`` (date ``000001``, or ``002001``/``004001`` for bis numbers): wholly unknown birth
  date; birth year, month and day are then ``None`` (the century is still known).
* Caveat: the two formulas differ by 2*10**9 == 6*10**7 (mod 97), so changing the units digit of
  the year by 6 moves a number from one century to the other *with the same check digits*
  (01490700185, born 2001, and 07490700185, born 1907, are both valid). Every other single-digit
  error is caught.

Checks run in this order and the first failure is reported (stable ``reason`` codes):
``NOT_11_DIGITS``, ``CHECK_DIGITS``, ``BIRTH_YEAR_IN_FUTURE`` (only the 2000s formula matched and
2000+YY is in the future), ``MONTH_OUT_OF_RANGE``, ``DAY_OUT_OF_RANGE``, ``NOT_A_DATE``,
``SERIAL_ZERO``.

Enterprise number (10 digits; in :mod:`belgian_ids`, shared with :mod:`pki`, re-exported here)
-----------------------------------------------------------------------------------------------
* CC = 97 - (first 8 digits mod 97) (97 when the remainder is 0).
* First digit 0 or 1: an enterprise; 2-8: an establishment unit; 9 is not used.
* Reasons, in order: ``NOT_10_DIGITS``, ``UNIT_PREFIX_INVALID``, ``CHECK_DIGITS``.

Input forms: separators (spaces, dots, dashes) are stripped, so ``85.07.30-033.28`` and
``0403.019.261`` are accepted; enterprise numbers may carry a ``BE`` prefix. Any other character
is an error. Only ASCII digits count as digits.

``citizen_number_problem`` / ``enterprise_number_problem`` are the hot-path checks (per envelope):
they return ``None`` or a reason code, build no objects and raise nothing. Error messages never
repeat a citizen number (personal data ends up in logs); the raw input is on ``.value``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

from belgian_ids import (
    SEPARATORS as _SEPARATORS,
)
from belgian_ids import (
    EnterpriseNumber,
    IdentifierError,
    enterprise_check_digits,
    enterprise_number_problem,
    format_enterprise_number,
    parse_enterprise_number,
)

__all__ = [
    "CitizenNumber",
    "EnterpriseNumber",
    "IdentifierError",
    "citizen_check_digits",
    "citizen_number_problem",
    "enterprise_check_digits",
    "enterprise_number_problem",
    "format_enterprise_number",
    "parse_citizen_number",
    "parse_enterprise_number",
]

Sex = Literal["M", "F"]

_TWO_BILLION = 2_000_000_000
# Days per month in a non-leap year, index 1..12.
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# --------------------------------------------------------------------------------------------
# Citizen numbers


@dataclass(frozen=True, slots=True)
class CitizenNumber:
    """A validated citizen number and what it tells about the person."""

    number: str
    birth_year: int | None
    birth_month: int | None
    birth_day: int | None
    sex: Sex | None
    is_bis: bool
    century: int


def citizen_check_digits(first9: str, born_2000s: bool) -> str:
    """The two check digits for the first nine digits (``"01"``..``"97"``)."""
    if len(first9) != 9 or not (first9.isascii() and first9.isdigit()):
        raise ValueError("first9 must be exactly 9 ASCII digits")
    value = int(first9) + (_TWO_BILLION if born_2000s else 0)
    return f"{97 - value % 97:02d}"


def _digits(text: str, length: int) -> str | None:
    """``text`` without separators if it is exactly ``length`` ASCII digits, else None."""
    if len(text) != length or not (text.isascii() and text.isdigit()):
        text = text.translate(_SEPARATORS)
        if len(text) != length or not (text.isascii() and text.isdigit()):
            return None
    return text


def _century(n: str, today: date | None) -> int | str:
    """1900 or 2000 as told by the check digits, or a reason code."""
    first9 = int(n[:9])
    cc = int(n[9:])
    if cc == 97 - first9 % 97:
        return 1900
    if cc == 97 - (first9 + _TWO_BILLION) % 97:
        # Only now is the clock needed (date.today() costs more than the rest of the check).
        this_year = (today or date.today()).year
        return 2000 if 2000 + int(n[:2]) <= this_year else "BIRTH_YEAR_IN_FUTURE"
    return "CHECK_DIGITS"


def _date_problem(year: int, month: int, day: int) -> str | None:
    """Problem with (real) month 0-12 and day 0..99; 0 means unknown."""
    if day > 31:
        return "DAY_OUT_OF_RANGE"
    if month == 0 or day == 0:
        return None
    limit = _MONTH_DAYS[month]
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        limit = 29
    return "NOT_A_DATE" if day > limit else None


def _real_month(raw_month: int) -> int:
    """The calendar month (0 = unknown) of a raw month 00-52, or -1 when out of range."""
    if raw_month <= 12:
        return raw_month
    if 20 <= raw_month <= 32:
        return raw_month - 20
    if 40 <= raw_month <= 52:
        return raw_month - 40
    return -1


def _citizen_problem(n: str, today: date | None) -> str | None:
    century = _century(n, today)
    if isinstance(century, str):
        return century
    month = _real_month(int(n[2:4]))
    if month < 0:
        return "MONTH_OUT_OF_RANGE"
    problem = _date_problem(century + int(n[:2]), month, int(n[4:6]))
    if problem is not None:
        return problem
    if n[6:9] == "000":
        return "SERIAL_ZERO"
    return None


def citizen_number_problem(text: str, today: date | None = None) -> str | None:
    """``None`` if ``text`` is a valid citizen number, else the reason code. Never raises.

    Remembered per number (:func:`_citizen_problem_of`): the hub and the nodes check the same
    people's numbers over and over. ``today`` matters only for numbers of people born in the
    2000s, the only ones whose validity depends on the year; the daemons pass the date of
    their clock (once per batch), and without it the clock is read for those numbers."""
    try:
        problem = _remembered[text]
    except KeyError:
        if len(_remembered) >= _REMEMBER:
            _remembered.clear()
        problem = _remembered[text] = _citizen_problem_of(text)
    if not isinstance(problem, tuple):
        return problem
    birth_year, other = problem
    this_year = (today or date.today()).year
    return "BIRTH_YEAR_IN_FUTURE" if birth_year > this_year else other


#: text -> :func:`_citizen_problem_of`, emptied when full: a plain dict, so that a hit (nearly
#: every call, for the same people's numbers) is one lookup, with no LRU bookkeeping.
_remembered: dict[str, str | None | tuple[int, str | None]] = {}
_REMEMBER = 1 << 18


def _citizen_problem_of(text: str) -> str | None | tuple[int, str | None]:
    """:func:`_citizen_problem` in any year, or for a number of the 2000s (by its check
    digits) ``(birth year, the problem once that year has come)``."""
    n = _digits(text, 11)
    if n is None:
        return "NOT_11_DIGITS"
    first9, cc = int(n[:9]), int(n[9:])
    if cc != 97 - first9 % 97 and cc == 97 - (first9 + _TWO_BILLION) % 97:
        birth_year = 2000 + int(n[:2])
        return birth_year, _citizen_problem(n, date(birth_year, 12, 31))
    return _citizen_problem(n, date(2000, 1, 1))  # 1900s or wrong check digits: no year read


def parse_citizen_number(text: str, today: date | None = None) -> CitizenNumber:
    """Validate and decode a citizen number; raises ``IdentifierError``."""
    n = _digits(text, 11)
    if n is None:
        raise IdentifierError("NOT_11_DIGITS", text)
    if today is None:
        today = date.today()  # one clock read for both checks below
    problem = _citizen_problem(n, today)
    if problem is not None:
        raise IdentifierError(problem, text)
    century = _century(n, today)
    assert isinstance(century, int)
    raw_month = int(n[2:4])
    month = _real_month(raw_month)
    day = int(n[4:6])
    is_bis = raw_month > 12
    sex: Sex | None = None
    if raw_month < 20 or raw_month >= 40:
        sex = "M" if int(n[6:9]) % 2 else "F"
    if n[:2] == "00" and month == 0 and day == 1:  # wholly unknown birth date
        return CitizenNumber(n, None, None, None, sex, is_bis, century)
    return CitizenNumber(
        number=n,
        birth_year=century + int(n[:2]),
        birth_month=month or None,
        birth_day=day or None,
        sex=sex,
        is_bis=is_bis,
        century=century,
    )
