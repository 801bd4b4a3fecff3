"""Proof of isolation: the canary audit (``tenet audit``) and the protocol checks it uses."""

from .checks import run_violations, seq_violations, thread_violations
from .isolation import AuditReport, CheckResult, IsolationAudit

__all__ = [
    "AuditReport",
    "CheckResult",
    "IsolationAudit",
    "run_violations",
    "seq_violations",
    "thread_violations",
]
