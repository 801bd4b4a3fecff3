// Drives a tenet server with the official AG-UI client: HttpAgent.runAgent, whose own
// pipeline verifies every event stream (verifyEvents) and rejects one that breaks the
// protocol: a two-turn conversation with a tool call, a delegation, a front-end tool
// round trip (the call, then its result in the next run), a client that lost its
// messages (MESSAGES_SNAPSHOT), state and context, and a cancel. Reads TENET_URL and
// TENET_TOKEN; prints one JSON report on stdout.
import { HttpAgent } from "@ag-ui/client";

const url = process.env.TENET_URL;
const headers = { Authorization: `Bearer ${process.env.TENET_TOKEN}` };

function agentFor(name, threadId) {
  return new HttpAgent({ url: `${url}/v1/agents/${name}/ag-ui`, headers, threadId });
}

async function turn(agent, text, parameters = {}) {
  agent.addMessage({ id: `m-${agent.messages.length}-${Date.now()}`, role: "user", content: text });
  return run(agent, parameters);
}

async function run(agent, parameters = {}) {
  const types = [];
  const steps = [];
  const pending = [];
  const outcomes = [];
  const { result, newMessages } = await agent.runAgent(
    parameters,
    {
      onRunFinishedEvent({ pendingToolCallIds, outcome }) {
        pending.push(...(pendingToolCallIds ?? []));
        outcomes.push(outcome);
      },
      onEvent({ event }) {
        types.push(event.type);
        if (event.type === "STEP_STARTED" || event.type === "STEP_FINISHED") {
          steps.push(`${event.type}:${event.stepName}`);
        }
      },
    },
  );
  return { result, types, steps, pending, outcomes, newMessages };
}

async function failing(agent, text) {
  try {
    await turn(agent, text);
    return { error: null };
  } catch (err) {
    return { error: String(err && err.message ? err.message : err) };
  }
}

const chat = agentFor("assistant", "node-chat");
const first = await turn(chat, "what is 6*7");
const second = await turn(chat, "hello again");
const research = await turn(agentFor("researcher", "node-research"), "tell me about redis");
const booking = {
  name: "confirm_booking",
  description: "Ask the person to confirm a booking.",
  parameters: { type: "object", properties: { day: { type: "string" } } },
};
const frontEnd = await turn(chat, "use confirm_booking day=monday", { tools: [booking] });
// The front end runs the tool and hands its result back: the next run continues from it.
chat.addMessage({
  id: `result-${Date.now()}`,
  role: "tool",
  toolCallId: frontEnd.pending[0],
  content: JSON.stringify({ confirmed: true }),
});
const frontEndResult = await run(chat, { tools: [booking] });
// A second front end on the same thread that has none of its messages gets them.
const fresh = agentFor("assistant", "node-chat");
const freshTurn = await turn(fresh, "and now?");
// State and context: the state is echoed as STATE_SNAPSHOT, the context reaches the model.
const stateful = new HttpAgent({
  url: `${url}/v1/agents/assistant/ag-ui`,
  headers,
  threadId: "node-state",
  initialState: { cart: ["tea"], step: 2 },
});
const stateTurn = await turn(stateful, "hello state", {
  context: [{ description: "city", value: "Paris" }],
});
// A cancel: tenet's own API, with the run id RUN_STARTED carries in its metadata.
const slow = agentFor("benchmark", "node-cancel");
slow.addMessage({ id: "c1", role: "user", content: "latency_ms=20000 events=10" });
const cancelTypes = [];
let cancelError = null;
try {
  await slow.runAgent(
    {},
    {
      async onRunStartedEvent({ event }) {
        const runId = event.metadata.tenet.run_id;
        const r = await fetch(`${url}/v1/runs/${runId}/cancel`, { method: "POST", headers });
        cancelTypes.push(`cancel:${r.status}`);
      },
      onEvent({ event }) {
        cancelTypes.push(event.type);
        if (event.type === "RUN_ERROR") cancelTypes.push(`code:${event.code}`);
      },
    },
  );
} catch (err) {
  cancelError = String(err && err.message ? err.message : err);
}
// An approval: the run pauses and RUN_FINISHED carries the interrupt; the client refuses a
// run that leaves it unanswered, and the next run's resume approves it.
const notes = agentFor("assistant", "node-approval");
await turn(notes, "remember that the door code is 4711");
const asked = await turn(notes, "please forget my notes");
const interrupts = notes.pendingInterrupts.map((i) => ({
  id: i.id,
  reason: i.reason,
  toolCallId: i.toolCallId,
}));
let unanswered = null;
try {
  await run(notes);
} catch (err) {
  unanswered = String(err && err.message ? err.message : err);
}
const approved = await run(notes, {
  resume: notes.pendingInterrupts.map((i) => ({
    interruptId: i.id,
    status: "resolved",
    payload: true,
  })),
});
const unknown = await failing(agentFor("nobody", "node-x"), "hi");

console.log(
  JSON.stringify({
    first: {
      result: first.result,
      types: first.types,
      toolCalls: first.newMessages.flatMap((m) => (m.toolCalls ?? []).map((c) => c.function.name)),
      roles: first.newMessages.map((m) => m.role),
    },
    second: { result: second.result, types: second.types },
    research: { result: research.result, steps: research.steps, types: research.types },
    frontEnd: {
      types: frontEnd.types,
      pending: frontEnd.pending,
      calls: frontEnd.newMessages.flatMap((m) =>
        (m.toolCalls ?? []).map((c) => ({ id: c.id, name: c.function.name, args: c.function.arguments })),
      ),
    },
    frontEndResult: {
      result: frontEndResult.result,
      types: frontEndResult.types,
      roles: chat.messages.map((m) => m.role),
    },
    fresh: {
      result: freshTurn.result,
      types: freshTurn.types,
      roles: fresh.messages.map((m) => m.role),
      calls: fresh.messages.flatMap((m) => (m.toolCalls ?? []).map((c) => c.function.name)),
    },
    state: { types: stateTurn.types, state: stateful.state, result: stateTurn.result },
    cancel: { types: cancelTypes, error: cancelError },
    approval: {
      askedTypes: asked.types,
      outcomes: asked.outcomes,
      interrupts,
      unanswered,
      approvedTypes: approved.types,
      approvedOutcomes: approved.outcomes,
      approvedResult: approved.result,
      calls: approved.newMessages.flatMap((m) => (m.toolCalls ?? []).map((c) => c.function.name)),
      pendingAfter: notes.pendingInterrupts.length,
    },
    unknown,
    messages: chat.messages.length,
  }),
);
