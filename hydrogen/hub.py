"""Topics, subscriptions and per-client bounded outbound queues.

The hub is the fan-out point between producers (the status loop, printer
links, jobs) and WebSocket clients. It knows nothing of aiohttp: a client is a
:class:`Subscriber` whose queue some writer task drains.

Why it looks like this:

* A frame is encoded once per publish and the same ``str`` is queued for every
  matching client, so fan-out costs a pointer per client, not a ``json.dumps``.
* A client that stops reading must never delay the others, and the memory it
  can pin is bounded. ``publish`` never awaits; each queue has a soft bound past
  which frames are dropped (the client is told how many) and a hard bound past
  which the client is cut off.
* Latest-value topics (``status``, a printer's state) *coalesce*: a queued frame
  for the same topic is replaced in place, so a slow client gets the newest
  value rather than a backlog of stale ones.
* Latest-value topics may also be *retained*: a new subscriber receives the
  last frame at once, so a dashboard does not wait for the next change.
* A subscriber may be *scoped* (an identity that may see only some printers):
  its ``topic_filter`` is applied when a topic's route is built, so the cached
  route already leaves it out and publishing costs nothing more; a frame whose
  content must be narrowed (the status frame's printers) is encoded once per
  distinct ``scope`` among the subscribers on its route, and unscoped
  subscribers keep sharing the one encoded frame.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hydrogen.protocol import dropped_frame, encode

#: Bytes of unread replies a client may pin (replies are never dropped, so they are
#: bounded here: a client that asks and never reads is cut off instead).
MAX_REPLY_BYTES = 8 * 1024 * 1024
#: Subscription patterns per connection; each one costs routing time on every publish.
MAX_PATTERNS = 256

__all__ = ["Hub", "HubStats", "Narrow", "Subscriber", "SubscriberOverflow", "topic_matches"]

#: A scoped copy of a frame for subscribers of one ``scope``, or None when they
#: must not get it at all (a notification about a printer outside the scope).
Narrow = Callable[[Mapping[str, Any], Any], Mapping[str, Any] | None]


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT-style match: ``+`` is one segment, a final ``#`` is any remainder."""
    if pattern == topic or pattern == "#":
        return True
    p_parts = pattern.split("/")
    t_parts = topic.split("/")
    for index, part in enumerate(p_parts):
        if part == "#":
            return True
        if index >= len(t_parts):
            return False
        if part != "+" and part != t_parts[index]:
            return False
    return len(p_parts) == len(t_parts)


class _Reply:
    """A queued reply: kept apart from events so it never counts against the soft bound."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class SubscriberOverflow(Exception):
    """Raised to the writer of a client whose backlog passed the hard bound."""


class _Slot:
    """A coalescing queue entry: its text is replaced while it waits."""

    __slots__ = ("text", "topic")

    def __init__(self, topic: str, text: str) -> None:
        self.topic = topic
        self.text = text


@dataclass(slots=True)
class HubStats:
    """Counters read by the metrics collector (never reset)."""

    published: int = 0
    queued: int = 0
    sent: int = 0
    dropped: int = 0
    disconnected_slow: int = 0


class Subscriber:
    """One client's subscriptions and outbound queue.

    ``queue_limit`` bounds the droppable (event) frames waiting; ``drop_limit``
    is the second bound: a client for which that many frames were dropped
    without it accepting a single one in between is considered gone.
    """

    def __init__(
        self,
        hub: Hub,
        client_id: str,
        *,
        queue_limit: int,
        drop_limit: int,
        topic_filter: Callable[[str], bool] | None = None,
        scope: Hashable | None = None,
    ) -> None:
        self._hub = hub
        self.client_id = client_id
        self.patterns: set[str] = set()
        #: Topics this subscriber may receive at all, whatever its patterns (None: all).
        self.topic_filter = topic_filter
        #: What narrowed frames are made for (None: the full frame); subscribers with
        #: equal scopes share one narrowed copy.
        self.scope = scope
        self._queue: deque[str | _Slot | _Reply] = deque()
        self._slots: dict[str, _Slot] = {}
        self._events_queued = 0
        self._queue_limit = queue_limit
        self._drop_limit = drop_limit
        self._dropped_unreported = 0
        self._dropped_since_progress = 0
        self._reply_bytes = 0
        self.dropped_total = 0
        self.sent_total = 0
        self.overflowed = False
        #: Called once when the hard bound is passed, so the edge can cut the
        #: connection even while its writer is blocked on a full socket.
        self.on_overflow: Callable[[], None] | None = None
        #: Optional fast path set by the edge: write a frame now, without the writer
        #: task, returning False when the socket is backed up. Only used while the
        #: writer is parked on an empty queue, so frame order is never changed.
        self.direct: Callable[[str], bool] | None = None
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    def allows(self, topic: str) -> bool:
        """May this subscriber receive frames published on ``topic``?"""
        return self.topic_filter is None or self.topic_filter(topic)

    # -- producer side (never awaits) ---------------------------------------
    def _offer(self, topic: str, text: str, coalesce: bool) -> bool:
        if self._closed:
            return False
        if (
            not coalesce  # latest-value topics keep coalescing a burst in the queue
            and self.direct is not None
            and self._waiter is not None
            and not self._queue
            and not self._dropped_unreported
            and self.direct(text)
        ):
            self.mark_sent(1)
            return True
        if coalesce:
            slot = self._slots.get(topic)
            if slot is not None:
                slot.text = text
                return True
            slot = _Slot(topic, text)
            self._slots[topic] = slot
            self._queue.append(slot)
        else:
            if self._events_queued >= self._queue_limit:
                self._drop()
                return False
            self._queue.append(text)
            self._events_queued += 1
        self._wake()
        return True

    def push(self, text: str) -> None:
        """Queue a frame that must not be dropped (a reply to this client's request).

        Replies are bounded by the client's own request rate; a client that
        floods requests without reading replies still hits the hard bound.
        """
        if self._closed:
            return
        if (
            len(self._queue) >= self._queue_limit + self._drop_limit
            or self._reply_bytes + len(text) > MAX_REPLY_BYTES
        ):
            self._overflow()
            return
        self._reply_bytes += len(text)
        self._queue.append(_Reply(text))
        self._wake()

    def push_frame(self, frame: Mapping[str, Any]) -> None:
        self.push(encode(frame))

    def _drop(self) -> None:
        self.dropped_total += 1
        self._dropped_unreported += 1
        self._dropped_since_progress += 1
        self._hub.stats.dropped += 1
        if self._dropped_since_progress >= self._drop_limit:
            self._overflow()

    def _overflow(self) -> None:
        if not self.overflowed:
            self.overflowed = True
            self._hub.stats.disconnected_slow += 1
            self._wake()
            if self.on_overflow is not None:
                self.on_overflow()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- consumer side ---------------------------------------------------------
    @property
    def backlog(self) -> int:
        return len(self._queue)

    def take(self, limit: int = 64) -> list[str]:
        """Remove up to ``limit`` frames, led by a ``dropped`` notice if any were lost."""
        if self.overflowed:
            raise SubscriberOverflow(self.client_id)
        out: list[str] = []
        if self._dropped_unreported:
            out.append(encode(dropped_frame(self._dropped_unreported, self.dropped_total)))
            self._dropped_unreported = 0
        queue = self._queue
        while queue and len(out) < limit:
            entry = queue.popleft()
            if isinstance(entry, _Slot):
                del self._slots[entry.topic]
                out.append(entry.text)
            elif isinstance(entry, _Reply):
                self._reply_bytes -= len(entry.text)
                out.append(entry.text)
            else:
                out.append(entry)
                self._events_queued -= 1
        return out

    async def next_batch(self, limit: int = 64) -> list[str]:
        """Wait until something is queued, then :meth:`take` it."""
        while not self._queue and not self._dropped_unreported and not self.overflowed:
            if self._closed:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.take(limit)

    def mark_sent(self, count: int) -> None:
        """The writer delivered ``count`` frames: the client is making progress."""
        self.sent_total += count
        self._hub.stats.sent += count
        self._dropped_since_progress = 0

    def close(self) -> None:
        self._closed = True
        self._queue.clear()
        self._slots.clear()
        self._wake()


class Hub:
    """Routes published frames to the subscribers whose patterns match."""

    def __init__(self, *, queue_limit: int = 256, drop_limit: int = 1024) -> None:
        self._subscribers: set[Subscriber] = set()
        #: topic -> (every subscriber it goes to, the scoped ones among them)
        self._route_cache: dict[str, tuple[tuple[Subscriber, ...], tuple[Subscriber, ...]]] = {}
        self._retained: dict[str, str] = {}
        self._queue_limit = queue_limit
        self._drop_limit = drop_limit
        self._ids = itertools.count(1)
        self._subscribe_hooks: list[Callable[[Subscriber, list[str]], None]] = []
        self.stats = HubStats()

    @property
    def subscribers(self) -> frozenset[Subscriber]:
        return frozenset(self._subscribers)

    def attach(
        self,
        client_id: str | None = None,
        *,
        topic_filter: Callable[[str], bool] | None = None,
        scope: Hashable | None = None,
    ) -> Subscriber:
        subscriber = Subscriber(
            self,
            client_id or f"c{next(self._ids)}",
            queue_limit=self._queue_limit,
            drop_limit=self._drop_limit,
            topic_filter=topic_filter,
            scope=scope,
        )
        self._subscribers.add(subscriber)
        return subscriber

    def detach(self, subscriber: Subscriber) -> None:
        subscriber.close()
        if subscriber in self._subscribers:
            self._subscribers.discard(subscriber)
            self._route_cache.clear()

    def on_subscribe(self, hook: Callable[[Subscriber, list[str]], None]) -> None:
        """Call ``hook(subscriber, new_patterns)`` after each subscribe.

        Producers use it to send a newcomer the data a live view needs to
        start full (for example a printer's temperature history).
        """
        self._subscribe_hooks.append(hook)

    def subscribe(self, subscriber: Subscriber, patterns: Iterable[str]) -> list[str]:
        added = [p for p in patterns if p not in subscriber.patterns]
        if added:
            subscriber.patterns.update(added)
            self._route_cache.clear()
            for topic, text in self._retained.items():
                if any(topic_matches(p, topic) for p in added) and subscriber.allows(topic):
                    subscriber._offer(topic, text, coalesce=True)
            for hook in self._subscribe_hooks:
                hook(subscriber, added)
        return sorted(subscriber.patterns)

    def unsubscribe(self, subscriber: Subscriber, patterns: Iterable[str]) -> list[str]:
        before = len(subscriber.patterns)
        subscriber.patterns.difference_update(patterns)
        if len(subscriber.patterns) != before:
            self._route_cache.clear()
        return sorted(subscriber.patterns)

    def _routes(self, topic: str) -> tuple[tuple[Subscriber, ...], tuple[Subscriber, ...]]:
        routes = self._route_cache.get(topic)
        if routes is None:
            route = tuple(
                s
                for s in self._subscribers
                if any(topic_matches(p, topic) for p in s.patterns) and s.allows(topic)
            )
            routes = (route, tuple(s for s in route if s.scope is not None))
            if len(self._route_cache) > 4096:
                self._route_cache.clear()
            self._route_cache[topic] = routes
        return routes

    def _route(self, topic: str) -> tuple[Subscriber, ...]:
        return self._routes(topic)[0]

    def has_subscribers(self, topic: str) -> bool:
        return bool(self._route(topic))

    def publish(
        self,
        topic: str,
        frame: Mapping[str, Any],
        *,
        coalesce: bool = False,
        retain: bool = False,
        narrow: Narrow | None = None,
    ) -> int:
        """Encode ``frame`` once and queue it for every matching subscriber.

        With ``narrow``, a scoped subscriber gets ``narrow(frame, its scope)`` instead
        (encoded once per scope), or nothing when that is None. Returns the number of
        subscribers it was queued for. Never awaits.
        """
        route, scoped = self._routes(topic)
        if not route and not retain:
            return 0
        text = encode(frame)
        if narrow is None or not scoped:
            return self.publish_text(topic, text, coalesce=coalesce, retain=retain, _route=route)
        if retain:
            raise ValueError("a narrowed topic cannot be retained (one text per topic)")
        return self._publish_narrowed(topic, frame, text, route, narrow, coalesce)

    def _publish_narrowed(
        self,
        topic: str,
        frame: Mapping[str, Any],
        text: str,
        route: tuple[Subscriber, ...],
        narrow: Narrow,
        coalesce: bool,
    ) -> int:
        self.stats.published += 1
        texts: dict[Hashable, str | None] = {}
        delivered = 0
        for subscriber in route:
            scope = subscriber.scope
            if scope is None:
                own: str | None = text
            elif scope in texts:
                own = texts[scope]
            else:
                narrowed = narrow(frame, scope)
                own = texts[scope] = None if narrowed is None else encode(narrowed)
            if own is not None and subscriber._offer(topic, own, coalesce):
                delivered += 1
        self.stats.queued += delivered
        return delivered

    def publish_text(
        self,
        topic: str,
        text: str,
        *,
        coalesce: bool = False,
        retain: bool = False,
        _route: tuple[Subscriber, ...] | None = None,
    ) -> int:
        if retain:
            self._retained[topic] = text
        route = self._route(topic) if _route is None else _route
        self.stats.published += 1
        delivered = 0
        for subscriber in route:
            if subscriber._offer(topic, text, coalesce or retain):
                delivered += 1
        self.stats.queued += delivered
        return delivered

    def forget(self, topic: str) -> None:
        """Drop a retained value (for example when a printer is removed)."""
        self._retained.pop(topic, None)
