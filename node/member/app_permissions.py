"""Which application may do what at the node's local API: the policy, its refusals, their log.

Design
------
* **Who.** Over a TCP local API (mutual TLS, node/rpc/local_auth.py's gate) the caller is the
  application named by its certificate: kind ``app``, owned by this node's institution, listed
  in the node's ``[[applications]]``; anything else is refused before any work
  (``NOT_AN_APPLICATION``, ``APPLICATION_OF_ANOTHER_INSTITUTION``, ``APPLICATION_UNKNOWN``).
  Over the unix socket the caller is :data:`UNIX_SOCKET`: trusted by the socket's file
  permissions, it may do everything unless ``[local_socket]`` limits it.
* **What.** :class:`Action` per call: ``send`` (Submit, per envelope's service; Outcomes needs
  some send right), ``consult`` (Consult and every call of Consultations, per service),
  ``answer`` (Serve; each question is passed on only for a permitted service), ``fetch``
  (Fetch, Acknowledge). Status and health need only a known caller. A refusal is
  ``PERMISSION_DENIED`` with the stable reason ``APPLICATION_NOT_PERMITTED``.
* **Where the caller is known.** The interceptor puts the :class:`Caller` in a context
  variable for the call's task; the tasks a stream starts inherit it, so a check deep in the
  service (:func:`check_send` per Submit, :func:`check_consult` per consultation call,
  :func:`may_answer` per question of Serve) knows who asks without new arguments.
* **Evidence without floods.** Every refusal is a structured ``local_refused`` log line (app,
  method, service, reason). The same refusal repeated within :data:`AGGREGATE_S` is counted,
  not logged: when the interval ends, one ``local_refused`` line gives the count
  (``repeated``), so an application retrying in a loop leaves one line a minute, and the
  evidence (the rule of :mod:`node.core.refusals`, on the event loop by
  :class:`node.rpc.refusal_flood.TimedRefusals`). :attr:`RefusalLog.total` counts them all
  (the ``crossroads_node_local_refused_total`` metric).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import NoReturn

import structlog

from node.config import ANY_SERVICE, Application, AppPermissions
from node.core.clock import Clock
from node.core.errors import PermissionDenied
from node.core.reasons import CallReason
from node.core.refusals import RefusalKey, RefusalSummary
from node.rpc.refusal_flood import REFUSAL_INTERVAL_S, TimedRefusals
from pki.identity import Identity

__all__ = [
    "UNIX_SOCKET",
    "Action",
    "Caller",
    "LocalPermissions",
    "RefusalLog",
    "answering_limited",
    "check_consult",
    "check_send",
    "current_caller",
    "enter_call",
    "may_answer",
]

log = structlog.get_logger(__name__)

#: Repeats of one refusal (same caller, method, service, reason) within this many seconds
#: are counted into one log line.
AGGREGATE_S = REFUSAL_INTERVAL_S
#: Distinct refusals aggregated at once; beyond, new ones are counted under one overflow key
#: (:data:`node.core.refusals.OTHER_PEERS`).
MAX_KEYS = 1_000


class Action(Enum):
    SEND = "send"
    CONSULT = "consult"
    ANSWER = "answer"
    FETCH = "fetch"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling the local API: ``permissions`` None means everything is allowed."""

    name: str
    permissions: AppPermissions | None

    def may(self, action: Action, service: str | None = None) -> bool:
        """May this caller do ``action`` (for ``service``; None: for some service)?"""
        p = self.permissions
        if p is None:
            return True
        if action is Action.FETCH:
            return p.fetch
        allowed = {Action.SEND: p.send, Action.CONSULT: p.consult, Action.ANSWER: p.answer}[action]
        if service is None:
            return bool(allowed)
        return ANY_SERVICE in allowed or service in allowed

    def may_every_service(self, action: Action) -> bool:
        p = self.permissions
        return p is None or ANY_SERVICE in {
            Action.SEND: p.send, Action.CONSULT: p.consult, Action.ANSWER: p.answer,
        }.get(action, frozenset())

    @property
    def unrestricted(self) -> bool:
        return self.permissions is None


#: The unix socket's clients when ``[local_socket]`` does not limit them.
UNIX_SOCKET = Caller("unix-socket", None)

_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "local_api_caller", default=None)


def current_caller() -> Caller | None:
    return _caller.get()


class RefusalLog:
    """``local_refused`` log lines, repeats aggregated per (caller, method, service, reason)."""

    def __init__(self, interval_s: float = AGGREGATE_S, clock: Clock | None = None) -> None:
        self.total = 0
        self._refusals = TimedRefusals(_log_repeated, interval_s, MAX_KEYS, clock)

    def note(self, caller: str, method: str, service: str, reason: str, detail: str) -> None:
        self.total += 1
        if self._refusals.note(RefusalKey(caller, method, reason, service), detail):
            log.warning("local_refused", app=caller, method=method, service=service or None,
                        reason=reason, detail=detail)


def _log_repeated(summaries: list[RefusalSummary]) -> None:
    for s in summaries:
        log.warning("local_refused", app=s.key.peer, method=s.key.method,
                    service=s.key.service or None, reason=s.key.reason, detail=s.detail,
                    repeated=s.count, first_us=s.first_us, last_us=s.last_us)


class LocalPermissions:
    """The node's application policy: identifies callers and checks their calls."""

    def __init__(self, institution: str, applications: Iterable[Application],
                 unix_socket: AppPermissions | None, refusals: RefusalLog | None = None) -> None:
        self.institution = institution
        self.applications = {a.name: Caller(a.name, a.permissions) for a in applications}
        self.unix_socket = UNIX_SOCKET if unix_socket is None else Caller("unix-socket",
                                                                          unix_socket)
        self.refusals = refusals or RefusalLog()

    def application(self, identity: Identity, method: str) -> Caller:
        """The caller a verified certificate names, or a refusal (logged)."""
        if identity.kind != "app":
            self.refuse(str(identity), method, "", CallReason.NOT_AN_APPLICATION,
                        f"a {identity.kind} certificate is no application certificate; the"
                        " local API takes certificates of profile app")
        if identity.owner != self.institution:
            self.refuse(str(identity), method, "", CallReason.APPLICATION_OF_ANOTHER_INSTITUTION,
                        f"application {identity.name} belongs to institution {identity.owner},"
                        f" not to {self.institution}")
        caller = self.applications.get(identity.name)
        if caller is None:
            self.refuse(identity.name, method, "", CallReason.APPLICATION_UNKNOWN,
                        f"application {identity.name} is not listed in this node's"
                        " [[applications]]")
        return caller

    def check(self, caller: Caller, method: str, action: Action,
              services: Iterable[str] | None = None) -> None:
        """Refuse (raise, logged) unless ``caller`` may do ``action`` for every service."""
        if caller.unrestricted:
            return
        if services is None:
            if not caller.may(action):
                self.refuse(caller.name, method, "", CallReason.APPLICATION_NOT_PERMITTED,
                            f"application {caller.name} may not {action.value}")
            return
        for service in services:
            if not caller.may(action, service):
                self.refuse(caller.name, method, service, CallReason.APPLICATION_NOT_PERMITTED,
                            f"application {caller.name} may not {action.value} {service}")

    def refuse(self, caller: str, method: str, service: str, reason: CallReason,
               detail: str) -> NoReturn:
        self.refusals.note(caller, method, service, reason, detail)
        raise PermissionDenied(detail, reason)


#: The policy the running node checks consultations with (set by the local API's interceptor).
_policy: contextvars.ContextVar[LocalPermissions | None] = contextvars.ContextVar(
    "local_api_policy", default=None)


def check_consult(service: str) -> None:
    """Refuse a consultation of ``service`` the current caller may not make (no caller: the
    call did not come through the local API's interceptor, e.g. a unit test: allowed)."""
    caller, policy = _caller.get(), _policy.get()
    if caller is not None and policy is not None:
        policy.check(caller, "Local.Consult", Action.CONSULT, [service])


def check_send(services: Callable[[], Iterable[str]]) -> None:
    """Refuse a Submit unless the current caller may send to every one of ``services()``
    (asked only for a caller limited to some services)."""
    caller, policy = _caller.get(), _policy.get()
    if caller is not None and policy is not None and not caller.may_every_service(Action.SEND):
        policy.check(caller, "Local.Submit", Action.SEND, sorted(set(services())))


def answering_limited() -> bool:
    """Whether the current caller may answer some services only (Serve filters questions)."""
    caller = _caller.get()
    return caller is not None and not caller.may_every_service(Action.ANSWER)


def may_answer(service: str) -> bool:
    """Whether the current caller may answer ``service``; a refusal is logged, not raised."""
    caller, policy = _caller.get(), _policy.get()
    if caller is None or policy is None or caller.may(Action.ANSWER, service):
        return True
    with contextlib.suppress(PermissionDenied):
        policy.refuse(caller.name, "Local.Serve", service, CallReason.APPLICATION_NOT_PERMITTED,
                      f"application {caller.name} may not answer {service}")
    return False


def enter_call(policy: LocalPermissions, caller: Caller) -> None:
    """Record who the current call is, for checks further down (:func:`check_consult`)."""
    _caller.set(caller)
    _policy.set(policy)
