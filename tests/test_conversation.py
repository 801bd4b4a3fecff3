"""A thread remembers: each run is sent the thread's earlier turns, from the store, within budget.

The model side is the strict chat-completions endpoint of ``test_openai_model``
(it answers 400 where OpenAI does: a tool result without its call, a call without
its result, a non-string content), or the offline scripted model, which answers
questions about the conversation from what it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson

from tenet import Agent, AgentRegistry, RunContext, Service, Settings, ToolFailed, tool
from tenet.conversation import TURN_CACHE_BYTES, TurnCache
from tenet.events import make_event
from tenet.examples import default_registry
from tenet.ids import new_id
from test_openai_model import Reply, chunk, fake_llm


def tool_call(call_id: str, name: str, arguments: str) -> list[dict[str, Any]]:
    return [
        chunk(
            role="assistant",
            tool_calls=[
                {
                    "index": 0,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        )
    ]


def answer(text: str) -> Reply:
    return Reply([chunk(role="assistant", content=""), chunk(content=text)])


def memory_script(body: dict[str, Any]) -> Reply:
    """Calls the calculator for arithmetic, answers from its result, else echoes."""
    messages = body["messages"]
    last = messages[-1]
    if last["role"] == "tool":
        return answer(f"It is {last['content']}.")
    text = last["content"]
    if "*" in text:
        n = sum(1 for m in messages if m["role"] == "tool")
        expression = text.split()[-1].rstrip("?")
        return Reply(
            tool_call(
                f"call_{n}_{len(messages)}",
                "calculator",
                orjson.dumps({"expression": expression}).decode(),
            )
        )
    return answer(f"Noted: {text}")


def replace_tools(agent: Agent, names: tuple[str, ...]) -> Agent:
    """``agent`` offering only the tools ``names`` (its other settings kept)."""
    if agent.name != "assistant":
        return agent
    return Agent(
        agent.name,
        agent.description,
        agent.instructions,
        [t for t in agent.tools if t.name in names],
        agent.model,
    )


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


async def turn(
    service: Service, user_id: str, thread_id: str, text: str, agent: str = "assistant"
) -> dict[str, Any]:
    """One run to its end; its terminal event."""
    run = await service.engine.submit(user_id, thread_id, agent, text)
    await asyncio.wait_for(service.engine.wait(run.id), 30)
    bodies = await service.store.list_events(user_id, thread_id, limit=100_000)
    events = [orjson.loads(b) for b in bodies]
    return [e for e in events if e["run_id"] == run.id][-1]


def chat(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Messages as (role, content-or-call-ids), without the system prompt."""
    out: list[tuple[str, Any]] = []
    for m in messages:
        if m["role"] == "system":
            continue
        if m.get("tool_calls"):
            out.append(("calls", [c["id"] for c in m["tool_calls"]]))
        elif m["role"] == "tool":
            out.append(("tool", m["tool_call_id"]))
        else:
            out.append((m["role"], m["content"]))
    return out


async def test_turn_two_is_sent_turn_one_with_its_tool_call_and_result(tmp_path: Path) -> None:
    async with fake_llm(memory_script) as llm:
        settings = settings_for(llm.base_url, tmp_path)
        async with Service(settings, default_registry(settings)) as service:
            user, _ = await service.store.create_user("ana")
            thread = await service.store.create_thread(user.id)
            first = await turn(service, user.id, thread.id, "my name is Ana")
            second = await turn(service, user.id, thread.id, "what is 6*7?")
            third = await turn(service, user.id, thread.id, "what is my name?")
    assert [first["type"], second["type"], third["type"]] == ["agent_completed"] * 3
    assert llm.rejected == []
    last_request = llm.requests[-1]["messages"]
    assert last_request[0]["role"] == "system"
    call_id = llm.requests[2]["messages"][-2]["tool_calls"][0]["id"]  # turn 2's call
    assert chat(last_request) == [
        ("user", "my name is Ana"),
        ("assistant", "Noted: my name is Ana"),
        ("user", "what is 6*7?"),
        ("calls", [call_id]),
        ("tool", call_id),
        ("assistant", "It is 42."),
        ("user", "what is my name?"),
    ]
    tool_message = next(m for m in last_request if m["role"] == "tool")
    assert tool_message["content"] == "42"


async def test_two_hundred_turns_stay_within_the_budget_and_never_break_the_pairing(
    tmp_path: Path,
) -> None:
    budget = 1500
    async with fake_llm(memory_script) as llm:
        settings = settings_for(llm.base_url, tmp_path, context_tokens=budget)
        # The assistant with a fixed set of tools: this budget is measured within 1% of
        # what it allows, so a tool added to the example must not move it.
        registry = AgentRegistry(
            [
                replace_tools(a, ("calculator", "clock", "remember", "recall"))
                for a in default_registry(settings)
            ]
        )
        async with Service(settings, registry) as service:
            user, _ = await service.store.create_user("long")
            thread = await service.store.create_thread(user.id)
            for i in range(200):
                text = f"turn {i}: what is {i}*2?" if i % 3 == 0 else f"turn {i}: remember nothing"
                end = await turn(service, user.id, thread.id, text)
                assert end["type"] == "agent_completed", end
    assert llm.rejected == []  # the strict endpoint accepted every request
    firsts = [r for r in llm.requests if r["messages"][-1]["role"] == "user"]
    assert len(firsts) == 200
    # The endpoint's own count of each run's first request (usage.prompt_tokens).
    prompt_tokens = [llm.reported[llm.requests.index(r)][0] for r in firsts]
    assert max(prompt_tokens) <= budget
    last = chat(firsts[-1]["messages"])
    assert last[-1] == ("user", "turn 199: remember nothing")
    assert ("user", "turn 197: remember nothing") in last  # the latest turns are kept
    assert ("user", "turn 0: what is 0*2?") not in last  # the oldest are dropped
    assert len(last) > 20  # and the budget is used, not left empty


async def test_a_long_tool_result_is_cut_with_a_marker_before_the_model_sees_it(
    tmp_path: Path,
) -> None:
    @tool
    async def dump() -> str:
        """A very long result."""
        return "x" * 50_000

    def script(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["role"] == "tool":
            return answer("done")
        return Reply(tool_call("call_dump", "dump", "{}"))

    async with fake_llm(script) as llm:
        settings = settings_for(llm.base_url, tmp_path, tool_result_max_chars=1000)
        registry = AgentRegistry([Agent(name="dumper", tools=[dump])])
        async with Service(settings, registry) as service:
            user, _ = await service.store.create_user("dumper")
            thread = await service.store.create_thread(user.id)
            await turn(service, user.id, thread.id, "dump", agent="dumper")
            await turn(service, user.id, thread.id, "again?", agent="dumper")
            events = [orjson.loads(b) for b in await service.store.list_events(user.id, thread.id)]
    assert llm.rejected == []
    live = llm.requests[1]["messages"][-1]["content"]  # the tool result in the same run
    remembered = next(m for m in llm.requests[2]["messages"] if m["role"] == "tool")["content"]
    for content in (live, remembered):
        assert content.startswith('"' + "x" * 999)
        assert "[cut: 49002 more characters not shown]" in content
        assert len(content) < 1100
    stored = next(e for e in events if e["type"] == "tool_completed")
    assert stored["results"] == "x" * 50_000  # the event keeps the whole result


async def test_a_run_cancelled_mid_tool_or_killed_leaves_nothing_dangling(tmp_path: Path) -> None:
    started = asyncio.Event()

    @tool
    async def slow() -> str:
        """Waits until cancelled."""
        started.set()
        await asyncio.sleep(60)
        return "never"

    def script(body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        if messages[-1]["role"] == "tool":
            return answer("done")
        if messages[-1]["content"] == "go slow":
            return Reply(tool_call(f"call_slow_{len(messages)}", "slow", "{}"))
        return answer("ok")

    async with fake_llm(script) as llm:
        settings = settings_for(llm.base_url, tmp_path)
        registry = AgentRegistry([Agent(name="slowpoke", tools=[slow])])
        async with Service(settings, registry) as service:
            user, _ = await service.store.create_user("canceller")
            thread = await service.store.create_thread(user.id)
            run = await service.engine.submit(user.id, thread.id, "slowpoke", "go slow")
            await asyncio.wait_for(started.wait(), 10)
            await service.engine.cancel(user.id, run.id)
            await asyncio.wait_for(service.engine.wait(run.id), 10)

            # A run whose process died mid-tool: its call was stored, its result never was;
            # recovery closes the call (code interrupted) before the run's end.
            dead = await service.store.create_run(user.id, thread.id, "slowpoke", "go dead")
            ctx = RunContext(
                user_id=user.id,
                thread_id=thread.id,
                run_id=dead.id,
                execution_id=new_id("exe"),
                agent_name="slowpoke",
            )
            await service.writer.write(
                make_event(ctx, "agent_started", {"input": "go dead", "depth": 0})
            )
            await service.writer.write(
                make_event(
                    ctx,
                    "tool_executing",
                    {"tool_name": "slow", "call_id": "call_dead", "parameters": {}},
                )
            )
            await service.engine.settler.settle(
                user.id, thread.id, dead.id, "slowpoke", interrupted="running"
            )

            # A run that ended with its call never answered (stored by a server that did
            # not close open calls): the call is not sent without its result.
            lost = await service.store.create_run(user.id, thread.id, "slowpoke", "go lost")
            ctx = replace(ctx, run_id=lost.id, execution_id=new_id("exe"))
            await service.writer.write(
                make_event(ctx, "agent_started", {"input": "go lost", "depth": 0})
            )
            await service.writer.write(
                make_event(
                    ctx,
                    "tool_executing",
                    {"tool_name": "slow", "call_id": "call_lost", "parameters": {}},
                )
            )
            error = {"code": "interrupted", "message": "the server stopped"}
            await service.writer.write(
                make_event(ctx, "agent_error", {"status": "failed", "error": error, "depth": 0})
            )
            await service.store.finish_run(user.id, lost.id, status="failed", error=error)

            end = await turn(service, user.id, thread.id, "hello", agent="slowpoke")
    assert end["type"] == "agent_completed"
    assert llm.rejected == []
    sent = llm.requests[-1]["messages"]
    call_id = next(m for m in sent if m.get("tool_calls"))["tool_calls"][0]["id"]
    assert call_id.startswith("call_slow_")
    assert chat(sent) == [
        ("user", "go slow"),
        ("calls", [call_id]),
        ("tool", call_id),
        ("user", "go dead"),
        ("calls", ["call_dead"]),  # closed by recovery: the call and its result
        ("tool", "call_dead"),
        ("user", "go lost"),  # what it completed: its input, not its unanswered call
        ("user", "hello"),
    ]
    results = [orjson.loads(m["content"]) for m in sent if m["role"] == "tool"]
    assert [r["error"]["code"] for r in results] == ["cancelled", "interrupted"]


async def test_users_with_the_same_words_in_concurrent_threads_see_only_their_own(
    tmp_path: Path,
) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}")
    async with Service(settings) as service:
        threads: list[tuple[str, str, str]] = []
        for u in range(2):
            user, _ = await service.store.create_user(f"user{u}")
            for t in range(3):
                thread = await service.store.create_thread(user.id)
                threads.append((user.id, thread.id, f"name{u}x{t}"))
        await asyncio.gather(*(turn(service, u, t, f"my name is {name}") for u, t, name in threads))
        ends = await asyncio.gather(
            *(turn(service, u, t, "what is my name?") for u, t, _ in threads)
        )
    for (_, _, name), end in zip(threads, ends, strict=True):
        assert end["final_response"] == f"Your name is {name}."


async def test_history_is_read_from_the_store_across_a_restart(database_url: str) -> None:
    settings = Settings(database_url=database_url)
    async with Service(settings) as service:
        user, _ = await service.store.create_user("restarter")
        thread = await service.store.create_thread(user.id)
        await turn(service, user.id, thread.id, "the sky is green")
        await turn(service, user.id, thread.id, "what is 2+2?")
    async with Service(settings) as service:
        end = await turn(service, user.id, thread.id, "what did I say first?")
    assert end["final_response"] == "You first said: the sky is green"


async def test_custom_flows_read_history_and_delegates_get_only_their_input(
    tmp_path: Path,
) -> None:
    seen: list[list[dict[str, Any]]] = []

    class Recorder:
        async def complete(self, messages: list[dict[str, Any]], tools: Any, **_: Any) -> Any:
            from tenet import ModelReply

            seen.append([dict(m) for m in messages])
            return ModelReply(content="child answer")

    class Parent(Agent):
        async def run(self, ctx: RunContext, input: str) -> str:
            history = await ctx.history()
            history.clear()  # a copy: changing it changes nothing
            again = await ctx.history()
            child = await ctx.delegate("child", "only this")
            return f"{len(again)} {again[0]['content'] if again else ''} / {child}"

    registry = AgentRegistry(
        [Parent(name="parent"), Agent(name="child", instructions="be brief", model=Recorder())]
    )
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}")
    async with Service(settings, registry) as service:
        user, _ = await service.store.create_user("flow")
        thread = await service.store.create_thread(user.id)
        first = await turn(service, user.id, thread.id, "first words", agent="parent")
        second = await turn(service, user.id, thread.id, "second words", agent="parent")
    assert first["final_response"] == "0  / child answer"
    assert second["final_response"] == "2 first words / child answer"
    assert seen[-1] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "only this"},
    ]


async def test_the_test_endpoint_answers_400_where_openai_does() -> None:
    """The strictness the other tests rely on: each broken shape is refused."""
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    broken = {
        "tool result without its call": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_1", "content": "1"},
        ],
        "call without its result": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "user", "content": "and?"},
        ],
        "non-string content": [{"role": "user", "content": {"text": "hi"}}],
        "non-string tool content": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": 1},
        ],
    }
    fine = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "1"},
        {"role": "user", "content": "and?"},
    ]
    async with fake_llm(lambda body: answer("ok")) as llm, httpx.AsyncClient() as http:
        url = f"{llm.base_url}/chat/completions"
        for name, messages in broken.items():
            r = await http.post(url, json={"model": "m", "messages": messages, "stream": True})
            assert r.status_code == 400, name
            assert r.json()["error"]["type"] == "invalid_request_error"
        r = await http.post(url, json={"model": "m", "messages": fine, "stream": True})
        assert r.status_code == 200


async def test_a_flow_changing_its_history_changes_nothing_for_the_next_run(
    tmp_path: Path,
) -> None:
    """Finished turns are kept built in the process: each read must still be a fresh copy."""

    class Vandal(Agent):
        async def run(self, ctx: RunContext, input: str) -> str:
            history = await ctx.history()
            seen = " | ".join(str(m["content"]) for m in history if m["role"] == "user")
            for message in history:  # change every message in place
                message["content"] = "tampered"
                message["role"] = "system"
            return seen or "-"

    registry = AgentRegistry([Vandal(name="vandal")])
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}")
    async with Service(settings, registry) as service:
        user, _ = await service.store.create_user("vandal")
        thread = await service.store.create_thread(user.id)
        ends = [await turn(service, user.id, thread.id, f"words {i}", "vandal") for i in range(4)]
    assert [e["final_response"] for e in ends] == [
        "-",
        "words 0",
        "words 0 | words 1",
        "words 0 | words 1 | words 2",
    ]


async def test_turns_no_longer_kept_are_read_again_from_the_store(tmp_path: Path) -> None:
    """A read leaves out the text of turns it expects to hold built; when they were let go
    (the process keeps a bounded number), their text is read after all."""
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}")
    async with Service(settings) as service:
        user, _ = await service.store.create_user("forgetful")
        thread = await service.store.create_thread(user.id)
        for text in ("the sky is green", "what is 2+2?", "hello there"):
            await turn(service, user.id, thread.id, text)
        kept = service.engine.conversations.turns_kept
        assert kept.hint((user.id, thread.id)) > 0  # the next read spares the older text
        kept.entries.clear()
        kept.size = 0
        first = await turn(service, user.id, thread.id, "what did I say first?")
        before = await turn(service, user.id, thread.id, "what did I say before?")
    assert first["final_response"] == "You first said: the sky is green"
    assert before["final_response"] == "You said: what did I say first?"


async def test_a_runs_own_turn_kept_at_its_end_is_what_a_read_of_the_store_builds(
    tmp_path: Path,
) -> None:
    """A run keeps its own finished turn built as it ends, so the next run does not build
    it from the store; what it keeps is exactly what a read of the store builds: every
    tool call with its result (a failed one's error, a long one cut), not a delegated
    agent's, not streamed text."""

    @tool
    async def lookup(key: str) -> str:
        """Look a key up."""
        return f"value of {key} " + "x" * 300  # longer than the cut below

    @tool
    async def broken() -> str:
        """Always fails."""
        raise ValueError("no luck")

    class Worker(Agent):
        async def run(self, ctx: RunContext, input: str) -> str:
            await ctx.say("working on it")
            found = await ctx.call_tool("lookup", key=input)
            with contextlib.suppress(ToolFailed):
                await ctx.call_tool("broken")
            await ctx.delegate("helper", f"help with {input}")
            if input == "fail":
                raise ValueError("the flow gave up")
            return f"done: {str(found)[:20]}"

    class Helper(Agent):
        async def run(self, ctx: RunContext, input: str) -> str:
            await ctx.call_tool("lookup", key="inner")
            return "helped"

    registry = AgentRegistry(
        [
            Worker(name="worker", tools=[lookup, broken]),
            Helper(name="helper", tools=[lookup]),
        ]
    )
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}", tool_result_max_chars=100
    )
    async with Service(settings, registry) as service:
        conversations = service.engine.conversations
        kept = conversations.turns_kept
        user, _ = await service.store.create_user("keeper")
        thread = await service.store.create_thread(user.id)
        ends = []
        for text in ("alpha", "fail", "beta"):
            end = await turn(service, user.id, thread.id, text, "worker")
            ends.append(end)
            if len(ends) == 1:  # a thread's first turn is left to its second run to build
                assert (user.id, end["run_id"]) not in kept.entries
                continue
            # Kept by the run itself as it ended: no read has built it yet.
            assert (user.id, end["run_id"]) in kept.entries
            assert kept.hint((user.id, thread.id)) == end["seq"]
        assert [e["type"] for e in ends] == ["agent_completed", "agent_error", "agent_completed"]
        later = "run_" + "0" * 26  # a run after all of them
        warm = await conversations.turns(user.id, thread.id, later)
        conversations.turns_kept = TurnCache(TURN_CACHE_BYTES)  # nothing built: all from the store
        cold = await conversations.turns(user.id, thread.id, later)
    assert warm == cold
    assert [rid for rid, _ in cold] == [e["run_id"] for e in ends]
    for (rid, messages), end in zip(cold, ends, strict=True):
        assert orjson.loads(kept.entries[(user.id, rid)][0]) == messages
        roles = [m["role"] for m in messages]
        last = ["assistant"] if end["type"] == "agent_completed" else []
        assert roles == ["user", "assistant", "tool", "assistant", "tool", *last]
        assert "no luck" in messages[4]["content"]
        assert "[cut: " in messages[2]["content"]


async def test_one_shot_threads_leave_nothing_kept_and_conversations_keep_their_turns(
    tmp_path: Path,
) -> None:
    """Users who come, run once and go leave no turn behind (the memory a kept turn holds
    would outlive them); a thread that goes on keeps each later turn as it ends."""
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}")
    async with Service(settings) as service:
        kept = service.engine.conversations.turns_kept
        for n in range(20):
            user, _ = await service.store.create_user(f"passer-{n}")
            thread = await service.store.create_thread(user.id)
            end = await turn(service, user.id, thread.id, "what is 7 + 2")
            assert end["type"] == "agent_completed"
        assert not kept.entries and kept.size == 0
        user, _ = await service.store.create_user("talker")
        thread = await service.store.create_thread(user.id)
        ends = [await turn(service, user.id, thread.id, f"remember {w}") for w in "abc"]
        assert [(user.id, e["run_id"]) in kept.entries for e in ends] == [True, True, True]
