"""Unit tests for hydrogen.hub: topic matching, fan-out, coalescing, retention and bounds."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hydrogen.hub import Hub, HubStats, Subscriber, SubscriberOverflow, topic_matches


def frames(subscriber: Subscriber, limit: int = 10_000) -> list[dict[str, Any]]:
    return [json.loads(text) for text in subscriber.take(limit)]


def make(
    patterns: list[str] | None = None, *, queue_limit: int = 256, drop_limit: int = 1024
) -> tuple[Hub, Subscriber]:
    hub = Hub(queue_limit=queue_limit, drop_limit=drop_limit)
    subscriber = hub.attach()
    if patterns:
        hub.subscribe(subscriber, patterns)
    return hub, subscriber


# -- topic_matches ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        # exact
        ("status", "status", True),
        ("status", "statuses", False),
        ("status", "status/x", False),
        ("printer/a/state", "printer/a/state", True),
        ("printer/a/state", "printer/b/state", False),
        # '+' is exactly one level
        ("printer/+/state", "printer/a/state", True),
        ("printer/+/state", "printer/a/temps", False),
        ("printer/+/state", "printer/a/b/state", False),
        ("printer/+/state", "printer/state", False),
        ("printer/+", "printer/a", True),
        ("printer/+", "printer", False),
        ("printer/+", "printer/a/b", False),
        ("+", "status", True),
        ("+", "printer/a", False),
        ("+/+", "a/b", True),
        ("+/+", "a", False),
        # '#' is any remainder, including one or more levels
        ("printer/#", "printer/a", True),
        ("printer/#", "printer/a/state", True),
        ("printer/+/#", "printer/a/state/x", True),
        ("printer/#", "other/a", False),
        ("printer/#", "printers/a", False),
        # '#' alone matches everything
        ("#", "status", True),
        ("#", "printer/a/state", True),
    ],
)
def test_topic_matches(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


def test_hash_also_matches_zero_remaining_levels_like_mqtt() -> None:
    # As in MQTT, "printer/#" matches the parent topic "printer" itself.
    assert topic_matches("printer/#", "printer") is True
    assert topic_matches("printer/+/#", "printer/a") is True
    assert topic_matches("printer/+/#", "printer") is False


# -- publish / routing ----------------------------------------------------------------------


def test_publish_encodes_once_and_queues_the_same_string_for_everyone() -> None:
    hub = Hub()
    subscribers = [hub.attach() for _ in range(5)]
    for subscriber in subscribers:
        hub.subscribe(subscriber, ["status"])
    assert hub.publish("status", {"type": "status", "n": 1}) == 5
    texts = [subscriber.take() for subscriber in subscribers]
    assert all(len(t) == 1 for t in texts)
    first = texts[0][0]
    assert first == '{"type":"status","n":1}'
    assert all(t[0] is first for t in texts)


def test_publish_with_coalesce_also_shares_one_string() -> None:
    hub = Hub()
    a, b = hub.attach(), hub.attach()
    hub.subscribe(a, ["status"])
    hub.subscribe(b, ["#"])
    hub.publish("status", {"n": 1}, coalesce=True)
    assert a.take()[0] is b.take()[0]


def test_publish_routes_only_to_matching_subscribers() -> None:
    hub = Hub()
    status_only = hub.attach("s")
    printer_a = hub.attach("a")
    everything = hub.attach("all")
    nothing = hub.attach("none")
    hub.subscribe(status_only, ["status"])
    hub.subscribe(printer_a, ["printer/a/#"])
    hub.subscribe(everything, ["#"])

    assert hub.publish("status", {"t": "status"}) == 2
    assert hub.publish("printer/a/state", {"t": "a"}) == 2
    assert hub.publish("printer/b/state", {"t": "b"}) == 1
    assert hub.publish("unrelated", {"t": "u"}) == 1

    assert [f["t"] for f in frames(status_only)] == ["status"]
    assert [f["t"] for f in frames(printer_a)] == ["a"]
    assert [f["t"] for f in frames(everything)] == ["status", "a", "b", "u"]
    assert frames(nothing) == []


def test_publish_to_a_subscriber_matching_several_patterns_queues_once() -> None:
    hub, sub = make(["status", "#", "+"])
    assert hub.publish("status", {"n": 1}) == 1
    assert sub.take() == ['{"n":1}']


def test_publish_without_subscribers_does_not_encode() -> None:
    hub = Hub()
    # A frame that cannot be encoded proves publish never tried.
    assert hub.publish("status", {"bad": float("nan")}) == 0
    assert hub.stats.published == 0


def test_has_subscribers() -> None:
    hub, _sub = make(["printer/+/state"])
    assert hub.has_subscribers("printer/x/state")
    assert not hub.has_subscribers("status")


def test_client_ids_are_unique_unless_given() -> None:
    hub = Hub()
    ids = {hub.attach().client_id for _ in range(3)}
    assert len(ids) == 3
    assert hub.attach("mine").client_id == "mine"
    assert len(hub.subscribers) == 4


def test_route_cache_invalidated_on_subscribe() -> None:
    hub, sub = make()
    assert hub.publish("status", {"n": 1}) == 0  # route cached as empty
    hub.subscribe(sub, ["status"])
    assert hub.publish("status", {"n": 2}) == 1
    assert frames(sub) == [{"n": 2}]


def test_route_cache_invalidated_on_unsubscribe() -> None:
    hub, sub = make(["status", "other"])
    assert hub.publish("status", {"n": 1}) == 1
    assert hub.unsubscribe(sub, ["status"]) == ["other"]
    assert hub.publish("status", {"n": 2}) == 0
    assert frames(sub) == [{"n": 1}]


def test_route_cache_invalidated_on_detach() -> None:
    hub = Hub()
    a, b = hub.attach(), hub.attach()
    hub.subscribe(a, ["status"])
    hub.subscribe(b, ["status"])
    assert hub.publish("status", {"n": 1}) == 2
    hub.detach(a)
    assert a not in hub.subscribers
    assert hub.publish("status", {"n": 2}) == 1
    assert frames(b) == [{"n": 1}, {"n": 2}]
    assert a.take() == []  # detached: queue cleared and closed


def test_route_cache_invalidated_for_a_new_subscriber() -> None:
    hub, _a = make(["status"])
    assert hub.publish("status", {"n": 1}) == 1
    b = hub.attach()
    hub.subscribe(b, ["status"])
    assert hub.publish("status", {"n": 2}) == 2


def test_detach_twice_is_harmless() -> None:
    hub, sub = make(["status"])
    hub.detach(sub)
    hub.detach(sub)
    assert hub.subscribers == frozenset()


def test_subscribe_and_unsubscribe_return_sorted_patterns() -> None:
    hub, sub = make()
    assert hub.subscribe(sub, ["b", "a"]) == ["a", "b"]
    assert hub.subscribe(sub, ["a", "c"]) == ["a", "b", "c"]
    assert hub.unsubscribe(sub, ["b", "not-subscribed"]) == ["a", "c"]
    assert sub.patterns == {"a", "c"}


# -- coalescing ------------------------------------------------------------------------------


def test_coalescing_keeps_only_the_latest_value() -> None:
    hub, sub = make(["#"])
    for n in range(10):
        hub.publish("status", {"n": n}, coalesce=True)
    assert sub.backlog == 1
    assert frames(sub) == [{"n": 9}]


def test_coalescing_keeps_the_position_relative_to_other_frames() -> None:
    hub, sub = make(["#"])
    hub.publish("event", {"e": 1})
    hub.publish("status", {"n": 0}, coalesce=True)
    hub.publish("event", {"e": 2})
    for n in range(1, 10):
        hub.publish("status", {"n": n}, coalesce=True)
    hub.publish("event", {"e": 3})
    assert frames(sub) == [{"e": 1}, {"n": 9}, {"e": 2}, {"e": 3}]


def test_coalescing_is_per_topic() -> None:
    hub, sub = make(["#"])
    hub.publish("printer/a/state", {"a": 1}, coalesce=True)
    hub.publish("printer/b/state", {"b": 1}, coalesce=True)
    hub.publish("printer/a/state", {"a": 2}, coalesce=True)
    assert frames(sub) == [{"a": 2}, {"b": 1}]


def test_coalescing_starts_again_after_take() -> None:
    hub, sub = make(["#"])
    hub.publish("status", {"n": 1}, coalesce=True)
    assert frames(sub) == [{"n": 1}]
    hub.publish("status", {"n": 2}, coalesce=True)
    hub.publish("status", {"n": 3}, coalesce=True)
    assert frames(sub) == [{"n": 3}]


def test_coalesced_frames_are_not_dropped_by_the_soft_bound() -> None:
    hub, sub = make(["#"], queue_limit=1)
    hub.publish("event", {"e": 1})
    assert hub.publish("status", {"n": 1}, coalesce=True) == 1
    assert frames(sub) == [{"e": 1}, {"n": 1}]


# -- retained frames ---------------------------------------------------------------------------


def test_retained_frame_is_delivered_on_subscribe() -> None:
    hub = Hub()
    assert hub.publish("status", {"n": 1}, retain=True) == 0
    hub.publish("status", {"n": 2}, retain=True)
    sub = hub.attach()
    hub.subscribe(sub, ["status"])
    assert frames(sub) == [{"n": 2}]


def test_retained_frames_only_for_newly_matching_patterns() -> None:
    hub = Hub()
    hub.publish("status", {"t": "status"}, retain=True)
    hub.publish("printer/a/state", {"t": "a"}, retain=True)
    hub.publish("printer/b/state", {"t": "b"}, retain=True)
    sub = hub.attach()
    hub.subscribe(sub, ["printer/a/#"])
    assert [f["t"] for f in frames(sub)] == ["a"]
    # Re-subscribing to a pattern it already has brings nothing again.
    hub.subscribe(sub, ["printer/a/#"])
    assert frames(sub) == []
    # A new pattern brings only what it newly matches.
    hub.subscribe(sub, ["printer/+/state"])
    assert sorted(f["t"] for f in frames(sub)) == ["a", "b"]
    hub.subscribe(sub, ["status"])
    assert [f["t"] for f in frames(sub)] == ["status"]


def test_retained_frame_is_coalesced_with_a_later_publish() -> None:
    hub = Hub()
    hub.publish("status", {"n": 1}, retain=True)
    sub = hub.attach()
    hub.subscribe(sub, ["status"])
    hub.publish("status", {"n": 2}, retain=True)
    assert frames(sub) == [{"n": 2}]


def test_forget_drops_the_retained_value() -> None:
    hub = Hub()
    hub.publish("printer/a/state", {"n": 1}, retain=True)
    hub.forget("printer/a/state")
    hub.forget("never-retained")
    sub = hub.attach()
    hub.subscribe(sub, ["#"])
    assert frames(sub) == []


# -- hooks -------------------------------------------------------------------------------------


def test_on_subscribe_hooks_get_only_the_new_patterns() -> None:
    hub, sub = make()
    calls: list[tuple[Subscriber, list[str]]] = []
    hub.on_subscribe(lambda s, patterns: calls.append((s, list(patterns))))
    hub.subscribe(sub, ["a", "b"])
    hub.subscribe(sub, ["b", "c"])
    hub.subscribe(sub, ["a", "c"])  # nothing new: no call
    assert calls == [(sub, ["a", "b"]), (sub, ["c"])]


def test_on_subscribe_hook_runs_after_retained_frames_and_may_push() -> None:
    hub = Hub()
    hub.publish("status", {"t": "retained"}, retain=True)
    hub.on_subscribe(lambda s, patterns: s.push_frame({"t": "hook", "p": patterns}))
    sub = hub.attach()
    hub.subscribe(sub, ["status"])
    assert frames(sub) == [{"t": "retained"}, {"t": "hook", "p": ["status"]}]


# -- bounds ------------------------------------------------------------------------------------


def test_soft_bound_drops_events_and_reports_them_first() -> None:
    hub, sub = make(["#"], queue_limit=3, drop_limit=100)
    delivered = [hub.publish("event", {"n": n}) for n in range(5)]
    assert delivered == [1, 1, 1, 0, 0]
    assert sub.dropped_total == 2
    assert frames(sub) == [
        {"type": "dropped", "count": 2, "total": 2},
        {"n": 0},
        {"n": 1},
        {"n": 2},
    ]
    # The notice is sent once; later drops get a new notice with the running total.
    for n in range(5, 9):
        hub.publish("event", {"n": n})
    assert frames(sub) == [
        {"type": "dropped", "count": 1, "total": 3},
        {"n": 5},
        {"n": 6},
        {"n": 7},
    ]
    assert frames(sub) == []


def test_dropped_notice_counts_against_the_take_limit() -> None:
    hub, sub = make(["#"], queue_limit=2, drop_limit=100)
    for n in range(3):
        hub.publish("event", {"n": n})
    first = sub.take(2)
    assert [json.loads(t) for t in first] == [{"type": "dropped", "count": 1, "total": 1}, {"n": 0}]
    assert frames(sub) == [{"n": 1}]


def test_push_is_not_dropped_by_the_soft_bound() -> None:
    hub, sub = make(["#"], queue_limit=2, drop_limit=100)
    hub.publish("event", {"n": 0})
    hub.publish("event", {"n": 1})
    for r in range(5):
        sub.push_frame({"reply": r})
    assert sub.dropped_total == 0
    assert sub.backlog == 7
    assert frames(sub) == [{"n": 0}, {"n": 1}, *({"reply": r} for r in range(5))]


def test_replies_do_not_count_against_the_event_bound() -> None:
    # Taking a reply must not free a slot of the event bound while events wait.
    hub, sub = make(["#"], queue_limit=2, drop_limit=100)
    sub.push("R")
    hub.publish("event", {"n": 1})
    hub.publish("event", {"n": 2})
    assert sub.take(1) == ["R"]
    assert hub.publish("event", {"n": 3}) == 0
    assert frames(sub) == [{"type": "dropped", "count": 1, "total": 1}, {"n": 1}, {"n": 2}]
    # Once the events are taken there is room again.
    assert hub.publish("event", {"n": 4}) == 1


def test_push_hard_bound_overflows_a_client_that_never_reads() -> None:
    _hub, sub = make(["#"], queue_limit=2, drop_limit=3)
    calls: list[int] = []
    sub.on_overflow = lambda: calls.append(1)
    for r in range(5):
        sub.push(f"r{r}")
    assert not sub.overflowed
    sub.push("r5")
    assert sub.overflowed
    sub.push("r6")
    assert calls == [1]
    with pytest.raises(SubscriberOverflow):
        sub.take()


def test_hard_bound_overflow_after_drop_limit_drops_without_progress() -> None:
    hub, sub = make(["#"], queue_limit=2, drop_limit=3)
    calls: list[str] = []
    sub.on_overflow = lambda: calls.append(sub.client_id)
    for n in range(4):  # 2 queued, 2 dropped
        hub.publish("event", {"n": n})
    assert not sub.overflowed
    hub.publish("event", {"n": 4})  # third drop
    assert sub.overflowed
    assert calls == [sub.client_id]
    for n in range(10):  # more drops: on_overflow is not called again
        hub.publish("event", {"n": n})
    assert calls == [sub.client_id]
    assert hub.stats.disconnected_slow == 1
    with pytest.raises(SubscriberOverflow) as info:
        sub.take()
    assert str(info.value) == sub.client_id


def test_mark_sent_resets_the_progress_counter() -> None:
    hub, sub = make(["#"], queue_limit=2, drop_limit=3)
    for _round in range(20):
        # Two drops per round: under drop_limit as long as progress is made between.
        for n in range(4):
            hub.publish("event", {"n": n})
        sent = sub.take()
        sub.mark_sent(len(sent))
    assert not sub.overflowed
    assert sub.dropped_total == 40
    assert sub.sent_total == 20 * 3  # 2 events + 1 dropped notice per round


def test_take_without_mark_sent_is_not_progress() -> None:
    hub, sub = make(["#"], queue_limit=1, drop_limit=3)
    for _round in range(2):
        hub.publish("event", {"n": 0})
        hub.publish("event", {"n": 1})  # dropped
        sub.take()  # the writer is stuck: nothing was marked sent
    assert not sub.overflowed
    hub.publish("event", {"n": 0})
    hub.publish("event", {"n": 1})  # third drop since the last mark_sent
    assert sub.overflowed


def test_hub_stats_counters() -> None:
    hub = Hub(queue_limit=1, drop_limit=100)
    a, b = hub.attach(), hub.attach()
    hub.subscribe(a, ["#"])
    hub.subscribe(b, ["status"])
    hub.publish("status", {"n": 1})  # queued for a and b
    hub.publish("status", {"n": 2})  # dropped for both
    hub.publish("other", {"n": 3})  # dropped for a
    a.mark_sent(len(a.take()))
    assert hub.stats == HubStats(published=3, queued=2, sent=2, dropped=3, disconnected_slow=0)


# -- the consumer side ---------------------------------------------------------------------------


async def test_next_batch_waits_and_wakes_on_publish() -> None:
    hub, sub = make(["status"])
    waiter = asyncio.create_task(sub.next_batch())
    await asyncio.sleep(0)
    assert not waiter.done()
    hub.publish("status", {"n": 1})
    async with asyncio.timeout(1):
        batch = await waiter
    assert batch == ['{"n":1}']


async def test_next_batch_returns_at_once_when_frames_are_queued() -> None:
    hub, sub = make(["status"])
    hub.publish("status", {"n": 1})
    sub.push("r")
    async with asyncio.timeout(1):
        assert await sub.next_batch(limit=1) == ['{"n":1}']
        assert await sub.next_batch() == ["r"]


async def test_next_batch_wakes_on_push() -> None:
    _hub, sub = make()
    waiter = asyncio.create_task(sub.next_batch())
    await asyncio.sleep(0)
    sub.push_frame({"type": "pong"})
    async with asyncio.timeout(1):
        assert await waiter == ['{"type":"pong"}']


async def test_close_wakes_a_waiter_which_returns_nothing() -> None:
    hub, sub = make(["status"])
    waiter = asyncio.create_task(sub.next_batch())
    await asyncio.sleep(0)
    assert not waiter.done()
    hub.detach(sub)
    async with asyncio.timeout(1):
        assert await waiter == []
    # Closed: later publishes and pushes are ignored.
    assert hub.publish("status", {"n": 1}) == 0
    sub.push("r")
    assert sub.backlog == 0


async def test_next_batch_raises_once_overflowed() -> None:
    hub, sub = make(["#"], queue_limit=1, drop_limit=1)
    waiter = asyncio.create_task(sub.next_batch())
    await asyncio.sleep(0)
    hub.publish("event", {"n": 1})  # queued: wakes the waiter
    hub.publish("event", {"n": 2})  # dropped before the writer ran: overflow
    with pytest.raises(SubscriberOverflow):
        async with asyncio.timeout(1):
            await waiter
    with pytest.raises(SubscriberOverflow):
        await sub.next_batch()
