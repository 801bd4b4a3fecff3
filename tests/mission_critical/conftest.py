"""Fixtures of the mission-critical suite: a real server, real sockets, many users.

The suite's core runs in both ways of signing in (``TENET_AUTH=tokens`` and
``TENET_AUTH=jwt``): a test marked with :data:`mc_support.BOTH_AUTH` takes the
``auth`` argument, and its deployment's users are then tenet users with tenet
tokens, or subjects of a stand-in identity provider (a real JWKS over HTTP) made
on first use, with JWTs.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from mc_support import Deployment

from tenet import Settings
from tenet.registry import AgentRegistry
from tenet.testing import running_server
from tenet.testing_idp import LocalIdentityProvider, SigningKey


@pytest.fixture
def auth() -> str:
    """How users sign in (``TENET_AUTH``); tests marked ``BOTH_AUTH`` run with each."""
    return "tokens"


@pytest.fixture
def deploy(database_url: str, auth: str) -> Callable[..., Any]:
    """``async with deploy(registry=..., **settings) as d:`` a real server on a fresh database."""

    @contextlib.asynccontextmanager
    async def start(
        registry: AgentRegistry | None = None, **overrides: Any
    ) -> AsyncIterator[Deployment]:
        overrides.setdefault("admin_token", secrets.token_urlsafe(16))
        with contextlib.ExitStack() as stack:
            idp = None
            if auth == "jwt":
                idp = stack.enter_context(LocalIdentityProvider([SigningKey.ec()]))
                overrides = {**idp.settings(), **overrides}
            settings = Settings(database_url=database_url, **overrides)
            async with running_server(settings, registry) as server:
                yield Deployment(server, idp)

    return start
