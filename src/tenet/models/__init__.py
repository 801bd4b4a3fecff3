"""Language models: the offline scripted default and any OpenAI-compatible endpoint."""

from .base import ChatMessage, ChatModel, ModelReply, ToolCall, Usage
from .scripted import ScriptedModel

__all__ = ["ChatMessage", "ChatModel", "ModelReply", "ScriptedModel", "ToolCall", "Usage"]
