"""A new user's first hour, run as they would: the installed ``tenet`` command in a shell.

Each test starts ``.venv/bin/tenet`` (the console script, not ``python -m``: only
the script shows what a user's shell does, the current folder on ``sys.path``
included) in a folder of its own, on a SQLite file there.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

TENET = str(Path(sys.executable).with_name("tenet"))

#: The README's "Define your own agents" file, as a user saves it.
MYAGENTS = '''
from tenet import Agent, AgentRegistry, RunContext, tool


@tool
async def lookup_order(ctx: RunContext, order_id: str) -> dict:
    """Find one of the user's orders."""
    return {"order_id": order_id, "status": "shipped"}


class Triage(Agent):
    async def run(self, ctx: RunContext, input: str) -> str:
        await ctx.think("Looking up the order")
        order = await ctx.call_tool("lookup_order", order_id=input.split()[-1])
        return await ctx.delegate("writer", f"Order status: {order['status']}")


registry = AgentRegistry(
    [
        Triage(name="triage", description="Answers order questions", tools=[lookup_order]),
        Agent(name="writer", description="Writes replies", instructions="Be brief."),
    ]
)
'''


def user_env(folder: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: no TENET_* of ours but the store in ``folder``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENET_")}
    env["TENET_DATABASE_URL"] = f"sqlite+aiosqlite:///{folder / 'tenet.db'}"
    env.update(extra)
    return env


def tenet(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TENET, *args],
        cwd=folder,
        env=user_env(folder, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass
class Running:
    """A ``tenet`` process whose stdout and stderr lines are read as they come."""

    process: subprocess.Popen[str]
    lines: queue.Queue[tuple[str, str]] = field(default_factory=queue.Queue)
    seen: list[tuple[str, str]] = field(default_factory=list)

    def wait_for(self, pattern: str, stream: str | None = None, deadline_s: float = 90) -> str:
        """The first line matching ``pattern`` (bounded wait: a hung start fails the test)."""
        compiled = re.compile(pattern)
        for name, line in self.seen:
            if (stream in (None, name)) and compiled.search(line):
                return line
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                name, line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append((name, line))
            if (stream in (None, name)) and compiled.search(line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; got:\n{self.text()}")

    def text(self) -> str:
        with contextlib.suppress(queue.Empty):
            while True:
                self.seen.append(self.lines.get_nowait())
        return "".join(f"{name}: {line}" for name, line in self.seen)


@contextlib.contextmanager
def started(folder: Path, *args: str, **env: str) -> Iterator[Running]:
    process = subprocess.Popen(
        [TENET, *args],
        cwd=folder,
        env=user_env(folder, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = Running(process)

    def pump(name: str, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            running.lines.put((name, line))

    readers = [
        threading.Thread(target=pump, args=(n, s), daemon=True)
        for n, s in (("stdout", process.stdout), ("stderr", process.stderr))
    ]
    for reader in readers:
        reader.start()
    try:
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for reader in readers:
            reader.join(timeout=5)


def served_url(line: str) -> str:
    found = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert found, line
    return found.group(0)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# 1. The README's own agents, from the folder that holds them --------------------------------


def test_serve_and_run_import_the_app_from_the_current_folder(tmp_path: Path) -> None:
    (tmp_path / "myagents.py").write_text(MYAGENTS)

    ran = tenet(tmp_path, "run", "triage", "where is order 42", "--app", "myagents:registry")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "lookup_order" in ran.stdout and "shipped" in ran.stdout

    added = tenet(tmp_path, "users", "add", "alice")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    with started(tmp_path, "serve", "--app", "myagents:registry", "--port", "0") as server:
        url = served_url(server.wait_for("tenet is serving at", "stderr"))
        agents = httpx.get(f"{url}/v1/agents", headers={"Authorization": f"Bearer {token}"})
    assert agents.status_code == 200, agents.text
    assert {a["name"] for a in agents.json()} == {"triage", "writer"}


# 2. `tenet demo`: bind first, then announce; one valid demo token ------------------------------


def test_demo_on_a_busy_port_exits_non_zero_without_printing_a_token(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = tenet(tmp_path, "demo", "--port", str(port))
    assert result.returncode != 0
    assert "tnt_" not in result.stdout + result.stderr
    assert "serving" not in result.stdout
    assert f"127.0.0.1:{port}" in result.stderr and "in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_each_demo_start_replaces_the_demo_token(tmp_path: Path) -> None:
    tokens = []
    for _ in range(2):
        with started(tmp_path, "demo", "--port", "0") as demo:
            tokens.append(demo.wait_for(r"demo user token: tnt_", "stdout").split()[-1])
            url = served_url(demo.wait_for("tenet is serving at", "stdout"))
            statuses = [
                httpx.get(f"{url}/v1/agents", headers={"Authorization": f"Bearer {t}"}).status_code
                for t in tokens
            ]
        assert statuses[-1] == 200, "the token on the screen does not work"
        assert all(s == 401 for s in statuses[:-1]), f"an older demo token still works: {statuses}"
    assert tokens[0] != tokens[1]


# 4. An invalid setting: one line, exit 2, every command ----------------------------------------

COMMANDS = [
    ["serve"],
    ["demo"],
    ["run", "assistant", "hi"],
    ["users", "add", "zoe"],
    ["db", "upgrade"],
    ["bench", "--users", "1"],
    ["audit", "--users", "2"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_an_invalid_setting_is_one_line_and_exit_2_for_every_command(
    tmp_path: Path, command: list[str]
) -> None:
    result = tenet(tmp_path, *command, TENET_MODEL="gpt-4o")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "invalid setting TENET_MODEL='gpt-4o': must be 'scripted' or 'openai'"
    ]


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("TENET_PORT", "eighty", "whole number"),
        ("TENET_USER_MAX_RUNS", "0", "greater than or equal to 1"),
        ("TENET_AUTO_MIGRATE", "maybe", "true or false"),
        ("TENET_LOG_LEVEL", "loud", "INFO"),
        ("TENET_DATABASE_URL", "postgres://me:hunter2@db/x", "postgresql+asyncpg://"),
        ("TENET_MODEL_BASE_URL", "localhost:11434", "http://"),
    ],
)
def test_each_kind_of_invalid_value_names_variable_value_and_what_is_allowed(
    tmp_path: Path, name: str, value: str, allowed: str
) -> None:
    result = tenet(tmp_path, "serve", **{name: value})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    shown = value.replace("hunter2", "***")
    assert line.startswith(f"invalid setting {name}={shown!r}: "), line
    assert allowed in line
    assert "hunter2" not in result.stderr


def test_a_misspelled_setting_is_named_with_the_setting_it_resembles(tmp_path: Path) -> None:
    result = tenet(tmp_path, "users", "add", "zoe", TENET_USER_MAX_RUN="1", TENET_NO_SUCH_THING="x")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[:2] == [
        "warning: TENET_NO_SUCH_THING is not a tenet setting and is ignored",
        "warning: TENET_USER_MAX_RUN is not a tenet setting and is ignored;"
        " did you mean TENET_USER_MAX_RUNS?",
    ]


def test_help_is_shown_even_when_a_setting_is_invalid(tmp_path: Path) -> None:
    result = tenet(tmp_path, "serve", "--help", TENET_MODEL="gpt-4o")
    assert result.returncode == 0 and "--app" in result.stdout


# 7. The banner through a pipe: no line is wrapped ----------------------------------------------


def test_the_banner_through_a_narrow_pipe_keeps_the_curl_line_whole(tmp_path: Path) -> None:
    with started(tmp_path, "demo", "--port", "0", COLUMNS="40") as demo:
        curl = demo.wait_for(r"curl", "stdout")
        token = demo.wait_for(r"demo user token", "stdout").split()[-1]
    assert re.fullmatch(
        rf"try: curl -H 'Authorization: Bearer {re.escape(token)}' "
        r"http://127\.0\.0\.1:\d+/v1/agents\n",
        curl,
    ), curl
    assert re.fullmatch(r"tnt_[\w-]{20,}", token), token


# 5. The server says which model it uses, and logs an endpoint it can't reach -------------------


def test_the_server_logs_its_model_and_an_unreachable_endpoint_without_the_key(
    tmp_path: Path,
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}/v1"
    model = {
        "TENET_MODEL": "openai",
        "TENET_MODEL_BASE_URL": endpoint,
        "TENET_MODEL_API_KEY": "sk-very-secret",
        "TENET_MODEL_MAX_RETRIES": "0",
    }
    token = tenet(tmp_path, "users", "add", "mo").stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    with started(tmp_path, "serve", "--port", "0", **model) as server:
        started_line = server.wait_for(r"model: ", "stderr")
        url = served_url(server.wait_for("tenet is serving at", "stderr"))
        with httpx.Client(base_url=url, headers=auth) as http:
            thread = http.post("/v1/threads", json={}).json()
            run = http.post(
                f"/v1/threads/{thread['id']}/runs", json={"agent": "assistant", "input": "hi"}
            ).json()
        logged = server.wait_for(r"model call of agent .* could not be reached", "stderr")
        log_text = server.text()
    assert f"openai 'gpt-4o-mini' at {endpoint}" in started_line
    assert endpoint in logged and f"run={run['id']}" in logged
    assert log_text.count("could not be reached") == 1  # once, where the run's call failed
    assert "sk-very-secret" not in log_text


# 8. Small things a user sees -------------------------------------------------------------------


def test_a_cli_thread_is_titled_from_its_input_and_the_answer_is_prose(tmp_path: Path) -> None:
    import json
    import sqlite3

    ran = tenet(tmp_path, "run", "researcher", "tell me about python and sqlite", "--user", "ann")
    assert ran.returncode == 0, ran.stderr
    answer = ran.stdout.strip().splitlines()[-1]
    assert "agent_completed" in answer and "Python was first released in 1991." in answer
    assert not set('[]{}"') & set(answer), answer

    with contextlib.closing(sqlite3.connect(tmp_path / "tenet.db")) as db:
        [metadata] = [json.loads(row[0]) for row in db.execute("SELECT metadata FROM threads")]
    assert metadata == {"title": "tell me about python and sqlite"}


def test_a_brand_new_database_logs_no_empty_migration_step(tmp_path: Path) -> None:
    with started(tmp_path, "serve", "--port", "0") as server:
        server.wait_for("tenet is serving at", "stderr")
        log_text = server.text()
    assert "migrating" not in log_text, log_text


def test_tool_descriptions_are_plain_text() -> None:
    from tenet.examples import default_registry

    for agent in default_registry().specs():
        for spec in agent["tools"]:
            assert "`" not in spec["description"], spec


async def test_a_thread_the_server_makes_for_a_run_is_titled_from_its_input(
    tmp_path: Path,
) -> None:
    from tenet.client import Client
    from tenet.settings import Settings
    from tenet.testing import running_server

    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}")
    async with running_server(settings) as server:
        _, token = await server.create_user("wes")
        async with Client(server.url, token) as client:
            run = await client.run("assistant", "  what is 6 * 7?  ")
            await run.result()
            thread = await client.thread(run.thread_id)
    assert thread["metadata"] == {"title": "what is 6 * 7?"}
