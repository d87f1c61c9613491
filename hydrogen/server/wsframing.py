"""Fan-out fast path: WebSocket text frames built by hand, written straight to sockets.

A published frame is encoded once (``hub.publish``); here it is also *framed*
once (RFC 6455 section 5.2) and the same bytes are written to every idle
client's transport, skipping aiohttp's per-client writer. Pure apart from the
transport it is given; ``tests/test_ws_framing_roundtrip.py`` decodes every
length class with aiohttp's own frame reader and the ``websockets`` library's.
"""

from __future__ import annotations

import asyncio
import functools
import struct
from collections.abc import Callable

#: Above this many bytes waiting in the socket buffer, frames go through the queue
#: (and the writer's drain), so a slow client still meets the queue's bounds.
DIRECT_WRITE_LIMIT = 64 * 1024


@functools.lru_cache(maxsize=8)
def text_frame(text: str) -> bytes:
    """An unmasked, uncompressed WebSocket text frame (RFC 6455 5.2), built once per
    published frame and shared by every client it goes to."""
    payload = text.encode("utf-8")
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload


def direct_writer(transport: asyncio.Transport | None) -> Callable[[str], bool] | None:
    """One framed copy written straight to an idle client's socket (``Subscriber.direct``).

    Safe because compression is off (frames are independent of connection state)
    and aiohttp writes its own frames (pings, close) whole, never interleaved.
    Returns False, writing nothing, when the transport is closing or its buffer is
    over ``DIRECT_WRITE_LIMIT``: the frame then takes the queue.
    """
    if transport is None:
        return None

    def write(text: str) -> bool:
        if transport.is_closing() or transport.get_write_buffer_size() > DIRECT_WRITE_LIMIT:
            return False
        transport.write(text_frame(text))
        return True

    return write
