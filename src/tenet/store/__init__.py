"""Storage: owner-scoped repositories, the batched event writer, migrations."""

from .db import Store, hash_token
from .notes import UserNotes
from .writer import EventWriter

__all__ = ["EventWriter", "Store", "UserNotes", "hash_token"]
