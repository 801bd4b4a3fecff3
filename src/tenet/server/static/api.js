// HTTP calls to the tenet API with the user's bearer token.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  async request(method, path, body) {
    const headers = { Authorization: `Bearer ${this.token}` };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, "unavailable", "The server could not be reached.");
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const err = data && data.error ? data.error : {};
      throw new ApiError(
        response.status,
        err.code || "internal",
        err.message || `HTTP ${response.status}`,
      );
    }
    return data;
  }

  me() {
    return this.request("GET", "/v1/me");
  }

  agents() {
    return this.request("GET", "/v1/agents");
  }

  threads({ limit = 50, before } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (before) q.set("before", before);
    return this.request("GET", `/v1/threads?${q}`);
  }

  createThread(metadata) {
    return this.request("POST", "/v1/threads", { metadata });
  }

  getThread(id) {
    return this.request("GET", `/v1/threads/${encodeURIComponent(id)}`);
  }

  deleteThread(id) {
    return this.request("DELETE", `/v1/threads/${encodeURIComponent(id)}`);
  }
}
