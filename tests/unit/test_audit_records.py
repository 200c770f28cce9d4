"""Typed audit records: each builder puts each value in its named field, and a record
encodes, hashes and chains exactly as the plain tuple of strings the hub used to build (so
existing logs still verify)."""

from __future__ import annotations

from node.core import audit
from node.core.audit import (
    EVENTS,
    FIELDS,
    GENESIS,
    AuditEvent,
    AuditRecord,
    ChainWriter,
    encode_fields,
    record_hash,
)


def test_fields_are_the_audit_columns_in_hashing_order() -> None:
    assert AuditRecord._fields == FIELDS
    assert set(EVENTS) == {e.value for e in AuditEvent}
    assert "ANSWERED" in EVENTS


def test_accepted() -> None:
    r = audit.accepted("17", "tick", "inst:1", "inst:2,inst:3", "svc", "CITIZEN", "85.01",
                       "consultation")
    assert r == AuditRecord(at_us="17", event="ACCEPTED", hub_ticket="tick", sender="inst:1",
                            receiver="inst:2,inst:3", service_id="svc",
                            subject_type="CITIZEN", subject_number="85.01",
                            reason="ACCEPTED", detail="consultation")
    assert audit.accepted("1", "t", "s", "r", "v", "T", "n").detail == ""


def test_rejected_and_refused_call() -> None:
    r = audit.rejected("17", "inst:1", "inst:2", "svc", "CITIZEN", "85.01", "QUOTA_EXCEEDED",
                       "why")
    assert r == AuditRecord(at_us="17", event="REJECTED", hub_ticket="", sender="inst:1",
                            receiver="inst:2", service_id="svc", subject_type="CITIZEN",
                            subject_number="85.01", reason="QUOTA_EXCEEDED", detail="why")
    c = audit.refused_call("18", "Hub/Submit", "REVOKED", "peer: why")
    assert c == AuditRecord("18", "REJECTED", "", "", "", "Hub/Submit", "", "", "REVOKED",
                            "peer: why")
    assert (c.service_id, c.reason, c.detail) == ("Hub/Submit", "REVOKED", "peer: why")


def test_delivered() -> None:
    r = audit.delivered("17", "tick", "inst:2")
    assert r == AuditRecord("17", "DELIVERED", "tick", "", "inst:2", "", "", "", "DELIVERED",
                            "")
    assert (r.hub_ticket, r.receiver) == ("tick", "inst:2")


def test_answered_takes_the_question_by_name() -> None:
    question = audit.accepted("17", "tick", "inst:1", "inst:2,inst:3", "svc", "CITIZEN",
                              "85.01", "consultation")
    r = audit.answered("20", question, "inst:3", "SOURCE_DATA", "ok")
    assert r == AuditRecord(at_us="20", event="ANSWERED", hub_ticket="tick", sender="inst:1",
                            receiver="inst:3", service_id="svc", subject_type="CITIZEN",
                            subject_number="85.01", reason="SOURCE_DATA", detail="ok")


def test_integration_and_purged() -> None:
    r = audit.integration("17", AuditEvent.DEINTEGRATED, "inst:1", "directory.integration",
                          "85.01", "ACCEPTED", "capacity X")
    assert r == AuditRecord("17", "DEINTEGRATED", "", "inst:1", "", "directory.integration",
                            "", "85.01", "ACCEPTED", "capacity X")
    p = audit.purged("17", '{"upto_seq":3}')
    assert p == AuditRecord("17", "PURGED", "", "", "", "", "", "", "PURGED", '{"upto_seq":3}')


def test_events_are_stored_as_plain_text() -> None:
    for r in (audit.accepted("1", "t", "s", "r", "v", "T", "n"),
              audit.rejected("1", "s", "", "", "", "", "X", ""), audit.delivered("1", "t", "r"),
              audit.integration("1", AuditEvent.INTEGRATED, "s", "v", "n", "ACCEPTED", ""),
              audit.purged("1", "")):
        assert type(r) is AuditRecord
        assert all(type(f) is str for f in r)


def test_records_hash_and_chain_as_the_plain_tuples() -> None:
    records = [
        audit.accepted("17", "tick", "inst:1", "inst:2", "svc", "CITIZEN", "85.01"),
        audit.rejected("17", "inst:1", "", "", "", "", "MALFORMED", "bad"),
        audit.delivered("18", "tick", "inst:2"),
        audit.answered("19", audit.accepted("17", "t2", "a", "b", "v", "T", "n"), "b",
                       "SOURCE_NO_DATA", ""),
        audit.purged("20", "{}"),
    ]
    plain = [tuple(str(f) for f in r) for r in records]
    # What the hub built by hand before (the chain already stored such records).
    assert plain[0] == ("17", "ACCEPTED", "tick", "inst:1", "inst:2", "svc", "CITIZEN",
                        "85.01", "ACCEPTED", "")
    for record, fields in zip(records, plain, strict=True):
        assert record == fields
        assert encode_fields(record) == encode_fields(fields)
        assert record_hash(GENESIS, record) == record_hash(GENESIS, fields)
    typed, untyped = ChainWriter(), ChainWriter()
    assert typed.extend(records) == untyped.extend(plain)
    assert (typed.last_seq, typed.last_hash) == (untyped.last_seq, untyped.last_hash)
    cols_typed = ChainWriter(3, b"\x01" * 32).extend_columns(records)
    cols_plain = ChainWriter(3, b"\x01" * 32).extend_columns(plain)
    assert [list(c) for c in cols_typed] == [list(c) for c in cols_plain]
