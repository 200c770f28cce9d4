"""The audit hash chain: extension, verification, and what tampering looks like."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from node.core.audit import (
    FIELDS,
    GENESIS,
    ChainWriter,
    Checkpoint,
    ExportError,
    StoredRecord,
    canonical_json,
    checkpoint_message,
    encode_fields,
    public_key_id,
    purge_detail,
    record_hash,
    segment_digest,
    sign_checkpoint,
    sign_export,
    verify_chain,
    verify_export,
    verify_log,
)
from node.wire.signed import key_id

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


@given(st.lists(st.tuples(*[st.sampled_from(("", "same", "é" * 130, "x" * 300)) | Field] * 10),
                min_size=1, max_size=30))
def test_columns_hash_like_records_one_by_one(records: list[tuple[str, ...]]) -> None:
    """The column-wise encoding (constant columns encoded once, lengths over 255 bytes,
    UTF-8) gives every record the hash :func:`record_hash` gives it."""
    writer = ChainWriter(7, b"\x01" * 32)
    seqs, *fields, prevs, hashes = writer.extend_columns(records)
    prev = b"\x01" * 32
    for i, record in enumerate(records):
        assert (seqs[i], tuple(column[i] for column in fields), prevs[i]) == (8 + i, record, prev)
        prev = record_hash(prev, record)
        assert hashes[i] == prev
    assert (writer.last_seq, writer.last_hash) == (7 + len(records), prev)


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


# -- a chain continued from a signed checkpoint, redaction, checkpoints ---------------------

KEY = Ed25519PrivateKey.generate()
KEYS = {public_key_id(KEY.public_key()): KEY.public_key()}


def checkpointed(records: list[tuple[str, ...]], every: int) -> tuple[list[StoredRecord], list[Checkpoint]]:
    """A chain with a signed checkpoint every ``every`` records and at the end."""
    rows = stored(ChainWriter().extend(records))
    checkpoints, start = [], 0
    for end in [*range(every, len(rows), every), len(rows)]:
        digest = segment_digest(r.hash for r in rows[start:end])
        checkpoints.append(sign_checkpoint(KEY, end, rows[end - 1].hash, 1_000 + end, start, digest))
        start = end
    return rows, checkpoints


def redact(record: StoredRecord, by: int) -> StoredRecord:
    return replace(record, fields=(record.fields[0],) + ("",) * 9, redacted=by)


def purge_record(rows: list[StoredRecord], upto: int) -> list[StoredRecord]:
    """Append a PURGED record allowing redaction up to ``upto``."""
    writer = ChainWriter(rows[-1].seq, rows[-1].hash)
    fields = ("9", "PURGED", "", "", "", "", "", "", "PURGED", purge_detail({"*": 5}, upto))
    return rows + stored(writer.extend([fields]))


def test_a_chain_continues_from_a_start() -> None:
    rows = stored(ChainWriter().extend([("x",) * 10] * 6))
    assert verify_chain(rows[3:], (6, rows[-1].hash), start=(3, rows[2].hash)) is None
    wrong = verify_chain(rows[3:], start=(3, rows[1].hash))
    assert wrong is not None and wrong.seq == 4 and "link broken" in wrong.message


def test_checkpointed_chain_verifies_with_signatures() -> None:
    rows, cps = checkpointed([(str(i),) * 10 for i in range(25)], 10)
    report = verify_log(rows, (25, rows[-1].hash), cps, KEYS)
    assert report.problem is None
    assert (report.records, report.checkpoints, report.signatures_checked) == (25, 3, True)


def test_a_tampered_checkpoint_signature_is_named() -> None:
    rows, cps = checkpointed([(str(i),) * 10 for i in range(25)], 10)
    cps[1] = replace(cps[1], signature=bytes([cps[1].signature[0] ^ 1]) + cps[1].signature[1:])
    problem = verify_log(rows, None, cps, KEYS).problem
    assert problem is not None and str(problem).startswith("checkpoint 20: signature does not")
    # Without the key the signatures are not checked (and the report says so).
    unchecked = verify_log(rows, None, cps, None)
    assert unchecked.problem is None and not unchecked.signatures_checked


def test_a_checkpoint_by_another_key_is_refused() -> None:
    rows, cps = checkpointed([(str(i),) * 10 for i in range(5)], 10)
    other = Ed25519PrivateKey.generate().public_key()
    problem = verify_log(rows, None, cps, {public_key_id(other): other}).problem
    assert problem is not None and "signed by key" in problem.message and problem.what == "checkpoint"


def test_records_deleted_after_a_checkpoint_are_found_even_with_the_head_rewritten() -> None:
    rows, cps = checkpointed([(str(i),) * 10 for i in range(25)], 10)
    problem = verify_log(rows[:15], (15, rows[14].hash), cps, KEYS).problem
    assert problem is not None and problem.seq == 16 and "checkpoint 25" in problem.message


def test_a_deleted_middle_checkpoint_is_found() -> None:
    rows, cps = checkpointed([(str(i),) * 10 for i in range(25)], 10)
    problem = verify_log(rows, None, [cps[0], cps[2]], KEYS).problem
    assert problem is not None and str(problem).startswith("checkpoint 25: covers records after 20")


@given(st.lists(Record, min_size=12, max_size=30), st.data())
def test_redacted_records_keep_the_rest_verifiable(records: list[tuple[str, ...]],
                                                   data: st.DataObject) -> None:
    rows, cps = checkpointed(records, 5)
    last_cp = cps[-1].seq
    rows = purge_record(rows, last_cp)
    purge_seq = rows[-1].seq
    gone = data.draw(st.sets(st.integers(1, last_cp)))
    rows = [redact(r, purge_seq) if r.seq in gone else r for r in rows]
    report = verify_log(rows, None, cps, KEYS)
    assert report.problem is None and report.redacted == len(gone)
    # Editing any live record is still found, even if the redacted one after it is fixed up.
    live = [r for r in rows[:last_cp] if not r.redacted]
    if live:
        victim = data.draw(st.sampled_from(live))
        i = victim.seq - 1
        fields = (victim.fields[0] + "!",) + victim.fields[1:]
        new_hash = record_hash(victim.prev_hash, fields)
        rows[i] = replace(victim, fields=fields, hash=new_hash)
        if rows[i + 1].redacted:  # a redacted successor's link can be forged: no content check
            rows[i + 1] = replace(rows[i + 1], prev_hash=new_hash)
        assert verify_log(rows, None, cps, KEYS).problem is not None


def test_redaction_must_be_accounted_for() -> None:
    rows, cps = checkpointed([(str(i),) * 10 for i in range(20)], 10)
    # Not without checkpoints.
    plain = verify_chain([redact(rows[0], 99)] + rows[1:])
    assert plain is not None and plain.seq == 1 and "purged" in plain.message
    # Not by something that is not a purge record.
    problem = verify_log([redact(rows[0], 5)] + rows[1:], None, cps, KEYS).problem
    assert problem is not None and problem.seq == 1 and "not a purge record" in problem.message
    # Not beyond what the purge covered.
    purged = purge_record(rows, 10)
    problem = verify_log(purged[:14] + [redact(purged[14], 21)] + purged[15:], None, cps, KEYS).problem
    assert problem is not None and problem.seq == 15 and "only covered records up to 10" in problem.message
    # Not after the last checkpoint (outside any signed segment).
    problem = verify_log(purged[:20] + [redact(purged[20], 25)], None, cps, KEYS).problem
    assert problem is not None and "outside any signed checkpoint" in problem.message


def test_a_cut_chain_starts_from_its_signed_checkpoint() -> None:
    rows, cps = checkpointed([(str(i),) * 10 for i in range(20)], 10)
    rows = purge_record(rows, 10)
    report = verify_log(rows[10:], None, cps, KEYS)
    assert report.problem is None and report.anchor == 10 and report.first_seq == 11
    # A cut with no purge record covering it is an unexplained deletion.
    unexplained = verify_log(rows[10:20], None, cps, KEYS).problem
    assert unexplained is not None and "no purge record" in unexplained.message
    # A cut that is not at a checkpoint leaves records missing.
    problem = verify_log(rows[12:], None, cps, KEYS).problem
    assert problem is not None and problem.seq == 1 and "missing" in problem.message


# -- exports -------------------------------------------------------------------------------


def export_document() -> dict:
    rows = ChainWriter().extend([
        ("1", "ACCEPTED", "t1", "S", "R1,R2", "svc", "citizen", "85073003328", "ACCEPTED", ""),
        ("2", "ACCEPTED", "t2", "S", "R1", "svc", "citizen", "00000000097", "ACCEPTED", ""),
        ("3", "DELIVERED", "t1", "", "R1", "", "", "", "DELIVERED", ""),
        ("4", "REJECTED", "", "S", "R1", "svc", "citizen", "85073003328", "NOT_AUTHORIZED", "no"),
    ])

    def as_json(row: tuple[object, ...]) -> dict:
        return {"seq": row[0], "fields": dict(zip(FIELDS, row[1:11], strict=True)),
                "prev_hash": row[11].hex(), "hash": row[12].hex()}  # type: ignore[union-attr]

    body = {"subject": "85073003328", "since_us": 0, "exported_at_us": 5,
            "head": {"seq": 4, "hash": rows[-1][12].hex()}, "checkpoint": None,  # type: ignore[union-attr]
            "records": [as_json(rows[0]), as_json(rows[3])], "deliveries": [as_json(rows[2])]}
    return sign_export(body, KEY)


def test_an_export_verifies_with_the_public_key_only() -> None:
    body = verify_export(export_document(), KEY.public_key())
    assert [r["seq"] for r in body["records"]] == [1, 4]


@pytest.mark.parametrize("edit", [
    lambda d: d["body"]["records"][0]["fields"].__setitem__("sender", "X"),
    lambda d: d["body"]["records"].pop(),
    lambda d: d["body"].__setitem__("subject", "00000000097"),
    lambda d: d["body"]["deliveries"][0]["fields"].__setitem__("receiver", "R2"),
    lambda d: d["body"]["head"].__setitem__("seq", 9),
    lambda d: d["body"].__setitem__("note", "hi"),
    lambda d: d.__setitem__("signature", "00" * 64),
    lambda d: d.__setitem__("format", "other"),
])
def test_any_edit_to_an_export_fails(edit) -> None:  # type: ignore[no-untyped-def]
    document = export_document()
    edit(document)
    with pytest.raises(ExportError):
        verify_export(document, KEY.public_key())


def test_an_export_signed_by_another_key_fails() -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(ExportError, match="signed by key"):
        verify_export(export_document(), other.public_key())


def test_a_consistent_signed_export_of_another_subjects_record_still_fails() -> None:
    """The hub's signature is not enough: every record must be about the subject."""
    document = export_document()
    body = document["body"]
    body["records"][0]["fields"]["subject_number"] = "00000000097"
    fields = tuple(body["records"][0]["fields"][f] for f in FIELDS)
    body["records"][0]["hash"] = record_hash(bytes.fromhex(body["records"][0]["prev_hash"]), fields).hex()
    with pytest.raises(ExportError, match="about another subject"):
        verify_export(sign_export(body, KEY), KEY.public_key())


def test_checkpoint_message_is_domain_separated_and_fixed() -> None:
    message = checkpoint_message(7, bytes(32), 8, 0, bytes(32))
    assert message.startswith(b"crossroads/audit-checkpoint/v1\n") and len(message) == 31 + 88
    assert canonical_json({"b": 1, "a": "\u00e9"}) == b'{"a":"\\u00e9","b":1}'


def test_key_ids_match_the_directory_signing_ids() -> None:
    assert public_key_id(KEY.public_key()) == key_id(KEY.public_key())


def test_an_exported_checkpoint_must_be_the_hubs() -> None:
    document = export_document()
    body = document["body"]
    head_hash = bytes.fromhex(body["head"]["hash"])
    good = sign_checkpoint(KEY, 4, head_hash, 9, 0, bytes(32))
    body["checkpoint"] = good.to_json()
    assert verify_export(sign_export(body, KEY), KEY.public_key())["checkpoint"]["seq"] == 4
    forged = sign_checkpoint(Ed25519PrivateKey.generate(), 4, head_hash, 9, 0, bytes(32))
    body["checkpoint"] = forged.to_json()
    with pytest.raises(ExportError, match="checkpoint 4: signature"):
        verify_export(sign_export(body, KEY), KEY.public_key())
    body["checkpoint"] = sign_checkpoint(KEY, 5, head_hash, 9, 0, bytes(32)).to_json()
    with pytest.raises(ExportError, match="after the exported head"):
        verify_export(sign_export(body, KEY), KEY.public_key())
