"""A user's changed secret reaches every process of a cluster, not only the one asked.

Two processes each hold the user's MCP session to a real MCP server (the SDK's
echo server, which reports the session it sees and the hash of the credential
it was opened with). The user changes the secret through process A: the next
calls on process B go through a session opened with the new value. The user
deletes it through A: calls on B fail ``missing_secret`` instead of going on
with the old value.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from cluster_support import Cluster, Node, cluster

# The MCP tests' echo server and its start-up (a folder of tests beside this one).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mcp_servers"))
from mcp_support import start_echo_http


def sha(value: str) -> str:
    return hashlib.sha256(f"Bearer {value}".encode()).hexdigest()


async def recall_on(c: Cluster, node: Node, token: str) -> dict[str, Any]:
    """One ``recall`` call in a run that executes on ``node`` (submitted there until it does)."""
    async with httpx.AsyncClient(
        base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        for _ in range(40):  # bounded: a run is claimed by whichever process asks first
            thread = (await http.post("/v1/threads")).json()["id"]
            r = await http.post(
                f"/v1/threads/{thread}/runs", json={"agent": "echo", "input": "recall"}
            )
            assert r.status_code == 202, r.text
            run_id = r.json()["id"]
            for _ in range(1500):  # bounded: 30 s
                run = (await http.get(f"/v1/runs/{run_id}")).json()
                if run["status"] in ("completed", "failed", "cancelled"):
                    break
                await asyncio.sleep(0.02)
            assert run["status"] == "completed", (run["status"], run["error"])
            answer: dict[str, Any] = json.loads(run["output"])
            if answer["pid"] == node.process.pid:
                return answer
    raise AssertionError(f"no run of 40 executed on {node.url}")


async def test_a_changed_or_deleted_secret_closes_the_users_sessions_on_every_process(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    echo, base = await start_echo_http()
    monkeypatch.setenv("CLUSTER_TEST_ECHO_URL", base)
    try:
        async with cluster(
            postgres_url,
            tmp_path,
            nodes=2,
            app="cluster_agents:registry",
            secret_key="cluster-secrets-test-key",
            dead_after_beats="30",  # a loaded machine's slow heartbeat is no takeover here
        ) as c:
            _, token = await c.user("rotator")
            node_a, node_b = c.nodes
            auth = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=node_a.url, headers=auth, timeout=30) as a:
                r = await a.put("/v1/me/secrets/echo_token", json={"value": "old-value"})
                assert r.status_code == 204, r.text
                on_b = await recall_on(c, node_b, token)
                assert on_b["ok"] and on_b["result"]["credential_sha256"] == sha("old-value")
                old_session = on_b["result"]["session"]
                assert (await recall_on(c, node_a, token))["result"]["session"] != old_session

                r = await a.put("/v1/me/secrets/echo_token", json={"value": "new-value"})
                assert r.status_code == 204, r.text
                # The change reaches B over the bus; B never again calls with the old value.
                seen = []
                for _ in range(20):  # bounded: B has dropped the session within a few runs
                    on_b = await recall_on(c, node_b, token)
                    seen.append(on_b["result"]["credential_sha256"])
                    if seen[-1] == sha("new-value"):
                        break
                    await asyncio.sleep(0.1)
                assert seen[-1] == sha("new-value"), "B kept the session of the old secret"
                assert on_b["result"]["session"] != old_session
                again = await recall_on(c, node_b, token)
                assert again["result"]["credential_sha256"] == sha("new-value")

                assert (await a.delete("/v1/me/secrets/echo_token")).status_code == 204
                codes = []
                for _ in range(20):  # bounded, as above
                    on_b = await recall_on(c, node_b, token)
                    codes.append(on_b.get("code") or on_b["result"]["credential_sha256"])
                    if not on_b["ok"]:
                        break
                    await asyncio.sleep(0.1)
                assert codes[-1] == "missing_secret", f"B went on with the deleted secret: {codes}"
                assert (await recall_on(c, node_b, token))["code"] == "missing_secret"
            logs = "".join(node.log.read_text(errors="replace") for node in c.nodes)
        assert "old-value" not in logs and "new-value" not in logs
    finally:
        echo.kill()
        echo.wait()
