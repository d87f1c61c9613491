"""An access logger that never writes a key.

aiohttp's default format logs the request line with its query string, which
would put ``?key=...`` (the browser WebSocket fallback) into the journal.
"""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

SECRET_QUERY_PARAMS = frozenset(
    {"key", "api_key", "api-key", "apikey", "token", "access_token", "password"}
)


def redacted_path(request: BaseRequest) -> str:
    url = request.rel_url
    if not url.query_string:
        return url.path
    if not SECRET_QUERY_PARAMS.intersection(k.lower() for k in url.query):
        return str(url)
    query = [(k, "***" if k.lower() in SECRET_QUERY_PARAMS else v) for k, v in url.query.items()]
    return str(url.with_query(query))


class RedactingAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.1fms',
            request.remote,
            request.method,
            redacted_path(request),
            response.status,
            time * 1000,
        )
