"""Token usage: per run from the endpoint's reports, on terminal events and runs, per user
over HTTP, in Prometheus by agent and model; the daily quota, from the store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tenet import Agent, AgentRegistry, ModelReply, RunContext, Service, Settings
from tenet.errors import QuotaExceeded
from tenet.examples import default_registry
from tenet.models import Usage
from tenet.server.wire import run_json
from tenet.store.usage import tokens_since, usage_by_agent
from tenet.testing import running_server
from test_openai_model import calculator_script, fake_llm


def settings_for(base_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}",
        "model": "openai",
        "model_base_url": base_url,
        "model_api_key": "k",
        "model_name": "fake-model",
    }
    values.update(overrides)
    return Settings(**values)


async def run_to_end(service: Service, user_id: str, thread_id: str, agent: str, text: str) -> Any:
    run = await service.engine.submit(user_id, thread_id, agent, text)
    await asyncio.wait_for(service.engine.wait(run.id), 30)
    events = [orjson.loads(b) for b in await service.store.list_events(user_id, thread_id)]
    return await service.store.get_run(user_id, run.id), [
        e for e in events if e["run_id"] == run.id
    ]


async def test_usage_sums_equal_what_the_endpoint_reported(tmp_path: Path) -> None:
    async with fake_llm(calculator_script) as llm:
        settings = settings_for(llm.base_url, tmp_path)
        async with Service(settings, default_registry(settings)) as service:
            user, _ = await service.store.create_user("counted")
            thread = await service.store.create_thread(user.id)
            run, events = await run_to_end(service, user.id, thread.id, "assistant", "6*7?")
    assert all(r["stream_options"] == {"include_usage": True} for r in llm.requests)
    assert len(llm.reported) == 2
    expected = {
        "input_tokens": sum(p for p, _ in llm.reported),
        "output_tokens": sum(c for _, c in llm.reported),
        "model_calls": 2,
    }
    assert events[-1]["type"] == "agent_completed"
    assert events[-1]["usage"] == expected
    assert run_json(run)["usage"] == expected


class FixedUsage:
    """A model that answers at once and reports 10 input and 3 output tokens per call."""

    async def complete(self, messages: list[dict[str, Any]], tools: Any, **_: Any) -> ModelReply:
        return ModelReply(content="done", usage=Usage(input_tokens=10, output_tokens=3))


class ThreeDelegations(Agent):
    async def run(self, ctx: RunContext, input: str) -> str:
        for i in range(3):
            await ctx.delegate("child", f"part {i}")
        return "all done"


async def test_a_run_with_three_delegations_sums_usage_once(database_url: str) -> None:
    registry = AgentRegistry(
        [ThreeDelegations(name="boss"), Agent(name="child", model=FixedUsage())]
    )
    settings = Settings(database_url=database_url, user_tokens_per_day=78)
    async with Service(settings, registry) as service:
        user, _ = await service.store.create_user("boss")
        thread = await service.store.create_thread(user.id)
        run, events = await run_to_end(service, user.id, thread.id, "boss", "go")
        since = datetime.now(UTC) - timedelta(hours=1)
        by_agent = await usage_by_agent(service.store, user.id, since)
        used = await tokens_since(service.store, user.id, since)
        # 39 of 78 tokens used: one more run may start (its answers are kept), no third.
        await run_to_end(service, user.id, thread.id, "boss", "again")
        with pytest.raises(QuotaExceeded):
            await service.engine.submit(user.id, thread.id, "boss", "once more")
    assert by_agent == {"boss": (30, 9, 3, 1)}
    assert used == 39
    expected = {"input_tokens": 30, "output_tokens": 9, "model_calls": 3}
    ends = [e for e in events if e["type"] == "agent_completed"]
    assert [e["depth"] for e in ends] == [1, 1, 1, 0]
    assert all("usage" not in e for e in ends[:3])  # the run's total is on its end only
    assert ends[-1]["usage"] == expected
    assert run_json(run)["usage"] == expected


async def test_my_usage_over_http_is_the_callers_alone_and_metrics_have_no_user() -> None:
    async with running_server() as server:
        a_id, a_token = await server.create_user("usage-a")
        _, b_token = await server.create_user("usage-b")
        async with httpx.AsyncClient(base_url=server.url) as http:
            auth = {"Authorization": f"Bearer {a_token}"}
            thread = (await http.post("/v1/threads", json={}, headers=auth)).json()
            run = (
                await http.post(
                    f"/v1/threads/{thread['id']}/runs",
                    json={"agent": "assistant", "input": "what is 2+3?"},
                    headers=auth,
                )
            ).json()
            await asyncio.wait_for(server.service.engine.wait(run["id"]), 30)
            stored = (await http.get(f"/v1/runs/{run['id']}", headers=auth)).json()
            mine = (await http.get("/v1/me/usage", headers=auth)).json()
            theirs = (
                await http.get("/v1/me/usage", headers={"Authorization": f"Bearer {b_token}"})
            ).json()
            later = (await http.get("/v1/me/usage?since=2999-01-01T00:00:00Z", headers=auth)).json()
            bad = await http.get("/v1/me/usage?since=yesterday", headers=auth)
            metrics = (
                await http.get(
                    "/metrics", headers={"Authorization": f"Bearer {server.admin_token}"}
                )
            ).text
    usage = stored["usage"]
    assert usage["model_calls"] == 2 and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert mine["usage"] == usage
    assert mine["agents"] == [{"agent": "assistant", "usage": usage, "runs": 1}]
    assert theirs["usage"] == {"input_tokens": 0, "output_tokens": 0, "model_calls": 0}
    assert theirs["agents"] == []
    assert later["usage"]["model_calls"] == 0
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid"
    line = (
        'tenet_model_tokens_total{agent="assistant",kind="input",model="ScriptedModel"} '
        f"{float(usage['input_tokens'])}"
    )
    assert line in metrics
    assert a_id not in metrics and "user" not in metrics.split("tenet_model_tokens")[1][:300]


async def test_the_daily_quota_holds_at_its_boundary_and_from_the_store(tmp_path: Path) -> None:
    """Each call costs 15 tokens (10 in, 5 out); a calculator run makes two calls."""

    def script(body: dict[str, Any]) -> Any:
        reply = calculator_script(body)
        reply.usage = (10, 5)
        return reply

    async with fake_llm(script) as llm:
        settings = settings_for(llm.base_url, tmp_path, user_tokens_per_day=45)
        async with Service(settings, default_registry(settings)) as service:
            user, _ = await service.store.create_user("spender")
            other, _ = await service.store.create_user("other")
            thread = await service.store.create_thread(user.id)
            first, first_events = await run_to_end(service, user.id, thread.id, "assistant", "6*7")
            second, events = await run_to_end(service, user.id, thread.id, "assistant", "6*7")
        assert first.status == "completed"
        assert first_events[-1]["usage"] == {
            "input_tokens": 20,
            "output_tokens": 10,
            "model_calls": 2,
        }
        # 30 used: the second run may start; its first call takes the user to 45.
        assert second.status == "failed"
        assert events[-1]["type"] == "agent_error"
        assert events[-1]["error"]["code"] == "quota_exceeded"
        assert events[-1]["usage"] == {"input_tokens": 10, "output_tokens": 5, "model_calls": 1}
        assert not [e for e in events if e["type"] == "tool_executing"]  # ended after its call
        calls = len(llm.requests)

        # Another process (here: the next one) reads the same store.
        async with Service(settings, default_registry(settings)) as service:
            with pytest.raises(QuotaExceeded) as refused:
                await service.engine.submit(user.id, thread.id, "assistant", "6*7")
            other_thread = await service.store.create_thread(other.id)
            fine, _ = await run_to_end(service, other.id, other_thread.id, "assistant", "6*7")
    assert refused.value.code == "quota_exceeded" and refused.value.status == 429
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    assert fine.status == "completed"  # another user's quota is their own
    assert len(llm.requests) == calls + 2


async def test_a_run_over_the_quota_is_refused_with_429_quota_exceeded(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}", user_tokens_per_day=1
    )
    async with running_server(settings) as server:
        _, token = await server.create_user("broke")
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url) as http:
            thread = (await http.post("/v1/threads", json={}, headers=auth)).json()
            url = f"/v1/threads/{thread['id']}/runs"
            first = await http.post(url, json={"agent": "assistant", "input": "hi"}, headers=auth)
            await asyncio.wait_for(server.service.engine.wait(first.json()["id"]), 30)
            second = await http.post(url, json={"agent": "assistant", "input": "hi"}, headers=auth)
    assert first.status_code == 202
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "quota_exceeded"
    assert int(second.headers["Retry-After"]) >= 1


class DirectCalls(Agent):
    """A custom flow that calls models itself: its own, then the server's, outside the loop."""

    async def run(self, ctx: RunContext, input: str) -> str:
        assert self.model is not None
        own = await self.model.complete([{"role": "user", "content": input}], [])
        served = await ctx.runtime.model.complete([{"role": "user", "content": input}], [])
        return f"{own.content} / {served.content}"


async def test_a_flow_calling_its_model_directly_is_counted_on_the_run_and_per_user() -> None:
    registry = AgentRegistry([DirectCalls(name="direct", model=FixedUsage())])
    async with running_server(registry=registry) as server:
        _, token = await server.create_user("direct")
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=auth) as http:
            thread = (await http.post("/v1/threads", json={})).json()
            run = (
                await http.post(
                    f"/v1/threads/{thread['id']}/runs", json={"agent": "direct", "input": "hi"}
                )
            ).json()
            await asyncio.wait_for(server.service.engine.wait(run["id"]), 30)
            stored = (await http.get(f"/v1/runs/{run['id']}")).json()
            events = (await http.get(f"/v1/threads/{thread['id']}/events")).json()
            mine = (await http.get("/v1/me/usage")).json()
            admin = {"Authorization": f"Bearer {server.admin_token}"}
            metrics = (await http.get("/metrics", headers=admin)).text
    end = [e for e in events if e["run_id"] == run["id"]][-1]
    assert end["type"] == "agent_completed", end
    # FixedUsage reports 10 + 3; the server's ScriptedModel reports its own (at least 1 + 1).
    assert end["usage"]["model_calls"] == 2
    assert end["usage"]["input_tokens"] >= 11 and end["usage"]["output_tokens"] >= 4
    assert stored["usage"] == end["usage"]
    assert mine["usage"] == end["usage"]
    assert mine["agents"] == [{"agent": "direct", "usage": end["usage"], "runs": 1}]
    assert (
        'tenet_model_tokens_total{agent="direct",kind="input",model="FixedUsage"} 10.0' in metrics
    )
