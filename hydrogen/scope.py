"""What a scoped identity may see: the scoping rules for topics and pushed frames. Pure.

An identity with ``printers = {...}`` must not learn of any other printer, by
any path. Requests check the scope in the dispatch (:meth:`hydrogen.api.Api.call`)
and their handlers filter lists; this module is the rule for what is *pushed*:

* ``printer/<name>/...`` topics are delivered only for printers in scope (a
  subscription to ``printer/+/state`` yields only those);
* ``audit`` frames go to admin identities only, and a scoped admin gets only the
  records about its printers (or about no printer: sign-ins, key changes);
* ``printer/<name>/appkey`` (an app asking for a key) goes to those who may decide:
  the control role and above;
* the ``status`` frame's ``printers`` and ``jobs`` members are narrowed to the
  scope (the rest of it is about the host and the gateway);
* ``notifications`` naming a printer out of scope (``details.printer``) are not
  delivered; one naming several (``details.printers``) is narrowed to those in
  scope, and not delivered when none is left.

The hub applies :func:`topic_filter` when it routes a topic (cached, so free when
publishing) and the ``narrow_*`` functions once per distinct scope.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from hydrogen.identity import Identity
from hydrogen.protocol import Role

AUDIT_TOPIC = "audit"
PRINTER_PREFIX = "printer/"
APPKEY_SUFFIX = "/appkey"

Frame = Mapping[str, Any]


def is_audit_topic(topic: str) -> bool:
    return topic == AUDIT_TOPIC or topic.startswith(AUDIT_TOPIC + "/")


def is_appkey_topic(topic: str) -> bool:
    return topic.startswith(PRINTER_PREFIX) and topic.endswith(APPKEY_SUFFIX)


def topic_printer(topic: str) -> str | None:
    """The printer a topic is about (``printer/<name>/...``), or None."""
    if not topic.startswith(PRINTER_PREFIX):
        return None
    return topic[len(PRINTER_PREFIX) :].split("/", 1)[0] or None


def topic_filter(identity: Identity) -> Callable[[str], bool] | None:
    """The topics ``identity`` may receive, as a predicate; None when it may receive all."""
    admin = identity.role >= Role.ADMIN
    printers = identity.printers
    if admin and printers is None:
        return None

    control = identity.role >= Role.CONTROL

    def allows(topic: str) -> bool:
        if is_audit_topic(topic):
            return admin
        if not control and is_appkey_topic(topic):
            return False
        if printers is not None:
            name = topic_printer(topic)
            return name is None or name in printers
        return True

    return allows


def narrow_status(frame: Frame, printers: Collection[str]) -> dict[str, Any]:
    """A status payload or frame with only the printers (and their jobs) in scope."""
    out = dict(frame)
    if isinstance(out.get("printers"), list):
        out["printers"] = [
            p for p in out["printers"] if isinstance(p, Mapping) and p.get("printer") in printers
        ]
    if isinstance(out.get("jobs"), Mapping):
        out["jobs"] = {name: job for name, job in out["jobs"].items() if name in printers}
    return out


def narrow_notification(frame: Frame, printers: Collection[str]) -> Frame | None:
    details = frame.get("details")
    if not isinstance(details, Mapping):
        return frame
    named = details.get("printer")
    if isinstance(named, str) and named not in printers:
        return None
    several = details.get("printers")
    if isinstance(several, list):
        kept = [name for name in several if name in printers]
        if not kept:
            return None
        if len(kept) != len(several):
            return {**frame, "details": {**details, "printers": kept}}
    return frame


def narrow_audit(frame: Frame, printers: Collection[str]) -> Frame | None:
    named = frame.get("printer")
    return frame if named is None or named in printers else None
