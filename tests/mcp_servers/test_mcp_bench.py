"""``tenet bench --mcp`` measures both paths against a real MCP server and reports them."""

from __future__ import annotations

import asyncio

from tenet.bench.mcp import run_mcp_bench


async def test_the_mcp_bench_reports_both_paths_and_the_heap_per_session() -> None:
    report = await asyncio.to_thread(run_mcp_bench, users=3, calls=3)
    assert report["users"] == 3
    for path in ("sdk", "tenet"):
        assert report[path]["p50_ms"] > 0
    assert report["added_p50_ms"] == report["tenet"]["p50_ms"] - report["sdk"]["p50_ms"]
    assert report["heap_per_session_kib"] > 0
