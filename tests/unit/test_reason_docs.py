"""docs/PROTOCOL.md lists every reason code with its meaning: the envelope outcomes
(``Reason``, "Reason codes") and the refused calls (``CallReason``, "Call-level reasons",
with the status code each is sent with). A code added without a line there fails here, and so
does a line naming a code that does not exist."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from node.core.reasons import CallReason, Reason

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"


def _table(heading: str) -> list[list[str]]:
    """The rows (cells, stripped) of the first table under ``## heading``, header excluded."""
    lines = PROTOCOL.read_text(encoding="utf-8").splitlines()
    at = lines.index(f"## {heading}")
    rows: list[list[str]] = []
    for line in lines[at + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break  # the table ended
    assert len(rows) > 2, f"no table under {heading!r}"
    return rows[2:]  # after the header and its |---| line


def _documented(rows: list[list[str]]) -> dict[str, list[str]]:
    """Each code named in a row's first cell (``A, B`` names two) -> that row."""
    return {name.strip(): row for row in rows for name in row[0].split(",")}


@pytest.mark.parametrize(("heading", "codes"), [("Reason codes", Reason),
                                                ("Call-level reasons", CallReason)])
def test_every_reason_is_documented_with_its_meaning(heading: str, codes: type) -> None:
    documented = _documented(_table(heading))
    assert sorted(set(documented) - set(codes.__members__)) == [], "documented, not in code"
    assert sorted(set(codes.__members__) - set(documented)) == [], "in code, not documented"
    for name, row in documented.items():
        assert len(row[-1]) > 10, f"{name}: no meaning given"


def test_each_call_reason_names_its_status_code() -> None:
    for name, row in _documented(_table("Call-level reasons")).items():
        assert row[1] in grpc.StatusCode.__members__ or name == CallReason.UNKNOWN, name
