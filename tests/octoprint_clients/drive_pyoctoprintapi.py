"""Every call of ``pyoctoprintapi`` (Home Assistant's OctoPrint library) against one URL.

Runs in the client libraries' own venv (.venv/clients, as .ci/run makes it); nothing
here imports hydrogen. Prints one JSON line per call: ``{"call", "ok", "value" |
"error"}``; the test decides which outcomes are right.

    python drive_pyoctoprintapi.py http://127.0.0.1:5001/octoprint/mk3/ KEY
    python drive_pyoctoprintapi.py http://127.0.0.1:5001/octoprint/mk3/ --appkey

With ``--appkey`` it asks for a key the way Home Assistant's setup does
(``request_app_key``: probe, request, poll until decided), then uses it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any
from urllib.parse import urlparse

import aiohttp
from pyoctoprintapi import OctoprintClient


def describe(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list):
        return [describe(v) for v in value]
    names = [n for n in dir(type(value)) if isinstance(getattr(type(value), n), property)]
    return {n: describe(getattr(value, n)) for n in names}


def report(name: str, ok: bool, **what: Any) -> None:
    print(json.dumps({"call": name, "ok": ok, **what}, default=str), flush=True)


async def appkey(client: OctoprintClient) -> None:
    try:
        key = await client.request_app_key("Home Assistant", "ha", timeout=60)
    except Exception as exc:  # the outcome is what is reported
        report("request_app_key", False, error=f"{type(exc).__name__}: {exc}")
        return
    report("request_app_key", True, value=key)
    client.set_api_key(key)
    try:
        info = await client.get_printer_info()
        report("get_printer_info", True, value=describe(info))
    except Exception as exc:
        report("get_printer_info", False, error=f"{type(exc).__name__}: {exc}")


async def main(url: str, key: str) -> None:
    parsed = urlparse(url)
    async with aiohttp.ClientSession() as session:
        client = OctoprintClient(
            parsed.hostname, session, port=parsed.port, ssl=False, path=parsed.path
        )
        if key == "--appkey":
            await appkey(client)
            return
        client.set_api_key(key)
        calls = [
            ("get_server_info", ()),
            ("get_printer_info", ()),
            ("get_job_info", ()),
            ("get_webcam_info", ()),
            ("get_tracking_info", ()),
            ("get_discovery_info", ()),
            ("set_tool_temperature", ("tool0", 0)),
            ("turn_tool_off", ("tool0",)),
            ("set_bed_temperature", (0,)),
            ("turn_bed_off", ()),
            ("pause_job", ()),
            ("resume_job", ()),
            ("cancel_job", ()),
            ("disconnect", ()),
            ("connect", ()),
            ("restart", ()),
            ("reboot_system", ()),
            ("shutdown", ()),
        ]
        for name, args in calls:
            try:
                value = await getattr(client, name)(*args)
                result = {"call": name, "ok": True, "value": describe(value)}
            except Exception as exc:  # the outcome is what is reported
                result = {"call": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(result, default=str), flush=True)
            if name == "disconnect":
                await asyncio.sleep(0.5)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
