"""Category 7: the comprehensive audit, everything at once, 20 users, zero violations."""

from __future__ import annotations

from tenet.audit import IsolationAudit


async def test_comprehensive_isolation_audit_passes(deploy) -> None:
    async with deploy() as d:
        audit = IsolationAudit(d.url, d.server.admin_token, users=20, runs=2, fairness_limit=10.0)
        report = await audit.run()
    details = {name: c.violations[:5] for name, c in report.checks.items() if c.violations}
    assert report.ok, details
    assert report.users == 20
    for name, check in report.checks.items():
        assert check.checked > 0, f"check {name} checked nothing"
