"""Concurrent uploads of one name (two slicers, a retry storm): every client gets 201
(or the documented 409), and what is stored is exactly one of the uploads, with the
metadata of that upload, in the API, in the cache and on disk."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from hydrogen.jobs.files import FileStore
from tests.conftest import CONTROL_KEY
from tests.hostile._files_support import (
    assert_no_traceback,
    assert_serving,
    gcode,
    repeats,
    seeded,
    temp_files,
    wait_until,
)
from tests.test_jobs import MONITOR, job_gateway

__all__ = ["job_gateway"]  # the fixture, re-used

NAME = "storm.gcode"


async def _one_client(url: str, data: bytes) -> tuple[int, dict]:
    """A real HTTP client of its own (its own session and connection)."""
    form = aiohttp.FormData()
    form.add_field("file", data, filename=NAME, content_type="application/octet-stream")
    headers = {"X-Api-Key": CONTROL_KEY}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=form, headers=headers) as response,
    ):
        return response.status, await response.json()


@repeats
async def test_concurrent_uploads_of_one_name_store_one_of_them_whole(
    job_gateway, caplog, tmp_path, seed, repeat
):
    rng, where = seeded(seed, repeat)
    _, client, _, _ = job_gateway
    files_dir = tmp_path / "files"
    for round_ in range(3):
        context = f"{where} round={round_}"
        count = rng.randint(8, 16)
        uploads = [gcode(rng, rng.randint(10, 3000), tag=f"{round_}-{i}") for i in range(count)]
        urls = [
            str(client.make_url(rng.choice(("/api/files", "/api/files/local")))) for _ in uploads
        ]
        results = await asyncio.gather(
            *(_one_client(url, data) for (data, _), url in zip(uploads, urls, strict=True))
        )
        for status, body in results:
            assert status in (201, 409), f"{context}: {status} {body}"
            if status == 409:
                assert body["error"]["code"] == "conflict", context
        assert 201 in [status for status, _ in results], context

        stored = (files_dir / NAME).read_bytes()
        datas = [data for data, _ in uploads]
        assert stored in datas, f"{context}: the stored file is none of the uploads"
        winner = datas.index(stored)
        expected_lines = len(uploads[winner][1])

        info = await (await client.get(f"/api/files/{NAME}", headers=MONITOR)).json()
        assert info["size_bytes"] == len(stored), context
        assert info["metadata"]["gcode_lines"] == expected_lines, context
        # the metadata kept on disk describes the same file (a restart would show it)
        fresh = await FileStore(files_dir, max_bytes=1 << 30).get(NAME)
        assert fresh.as_dict() == info, context
        meta = json.loads((files_dir / ".meta" / f"{NAME}.json").read_text())
        assert meta["size_bytes"] == len(stored), context
        assert meta["metadata"]["gcode_lines"] == expected_lines, context
        content = await client.get(f"/api/files/{NAME}/content", headers=MONITOR)
        assert await content.read() == stored, context
        await wait_until(lambda: not temp_files(files_dir), f"{context}: temporary files left")
        assert sorted(p.name for p in (files_dir / ".meta").iterdir()) == [f"{NAME}.json"], context

    assert_no_traceback(caplog, where)
    await assert_serving(client, where)
