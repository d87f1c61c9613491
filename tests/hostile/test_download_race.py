"""Hydrogen's own download (``GET /api/files/<name>/content``) against a delete: a file
deleted between the lookup and the open is the documented 404 with an error body (it
was an empty 404 from aiohttp's FileResponse), and one deleted while it is sent
arrives whole, as it was. (OctoPrint's download shares the code:
tests/hostile/test_octoprint_races.py.)"""

from __future__ import annotations

import aiohttp

from hydrogen.jobs.files import FileStore
from tests.conftest import CONTROL_KEY
from tests.hostile._files_support import assert_no_traceback, assert_serving
from tests.test_jobs import job_gateway

__all__ = ["job_gateway"]  # the fixture, re-used

KEY = {"X-Api-Key": CONTROL_KEY}


async def upload(client, name: str, data: bytes) -> None:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    response = await client.post("/api/files", data=form, headers=KEY)
    assert response.status == 201, await response.text()


async def test_a_file_deleted_before_its_download_opens_is_a_404_with_a_body(
    job_gateway, caplog, monkeypatch
):
    _, client, _, _ = job_gateway
    await upload(client, "gone.gcode", b"G28\n")
    look_up = FileStore.get

    async def then_deleted(self: FileStore, name: str):
        stored = await look_up(self, name)
        self.path(stored.name).unlink()  # another client's delete, right after the lookup
        return stored

    monkeypatch.setattr(FileStore, "get", then_deleted)
    response = await client.get("/api/files/gone.gcode/content", headers=KEY)
    assert response.status == 404
    body = await response.json()
    assert body["error"]["code"] == "not_found", body
    monkeypatch.undo()
    assert_no_traceback(caplog, "download of a deleted file")
    await assert_serving(client, "download of a deleted file")


async def test_a_file_deleted_while_it_is_sent_arrives_whole(job_gateway, caplog):
    _, client, _, _ = job_gateway
    data = b"".join(b"G1 X%d Y%d\n" % (i % 200, i % 190) for i in range(60_000))  # ~0.8 MB
    await upload(client, "big.gcode", data)
    head = await client.head("/api/files/big.gcode/content", headers=KEY)
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(data)
    assert head.headers["Content-Disposition"] == 'attachment; filename="big.gcode"'
    response = await client.get("/api/files/big.gcode/content", headers=KEY)
    first = await response.content.read(1000)
    deleted = await client.delete("/api/files/big.gcode", headers=KEY)
    assert deleted.status == 204, await deleted.text()
    assert first + await response.read() == data
    assert_no_traceback(caplog, "download and delete")
