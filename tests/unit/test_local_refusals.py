"""The node's ``local_refused`` log lines: the first refusal in full, repeats counted into
one line when the interval ends (node/member/app_permissions.py)."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from node.member.app_permissions import RefusalLog


async def test_repeats_of_one_refusal_are_one_line_with_their_count_when_the_interval_ends(
) -> None:
    refusals = RefusalLog(interval_s=0.2)
    with capture_logs() as logs:
        for _ in range(3):
            refusals.note("payroll", "Local.Submit", "svc.a", "APPLICATION_NOT_PERMITTED", "no")
        refusals.note("payroll", "Local.Submit", "svc.b", "APPLICATION_NOT_PERMITTED", "no b")
        lines = [(e["service"], e.get("repeated")) for e in logs if e["event"] == "local_refused"]
        assert lines == [("svc.a", None), ("svc.b", None)]  # each service is its own refusal
        await asyncio.sleep(0.5)
    lines = [(e["service"], e.get("repeated")) for e in logs if e["event"] == "local_refused"]
    assert lines == [("svc.a", None), ("svc.b", None), ("svc.a", 2)]
    assert refusals.total == 4
