"""Category 7: the comprehensive audit, everything at once, 20 users, zero violations.

In ``jwt`` mode the canaries are the identity provider's subjects, signed in with
its JWTs on every path the audit drives (HTTP, WebSocket, SSE, AG-UI).
"""

from __future__ import annotations

from mc_support import BOTH_AUTH

from tenet.audit import IsolationAudit


@BOTH_AUTH
async def test_comprehensive_isolation_audit_passes(deploy, auth: str) -> None:
    async with deploy() as d:
        sign_jwt = d.sign_jwt if auth == "jwt" else None
        audit = IsolationAudit(
            d.url, d.server.admin_token, users=20, runs=2, fairness_limit=10.0, sign_jwt=sign_jwt
        )
        report = await audit.run()
    details = {name: c.violations[:5] for name, c in report.checks.items() if c.violations}
    assert report.ok, details
    assert report.users == 20
    for name, check in report.checks.items():
        assert check.checked > 0, f"check {name} checked nothing"
