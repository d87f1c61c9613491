"""One definition per request, served by every transport.

A :class:`Definition` names a request, its parameters and their validation, the
role it needs, the printer it acts on and the handler that returns plain data;
:class:`Api` validates, authorises and runs it. The WebSocket dispatcher
(:mod:`hydrogen.dispatch`), the HTTP API (:mod:`hydrogen.server.http_api`) and
later the OctoPrint adapter and MQTT are thin translators into :meth:`Api.call`
and out of its payload: each adds only its own envelope.
"""

from hydrogen.api.definition import Call, Definition, HttpRoute, Param, Payload
from hydrogen.api.registry import Api

__all__ = ["Api", "Call", "Definition", "HttpRoute", "Param", "Payload"]
