"""One model call of a run: made, counted, checked against the quota, its failure named.

Every model call of a run goes through :meth:`ModelCalls.complete`: the default
loop's, a custom flow's through ``ctx.runtime.complete``, and a flow's direct
call to its agent's model or the server's (``self.model.complete``,
``ctx.runtime.model.complete``: each is a ``tenet.models.metered.MeteredModel``,
which routes the call here). It

* adds the call's reported ``usage`` to the run's totals (in memory, for the
  terminal event) and to the run's row (in the store, for ``/v1/me/usage`` and
  the quota of every process), and to the process's Prometheus counters;
* calibrates the token estimate of :mod:`tenet.conversation` with the
  endpoint's ``prompt_tokens``;
* ends the run with ``quota_exceeded`` once the call took the user to
  ``TENET_USER_TOKENS_PER_DAY`` and the model asked for more work (the next call
  is not made; a final answer is kept);
* turns the endpoint's "context too long" into ``context_length`` naming the
  budget, and logs every model failure with the run's ids.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .conversation import Conversations
from .delta_stream import DEFAULT_BURST, DEFAULT_INTERVAL_S, stream_reply
from .errors import AgentFailed, QuotaExceeded, TenetError
from .models.metered import counting, unmetered
from .store.usage import add_run_usage
from .usage import Quota, RunUsage, UsageMeter, model_label

if TYPE_CHECKING:
    from .context import RunContext
    from .models.base import Callback, ChatMessage, ChatModel, ModelReply
    from .store.db import Store

log = logging.getLogger("tenet.model")


class ModelCalls:
    """Shared by a process's runs: settings, the quota's store and counters, no run's data."""

    def __init__(
        self,
        *,
        store: Store,
        conversations: Conversations,
        quota: Quota,
        meter: UsageMeter,
        delta_burst: int = DEFAULT_BURST,
        delta_interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.store = store
        #: How a reply's answer streams as events (see :mod:`tenet.delta_stream`).
        self.delta_burst = delta_burst
        self.delta_interval_s = delta_interval_s
        self.conversations = conversations
        self.quota = quota
        self.meter = meter

    async def complete(
        self,
        run_usage: RunUsage,
        ctx: RunContext,
        model: ChatModel,
        messages: list[ChatMessage],
        tools: list[dict[str, Any]],
        *,
        on_delta: Callback | None,
        on_reasoning: Callback | None,
    ) -> ModelReply:
        """One call of ``ctx``'s execution, its usage added to ``run_usage`` (the run's totals).

        ``on_delta`` and ``on_reasoning`` receive what the model streams (the run's
        ``ctx.say`` and ``ctx.think`` for the default loop). Raises the model's error
        (``context_length`` as ``AgentFailed`` naming the budget) or
        ``AgentFailed("quota_exceeded")`` when the user's day is used up.
        """
        model = unmetered(model)
        token = counting.set(True)
        try:
            reply = await stream_reply(
                ctx,
                model,
                messages,
                tools,
                on_delta=on_delta,
                on_reasoning=on_reasoning,
                burst=self.delta_burst,
                interval_s=self.delta_interval_s,
            )
        except Exception as exc:
            # A failed call reported no usage: it is logged, not counted.
            code = exc.code if isinstance(exc, TenetError) else "model_error"
            message = exc.message if isinstance(exc, TenetError) else f"{type(exc).__name__}: {exc}"
            log.warning(
                "model call of agent %s failed (%s): %s",
                ctx.agent_name,
                code,
                message,
                extra={"user_id": ctx.user_id, "thread_id": ctx.thread_id, "run_id": ctx.run_id},
            )
            if isinstance(exc, TenetError) and code == "context_length":
                budget = self.conversations.context_tokens
                raise AgentFailed(
                    "context_length",
                    f"the conversation is longer than the model accepts: {exc.message} "
                    f"(TENET_CONTEXT_TOKENS is {budget}; lower it to what the model takes)",
                ) from exc
            raise
        finally:
            counting.reset(token)
        usage = reply.usage
        run_usage.add(usage)
        self.meter.add(ctx.agent_name, model_label(model), usage)
        if usage is not None and usage.input_tokens > 0 and run_usage.model_calls == 1:
            # A run's first call carries its history; one sample per run keeps the
            # estimate current without walking every later call's messages.
            self.conversations.estimator.calibrate(messages, tools, usage.input_tokens)
        await add_run_usage(
            self.store,
            ctx.user_id,
            ctx.run_id,
            usage.input_tokens if usage else 0,
            usage.output_tokens if usage else 0,
            1,
        )
        if self.quota.tokens_per_day is not None and reply.tool_calls:
            # Only a reply that asks for more work can lead to another call; an answer
            # ends the run anyway and is not thrown away.
            try:
                await self.quota.check(ctx.user_id)
            except QuotaExceeded as exc:
                raise AgentFailed("quota_exceeded", exc.message) from None
        return reply
