"""The tenet server: HTTP, WebSocket and SSE to PROTOCOL.md, over one Service."""

from .app import create_app

__all__ = ["create_app"]
