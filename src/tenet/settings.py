"""Every ``TENET_*`` setting, in one place.

Settings are read once at start-up and are immutable afterwards: they are shared
by every user, so nothing may change them while users are being served.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """tenet's configuration; each field is the environment variable ``TENET_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="TENET_", frozen=True, extra="ignore")

    # Storage and cluster
    database_url: str = "sqlite+aiosqlite:///./tenet.db"
    redis_url: str | None = None
    auto_migrate: bool = True

    # Server
    host: str = "127.0.0.1"
    port: int = 8000
    admin_token: str | None = None
    public_url: str | None = None
    #: On SIGTERM/SIGINT, how long running runs may go on before they are stopped.
    shutdown_grace_s: float = Field(10.0, ge=0)
    #: Comma-separated origins allowed to call the API from a browser (CORS); unset: none.
    cors_origins: str | None = None

    # Engine limits
    user_max_runs: int = Field(4, ge=1)
    max_runs: int = Field(256, ge=1)
    user_max_queued: int = Field(100, ge=1)
    run_timeout_s: float = Field(300.0, gt=0)
    tool_timeout_s: float = Field(30.0, gt=0)
    session_idle_s: float = Field(300.0, ge=0)
    max_input_chars: int = Field(32_000, ge=1)
    agent_max_steps: int = Field(16, ge=1)

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
    ws_max_frame_bytes: int = Field(64 * 1024, ge=256)
    ws_auth_timeout_s: float = Field(10.0, gt=0)
    ws_ping_s: float = Field(20.0, gt=0)
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
    #: Input plus output tokens per user per UTC day; unset: no quota.
    user_tokens_per_day: int | None = Field(None, ge=1)
    scripted_latency_ms: float = Field(0.0, ge=0)
    scripted_token_latency_ms: float = Field(0.0, ge=0)

    # The benchmark agent
    bench_latency_ms: float = Field(0.0, ge=0)
    bench_events: int = Field(25, ge=5)

    log_level: str = "INFO"

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
