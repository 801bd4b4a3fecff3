"""RunContext, @tool schemas and validation, the frozen AgentRegistry, UserSessions."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from core_support import new_thread, new_user, run_to_end, wait_until

from tenet import Agent, AgentRegistry, RunContext, Service, tool
from tenet.context import MAX_DEPTH
from tenet.errors import DepthExceeded, RegistryFrozen, ToolFailed
from tenet.ids import new_id
from tenet.sessions import UserSessions


def root_context(**overrides) -> RunContext:
    values = {
        "user_id": new_id("usr"),
        "thread_id": new_id("thr"),
        "run_id": new_id("run"),
        "execution_id": new_id("exe"),
        "agent_name": "a",
    }
    return RunContext(**(values | overrides))


# RunContext ---------------------------------------------------------------------------------


def test_context_is_frozen() -> None:
    ctx = root_context()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.user_id = new_id("usr")  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.depth = 3  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        ctx.extra = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "overrides",
    [
        {"user_id": "alice"},
        {"user_id": ""},
        {"user_id": None},
        {"user_id": new_id("thr")},  # right shape, wrong kind
        {"thread_id": new_id("run")},
        {"run_id": "run_short"},
        {"execution_id": new_id("usr")},
        {"user_id": "usr_" + "a" * 21 + "!"},
        {"depth": 1},  # a delegated execution needs a parent
        {"parent_execution_id": new_id("exe")},  # a root has none
    ],
)
def test_context_rejects_invalid_ids(overrides) -> None:
    with pytest.raises(ValueError):
        root_context(**overrides)


def test_child_has_a_fresh_execution_and_the_same_identity() -> None:
    ctx = root_context()
    child = ctx.child("helper")
    assert child.execution_id != ctx.execution_id
    assert child.parent_execution_id == ctx.execution_id
    assert child.depth == 1 and child.agent_name == "helper"
    assert (child.user_id, child.thread_id, child.run_id) == (
        ctx.user_id,
        ctx.thread_id,
        ctx.run_id,
    )
    assert ctx.depth == 0 and ctx.agent_name == "a"  # the parent is unchanged
    assert ctx.child("helper").execution_id != child.execution_id


def test_depth_is_capped_at_ten() -> None:
    assert MAX_DEPTH == 10
    ctx = root_context()
    for _ in range(10):
        ctx = ctx.child("deeper")
    assert ctx.depth == 10
    with pytest.raises(DepthExceeded, match="depth"):
        ctx.child("too deep")
    assert DepthExceeded.code == "depth_exceeded"
    with pytest.raises(DepthExceeded):
        root_context(depth=11, parent_execution_id=new_id("exe"))


def test_a_detached_context_cannot_act() -> None:
    with pytest.raises(RuntimeError):
        _ = root_context().runtime


# @tool ----------------------------------------------------------------------------------------


def test_tool_schema_comes_from_the_signature() -> None:
    @tool
    async def search(query: str, limit: int = 5, exact: bool = False, scale: float = 1.0) -> list:
        """Search things.

        More words that are not the description."""
        return []

    assert search.name == "search"
    assert search.description == "Search things."
    params = search.parameters
    assert params["type"] == "object"
    assert params["required"] == ["query"]
    props = params["properties"]
    assert props["query"] == {"type": "string"}
    assert props["limit"] == {"type": "integer", "default": 5}
    assert props["exact"] == {"type": "boolean", "default": False}
    assert props["scale"] == {"type": "number", "default": 1.0}
    assert search.spec() == {
        "name": "search",
        "description": "Search things.",
        "parameters": params,
    }


def test_context_parameter_is_not_in_the_schema() -> None:
    @tool(name="note", description="Keep a note.", timeout=2)
    async def keep(ctx: RunContext, text: str) -> str:
        return text

    assert keep.takes_context
    assert keep.name == "note" and keep.description == "Keep a note." and keep.timeout == 2
    assert set(keep.parameters["properties"]) == {"text"}
    assert keep.parameters["required"] == ["text"]

    @tool
    async def nothing() -> str:
        """No arguments."""
        return ""

    assert nothing.parameters["properties"] == {} and "required" not in nothing.parameters
    assert not nothing.takes_context


def test_tool_arguments_are_validated() -> None:
    @tool
    async def add(a: int, b: int = 1) -> int:
        return a + b

    assert add.validate({"a": "3"}) == {"a": 3, "b": 1}
    for bad in ({}, {"a": "x"}, {"a": 1, "c": 2}, ["a"]):
        with pytest.raises(ToolFailed) as info:
            add.validate(bad)  # type: ignore[arg-type]
        assert info.value.code == "invalid_arguments"


def test_varargs_tools_are_refused() -> None:
    with pytest.raises(TypeError):

        @tool
        async def loose(*args: int) -> int:
            return 0


async def test_tool_timeout_and_errors() -> None:
    @tool(timeout=0.05)
    async def slow() -> str:
        await asyncio.sleep(2)
        return ""

    @tool
    async def bad() -> str:
        raise KeyError("k")

    @tool
    def sync_add(a: int, b: int) -> int:
        return a + b

    ctx = root_context()
    with pytest.raises(ToolFailed) as info:
        await slow.invoke(ctx, {}, timeout=10)
    assert info.value.code == "timeout"
    with pytest.raises(ToolFailed) as info:
        await bad.invoke(ctx, {}, timeout=10)
    assert info.value.code == "tool_error" and "KeyError" in info.value.message
    assert await sync_add.invoke(ctx, {"a": 1, "b": 2}, timeout=1) == 3


# AgentRegistry --------------------------------------------------------------------------------


def test_registry_refuses_registration_after_freeze() -> None:
    registry = AgentRegistry([Agent("one")])
    with pytest.raises(ValueError):
        registry.register(Agent("one"))
    registry.register(Agent("two"))
    assert registry.freeze() is registry and registry.frozen
    with pytest.raises(RegistryFrozen):
        registry.register(Agent("three"))
    assert "three" not in registry and len(registry) == 2
    assert registry.get("one") is not None and registry.get(None) is None  # type: ignore[arg-type]
    assert [s["name"] for s in registry.specs()] == ["one", "two"]
    with pytest.raises(TypeError):
        registry._agents["x"] = Agent("x")  # type: ignore[index]


async def test_service_freezes_its_registry(make_settings) -> None:
    registry = AgentRegistry([Agent("solo")])
    async with Service(make_settings(), registry) as svc:
        assert svc.registry is registry and registry.frozen
        with pytest.raises(RegistryFrozen):
            registry.register(Agent("late"))
        with pytest.raises(RegistryFrozen):
            svc.registry.register(Agent("late"))


def test_agent_names_and_tools_are_checked() -> None:
    with pytest.raises(ValueError):
        Agent("has space")

    @tool
    async def t() -> str:
        return ""

    with pytest.raises(ValueError):
        Agent("dup", tools=[t, t])


# UserSessions ---------------------------------------------------------------------------------


async def test_concurrent_first_calls_get_one_session() -> None:
    sessions = UserSessions(idle_s=60)
    uid = new_id("usr")

    async def first() -> object:
        await asyncio.sleep(0)
        return sessions.get(uid)

    got = await asyncio.gather(*(first() for _ in range(50)))
    assert all(s is got[0] for s in got)
    assert len(sessions) == 1 and sessions.created == 1


async def test_idle_sessions_are_evicted_back_to_zero(make_settings) -> None:
    async with Service(make_settings(session_idle_s=0.05, user_max_runs=2)) as svc:
        users = [await new_user(svc) for _ in range(20)]
        threads = [await new_thread(svc, u) for u in users]
        runs = [
            await svc.engine.submit(u, t, "benchmark", "go")
            for u, t in zip(users, threads, strict=True)
        ]
        assert svc.sessions.created >= 20
        await asyncio.wait_for(asyncio.gather(*(svc.engine.wait(r.id) for r in runs)), 20)
        await wait_until(lambda: len(svc.sessions) == 0, timeout=5)
        assert svc.sessions.evicted >= 20
        # a user who comes back gets a fresh session and works as before
        run, _ = await run_to_end(svc, users[0], threads[0], "assistant", "what is 5 + 5?")
        assert run.status == "completed" and "10" in run.output
        await wait_until(lambda: len(svc.sessions) == 0, timeout=5)


def test_busy_sessions_are_not_evicted() -> None:
    sessions = UserSessions(idle_s=0)
    busy = sessions.get(new_id("usr"))
    busy.running = 1
    connected = sessions.get(new_id("usr"))
    connected.connections.add(object())
    sessions.get(new_id("usr"))
    assert sessions.evict_idle() == 1
    assert len(sessions) == 2
