"""A zeroconf browser for tests/test_discovery.py, run in its own network namespace.

Browses ``_octoprint._tcp`` and ``_http._tcp`` from each ``--address`` (mDNS only on
those interfaces; IPv4 or IPv6) and prints one JSON object a line, flushed, until stdin closes or
``--seconds`` pass:

* ``{"event": "resolved", "type", "name", "port", "addresses", "txt", "server"}``
* ``{"event": "fetched", "name", "url", "status", "body"}``: a GET of
  ``http://<first address>:<port><path>api/version`` (``_octoprint._tcp``) or of
  ``<path>`` (``_http._tcp``), with ``X-Api-Key`` if ``--key`` is given, as an app
  that found the service would send it
* ``{"event": "removed", "type", "name"}``: the service said goodbye (or expired)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

from zeroconf import ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

TYPES = ["_octoprint._tcp.local.", "_http._tcp.local."]


def emit(**fields: Any) -> None:
    print(json.dumps(fields, sort_keys=True), flush=True)


def fetch(url: str, key: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"X-Api-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(2000).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(2000).decode("utf-8", "replace")
    except OSError as exc:
        return 0, str(exc)


async def resolve(zc: AsyncZeroconf, type_: str, name: str, key: str | None) -> None:
    info = AsyncServiceInfo(type_, name)
    if not await info.async_request(zc.zeroconf, 3000):
        emit(event="unresolved", type=type_, name=name)
        return
    txt = {
        k.decode("utf-8", "replace"): (v or b"").decode("utf-8", "replace")
        for k, v in info.properties.items()
    }
    addresses = info.parsed_addresses()
    emit(
        event="resolved",
        type=type_,
        name=name,
        port=info.port,
        addresses=addresses,
        txt=txt,
        server=info.server,
    )
    if not addresses:
        return
    path = txt.get("path", "/")
    suffix = "api/version" if type_.startswith("_octoprint") else ""
    host = f"[{addresses[0]}]" if ":" in addresses[0] else addresses[0]
    url = f"http://{host}:{info.port}{path}{suffix}"
    status, body = await asyncio.to_thread(fetch, url, key)
    emit(event="fetched", name=name, url=url, status=status, body=body)


async def main(args: argparse.Namespace) -> None:
    zc = AsyncZeroconf(interfaces=args.address)
    tasks: set[asyncio.Task[None]] = set()

    def changed(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if state_change is ServiceStateChange.Added:
            task = asyncio.ensure_future(resolve(zc, service_type, name, args.key))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif state_change is ServiceStateChange.Removed:
            emit(event="removed", type=service_type, name=name)

    browser = AsyncServiceBrowser(zc.zeroconf, TYPES, handlers=[changed])
    emit(event="browsing", addresses=args.address)
    loop = asyncio.get_running_loop()
    stdin_closed = asyncio.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stdin_closed.set)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stdin_closed.wait(), args.seconds)
    await browser.async_cancel()
    await zc.async_close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", action="append", required=True, help="repeatable")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--key")
    asyncio.run(main(parser.parse_args()))
