"""HTTP error responses in the protocol's error format, and a middleware
that turns any unexpected exception into one instead of an HTML page."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from hydrogen.protocol import ErrorCode, error_frame

log = logging.getLogger(__name__)

_STATUS_CODES: dict[int, ErrorCode] = {
    400: ErrorCode.INVALID_MESSAGE,
    401: ErrorCode.AUTH_FAILED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID_MESSAGE,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.UNAVAILABLE,
}


def json_error(
    status: int,
    code: ErrorCode,
    message: str,
    details: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body = error_frame(code, message, details)
    del body["type"]
    return web.json_response(body, status=status, headers=headers)


class ErrorResponse(Exception):
    """Raise from deep inside a handler to answer with a ready JSON error."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def raise_error(
    status: int, code: ErrorCode, message: str, details: Mapping[str, Any] | None = None
) -> None:
    raise ErrorResponse(json_error(status, code, message, details))


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ErrorResponse as exc:
        return exc.response
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = _STATUS_CODES.get(exc.status, ErrorCode.INVALID_MESSAGE)
        return json_error(
            exc.status,
            code,
            exc.reason,
            headers={k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")},
        )
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return json_error(500, ErrorCode.SERVER_ERROR, "internal server error")
