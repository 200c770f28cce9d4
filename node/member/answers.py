"""The provider side of consultations: questions from the hub to the institution's application.

The application keeps a ``Local.Serve`` stream open; :class:`Answering` holds it as the current
*session*. Each question from the hub (a call on ``Node.Answers``) becomes a :class:`Question`
on the session's queue (at most ``MAX_QUEUED`` unread), and :meth:`Answering.answer` waits
for the matching answer until the question's deadline. No application attached -> the source is
``SOURCE_UNAVAILABLE`` at once; too slow -> ``SOURCE_TIMEOUT``. Nothing here ever waits longer
than the hub's deadline.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass, field

from node.core.bounds import MAX_DETAIL_CHARS, MAX_MEDIA_TYPE_CHARS
from node.wire.gen.crossroads.v1 import consult_pb2 as cpb

__all__ = ["Answering", "Session"]


MAX_QUEUED = 1000  # questions waiting for the application to read them
#: Bytes of a reply message on ``Node.Answers`` beyond its answer's data (ids, detail, media
#: type): the hub takes messages of max_payload_bytes + 1 MiB from a provider.
ANSWER_OVERHEAD_BYTES = 64 * 1024


@dataclass(eq=False)
class Session:
    questions: deque[cpb.Question] = field(default_factory=deque)
    waiting: dict[int, asyncio.Future[cpb.Answer]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set when questions arrive

    def resolve(self, answer: cpb.Answer) -> None:
        future = self.waiting.pop(answer.id, None)
        if future is not None and not future.done():
            future.set_result(answer)


def _expire(future: asyncio.Future[cpb.Answer]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class Answering:
    def __init__(self, max_answer_bytes: int = 4 * 1024 * 1024) -> None:
        #: An answer with more data is not forwarded (SOURCE_ERROR): limits.max_payload_bytes.
        self.max_answer_bytes = max_answer_bytes
        self.session: Session | None = None
        self._ids = itertools.count(1)
        self.answered = 0

    def attach(self) -> Session:
        """A new answering application; it replaces the previous one."""
        previous, self.session = self.session, Session()
        if previous is not None:
            for future in previous.waiting.values():
                future.cancel()
        return self.session

    def detach(self, session: Session) -> None:
        if self.session is session:
            self.session = None
        for future in session.waiting.values():
            future.cancel()

    async def answer(self, request: cpb.AnswerRequest) -> cpb.AnswerResponse:
        session = self.session
        if session is None:
            return cpb.AnswerResponse(status=cpb.SOURCE_UNAVAILABLE,
                                      detail="no application is answering at this node")
        if len(session.questions) >= MAX_QUEUED:
            return cpb.AnswerResponse(status=cpb.SOURCE_UNAVAILABLE,
                                      detail="the answering application is saturated")
        question = cpb.Question(id=next(self._ids), envelope=request.envelope,
                                deadline_ms=request.deadline_ms)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[cpb.Answer] = loop.create_future()
        session.waiting[question.id] = future
        session.questions.append(question)
        session.wake.set()
        timer = loop.call_later(max(0.001, request.deadline_ms / 1000), _expire, future)
        try:
            answer = await future
        except TimeoutError:
            return cpb.AnswerResponse(status=cpb.SOURCE_TIMEOUT,
                                      detail=f"no answer within {request.deadline_ms} ms")
        except asyncio.CancelledError:
            if self.session is not session:  # the application went away
                return cpb.AnswerResponse(status=cpb.SOURCE_UNAVAILABLE,
                                          detail="the answering application disconnected")
            raise
        finally:
            timer.cancel()
            session.waiting.pop(question.id, None)
        self.answered += 1
        if len(answer.data) > self.max_answer_bytes:
            return cpb.AnswerResponse(
                status=cpb.SOURCE_ERROR,
                detail=f"the application's answer is {len(answer.data)} bytes, over the limit"
                       f" of {self.max_answer_bytes} (limits.max_payload_bytes)")
        return cpb.AnswerResponse(status=answer.status or cpb.SOURCE_ERROR, data=answer.data,
                                  media_type=answer.media_type[:MAX_MEDIA_TYPE_CHARS],
                                  detail=answer.detail[:MAX_DETAIL_CHARS])

    @property
    def max_reply_bytes(self) -> int:
        """The most one ``AnswerReplies`` message may carry (see ``serve_calls``)."""
        return self.max_answer_bytes + ANSWER_OVERHEAD_BYTES
