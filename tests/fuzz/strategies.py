"""Hypothesis strategies for protobuf messages, built from their descriptors.

Design. A request is drawn in three stages, each cheap in Hypothesis's entropy so that
absurd sizes cost no generation time:

1. **Structure** (:func:`messages`): walk ``Descriptor.fields`` recursively (depth bounded by
   ``Sizes.max_depth``) and draw a small value for some of the fields: integers over the
   whole range of their type, enum numbers known or not, strings from a vocabulary of values
   the daemons recognise (enterprise numbers, the demo service...) or arbitrary text, short
   repeated fields. A ``bytes`` field that carries a serialized message (``envelope``,
   ``envelopes``, ``update``; :data:`EMBEDDED`) gets a generated message of that type, itself
   put through stage 3: valid or garbage.
2. **Inflation** (:func:`inflated`): pick one field anywhere in the tree and blow it up, within
   the remaining budget of ``Sizes.max_message`` bytes (a quarter of it per level of
   embedding): a string or bytes value of up to the whole budget (a repeated fill
   character), or a repeated field of up to
   ``Sizes.max_repeated`` elements (copies of one element). ``Sizes.caps`` can bound some
   repeated fields by full name (none by default: an envelope's receivers, once kept short
   while the hub's cost grew as their square, now go to ``max_repeated`` too and meet
   ``limits.max_receivers``).
3. **Wire damage** (:func:`wire_bytes`): serialize, then keep the bytes intact or append
   unknown fields (random field numbers, known numbers with the wrong wire type, groups,
   invalid wire types), truncate, flip bytes, replace by random bytes, or exceed the maximum
   message size by a few bytes.

The strategies return ``bytes``: callers send them with identity serializers so the
garbage reaches the server's own parser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from node.wire.gen.crossroads.v1 import directory_pb2, envelope_pb2

__all__ = ["Sizes", "inflated", "messages", "requests", "wire_bytes"]

#: ``bytes`` fields holding a serialized message: (message full name, field name) -> type.
EMBEDDED: Mapping[tuple[str, str], Descriptor] = {
    **{(m, f): envelope_pb2.Envelope.DESCRIPTOR for m, f in (
        ("crossroads.v1.EnvelopeBatch", "envelopes"),
        ("crossroads.v1.LocalSubmitRequest", "envelopes"),
        ("crossroads.v1.DeliveryBatch", "envelopes"),
        ("crossroads.v1.FetchResponse", "envelopes"),
        ("crossroads.v1.ConsultRequest", "envelope"),
        ("crossroads.v1.AnswerRequest", "envelope"),
        ("crossroads.v1.Question", "envelope"),
    )},
    ("crossroads.v1.SignedDirectoryUpdate", "update"): directory_pb2.DirectoryUpdate.DESCRIPTOR,
}

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


@dataclass(frozen=True)
class Sizes:
    #: The daemons' maximum message size: the budget of an inflated message.
    max_message: int
    #: Longest repeated field after inflation.
    max_repeated: int = 20_000
    max_depth: int = 4
    #: Strings the daemons recognise (identifiers, service ids...), drawn besides any text.
    vocabulary: Sequence[str] = ()
    #: Bounds on some repeated fields, by full name.
    caps: Mapping[str, int] = field(default_factory=dict)


def _class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)  # type: ignore[no-any-return]


def _scalar(fd: FieldDescriptor, sizes: Sizes, depth: int) -> st.SearchStrategy[Any]:
    if fd.type in _INT_RANGES:
        low, high = _INT_RANGES[fd.type]
        return st.integers(low, high)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if fd.type == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in fd.enum_type.values]
        return st.sampled_from(known) | st.integers(-(2**31), 2**31 - 1)
    if fd.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(width=32 if fd.type == FieldDescriptor.TYPE_FLOAT else 64)
    if fd.type == FieldDescriptor.TYPE_STRING:
        words = [st.sampled_from(list(sizes.vocabulary))] if sizes.vocabulary else []
        return st.one_of(*words, st.text(max_size=40))
    if fd.type == FieldDescriptor.TYPE_BYTES:
        embedded = EMBEDDED.get((fd.containing_type.full_name, fd.name))
        if embedded is not None and depth < sizes.max_depth:
            return wire_bytes(embedded, sizes, depth + 1)
        return st.binary(max_size=64)
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(fd.message_type, sizes, depth + 1)
    raise NotImplementedError(fd.type)  # groups: none in our protos


def messages(descriptor: Descriptor, sizes: Sizes, depth: int = 0) -> st.SearchStrategy[Message]:
    """Small, structurally valid messages of ``descriptor``'s type (some fields set)."""
    cls = _class(descriptor)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for fd in descriptor.fields:
        if fd.type == FieldDescriptor.TYPE_MESSAGE and depth >= sizes.max_depth:
            continue
        value = _scalar(fd, sizes, depth)
        fields[fd.name] = st.lists(value, max_size=4) if fd.is_repeated else value

    def build(values: dict[str, Any]) -> Message:
        msg = cls()
        for name, value in values.items():
            fd = descriptor.fields_by_name[name]
            if fd.is_repeated:
                getattr(msg, name).extend(value)
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(msg, name).CopyFrom(value)
            else:
                setattr(msg, name, value)
        return msg

    return st.fixed_dictionaries({}, optional=fields).map(build)


def _slots(msg: Message) -> list[tuple[Message, FieldDescriptor]]:
    """Every (message, field) in ``msg``'s tree that can be inflated."""
    found: list[tuple[Message, FieldDescriptor]] = []
    for fd in msg.DESCRIPTOR.fields:
        if fd.is_repeated or fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            found.append((msg, fd))
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            children = getattr(msg, fd.name) if fd.is_repeated else (
                [getattr(msg, fd.name)] if msg.HasField(fd.name) else [])
            for child in children:
                found += _slots(child)
    return found


@st.composite
def inflated(draw: st.DrawFn, descriptor: Descriptor, sizes: Sizes,
             depth: int = 0) -> Message:
    """A message from :func:`messages`, maybe with one field blown up within the budget."""
    msg = draw(messages(descriptor, sizes, depth))
    slots = _slots(msg)
    if not slots or not draw(st.booleans()):
        return msg
    target, fd = draw(st.sampled_from(slots))
    # A message embedded in a bytes field gets a quarter of its parent's budget.
    budget = max(0, (sizes.max_message >> 2 * depth) - msg.ByteSize() - 64)
    share = draw(st.sampled_from([1, 2, 10, 1000]))  # the whole budget, half, a tenth...
    if fd.is_repeated:
        values = getattr(target, fd.name)
        one = values[0] if len(values) else (
            _class(fd.message_type)() if fd.type == FieldDescriptor.TYPE_MESSAGE
            else draw(_scalar(fd, sizes, sizes.max_depth)))
        cost = 2 + (one.ByteSize() if isinstance(one, Message) else len(str(one)))
        cap = min(sizes.max_repeated, sizes.caps.get(fd.full_name, sizes.max_repeated))
        count = draw(st.integers(0, max(0, min(cap - len(values), budget // share // cost))))
        values.extend([one] * count)
    else:
        fill = draw(st.sampled_from(["x", "é", "\x00", "\U0001f600"]))
        unit = fill if fd.type == FieldDescriptor.TYPE_STRING else fill.encode()
        count = draw(st.integers(0, budget // share // len(fill.encode())))
        setattr(target, fd.name, unit * count)
    return msg


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@st.composite
def _unknown_field(draw: st.DrawFn, known: Sequence[int]) -> bytes:
    """One field the parser does not expect: unknown number, or known with a wrong wire type;
    wire types 3/4 are groups, 6/7 do not exist."""
    number = draw(st.sampled_from(list(known) or [1]) | st.integers(1, 2**29 - 1))
    wire_type = draw(st.integers(0, 7))
    tag = _varint(number << 3 | wire_type)
    if wire_type == 0:
        return tag + _varint(draw(st.integers(0, 2**64 - 1)))
    if wire_type == 1:
        return tag + draw(st.binary(min_size=8, max_size=8))
    if wire_type == 5:
        return tag + draw(st.binary(min_size=4, max_size=4))
    if wire_type == 2:
        body = draw(st.binary(max_size=32))
        length = draw(st.sampled_from([len(body), len(body) + 1, 2**31, 2**64 - 1]))
        return tag + _varint(length) + body
    return tag


@st.composite
def wire_bytes(draw: st.DrawFn, descriptor: Descriptor, sizes: Sizes, depth: int = 0) -> bytes:
    """A serialized message of ``descriptor``'s type: intact, or damaged on the wire."""
    data = draw(inflated(descriptor, sizes, depth)).SerializeToString()
    damage = draw(st.sampled_from(
        ["intact", "intact", "intact", "unknown", "truncate", "flip", "random", "oversize"]))
    if damage == "unknown":
        known = [fd.number for fd in descriptor.fields]
        data += b"".join(draw(st.lists(_unknown_field(known), min_size=1, max_size=5)))
    elif damage == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip" and data:
        raw = bytearray(data)
        for i in draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
            raw[i] ^= draw(st.integers(1, 255))
        data = bytes(raw)
    elif damage == "random":
        data = draw(st.binary(max_size=256))
    elif damage == "oversize" and depth == 0:
        extra = sizes.max_message - len(data) + draw(st.integers(1, 1024))
        data += _varint(999 << 3 | 2) + _varint(max(0, extra)) + b"\x00" * max(0, extra)
    return data


def requests(descriptor: Descriptor, sizes: Sizes, streaming: bool) -> st.SearchStrategy[
        list[bytes]]:
    """The requests of one call: one message, or up to four on a client stream."""
    return st.lists(wire_bytes(descriptor, sizes), min_size=1, max_size=4 if streaming else 1)
