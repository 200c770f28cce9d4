"""The four codecs of a directory entity agree: the stores' JSON, the crossroads.v1 messages,
and the operator's JSON and CSV files all give back the entity they were given, and all name
the fields of node.core.directory_fields."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from node.core import directory as d
from node.core.directory import Entity, Period, kind_of
from node.core.directory_fields import FIELDS, to_fields
from node.core.identifiers import citizen_check_digits, enterprise_check_digits
from node.files.directory_import import (
    COLUMNS,
    entities_to_json,
    entity_to_text_fields,
    parse_csv,
    parse_json,
)
from node.store.directory_store import decode_entity, encode_entity
from node.wire.directory import _ENTRY, change_from_proto, change_to_proto
from node.wire.gen.crossroads.v1 import directory_pb2 as pb
from tests.unit.properties import examples

UINT32 = st.integers(0, 2**32 - 1)
# Enterprise numbers (first digit 0 or 1) with their check digits, normalized as files give them.
ENTERPRISE = st.integers(0, 19_999_999).map(lambda n: f"{n:08d}{enterprise_check_digits(f'{n:08d}')}")
# Citizen numbers of people born in the 1900s (YYMMDD, serial, check digits).
CITIZEN = st.builds(lambda day, serial: f"{day:%y%m%d}{serial:03d}",
                    st.dates(date(1900, 1, 1), date(1999, 12, 31)), st.integers(1, 998)
                    ).map(lambda first9: first9 + citizen_check_digits(first9, born_2000s=False))
SUBJECT = st.one_of(CITIZEN, ENTERPRISE)
# Text as a file keeps it: no control or line-separator characters, no outer blanks.
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
               max_size=12).map(str.strip)
ID = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12)
HEX = st.text("0123456789abcdef", min_size=1, max_size=40)
CAPACITIES = st.frozensets(UINT32, max_size=4)
DAY = st.dates(date(1900, 1, 1), date(2100, 12, 31))


@st.composite
def periods(draw: st.DrawFn) -> Period:
    begin = draw(st.one_of(st.just(date.min), DAY))
    end = draw(st.one_of(st.none(), DAY.filter(lambda day: day >= begin)))
    return Period(begin, end)


@st.composite
def services(draw: st.DrawFn) -> d.Service:
    routing = draw(st.sampled_from(d.Routing))
    provider = draw(ENTERPRISE if routing == d.Routing.FIXED else st.one_of(st.just(""), ENTERPRISE))
    return d.Service(draw(ID), draw(st.integers(1, 2**32 - 1)), draw(st.sampled_from(d.ServiceKind)),
                     draw(st.sampled_from(d.SubjectType)), routing, provider, draw(st.booleans()),
                     draw(UINT32), draw(CAPACITIES))


@st.composite
def authorizations(draw: st.DrawFn) -> d.Authorization:
    institution, sector = draw(st.one_of(st.tuples(ENTERPRISE, st.none()),
                                         st.tuples(st.just(""), UINT32)))
    return d.Authorization(draw(ID), draw(ID), institution, sector, draw(TEXT), draw(CAPACITIES),
                           draw(periods()))


ENTITIES: st.SearchStrategy[Entity] = st.one_of(
    st.builds(d.Institution, ENTERPRISE, UINT32, TEXT, TEXT,
              st.one_of(st.just(""), st.text("0123456789abcdef", min_size=64, max_size=64)),
              st.sampled_from(d.InstitutionStatus)),
    services(),
    authorizations(),
    st.builds(d.Subscription, ID, ENTERPRISE, ID, CAPACITIES, TEXT),
    st.builds(d.Integration, SUBJECT, ENTERPRISE, UINT32, UINT32, periods()),
    st.tuples(SUBJECT, SUBJECT).filter(lambda p: p[0] != p[1]).map(lambda p: d.Replacement(*p)),
    st.builds(d.RevokedCertificate, HEX, st.one_of(st.just(""), ENTERPRISE), TEXT),
)


def _csv_text(entity: Entity) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS[kind_of(entity)])
    row = entity_to_text_fields(entity)
    writer.writerow([row[column] for column in COLUMNS[kind_of(entity)]])
    return out.getvalue()


@examples(300)
@given(ENTITIES)
def test_every_codec_gives_back_the_entity(entity: Entity) -> None:
    kind = kind_of(entity)
    assert list(to_fields(entity)) == [f.name for f in FIELDS[kind]]
    assert decode_entity(kind, encode_entity(entity)) == entity
    wire = pb.DirectoryChange.FromString(change_to_proto(entity, delete=True).SerializeToString())
    assert change_from_proto(wire) == (entity, True)
    assert parse_json(json.dumps(entities_to_json([entity]))) == [entity]
    assert parse_csv(_csv_text(entity), kind=kind) == [entity]


def test_the_codecs_name_the_same_fields() -> None:
    for kind, fields in FIELDS.items():
        names = [f.name for f in fields]
        assert list(COLUMNS[kind]) == names
        proto = [f.name for f in _ENTRY[kind].DESCRIPTOR.fields if f.name != "has_sector"]
        assert proto == names, kind
        assert len({f.stored for f in fields}) == len(fields), kind
