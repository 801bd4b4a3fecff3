"""Live event routing: in-process by default, Redis pub/sub for many processes."""

from .base import Bus, Subscription, SubscriptionClosed, SubscriptionOverflow
from .memory import MemoryBus

__all__ = ["Bus", "MemoryBus", "Subscription", "SubscriptionClosed", "SubscriptionOverflow"]
