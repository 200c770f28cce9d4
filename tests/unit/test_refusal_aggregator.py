"""The pure rule behind aggregated refusals (node.core.refusals)."""

from __future__ import annotations

from node.core.refusals import OTHER_PEERS, RefusalAggregator, RefusalKey

K = RefusalKey("institution:0403019261#1f", "Hub.Register", "CERTIFICATE_REVOKED")


def test_first_recorded_then_counted_then_one_summary_per_interval() -> None:
    agg = RefusalAggregator(interval_us=1000)
    assert agg.note(K, 0, "d0") is True
    assert [agg.note(K, t, f"d{t}") for t in (10, 20, 999)] == [False] * 3
    assert agg.due(500) == []
    (summary,) = agg.due(1000)
    assert (summary.count, summary.first_us, summary.last_us, summary.detail) == (
        3, 10, 999, "d999")
    # A steady flood stays aggregated: the next interval's refusals are only counted.
    assert agg.note(K, 1500, "x") is False
    (summary,) = agg.due(2000)
    assert summary.count == 1
    # An interval with nothing counted closes the key: the next refusal is in full again.
    assert agg.due(3000) == []
    assert agg.note(K, 3100, "y") is True
    assert (agg.seen, agg.recorded) == (6, 2)


def test_keys_are_apart_and_drain_gives_what_is_pending() -> None:
    agg = RefusalAggregator(interval_us=1000)
    other = RefusalKey(K.peer, "Hub.Submit", K.reason)
    assert agg.note(K, 0, "") and agg.note(other, 0, "")
    agg.note(K, 1, "")
    assert [(s.key, s.count) for s in agg.drain()] == [(K, 1)]
    assert agg.next_due_us() is None


def test_open_keys_are_bounded_and_the_overflow_is_still_counted() -> None:
    agg = RefusalAggregator(interval_us=1000, max_keys=2)
    keys = [RefusalKey(f"ipv4:10.0.0.{i}", "Hub.Register", "NO_CERTIFICATE") for i in range(5)]
    assert [agg.note(k, 0, "") for k in keys] == [True, True, True, False, False]
    summaries = {s.key.peer: s.count for s in agg.drain()}
    assert summaries == {OTHER_PEERS: 2}
    assert agg.seen == 5


def test_many_at_once_count_after_the_first() -> None:
    agg = RefusalAggregator(interval_us=1000)
    assert agg.note(K, 0, "batch", times=5) is True
    assert agg.note(K, 1, "batch", times=3) is False
    (summary,) = agg.drain()
    assert summary.count == 4 + 3 and agg.seen == 8
