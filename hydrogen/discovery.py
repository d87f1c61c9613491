"""Zeroconf (mDNS / DNS-SD) announcement of each printer's OctoPrint root and the dashboard.

Each printer is announced as ``_octoprint._tcp`` with the TXT keys OctoPrint publishes
(``path`` = ``/octoprint/<printer>/``, ``version``, ``api``, ``uuid``, ``model``), so
PrusaSlicer's "Browse" and phone apps list every printer; the dashboard is
``_http._tcp`` with ``path`` ``/``.

Two halves: what is announced (:func:`describe`, :func:`choose_addresses`, the name
rules) is pure and tested as "values in, services out"; :class:`Announcer` is the thin
part that hands them to the ``zeroconf`` library (an optional extra) and withdraws them.
Nothing here may hold up start-up or shutdown: registration runs in a background task
and every failure is one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import ipaddress
import logging
import re
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("hydrogen.discovery")

OCTOPRINT_TYPE = "_octoprint._tcp.local."
HTTP_TYPE = "_http._tcp.local."
#: A DNS label is at most 63 bytes. Four are kept free for the "-N" zeroconf appends
#: when another responder on the network already has the name (it refuses, rather
#: than truncates, a renamed label over 63 bytes).
INSTANCE_BYTES = 59
#: The TXT ``model`` when the host's own model is not known.
DEFAULT_MODEL = "Hydrogen"
#: Where Linux shows a device-tree board's model (Raspberry Pi: "Raspberry Pi 4 Model B Rev 1.4").
MODEL_FILES = ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model")
#: uuid5 namespace of the per-printer uuids (fixed: the uuids must survive restarts).
UUID_NAMESPACE = uuid.UUID("9e0b0829-316a-4806-baaf-8754e8dfb314")
#: How long shutdown waits for the goodbye packets.
WITHDRAW_SECONDS = 2.0
#: How often a wildcard bind looks at the interfaces again (a new DHCP lease, Wi-Fi
#: that came up after the gateway): on a change the services are announced anew.
REFRESH_SECONDS = 30.0
INSTALL_HINT = "pip install 'hydrogen-gateway[discovery]' (or: pip install zeroconf)"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_HOSTNAME = re.compile(r"[^A-Za-z0-9-]+")


# -- the pure part: names, services, addresses ----------------------------------------


@dataclass(frozen=True)
class Service:
    """One DNS-SD service: ``<instance>.<type>`` at ``port``, with its TXT record."""

    type: str
    instance: str
    port: int
    txt: Mapping[str, str] = field(default_factory=dict)
    #: The printer it is the OctoPrint of; None for the dashboard.
    printer: str | None = None

    @property
    def name(self) -> str:
        return f"{self.instance}.{self.type}"


def truncate_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def instance_label(text: str) -> str:
    """``text`` as a DNS-SD instance label: any Net-Unicode text but control characters.

    A dot is allowed by RFC 6763 only escaped, and the zeroconf library sends every dot
    as a label separator, so a printer named ``mk3.left`` would be announced as the
    instance ``mk3`` in a domain ``left``: dots become ``-``. Control characters
    (forbidden) become spaces; runs of spaces fold into one.
    """
    text = _CONTROL.sub(" ", text).replace(".", "-")
    return " ".join(text.split())


def host_label(hostname: str) -> str:
    """The host's name as people know it: its first label, e.g. ``octopi`` of
    ``octopi.lan``, as an instance label; ``localhost`` if nothing is left."""
    return instance_label(hostname.split(".", 1)[0]) or "localhost"


def server_name(hostname: str, host_id: str) -> str:
    """The name the address records are given: ``<host>-<4 hex>.local.``, the gateway's own.

    Not the host's ``<host>.local.``: that one is avahi's (which renames it on a
    conflict), and two hosts both called ``octopi`` (or two gateways on one host) would
    have their addresses merged under it by every browser. The 4 hex digits come from
    the gateway's identity, so the name is stable. Letters, digits and ``-`` only.
    """
    label = _NOT_HOSTNAME.sub("-", hostname.split(".", 1)[0]).strip("-")[:58] or "hydrogen"
    return f"{label}-{uuid.uuid5(UUID_NAMESPACE, host_id).hex[:4]}.local."


def instance_name(what: str, hostname: str, limit: int = INSTANCE_BYTES) -> str:
    """``"<what> on <host>"`` in at most ``limit`` bytes.

    The host part is shortened first and left out when fewer than 4 bytes of it would
    remain; then ``what`` itself is cut (a 64-character printer name).
    """
    what = instance_label(what) or "printer"
    host = host_label(hostname)
    full = f"{what} on {host}"
    if len(full.encode("utf-8")) <= limit:
        return full
    room = limit - len(f"{what} on ".encode())
    if room >= 4:
        return f"{what} on {truncate_utf8(host, room).rstrip()}"
    return truncate_utf8(what, limit).rstrip()


def _unique(names: Iterable[str], limit: int = INSTANCE_BYTES) -> list[str]:
    """Distinct names (DNS compares them without case): later duplicates get ``-2``,
    ``-3``, ... within ``limit`` bytes. Two printers can come out the same after
    :func:`instance_label` or a cut (``mk3.left`` and ``mk3-left``)."""
    taken: set[str] = set()
    result = []
    for name in names:
        candidate, number = name, 2
        while candidate.casefold() in taken:
            suffix = f"-{number}"
            candidate = truncate_utf8(name, limit - len(suffix)).rstrip() + suffix
            number += 1
        taken.add(candidate.casefold())
        result.append(candidate)
    return result


def printer_uuid(host_id: str, printer: str) -> str:
    """A uuid for the printer's OctoPrint, the same on every start of this gateway.

    A name-based (SHA-1) uuid of the gateway's identity (:func:`gateway_identity`) and
    the printer's name: no file to keep, and the machine id cannot be read back out.
    """
    return str(uuid.uuid5(UUID_NAMESPACE, f"{host_id}\n{printer}"))


def describe(
    printers: Sequence[str],
    port: int,
    hostname: str,
    *,
    host_id: str,
    octoprint_version: str,
    api_version: str,
    model: str = DEFAULT_MODEL,
) -> list[Service]:
    """Every service to announce: one ``_octoprint._tcp`` per printer, then the dashboard."""
    # Unique within a type: a printer called Hydrogen and the dashboard do not collide.
    names = _unique([instance_name(p, hostname) for p in printers])
    services = [
        Service(
            OCTOPRINT_TYPE,
            name,
            port,
            {
                "path": f"/octoprint/{printer}/",
                "version": octoprint_version,
                "api": api_version,
                "uuid": printer_uuid(host_id, printer),
                "model": truncate_utf8(" ".join(_CONTROL.sub(" ", model).split()), 200)
                or DEFAULT_MODEL,
            },
            printer,
        )
        for printer, name in zip(printers, names, strict=True)
    ]
    services.append(Service(HTTP_TYPE, instance_name("Hydrogen", hostname), port, {"path": "/"}))
    return services


@dataclass(frozen=True)
class Address:
    """An address to announce and the interface it is on (IPv6 needs its index)."""

    address: str
    interface: str = ""


def _usable(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if address.is_loopback or address.is_unspecified or address.is_multicast:
        return False
    # A link-local IPv6 address means nothing without its interface: a client could
    # not connect to what an A/AAAA record would say.
    return not (address.version == 6 and address.is_link_local)


def choose_addresses(
    bound: Sequence[str],
    interfaces: Mapping[str, Sequence[str]],
) -> tuple[list[Address], str | None]:
    """The addresses to announce, from the listening sockets' addresses.

    ``bound`` are the sockets' own addresses (``0.0.0.0``, ``::``, ``192.168.1.5``);
    ``interfaces`` the host's interfaces that are up and their addresses. A wildcard
    stands for every usable address of its family; a specific address for itself.
    Returns the addresses, or none and why (one log line).
    """
    chosen: dict[str, Address] = {}
    loopback: list[str] = []
    for text in bound:
        bound_address = ipaddress.ip_address(text.split("%", 1)[0])
        if bound_address.is_loopback:
            loopback.append(text)
            continue
        for name, addresses in interfaces.items():
            for item in addresses:
                try:
                    address = ipaddress.ip_address(item.split("%", 1)[0])
                except ValueError:
                    continue
                if address.version != bound_address.version or not _usable(address):
                    continue
                if bound_address.is_unspecified or address == bound_address:
                    chosen.setdefault(str(address), Address(str(address), name))
        specific = not bound_address.is_unspecified and _usable(bound_address)
        if specific and str(bound_address) not in chosen:
            chosen[str(bound_address)] = Address(str(bound_address))
    if chosen:
        return list(chosen.values()), None
    if loopback and len(loopback) == len(bound):
        return [], f"the gateway listens on loopback only ({', '.join(loopback)})"
    return [], "no address outside loopback on an interface that is up"


# -- the I/O part ----------------------------------------------------------------------


def host_model(files: Sequence[str] = MODEL_FILES) -> str:
    """The board's model from the device tree (a Raspberry Pi's), else ``Hydrogen``."""
    for path in files:
        with contextlib.suppress(OSError):
            text = Path(path).read_bytes().decode("utf-8", "replace").strip("\x00 \n")
            if text:
                return text
    return DEFAULT_MODEL


def gateway_identity(state_dir: str) -> str:
    """What makes this gateway itself across restarts: the host's machine id (else its
    name) and the state dir (two gateways on one host never share one: statelock.py)."""
    host = socket.gethostname()
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            text = Path(path).read_text(encoding="ascii", errors="replace").strip()
            if text:
                host = text
                break
    return f"{host}:{Path(state_dir).resolve()}"


def interfaces_up() -> dict[str, list[str]]:
    """Each interface that is up, with its IPv4 and IPv6 addresses (psutil)."""
    import psutil

    stats = psutil.net_if_stats()
    families = (socket.AF_INET, socket.AF_INET6)
    return {
        name: [a.address for a in addresses if a.family in families]
        for name, addresses in psutil.net_if_addrs().items()
        if name in stats and stats[name].isup
    }


class Announcer:
    """Registers the services in the background and withdraws them at shutdown.

    With ``refresh`` (the addresses to announce now), it looks again every
    ``REFRESH_SECONDS`` and, when they changed, withdraws and announces anew.
    """

    def __init__(
        self,
        services: Sequence[Service],
        addresses: Sequence[Address],
        server: str,
        refresh: Callable[[], list[Address]] | None = None,
    ) -> None:
        self.services = list(services)
        self.addresses = list(addresses)
        self.server = server
        self.refresh = refresh
        self._zeroconf: Any = None
        self._infos: list[Any] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start registering; returns at once (zeroconf's probing takes about 1.5 s)."""
        self._task = asyncio.create_task(self._run(), name="zeroconf")

    async def _run(self) -> None:
        if self.addresses:
            await self._register()
        while self.refresh is not None:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                current = await asyncio.to_thread(self.refresh)
            except Exception as exc:  # psutil: try again next time
                log.debug("zeroconf: cannot read the interfaces: %s", exc)
                continue
            if set(current) == set(self.addresses):
                continue
            log.info(
                "zeroconf: the addresses changed (%s -> %s); announcing again",
                ", ".join(a.address for a in self.addresses) or "none",
                ", ".join(a.address for a in current) or "none",
            )
            await self._withdraw()
            self.addresses = current
            if current:
                await self._register()

    def _interfaces(self) -> list[str | int]:
        """Where zeroconf sends from: each IPv4 address, each IPv6 address's interface."""
        chosen: list[str | int] = []
        for item in self.addresses:
            if ipaddress.ip_address(item.address).version == 4:
                chosen.append(item.address)
            elif item.interface:
                with contextlib.suppress(OSError):
                    index = socket.if_nametoindex(item.interface)
                    if index not in chosen:
                        chosen.append(index)
        return chosen

    async def _register(self) -> None:
        try:
            # In a thread: the import takes about 90 ms, which the loop need not wait.
            await asyncio.to_thread(importlib.import_module, "zeroconf.asyncio")
            from zeroconf import IPVersion
            from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

            interfaces = self._interfaces()
            has_v6 = any(isinstance(i, int) for i in interfaces)
            has_v4 = any(isinstance(i, str) for i in interfaces)
            version = IPVersion.All if has_v4 and has_v6 else IPVersion.V6Only if has_v6 else None
            self._zeroconf = AsyncZeroconf(interfaces=interfaces, ip_version=version)
            addresses = [a.address for a in self.addresses]
            self._infos = [
                AsyncServiceInfo(
                    s.type,
                    s.name,
                    port=s.port,
                    properties=dict(s.txt),
                    server=self.server,
                    parsed_addresses=addresses,
                )
                for s in self.services
            ]
            results = await asyncio.gather(
                *(
                    self._zeroconf.async_register_service(info, allow_name_change=True)
                    for info in self._infos
                ),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never fatal: the gateway serves without discovery
            log.warning("zeroconf: cannot announce: %s", exc or type(exc).__name__)
            return
        for service, info, result in zip(self.services, self._infos, results, strict=True):
            kind = service.type.removesuffix(".local.")
            if isinstance(result, BaseException):
                log.warning("zeroconf: cannot announce %r (%s): %s", service.instance, kind, result)
                continue
            shown = info.name.removesuffix("." + service.type)
            renamed = "" if shown == service.instance else f" (renamed from {service.instance!r})"
            log.info(
                "zeroconf: announced %r%s as %s at %s port %d, path %s",
                shown,
                renamed,
                kind,
                ", ".join(addresses),
                service.port,
                service.txt.get("path", "/"),
            )

    async def stop(self) -> None:
        """Stop looking, send the goodbyes (TTL 0) and close, within ``WITHDRAW_SECONDS``."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._withdraw()

    async def _withdraw(self) -> None:
        timeout = WITHDRAW_SECONDS
        if self._zeroconf is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._zeroconf.async_unregister_all_services()
                await self._zeroconf.async_close()
            log.info("zeroconf: withdrawn")
        except TimeoutError:
            log.warning("zeroconf: withdrawing took more than %.0f s; left it", timeout)
        except Exception as exc:
            log.warning("zeroconf: cannot withdraw: %s", exc or type(exc).__name__)
        finally:
            self._zeroconf = None


def announce(
    *,
    enabled: bool,
    printers: Sequence[str],
    bound: Sequence[str],
    port: int,
    state_dir: str,
    octoprint_version: str,
    api_version: str,
) -> Announcer | None:
    """Start announcing, or log once why not; None when nothing is announced."""
    if not enabled:
        log.info("zeroconf: not announcing (octoprint.announce = false or --no-announce)")
        return None
    try:
        installed = importlib.util.find_spec("zeroconf") is not None
    except (ImportError, ValueError):
        installed = False
    if not installed:
        log.warning("zeroconf: not announcing: the zeroconf package is missing; %s", INSTALL_HINT)
        return None
    addresses, why = choose_addresses(bound, interfaces_up())
    wildcard = any(ipaddress.ip_address(b.split("%", 1)[0]).is_unspecified for b in bound)
    if why is not None and not wildcard:
        log.warning("zeroconf: not announcing: %s", why)
        return None
    if why is not None:
        log.warning(
            "zeroconf: not announcing yet: %s; looking again every %.0f s", why, REFRESH_SECONDS
        )
    hostname = socket.gethostname()
    identity = gateway_identity(state_dir)
    services = describe(
        printers,
        port,
        hostname,
        host_id=identity,
        octoprint_version=octoprint_version,
        api_version=api_version,
        model=host_model(),
    )
    refresh = (lambda: choose_addresses(bound, interfaces_up())[0]) if wildcard else None
    announcer = Announcer(services, addresses, server_name(hostname, identity), refresh)
    announcer.start()
    return announcer
