"""Servers under test, each in a process of its own, measured through ``/proc``.

The server runs in a separate process so that its CPU time and memory can be
read apart from the load driver's: ``/proc/PID/stat`` gives user + system CPU
seconds (every thread of the process, SQLite's included), ``/proc/PID/status``
gives the resident set (``VmRSS``) and its high-water mark (``VmHWM``). Reading
``/proc`` needs no dependency and costs microseconds, so it can be sampled
while the load runs.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

#: What ``--app`` serves for each kind of server (None: tenet's default agents).
KINDS = ("tenet", "floor", "naive")
NAIVE_APP = "tenet.bench.naive:registry"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_file_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit (children inherit it).

    10,000 idle sockets need 10,000 descriptors on each side; the system's limits
    are left alone, only this process tree's soft limit moves.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads included."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        raw = fh.read()
    # The command name (field 2) may hold spaces; fields after the last ')' are fixed.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cpu_wait_seconds(pid: int) -> float:
    """Seconds the process's threads spent ready to run but waiting for a CPU.

    The second field of ``/proc/PID/task/*/schedstat`` (nanoseconds on the run
    queue), summed over the threads: on a shared machine, the part of a
    latency that is the machine's load rather than the process's own work.
    Threads that ended are not counted; 0.0 where the kernel keeps no schedstat.
    """
    total = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as fh:
                    total += int(fh.read().split()[1])
    return total / 1e9


def rss_bytes(pid: int) -> int:
    """Resident set size now (``/proc/PID/statm``: the cheapest read)."""
    with open(f"/proc/{pid}/statm", "rb") as fh:
        return int(fh.read().split()[1]) * _PAGE


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def listening_pid(port: int) -> int | None:
    """The PID of a process of this machine listening on TCP ``port`` (None: none seen).

    ``/proc/net/tcp{,6}`` give the listening socket's inode; the process whose
    descriptors hold it is the server. Processes this user may not inspect are
    skipped, so a server run by another user is not found (give ``--server-pid``).
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # fields: sl, local address:port (hex), remote, state (0A: LISTEN), ..., inode
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                    return int(entry)
            except OSError:
                continue
    return None


#: Hosts of a ``--url`` that are this machine (its server's PID can then be found).
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "[::1]"})


@dataclass
class ServerMeter:
    """How a server's CPU seconds and RSS are read: ``/proc`` by PID, or its ``/metrics``.

    ``source`` says which, for the report: ``pid`` (this machine, every thread of
    the process, exact to the kernel's tick) or ``metrics`` (the server's own
    ``process_cpu_seconds_total`` and ``process_resident_memory_bytes``, read over
    HTTP with the admin token: works for a server on another machine too, and
    costs the server one scrape per reading).
    """

    source: str
    pid: int | None = None
    url: str | None = None
    admin_token: str | None = None

    def _metrics(self) -> dict[str, float]:
        assert self.url is not None
        r = httpx.get(
            self.url + "/metrics",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=10.0,
        )
        r.raise_for_status()
        out: dict[str, float] = {}
        for line in r.text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
                out[name] = float(value)
        return out

    def cpu_seconds(self) -> float | None:
        if self.pid is not None:
            return cpu_seconds(self.pid)
        return self._metrics().get("process_cpu_seconds_total")

    def rss_bytes(self) -> int | None:
        if self.pid is not None:
            return rss_bytes(self.pid)
        value = self._metrics().get("process_resident_memory_bytes")
        return None if value is None else int(value)

    @classmethod
    def for_url(cls, url: str, admin_token: str, pid: int | None = None) -> ServerMeter:
        """The best way to measure the server at ``url``: a given PID, else the PID found
        listening on its port when it is on this machine, else its ``/metrics``."""
        parsed = httpx.URL(url)
        if pid is None and parsed.host in LOCAL_HOSTS:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            pid = listening_pid(port)
        if pid is not None:
            return cls("pid", pid=pid)
        return cls("metrics", url=url.rstrip("/"), admin_token=admin_token)


@dataclass
class RssSampler:
    """Samples a process's RSS on a thread while a phase runs, to get the phase's peak."""

    pid: int
    interval_s: float = 0.05
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self.peak = rss_bytes(self.pid)
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with contextlib.suppress(OSError):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except OSError:
                return


class ServerProcess:
    """``tenet serve`` (or the floor app) on a fresh SQLite file, in a child process."""

    def __init__(
        self,
        kind: str,
        *,
        admin_token: str,
        env: dict[str, str] | None = None,
        workdir: Path | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown server kind {kind!r}")
        self.kind = kind
        self.admin_token = admin_token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/ws"
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"tenet-bench-{kind}-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.env = {
            **os.environ,
            "TENET_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
            "TENET_ADMIN_TOKEN": admin_token,
            "TENET_LOG_LEVEL": "WARNING",
            "TENET_HOST": "127.0.0.1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        if self.kind == "floor":
            return [sys.executable, "-m", "tenet.bench.floor", "--port", str(self.port)]
        cmd = [sys.executable, "-m", "tenet.cli", "serve", "--port", str(self.port)]
        if self.kind == "naive":
            cmd += ["--app", NAIVE_APP]
        return cmd

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        self._log = open(self.workdir / "server.log", "wb")
        self.proc = subprocess.Popen(
            self.command(), env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited at start:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.kind} server did not answer within {timeout_s:g}s")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.workdir / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
