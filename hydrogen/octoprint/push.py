"""OctoPrint's push socket (``/sockjs/websocket``, the raw WebSocket its apps use).

On open the socket says ``connected``; the client answers ``{"auth": "<name>:<session>"}``
with the session of a passive login (``POST /api/login``); from then on it gets
``history`` once, ``current`` whenever the printer's state, job or temperatures
changed (at most every half second times its ``throttle``), and ``event`` messages
for what happened: PrintStarted, PrintPaused, PrintResumed, PrintDone, PrintCancelled
and PrintFailed from the printer's job frames, Connected, Disconnected and Error from
its state frames, Upload from uploads through this API.

The job and state frames come from the hub (the same frames a WebSocket subscriber
gets); what ``current`` holds is read through the dispatch, as the REST answers are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from hydrogen.hub import Hub, Subscriber
from hydrogen.octoprint import answers
from hydrogen.octoprint.adapter import Refused
from hydrogen.server.keys import CREDENTIALS, GATEWAY

if TYPE_CHECKING:
    from hydrogen.octoprint.adapter import Ask, OctoPrintAdapter
    from hydrogen.server.credentials import Credentials

log = logging.getLogger(__name__)

#: Seconds between ``current`` messages at throttle 1 (OctoPrint's rate).
CURRENT_INTERVAL = 0.5
MAX_THROTTLE = 120
#: A client message larger than this closes the socket (they are tiny JSON objects).
MAX_MESSAGE_BYTES = 4096
#: The close code of a session refused: not one, its key revoked, no such printer.
REFUSED = 4003
_ACTIVE = ("queued", "printing", "paused")


def job_events(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[str]:
    """The events between two job frames of one printer (pure)."""
    state = after.get("state")
    if before is None or after.get("job_id") is None:
        return []
    new_job = before.get("job_id") != after.get("job_id")
    was = None if new_job else before.get("state")
    if was == state:
        return []
    events = []
    if (state in _ACTIVE and (was is None or was not in _ACTIVE)) or (
        new_job and state in ("completed", "cancelled", "failed")
    ):
        events.append("PrintStarted")
    if state == "paused":
        events.append("PrintPaused")
    elif state == "printing" and was == "paused":
        events.append("PrintResumed")
    elif state == "completed":
        events.append("PrintDone")
    elif state == "cancelled":
        events += ["PrintCancelled", "PrintFailed"]
    elif state == "failed":
        events.append("PrintFailed")
    return events


def state_events(before: str | None, after: str) -> list[str]:
    """Connected / Disconnected / Error between two printer states (pure)."""
    if before is None or before == after:
        return []
    up = answers.operational(after)
    if up and not answers.operational(before):
        return ["Connected"]
    if after == "error":
        return ["Error"]
    if after == "disconnected" and answers.operational(before):
        return ["Disconnected"]
    return []


def event_payload(kind: str, job: Mapping[str, Any], summary: Mapping[str, Any]) -> Any:
    """OctoPrint's payload for ``kind``; who started a job is not recorded (null)."""
    if kind == "Connected":
        return {"port": summary.get("device"), "baudrate": summary.get("baud")}
    if kind == "Disconnected":
        return None
    if kind == "Error":
        return {"error": summary.get("reason") or "error"}
    name = job.get("file")
    payload: dict[str, Any] = {
        "name": name,
        "path": name,
        "origin": "local",
        "size": job.get("total_bytes"),
        "owner": None,
    }
    if kind != "PrintDone":
        payload["user"] = None
    if kind in ("PrintPaused", "PrintCancelled", "PrintFailed"):
        payload["position"] = dict.fromkeys(("x", "y", "z", "e", "f", "t"))
        payload["fileposition"] = job.get("bytes_sent")
        payload["progress"] = int(100 * float(job.get("progress") or 0.0))
    if kind in ("PrintDone", "PrintCancelled", "PrintFailed"):
        payload["time"] = job.get("elapsed_seconds")
    if kind == "PrintFailed":
        payload["reason"] = "cancelled" if job.get("state") == "cancelled" else "error"
    return payload


def connected_message() -> dict[str, Any]:
    version = answers.OCTOPRINT_VERSION
    return {
        "connected": {
            "version": version,
            "display_version": version,
            "branch": None,
            "python_version": None,
            "plugin_hash": None,
            "config_hash": None,
            "debug": False,
            "safe_mode": None,
            "online": None,
            "permissions": [],
        }
    }


class PushSocket:
    """One client of the push socket, for one printer."""

    def __init__(self, adapter: OctoPrintAdapter, ws: web.WebSocketResponse, ask: Ask) -> None:
        self.adapter = adapter
        self.ws = ws
        self.ask = ask
        self.throttle = 1
        self.hub: Hub | None = None
        self.subscriber: Subscriber | None = None
        self.changed = asyncio.Event()
        self.last_current: str | None = None
        self.last_temperature = 0.0
        self.jobs: dict[str, Any] | None = None
        self.state: str | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.credentials: Credentials | None = None

    async def send(self, message: Any) -> None:
        await self.ws.send_str(json.dumps(message, allow_nan=False))

    async def authenticated(self, request: web.Request) -> None:
        """``history`` now, then the loops that follow the printer."""
        self.hub = hub = request.app[GATEWAY].hub
        self.subscriber = hub.attach()
        printer = self.ask.printer
        hub.subscribe(self.subscriber, [f"printer/{printer}/job", f"printer/{printer}/state"])
        await self.send({"history": await self.snapshot(history=True)})
        self.adapter.sockets.add(self)

    async def snapshot(self, *, history: bool) -> dict[str, Any]:
        summary = await self.ask.on_printer("printer")
        job = await self.ask.on_printer("job")
        text = answers.state_text(summary["state"], job.get("state"))
        name = answers.job_file(self.adapter.selected.get(self.ask.printer), job)
        selected = await self.adapter.stored(self.ask, name)
        rest = answers.job(text, job, selected)
        state = answers.state(summary["state"], summary.get("reason"), job.get("state"))
        since = None if history else self.last_temperature
        samples = (await self.ask.on_printer("temperature_history", since=since))["samples"]
        if samples:
            self.last_temperature = samples[-1]["timestamp"] + 0.001
        message = {
            "state": {"text": state["text"], "flags": state["flags"], "error": state["error"]},
            "job": rest["job"],
            "progress": rest["progress"],
            "currentZ": None,
            "offsets": {},
            "resends": {
                "count": summary["link"]["resends"],
                "transmitted": summary["link"]["lines_sent"],
                "ratio": 0,
            },
            "temps": answers.history(samples),
            "logs": [],
            "messages": [],
            "markings": [],
            "serverTime": time.time(),
        }
        if not history:
            message["busyFiles"] = (
                [{"origin": "local", "path": job["file"]}] if answers.is_active(job) else []
            )
        return message

    async def follow(self) -> None:
        """Events from the hub's frames, as they come."""
        assert self.subscriber is not None
        while True:
            batch = await self.subscriber.next_batch()
            if not batch:
                return
            self.subscriber.mark_sent(len(batch))
            for text in batch:
                frame = json.loads(text)
                await self.on_frame(frame)
            self.changed.set()

    async def on_frame(self, frame: Mapping[str, Any]) -> None:
        topic = str(frame.get("topic", ""))
        if topic.endswith("/job"):
            before, self.jobs = self.jobs, dict(frame)
            for kind in job_events(before, frame):
                await self.event(kind, frame, {})
        elif topic.endswith("/state"):
            before, self.state = self.state, str(frame.get("state"))
            for kind in state_events(before, self.state):
                await self.event(kind, {}, frame)

    async def event(self, kind: str, job: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
        payload = event_payload(kind, job, summary)
        await self.send({"event": {"type": kind, "payload": payload}})

    def still_valid(self) -> bool:
        """Is the key of the session that opened this socket still there (not revoked,
        not rotated)?"""
        credentials = self.credentials
        return credentials is None or credentials.still_valid(self.ask.identity)

    async def tick(self) -> None:
        """``current`` when anything changed, at most every interval times the throttle;
        temperatures change all the time, so in practice at that rate. Every interval,
        whatever the throttle, the key is looked at: a revoked one ends the socket."""
        waited = 0
        while True:
            await asyncio.sleep(CURRENT_INTERVAL)
            if not self.still_valid():
                await self.ws.close(code=REFUSED, message=b"the key was revoked")
                return
            waited += 1
            if waited < self.throttle:
                continue
            waited = 0
            current = await self.snapshot(history=False)
            compared = json.dumps({**current, "serverTime": None}, sort_keys=True)
            if compared != self.last_current:
                self.last_current = compared
                await self.send({"current": current})

    def drop(self) -> None:
        """End the connection now (a client that stopped reading: a close frame
        would wait behind what it has not read)."""
        transport = self.transport
        if transport is not None:
            transport.abort()

    def close(self) -> None:
        self.adapter.sockets.discard(self)
        subscriber, self.subscriber = self.subscriber, None
        if subscriber is not None and self.hub is not None:
            self.hub.detach(subscriber)


async def serve(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_MESSAGE_BYTES)
    if not ws.can_prepare(request).ok:
        # OctoPrint's (Tornado's) words for a GET without the upgrade, in its shape
        return web.json_response({"error": 'Can "Upgrade" only to "WebSocket".'}, status=400)
    await ws.prepare(request)
    socket = PushSocket(adapter, ws, ask)
    socket.transport = request.transport
    socket.credentials = request.app.get(CREDENTIALS)
    tasks: list[asyncio.Task[None]] = []
    try:
        await socket.send(connected_message())
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            try:
                data = json.loads(message.data)
            except ValueError:
                continue
            if not isinstance(data, dict):
                continue
            if "throttle" in data:
                value = data["throttle"]
                if isinstance(value, int) and not isinstance(value, bool):
                    socket.throttle = max(1, min(MAX_THROTTLE, value))
            auth = data.get("auth")
            if isinstance(auth, str) and not tasks:
                identity = adapter.session_identity(auth)
                if identity is None or not identity.sees(ask.printer):
                    await ws.close(code=REFUSED, message=b"unknown session")
                    break
                socket.ask = ask.as_identity(identity)
                if not socket.still_valid():  # the session of a key revoked since
                    await ws.close(code=REFUSED, message=b"the key was revoked")
                    break
                try:
                    await socket.authenticated(request)
                except Refused as exc:
                    # no such printer (a session sees every printer a key does): the
                    # answer cannot be an HTTP one any more, the socket is upgraded
                    await ws.close(code=REFUSED, message=exc.message.encode()[:120])
                    break
                tasks = [
                    asyncio.create_task(_closing(socket.follow(), ws), name="octoprint-events"),
                    asyncio.create_task(_closing(socket.tick(), ws), name="octoprint-current"),
                ]
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        socket.close()
    return ws


async def _closing(loop: Any, ws: web.WebSocketResponse) -> None:
    """A loop that stops (the socket closed under it, the gateway stopping, a refusal
    from the dispatch) ends the socket, so the client reconnects."""
    try:
        await loop
    except (ConnectionError, RuntimeError, asyncio.CancelledError):
        raise
    except Exception as exc:
        log.info("octoprint push socket ended: %r", exc)
    finally:
        if not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.close()
