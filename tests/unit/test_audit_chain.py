"""The audit hash chain: extension, verification, and what tampering looks like."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.core.audit import GENESIS, ChainWriter, StoredRecord, encode_fields, verify_chain

Field = st.text(max_size=12)
Record = st.tuples(*[Field] * 10)


def stored(rows: list[tuple[object, ...]]) -> list[StoredRecord]:
    return [StoredRecord(int(r[0]), tuple(str(f) for f in r[1:11]), r[11], r[12])  # type: ignore[arg-type]
            for r in rows]


@given(st.lists(Record, min_size=1, max_size=20))
def test_a_written_chain_verifies(records: list[tuple[str, ...]]) -> None:
    writer = ChainWriter()
    rows = writer.extend(records[: len(records) // 2]) + writer.extend(records[len(records) // 2:])
    assert verify_chain(stored(rows), (writer.last_seq, writer.last_hash)) is None
    assert rows[0][11] == GENESIS


@given(st.lists(Record, min_size=2, max_size=20), st.data())
def test_any_field_edit_is_found_at_that_record(records: list[tuple[str, ...]], data: st.DataObject) -> None:
    rows = stored(ChainWriter().extend(records))
    i = data.draw(st.integers(0, len(rows) - 1))
    j = data.draw(st.integers(0, 9))
    fields = list(rows[i].fields)
    fields[j] += "!"
    rows[i] = StoredRecord(rows[i].seq, tuple(fields), rows[i].prev_hash, rows[i].hash)
    problem = verify_chain(rows)
    assert problem is not None and problem.seq == i + 1


def test_field_boundaries_cannot_be_shifted() -> None:
    assert encode_fields(["ab", "c"]) != encode_fields(["a", "bc"])


def test_deletions_are_named() -> None:
    rows = stored(ChainWriter().extend([("x",) * 10] * 6))
    head = (6, rows[-1].hash)
    middle = verify_chain(rows[:2] + rows[3:], head)
    assert middle is not None and middle.seq == 3 and "missing" in middle.message
    tail = verify_chain(rows[:5], head)
    assert tail is not None and tail.seq == 6
    first = verify_chain(rows[1:], head)
    assert first is not None and first.seq == 1


def test_rollback_restores_the_head() -> None:
    writer = ChainWriter()
    writer.extend([("a",) * 10])
    head = (writer.last_seq, writer.last_hash)
    writer.extend([("b",) * 10])
    writer.rollback(*head)
    assert (writer.last_seq, writer.last_hash) == head
