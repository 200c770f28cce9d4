"""The node's shared hub choice: round robin over the list, moved only by the current one."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from node.rpc.hub_choice import HubChoice


def test_a_failure_at_the_current_address_moves_to_the_next_round_robin() -> None:
    hubs = HubChoice(("a:1", "b:2", "c:3"))
    assert hubs.current == "a:1"
    with capture_logs() as logs:
        hubs.failed("a:1", "UNAVAILABLE: connection refused")
    assert hubs.current == "b:2" and hubs.switches == 1
    assert logs == [{"event": "hub_switched", "failed": "a:1", "now": "b:2",
                     "error": "UNAVAILABLE: connection refused", "switches": 1,
                     "log_level": "warning"}]
    hubs.failed("b:2")
    hubs.failed("c:3")
    assert hubs.current == "a:1" and hubs.switches == 3  # back to the first


def test_reports_about_an_address_left_already_change_nothing() -> None:
    hubs = HubChoice(("a:1", "b:2", "c:3"))
    hubs.failed("a:1")  # the uplink saw the hub go
    hubs.failed("a:1")  # then the directory watch, and the consultations
    hubs.failed("a:1")
    assert hubs.current == "b:2" and hubs.switches == 1  # b:2 was not skipped


def test_a_single_address_stays_and_an_empty_list_is_refused() -> None:
    hubs = HubChoice(("a:1",))
    with capture_logs() as logs:
        hubs.failed("a:1")
    assert hubs.current == "a:1" and hubs.switches == 0 and logs == []
    with pytest.raises(ValueError, match="at least one hub address"):
        HubChoice(())
