"""tenet: run many people's AI agents at once, each isolated, streamed live and stored."""

from .agents import Agent
from .context import RunContext
from .errors import AgentFailed, TenetError, ToolFailed
from .mcp_tools import MCPServer, mcp_server
from .models import ChatModel, ModelReply, ScriptedModel, ToolCall
from .registry import AgentRegistry
from .service import Service
from .settings import Settings
from .tools import Tool, tool

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentFailed",
    "AgentRegistry",
    "ChatModel",
    "MCPServer",
    "ModelReply",
    "RunContext",
    "ScriptedModel",
    "Service",
    "Settings",
    "TenetError",
    "Tool",
    "ToolCall",
    "ToolFailed",
    "mcp_server",
    "tool",
]
