"""OctoPrint's REST API and push socket, one OctoPrint per printer (docs/octoprint.md).

A translator, not a second engine: each request becomes a call of the one dispatch
(:meth:`hydrogen.api.Api.call`) with the caller's identity, and its payload or
refusal is shaped into OctoPrint's answer.

auth.py     the key as OctoPrint's clients send it; 403 as OctoPrint refuses.
answers.py  Hydrogen's payloads in OctoPrint's shapes (pure).
adapter.py  one request's way into the dispatch (Ask), and the little state OctoPrint
            has that Hydrogen does not (the selected file, login sessions, sockets).
routes.py   the routes: /octoprint/<printer>/api/..., /api/... for the default printer;
            version, settings, users, connection and job here, and:
printer_routes.py  printer, tools, bed, print head, commands, SD;
file_routes.py     files, uploads, downloads;
appkeys.py  application keys: pending requests, appkey_requests and appkey_decide.
push.py     /sockjs/websocket: connected, auth, history, current, events.
"""

from hydrogen.octoprint.adapter import OctoPrintAdapter
from hydrogen.octoprint.routes import setup

__all__ = ["OctoPrintAdapter", "setup"]
