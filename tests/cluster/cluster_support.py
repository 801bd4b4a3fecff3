"""Real cluster processes for the tests: a private Redis and N ``tenet serve`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tenet.client import Client

#: This folder, on the served processes' import path (for ``app=``).
HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """A private redis-server, so that a test may stop and restart it freely."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None


@dataclass
class Node:
    """One ``tenet serve`` process."""

    index: int
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)


@dataclass
class Cluster:
    nodes: list[Node]
    admin_token: str
    database_url: str
    redis: RedisServer

    async def user(self, name: str) -> tuple[str, str]:
        body = await Client.create_user(self.nodes[0].url, self.admin_token, name)
        return body["user_id"], body["token"]


async def wait_healthy(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url + "/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy")


@contextlib.asynccontextmanager
async def cluster(
    database_url: str, tmp_path: Path, *, nodes: int = 3, app: str | None = None, **settings: str
) -> AsyncIterator[Cluster]:
    """N real processes on one Postgres database and a private Redis.

    ``app``: ``module:registry`` to serve instead of the example agents, a module of
    this folder (``cluster_agents``) or one on the test's ``PYTHONPATH``.
    """
    redis = RedisServer()
    redis.start()
    admin = secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "TENET_DATABASE_URL": database_url,
        "TENET_REDIS_URL": redis.url,
        "TENET_ADMIN_TOKEN": admin,
        "TENET_HEARTBEAT_S": "0.3",
        "TENET_DEAD_AFTER_BEATS": "4",
        "TENET_CLUSTER_POLL_S": "0.2",
        "TENET_LOG_LEVEL": "WARNING",
        **{f"TENET_{k.upper()}": v for k, v in settings.items()},
        "PYTHONPATH": os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    serve = [sys.executable, "-m", "tenet.cli", "serve"] + (["--app", app] if app else [])
    started: list[Node] = []
    try:
        # The first process migrates the database; the others start once it is up.
        for i in range(nodes):
            port = free_port()
            log = tmp_path / f"node{i}.log"
            proc = subprocess.Popen(
                [*serve, "--port", str(port)],
                env=env,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
            node = Node(i, port, proc, log)
            started.append(node)
            if i == 0:
                await wait_healthy(node.url)
        await asyncio.gather(*(wait_healthy(n.url) for n in started))
        yield Cluster(started, admin, database_url, redis)
    finally:
        for node in started:
            if node.process.poll() is None:
                node.process.terminate()
        for node in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(10)
            if node.process.poll() is None:
                node.kill()
        redis.stop()
