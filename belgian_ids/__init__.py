"""Belgian unique keys that both :mod:`node` and :mod:`pki` need: the identifier error (with
the stable reason codes and messages of every identifier check) and enterprise numbers
(KBO/BCE). Pure, standard library only; it imports neither ``node`` nor ``pki``, so that
``pki`` can check the enterprise number in an institution's identity without importing
``node``. :mod:`node.core.identifiers` re-exports these names next to citizen numbers and
documents the rules.

Enterprise number (10 digits): CC = 97 - (first 8 digits mod 97) (97 when the remainder is
0); first digit 0 or 1: an enterprise, 2-8: an establishment unit, 9 is not used. Reasons, in
order: ``NOT_10_DIGITS``, ``UNIT_PREFIX_INVALID``, ``CHECK_DIGITS``. Separators (spaces, dots,
dashes) and a ``BE`` prefix are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MESSAGES",
    "SEPARATORS",
    "EnterpriseNumber",
    "IdentifierError",
    "enterprise_check_digits",
    "enterprise_number_problem",
    "format_enterprise_number",
    "parse_enterprise_number",
]

#: Separators accepted in written numbers (stripped before checking).
SEPARATORS = str.maketrans("", "", " .-")

#: Reason code -> message, for every identifier check (citizen numbers too).
MESSAGES: dict[str, str] = {
    "NOT_11_DIGITS": "a citizen number has exactly 11 digits (separators . - and spaces allowed)",
    "CHECK_DIGITS": "check digits do not match (97 - first digits mod 97)",
    "BIRTH_YEAR_IN_FUTURE": "check digits only match a birth year in the future",
    "MONTH_OUT_OF_RANGE": "birth month must be 00-12, 20-32 or 40-52 (bis numbers)",
    "DAY_OUT_OF_RANGE": "birth day must be 00-31",
    "NOT_A_DATE": "birth date does not exist in the calendar",
    "SERIAL_ZERO": "serial number 000 is not allowed",
    "NOT_10_DIGITS": "an enterprise number has exactly 10 digits (optional BE prefix, . - spaces)",
    "UNIT_PREFIX_INVALID": "an enterprise number starts with 0 or 1, an establishment unit 2-8",
}


class IdentifierError(ValueError):
    """An identifier failed validation; ``reason`` is a stable UPPER_SNAKE code."""

    def __init__(self, reason: str, value: str, message: str | None = None) -> None:
        self.reason = reason
        self.value = value
        self.message = message or MESSAGES.get(reason, reason)
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.message} [{self.reason}]"


# --------------------------------------------------------------------------------------------
# Enterprise numbers


@dataclass(frozen=True, slots=True)
class EnterpriseNumber:
    """A validated enterprise (or establishment unit) number, 10 digits."""

    number: str
    is_establishment_unit: bool

    def __str__(self) -> str:
        return format_enterprise_number(self)


def enterprise_check_digits(first8: str) -> str:
    """The two check digits for the first eight digits (``"01"``..``"97"``)."""
    if len(first8) != 8 or not (first8.isascii() and first8.isdigit()):
        raise ValueError("first8 must be exactly 8 ASCII digits")
    return f"{97 - int(first8) % 97:02d}"


def _enterprise_digits(text: str) -> str | None:
    if len(text) == 10 and text.isascii() and text.isdigit():
        return text
    text = text.translate(SEPARATORS)
    if text[:2].upper() == "BE":
        text = text[2:]
    return text if len(text) == 10 and text.isascii() and text.isdigit() else None


def _enterprise_problem(n: str) -> str | None:
    if n[0] == "9":
        return "UNIT_PREFIX_INVALID"
    if int(n[8:]) != 97 - int(n[:8]) % 97:
        return "CHECK_DIGITS"
    return None


def enterprise_number_problem(text: str) -> str | None:
    """``None`` if ``text`` is a valid enterprise number, else the reason code. Never raises."""
    n = _enterprise_digits(text)
    if n is None:
        return "NOT_10_DIGITS"
    return _enterprise_problem(n)


def parse_enterprise_number(text: str) -> EnterpriseNumber:
    """Validate an enterprise number (``0403019261``, ``0403.019.261``, ``BE0403019261``)."""
    n = _enterprise_digits(text)
    if n is None:
        message = f"invalid enterprise number {text!r}: {MESSAGES['NOT_10_DIGITS']}"
        raise IdentifierError("NOT_10_DIGITS", text, message)
    problem = _enterprise_problem(n)
    if problem == "CHECK_DIGITS":
        raise IdentifierError(
            problem,
            text,
            f"invalid enterprise number {text!r}: mod-97 check digits do not match "
            f"(97 - first 8 digits mod 97 = {enterprise_check_digits(n[:8])}, got {n[8:]})",
        )
    if problem is not None:
        raise IdentifierError(
            problem, text, f"invalid enterprise number {text!r}: {MESSAGES[problem]}"
        )
    return EnterpriseNumber(number=n, is_establishment_unit=n[0] not in "01")


def format_enterprise_number(n: EnterpriseNumber | str) -> str:
    """The usual written form, ``0403.019.261``; a string is parsed (and validated) first."""
    digits = n.number if isinstance(n, EnterpriseNumber) else parse_enterprise_number(n).number
    return f"{digits[:4]}.{digits[4:7]}.{digits[7:]}"
