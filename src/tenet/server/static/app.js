// The tenet web console: sign in, pick a thread and an agent, send, watch the run live.
//
// Everything a signed-in user has (token, socket, thread views) lives in one `session`
// object, made at sign-in and dropped at sign-out, so nothing of one user survives into the
// next sign-in in the same tab. All text from the server is rendered with text nodes.

import { Api, ApiError } from "./api.js";
import { Connection } from "./connection.js";
import { formatTime, h } from "./dom.js";
import { SecretsPanel } from "./secrets.js";
import { ThreadView } from "./timeline.js";

const TOKEN_KEY = "tenet.token";
const AGENT_KEY = "tenet.agent";
const THREAD_PAGE = 50;
const TITLE_LENGTH = 80;

const $ = (id) => document.getElementById(id);
const ui = {
  signin: $("signin"),
  signinForm: $("signin-form"),
  token: $("token"),
  signinError: $("signin-error"),
  console: $("console"),
  whoami: $("whoami"),
  signOut: $("sign-out"),
  status: $("conn-status"),
  threads: $("threads"),
  moreThreads: $("more-threads"),
  newThread: $("new-thread"),
  threadTitle: $("thread-title"),
  deleteThread: $("delete-thread"),
  timeline: $("timeline"),
  composer: $("composer"),
  agent: $("agent"),
  agentDescription: $("agent-description"),
  input: $("input"),
  send: $("send"),
  composerError: $("composer-error"),
};

/** @type {null | {api: Api, conn: Connection, me: any, agents: any[], threads: Map<string, any>,
 *   views: Map<string, ThreadView>, current: ThreadView | null, pending: Map<string, any>,
 *   busy: boolean}} */
let session = null;

const STATUS_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

// Signing in and out ---------------------------------------------------------------------------

async function signIn(token, { remembered = false } = {}) {
  ui.signinError.textContent = "";
  const api = new Api(token);
  let me;
  try {
    me = await api.me();
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (!remembered || err.status !== 401) {
      ui.signinError.textContent =
        err.status === 401 ? "That token was not accepted." : `Could not sign in: ${err.message}`;
    }
    showSignIn();
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  ui.token.value = "";
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const s = {
    api,
    me,
    agents: [],
    threads: new Map(),
    views: new Map(),
    current: null,
    pending: new Map(),
    busy: false,
    conn: null,
  };
  s.conn = new Connection(`${scheme}//${location.host}/v1/ws`, token, {
    onState: (state, detail) => s === session && showStatus(state, detail),
    onReady: () => s === session && onReady(),
    onFrame: (frame) => s === session && onFrame(frame),
    onUnauthorized: () => s === session && signOut("Your token is no longer accepted; sign in again."),
  });
  session = s;
  ui.whoami.textContent = `Signed in as ${me.name}`;
  ui.whoami.hidden = false;
  ui.signOut.hidden = false;
  openSecrets.hidden = false;
  ui.signin.hidden = true;
  ui.console.hidden = false;
  s.conn.start();
  await Promise.all([loadAgents(), loadThreads()]);
  if (s !== session) return;
  selectThread(threadFromHash());
  ui.input.focus();
}

function signOut(message = "") {
  const s = session;
  session = null;
  sessionStorage.removeItem(TOKEN_KEY);
  s?.conn.stop();
  ui.threads.replaceChildren();
  ui.timeline.replaceChildren();
  ui.agent.replaceChildren();
  ui.agentDescription.textContent = "";
  ui.composerError.textContent = "";
  ui.input.value = "";
  ui.whoami.textContent = "";
  ui.whoami.hidden = true;
  ui.signOut.hidden = true;
  openSecrets.hidden = true;
  secretsPanel.close();
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  showStatus("offline", "");
  ui.signinError.textContent = message;
  showSignIn();
}

function showSignIn() {
  ui.console.hidden = true;
  ui.signin.hidden = false;
  ui.token.focus();
}

function unauthorized(err) {
  if (err instanceof ApiError && err.status === 401) {
    signOut("Your token is no longer accepted; sign in again.");
    return true;
  }
  return false;
}

// Connection state -----------------------------------------------------------------------------

function showStatus(state, detail) {
  ui.status.dataset.state = state;
  ui.status.textContent = STATUS_TEXT[state] + (detail ? ` (${detail})` : "");
  updateComposer();
}

function onReady() {
  const s = session;
  // Runs sent on the socket that dropped may or may not have been accepted: if one was, its
  // events arrive with the resubscription below and the placeholder is replaced by them.
  for (const [ref, p] of s.pending) {
    if (p.kind === "run") p.view.markUnconfirmed(ref);
    // An answer on the dropped socket may have been taken: if so, the replayed events close
    // its request; if not, it can be sent again.
    if (p.kind === "answer") p.request.busy(false);
  }
  s.pending.clear();
  for (const view of s.views.values()) {
    if (view.subscribed) subscribe(view);
  }
  loadThreads({ quiet: true });
}

// Agents and threads ----------------------------------------------------------------------------

async function loadAgents() {
  const s = session;
  let agents;
  try {
    agents = await s.api.agents();
  } catch (err) {
    if (!unauthorized(err)) ui.composerError.textContent = `Could not load agents: ${err.message}`;
    return;
  }
  if (s !== session) return;
  s.agents = agents;
  const saved = sessionStorage.getItem(AGENT_KEY);
  ui.agent.replaceChildren(...agents.map((a) => h("option", { value: a.name }, a.name)));
  const preferred = agents.find((a) => a.name === saved) || agents.find((a) => a.name === "assistant");
  if (preferred) ui.agent.value = preferred.name;
  showAgentDescription();
}

function showAgentDescription() {
  const agent = session?.agents.find((a) => a.name === ui.agent.value);
  const tools = agent?.tools?.map((t) => t.name).join(", ");
  ui.agentDescription.textContent = agent
    ? `${agent.description || "No description."}${tools ? ` Tools: ${tools}.` : ""}`
    : "";
}

async function loadThreads({ more = false, quiet = false } = {}) {
  const s = session;
  const before = more ? [...s.threads.keys()].at(-1) : undefined;
  let page;
  try {
    page = await s.api.threads({ limit: THREAD_PAGE, before });
  } catch (err) {
    if (!unauthorized(err) && !quiet) ui.composerError.textContent = `Could not load threads: ${err.message}`;
    return;
  }
  if (s !== session) return;
  if (!more) {
    // Keep threads made since the first page was read, newest first.
    const known = new Map(page.map((t) => [t.id, t]));
    for (const [id, t] of s.threads) if (!known.has(id) && !more) known.set(id, t);
    s.threads = new Map([...known.values()].sort(newestFirst).map((t) => [t.id, t]));
  } else {
    for (const t of page) s.threads.set(t.id, t);
  }
  ui.moreThreads.hidden = page.length < THREAD_PAGE;
  renderThreads();
}

function newestFirst(a, b) {
  if (a.created_at !== b.created_at) return a.created_at < b.created_at ? 1 : -1;
  return a.id < b.id ? 1 : -1;
}

function threadTitle(thread) {
  const title = thread?.metadata?.title;
  return typeof title === "string" && title.trim() ? title : "Untitled thread";
}

function renderThreads() {
  const s = session;
  const items = [...s.threads.values()].map((t) => {
    const button = h(
      "button",
      { type: "button", class: "thread", dataset: { threadId: t.id } },
      h("span", { class: "thread-title" }, threadTitle(t)),
      h("time", { class: "thread-time", datetime: t.created_at }, formatTime(t.created_at)),
    );
    if (s.current?.threadId === t.id) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => selectThread(t.id));
    return h("li", {}, button);
  });
  if (!items.length) items.push(h("li", { class: "empty" }, "No threads yet."));
  ui.threads.replaceChildren(...items);
}

function addThread(thread) {
  session.threads = new Map([[thread.id, thread], ...session.threads]);
  renderThreads();
}

// Viewing a thread -------------------------------------------------------------------------------

function threadFromHash() {
  const m = /^#thread=([\w-]{1,100})$/.exec(location.hash);
  return m ? m[1] : null;
}

function viewFor(threadId) {
  const s = session;
  let view = s.views.get(threadId);
  if (!view) {
    view = new ThreadView(threadId, { onCancel: cancelRun, send: sendAnswer });
    s.views.set(threadId, view);
  }
  return view;
}

/** Show a thread (null: a new, empty one), subscribing to it from the last seq seen. */
function selectThread(threadId) {
  const s = session;
  if (!s) return;
  const previous = s.current;
  if (previous && previous.threadId !== threadId && previous.subscribed) {
    previous.subscribed = false;
    s.conn.send({ type: "unsubscribe", thread_id: previous.threadId });
  }
  const hash = threadId ? `#thread=${threadId}` : "";
  if (location.hash !== hash) history.replaceState(null, "", location.pathname + location.search + hash);
  ui.deleteThread.hidden = !threadId;
  if (!threadId) {
    s.current = null;
    ui.threadTitle.textContent = "New thread";
    ui.timeline.replaceChildren(
      h("p", { class: "notice" }, "Pick an agent and send a message to start a thread."),
    );
  } else {
    const view = viewFor(threadId);
    s.current = view;
    const thread = s.threads.get(threadId);
    ui.threadTitle.textContent = thread ? threadTitle(thread) : "Thread";
    if (!thread) {
      // Opened by its address (#thread=...) and not among the threads listed so far.
      s.api.getThread(threadId).then(
        (t) => {
          if (s === session && s.current === view) ui.threadTitle.textContent = threadTitle(t);
        },
        (err) => unauthorized(err),
      );
    }
    ui.timeline.replaceChildren(view.root);
    ui.timeline.scrollTop = ui.timeline.scrollHeight;
    if (!view.subscribed) {
      view.subscribed = true;
      subscribe(view);
    }
  }
  renderThreads();
  updateComposer();
}

/** Delete the thread on view (its runs are cancelled, its messages and events go with it). */
async function deleteCurrentThread() {
  const s = session;
  const view = s?.current;
  if (!view) return;
  const title = ui.threadTitle.textContent;
  if (!confirm(`Delete "${title}"? Its runs are stopped and its messages and events are gone for good.`)) return;
  ui.composerError.textContent = "";
  ui.deleteThread.disabled = true;
  try {
    if (view.subscribed) {
      view.subscribed = false;
      s.conn.send({ type: "unsubscribe", thread_id: view.threadId });
    }
    await s.api.deleteThread(view.threadId);
  } catch (err) {
    // Gone already (404) is what was asked for; anything else is shown, and the thread stays.
    if (!(err instanceof ApiError && err.status === 404)) {
      if (!unauthorized(err) && s === session) {
        ui.composerError.textContent = `Could not delete the thread: ${err.message}`;
        if (s.current === view && !view.subscribed) {
          view.subscribed = true;
          subscribe(view);
        }
      }
      return;
    }
  } finally {
    ui.deleteThread.disabled = false;
  }
  if (s !== session) return;
  s.threads.delete(view.threadId);
  s.views.delete(view.threadId);
  if (s.current === view) selectThread(null);
  else renderThreads();
}

function subscribe(view) {
  const s = session;
  view.resyncing = true;
  if (view.lastSeq === 0 && !view.runs.size) view.setNotice("Loading…");
  const ref = s.conn.ref();
  if (s.conn.send({ type: "subscribe", thread_id: view.threadId, after: view.lastSeq, ref })) {
    s.pending.set(ref, { kind: "subscribe", view });
  }
}

// Frames from the server -------------------------------------------------------------------------

function onFrame(frame) {
  const s = session;
  const pending = frame.ref ? s.pending.get(frame.ref) : undefined;
  if (pending && frame.type !== "subscribed") s.pending.delete(frame.ref);
  switch (frame.type) {
    case "subscribed": {
      s.pending.delete(frame.ref);
      const view = s.views.get(frame.thread_id);
      if (!view) return;
      view.resyncing = false;
      view.targetSeq = frame.last_seq;
      refreshNotice(view);
      return;
    }
    case "run_accepted":
      pending?.view.confirmPending(frame.ref, frame.run_id);
      updateComposer();
      return;
    case "cancel_accepted":
      for (const view of s.views.values()) view.markCancelling(frame.run_id);
      return;
    case "approval_accepted":
    case "response_accepted":
    case "unsubscribed":
    case "pong":
      return;
    case "error":
      onError(frame, pending);
      return;
    default:
      if (typeof frame.seq === "number" && typeof frame.thread_id === "string") onEvent(frame);
  }
}

function onEvent(event) {
  const s = session;
  const view = s.views.get(event.thread_id);
  if (!view || !view.subscribed) return;
  const visible = view === s.current;
  const box = ui.timeline;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 120;
  const result = view.accept(event);
  if (result === "gap" && !view.resyncing) {
    subscribe(view); // replays from the last seq rendered; what arrives twice is dropped
    return;
  }
  if (result !== "ok") return;
  refreshNotice(view);
  if (visible) {
    if (atBottom) box.scrollTop = box.scrollHeight;
    updateComposer();
  }
}

function refreshNotice(view) {
  if (view.targetSeq === undefined) return;
  if (view.lastSeq < view.targetSeq) view.setNotice("Loading history…");
  else if (view.lastSeq === 0 && !view.runs.size) view.setNotice("No runs in this thread yet.");
  else view.setNotice("");
}

function onError(frame, pending) {
  const message = frame.message || frame.code || "error";
  if (pending?.kind === "run") {
    pending.view.failPending(frame.ref, message);
    ui.composerError.textContent = `The run was not accepted: ${message}`;
  } else if (pending?.kind === "subscribe") {
    const view = pending.view;
    view.resyncing = false;
    view.subscribed = false;
    view.setNotice(
      frame.code === "not_found" ? "This thread does not exist, or is not yours." : `Could not load: ${message}`,
      "error",
    );
  } else if (pending?.kind === "answer") {
    pending.request.fail(message);
  } else if (pending?.kind === "cancel") {
    ui.composerError.textContent = `Could not cancel: ${message}`;
  } else {
    ui.composerError.textContent = `Server error: ${message}`;
  }
  updateComposer();
}

// Sending and cancelling -------------------------------------------------------------------------

function updateComposer() {
  const s = session;
  const connected = Boolean(s?.conn.connected);
  ui.send.disabled = !connected || Boolean(s?.busy);
  ui.send.title = connected ? "" : "Waiting for the connection";
}

async function send() {
  const s = session;
  const text = ui.input.value.trim();
  const agent = ui.agent.value;
  ui.composerError.textContent = "";
  if (!s || !text) return;
  if (!agent) {
    ui.composerError.textContent = "The agents are still loading; try again in a moment.";
    return;
  }
  if (!s.conn.connected) {
    ui.composerError.textContent = "Not connected; wait for the connection to come back.";
    return;
  }
  if (s.busy) return;
  s.busy = true;
  updateComposer();
  try {
    let view = s.current;
    if (!view) {
      const thread = await s.api.createThread({ title: text.slice(0, TITLE_LENGTH) });
      if (s !== session) return;
      addThread(thread);
      selectThread(thread.id);
      view = s.current;
    }
    const ref = s.conn.ref();
    view.addPending(ref, agent, text);
    s.pending.set(ref, { kind: "run", view });
    if (!s.conn.send({ type: "run", agent, input: text, thread_id: view.threadId, ref })) {
      s.pending.delete(ref);
      view.failPending(ref, "not connected");
      return;
    }
    ui.input.value = "";
    ui.timeline.scrollTop = ui.timeline.scrollHeight;
  } catch (err) {
    if (!unauthorized(err)) ui.composerError.textContent = `Could not send: ${err.message}`;
  } finally {
    s.busy = false;
    updateComposer();
  }
}

function cancelRun(runId) {
  const s = session;
  if (!s) return;
  const ref = s.conn.ref();
  if (s.conn.send({ type: "cancel", run_id: runId, ref })) {
    s.pending.set(ref, { kind: "cancel", runId });
  } else {
    ui.composerError.textContent = "Not connected; cancel again once the connection is back.";
  }
}

/** Send an answer frame ("approve" / "respond"); an error frame for it goes back to `request`. */
function sendAnswer(frame, request) {
  const s = session;
  if (!s) return false;
  const ref = s.conn.ref();
  if (!s.conn.send({ ...frame, ref })) return false;
  s.pending.set(ref, { kind: "answer", request });
  return true;
}

// Wiring -----------------------------------------------------------------------------------------

ui.signinForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const token = ui.token.value.trim();
  if (token) signIn(token);
});
ui.signOut.addEventListener("click", () => signOut("Signed out."));
const secretsPanel = new SecretsPanel(() => session?.api ?? null);
const openSecrets = document.getElementById("open-secrets");
openSecrets.addEventListener("click", () => secretsPanel.open());
ui.newThread.addEventListener("click", () => {
  selectThread(null);
  ui.input.focus();
});
ui.moreThreads.addEventListener("click", () => loadThreads({ more: true }));
ui.deleteThread.addEventListener("click", () => deleteCurrentThread());
ui.agent.addEventListener("change", () => {
  sessionStorage.setItem(AGENT_KEY, ui.agent.value);
  showAgentDescription();
});
ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});
ui.input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
window.addEventListener("hashchange", () => {
  if (session && threadFromHash() !== (session.current?.threadId ?? null)) {
    selectThread(threadFromHash());
  }
});

const remembered = sessionStorage.getItem(TOKEN_KEY);
if (remembered) signIn(remembered, { remembered: true });
else showSignIn();
