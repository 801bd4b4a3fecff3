"""Users' secrets: write-only values, encrypted at rest, given only to their owner's tools.

A secret is stored sealed with AES-256-GCM (``cryptography``'s AEAD) under a key
derived from ``TENET_SECRET_KEY`` by HKDF-SHA256; the associated data is the
(user id, name) pair, so a sealed value moved to another user or name fails to
open. Without a key nothing can be stored (:class:`~tenet.errors.SecretsDisabled`).

No method returns a value to an API caller: :meth:`SecretBox.names` lists names,
and :meth:`SecretBox.get` is for the owner's runs only (through
:class:`UserSecrets`, the cache kept in the user's in-memory session, so
decrypted values die with that session).
"""

from __future__ import annotations

import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, select

from .. import linear_re
from ..clock import utc_now
from ..errors import Invalid, SecretsDisabled
from .db import Store
from .tables import UserSecret

log = logging.getLogger("tenet.secrets")

#: A secret's name: what ``{secret:NAME}`` and ``ctx.secret(NAME)`` refer to.
SECRET_NAME = linear_re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
#: The longest value, in characters.
MAX_SECRET_CHARS = 8192
#: Secrets one user may keep.
MAX_SECRETS_PER_USER = 100
_NONCE = 12


def check_name(name: str) -> str:
    if not SECRET_NAME.match(name):
        raise Invalid(
            "a secret's name is 1 to 64 letters, digits, '_', '.', '-', starting with a letter "
            "or '_'"
        )
    return name


class SecretBox:
    """Seals, stores, opens and deletes users' secrets in one :class:`Store`."""

    def __init__(self, store: Store, key: str | None) -> None:
        self._store = store
        self._aead: AESGCM | None = None
        if key:
            derived = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=b"tenet user secrets v1"
            ).derive(key.encode())
            self._aead = AESGCM(derived)

    @property
    def enabled(self) -> bool:
        return self._aead is not None

    def _require(self) -> AESGCM:
        if self._aead is None:
            raise SecretsDisabled(
                "secrets are disabled on this server: its operator must set TENET_SECRET_KEY"
            )
        return self._aead

    @staticmethod
    def _aad(user_id: str, name: str) -> bytes:
        return f"{user_id}\x00{name}".encode()

    async def put(self, user_id: str, name: str, value: str) -> None:
        """Store (or replace) the user's secret ``name``."""
        aead = self._require()
        check_name(name)
        if not isinstance(value, str) or not value or len(value) > MAX_SECRET_CHARS:
            raise Invalid(f"a secret's value is 1 to {MAX_SECRET_CHARS} characters")
        nonce = os.urandom(_NONCE)
        sealed = nonce + aead.encrypt(nonce, value.encode(), self._aad(user_id, name))
        async with self._store.write() as s:
            row = await s.get(UserSecret, (user_id, name))
            if row is None:
                count = len(
                    (
                        await s.execute(
                            select(UserSecret.name).where(UserSecret.user_id == user_id)
                        )
                    ).all()
                )
                if count >= MAX_SECRETS_PER_USER:
                    raise Invalid(f"at most {MAX_SECRETS_PER_USER} secrets per user")
                s.add(UserSecret(user_id=user_id, name=name, sealed=sealed, updated_at=utc_now()))
            else:
                row.sealed = sealed
                row.updated_at = utc_now()

    async def names(self, user_id: str) -> list[dict[str, str]]:
        """The user's secrets as ``{"name", "updated_at"}``, by name; never a value."""
        async with self._store.read() as s:
            rows = (
                await s.execute(
                    select(UserSecret.name, UserSecret.updated_at)
                    .where(UserSecret.user_id == user_id)
                    .order_by(UserSecret.name)
                )
            ).all()
        return [{"name": n, "updated_at": at.isoformat().replace("+00:00", "Z")} for n, at in rows]

    async def delete(self, user_id: str, name: str) -> bool:
        """Delete the user's secret; False if there was none."""
        check_name(name)
        async with self._store.write() as s:
            result = await s.execute(
                delete(UserSecret).where(UserSecret.user_id == user_id, UserSecret.name == name)
            )
        return bool(getattr(result, "rowcount", 0))

    async def get(self, user_id: str, name: str) -> str | None:
        """The user's secret in clear, for the user's own runs; None if not set.

        A value that does not open (the key changed) counts as not set, and is logged
        by name only.
        """
        if self._aead is None or not SECRET_NAME.match(name):
            return None
        async with self._store.read() as s:
            row = await s.get(UserSecret, (user_id, name))
        if row is None:
            return None
        sealed = bytes(row.sealed)
        try:
            return self._aead.decrypt(
                sealed[:_NONCE], sealed[_NONCE:], self._aad(user_id, name)
            ).decode()
        except InvalidTag:
            log.warning("secret %r of user %s does not open with this key", name, user_id)
            return None


class UserSecrets:
    """One user's secrets, opened on first use and kept while the user's session lives."""

    def __init__(self, box: SecretBox, user_id: str) -> None:
        self._box = box
        self._user_id = user_id
        self._values: dict[str, str] = {}
        #: Counts :meth:`forget` calls: a value read while one happened is not kept.
        self._forgotten = 0

    async def get(self, name: str) -> str | None:
        """The value, opened once per session; a missing one is looked up again next time
        (it may be set meanwhile, on this process or another)."""
        value = self._values.get(name)
        if value is None:
            before = self._forgotten
            value = await self._box.get(self._user_id, name)
            if value is not None and before == self._forgotten:
                self._values[name] = value
        return value

    def forget(self, name: str | None = None) -> None:
        """Drop the cached value (all with None): it changed."""
        self._forgotten += 1
        if name is None:
            self._values.clear()
        else:
            self._values.pop(name, None)

    async def aclose(self) -> None:
        self._values.clear()
