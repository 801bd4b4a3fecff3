// The secrets page: the signed-in user's secrets (API tokens their tools and MCP servers use).
// Values are write-only: the server lists names only, and a value typed here is sent once and
// cleared from the form at once.

import { h } from "./dom.js";

export class SecretsPanel {
  /** @param {() => import("./api.js").Api | null} currentApi the signed-in user's API, or null */
  constructor(currentApi) {
    this.currentApi = currentApi;
    this.dialog = document.getElementById("secrets-dialog");
    this.list = document.getElementById("secrets-list");
    this.form = document.getElementById("secret-form");
    this.name = document.getElementById("secret-name");
    this.value = document.getElementById("secret-value");
    this.status = document.getElementById("secrets-status");
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.save();
    });
    document.getElementById("secrets-close").addEventListener("click", () => this.close());
  }

  async open() {
    this.status.textContent = "";
    this.dialog.showModal();
    await this.load();
    this.name.focus();
  }

  close() {
    this.value.value = "";
    this.list.replaceChildren();
    if (this.dialog.open) this.dialog.close();
  }

  async load() {
    const api = this.currentApi();
    if (!api) return;
    try {
      const body = await api.request("GET", "/v1/me/secrets");
      if (!body.enabled) this.status.textContent = "Secrets are disabled on this server (no TENET_SECRET_KEY).";
      this.list.replaceChildren(
        ...body.data.map((s) =>
          h(
            "li",
            { class: "secret" },
            h("code", {}, s.name),
            h("button", { class: "secondary", type: "button", dataset: { name: s.name } }, "Delete"),
          ),
        ),
      );
      if (!body.data.length) this.list.append(h("li", { class: "hint" }, "No secrets yet."));
      for (const button of this.list.querySelectorAll("button")) {
        button.addEventListener("click", () => this.remove(button.dataset.name));
      }
    } catch (err) {
      this.status.textContent = `Could not load your secrets: ${err.message}`;
    }
  }

  async save() {
    const api = this.currentApi();
    const name = this.name.value.trim();
    const value = this.value.value;
    this.value.value = "";
    if (!api || !name || !value) return;
    try {
      await api.request("PUT", `/v1/me/secrets/${encodeURIComponent(name)}`, { value });
      this.status.textContent = `Saved ${name}.`;
      this.name.value = "";
      await this.load();
    } catch (err) {
      this.status.textContent = `Could not save ${name}: ${err.message}`;
    }
  }

  async remove(name) {
    const api = this.currentApi();
    if (!api) return;
    try {
      await api.request("DELETE", `/v1/me/secrets/${encodeURIComponent(name)}`);
      this.status.textContent = `Deleted ${name}.`;
      await this.load();
    } catch (err) {
      this.status.textContent = `Could not delete ${name}: ${err.message}`;
    }
  }
}
