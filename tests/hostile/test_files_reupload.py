"""A re-upload that fails keeps the file it would have replaced, byte for byte.

Every way an upload can fail after its file part has started (the body cut off
before its closing boundary, broken framing, a second file part, a file sent to be
printed with a line the printer cannot take, a client that vanishes inside the file
part or after it) is sent over a raw TCP socket against a stored file of the same
name, in a seeded order, through both upload routes.
"""

from __future__ import annotations

import json

import pytest

from tests.hostile._files_support import (
    assert_no_traceback,
    assert_serving,
    gcode,
    part,
    raw_post,
    repeats,
    seeded,
    send_and_drop,
    temp_files,
    wait_until,
)
from tests.test_jobs import MONITOR, job_gateway, upload

__all__ = ["job_gateway"]  # the fixture, re-used

NAME = "keep.gcode"
VARIANTS = (
    "no_closing_boundary",
    "malformed_boundary",
    "second_file_part",
    "unprintable_line_to_print",
    "gone_inside_the_file",
    "gone_after_the_file",
)


async def _stored(client) -> tuple[bytes, dict]:
    content = await (await client.get(f"/api/files/{NAME}/content", headers=MONITOR)).read()
    info = await (await client.get(f"/api/files/{NAME}", headers=MONITOR)).json()
    return content, info


@repeats
async def test_a_failed_reupload_keeps_the_stored_file(job_gateway, caplog, tmp_path, seed, repeat):
    rng, where = seeded(seed, repeat)
    _, client, _, _ = job_gateway
    files_dir = tmp_path / "files"
    original, _ = gcode(rng, rng.randint(50, 400), tag="original")
    response = await upload(client, NAME, original)
    assert response.status == 201, await response.text()
    before = await _stored(client)
    assert before[0] == original

    variants = list(VARIANTS)
    rng.shuffle(variants)
    for variant in variants:
        context = f"{where} variant={variant}"
        path = rng.choice(("/api/files", "/api/files/local"))
        boundary = f"b{rng.getrandbits(48):x}"
        replacement, _ = gcode(rng, rng.randint(2000, 20000), tag=variant)
        file_part = part(boundary, "file", replacement, filename=NAME)
        closing = f"\r\n--{boundary}--\r\n".encode()
        expected: tuple[int, str] | None = (400, "invalid_message")

        if variant == "no_closing_boundary":
            # the whole file, then the body ends (Content-Length matches) somewhere
            # before the closing "--boundary--"
            ending = rng.choice(("", "\r\n", "\r\n--", f"\r\n--{boundary}", f"\r\n--{boundary}-"))
            status, payload = await raw_post(client, path, boundary, file_part + ending.encode())
        elif variant == "malformed_boundary":
            body = file_part + f"\r\n--{boundary}X\r\n\r\nrest".encode()
            status, payload = await raw_post(client, path, boundary, body)
        elif variant == "second_file_part":
            body = file_part + b"\r\n" + part(boundary, "file", b"G28\n", NAME) + closing
            status, payload = await raw_post(client, path, boundary, body)
        elif variant == "unprintable_line_to_print":
            lines = replacement.split(b"\n")
            lines.insert(rng.randint(1, len(lines) - 1), b"G1 X1*3 Y2")
            print_field = part(boundary, "print", b"true") + b"\r\n"
            file_part = part(boundary, "file", b"\n".join(lines), filename=NAME)
            if rng.random() < 0.5:  # Cura sends its fields after the file
                body = print_field + file_part + closing
            else:
                body = file_part + b"\r\n" + print_field.rstrip(b"\r\n") + closing
            status, payload = await raw_post(client, path, boundary, body)
            expected = (409, "conflict")
        else:
            if variant == "gone_inside_the_file":
                cut = rng.randint(len(file_part) // 4, len(file_part) * 3 // 4)
                body = file_part[:cut]
            else:  # the whole file part, then the start of a field, then nothing
                body = file_part + b"\r\n" + part(boundary, "print", b"fa")

            def receiving() -> bool:
                # the gateway has the upload in a temporary file, or (the bug this
                # guards against) has already put it in place of the stored one
                if temp_files(files_dir):
                    return True
                try:
                    return (files_dir / NAME).read_bytes() != original
                except FileNotFoundError:
                    return True

            await send_and_drop(client, path, boundary, body, len(body) + 4096, receiving)
            await wait_until(
                lambda: not temp_files(files_dir),
                f"{context}: the dropped upload's temporary file stayed",
            )
            status = payload = None
            expected = None

        if expected is not None:
            assert status == expected[0], f"{context}: {status} {payload!r}"
            error = json.loads(payload)["error"]
            if path == "/api/files/local":  # OctoPrint's shape: {"error": "<message>"}
                assert isinstance(error, str) and error, context
            else:
                assert error["code"] == expected[1], context
        after = await _stored(client)
        assert after[0] == original, f"{context}: the stored file changed or was lost"
        assert after[1] == before[1], f"{context}: its metadata changed"
        assert temp_files(files_dir) == [], f"{context}: a temporary file was left"

    listing = await (await client.get("/api/files", headers=MONITOR)).json()
    assert [f["name"] for f in listing["files"]] == [NAME], where
    assert_no_traceback(caplog, where)
    await assert_serving(client, where)


@pytest.mark.parametrize("route", ["/api/files", "/api/files/local"])
async def test_an_unprintable_file_sent_to_print_is_refused_with_its_line(
    job_gateway, caplog, route
):
    _, client, _, _ = job_gateway
    good = b"G28\nG1 X1\n"
    assert (await upload(client, "p.gcode", good)).status == 201
    response = await upload(client, "p.gcode", b"G28\nG1 X1\nG1 X1*3 Y2\n", path=route, print="1")
    assert response.status == 409
    error = (await response.json())["error"]
    if route == "/api/files/local":  # OctoPrint's shape: {"error": "<message>"}
        message = error
    else:
        assert error["code"] == "conflict"
        message = error["message"]
    assert message.startswith("p.gcode cannot be printed: line 3 ('G1 X1*3 Y2')")
    content = await client.get("/api/files/p.gcode/content", headers=MONITOR)
    assert await content.read() == good
    assert_no_traceback(caplog, route)
