"""Every error code has an HTTP status on both HTTP transports: Hydrogen's own API
(:data:`hydrogen.server.http_api.STATUS_FOR`) and OctoPrint's
(:data:`hydrogen.octoprint.adapter.STATUS_FOR`, the first with OctoPrint's overrides)."""

from __future__ import annotations

from typing import Any

import pytest

from hydrogen.jobs.manager import JobManager
from hydrogen.octoprint.adapter import STATUS_FOR as OCTOPRINT_STATUS_FOR
from hydrogen.protocol import ErrorCode
from hydrogen.server.http_api import STATUS_FOR
from tests.conftest import CONTROL_KEY
from tests.test_octoprint_api import octoprint_gateway


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_has_a_status_on_both_transports(code: ErrorCode) -> None:
    assert 400 <= STATUS_FOR[code] <= 599
    assert 400 <= OCTOPRINT_STATUS_FOR[code] <= 599


def test_octoprint_answers_otherwise_only_where_it_overrides() -> None:
    differs = {
        code: (STATUS_FOR[code], OCTOPRINT_STATUS_FOR[code])
        for code in ErrorCode
        if STATUS_FOR[code] != OCTOPRINT_STATUS_FOR[code]
    }
    assert differs == {
        ErrorCode.AUTH_FAILED: (401, 403),
        ErrorCode.PRINTER_ERROR: (502, 409),
    }


async def test_a_failure_of_ours_is_a_500_on_both_not_a_bad_request(
    gateway_client, monkeypatch, caplog
) -> None:
    """A handler that fails is the gateway's fault: 500 with an incident id on
    Hydrogen's API and OctoPrint's (whose clients retry a 5xx, and give up on a 400)."""
    _, client = await octoprint_gateway(gateway_client)

    def broken(self: JobManager, printer: str) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(JobManager, "job_payload", broken)
    headers = {"X-Api-Key": CONTROL_KEY}
    ours = await client.get("/api/printers/mk3/job", headers=headers)
    theirs = await client.get("/octoprint/mk3/api/job", headers=headers)
    assert (ours.status, theirs.status) == (500, 500)
    assert (await ours.json())["error"]["code"] == "server_error"
    message = (await theirs.json())["error"]
    assert isinstance(message, str) and "a bug" not in message
    assert (await client.get("/octoprint/mk3/api/version", headers=headers)).status == 200
