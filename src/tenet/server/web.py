"""The web console: a static page at ``/`` and its files under ``/static/``.

No build step: the HTML, CSS and JavaScript modules in ``static/`` are served
as they are. Only the files named in :data:`FILES` are served (no path from the
URL ever reaches the file system), each with headers that keep the page to its
own origin: a Content-Security-Policy of ``'self'`` only (no inline script or
style, so injected markup could not run even if it got into the page), no
sniffing, no referrer, no framing.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from ..errors import NotFound
from .query import OnceQueryRoute

STATIC_DIR = Path(__file__).parent / "static"

#: The served files and their media types; anything else under /static/ is a 404.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "connection.js": "text/javascript; charset=utf-8",
    "timeline.js": "text/javascript; charset=utf-8",
    "requests.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "secrets.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Small files, changed by upgrades: always revalidate (the ETag makes that cheap).
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False, route_class=OnceQueryRoute)


def _file(name: str) -> Response:
    media_type = FILES.get(name)
    if media_type is None:
        raise NotFound()
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=SECURITY_HEADERS)


@router.get("/")
async def index() -> Response:
    return _file("index.html")


@router.get("/favicon.ico")
async def favicon() -> Response:
    return _file("favicon.svg")


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    return _file(name)
