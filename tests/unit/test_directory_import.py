"""Bulk directory files (JSON, CSV) and the ``crossroads directory`` CLI without a hub."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import grpc
import pytest

from node.cli import directory as directory_cli
from node.core.directory import (
    Authorization,
    Institution,
    Integration,
    Period,
    Replacement,
    RevokedCertificate,
    Service,
    Subscription,
    problem_of,
)
from node.core.errors import CrossroadsError, InvalidArgument
from node.core.reasons import CallReason
from node.files.directory_import import (
    DirectoryFileError,
    entities_to_json,
    entity_to_text_fields,
    kind_name,
    load_file,
    parse_csv,
    parse_json,
)
from node.wire.errors import rich_status

A, B = "0403019261", "0428759497"
BAD_CHECK = "0403019216"  # check digits do not match
CITIZEN, CITIZEN_NEW = "85073003328", "17073003384"

EVERYTHING = {
    "institutions": [
        {"enterprise_number": A, "sector": 17, "name": "OCMW Gent", "endpoint": "10.0.0.1:7000",
         "cert_fingerprint": "AB" * 32, "status": "active"},
        {"enterprise_number": "0428.759.497", "sector": 12, "status": "suspended"},
    ],
    "services": [
        {"id": "health.insurability", "version": 2, "kind": "consultation",
         "subject_type": "citizen", "routing": "fixed", "provider": B,
         "integration_required": True, "min_phase": 3, "capacities": [2, 1]},
        {"id": "person.death", "kind": "mutation", "routing": "fan_out"},
    ],
    "authorizations": [
        {"id": "auth-1", "service_id": "health.insurability", "institution": A,
         "legal_context": "delib-12/2024", "capacities": [1, 2], "valid_from": "2024-01-01",
         "valid_to": "2026-12-31"},
        {"id": "auth-2", "service_id": "person.death", "sector": 17},
    ],
    "subscriptions": [
        {"id": "sub-1", "institution": A, "service_id": "person.death", "capacities": [2],
         "condition": "only residents"},
    ],
    "integrations": [
        {"subject": CITIZEN, "institution": A, "capacity": 2, "phase": 4,
         "begin_date": "2024-03-01", "end_date": ""},
    ],
    "replacements": [{"old_number": CITIZEN, "new_number": CITIZEN_NEW}],
    "revoked_certificates": [{"serial": "0A:1B:FF", "institution": B, "reason": "superseded"}],
}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _problems(exc: pytest.ExceptionInfo[DirectoryFileError]) -> list[tuple[str, str]]:
    return [(p.where, p.field) for p in exc.value.problems]


# -- JSON ------------------------------------------------------------------------------------


def test_json_all_kinds(tmp_path: Path) -> None:
    entities = load_file(_write(tmp_path, "dir.json", json.dumps(EVERYTHING)))
    assert entities == [
        Institution(A, 17, "OCMW Gent", "10.0.0.1:7000", "ab" * 32, "active"),
        Institution(B, 12, status="suspended"),  # separators removed
        Service("health.insurability", 2, "consultation", "citizen", "fixed", B, True, 3,
                frozenset({1, 2})),
        Service("person.death", 1, "mutation", "citizen", "fan_out"),
        Authorization("auth-1", "health.insurability", A, None, "delib-12/2024",
                      frozenset({1, 2}), Period(date(2024, 1, 1), date(2026, 12, 31))),
        Authorization("auth-2", "person.death", "", 17),
        Subscription("sub-1", A, "person.death", frozenset({2}), "only residents"),
        Integration(CITIZEN, A, 2, 4, Period(date(2024, 3, 1))),
        Replacement(CITIZEN, CITIZEN_NEW),
        RevokedCertificate("0a1bff", B, "superseded"),
    ]
    assert all(problem_of(e) is None for e in entities)


def test_json_round_trip_including_show_output() -> None:
    entities = parse_json(json.dumps(EVERYTHING))
    written = entities_to_json(entities)
    assert list(written) == ["institutions", "services", "authorizations", "subscriptions",
                             "integrations", "replacements", "revoked_certificates"]
    # An authorization carries institution or sector, never both.
    assert "sector" not in written["authorizations"][0]
    assert "institution" not in written["authorizations"][1]
    assert written["authorizations"][1]["valid_from"] == ""
    shown = json.dumps({"revision": 42, **written})  # `show --format json` adds the revision
    assert parse_json(shown) == entities


def test_json_entities_come_in_dependency_order() -> None:
    text = json.dumps({"authorizations": EVERYTHING["authorizations"],
                       "institutions": EVERYTHING["institutions"]})
    kinds = [type(e).__name__ for e in parse_json(text)]
    assert kinds == ["Institution", "Institution", "Authorization", "Authorization"]


def test_json_list_with_kind() -> None:
    text = json.dumps([{"old_number": CITIZEN, "new_number": CITIZEN_NEW}])
    assert parse_json(text, kind="replacements") == [Replacement(CITIZEN, CITIZEN_NEW)]
    with pytest.raises(DirectoryFileError, match="needs --kind"):
        parse_json(text)


@pytest.mark.parametrize(("row", "field", "message"), [
    ({"enterprise_number": BAD_CHECK, "sector": 17}, "enterprise_number", "check digits"),
    ({"enterprise_number": 403019261, "sector": 17}, "enterprise_number", "leading 0"),
    ({"enterprise_number": A}, "sector", "is required"),
    ({"enterprise_number": A, "sector": -1}, "sector", "between 0 and"),
    ({"enterprise_number": A, "sector": "x"}, "sector", "whole number"),
    ({"enterprise_number": A, "sector": 1, "status": "gone"}, "status", "active or suspended"),
    ({"enterprise_number": A, "sector": 1, "cert_fingerprint": "abc"}, "cert_fingerprint",
     "64 hex digits"),
    ({"enterprise_number": A, "sector": 1, "cert_fingerprint": "zz" * 32}, "cert_fingerprint",
     "not hexadecimal"),
    ({"enterprise_number": A, "sector": 1, "colour": "red"}, "colour", "unknown column"),
    ({"enterprise_number": A, "sector": 1, "name": 5}, "name", "must be text"),
])
def test_json_institution_problems_name_the_field(row: dict, field: str, message: str) -> None:
    with pytest.raises(DirectoryFileError) as exc:
        parse_json(json.dumps({"institutions": [row]}), "f.json")
    assert _problems(exc) == [("institutions[0]", field)]
    assert message in exc.value.problems[0].message
    assert str(exc.value).startswith(f"f.json: institutions[0]: field {field}: ")
    assert str(exc.value).endswith("(nothing imported)")


@pytest.mark.parametrize(("section", "row", "field", "message"), [
    ("services", {"id": "s", "kind": "query", "provider": A}, "kind", "must be one of"),
    ("services", {"id": "s", "routing": "broadcast"}, "routing", "must be one of"),
    ("services", {"id": "s", "routing": "fan_out", "subject_type": "dog"}, "subject_type",
     "must be one of"),
    ("services", {"id": "s"}, "provider", "required when routing is fixed"),
    ("services", {"id": "s", "provider": A, "version": 0}, "version", "1 or more"),
    ("services", {"id": "s", "provider": A, "integration_required": "maybe"},
     "integration_required", "true or false"),
    ("services", {"id": "s", "provider": A, "capacities": ["a"]}, "capacities", "1;2;3"),
    ("services", {"kind": "consultation"}, "id", "is required"),
    ("authorizations", {"id": "a", "service_id": "s"}, "institution", "exactly one"),
    ("authorizations", {"id": "a", "service_id": "s", "institution": A, "sector": 3},
     "institution", "exactly one"),
    ("authorizations", {"id": "a", "service_id": "s", "sector": 3, "valid_from": "2024-02-30"},
     "valid_from", "not a date"),
    ("authorizations", {"id": "a", "service_id": "s", "sector": 3, "valid_from": "2024-02-01",
                        "valid_to": "2024-01-01"}, "valid_to", "before valid_from"),
    ("authorizations", {"id": "a", "sector": 3}, "service_id", "is required"),
    ("subscriptions", {"id": "s", "institution": BAD_CHECK, "service_id": "x"}, "institution",
     "check digits"),
    ("integrations", {"subject": "85073003327", "institution": A, "capacity": 1}, "subject",
     "CHECK_DIGITS"),
    ("integrations", {"subject": CITIZEN, "institution": A, "capacity": 1,
                      "begin_date": "2024-05-01", "end_date": "2024-04-30"}, "end_date",
     "before begin_date"),
    ("integrations", {"subject": CITIZEN, "institution": A}, "capacity", "is required"),
    ("replacements", {"old_number": CITIZEN, "new_number": "123"}, "new_number",
     "not a citizen"),
    ("replacements", {"old_number": CITIZEN, "new_number": CITIZEN}, "new_number", "itself"),
    ("revoked_certificates", {"serial": "xyz"}, "serial", "not hexadecimal"),
])
def test_json_problems_of_every_kind(section: str, row: dict, field: str, message: str) -> None:
    with pytest.raises(DirectoryFileError) as exc:
        parse_json(json.dumps({section: [row]}))
    assert _problems(exc) == [(f"{section}[0]", field)]
    assert message in exc.value.problems[0].message


def test_json_structure_problems() -> None:
    with pytest.raises(DirectoryFileError) as exc:
        parse_json('{"institutions": [\n  {"enterprise_number": }\n]}', "f.json")
    assert exc.value.problems[0].where == "line 2 column 25"
    assert "not valid JSON" in str(exc.value)
    with pytest.raises(DirectoryFileError) as exc:
        parse_json(json.dumps({"institution": [], "services": {}, "replacements": [3]}))
    assert [(p.where, p.message.split(" (")[0]) for p in exc.value.problems] == [
        ("institution", "unknown part"), ("services", "must be a list of objects"),
        ("replacements[0]", "must be an object")]
    with pytest.raises(DirectoryFileError, match="top level must be an object"):
        parse_json("3")
    with pytest.raises(DirectoryFileError, match="only authorizations expected"):
        parse_json(json.dumps({"services": []}), kind="authorization")


def test_one_bad_row_imports_nothing_and_every_problem_is_listed() -> None:
    rows = [{"id": f"a{i}", "service_id": "s", "sector": 17} for i in range(10)]
    rows[3]["sector"] = "x"
    rows[7] = {"id": "a1", "service_id": "s", "sector": 17}  # duplicate key of rows[1]
    with pytest.raises(DirectoryFileError) as exc:
        parse_json(json.dumps({"authorizations": rows}), "f.json")
    assert _problems(exc) == [("authorizations[3]", "sector"), ("authorizations[7]", "")]
    assert "duplicate authorization 'a1' (also at authorizations[1])" in str(exc.value)
    assert exc.value.lines()[-1] == "f.json: 2 problems, nothing imported"


def test_problem_lines_are_capped() -> None:
    rows = [{"id": f"a{i}", "service_id": "s"} for i in range(25)]
    with pytest.raises(DirectoryFileError) as exc:
        parse_json(json.dumps({"authorizations": rows}), "f.json")
    assert len(exc.value.problems) == 25
    lines = exc.value.lines()
    assert len(lines) == 22
    assert lines[-2] == "f.json: ... and 5 more problems"


# -- CSV -------------------------------------------------------------------------------------

CSV_FILES = {
    "institutions.csv": (
        "enterprise_number,sector,name,endpoint,cert_fingerprint,status\n"
        f"{A},17,\"OCMW, Gent\",,,\n"
        f"BE 0428.759.497,12,,,,suspended\n",
        [Institution(A, 17, "OCMW, Gent"), Institution(B, 12, status="suspended")]),
    "services.csv": (
        "id,version,kind,subject_type,routing,provider,integration_required,min_phase,capacities\n"
        f"health.insurability,2,consultation,citizen,fixed,{B},true,3,1;2\n"
        "person.death,,mutation,,fan_out,,no,,\n",
        [Service("health.insurability", 2, "consultation", "citizen", "fixed", B, True, 3,
                 frozenset({1, 2})),
         Service("person.death", 1, "mutation", "citizen", "fan_out")]),
    "authorizations.csv": (
        "id,service_id,institution,sector,legal_context,capacities,valid_from,valid_to\n"
        f"a1,health.insurability,{A},,delib-12/2024,1;2,2024-01-01,\n"
        "a2,person.death,,17,,,,2030-01-01\n",
        [Authorization("a1", "health.insurability", A, None, "delib-12/2024", frozenset({1, 2}),
                       Period(date(2024, 1, 1))),
         Authorization("a2", "person.death", "", 17, period=Period(date.min, date(2030, 1, 1)))]),
    "subscriptions.csv": (
        "id,institution,service_id,capacities,condition\n"
        f"s1,{A},person.death,2,\n",
        [Subscription("s1", A, "person.death", frozenset({2}))]),
    "integrations.csv": (
        "subject,institution,capacity,phase,begin_date,end_date\n"
        f"{CITIZEN},{A},2,4,2024-03-01,2024-12-31\n",
        [Integration(CITIZEN, A, 2, 4, Period(date(2024, 3, 1), date(2024, 12, 31)))]),
    "replacements.csv": (
        f"old_number,new_number\n{CITIZEN},{CITIZEN_NEW}\n",
        [Replacement(CITIZEN, CITIZEN_NEW)]),
    "revoked.csv": (
        "serial,institution,reason\n0A1B,,key_compromise\n",
        [RevokedCertificate("0a1b", "", "key_compromise")]),
}


@pytest.mark.parametrize("name", sorted(CSV_FILES))
def test_csv_every_kind_by_file_name(tmp_path: Path, name: str) -> None:
    text, expected = CSV_FILES[name]
    assert load_file(_write(tmp_path, name, text)) == expected


@pytest.mark.parametrize("name", sorted(CSV_FILES))
def test_csv_round_trip(name: str) -> None:
    text, expected = CSV_FILES[name]
    rows = [entity_to_text_fields(e) for e in expected]
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(f'"{r[c]}"' for c in header) for r in rows]
    assert parse_csv("\n".join(lines) + "\n", name) == expected


def test_csv_kind_from_option_or_header(tmp_path: Path) -> None:
    text = f"old_number,new_number\n{CITIZEN},{CITIZEN_NEW}\n"
    assert load_file(_write(tmp_path, "data.csv", text)) == [Replacement(CITIZEN, CITIZEN_NEW)]
    auth = "id,service_id,sector\na,s,17\n"
    assert load_file(_write(tmp_path, "x.csv", auth), kind="authorizations") == [
        Authorization("a", "s", "", 17)]
    assert load_file(_write(tmp_path, "authorizations-2024.csv", auth))[0].id == "a"
    ambiguous = "id,service_id,institution\na,s,0403019261\n"  # authorization or subscription
    with pytest.raises(DirectoryFileError, match="give --kind") as exc:
        load_file(_write(tmp_path, "y.csv", ambiguous))
    assert "authorization or subscription" in str(exc.value)


def test_csv_problems_name_line_and_field(tmp_path: Path) -> None:
    text = (
        "# authorizations for the pilot\n"
        "id,service_id,institution,sector,capacities,valid_from\n"
        f"a1,s,{A},,1;2,2024-01-01\n"
        f"a2,s,{BAD_CHECK},,,\n"
        "\n"
        "a3,s,,,,\n"
        f"a4,s,{A},,1;x,\n"
        "a5,s,,17,\"1;\n2\",2024-13-01\n"
        f"a6,s,{A}\n"
        f"a1,s,{A},,,\n"
    )
    path = _write(tmp_path, "authorizations.csv", text)
    with pytest.raises(DirectoryFileError) as exc:
        load_file(path)
    assert _problems(exc) == [
        ("line 4", "institution"), ("line 6", "institution"), ("line 7", "capacities"),
        ("line 8", "valid_from"), ("line 10", ""), ("line 11", "")]
    messages = [p.message for p in exc.value.problems]
    assert "mod-97 check digits do not match" in messages[0]
    assert messages[4] == "3 cells, the header has 6"
    assert messages[5] == "duplicate authorization 'a1' (also at line 3)"
    assert exc.value.lines()[0].startswith(f"{path}: line 4: field institution: invalid")


def test_csv_header_problems(tmp_path: Path) -> None:
    with pytest.raises(DirectoryFileError) as exc:
        parse_csv("enterprise_number,sector,colour\n", "institutions.csv")
    assert _problems(exc) == [("line 1", "colour")]
    with pytest.raises(DirectoryFileError, match="'sector' appears twice"):
        parse_csv("enterprise_number,sector,sector\n", "institutions.csv")
    with pytest.raises(DirectoryFileError, match="';' as separator"):
        parse_csv("enterprise_number;sector\n0403019261;17\n", "institutions.csv")
    with pytest.raises(DirectoryFileError, match="no header row"):
        parse_csv("\n\n", "institutions.csv")
    assert parse_csv("enterprise_number,sector\n", "institutions.csv") == []


def test_csv_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "institutions.csv"
    path.write_bytes(b"\xef\xbb\xbfenterprise_number,sector\r\n0403019261,17\r\n")
    assert load_file(path) == [Institution(A, 17)]


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(DirectoryFileError, match="No such file"):
        load_file(tmp_path / "missing.json")
    bad = tmp_path / "x.csv"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(DirectoryFileError, match="not UTF-8"):
        load_file(bad)
    with pytest.raises(DirectoryFileError, match="unknown kind 'people'"):
        load_file(_write(tmp_path, "y.csv", "a\n"), kind="people")


def test_kind_names() -> None:
    assert kind_name("Authorizations") == "authorization"
    assert kind_name("revoked") == "revoked_certificate"
    with pytest.raises(ValueError, match="unknown kind"):
        kind_name("person")


# -- the CLI without a hub -------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = directory_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_dry_run_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "dir.json", json.dumps(EVERYTHING))
    code, out, err = _run(capsys, "import", str(path), "--dry-run")
    assert (code, err) == (0, "")
    assert "10 entries valid (2 institutions, 2 services, 2 authorizations" in out


def test_cli_import_refuses_a_bad_file_before_connecting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "institutions.csv", f"enterprise_number,sector\n{BAD_CHECK},17\n")
    # No connection options at all: the file is refused first.
    code, out, err = _run(capsys, "import", str(path))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"crossroads directory: error: {path}: line 2: field enterprise_number: invalid "
        f"enterprise number '{BAD_CHECK}': mod-97 check digits do not match (97 - first 8 "
        "digits mod 97 = 61, got 16) (nothing imported)"]


@pytest.mark.parametrize(("argv", "message"), [
    (["put-institution", "--enterprise", BAD_CHECK, "--sector", "17"],
     "--enterprise: invalid enterprise number"),
    (["put-institution", "--enterprise", A, "--sector", "x"], "--sector: must be a whole number"),
    (["put-service", "--id", "s", "--kind", "consultation"],
     "--provider: is required when routing is fixed"),
    (["put-authorization", "--id", "a", "--service", "s", "--sector", "1", "--from", "2024-1-1"],
     "--from: '2024-1-1' is not a date"),
    (["put-authorization", "--id", "a", "--service", "s", "--sector", "1", "--capacity", "z"],
     "--capacity: capacity \"z\" is not a whole number"),
    (["put-replacement", "--old", CITIZEN, "--new", "85073003327"], "--new: subject"),
    (["revoke-cert", "--serial", "xyz"], "--serial: 'xyz' is not hexadecimal"),
    (["put-institution", "--enterprise", A, "--sector", "17"], "--hub HOST:PORT is required"),
    (["--hub", "127.0.0.1:1", "put-institution", "--enterprise", A, "--sector", "17"],
     "--ca-cert is required"),
    (["show", "integrations", "--hub", "x:1"], "show integrations needs --subject"),
    (["show", "people"], "unknown kind 'people'"),
    (["import", "/nonexistent/dir.json"], "/nonexistent/dir.json: No such file or directory"),
])
def test_cli_refuses_bad_values_with_one_line(
        capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("crossroads directory: error: ")
    assert message in lines[0]


def test_cli_unreadable_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "put-institution", "--enterprise", A, "--sector", "17",
                        "--hub", "127.0.0.1:1", "--ca-cert", str(tmp_path / "ca.crt"),
                        "--cert", "c", "--key", "k")
    assert code == 2
    assert err.strip() == f"crossroads directory: error: cannot read --ca-cert {tmp_path}/ca.crt: " \
                          "No such file or directory"


@pytest.mark.parametrize(("argv", "message"), [
    (["put-authorization", "--id", "a", "--service", "s"],
     "one of the arguments --institution --sector is required"),
    (["put-authorization", "--id", "a", "--service", "s", "--institution", A, "--sector", "1"],
     "not allowed with argument"),
    (["put-service", "--id", "s", "--kind", "query"], "invalid choice: 'query'"),
    (["put-institution", "--sector", "1"], "the following arguments are required: --enterprise"),
    (["show", "--format", "xml"], "invalid choice: 'xml'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_cli_parse_errors(capsys: pytest.CaptureFixture[str], argv: list[str], message: str
                          ) -> None:
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err


def test_cli_connection_options_before_or_after_the_command() -> None:
    parser = directory_cli.argparse.ArgumentParser(prog="crossroads")
    directory_cli.register(parser.add_subparsers(dest="command"))
    before = parser.parse_args(["directory", "--hub", "h:1", "--ca-cert", "c", "--timeout", "5",
                                "show"])
    after = parser.parse_args(["directory", "show", "--hub", "h:1", "--ca", "c",  # old spelling
                               "--timeout", "5"])
    for args in (before, after):
        assert (args.hub, args.ca_cert, args.cert, args.timeout) == ("h:1", "c", None, 5.0)
    both = parser.parse_args(["directory", "--hub", "a:1", "show", "--hub", "b:2"])
    assert both.hub == "b:2"


def test_cli_put_builds_the_entity() -> None:
    parser = directory_cli.argparse.ArgumentParser(prog="crossroads")
    directory_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([
        "directory", "put-service", "--id", "s", "--version", "3", "--kind", "mutation",
        "--routing", "fan_out", "--integration-required", "--min-phase", "2",
        "--capacity", "1", "--capacity", "7"])
    assert directory_cli.entity_from_args("put-service", args) == Service(
        "s", 3, "mutation", "citizen", "fan_out", "", True, 2, frozenset({1, 7}))
    args = parser.parse_args([
        "directory", "put-authorization", "--id", "a", "--service", "s", "--sector", "17",
        "--to", "2030-01-01"])
    assert directory_cli.entity_from_args("put-authorization", args) == Authorization(
        "a", "s", "", 17, period=Period(date.min, date(2030, 1, 1)))


def test_cli_remove_matches_the_key() -> None:
    entities = parse_json(json.dumps(EVERYTHING))
    match = directory_cli._match
    assert match("institution", ["0428.759.497"], entities) == entities[1]
    assert match("service", ["person.death"], entities) == entities[3]
    assert match("service", ["health.insurability", "2"], entities) == entities[2]
    assert match("integration", [CITIZEN, A, "2"], entities) == entities[7]
    assert match("integration", [CITIZEN, A, "2", "2024-03-01"], entities) == entities[7]
    assert match("revoked_certificate", ["0A:1B:FF"], entities) == entities[9]
    with pytest.raises(directory_cli.CliError, match="no service health.insurability 1"):
        match("service", ["health.insurability", "1"], entities)
    with pytest.raises(directory_cli.CliError, match="takes ID, got 2"):
        match("authorization", ["a", "b"], entities)
    two = [Service("s", 1, routing="fan_out"), Service("s", 2, routing="fan_out")]
    with pytest.raises(directory_cli.CliError, match=r"several entries \(s/1, s/2\)"):
        match("service", ["s"], two)


class _Refused(grpc.RpcError):
    """The status the hub ends a refused call with (code, details, ErrorInfo trailer)."""

    def __init__(self, error: CrossroadsError) -> None:
        self._status = rich_status(error)

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return str(self._status.details)

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return tuple(self._status.trailing_metadata)


class _FakeHub:
    """Accepts the first ``accept`` Apply calls, then refuses like the hub does."""

    def __init__(self, accept: int) -> None:
        self.accept = accept
        self.calls: list[int] = []
        self.revision = 100

    def apply(self, changes: list) -> int:
        self.calls.append(len(changes))
        if len(self.calls) > self.accept:
            raise _Refused(InvalidArgument("change 2: enterprise_number '0403019216': CHECK_DIGITS",
                                           CallReason.INVALID_ENTRY, {"change": "2"}))
        self.revision += len(changes)
        return self.revision


def _fake_connect(monkeypatch: pytest.MonkeyPatch, hub: _FakeHub) -> None:
    @contextmanager
    def connect(args: object) -> Iterator[_FakeHub]:
        yield hub

    monkeypatch.setattr(directory_cli, "_connect", connect)


def test_cli_import_batches_and_reports_a_partial_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = "\n".join(f"a{i},s,,17" for i in range(12))
    path = _write(tmp_path, "authorizations.csv", f"id,service_id,institution,sector\n{rows}\n")
    hub = _FakeHub(accept=10)
    _fake_connect(monkeypatch, hub)
    out, err = io.StringIO(), io.StringIO()
    assert directory_cli.main(["import", str(path), "--batch", "5"], out, err) == 0
    assert hub.calls == [5, 5, 2]
    assert out.getvalue() == "imported 12 entries (12 authorizations) in 3 calls: revision 112\n"

    hub = _FakeHub(accept=1)
    _fake_connect(monkeypatch, hub)
    out, err = io.StringIO(), io.StringIO()
    assert directory_cli.main(["import", str(path), "--batch", "5"], out, err) == 2
    assert out.getvalue() == ""
    assert err.getvalue() == (
        "crossroads directory: error: INVALID_ARGUMENT: INVALID_ENTRY: change 2: enterprise_number "
        "'0403019216': CHECK_DIGITS [entry 8: authorization a7] (entries 1-5 were applied "
        "(revision 105); entries 6-10 of 12 were refused)\n")

    out, err = io.StringIO(), io.StringIO()
    assert directory_cli.main(["import", str(path), "--batch", "5001"], out, err) == 2
    assert "--batch must be between 1 and 5000" in err.getvalue()


def test_cli_put_reports_the_hub_status(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = _FakeHub(accept=0)
    _fake_connect(monkeypatch, hub)
    out, err = io.StringIO(), io.StringIO()
    code = directory_cli.main(["put-institution", "--enterprise", A, "--sector", "17"], out, err)
    assert (code, out.getvalue()) == (2, "")
    assert err.getvalue().startswith(
        "crossroads directory: error: INVALID_ARGUMENT: INVALID_ENTRY: change 2:")
    assert "[entry" not in err.getvalue()  # only import maps the index to a file entry
