"""Who is acting: the one identity object every transport hands to the dispatch.

Decided once at the edge (an API key, the dashboard cookie, later a token) and
carried with the request: the role check, the printer scope and the audit trail
all read this object, never the raw credential. Pure: no aiohttp.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hydrogen.protocol import Role


@dataclass(frozen=True, slots=True)
class Identity:
    role: Role
    #: How the credential arrived: "header", "query", "cookie", "token" (a bearer token),
    #: "token_query", "token_subprotocol", "oneshot", "internal".
    via: str = "header"
    #: The key's name (logs, audit, presence); never the secret.
    name: str = ""
    #: The printers this identity may see and act on; None is all of them.
    printers: frozenset[str] | None = None
    #: The generation of the key it came from (changes on rotation); a revoked or
    #: rotated key ends every connection, token and cookie that carries the old one.
    generation: str = ""

    def sees(self, printer: str) -> bool:
        return self.printers is None or printer in self.printers

    @property
    def by_token(self) -> bool:
        return self.via.startswith("token") or self.via == "oneshot"

    def visible(self, printers: Iterable[str]) -> list[str]:
        """``printers`` less those outside this identity's scope, order kept."""
        return [name for name in printers if self.sees(name)]


#: What the gateway itself acts as (the firmware asking to pause, a restored queue).
GATEWAY_IDENTITY = Identity(Role.CONTROL, via="internal", name="gateway")
