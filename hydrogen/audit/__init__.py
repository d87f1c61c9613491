"""The audit trail: who did what, when, from where, and how it ended.

record.py is the pure record type; store.py keeps records in SQLite off the event
loop; trail.py is the service that collects them (the dispatch's observer, the
upload and sign-in routes), publishes the live ``audit`` topic and answers
``audit_query``.
"""

from hydrogen.audit.record import AuditRecord
from hydrogen.audit.store import AuditStore
from hydrogen.audit.trail import AUDIT_TOPIC, AuditTrail, audit_requests

__all__ = ["AUDIT_TOPIC", "AuditRecord", "AuditStore", "AuditTrail", "audit_requests"]
