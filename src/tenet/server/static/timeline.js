// The live timeline of one thread, built from its events in seq order.
//
// A ThreadView accepts each event once: an event with a seq it has already rendered is a
// duplicate (dropped), one that skips a seq reveals a gap (dropped too, and the caller
// resubscribes with after = lastSeq, which replays it). So the DOM always holds seqs
// 1..lastSeq exactly once; each rendered event carries its seq in a data-seq attribute.

import { brief, formatClock, formatDuration, h, pretty } from "./dom.js";
import { ApprovalRequest, InputRequest } from "./requests.js";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

export class ThreadView {
  /**
   * @param {string} threadId
   * @param {{onCancel(runId: string): void, send(frame: object, request: object): boolean}} hooks
   *   `send` hands an answer frame ("approve", "respond") to the socket (see requests.js)
   */
  constructor(threadId, hooks) {
    this.threadId = threadId;
    this.hooks = hooks;
    this.lastSeq = 0;
    this.targetSeq = undefined; // the thread's last seq when the server answered "subscribed"
    this.subscribed = false; // whether this page wants the thread's events (resubscribed on reconnect)
    this.resyncing = false; // a subscribe is in flight: its replay will close any gap
    this.runs = new Map(); // run id (or pending ref) -> RunBlock
    this.tools = new Map(); // call id -> {li, details, state}
    this.executions = new Map(); // execution id -> {agent, depth, streamed, answer}
    this.requests = new Map(); // "approval:<run>:<call>" / "input:<run>:<request>" -> request
    this.notice = h("p", { class: "notice", hidden: true });
    this.list = h("div", { class: "runs" });
    this.root = h(
      "div",
      { class: "thread-view", dataset: { threadId, lastSeq: 0 } },
      this.notice,
      this.list,
    );
  }

  /** Show a line above the runs ("Loading…", "No runs yet", an error); "" hides it. */
  setNotice(text, kind = "info") {
    this.notice.textContent = text;
    this.notice.hidden = !text;
    this.notice.dataset.kind = kind;
  }

  /** Returns "ok", "duplicate" or "gap" (see the module comment). */
  accept(event) {
    const seq = event.seq;
    if (typeof seq !== "number" || event.thread_id !== this.threadId) return "duplicate";
    if (seq <= this.lastSeq) return "duplicate";
    if (seq !== this.lastSeq + 1) return "gap";
    this.lastSeq = seq;
    this.root.dataset.lastSeq = String(seq);
    this.render(event);
    return "ok";
  }

  get runningRuns() {
    return [...this.runs.values()].filter((r) => r.runId && !TERMINAL.has(r.status));
  }

  // Runs sent from this page ------------------------------------------------------------------

  /** A run sent but not yet accepted, keyed by the frame's ref. */
  addPending(ref, agent, input) {
    const block = new RunBlock(this, null, agent);
    block.setInput(input);
    block.setStatus("sending");
    this.runs.set(ref, block);
    this.list.append(block.root);
    return block;
  }

  confirmPending(ref, runId) {
    const block = this.runs.get(ref);
    if (!block) return;
    this.runs.delete(ref);
    const existing = this.runs.get(runId);
    if (existing) {
      block.root.remove(); // its events arrived first (after a reconnect)
      return;
    }
    block.setRunId(runId);
    block.setStatus(block.status === "sending" ? "queued" : block.status);
    this.runs.set(runId, block);
  }

  failPending(ref, message) {
    const block = this.runs.get(ref);
    if (!block) return;
    this.runs.delete(ref);
    block.setStatus("failed");
    block.events.append(h("li", { class: "ev error", role: "alert" }, `Not sent: ${message}`));
  }

  /**
   * The socket dropped before the run was accepted or refused. If it was accepted, its events
   * come with the resubscription, and the first of them adopts this block (see runBlock).
   */
  markUnconfirmed(ref) {
    const block = this.runs.get(ref);
    if (!block || block.runId) return;
    block.setStatus("unconfirmed");
    block.note = h(
      "li",
      { class: "ev note" },
      "The connection dropped before the server confirmed this run; if it was accepted, it continues here.",
    );
    block.events.append(block.note);
  }

  markCancelling(runId) {
    this.runs.get(runId)?.setStatus("cancelling");
  }

  // Rendering ---------------------------------------------------------------------------------

  runBlock(event) {
    let block = this.runs.get(event.run_id);
    if (!block) {
      for (const [key, candidate] of this.runs) {
        if (candidate.status === "unconfirmed" && candidate.agent === event.agent_name) {
          this.runs.delete(key);
          candidate.note?.remove();
          candidate.setRunId(event.run_id);
          candidate.status = "queued";
          candidate.setStatus("queued");
          this.runs.set(event.run_id, candidate);
          return candidate;
        }
      }
      block = new RunBlock(this, event.run_id, event.agent_name);
      this.runs.set(event.run_id, block);
      this.list.append(block.root);
    }
    return block;
  }

  execution(event) {
    let ex = this.executions.get(event.execution_id);
    if (!ex) {
      ex = { agent: event.agent_name, depth: event.depth ?? 0, streamed: false, answer: null };
      this.executions.set(event.execution_id, ex);
    }
    return ex;
  }

  render(event) {
    const block = this.runBlock(event);
    const ex = this.execution(event);
    if (event.type !== "message_delta") ex.answer = null; // the next delta starts a new paragraph
    const item = (cls, ...children) => {
      const li = h("li", { class: `ev ${cls}`, dataset: { seq: event.seq, type: event.type } });
      li.style.setProperty("--depth", String(ex.depth));
      li.append(...children.filter((c) => c !== null && c !== undefined));
      block.events.append(li);
      return li;
    };
    const when = h("time", { datetime: event.timestamp, class: "when" }, formatClock(event.timestamp));

    switch (event.type) {
      case "agent_started": {
        ex.depth = event.depth ?? 0;
        ex.agent = event.agent_name;
        if (ex.depth === 0) {
          block.setInput(event.input);
          block.setStatus("running");
          item("started", h("span", { class: "label" }, `${event.agent_name} started`), when);
        } else {
          item(
            "started delegated",
            h("span", { class: "label" }, `↳ delegated to ${event.agent_name}`),
            when,
            foldable("Input", event.input),
          );
        }
        break;
      }
      case "agent_thinking":
        item(
          "thinking",
          h("span", { class: "label" }, `Thinking · step ${event.step ?? "?"}`),
          when,
          h("p", { class: "reasoning" }, String(event.reasoning ?? "")),
        );
        break;
      case "message_delta": {
        ex.streamed = true;
        if (!ex.answer) {
          const text = h("p", { class: "answer-text" });
          const li = h(
            "li",
            { class: "ev answer" },
            h("span", { class: "label" }, ex.depth === 0 ? "Answer" : `${ex.agent} says`),
            text,
          );
          li.style.setProperty("--depth", String(ex.depth));
          block.events.append(li);
          ex.answer = text;
        }
        ex.answer.append(
          h("span", { dataset: { seq: event.seq, type: event.type } }, String(event.text ?? "")),
        );
        break;
      }
      case "tool_executing": {
        const state = h("span", { class: "tool-state" }, "running…");
        const details = h(
          "details",
          { class: "tool-call" },
          h(
            "summary",
            {},
            h("span", { class: "label" }, `Tool: ${event.tool_name}`),
            h("code", { class: "tool-args" }, brief(event.parameters, 60)),
            state,
          ),
          h("div", { class: "tool-part" }, h("h4", {}, "Parameters"), h("pre", {}, pretty(event.parameters))),
        );
        const li = item("tool", details);
        this.tools.set(event.call_id, { li, details, state });
        break;
      }
      case "tool_completed": {
        let tool = this.tools.get(event.call_id);
        if (!tool) {
          const state = h("span", { class: "tool-state" });
          const details = h(
            "details",
            { class: "tool-call" },
            h("summary", {}, h("span", { class: "label" }, `Tool: ${event.tool_name}`), state),
          );
          tool = { li: item("tool", details), details, state };
        }
        const ok = event.ok !== false;
        tool.li.classList.toggle("failed", !ok);
        const body = ok ? event.results : event.error;
        const outcome = ok ? `✓ ${brief(body, 40)}` : `✗ ${errorText(body, 60)}`;
        tool.state.textContent = `${outcome} · ${formatDuration(event.duration_ms)}`;
        tool.details.append(
          h(
            "div",
            { class: `tool-part result${ok ? "" : " error"}`, dataset: { seq: event.seq, type: event.type } },
            h("h4", {}, ok ? "Result" : "Error"),
            h("pre", {}, pretty(body)),
          ),
        );
        break;
      }
      case "agent_completed": {
        const duration = formatDuration(event.duration_ms);
        if (!ex.streamed && event.final_response) {
          // Nothing was streamed: show the final response as the answer.
          const li = h(
            "li",
            { class: "ev answer" },
            h("span", { class: "label" }, ex.depth === 0 ? "Answer" : `${ex.agent} says`),
            h("p", { class: "answer-text" }, String(event.final_response)),
          );
          li.style.setProperty("--depth", String(ex.depth));
          block.events.append(li);
        }
        if ((event.depth ?? ex.depth) === 0) {
          item("done", h("span", { class: "label" }, `✓ Completed in ${duration}`), when);
          block.finish("completed", duration);
        } else {
          item("done delegated", h("span", { class: "label" }, `↳ ${ex.agent} done in ${duration}`), when);
        }
        break;
      }
      case "agent_error": {
        const err = event.error || {};
        const li = item(
          "error",
          h("span", { class: "label" }, (event.depth ?? ex.depth) === 0 ? "✗ Failed" : `✗ ${ex.agent} failed`),
          when,
          h("p", { class: "error-text" }, errorText(err, 2000)),
        );
        li.setAttribute("role", "group");
        if ((event.depth ?? ex.depth) === 0) block.finish("failed", "");
        break;
      }
      case "approval_requested":
      case "input_requested": {
        const approval = event.type === "approval_requested";
        const request = approval ? new ApprovalRequest(event, this.hooks) : new InputRequest(event, this.hooks);
        request.render(item, when, event);
        this.requests.set(requestKey(event), request);
        block.waiting.add(requestKey(event));
        block.setStatus("requires_action");
        break;
      }
      case "approval_resolved":
      case "input_received": {
        const key = requestKey(event);
        const request = this.requests.get(key);
        if (request) request.resolve(event);
        else item("other", h("span", { class: "label" }, String(event.type)), when, foldable("Event", event));
        block.waiting.delete(key);
        if (!block.waiting.size) block.setStatus("running");
        break;
      }
      case "run_cancelled":
        item("cancelled", h("span", { class: "label" }, `■ Cancelled${event.reason ? ` (${event.reason})` : ""}`), when);
        block.finish("cancelled", "");
        break;
      default:
        item("other", h("span", { class: "label" }, String(event.type)), when, foldable("Event", event));
    }
  }
}

/** The key of a request in ThreadView.requests, from any of its events. */
function requestKey(event) {
  return event.call_id !== undefined
    ? `approval:${event.run_id}:${event.call_id}`
    : `input:${event.run_id}:${event.request_id}`;
}

function errorText(error, max) {
  if (error && typeof error === "object") {
    const text = [error.code, error.message].filter(Boolean).join(": ");
    if (text) return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  }
  return typeof error === "string" ? error.slice(0, max) : brief(error, max);
}

function foldable(title, value) {
  if (value === undefined || value === null || value === "") return null;
  return h("details", { class: "fold" }, h("summary", {}, title), h("pre", {}, pretty(value)));
}

class RunBlock {
  constructor(view, runId, agent) {
    this.view = view;
    this.runId = runId;
    this.agent = agent;
    this.note = null;
    this.waiting = new Set(); // keys of this run's requests still waiting for the user
    this.status = "queued";
    this.input = h("div", { class: "user-input", hidden: true });
    this.statusEl = h("span", { class: "run-status" });
    this.durationEl = h("span", { class: "run-duration" });
    this.cancel = h("button", { type: "button", class: "cancel" }, "Cancel");
    this.cancel.addEventListener("click", () => {
      if (this.runId) this.view.hooks.onCancel(this.runId);
    });
    this.events = h("ol", { class: "events" });
    this.root = h(
      "article",
      { class: "run", dataset: { runId: runId ?? "" }, "aria-label": `Run of ${agent}` },
      this.input,
      h(
        "header",
        { class: "run-head" },
        h("span", { class: "run-agent" }, agent),
        this.statusEl,
        this.durationEl,
        this.cancel,
      ),
      this.events,
    );
    this.setStatus("queued");
  }

  setRunId(runId) {
    this.runId = runId;
    this.root.dataset.runId = runId;
  }

  setInput(text) {
    if (!this.input.hidden || text === undefined || text === null) return;
    this.input.replaceChildren(h("span", { class: "who" }, "You"), h("p", {}, String(text)));
    this.input.hidden = false;
  }

  setStatus(status) {
    if (TERMINAL.has(this.status) && !TERMINAL.has(status)) return;
    if (this.status === "cancelling" && status === "running") return;
    this.status = status;
    this.root.dataset.status = status;
    this.statusEl.textContent = status;
    const live = !TERMINAL.has(status);
    this.root.setAttribute("aria-busy", String(live && status !== "sending"));
    this.cancel.hidden = !live;
    this.cancel.disabled = !this.runId || status === "cancelling" || status === "sending";
    this.cancel.textContent = status === "cancelling" ? "Cancelling…" : "Cancel";
  }

  finish(status, duration) {
    for (const key of this.waiting) this.view.requests.get(key)?.close("closed", `Closed: the run ${status === "cancelled" ? "was cancelled" : "ended"}`);
    this.waiting.clear();
    this.setStatus(status);
    this.durationEl.textContent = duration;
  }
}
