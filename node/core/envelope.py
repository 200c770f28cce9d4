"""Envelope checks: the pure decision on each envelope of a batch.

The hub and the sending node run the same rules, so an error surfaces at the source with the
same reason code the hub would give. The rules work on :class:`EnvelopeHead`, the few fields
routing needs (the wire layer extracts them; the payload itself is never looked at beyond its
size and digest). Order of the checks, first failure wins:

1. ``INVALID_FIELD``: service id missing; a routing text field over
   :data:`~node.core.bounds.MAX_HEAD_TEXT_CHARS`; subject type/number inconsistent.
2. ``SENDER_MISMATCH``: sender field differs from the authenticated identity.
   ``TOO_MANY_RECEIVERS`` / ``DUPLICATE_RECEIVER``: more receivers than
   :attr:`Policy.max_receivers`, or one listed twice. Always checked (also when the directory
   decides the rest), in O(N), before anything that could cost a copy per receiver: the hub
   queues one copy of the envelope per receiver, so a list repeating one receiver 100,000
   times once cost ~12 * N**2 bytes (see :func:`receivers_problem`).
3. ``PAYLOAD_TOO_LARGE`` / ``PAYLOAD_DIGEST_MISMATCH``.
4. ``SUBJECT_NUMBER_INVALID``: citizen or enterprise number fails its rules.
5. ``UNKNOWN_SERVICE``.
6. ``UNKNOWN_RECEIVER``: no receiver, a receiver not on the network, or the sender itself.

Quota (``QUOTA_EXCEEDED``) depends on queue state and is applied by :func:`apply_quota` after
these checks. Everything here is per batch: callers pass the whole list at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

from node.core.bounds import MAX_HEAD_TEXT_CHARS
from node.core.identifiers import citizen_number_problem, enterprise_number_problem
from node.core.reasons import Reason

__all__ = [
    "SUBJECT_CITIZEN",
    "SUBJECT_ENTERPRISE",
    "SUBJECT_NONE",
    "Decision",
    "EnvelopeHead",
    "Policy",
    "apply_quota",
    "check_batch",
    "check_envelope",
    "receivers_problem",
]

#: Default bound on an envelope's receivers (``limits.max_receivers``).
DEFAULT_MAX_RECEIVERS = 1_000

# Subject types, numbered as in the wire enum crossroads.v1.SubjectType.
SUBJECT_UNSPECIFIED = 0
SUBJECT_CITIZEN = 1
SUBJECT_ENTERPRISE = 2
SUBJECT_NONE = 3


class EnvelopeHead(NamedTuple):
    """The routing-relevant fields of one envelope (a NamedTuple: built per envelope on the
    hot path, and tuples are the cheapest immutable records to build)."""

    sender: str
    receivers: tuple[str, ...]
    service_id: str
    service_version: int
    subject_type: int
    subject_number: str
    payload_size: int
    digest_ok: bool = True
    capacity: int = 0
    legal_context: str = ""
    period_begin: str = ""
    period_end: str = ""


class Decision(NamedTuple):
    """The outcome for one envelope: accepted with its receivers, or refused with a reason."""

    reason: Reason
    detail: str = ""
    receivers: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.reason is Reason.ACCEPTED


@dataclass(frozen=True, slots=True)
class Policy:
    """What the checks need to know about the network (static until the directory exists).

    ``services`` holds (service id, version) pairs; version 0 in an envelope means "any".
    ``institutions`` empty means "unknown": receivers are only checked for being distinct and
    not the sender. ``check_services``/``check_receivers`` off = structural checks only (the
    reference directory decides the rest, see :mod:`node.core.directory`).
    """

    institutions: frozenset[str]
    services: frozenset[tuple[str, int]]
    max_payload_bytes: int
    check_services: bool = True
    check_receivers: bool = True
    max_receivers: int = DEFAULT_MAX_RECEIVERS

    def knows_service(self, service_id: str, version: int) -> bool:
        if version == 0:
            return any(sid == service_id for sid, _ in self.services)
        return (service_id, version) in self.services


def check_envelope(
    head: EnvelopeHead, sender: str, policy: Policy,
    memo: dict[object, Decision | None] | None = None, today: date | None = None,
) -> Decision:
    """Decide on one envelope sent by the authenticated institution ``sender``.

    ``memo`` (one dict per batch, see :func:`check_batch`) remembers the service and receiver
    checks, which depend only on those fields: a batch usually repeats a few combinations.
    ``today``: the date the subject's number is checked at (the caller's clock; default:
    the system's)."""
    if not head.service_id:
        return Decision(Reason.INVALID_FIELD, "service_id is required")
    too_long = _overlong_text(head)
    if too_long is not None:
        return too_long
    if head.sender != sender:
        return Decision(
            Reason.SENDER_MISMATCH,
            f"sender field {head.sender!r} differs from the certificate identity {sender}",
        )
    too_many = receivers_problem(head.receivers, policy.max_receivers)
    if too_many is not None:
        return too_many
    if head.payload_size > policy.max_payload_bytes:
        return Decision(
            Reason.PAYLOAD_TOO_LARGE,
            f"payload is {head.payload_size} bytes, limit {policy.max_payload_bytes}",
        )
    if not head.digest_ok:
        return Decision(Reason.PAYLOAD_DIGEST_MISMATCH, "payload sha256 does not match its data")
    subject = _subject_problem(head, today)
    if subject is not None:
        return subject
    if memo is None:
        return _service_and_receivers(head, sender, policy)
    key = (head.service_id, head.service_version, head.receivers)
    decision = memo.get(key)
    if decision is None:
        decision = memo[key] = _service_and_receivers(head, sender, policy)
    return decision


_HEAD_TEXT = ("sender", "service_id", "legal_context", "subject_number", "period_begin",
              "period_end")


def _overlong_text(head: EnvelopeHead) -> Decision | None:
    if (len(head.sender) + len(head.service_id) + len(head.legal_context)
            + len(head.subject_number) + len(head.period_begin) + len(head.period_end)
            <= MAX_HEAD_TEXT_CHARS):
        return None  # the usual case: one comparison
    for name in _HEAD_TEXT:
        size = len(getattr(head, name))
        if size > MAX_HEAD_TEXT_CHARS:
            return Decision(Reason.INVALID_FIELD,
                            f"{name} is {size} characters, at most {MAX_HEAD_TEXT_CHARS}")
    return None


def _service_and_receivers(head: EnvelopeHead, sender: str, policy: Policy) -> Decision:
    if policy.check_services and not policy.knows_service(head.service_id, head.service_version):
        return Decision(
            Reason.UNKNOWN_SERVICE, f"service {head.service_id} v{head.service_version} unknown"
        )
    if not policy.check_receivers:
        return Decision(Reason.ACCEPTED, receivers=head.receivers)
    return _receivers(head, sender, policy)


def _subject_problem(head: EnvelopeHead, today: date | None) -> Decision | None:
    kind, number = head.subject_type, head.subject_number
    if kind == SUBJECT_CITIZEN:
        problem = citizen_number_problem(number, today)
    elif kind == SUBJECT_ENTERPRISE:
        problem = enterprise_number_problem(number)
    elif kind in (SUBJECT_NONE, SUBJECT_UNSPECIFIED):
        if number:
            return Decision(Reason.INVALID_FIELD, "subject number given without a subject type")
        return None
    else:
        return Decision(Reason.INVALID_FIELD, f"subject type {kind} unknown")
    if problem is None:
        return None
    return Decision(Reason.SUBJECT_NUMBER_INVALID, f"subject {number!r}: {problem}")


def _receivers(head: EnvelopeHead, sender: str, policy: Policy) -> Decision:
    if not head.receivers:
        return Decision(Reason.UNKNOWN_RECEIVER, "no receiver given")
    for receiver in head.receivers:
        if receiver == sender:
            return Decision(Reason.UNKNOWN_RECEIVER, "an institution cannot send to itself")
        if policy.institutions and receiver not in policy.institutions:
            return Decision(Reason.UNKNOWN_RECEIVER, f"receiver {receiver} is not on the network")
    return Decision(Reason.ACCEPTED, receivers=head.receivers)


def receivers_problem(receivers: Sequence[str], limit: int) -> Decision | None:
    """``TOO_MANY_RECEIVERS`` beyond ``limit``, ``DUPLICATE_RECEIVER`` for a receiver listed
    twice (naming the first one repeated), else None. O(N): one pass, one set."""
    count = len(receivers)
    if count > limit:
        return Decision(Reason.TOO_MANY_RECEIVERS,
                        f"{count} receivers, limit {limit} (limits.max_receivers)")
    if count > 1:
        seen: set[str] = set()
        for receiver in receivers:
            if receiver in seen:
                return Decision(Reason.DUPLICATE_RECEIVER,
                                f"receiver {receiver[:20]!r} is listed more than once")
            seen.add(receiver)
    return None


def check_batch(
    heads: Iterable[EnvelopeHead | Decision], sender: str, policy: Policy,
    today: date | None = None,
) -> list[Decision]:
    """Decide on a batch (at ``today``: see :func:`check_envelope`); items that are already a
    :class:`Decision` (e.g. malformed bytes refused while decoding) pass through unchanged."""
    memo: dict[object, Decision | None] = {}
    return [
        item if isinstance(item, Decision) else check_envelope(item, sender, policy, memo, today)
        for item in heads
    ]


def apply_quota(
    decisions: Sequence[Decision], pending: Mapping[str, int], quota: int
) -> tuple[list[Decision], dict[str, int]]:
    """Refuse accepted envelopes that would push a receiver's queue past ``quota``.

    An envelope is all or nothing: if any of its receivers is full it is refused for all.
    Returns the new decisions and the per-receiver count of newly queued envelopes.
    """
    added: dict[str, int] = {}
    accepted = Reason.ACCEPTED
    for decision in decisions:
        if decision.reason is accepted:
            for r in decision.receivers:
                added[r] = added.get(r, 0) + 1
    if all(pending.get(r, 0) + n <= quota for r, n in added.items()):
        return list(decisions), added  # no receiver goes over, even with the whole batch
    added = {}
    result: list[Decision] = []
    for decision in decisions:
        if decision.reason is not Reason.ACCEPTED:
            result.append(decision)
            continue
        full = [
            r for r in decision.receivers if pending.get(r, 0) + added.get(r, 0) + 1 > quota
        ]
        if full:
            result.append(
                Decision(Reason.QUOTA_EXCEEDED, f"queue for {full[0]} is full ({quota})")
            )
            continue
        for r in decision.receivers:
            added[r] = added.get(r, 0) + 1
        result.append(decision)
    return result, added
