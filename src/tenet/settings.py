"""Every ``TENET_*`` setting, in one place.

Settings are read once at start-up and are immutable afterwards: they are shared
by every user, so nothing may change them while users are being served.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from . import linear_re

#: The stores tenet speaks to (an async driver each).
DATABASE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
#: Settings whose value is a credential: an error names them but never shows the value.
SECRETS = frozenset({"admin_token", "model_api_key", "auth_jwt_secret"})


class SettingsError(ValueError):
    """Some ``TENET_*`` values are invalid: one line per value, naming the variable, the
    value and what is allowed (``lines``). The ``tenet`` command prints them and exits 2."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


#: The signature algorithms a JWT may use (``none`` never).
_JWT_ALGORITHMS = frozenset(
    f"{family}{bits}" for family in ("HS", "RS", "PS", "ES") for bits in (256, 384, 512)
) | {"EdDSA"}


class Settings(BaseSettings):
    """tenet's configuration; each field is the environment variable ``TENET_<NAME>``.

    Invalid values raise :class:`SettingsError` (never pydantic's multi-line report):
    whoever builds settings, from the environment or from keywords, gets the same
    one line per value.
    """

    model_config = SettingsConfigDict(
        env_prefix="TENET_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError([_explain(error) for error in exc.errors()]) from None

    # Storage and cluster
    database_url: str = "sqlite+aiosqlite:///./tenet.db"
    redis_url: str | None = None
    #: Prefix of every Redis key and channel; unset: derived from the database URL.
    redis_prefix: str | None = None
    auto_migrate: bool = True

    # Server
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    admin_token: str | None = None
    public_url: str | None = None
    #: On SIGTERM/SIGINT, how long running runs may go on before they are stopped.
    shutdown_grace_s: float = Field(10.0, ge=0)
    #: Comma-separated origins allowed to call the API from a browser (CORS); unset: none.
    cors_origins: str | None = None

    # Engine limits
    user_max_runs: int = Field(4, ge=1)
    #: Runs one user may have running at once while the event loop is busy (its lag
    #: reached TENET_LOOP_BUSY_MS within the last second): the loop's time is shared by
    #: users, not by runs (see local_queue.py).
    user_max_runs_busy: int = Field(1, ge=1)
    max_runs: int = Field(256, ge=1)
    user_max_queued: int = Field(100, ge=1)
    run_timeout_s: float = Field(300.0, gt=0)
    #: How long a request to a person (an approval, a question) waits before it is
    #: resolved by ``timeout`` (an approval denied, a question answered None).
    approval_timeout_s: float = Field(86_400.0, gt=0)
    tool_timeout_s: float = Field(30.0, gt=0)
    #: Threads synchronous tools run on (all users), and how many one user may hold.
    tool_threads: int = Field(64, ge=1)
    tool_threads_per_user: int = Field(8, ge=1)
    session_idle_s: float = Field(300.0, ge=0)
    max_input_chars: int = Field(32_000, ge=1)
    agent_max_steps: int = Field(16, ge=1)

    # MCP servers and per-user secrets (see docs/mcp.md)
    mcp_max_processes: int = Field(64, ge=0)
    mcp_connect_timeout_s: float = Field(10.0, gt=0)
    mcp_relist_s: float = Field(30.0, gt=0)
    secret_key: str | None = Field(None, repr=False)

    # Cluster mode
    heartbeat_s: float = Field(2.0, gt=0)
    dead_after_beats: float = Field(5.0, ge=2)
    run_max_attempts: int = Field(1, ge=1)
    cluster_poll_s: float = Field(1.0, gt=0)

    # Event writing
    event_batch_max: int = Field(512, ge=1)
    event_backlog_max: int = Field(128, ge=1)

    # Delivery
    ws_queue: int = Field(1000, ge=1)
    ws_max_connections: int = Field(16, ge=1)
    sse_max_streams: int = Field(16, ge=1)
    #: The largest client frame (bytes): a larger one is answered ``too_large`` and the
    #: socket stays open (PROTOCOL.md); over :attr:`ws_transport_max_bytes` it closes 1009.
    ws_max_frame_bytes: int = Field(64 * 1024, ge=256)
    #: Sockets one client address may hold before they authenticate.
    ws_max_unauthenticated: int = Field(16, ge=1)
    #: Threads one socket may follow at once.
    ws_max_subscriptions: int = Field(100, ge=1)
    ws_auth_timeout_s: float = Field(10.0, gt=0)
    ws_ping_s: float = Field(20.0, gt=0)
    #: How long an idle HTTP/1.1 connection is kept open for its next request (seconds).
    #: Longer than clients and proxies keep theirs (httpx 5 s, load balancers 60 s): a
    #: server that closes first races the client's next request on that connection, which
    #: then fails with a reset instead of an answer.
    http_keep_alive_s: float = Field(75.0, gt=0)
    #: permessage-deflate costs ~100 KiB of zlib state per socket and a third of the send
    #: path's CPU, for small JSON frames that compress little: off unless asked for.
    ws_compression: bool = False
    max_body_bytes: int = Field(256 * 1024, ge=256)
    max_threads_per_user: int = Field(10_000, ge=1)
    max_tokens_per_user: int = Field(100, ge=1)
    #: Requests (HTTP calls and WebSocket frames) per second per user, and the burst
    #: allowed above it (a token bucket per user); 0 turns the limit off.
    user_rate: float = Field(50.0, ge=0)
    user_burst: int = Field(200, ge=1)

    # Models
    model: Literal["scripted", "openai"] = "scripted"
    model_base_url: str | None = None
    model_api_key: str | None = None
    model_name: str = "gpt-4o-mini"
    model_timeout_s: float = Field(120.0, gt=0)
    model_max_retries: int = Field(2, ge=0)
    #: Tokens a model call may be sent (system prompt, tools, history, input); see conversation.py.
    context_tokens: int = Field(16_000, ge=256)
    #: A tool result longer than this is cut, with a marker, before a model sees it.
    tool_result_max_chars: int = Field(20_000, ge=100)
    #: Memory a process keeps of threads' conversations built already (half for finished
    #: turns, half for threads' orders; see conversation.py). 0: none, every read builds.
    history_cache_bytes: int = Field(16 * 1024 * 1024, ge=0)
    #: Input plus output tokens per user per UTC day; unset: no quota.
    user_tokens_per_day: int | None = Field(None, ge=1)
    #: Pieces of a model reply streamed as they come; after them, at most one
    #: message_delta per TENET_DELTA_INTERVAL_MS (see delta_stream.py).
    delta_burst: int = Field(32, ge=1)
    delta_interval_ms: float = Field(20.0, ge=0)
    scripted_latency_ms: float = Field(0.0, ge=0)
    scripted_token_latency_ms: float = Field(0.0, ge=0)

    # The benchmark agent
    bench_latency_ms: float = Field(0.0, ge=0)
    bench_events: int = Field(25, ge=5)

    # Identity: tenet's own tokens, the product's JWTs, or both (see docs/auth.md)
    auth: Literal["tokens", "jwt", "both"] = "tokens"
    auth_jwks_url: str | None = None
    auth_oidc_issuer: str | None = None
    auth_jwt_secret: str | None = None
    auth_jwks_refresh_s: float = Field(300.0, gt=0)
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_algorithms: str = "RS256,ES256"
    auth_user_claim: str = "sub"
    auth_name_claim: str = "name"
    auth_leeway_s: float = Field(30.0, ge=0)

    log_level: str = "INFO"
    #: A warning names the run whose step held the event loop longer than this (ms).
    loop_stall_warn_ms: float = Field(100.0, gt=0)
    #: The event loop is busy while its lag reached this within the last second.
    loop_busy_ms: float = Field(20.0, gt=0)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError("must be one of " + ", ".join(LOG_LEVELS) + " (any case)")
        return value.upper()

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        try:
            driver = make_url(value).drivername
        except ArgumentError:
            driver = None
        if driver not in DATABASE_DRIVERS:
            raise ValueError(
                "must be a URL starting with sqlite+aiosqlite:/// or postgresql+asyncpg://"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a URL starting with redis://, rediss:// or unix://")
        return value

    @field_validator("model_base_url")
    @classmethod
    def _http_endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (such as .../v1)")
        return value

    @model_validator(mode="after")
    def _cluster_needs_postgres(self) -> Settings:
        if self.redis_url is not None and self.is_sqlite:
            raise ValueError(
                f"TENET_REDIS_URL is set (cluster mode) but TENET_DATABASE_URL="
                f"{_redact_url(self.database_url)!r} is SQLite: cluster mode needs Postgres"
            )
        return self

    @model_validator(mode="after")
    def _check_auth(self) -> Settings:
        """JWT settings that cannot work together fail at start, naming the variable."""
        if self.auth == "tokens":
            return self
        sources = [
            name
            for name, value in (
                ("TENET_AUTH_JWKS_URL", self.auth_jwks_url),
                ("TENET_AUTH_OIDC_ISSUER", self.auth_oidc_issuer),
                ("TENET_AUTH_JWT_SECRET", self.auth_jwt_secret),
            )
            if value
        ]
        if len(sources) != 1:
            raise ValueError(
                f"TENET_AUTH={self.auth} needs exactly one of TENET_AUTH_JWKS_URL, "
                "TENET_AUTH_OIDC_ISSUER or TENET_AUTH_JWT_SECRET "
                f"(set: {', '.join(sources) or 'none'})"
            )
        if not self.auth_user_claim.strip():
            raise ValueError("TENET_AUTH_USER_CLAIM must name a claim (default: sub)")
        algorithms = self.auth_algorithm_list
        unknown = [a for a in algorithms if a not in _JWT_ALGORITHMS]
        if unknown or not algorithms:
            raise ValueError(f"TENET_AUTH_ALGORITHMS: unknown or missing algorithm {unknown}")
        if self.auth_jwt_secret:
            if len(self.auth_jwt_secret) < 32:
                raise ValueError("TENET_AUTH_JWT_SECRET must be at least 32 characters")
            if any(not a.startswith("HS") for a in algorithms):
                raise ValueError("TENET_AUTH_ALGORITHMS may only name HS256/384/512 with a secret")
            return self
        for name in ("auth_jwks_url", "auth_oidc_issuer"):
            url = getattr(self, name)
            if url and not url.startswith(("https://", "http://")):
                raise ValueError(f"TENET_{name.upper()} must be an http(s) URL")
        if any(a.startswith("HS") for a in algorithms):
            raise ValueError("TENET_AUTH_ALGORITHMS may not name HS* algorithms with public keys")
        if not self.jwt_issuer:
            raise ValueError("TENET_AUTH_ISSUER is required with TENET_AUTH_JWKS_URL")
        if not self.auth_audience:
            raise ValueError(f"TENET_AUTH_AUDIENCE is required with {sources[0]}")
        return self

    @property
    def auth_algorithm_list(self) -> list[str]:
        """The JWT algorithms accepted; with a secret and none named, HS256."""
        if self.auth_jwt_secret and "auth_algorithms" not in self.model_fields_set:
            return ["HS256"]
        return [a.strip() for a in self.auth_algorithms.split(",") if a.strip()]

    @property
    def jwt_issuer(self) -> str | None:
        """The issuer a JWT must name: TENET_AUTH_ISSUER, else the OIDC issuer."""
        return self.auth_issuer or self.auth_oidc_issuer

    @property
    def ws_transport_max_bytes(self) -> int:
        """The transport's limit on one frame (16 x ``TENET_WS_MAX_FRAME_BYTES``, 1 MiB by
        default): refused from the frame's header, before it is read, with close 1009.

        Between the two limits a frame is read and answered ``too_large``, as the
        protocol says; above, reading it would let a client make the server hold
        any amount of memory (before authentication too), so the transport refuses it.
        """
        return 16 * self.ws_max_frame_bytes

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in (self.cors_origins or "").split(",") if o.strip()]

    @property
    def cluster(self) -> bool:
        """Many processes share the store and Redis; requires Postgres."""
        return self.redis_url is not None


def _explain(error: Any) -> str:
    """One pydantic error as one line: variable, value, what is allowed."""
    loc = [str(part) for part in error.get("loc", ())]
    message = str(error.get("msg", "is invalid"))
    message = message.removeprefix("Value error, ")
    if not loc:  # a rule across settings: its message names the variables
        return f"invalid settings: {message}"
    name = loc[0]
    kind = error.get("type", "")
    allowed = {
        "bool_parsing": "must be true or false",
        "int_parsing": "must be a whole number",
        "float_parsing": "must be a number",
    }.get(kind)
    if allowed is None:
        allowed = "must be " + message.removeprefix("Input should be ")
        if not message.startswith("Input should be "):
            allowed = message
    value = error.get("input")
    shown = (
        "(hidden)"
        if name in SECRETS
        else repr(_redact_url(value) if isinstance(value, str) else value)
    )
    return f"invalid setting TENET_{name.upper()}={shown}: {allowed}"


#: The password of a URL (``scheme://user:password@host``).
_PASSWORD = linear_re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def _redact_url(value: str) -> str:
    """A URL's password is never shown: ``scheme://user:***@host``."""
    return _PASSWORD.sub(r"\1***@", value)


#: ``TENET_*`` names that are not settings but are read by tenet's own test suite.
_NOT_SETTINGS_PREFIXES = ("TENET_TEST_",)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per ``TENET_*`` variable in ``environ`` that is no setting (a typo, or a
    setting of another version), with the closest setting's name when one is close.

    Such a variable is ignored, so a misspelled limit (``TENET_USER_MAX_RUN``) would
    otherwise silently not apply; the command line prints these lines as warnings
    before any command (a warning, not an error: the name may belong to a tool beside
    tenet in the same environment).
    """
    known = {f"TENET_{name.upper()}" for name in Settings.model_fields}
    lines = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("TENET_") or upper in known:
            continue
        if upper.startswith(_NOT_SETTINGS_PREFIXES):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]}?" if close else ""
        lines.append(f"warning: {name} is not a tenet setting and is ignored{hint}")
    return lines
