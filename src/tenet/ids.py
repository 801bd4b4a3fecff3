"""Server-made identifiers.

Every ID is a short type prefix and 128 random bits (``run_`` + 22 url-safe
characters). Random rather than sequential so that an ID reveals nothing and can
not be guessed; prefixed so that logs and bug reports are readable and so that a
thread ID passed where a run ID belongs is rejected by validation, not looked up.
"""

from __future__ import annotations

import base64
import os
import re
import threading

PREFIXES = ("usr", "tok", "thr", "msg", "run", "exe", "evt", "not", "con")
_PATTERN = re.compile(r"^(usr|tok|thr|msg|run|exe|evt|not|con)_[A-Za-z0-9_-]{22}$")


class _Entropy:
    """``os.urandom`` read in blocks: one system call per 256 IDs, not one per ID.

    Every event gets an ID, so at tens of thousands of events per second the
    system call showed in a tenth of the server's busy samples. The bytes are the
    kernel's CSPRNG output either way. Holds no user data: process infrastructure, like the
    ``secrets`` module's own generator. A forked child starts with a fresh block,
    so parent and child never hand out the same bytes.

    IDs are made a block at a time too (:meth:`id_body`): each 16 random bytes are
    followed by 2 zero bytes, so that every 18 bytes are 24 base64 characters of
    their own, and one ``urlsafe_b64encode`` call serves 256 IDs. The first 22 of
    each 24 are exactly what encoding the 16 bytes alone gives (the 2 zero bytes
    only fill the last character's low bits, which are zero then as well).
    """

    BLOCK = 16 * 256
    _ID_BYTES = 16
    _ID_SPAN = 24  # base64 characters of 16 random bytes and 2 zero bytes

    def __init__(self) -> None:
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._block = b""
        self._pos = 0
        self._ids = ""
        self._id_pos = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._pos + n > len(self._block):
                self._block = os.urandom(max(self.BLOCK, n))
                self._pos = 0
            chunk = self._block[self._pos : self._pos + n]
            self._pos += n
            return chunk

    def id_body(self) -> str:
        """22 url-safe base64 characters of 128 fresh random bits."""
        with self._lock:
            pos = self._id_pos
            if pos >= len(self._ids):
                raw = os.urandom(self.BLOCK)
                pad = b"\0\0"
                spans = b"".join(
                    raw[i : i + self._ID_BYTES] + pad for i in range(0, self.BLOCK, self._ID_BYTES)
                )
                self._ids = base64.urlsafe_b64encode(spans).decode()
                pos = 0
            self._id_pos = pos + self._ID_SPAN
            return self._ids[pos : pos + 22]


_entropy = _Entropy()


def new_id(prefix: str) -> str:
    """A fresh unguessable ID of the given kind (128 random bits)."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_{_entropy.id_body()}"


def token_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as hex, like ``secrets.token_hex`` without its system call."""
    return _entropy.take(nbytes).hex()


def is_valid(value: object, prefix: str | None = None) -> bool:
    """True when ``value`` is shaped like an ID this server made (of ``prefix``, if given)."""
    if not isinstance(value, str) or len(value) != 26:
        return False
    m = _PATTERN.match(value)
    return m is not None and (prefix is None or m.group(1) == prefix)
