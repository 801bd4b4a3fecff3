"""The ``tenet`` command: serve, demo, run an agent, manage users, migrate.

Every command reads its configuration from ``TENET_*`` settings (see the README);
flags override the few that are usually given per call. The settings are checked
before any command runs: an invalid value is one line naming the variable, the
value and what is allowed, and exit code 2.

Output never wraps (``soft_wrap``): a URL, a token or a command printed here is one
line whatever the terminal's width, and in a pipe or a log file.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import click
import orjson
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from .events import is_terminal
from .registry import AgentRegistry
from .settings import Settings, SettingsError, unknown_variables
from .titles import title_metadata

if TYPE_CHECKING:
    from .service import Service


class _SettingsFirst(TyperGroup):
    """Checks the ``TENET_*`` settings once, before any command (but not for ``--help``)."""

    def invoke(self, ctx: click.Context) -> Any:
        args = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        if not ctx.resilient_parsing and not set(args) & set(ctx.help_option_names):
            for line in unknown_variables(os.environ):
                err.print(line, markup=False)
            try:
                Settings()
            except SettingsError as exc:
                for line in exc.lines:
                    err.print(line, markup=False)
                raise typer.Exit(2) from None
        return super().invoke(ctx)


app = typer.Typer(
    cls=_SettingsFirst,
    add_completion=False,
    no_args_is_help=True,
    help="tenet: isolated multi-user agents.",
)
users_app = typer.Typer(no_args_is_help=True, help="Manage users.")
db_app = typer.Typer(no_args_is_help=True, help="Manage the database.")
app.add_typer(users_app, name="users")
app.add_typer(db_app, name="db")
console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def load_registry(spec: str | None, settings: Settings) -> AgentRegistry:
    """``module:attribute`` naming an AgentRegistry (or a function returning one).

    The module is looked up from the current folder first, as uvicorn, gunicorn and
    flask do: ``tenet serve --app myagents:registry`` beside ``myagents.py`` works.
    """
    if not spec:
        from .examples import default_registry

        return default_registry(settings)
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    module_name, _, attr = spec.partition(":")
    try:
        value: Any = getattr(importlib.import_module(module_name), attr or "registry")
    except (ImportError, AttributeError) as exc:
        raise typer.BadParameter(f"cannot load {spec!r}: {exc}") from None
    if callable(value) and not isinstance(value, AgentRegistry):
        value = value()
    if not isinstance(value, AgentRegistry):
        raise typer.BadParameter(f"{spec!r} is not an AgentRegistry")
    return value


def _main_field(event: dict[str, Any]) -> str:
    t = event["type"]
    if t == "agent_started":
        return event.get("input", "")
    if t == "agent_thinking":
        return event.get("reasoning", "")
    if t == "message_delta":
        return repr(event.get("text", ""))
    if t == "tool_executing":
        return f"{event['tool_name']}({orjson.dumps(event.get('parameters')).decode()})"
    if t == "tool_completed":
        if event.get("ok"):
            return f"{event['tool_name']} -> {orjson.dumps(event.get('results')).decode()}"
        return f"{event['tool_name']} failed: {event.get('error', {}).get('message', '')}"
    if t == "agent_completed":
        return event.get("final_response", "")
    if t == "agent_error":
        error = event.get("error", {})
        return f"[{error.get('code')}] {error.get('message')}"
    if t == "run_cancelled":
        return event.get("reason", "")
    return ""


def format_event(event: dict[str, Any]) -> str:
    """One line: seq, type, agent and the type's main field."""
    indent = "  " * int(event.get("depth", 0) or 0)
    text = _main_field(event).replace("\n", " ")
    if len(text) > 160:
        text = text[:159] + "…"
    return f"{event['seq']:>4} {indent}{event['type']:<16} {event['agent_name']:<12} {text}"


@app.command()
def run(
    agent: Annotated[str, typer.Argument(help="The agent to run.")],
    input: Annotated[str, typer.Argument(help="The input to give it.")],
    user: Annotated[
        str, typer.Option("--user", "-u", help="Run as this user (made if new).")
    ] = "demo",
    app_spec: Annotated[
        str | None, typer.Option("--app", help="module:registry to load agents from.")
    ] = None,
) -> None:
    """Run one agent in-process on the configured store, printing each event live."""
    settings = Settings()
    registry = load_registry(app_spec, settings)
    code = asyncio.run(_run(settings, registry, agent, input, user))
    raise typer.Exit(code)


async def _run(
    settings: Settings, registry: AgentRegistry, agent: str, input: str, user: str
) -> int:
    from .bus.follow import follow
    from .errors import TenetError
    from .service import Service

    async with Service(settings, registry) as service:
        found = await service.store.admin_user_by_name(user)
        user_id = found.id if found else (await service.store.create_user(user))[0].id
        thread = await service.store.create_thread(user_id, title_metadata(input))
        events = follow(service.store, service.bus, user_id, thread.id, after=0)
        try:
            run = await service.engine.submit(user_id, thread.id, agent, input)
        except TenetError as exc:
            err.print(f"[red]{exc.code}[/]: {escape(exc.message)}")
            return 2
        status = "failed"
        async for body in events:
            event = orjson.loads(body)
            console.print(escape(format_event(event)), soft_wrap=True)
            if event["run_id"] == run.id and is_terminal(event):
                status = event.get("status", "failed")
                break
        await events.aclose()
        await service.engine.wait(run.id)
        return 0 if status == "completed" else 1


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (TENET_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (TENET_PORT).")] = None,
    app_spec: Annotated[str | None, typer.Option("--app", help="module:registry to serve.")] = None,
) -> None:
    """Serve the HTTP, WebSocket and SSE API (the example agents by default)."""
    settings = _with(Settings(), host=host, port=port)
    registry = load_registry(app_spec, settings)
    sock = _bind(settings)

    async def announce(service: Service) -> None:
        logging.getLogger("tenet").info("tenet is serving at %s", _url(sock))

    _serve(settings, registry, sock, announce)


@app.command()
def demo(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (TENET_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (TENET_PORT).")] = None,
) -> None:
    """Serve the example agents with a demo user; prints the URL and the demo token.

    The port is bound first and the banner printed once the server serves: a busy
    port fails before any URL or token is shown. Each start replaces the demo
    user's tokens with one new token (they are stored hashed, so an old one can't
    be shown again): the token on the screen is the only one that works.
    """
    settings = _with(Settings(), host=host, port=port)
    registry = load_registry(None, settings)
    sock = _bind(settings)

    async def announce(service: Service) -> None:
        token = await _demo_token(service)
        url = _url(sock)
        console.print(f"tenet is serving at [bold]{url}[/]  (web console at {url}/)")
        console.print(f"demo user token: [bold]{token}[/]")
        console.print(f"try: curl -H 'Authorization: Bearer {token}' {url}/v1/agents")

    _serve(settings, registry, sock, announce)


async def _demo_token(service: Service) -> str:
    """A new token of the ``demo`` user (made if new); the user's older tokens stop working."""
    store = service.store
    user = await store.admin_user_by_name("demo")
    if user is None:
        return (await store.create_user("demo"))[1]
    return await store.replace_tokens(user.id)


def _with(settings: Settings, **values: Any) -> Settings:
    changes = {k: v for k, v in values.items() if v is not None}
    return settings.model_copy(update=changes) if changes else settings


def _bind(settings: Settings) -> socket.socket:
    """The listening socket, or one line saying why not and exit 1."""
    from .testing import bind

    try:
        return bind(settings.host, settings.port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        err.print(
            f"cannot listen on {settings.host}:{settings.port}: {reason} "
            "(is another server using it? choose another with --port or TENET_PORT)",
            markup=False,
        )
        raise typer.Exit(1) from None


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _serve(
    settings: Settings,
    registry: AgentRegistry,
    sock: socket.socket,
    on_started: Callable[[Service], Awaitable[None]],
) -> None:
    from .testing import serve as serve_forever

    serve_forever(settings, registry, sock=sock, on_started=on_started)


@users_app.command("add")
def users_add(name: Annotated[str, typer.Argument(help="The new user's unique name.")]) -> None:
    """Create a user and print its token (shown once; only its hash is stored)."""
    from .errors import TenetError

    try:
        user_id, token = asyncio.run(_users_add(Settings(), name))
    except TenetError as exc:
        err.print(f"[red]{exc.code}[/]: {escape(exc.message)}")
        raise typer.Exit(1) from None
    err.print(f"user {escape(name)} ({user_id})")
    console.print(token)


async def _users_add(settings: Settings, name: str) -> tuple[str, str]:
    from .store.db import Store
    from .store.migrate import upgrade

    store = Store(settings.database_url)
    try:
        await upgrade(store.engine)
        user, token = await store.create_user(name)
        return user.id, token
    finally:
        await store.close()


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Migrate the database (TENET_DATABASE_URL) to the latest schema."""
    from rich.progress import Progress, TaskID

    from .store.db import Store
    from .store.migrate import upgrade

    with Progress(console=err, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        async def go() -> None:
            store = Store(Settings().database_url)
            try:
                await upgrade(store.engine, revision, progress)
            finally:
                await store.close()

        asyncio.run(go())
    console.print("database is up to date")


@app.command()
def audit(
    url: Annotated[
        str | None, typer.Option(help="Audit this live server (default: an in-process one).")
    ] = None,
    admin_token: Annotated[
        str | None, typer.Option(help="Admin token of the live server (TENET_ADMIN_TOKEN).")
    ] = None,
    users: Annotated[int, typer.Option(min=2, help="Canary users.")] = 20,
    runs: Annotated[
        int, typer.Option(min=1, help="Benchmark runs per user (besides the fixed ones).")
    ] = 2,
    fairness_limit: Annotated[float, typer.Option(help="Slowest user / median allowed.")] = 3.0,
    json_file: Annotated[
        str | None, typer.Option("--json", help="Write the report as JSON here.")
    ] = None,
    jwt_key: Annotated[
        str | None,
        typer.Option(help="Sign in the canaries with JWTs signed by this PEM private key."),
    ] = None,
    jwt_issuer: Annotated[str | None, typer.Option(help="The iss of the canaries' JWTs.")] = None,
    jwt_audience: Annotated[str, typer.Option(help="The aud of the canaries' JWTs.")] = "tenet",
) -> None:
    """Prove isolation: canary users, every channel checked. Exits 1 on any violation.

    With ``--jwt-key`` the canaries sign in with JWTs (``TENET_AUTH=jwt|both``); without
    ``--url`` the in-process server then trusts that key (served as a JWKS on loopback).
    """
    if jwt_key is not None and url is not None and jwt_issuer is None:
        raise typer.BadParameter("--jwt-issuer is needed with --jwt-key and --url")
    jwt = (jwt_key, jwt_issuer, jwt_audience) if jwt_key is not None else None
    report = asyncio.run(_audit(url, admin_token, users, runs, fairness_limit, jwt))
    from rich.table import Table

    table = Table(
        title=f"isolation audit: {report.users} users, {report.runs} runs, {report.events} events"
    )
    table.add_column("check")
    table.add_column("checked", justify="right")
    table.add_column("violations", justify="right")
    for name, check in report.checks.items():
        mark = "[green]0[/]" if check.ok else f"[red]{len(check.violations)}[/]"
        table.add_row(name, str(check.checked), mark)
    console.print(table)
    console.print(
        f"fairness: slowest user {report.fairness_ratio:.2f}x the median; {report.seconds:.1f}s"
    )
    for name, check in report.checks.items():
        for violation in check.violations[:10]:
            console.print(f"[red]{name}[/]: {escape(violation)}")
    if json_file:
        with open(json_file, "wb") as fh:
            fh.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2))
    raise typer.Exit(0 if report.ok else 1)


async def _audit(
    url: str | None,
    admin_token: str | None,
    users: int,
    runs: int,
    limit: float,
    jwt: tuple[str, str | None, str] | None = None,
) -> Any:
    import contextlib
    import secrets
    import tempfile

    from rich.progress import Progress

    from .audit import IsolationAudit

    async with contextlib.AsyncExitStack() as stack:
        sign_jwt = None
        if jwt is not None:
            from .testing_idp import LocalIdentityProvider, SigningKey, sign

            key_file, issuer, audience = jwt
            key = SigningKey.from_pem(key_file)
            if url is None:  # the in-process server trusts the key, served as a JWKS
                idp = stack.enter_context(LocalIdentityProvider([key], audience=audience))
                issuer = issuer or idp.issuer
            assert issuer is not None

            def sign_jwt(subject: str) -> str:
                return sign(key, subject, issuer=issuer, audience=audience, ttl_s=3600)

        if url is None:
            from .testing import running_server

            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="tenet-audit-"))
            admin_token = secrets.token_urlsafe(24)
            auth: dict[str, Any] = {}
            if jwt is not None:
                auth = {**idp.settings(), "auth_issuer": issuer}
            settings = Settings(
                database_url=f"sqlite+aiosqlite:///{folder}/audit.db",
                admin_token=admin_token,
                **auth,
            )
            server = await stack.enter_async_context(running_server(settings))
            url = server.url
        admin_token = admin_token or Settings().admin_token
        if not admin_token:
            raise typer.BadParameter("--admin-token (or TENET_ADMIN_TOKEN) is needed with --url")
        progress = stack.enter_context(Progress(console=err, transient=True))
        task = progress.add_task("auditing", total=IsolationAudit.step_count(users))
        auditor = IsolationAudit(
            url,
            admin_token,
            users=users,
            runs=runs,
            fairness_limit=limit,
            progress=lambda stage, n: progress.update(task, advance=n, description=stage),
            sign_jwt=sign_jwt,
        )
        return await auditor.run()


@app.command()
def jwks(
    key_file: Annotated[str, typer.Argument(help="A PEM key (RSA, or EC P-256).")],
    kid: Annotated[str, typer.Option(help="The key id tokens name in their header.")] = "tenet",
) -> None:
    """Print the public half of a key pair as a JWKS, to publish for TENET_AUTH_JWKS_URL."""
    from .testing_idp import SigningKey

    try:
        key = SigningKey.from_pem(key_file, kid=kid)
    except (OSError, ValueError, TypeError) as exc:
        raise typer.BadParameter(str(exc)) from None
    sys.stdout.write(
        orjson.dumps({"keys": [key.public_jwk()]}, option=orjson.OPT_INDENT_2).decode()
    )
    sys.stdout.write("\n")


#: ``tenet bench --users`` when not given.
BENCH_USERS = "1,10,100,1000"


@app.command()
def bench(
    users: Annotated[
        str, typer.Option(help="Comma-separated numbers of concurrent users.")
    ] = BENCH_USERS,
    runs: Annotated[int, typer.Option(min=1, help="Runs per user in each phase.")] = 10,
    latency_ms: Annotated[
        float, typer.Option(min=0, help="Model latency of the benchmark agent (ms, twice a run).")
    ] = 0.0,
    events: Annotated[int, typer.Option(min=5, help="Events per run.")] = 25,
    targets: Annotated[
        str, typer.Option(help="Servers to measure: tenet, floor (no agent, no store), naive.")
    ] = "tenet,floor,naive",
    latency_check_ms: Annotated[
        float, typer.Option(help="Latency of the 1 vs max(U) users check (0 skips it).")
    ] = 100.0,
    latency_check_runs: Annotated[int, typer.Option(min=1)] = 3,
    idle: Annotated[int, typer.Option(min=0, help="Idle sockets for RSS per user (0 skips).")] = (
        10_000
    ),
    churn: Annotated[
        int, typer.Option(min=0, help="Users that come, run and go, for RSS drift (0 skips).")
    ] = 10_000,
    churn_wave: Annotated[int, typer.Option(min=1, help="Churn users at a time.")] = 1000,
    history_check: Annotated[
        int,
        typer.Option(
            min=0, help="Extra CPU per run on threads of this many turns, in-process (0 skips)."
        ),
    ] = 50,
    history_check_runs: Annotated[int, typer.Option(min=1)] = 50,
    workers: Annotated[int, typer.Option(min=1, help="Load-driver processes.")] = 1,
    deadline_s: Annotated[
        float, typer.Option(help="Start no run later than this into a phase.")
    ] = 60.0,
    max_runs: Annotated[
        int, typer.Option(help="TENET_MAX_RUNS for started servers (0: max(256, U)).")
    ] = 0,
    compression: Annotated[
        bool, typer.Option(help="Offer permessage-deflate, as browsers do.")
    ] = True,
    url: Annotated[str | None, typer.Option(help="Measure this running server instead.")] = None,
    admin_token: Annotated[str | None, typer.Option(help="Admin token of --url.")] = None,
    server_pid: Annotated[
        int | None,
        typer.Option(
            help="PID of --url's server on this machine, for its CPU and RSS "
            "(default: the process listening on its port, else its /metrics)."
        ),
    ] = None,
    json_file: Annotated[str | None, typer.Option("--json", help="Write the report here.")] = None,
    plot_file: Annotated[str | None, typer.Option("--plot", help="Write a PNG plot here.")] = None,
    soak: Annotated[
        float,
        typer.Option(
            min=0, help="Instead: soak for MINUTES (mixed faulty workload, must lose nothing)."
        ),
    ] = 0.0,
    soak_users: Annotated[int, typer.Option(min=1, help="Simulated users of --soak.")] = 20,
    soak_seed: Annotated[int, typer.Option(help="Random seed of --soak.")] = 1,
    auth: Annotated[
        str, typer.Option(help="Instead, with 'jwt': what verifying a JWT costs per request.")
    ] = "tokens",
    hostile: Annotated[
        bool, typer.Option(help="Instead: the others' latency with and without a hostile user.")
    ] = False,
    hostile_users: Annotated[int, typer.Option(min=1, help="Normal users of --hostile.")] = 50,
    hostile_seconds: Annotated[float, typer.Option(min=1, help="Each --hostile phase (s).")] = 20,
    hostile_rounds: Annotated[
        int, typer.Option(min=1, help="Rounds the --hostile phases alternate in.")
    ] = 3,
    hostile_inputs: Annotated[
        str,
        typer.Option(
            help="--hostile's extra user sends the worst inputs ('worst'), or, as the "
            "control, the normal users' own as fast as its limits let it ('ordinary')."
        ),
    ] = "worst",
    protocol: Annotated[
        str,
        typer.Option(
            help="Instead, with 'ag-ui': events/s over AG-UI vs tenet's own SSE "
            "(at the largest --users if given, else 100; --runs up to 5 per user)."
        ),
    ] = "tenet",
    mcp: Annotated[
        int,
        typer.Option(min=0, help="Instead: what an MCP tool call adds, with this many users."),
    ] = 0,
    history: Annotated[
        int,
        typer.Option(
            min=0, help="Instead: CPU per run on threads holding TURNS turns vs empty ones."
        ),
    ] = 0,
    paused: Annotated[
        int,
        typer.Option(
            min=0,
            help="Instead: N runs paused at once on approvals (e.g. 10000): memory per "
            "paused run, CPU while they wait, resume latency.",
        ),
    ] = 0,
    paused_sample: Annotated[
        int, typer.Option(min=1, help="Paused runs of --paused resumed one at a time.")
    ] = 200,
) -> None:
    """Measure throughput, latency, CPU and memory against the floor and a naive design."""
    if mcp > 0:
        _mcp_bench(mcp, json_file)
        return
    if auth == "jwt":
        _auth_bench(json_file)
        return
    if auth != "tokens":
        raise typer.BadParameter("--auth is 'tokens' or 'jwt'")
    if protocol == "ag-ui":
        given = [int(u) for u in users.split(",") if u.strip()]
        count = 100 if users == BENCH_USERS else max(given)
        _protocol_bench(count, min(runs, 5), events, json_file)
        return
    if protocol != "tenet":
        raise typer.BadParameter("--protocol is 'tenet' or 'ag-ui'")
    if soak > 0:
        _soak(soak, soak_users, soak_seed, url, admin_token, json_file)
        return
    if hostile:
        from .bench.hostile import HostileConfig, print_hostile, run_hostile

        if hostile_inputs not in ("worst", "ordinary"):
            raise typer.BadParameter("--hostile-inputs is 'worst' or 'ordinary'")

        report = run_hostile(
            HostileConfig(
                users=hostile_users,
                seconds=hostile_seconds,
                rounds=hostile_rounds,
                inputs=hostile_inputs,
                attacks=("runs",) if hostile_inputs == "ordinary" else HostileConfig.attacks,
            ),
            progress=err.print,
        )
        print_hostile(report, console)
        if json_file:
            with open(json_file, "wb") as fh:
                fh.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        return
    if history > 0:
        _history(history, runs, json_file)
        return
    if paused > 0:
        _paused(paused, paused_sample, json_file)
        return
    from .bench import BenchConfig
    from .bench.report import main as bench_main

    config = BenchConfig(
        users=[int(u) for u in users.split(",") if u.strip()],
        runs=runs,
        latency_ms=latency_ms,
        events=events,
        targets=[t.strip() for t in targets.split(",") if t.strip()],
        latency_check_ms=latency_check_ms,
        latency_check_runs=latency_check_runs,
        idle=idle,
        churn=churn,
        churn_wave=churn_wave,
        history_turns=history_check,
        history_runs=history_check_runs,
        workers=workers,
        phase_deadline_s=deadline_s,
        max_runs=max_runs,
        compression=compression,
        url=url,
        admin_token=admin_token or (Settings().admin_token if url else None),
        server_pid=server_pid,
    )
    command = "tenet bench " + " ".join(sys.argv[2:])
    bench_main(config, console=console, json_file=json_file, plot_file=plot_file, command=command)


def _paused(n: int, sample: int, json_file: str | None) -> None:
    from .bench.paused import run_paused_bench

    err.print(f"measuring {n} runs paused at once on approvals...")
    report = run_paused_bench(
        n, sample=sample, progress=lambda what, done, total: err.print(f"{what}: {done}/{total}")
    )
    resume = report["resume_to_next_event_ms"]
    console.print(
        f"{n} paused runs: {report['rss_per_paused_run_kib']:.2f} KiB of server RSS each "
        f"(goal < 20), server CPU while waiting {report['server_cpu_waiting_ms_per_s']:.2f} ms/s "
        f"(idle server: {report['server_cpu_idle_ms_per_s']:.2f}), resume p50 {resume['p50']:.2f} ms / p99 {resume['p99']:.2f} ms from the "
        f"answer frame to the run's next event (goal p50 < 5; {resume['count']} resumed): "
        + ("ok" if report["ok"] else "BELOW GOAL")
    )
    if json_file:
        with open(json_file, "wb") as fh:
            fh.write(orjson.dumps({"paused": report}, option=orjson.OPT_INDENT_2))


def _protocol_bench(users: int, runs: int, events: int, json_file: str | None) -> None:
    from .bench.protocols import run_protocol_bench

    err.print(f"measuring AG-UI against tenet's SSE at {users} users, {runs} runs each...")
    report = run_protocol_bench(users=users, runs=runs, events=events)
    for phase in report["phases"]:
        console.print(
            f"{phase['protocol']:>6}: {phase['events_per_s']:>9} tenet events/s "
            f"({phase['messages_per_s']} messages/s), {phase['wall_s']} s, "
            f"server CPU {phase['server_cpu_s']} s, client CPU {phase['client_cpu_s']} s"
        )
    verdict = "ok" if report["ok"] else "BELOW GOAL"
    console.print(
        f"AG-UI / tenet SSE: {report['ratio']} (goal >= {report['goal']}): {verdict}; "
        f"{report['ag_ui_events_per_s']} vs {report['tenet_sse_events_per_s']} events/s"
    )
    if json_file:
        with open(json_file, "wb") as fh:
            fh.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def _mcp_bench(users: int, json_file: str | None) -> None:
    from .bench.mcp import run_mcp_bench

    err.print(f"measuring MCP tool calls, {users} users at once...")
    report = run_mcp_bench(users=users)
    console.print(
        f"MCP call over streamable HTTP, p50: {report['sdk']['p50_ms']:.2f} ms with the SDK "
        f"alone, {report['tenet']['p50_ms']:.2f} ms through tenet's per-user sessions: "
        f"{report['added_p50_ms']:+.2f} ms (goal under {report['goal_added_p50_ms']:g} ms); "
        f"{report['heap_per_session_kib']:.0f} KiB of heap per open user session"
    )
    if json_file:
        with open(json_file, "wb") as fh:
            fh.write(orjson.dumps({"mcp": report}, option=orjson.OPT_INDENT_2))


def _auth_bench(json_file: str | None) -> None:
    from rich.table import Table

    from .bench.auth import run_auth_bench

    err.print("measuring JWT verification...")
    report = run_auth_bench()
    table = Table(title="JWT verification per request (µs)")
    for column in ("algorithm", "what", "p50", "p90", "p99"):
        table.add_column(column, justify="left" if column in ("algorithm", "what") else "right")
    rows = (
        ("verify", "new token"),
        ("signature", "the signature check alone (floor)"),
        ("verify_repeat", "same token again"),
    )
    for alg in ("RS256", "ES256"):
        for what, label in rows:
            row = report["verify"][alg][what]
            table.add_row(alg, label, *(f"{row[k]:.1f}" for k in ("p50_us", "p90_us", "p99_us")))
    console.print(table)
    sign_in = report["sign_in"]
    console.print(
        "a request's whole sign-in, p50: "
        f"{sign_in['token']['p50_us']:.1f} µs with a tenet token, "
        f"{sign_in['jwt_new']['p50_us']:.1f} µs with a new JWT "
        f"({sign_in['jwt_new_over_token']:.2f}x), "
        f"{sign_in['jwt_repeat']['p50_us']:.1f} µs with the same JWT again; "
        f"JWKS fetched {report['verify']['jwks_fetches']} time(s)"
    )
    goal = report["goal_p50_us"]
    overheads = ", ".join(
        f"{alg} {report['verify'][alg]['overhead_us']:.1f} µs" for alg in ("RS256", "ES256")
    )
    mark = "[green]ok[/]" if report["ok"] else "[red]over[/]"
    console.print(
        f"{mark}: slowest p50 {report['worst_p50_us']:.1f} µs against a goal of {goal:g} µs; "
        f"above the signature check alone: {overheads}"
    )
    if json_file:
        with open(json_file, "wb") as fh:
            fh.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def _history(turns: int, runs: int, json_file: str | None) -> None:
    from pathlib import Path

    from rich.progress import Progress
    from rich.table import Table

    from .bench.history import run_history_bench

    with Progress(console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(description: str, done: int, total: int | None) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=done, total=total)

        report = run_history_bench(turns, runs, progress)
    table = Table(
        title=f"history: {runs} runs per case, TENET_CONTEXT_TOKENS={report['context_tokens']}"
    )
    table.add_column("thread holds")
    table.add_column("CPU ms/run", justify="right")
    table.add_column("extra ms/run", justify="right")
    table.add_column("history read ms", justify="right")
    table.add_column("cold read ms", justify="right")
    table.add_row("0 turns", f"{report['cpu_ms_per_run_empty_thread']:.3f}", "-", "-", "-")
    off = report["cpu_ms_per_run_history_not_read"]
    table.add_row(
        f"{turns} turns, history not read",
        f"{off:.3f}",
        f"{off - report['cpu_ms_per_run_empty_thread']:+.3f}",
        "-",
        "-",
    )
    for size, cpu in report["cpu_ms_per_run"].items():
        table.add_row(
            f"{size} turns",
            f"{cpu:.3f}",
            f"{report['extra_cpu_ms_per_run'][size]:+.3f}",
            f"{report['history_read_cpu_ms'][size]:.3f}",
            f"{report['history_read_cold_cpu_ms'][size]:.3f}",
        )
    console.print(table)
    console.print(
        f"reading the history costs {report['history_cpu_ms_per_run']:+.3f} ms per run at "
        f"{turns} turns (the {turns}-turn runs, against the same threads' runs not reading it)"
    )
    if json_file:
        Path(json_file).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def _soak(
    minutes: float,
    users: int,
    seed: int,
    url: str | None,
    admin_token: str | None,
    json_file: str | None,
) -> None:
    from rich.table import Table

    from .bench.soak import SoakConfig, report_failed, run_soak

    config = SoakConfig(
        minutes=minutes,
        users=users,
        seed=seed,
        url=url,
        admin_token=admin_token or (Settings().admin_token if url else None),
        server_log=f"{json_file}.server.log" if json_file else "tenet-soak-server.log",
    )
    err.print(f"soaking for {minutes:g} min with {users} users...")
    report = run_soak(config)
    table = Table(title=f"soak: {report['minutes']:g} min, {report['users']} users")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in report.items():
        if key in ("outcomes", "errors", "faults", "server_log_tail", "server_log"):
            continue
        table.add_row(key, str(value))
    console.print(table)
    for title in ("outcomes", "errors"):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(report[title].items())) or "none"
        console.print(f"{title}: {escape(counts)}")
    if json_file:
        with open(json_file, "wb") as fh:
            fh.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    failed = report_failed(report)
    if failed and report.get("server_log_tail"):
        err.print(escape(report["server_log_tail"]))
    if failed and report.get("server_log"):
        err.print(f"the whole server log: {escape(report['server_log'])}")
    console.print(
        "[red]FAILED[/]: events lost or duplicated" if failed else "[green]ok[/]: nothing lost"
    )
    raise typer.Exit(1 if failed else 0)


def main() -> None:
    app(prog_name="tenet")


if __name__ == "__main__":
    sys.exit(main())
