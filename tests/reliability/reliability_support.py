"""Helpers for the reliability tests: real servers in threads and processes, a TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tenet import Settings
from tenet.testing import ServerHandle, running_server

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def threaded_server(settings: Settings) -> Iterator[ServerHandle]:
    """A real server in its own thread and event loop, for synchronous clients (hypothesis)."""
    started = threading.Event()
    box: dict[str, Any] = {}

    async def go() -> None:
        box["loop"] = asyncio.get_running_loop()
        box["stop"] = stop = asyncio.Event()
        try:
            async with running_server(settings) as server:
                box["server"] = server
                started.set()
                await stop.wait()
        except BaseException as exc:
            box["error"] = exc
            started.set()

    thread = threading.Thread(target=asyncio.run, args=(go(),), name="tenet-server", daemon=True)
    thread.start()
    assert started.wait(30), "the server did not start"
    if "error" in box:
        raise box["error"]
    try:
        yield box["server"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)


def create_user_sync(server: ServerHandle, name: str | None = None) -> tuple[str, str]:
    r = httpx.post(
        server.url + "/v1/users",
        json={"name": name or f"user-{secrets.token_hex(4)}"},
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=10,
    )
    r.raise_for_status()
    body = r.json()
    return body["user_id"], body["token"]


# A `tenet serve` process ---------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServeProcess:
    """``tenet serve`` in a child process (so that it can be sent real signals)."""

    env: dict[str, str]
    log: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def start(self) -> ServeProcess:
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tenet.cli", "serve", "--port", str(self.port)],
            env={**os.environ, **self.env},
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"tenet serve exited:\n{self.log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.url + "/healthz")).status_code == 200:
                        return self
                await asyncio.sleep(0.05)
        raise RuntimeError("tenet serve did not become healthy")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait_exit(self, timeout: float = 30) -> int:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("tenet serve did not exit")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextlib.asynccontextmanager
async def serve_process(env: dict[str, str], log: Path) -> AsyncIterator[ServeProcess]:
    proc = await ServeProcess(env, log).start()
    try:
        yield proc
    finally:
        proc.kill()


# A TCP proxy the test can cut and restore ------------------------------------------------------


class TcpProxy:
    """Forwards a loopback port to a target; ``cut()`` drops every connection and refuses new ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        """The database is gone: no new connection, every open one reset."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()
