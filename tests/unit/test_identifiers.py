"""Citizen numbers (INSZ/NISS) and enterprise numbers (KBO/BCE): examples and properties."""

from __future__ import annotations

import calendar
from dataclasses import FrozenInstanceError
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.core.identifiers import (
    CitizenNumber,
    EnterpriseNumber,
    IdentifierError,
    citizen_check_digits,
    citizen_number_problem,
    enterprise_check_digits,
    enterprise_number_problem,
    format_enterprise_number,
    parse_citizen_number,
    parse_enterprise_number,
)
from tests.unit.properties import TODAY, examples

PROPERTY = examples(300)

# --------------------------------------------------------------------------------------------
# Citizen numbers: the examples from the domain notes


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("85073003328", CitizenNumber("85073003328", 1985, 7, 30, "M", False, 1900)),
        ("17073003384", CitizenNumber("17073003384", 2017, 7, 30, "M", False, 2000)),
        ("70010108997", CitizenNumber("70010108997", 1970, 1, 1, "M", False, 1900)),
        ("98472899765", CitizenNumber("98472899765", 1998, 7, 28, "M", True, 1900)),
        ("01490700185", CitizenNumber("01490700185", 2001, 9, 7, "M", True, 2000)),
        ("00000100166", CitizenNumber("00000100166", None, None, None, "M", False, 1900)),
    ],
)
def test_valid_examples(number: str, expected: CitizenNumber) -> None:
    assert parse_citizen_number(number, today=TODAY) == expected
    assert citizen_number_problem(number, today=TODAY) is None


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("85073003327", "CHECK_DIGITS"),
        ("12345678901", "CHECK_DIGITS"),
        ("85133000105", "MONTH_OUT_OF_RANGE"),
    ],
)
def test_invalid_examples(number: str, reason: str) -> None:
    assert citizen_number_problem(number, today=TODAY) == reason
    with pytest.raises(IdentifierError) as info:
        parse_citizen_number(number, today=TODAY)
    assert info.value.reason == reason
    assert info.value.value == number


def test_check_digits_97_case_and_never_00() -> None:
    assert citizen_check_digits("700101089", born_2000s=False) == "97"
    assert citizen_number_problem("70010108900", today=TODAY) == "CHECK_DIGITS"
    assert enterprise_check_digits("04287594") == "97"
    assert enterprise_number_problem("0428759400") == "CHECK_DIGITS"


def test_separators_are_accepted_and_normalized() -> None:
    for text in ("85.07.30-033.28", "85 07 30 033 28", "850730-03328"):
        assert parse_citizen_number(text, today=TODAY).number == "85073003328"
        assert citizen_number_problem(text, today=TODAY) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "8507300332",
        "850730033281",
        "85O73003328",  # letter O
        "85/07/30/033/28",
        "\t85073003328",
        "+85073003328",
        "٨٥٠٧٣٠٠٣٣٢٨",  # Arabic-Indic digits: str.isdigit() but not ASCII
        "８５０７３０００３３２８",  # fullwidth digits
    ],
)
def test_not_eleven_ascii_digits(text: str) -> None:
    assert citizen_number_problem(text, today=TODAY) == "NOT_11_DIGITS"
    with pytest.raises(IdentifierError, match="11 digits") as info:
        parse_citizen_number(text, today=TODAY)
    assert info.value.reason == "NOT_11_DIGITS"


def _number(yymmdd: str, serial: str = "001", born_2000s: bool = False) -> str:
    first9 = yymmdd + serial
    return first9 + citizen_check_digits(first9, born_2000s)


@pytest.mark.parametrize(
    ("yymmdd", "born_2000s", "reason"),
    [
        ("851301", False, "MONTH_OUT_OF_RANGE"),
        ("851901", False, "MONTH_OUT_OF_RANGE"),
        ("853301", False, "MONTH_OUT_OF_RANGE"),
        ("853901", False, "MONTH_OUT_OF_RANGE"),
        ("855301", False, "MONTH_OUT_OF_RANGE"),
        ("859901", False, "MONTH_OUT_OF_RANGE"),
        ("850732", False, "DAY_OUT_OF_RANGE"),
        ("850099", False, "DAY_OUT_OF_RANGE"),
        ("850231", False, "NOT_A_DATE"),
        ("850431", False, "NOT_A_DATE"),
        ("852230", False, "NOT_A_DATE"),  # bis (+20): February 30
        ("854431", False, "NOT_A_DATE"),  # bis (+40): April 31
        ("000229", False, "NOT_A_DATE"),  # 1900 was not a leap year
        ("840229", False, None),
        ("000229", True, None),  # 2000 was
        ("004229", True, None),  # bis, 2000, 29 February
        ("850031", False, None),  # month unknown, day known
        ("851200", False, None),  # day unknown
        ("850000", False, None),  # both unknown
    ],
)
def test_month_and_day_rules(yymmdd: str, born_2000s: bool, reason: str | None) -> None:
    assert citizen_number_problem(_number(yymmdd, born_2000s=born_2000s), today=TODAY) == reason


def test_serial_zero_is_refused() -> None:
    assert citizen_number_problem(_number("850730", "000"), today=TODAY) == "SERIAL_ZERO"
    assert citizen_number_problem(_number("850730", "002"), today=TODAY) is None


def test_sex_from_serial_and_bis_offsets() -> None:
    assert parse_citizen_number(_number("850730", "033"), today=TODAY).sex == "M"
    assert parse_citizen_number(_number("850730", "034"), today=TODAY).sex == "F"
    bis_unknown = parse_citizen_number(_number("852730", "034"), today=TODAY)
    assert (bis_unknown.is_bis, bis_unknown.sex, bis_unknown.birth_month) == (True, None, 7)
    bis_known = parse_citizen_number(_number("854730", "034"), today=TODAY)
    assert (bis_known.is_bis, bis_known.sex, bis_known.birth_month) == (True, "F", 7)


@pytest.mark.parametrize("yymmdd", ["000001", "002001", "004001"])
def test_wholly_unknown_birth_date(yymmdd: str) -> None:
    parsed = parse_citizen_number(_number(yymmdd), today=TODAY)
    assert (parsed.birth_year, parsed.birth_month, parsed.birth_day) == (None, None, None)


def test_unknown_month_keeps_year() -> None:
    parsed = parse_citizen_number(_number("850015"), today=TODAY)
    assert (parsed.birth_year, parsed.birth_month, parsed.birth_day) == (1985, None, 15)


def test_2000s_rule_depends_on_today() -> None:
    assert citizen_number_problem("17073003384", today=date(2016, 12, 31)) == (
        "BIRTH_YEAR_IN_FUTURE"
    )
    assert citizen_number_problem("17073003384", today=date(2017, 1, 1)) is None
    with pytest.raises(IdentifierError) as info:
        parse_citizen_number("17073003384", today=date(2016, 12, 31))
    assert info.value.reason == "BIRTH_YEAR_IN_FUTURE"


def test_default_today_is_the_real_date() -> None:
    # A child born this year (2000s formula) is valid with the default clock; next year's is not.
    this_year = date.today().year % 100
    assert citizen_number_problem(_number(f"{this_year:02d}0101", born_2000s=True)) is None
    next_year = (this_year + 1) % 100
    assert citizen_number_problem(_number(f"{next_year:02d}0101", born_2000s=True)) == (
        "BIRTH_YEAR_IN_FUTURE"
    )


def test_year_digit_plus_6_switches_century_with_same_check_digits() -> None:
    # 2*10**9 == 6*10**7 (mod 97): the one single-digit change check digits cannot catch.
    assert parse_citizen_number("01490700185", today=TODAY).birth_year == 2001
    assert parse_citizen_number("07490700185", today=TODAY).birth_year == 1907


def test_error_is_a_value_error_without_the_number_in_its_message() -> None:
    with pytest.raises(ValueError) as info:
        parse_citizen_number("85073003327", today=TODAY)
    assert isinstance(info.value, IdentifierError)
    assert "85073003327" not in str(info.value)  # personal data stays out of log lines
    assert "CHECK_DIGITS" in str(info.value)


def test_dataclasses_are_frozen() -> None:
    parsed = parse_citizen_number("85073003328", today=TODAY)
    with pytest.raises(FrozenInstanceError):
        parsed.number = "x"  # type: ignore[misc]


def test_check_digit_helpers_refuse_bad_input() -> None:
    for bad in ("12345678", "1234567890", "12345678a"):
        with pytest.raises(ValueError):
            citizen_check_digits(bad, born_2000s=False)
    for bad in ("1234567", "123456789", "1234567a"):
        with pytest.raises(ValueError):
            enterprise_check_digits(bad)


# --------------------------------------------------------------------------------------------
# Citizen numbers: properties


@st.composite
def valid_citizen(draw: st.DrawFn) -> tuple[str, CitizenNumber]:
    century = draw(st.sampled_from([1900, 2000]))
    yy = draw(st.integers(0, 99 if century == 1900 else TODAY.year - 2000))
    offset = draw(st.sampled_from([0, 20, 40]))
    shape = draw(st.sampled_from(["full", "no-month", "no-day", "unknown"]))
    year = century + yy
    if shape == "unknown":
        yy, month, day = 0, 0, 1
    else:
        month = 0 if shape == "no-month" else draw(st.integers(1, 12))
        last = calendar.monthrange(year, month)[1] if month else 31
        day = 0 if shape == "no-day" else draw(st.integers(1, last))
    serial = draw(st.integers(1, 999))
    first9 = f"{yy:02d}{month + offset:02d}{day:02d}{serial:03d}"
    number = first9 + citizen_check_digits(first9, born_2000s=century == 2000)
    unknown = yy == 0 and month == 0 and day == 1
    expected = CitizenNumber(
        number=number,
        birth_year=None if unknown else century + yy,
        birth_month=None if unknown or month == 0 else month,
        birth_day=None if unknown or day == 0 else day,
        sex=None if offset == 20 else ("M" if serial % 2 else "F"),
        is_bis=offset != 0,
        century=century,
    )
    return number, expected


@PROPERTY
@given(valid_citizen())
def test_generated_numbers_parse_and_round_trip(case: tuple[str, CitizenNumber]) -> None:
    number, expected = case
    assert citizen_number_problem(number, today=TODAY) is None
    assert parse_citizen_number(number, today=TODAY) == expected
    dotted = f"{number[:2]}.{number[2:4]}.{number[4:6]}-{number[6:9]}.{number[9:]}"
    assert parse_citizen_number(dotted, today=TODAY) == expected


@PROPERTY
@given(valid_citizen(), st.integers(0, 10), st.integers(1, 9))
def test_single_digit_changes_are_caught(
    case: tuple[str, CitizenNumber], position: int, shift: int
) -> None:
    number, expected = case
    old = int(number[position])
    new = (old + shift) % 10
    changed = number[:position] + str(new) + number[position + 1 :]
    problem = citizen_number_problem(changed, today=TODAY)
    if problem is None:
        # The only escape: year units digit moved by 6, which flips the century.
        assert position == 1 and abs(new - old) == 6
        assert parse_citizen_number(changed, today=TODAY).century != expected.century


@PROPERTY
@given(st.integers(TODAY.year - 2000 + 1, 99), st.integers(1, 12), st.integers(1, 999))
def test_2000s_number_with_future_year_is_refused(yy: int, month: int, serial: int) -> None:
    number = _number(f"{yy:02d}{month:02d}01", f"{serial:03d}", born_2000s=True)
    assert citizen_number_problem(number, today=TODAY) == "BIRTH_YEAR_IN_FUTURE"
    assert citizen_number_problem(number, today=date(2000 + yy, 1, 1)) is None


@PROPERTY
@given(st.text(alphabet="0123456789 .-x", max_size=14))
def test_fast_path_agrees_with_parser(text: str) -> None:
    problem = citizen_number_problem(text, today=TODAY)
    try:
        parse_citizen_number(text, today=TODAY)
    except IdentifierError as exc:
        assert problem == exc.reason
    else:
        assert problem is None


# --------------------------------------------------------------------------------------------
# Enterprise numbers


@pytest.mark.parametrize("number", ["0403019261", "0428759497", "0566988259"])
def test_valid_enterprise_examples(number: str) -> None:
    assert parse_enterprise_number(number) == EnterpriseNumber(number, False)
    assert enterprise_number_problem(number) is None


@pytest.mark.parametrize("number", ["0431150351", "0403019216"])
def test_invalid_enterprise_examples(number: str) -> None:
    assert enterprise_number_problem(number) == "CHECK_DIGITS"
    with pytest.raises(IdentifierError, match="mod-97 check digits") as info:
        parse_enterprise_number(number)
    assert info.value.reason == "CHECK_DIGITS"
    assert number in str(info.value)


@pytest.mark.parametrize(
    "text", ["0403.019.261", "BE0403019261", "BE 0403.019.261", "be0403019261"]
)
def test_enterprise_input_forms(text: str) -> None:
    assert parse_enterprise_number(text).number == "0403019261"
    assert format_enterprise_number(text) == "0403.019.261"
    assert str(parse_enterprise_number(text)) == "0403.019.261"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("040301926", "NOT_10_DIGITS"),
        ("04030192611", "NOT_10_DIGITS"),
        ("NL0403019261", "NOT_10_DIGITS"),
        ("0403/019/261", "NOT_10_DIGITS"),
        ("", "NOT_10_DIGITS"),
        ("9" + "4030192" + enterprise_check_digits("94030192"), "UNIT_PREFIX_INVALID"),
    ],
)
def test_enterprise_problems(text: str, reason: str) -> None:
    assert enterprise_number_problem(text) == reason
    with pytest.raises(IdentifierError) as info:
        parse_enterprise_number(text)
    assert info.value.reason == reason


def test_establishment_unit() -> None:
    number = "2" + "1234567" + enterprise_check_digits("21234567")
    assert parse_enterprise_number(number).is_establishment_unit


def test_format_refuses_invalid_text() -> None:
    with pytest.raises(IdentifierError):
        format_enterprise_number("0403019216")


valid_enterprise = st.builds(
    lambda first8: first8 + enterprise_check_digits(first8),
    st.text(alphabet="012345678", min_size=1, max_size=1).flatmap(
        lambda head: st.text(alphabet="0123456789", min_size=7, max_size=7).map(
            lambda tail: head + tail
        )
    ),
)


@PROPERTY
@given(valid_enterprise)
def test_generated_enterprise_numbers_round_trip(number: str) -> None:
    parsed = parse_enterprise_number(number)
    assert parsed.number == number
    assert parsed.is_establishment_unit == (number[0] not in "01")
    assert parse_enterprise_number(format_enterprise_number(parsed)) == parsed
    assert enterprise_number_problem("BE" + number) is None


@PROPERTY
@given(valid_enterprise, st.integers(0, 9), st.integers(1, 9))
def test_enterprise_single_digit_changes_are_caught(number: str, position: int, shift: int) -> None:
    new = (int(number[position]) + shift) % 10
    changed = number[:position] + str(new) + number[position + 1 :]
    assert enterprise_number_problem(changed) in ("CHECK_DIGITS", "UNIT_PREFIX_INVALID")


def test_valid_path_is_cheap() -> None:
    # Not a benchmark: guards against an accidental order-of-magnitude regression (exceptions,
    # dataclasses, regexes on the hot path). 20,000 checks must take well under a second.
    import time

    numbers = ["85073003328", "17073003384", "98472899765"] * 6667
    start = time.perf_counter()
    problems = [citizen_number_problem(n, TODAY) for n in numbers]
    elapsed = time.perf_counter() - start
    assert problems == [None] * len(numbers)
    assert elapsed < 1.0


def _reference_problem(text: str, today: date) -> str | None:
    """The rules read plainly, without the per-number memory."""
    from node.core.identifiers import _citizen_problem, _digits

    n = _digits(text, 11)
    return "NOT_11_DIGITS" if n is None else _citizen_problem(n, today)


@PROPERTY
@given(yymmdd=st.from_regex(r"\A[0-9]{6}\Z"), serial=st.from_regex(r"\A[0-9]{3}\Z"),
       born_2000s=st.booleans(), damage=st.integers(0, 3),
       today=st.dates(date(1990, 1, 1), date(2099, 12, 31)))
def test_remembered_problem_is_the_rules_on_any_day(
    yymmdd: str, serial: str, born_2000s: bool, damage: int, today: date
) -> None:
    number = _number(yymmdd, serial, born_2000s=born_2000s)
    texts = [number, number[:9] + f"{(int(number[9:]) + damage) % 100:02d}",
             f"{number[:6]}-{number[6:9]}.{number[9:]}", number[:10]]
    for text in texts:  # asked on two days: each answers for its own day
        for day in (today, date(2000 + int(yymmdd[:2]), 1, 1)):
            assert citizen_number_problem(text, today=day) == _reference_problem(text, day)


def test_remembered_numbers_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from node.core import identifiers

    monkeypatch.setattr(identifiers, "_REMEMBER", 5)
    monkeypatch.setattr(identifiers, "_remembered", {})
    numbers = [_number(f"8507{day:02d}") for day in range(1, 13)] + ["12345"]
    for _ in range(2):
        assert [citizen_number_problem(n) for n in numbers] == [None] * 12 + ["NOT_11_DIGITS"]
        assert 0 < len(identifiers._remembered) <= 5
