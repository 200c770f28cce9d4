"""Bulk directory files: JSON and CSV in, directory entities out (and entities back to JSON).

No gRPC here: :func:`load_file` turns a file into validated entities of
:mod:`node.core.directory`; the CLI (:mod:`node.cli.directory`) sends them to the hub. The
columns are the entities' fields as :mod:`node.core.directory_fields` defines them for every
codec (``tests/unit/test_directory_codecs.py`` checks that files, stores and messages agree).

Formats (docs/DIRECTORY.md has examples):

* **JSON**: an object with one list per part - ``institutions``, ``services``,
  ``authorizations``, ``integrations``, ``subscriptions``, ``replacements``,
  ``revoked_certificates`` - of objects keyed by the column names below. A ``revision`` key
  (as written by ``crossroads directory show --format json``) is ignored. With ``kind`` given,
  the file may also be a bare list of that kind's objects.
* **CSV**: one kind per file, a header row of column names, one entity per row; capacities
  as ``1;2;3``; booleans ``true``/``false``; empty cell = the default. The kind is ``kind``,
  else the file name (``authorizations.csv``, ``services-2024.csv``), else the header when only
  one kind has those columns.

Guarantees: every entity is checked field by field and then with
:func:`node.core.directory.problem_of`; a key may appear only once per file. Any problem
raises :class:`DirectoryFileError` listing *every* problem (file, row or line, field, why),
so nothing is imported from a file with one bad row. Enterprise numbers are normalized to
10 digits (``0403.019.261`` -> ``0403019261``), serials and fingerprints to lower-case hex.
Entities come back in dependency order (institutions, services, authorizations,
subscriptions, integrations, replacements, revoked certificates), each part in file order.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from node.core import directory as d
from node.core.directory import Entity, Period, key_of, kind_of, problem_of, subject_problem
from node.core.directory_fields import FIELDS, member_of, to_fields
from node.core.identifiers import IdentifierError, parse_enterprise_number

__all__ = [
    "COLUMNS",
    "KIND_NAMES",
    "SECTIONS",
    "DirectoryFileError",
    "FieldError",
    "FileProblem",
    "entities_to_json",
    "entity_from_fields",
    "entity_to_fields",
    "entity_to_text_fields",
    "kind_name",
    "load_file",
    "parse_csv",
    "parse_json",
]

#: Canonical kind (as :func:`node.core.directory.kind_of`) -> JSON section, in dependency order.
SECTIONS: dict[str, str] = {
    "institution": "institutions",
    "service": "services",
    "authorization": "authorizations",
    "subscription": "subscriptions",
    "integration": "integrations",
    "replacement": "replacements",
    "revoked_certificate": "revoked_certificates",
}

#: Columns of each kind, in output order: the entity's fields (node.core.directory_fields).
COLUMNS: dict[str, tuple[str, ...]] = {kind: tuple(f.name for f in fields)
                                       for kind, fields in FIELDS.items()}

_REQUIRED: dict[str, tuple[str, ...]] = {
    "institution": ("enterprise_number", "sector"),
    "service": ("id",),
    "authorization": ("id", "service_id"),
    "subscription": ("id", "institution", "service_id"),
    "integration": ("subject", "institution", "capacity"),
    "replacement": ("old_number", "new_number"),
    "revoked_certificate": ("serial",),
}

#: Accepted spellings of each kind (``--kind``, ``show PART``, ``remove KIND``, file names).
KIND_NAMES: dict[str, str] = {
    **{k: k for k in SECTIONS},
    **{v: k for k, v in SECTIONS.items()},
    "revoked": "revoked_certificate",
    "revoked-certificate": "revoked_certificate",
    "revoked-certificates": "revoked_certificate",
    "revoked-cert": "revoked_certificate",
    "revoked-certs": "revoked_certificate",
}

_UINT32_MAX = 2**32 - 1
_HEX = re.compile(r"[0-9a-f]+")
_MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class FileProblem:
    """One bad spot: ``where`` is ``line 7`` (CSV) or ``authorizations[3]`` (JSON) or ``""``."""

    where: str
    field: str
    message: str

    def __str__(self) -> str:
        parts = [p for p in (self.where, f"field {self.field}" if self.field else "") if p]
        return ": ".join([*parts, self.message])


class DirectoryFileError(ValueError):
    """A directory file cannot be imported; ``problems`` lists every bad row and field."""

    def __init__(self, path: Path | str, problems: Sequence[FileProblem]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        super().__init__(self._text())

    def lines(self, limit: int = _MAX_LISTED) -> list[str]:
        """One line per problem (at most ``limit``, then a count of the rest)."""
        shown = [f"{self.path}: {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            shown.append(f"{self.path}: ... and {len(self.problems) - limit} more problems")
        if len(self.problems) == 1:
            shown[0] += " (nothing imported)"
        else:
            shown.append(f"{self.path}: {len(self.problems)} problems, nothing imported")
        return shown

    def _text(self) -> str:
        if len(self.problems) == 1:
            return f"{self.path}: {self.problems[0]} (nothing imported)"
        head = f"{self.path}: {len(self.problems)} problems, nothing imported"
        return "\n".join([head, *("  " + line for line in self.lines())])


class FieldError(ValueError):
    """One bad value; ``field`` names its column."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def kind_name(text: str) -> str:
    """The canonical kind for ``text`` (``authorizations``, ``revoked``, ...); ValueError if none."""
    kind = KIND_NAMES.get(text.strip().lower().replace(" ", "_"))
    if kind is None:
        known = ", ".join(SECTIONS.values())
        raise ValueError(f"unknown kind {text!r} (one of {known}, singular or plural)")
    return kind


# -- field conversion ------------------------------------------------------------------------
# Values come as text (CSV, command line) or as JSON values; None and "" mean "not given".


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(field: str, value: object) -> str:
    if _blank(value):
        return ""
    if not isinstance(value, str):
        raise FieldError(field, f"must be text, got {json.dumps(value)}")
    return value.strip()


def _uint(field: str, value: object, default: int | None = 0) -> int | None:
    if _blank(value):
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise FieldError(field, f"must be a whole number, got {json.dumps(value)}")
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            raise FieldError(field, f"must be a whole number >= 0, got {value!r}")
        number = int(text)
    else:
        number = value
    if not 0 <= number <= _UINT32_MAX:
        raise FieldError(field, f"must be between 0 and {_UINT32_MAX}, got {number}")
    return number


def _bool(field: str, value: object) -> bool:
    if _blank(value):
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "y", "1"):
            return True
        if text in ("false", "no", "n", "0"):
            return False
    raise FieldError(field, f"must be true or false, got {json.dumps(value)}")


def _capacities(field: str, value: object) -> frozenset[int]:
    if _blank(value):
        return frozenset()
    items: Iterable[object]
    if isinstance(value, str):
        items = [p for p in re.split(r"[;,\s]+", value.strip()) if p]
    elif isinstance(value, list):
        items = value
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    else:
        raise FieldError(field, f"must be a list of capacities like 1;2;3, got {json.dumps(value)}")
    result = set()
    for item in items:
        try:
            number = _uint(field, item)
        except FieldError:
            raise FieldError(field, f"capacity {json.dumps(item)} is not a whole number >= 0"
                              " (write capacities as 1;2;3)") from None
        assert number is not None
        result.add(number)
    return frozenset(result)


def _date(field: str, value: object) -> date | None:
    text = _text(field, value)
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise FieldError(field, f"{text!r} is not a date (YYYY-MM-DD)") from None


def _enterprise(field: str, value: object, required: bool = False) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise FieldError(field, f"write the enterprise number as text (\"{value:010d}\"): "
                                 "a number loses its leading 0")
    text = _text(field, value)
    if not text:
        return ""
    try:
        return parse_enterprise_number(text).number
    except IdentifierError as exc:
        raise FieldError(field, exc.message) from None


def _subject(field: str, value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise FieldError(field, "write the number as text: a number loses its leading 0")
    text = _text(field, value)
    problem = subject_problem(text)
    if problem:
        raise FieldError(field, problem)
    return text


def _hex(field: str, value: object, length: int | None = None) -> str:
    text = _text(field, value).lower().replace(":", "")
    if text.startswith("0x"):
        text = text[2:]
    if text and not _HEX.fullmatch(text):
        raise FieldError(field, f"{value!r} is not hexadecimal")
    if text and length is not None and len(text) != length:
        raise FieldError(field, f"must be {length} hex digits (SHA-256), got {len(text)}")
    return text


def _period(f: Callable[[str], object], begin_field: str, end_field: str) -> Period:
    begin, end = _date(begin_field, f(begin_field)), _date(end_field, f(end_field))
    if begin and end and end < begin:
        raise FieldError(end_field, f"{end} is before {begin_field} {begin}")
    return Period(begin or date.min, end)


# -- entities from fields --------------------------------------------------------------------


def _build(kind: str, f: Callable[[str], object]) -> Entity:
    if kind == "institution":
        sector = _uint("sector", f("sector"))
        assert sector is not None
        return d.Institution(
            _enterprise("enterprise_number", f("enterprise_number")), sector,
            _text("name", f("name")), _text("endpoint", f("endpoint")),
            _hex("cert_fingerprint", f("cert_fingerprint"), 64),
            member_of(d.InstitutionStatus, _text("status", f("status")),
                      d.InstitutionStatus.ACTIVE))
    if kind == "service":
        routing = member_of(d.Routing, _text("routing", f("routing")), d.Routing.FIXED)
        if routing == d.Routing.FIXED and _blank(f("provider")):
            raise FieldError("provider", "is required when routing is fixed")
        version = _uint("version", f("version"), 1)
        if version == 0:
            raise FieldError("version", "must be 1 or more")
        assert version is not None
        return d.Service(
            _text("id", f("id")), version,
            member_of(d.ServiceKind, _text("kind", f("kind")), d.ServiceKind.CONSULTATION),
            member_of(d.SubjectType, _text("subject_type", f("subject_type")),
                      d.SubjectType.CITIZEN),
            routing, _enterprise("provider", f("provider")),
            _bool("integration_required", f("integration_required")),
            _uint("min_phase", f("min_phase")) or 0, _capacities("capacities", f("capacities")))
    if kind == "authorization":
        period = _period(f, "valid_from", "valid_to")
        return d.Authorization(
            _text("id", f("id")), _text("service_id", f("service_id")),
            _enterprise("institution", f("institution")), _uint("sector", f("sector"), None),
            _text("legal_context", f("legal_context")), _capacities("capacities", f("capacities")),
            period)
    if kind == "subscription":
        return d.Subscription(
            _text("id", f("id")), _enterprise("institution", f("institution")),
            _text("service_id", f("service_id")), _capacities("capacities", f("capacities")),
            _text("condition", f("condition")))
    if kind == "integration":
        period = _period(f, "begin_date", "end_date")
        return d.Integration(
            _subject("subject", f("subject")), _enterprise("institution", f("institution")),
            _uint("capacity", f("capacity")) or 0, _uint("phase", f("phase")) or 0, period)
    if kind == "replacement":
        old, new = _subject("old_number", f("old_number")), _subject("new_number", f("new_number"))
        if old == new:
            raise FieldError("new_number", "a number cannot replace itself")
        return d.Replacement(old, new)
    return d.RevokedCertificate(_hex("serial", f("serial")),
                              _enterprise("institution", f("institution")),
                              _text("reason", f("reason")))


def _field_of_problem(kind: str, problem: str) -> str:
    """The column a :func:`problem_of` message is about (its first word, when a column)."""
    first = problem.split(" ", 1)[0]
    if first in COLUMNS[kind]:
        return first
    if "institution or sector" in problem:
        return "institution"
    return ""


def entity_from_fields(kind: str, fields: Mapping[str, object]) -> Entity:
    """Build and validate one entity from column -> value (text or JSON values).

    Raises ValueError whose ``field`` attribute names the bad column (or ``""``).
    """
    kind = kind_name(kind)
    columns = COLUMNS[kind]
    unknown = [k for k in fields if k not in columns]
    if unknown:
        raise FieldError(unknown[0], f"unknown column (columns of {SECTIONS[kind]}: "
                                      f"{', '.join(columns)})")
    for column in _REQUIRED[kind]:
        if _blank(fields.get(column)):
            raise FieldError(column, "is required")
    if kind == "authorization" and (
            _blank(fields.get("institution")) == _blank(fields.get("sector"))):
        raise FieldError("institution", "give exactly one of institution or sector")
    entity = _build(kind, fields.get)
    problem = problem_of(entity)
    if problem is not None:
        raise FieldError(_field_of_problem(kind, problem), problem)
    return entity


def entity_to_fields(entity: Entity) -> dict[str, Any]:
    """Column -> JSON value, the inverse of :func:`entity_from_fields`. An authorization
    carries ``institution`` or ``sector``, whichever it has."""
    values = to_fields(entity)
    if isinstance(entity, d.Authorization):
        del values["sector" if entity.sector is None else "institution"]
    return values


def entity_to_text_fields(entity: Entity) -> dict[str, str]:
    """Column -> text as in a CSV file (capacities ``1;2;3``, booleans ``true``/``false``)."""
    kind = kind_of(entity)
    values = entity_to_fields(entity)
    out: dict[str, str] = {}
    for column in COLUMNS[kind]:
        value = values.get(column, "")
        if isinstance(value, bool):
            out[column] = "true" if value else "false"
        elif isinstance(value, list):
            out[column] = ";".join(str(v) for v in value)
        else:
            out[column] = str(value)
    return out


def entities_to_json(entities: Iterable[Entity]) -> dict[str, list[dict[str, Any]]]:
    """``{"institutions": [...], ...}``: the JSON file format; empty parts are left out."""
    sections: dict[str, list[dict[str, Any]]] = {s: [] for s in SECTIONS.values()}
    for entity in entities:
        sections[SECTIONS[kind_of(entity)]].append(entity_to_fields(entity))
    return {name: rows for name, rows in sections.items() if rows}


# -- files -----------------------------------------------------------------------------------


class _Collector:
    def __init__(self) -> None:
        self.problems: list[FileProblem] = []
        self.entities: dict[str, list[Entity]] = {k: [] for k in SECTIONS}
        self.seen: dict[tuple[str, str], str] = {}

    def add(self, kind: str, where: str, fields: Mapping[str, object]) -> None:
        try:
            entity = entity_from_fields(kind, fields)
        except FieldError as exc:
            self.problems.append(FileProblem(where, exc.field, exc.message))
            return
        key = (kind, key_of(entity))
        if key in self.seen:
            self.problems.append(FileProblem(
                where, "", f"duplicate {kind} {key[1]!r} (also at {self.seen[key]})"))
            return
        self.seen[key] = where
        self.entities[kind].append(entity)

    def result(self, path: Path | str) -> list[Entity]:
        if self.problems:
            raise DirectoryFileError(path, self.problems)
        return [e for kind in SECTIONS for e in self.entities[kind]]


def parse_json(text: str, path: Path | str = "<json>", kind: str | None = None) -> list[Entity]:
    """Entities from JSON text (see the module docstring)."""
    only = kind_name(kind) if kind else None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DirectoryFileError(path, [FileProblem(
            f"line {exc.lineno} column {exc.colno}", "", f"not valid JSON: {exc.msg}")]) from None
    if isinstance(data, list):
        if only is None:
            raise DirectoryFileError(path, [FileProblem(
                "", "", "a JSON list needs --kind; or write an object like "
                        '{"authorizations": [...]}')])
        data = {SECTIONS[only]: data}
    if not isinstance(data, dict):
        raise DirectoryFileError(path, [FileProblem(
            "", "", f"the top level must be an object with lists {', '.join(SECTIONS.values())}")])
    found = _Collector()
    by_section = {v: k for k, v in SECTIONS.items()}
    for section, rows in data.items():
        if section == "revision":
            continue
        section_kind = by_section.get(section)
        if section_kind is None:
            found.problems.append(FileProblem(section, "", "unknown part (one of "
                                              f"{', '.join(SECTIONS.values())})"))
            continue
        if only is not None and section_kind != only:
            found.problems.append(FileProblem(section, "", f"only {SECTIONS[only]} expected "
                                              f"(--kind {only})"))
            continue
        if not isinstance(rows, list):
            found.problems.append(FileProblem(section, "", "must be a list of objects"))
            continue
        for index, row in enumerate(rows):
            where = f"{section}[{index}]"
            if not isinstance(row, dict):
                found.problems.append(FileProblem(where, "", "must be an object"))
                continue
            found.add(section_kind, where, row)
    return found.result(path)


def _kind_of_csv(path: Path | str, header: Sequence[str]) -> str:
    stem = Path(path).stem.lower().replace("-", "_")
    for name in sorted(KIND_NAMES, key=len, reverse=True):
        spelled = name.replace("-", "_")
        if stem == spelled or (stem.startswith(spelled) and not stem[len(spelled)].isalpha()):
            return KIND_NAMES[name]
    columns = set(header)
    fits = [k for k, cols in COLUMNS.items()
            if columns <= set(cols) and set(_REQUIRED[k]) <= columns]
    if len(fits) == 1:
        return fits[0]
    which = " or ".join(fits) if fits else "no kind"
    raise DirectoryFileError(path, [FileProblem(
        "line 1", "", f"cannot tell the kind from the file name or header (fits {which}): "
                      "give --kind")])


def parse_csv(text: str, path: Path | str = "<csv>", kind: str | None = None) -> list[Entity]:
    """Entities of one kind from CSV text with a header row (see the module docstring)."""
    lines = text.splitlines(keepends=True)
    start = 0
    while start < len(lines) and (not lines[start].strip() or lines[start].startswith("#")):
        start += 1
    if start == len(lines):
        raise DirectoryFileError(path, [FileProblem("", "", "empty file: no header row")])
    reader = csv.reader(io.StringIO("".join(lines[start:]), newline=""))
    header = [h.strip().lower() for h in next(reader)]
    header_line = start + 1
    if ";" in lines[start] and len(header) == 1:
        raise DirectoryFileError(path, [FileProblem(
            f"line {header_line}", "", "the header uses ';' as separator: save the file as "
                                       "comma-separated CSV (capacities are written 1;2;3)")])
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes or "" in header:
        what = f"column {dupes[0]!r} appears twice" if dupes else "a column has no name"
        raise DirectoryFileError(path, [FileProblem(f"line {header_line}", "", what)])
    the_kind = kind_name(kind) if kind else _kind_of_csv(path, header)
    found = _Collector()
    for column in header:
        if column not in COLUMNS[the_kind]:
            found.problems.append(FileProblem(
                f"line {header_line}", column, f"unknown column for {SECTIONS[the_kind]} "
                                               f"(columns: {', '.join(COLUMNS[the_kind])})"))
    if found.problems:
        raise DirectoryFileError(path, found.problems)
    previous_end = reader.line_num
    for cells in reader:
        line = start + previous_end + 1
        previous_end = reader.line_num
        if not any(c.strip() for c in cells) or cells[0].startswith("#"):
            continue
        where = f"line {line}"
        if len(cells) != len(header):
            found.problems.append(FileProblem(
                where, "", f"{len(cells)} cells, the header has {len(header)}"))
            continue
        found.add(the_kind, where, dict(zip(header, cells, strict=True)))
    return found.result(path)


def load_file(path: Path, kind: str | None = None) -> list[Entity]:
    """Read and validate a JSON or CSV directory file; DirectoryFileError on any problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DirectoryFileError(path, [FileProblem("", "", exc.strerror or str(exc))]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DirectoryFileError(path, [FileProblem(
            f"byte {exc.start}", "", "not UTF-8 text")]) from None
    if kind is not None:
        try:
            kind_name(kind)
        except ValueError as exc:
            raise DirectoryFileError(path, [FileProblem("", "", str(exc))]) from None
    suffix = path.suffix.lower()
    is_json = suffix == ".json" or (suffix != ".csv" and text.lstrip()[:1] in ("{", "["))
    return parse_json(text, path, kind) if is_json else parse_csv(text, path, kind)
