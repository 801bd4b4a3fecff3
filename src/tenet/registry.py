"""The catalogue of agent definitions, frozen before the first user is served.

Agent definitions are shared by every user, so they must not change while users
run them: the registry accepts registrations only until :meth:`freeze`, after
which it is an immutable mapping and lookups need no lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import MappingProxyType
from typing import Any

from .agents import Agent
from .errors import RegistryFrozen


class AgentRegistry:
    """Name -> :class:`Agent`; mutable until frozen, then read-only."""

    def __init__(self, agents: Iterable[Agent] = ()) -> None:
        self._agents: dict[str, Agent] | MappingProxyType[str, Agent] = {}
        self._frozen = False
        for agent in agents:
            self.register(agent)

    def register(self, agent: Agent) -> Agent:
        if self._frozen:
            raise RegistryFrozen(f"cannot register {agent.name!r}: the registry is frozen")
        if not isinstance(agent, Agent):
            raise TypeError("register() takes an Agent")
        if agent.name in self._agents:
            raise ValueError(f"an agent named {agent.name!r} is already registered")
        self._agents[agent.name] = agent  # type: ignore[index]
        return agent

    def freeze(self) -> AgentRegistry:
        """Make the catalogue immutable (idempotent); returns self."""
        if not self._frozen:
            self._agents = MappingProxyType(dict(self._agents))
            self._frozen = True
        return self

    @property
    def frozen(self) -> bool:
        return self._frozen

    def get(self, name: str) -> Agent | None:
        return self._agents.get(name) if isinstance(name, str) else None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._agents

    def __iter__(self) -> Iterator[Agent]:
        return iter(self._agents.values())

    def __len__(self) -> int:
        return len(self._agents)

    def specs(self) -> list[dict[str, Any]]:
        return [a.spec() for a in sorted(self._agents.values(), key=lambda a: a.name)]
