"""Races on the OctoPrint API: uploads of the file being started and concurrent starts
(one job, never a queue), a download against a delete, select against delete. Random
input comes from the ``seed`` fixture."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from tests.hostile._octoprint_support import (
    CONTROL,
    adapter_of,
    cancel_and_settle,
    check_log,
    jobs_of,
    octo,
    upload,
)
from tests.octoprint_truth.cases import GCODE

__all__ = ["octo"]  # the fixture, re-used


async def test_uploads_of_the_file_being_started_and_starts_race(octo, caplog, seed):
    caplog.set_level(logging.INFO)
    client = octo
    rng = random.Random(seed)
    name = "race.gcode"
    versions = [GCODE + f"; version {i} {rng.random()}\n".encode() for i in range(21)]
    assert (await upload(client, name, versions[0], select="true"))[0] == 201
    before = len(await jobs_of(client))
    start = client.post("/octoprint/mk3/api/job", json={"command": "start"}, headers=CONTROL)
    uploads = [upload(client, name, v) for v in versions[1:]]
    results = await asyncio.gather(start, *uploads)
    assert results[0].status == 204, await results[0].text()
    for status, body in results[1:]:
        assert status in (201, 409), (status, body)
        if status == 409:
            assert isinstance(body["error"], str), body
    stored = (client.jobs.files.directory / name).read_bytes()
    assert stored in versions
    assert client.jobs.queue("mk3") == []
    await cancel_and_settle(client)
    assert len(await jobs_of(client)) == before + 1

    # ten starts at once: one job
    before = len(await jobs_of(client))
    answers = await asyncio.gather(
        *(
            client.post("/octoprint/mk3/api/job", json={"command": "start"}, headers=CONTROL)
            for _ in range(10)
        )
    )
    statuses = sorted(a.status for a in answers)
    assert statuses.count(204) == 1 and set(statuses) <= {204, 409}, statuses
    for answer in answers:
        if answer.status == 409:
            assert isinstance((await answer.json())["error"], str)
    assert client.jobs.queue("mk3") == []
    await cancel_and_settle(client)
    assert len(await jobs_of(client)) == before + 1
    check_log(caplog, f"upload and start races (HYDROGEN_TEST_SEED={seed})")


async def test_a_download_of_a_file_deleted_meanwhile_is_octoprints_404_or_the_whole_file(
    octo, caplog, monkeypatch
):
    """A file deleted between the download's lookup and its open is OctoPrint's 404
    ``{"error": ...}`` (it was an empty 404); one deleted while it is sent is sent
    whole as it was."""
    caplog.set_level(logging.INFO)
    client = octo
    adapter = adapter_of(client)
    directory = client.jobs.files.directory
    call = adapter.api.call

    async def then_deleted(name: str, members: Any, *args: Any, **kwargs: Any) -> Any:
        answer = await call(name, members, *args, **kwargs)
        if name == "file" and members.get("file") == "gone.gcode":
            (directory / "gone.gcode").unlink()
        return answer

    assert (await upload(client, "gone.gcode", b"G28\n"))[0] == 201
    monkeypatch.setattr(adapter.api, "call", then_deleted)
    response = await client.get("/octoprint/mk3/downloads/files/local/gone.gcode", headers=CONTROL)
    assert response.status == 404
    assert isinstance((await response.json())["error"], str)
    monkeypatch.undo()

    data = GCODE * 400  # ~1 MB
    assert (await upload(client, "big.gcode", data))[0] == 201
    url = "/octoprint/mk3/downloads/files/local/big.gcode"
    head = await client.head(url, headers=CONTROL)
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(data)
    assert await head.read() == b""
    response = await client.get(url, headers=CONTROL)
    first = await response.content.read(1000)
    deleted = await client.delete("/octoprint/mk3/api/files/local/big.gcode", headers=CONTROL)
    assert deleted.status == 204
    assert first + await response.read() == data
    check_log(caplog, "download and delete")


async def test_select_and_delete_race(octo, caplog, seed):
    """Select and delete of one file at once: whichever wins, a deleted file is not
    left selected (``start`` would print nothing, or a file uploaded later under the
    name)."""
    caplog.set_level(logging.INFO)
    client = octo
    adapter = adapter_of(client)
    rng = random.Random(seed)
    for round_ in range(12):
        name = f"sel-{round_}.gcode"
        assert (await upload(client, name, b"G28\n"))[0] == 201
        select = client.post(
            f"/octoprint/mk3/api/files/local/{name}", json={"command": "select"}, headers=CONTROL
        )
        delete = client.delete(f"/octoprint/mk3/api/files/local/{name}", headers=CONTROL)
        pair = [select, delete] if rng.random() < 0.5 else [delete, select]
        for answer in await asyncio.gather(*pair):
            assert answer.status in (204, 404, 409), await answer.text()
        exists = (client.jobs.files.directory / name).exists()
        if not exists:
            assert adapter.selected.get("mk3") != name, f"round {round_}: a deleted file selected"
    job = await client.get("/octoprint/mk3/api/job", headers=CONTROL)
    assert job.status == 200
    check_log(caplog, f"select and delete (HYDROGEN_TEST_SEED={seed})")
