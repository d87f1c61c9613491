"""What the benchmark's processes share: the control channel and the frame shapes.

``bench/fanout.py`` (the parent) drives every child over its stdin and stdout.
A child writes one line per message, ``BENCH <json>``; anything else on its
stdout (the gateway's start-up banner) is not part of the channel. The parent
writes plain command lines to the child's stdin; end of file means "stop", so a
parent that dies takes its children with it.

Frames are built here, once, so the three servers under test publish exactly
the same bytes at the same rates and the comparison is like for like.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from typing import Any

#: Prefix of a control line on a child's stdout (``fanout.CONTROL_PREFIX`` too).
CONTROL_PREFIX = "BENCH "
#: The topic the event frames are published on (clients subscribe to it).
EVENT_TOPIC = "bench/events"
SUBPROTOCOL = "hydrogen-protocol"


def raise_nofile_limit() -> int:
    """Lift the soft open-files limit to the hard one; returns the new soft limit.

    1000 clients are 1000 sockets in the server process and as many in the
    client processes; the common default soft limit of 1024 would refuse the
    last few with EMFILE and look like a server failure.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def emit(message: dict[str, Any]) -> None:
    """Write one control line to the parent (flushed: the parent waits on it)."""
    sys.stdout.write(CONTROL_PREFIX + json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def stdin_reader() -> asyncio.StreamReader:
    """The process's stdin as an asyncio stream, so commands never block the loop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def encode(frame: dict[str, Any]) -> str:
    """Compact JSON, as ``hydrogen.protocol.encode`` writes it."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


class EventFrames:
    """Builds the event frames: a sequence number, the publish time and padding.

    ``t`` is ``time.time()`` at publish; client and server share the host's
    clock, so ``receive time - t`` is the publish-to-receive latency. The pad
    brings the encoded frame to about ``size`` bytes (printer events - a
    temperature report, a line of firmware output - are a few hundred bytes).
    """

    def __init__(self, size: int) -> None:
        bare = encode(self._frame(0, 1.7e9, ""))
        self._pad = "x" * max(0, size - len(bare) - 8)  # 8: a longer seq and t

    @staticmethod
    def _frame(seq: int, t: float, pad: str) -> dict[str, Any]:
        return {"type": "event", "topic": EVENT_TOPIC, "seq": seq, "t": t, "pad": pad}

    def frame(self, seq: int, t: float) -> dict[str, Any]:
        return self._frame(seq, t, self._pad)


async def serve_loopback(handler: Any) -> tuple[Any, int]:
    """A bare aiohttp app with one WebSocket route on 127.0.0.1 and a free port:
    ``(runner, port)``; the caller owns ``runner.cleanup()``."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]
