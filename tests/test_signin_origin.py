"""A sign-in or sign-out without the gateway's own Origin (or Referer) is refused with
the documented JSON error (docs/protocol.md §10.4), on a real socket."""

from __future__ import annotations

import pytest

from tests.conftest import CONTROL_KEY
from tests.test_dashboard import FOREIGN, own_origin, set_cookie


@pytest.mark.parametrize("path", ["/login", "/logout"])
@pytest.mark.parametrize("origin", [None, FOREIGN])
async def test_foreign_or_missing_origin_gets_the_forbidden_error(gateway_client, path, origin):
    _, client = await gateway_client()
    headers = {"Origin": origin} if origin else {}
    response = await client.post(
        path, data={"key": CONTROL_KEY}, headers=headers, allow_redirects=False
    )
    assert response.status == 403
    assert response.content_type == "application/json"
    assert set_cookie(response) is None
    body = await response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == "forbidden"
    assert "cross-site request forgery" in error["message"]
    assert error["details"] == {
        "origin": origin,
        "expected": own_origin(client),
        "hint": "sign in from this gateway's own page; behind a proxy, add the origin the"
        " browser uses to server.allowed_origins",
    }


async def test_a_foreign_referer_without_origin_is_refused_the_same_way(gateway_client):
    _, client = await gateway_client()
    response = await client.post(
        "/login",
        data={"key": CONTROL_KEY},
        headers={"Referer": f"{FOREIGN}/page"},
        allow_redirects=False,
    )
    assert response.status == 403
    assert (await response.json())["error"]["details"]["origin"] is None


async def test_own_origin_still_signs_in(gateway_client):
    _, client = await gateway_client()
    response = await client.post(
        "/login",
        data={"key": CONTROL_KEY},
        headers={"Origin": own_origin(client)},
        allow_redirects=False,
    )
    assert response.status == 303 and set_cookie(response)
