"""Every error code has an HTTP status on both HTTP transports: Hydrogen's own API
(:data:`hydrogen.server.http_api.STATUS_FOR`) and OctoPrint's
(:data:`hydrogen.octoprint.adapter.STATUS_FOR`, the first with OctoPrint's overrides)."""

from __future__ import annotations

import pytest

from hydrogen.octoprint.adapter import STATUS_FOR as OCTOPRINT_STATUS_FOR
from hydrogen.protocol import ErrorCode
from hydrogen.server.http_api import STATUS_FOR


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
        ErrorCode.SERVER_ERROR: (500, 400),
    }
