// A run waiting for a person: a tool call to approve or deny, or a question to answer.
//
// Each request is drawn from its event (approval_requested / input_requested) with its
// controls, and closed by the matching approval_resolved / input_received. The timeline is
// rebuilt from the stored events on every page load, so a request still pending after a
// reload shows its controls again, and an answered one shows how it was answered.
//
// Answers go out as WebSocket frames ("approve", "respond") through `hooks.send(frame,
// request)`; an error frame for one comes back to `request.fail(message)`, which shows it
// and lets the user try again (a refused answer leaves the request pending on the server).

import { h, pretty } from "./dom.js";

/** Parse the edited arguments: a JSON object, or an Error saying what is wrong. */
export function parseArguments(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return new Error(`The arguments are not valid JSON: ${err.message}`);
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    return new Error("The arguments must be a JSON object, like {\"name\": \"value\"}.");
  }
  return value;
}

/** Parse an answer: text as typed for a string (or no) schema, JSON for any other schema. */
export function parseAnswer(text, schema) {
  const type = schema && typeof schema === "object" ? schema.type : undefined;
  if (!schema || type === "string") return { value: text };
  try {
    return { value: JSON.parse(text) };
  } catch (err) {
    return { error: `The answer must be JSON (the question asks for ${type ?? "a value"}): ${err.message}` };
  }
}

class PendingRequest {
  constructor(runId, hooks) {
    this.runId = runId;
    this.hooks = hooks;
    this.error = h("p", { class: "request-error", role: "alert", hidden: true });
    this.outcome = h("p", { class: "request-outcome", hidden: true });
    this.controls = h("div", { class: "request-controls" });
    this.buttons = [];
  }

  showError(message) {
    this.error.textContent = message;
    this.error.hidden = !message;
  }

  /** The server refused the answer: say why and let the user answer again. */
  fail(message) {
    this.busy(false);
    this.showError(`Not accepted: ${message}`);
  }

  busy(on) {
    for (const b of this.buttons) b.disabled = on;
    this.li.dataset.state = on ? "sending" : "pending";
  }

  send(frame) {
    this.showError("");
    this.busy(true);
    if (!this.hooks.send(frame, this)) {
      this.busy(false);
      this.showError("Not connected; answer again once the connection is back.");
    }
  }

  close(state, text) {
    this.li.dataset.state = state;
    this.controls.remove();
    this.showError("");
    this.outcome.textContent = text;
    this.outcome.hidden = false;
  }
}

/** A tool call waiting for the user's yes, with its (editable) arguments. */
export class ApprovalRequest extends PendingRequest {
  constructor(event, hooks) {
    super(event.run_id, hooks);
    this.callId = event.call_id;
    this.original = event.parameters ?? {};
    const id = `args-${event.run_id}-${event.call_id}`;
    this.args = h("textarea", { id, class: "approval-args", rows: 4, spellcheck: "false" });
    this.args.value = pretty(this.original);
    this.note = h("input", { type: "text", class: "approval-note", "aria-label": "Note", placeholder: "Note (optional)", maxlength: "2000" });
    const approve = h("button", { type: "button", class: "approve" }, "Approve");
    const deny = h("button", { type: "button", class: "deny" }, "Deny");
    approve.addEventListener("click", () => this.answer(true));
    deny.addEventListener("click", () => this.answer(false));
    this.buttons = [approve, deny];
    this.controls.append(
      h("label", { for: id }, "Arguments (JSON, editable)"),
      this.args,
      this.note,
      h("div", { class: "request-buttons" }, approve, deny),
    );
  }

  /** Build the timeline item; `item(cls, ...children)` appends it to the run. */
  render(item, when, event) {
    this.li = item(
      "approval",
      h("span", { class: "label" }, `Approval needed: ${event.tool_name}`),
      when,
      h("p", { class: "request-text" }, `The agent wants to run ${event.tool_name} with:`),
      h("pre", { class: "approval-params" }, pretty(this.original)),
      this.controls,
      this.error,
      this.outcome,
    );
    this.li.dataset.callId = this.callId;
    this.li.dataset.state = "pending";
    return this.li;
  }

  answer(approved) {
    const frame = { type: "approve", run_id: this.runId, call_id: this.callId, approved };
    if (approved) {
      const args = parseArguments(this.args.value);
      if (args instanceof Error) {
        this.showError(args.message);
        return;
      }
      if (JSON.stringify(args) !== JSON.stringify(this.original)) frame.arguments = args;
    }
    const note = this.note.value.trim();
    if (note) frame.note = note;
    this.send(frame);
  }

  resolve(event) {
    const who = event.by === "timeout" ? "no answer in time" : "you";
    let text = event.approved ? `✓ Approved by ${who}` : `✗ Denied (${who})`;
    if (event.arguments !== undefined) text += ` · with arguments ${JSON.stringify(event.arguments)}`;
    if (event.note) text += ` · note: ${event.note}`;
    this.close(event.approved ? "approved" : "denied", text);
  }
}

/** A question from the run, with an answer box. */
export class InputRequest extends PendingRequest {
  constructor(event, hooks) {
    super(event.run_id, hooks);
    this.requestId = event.request_id;
    this.schema = event.schema ?? null;
    const id = `answer-${event.run_id}-${event.request_id}`;
    this.box = h("textarea", { id, class: "answer-box", rows: 2 });
    const submit = h("button", { type: "button", class: "send-answer" }, "Send answer");
    submit.addEventListener("click", () => this.answer());
    this.buttons = [submit];
    this.controls.append(h("label", { for: id }, "Your answer"), this.box, h("div", { class: "request-buttons" }, submit));
  }

  render(item, when, event) {
    const schema = this.schema
      ? h("details", { class: "fold" }, h("summary", {}, "Expected answer"), h("pre", {}, pretty(this.schema)))
      : null;
    this.li = item(
      "question",
      h("span", { class: "label" }, "Question"),
      when,
      h("p", { class: "request-text" }, String(event.prompt ?? "")),
      schema,
      this.controls,
      this.error,
      this.outcome,
    );
    this.li.dataset.requestId = this.requestId;
    this.li.dataset.state = "pending";
    return this.li;
  }

  answer() {
    const parsed = parseAnswer(this.box.value, this.schema);
    if (parsed.error) {
      this.showError(parsed.error);
      return;
    }
    this.sent = parsed.value;
    this.send({ type: "respond", run_id: this.runId, request_id: this.requestId, value: parsed.value });
  }

  resolve(event) {
    if (event.by === "timeout") this.close("answered", "No answer in time");
    else this.close("answered", this.sent === undefined ? "✓ Answered" : `✓ Answered: ${JSON.stringify(this.sent)}`);
  }
}
