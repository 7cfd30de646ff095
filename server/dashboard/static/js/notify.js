// Admins: the event's organizer notification channels (Apprise URLs), saved with PUT /events/{id}/notify.
"use strict";

(() => {
  const { api, el } = Turnout;
  const session = Turnout.session();
  if (!session || session.role !== "admin") return;
  const panel = document.getElementById("notify-panel");
  const rows = document.getElementById("notify-rows");
  const status = document.getElementById("notify-status");
  const ALL_KINDS = ["overflow_decision", "section_over_capacity", "camera_stale", "camera_offline"];
  let count = 0;

  const eventId = () => new URLSearchParams(location.search).get("event") || document.getElementById("event-select").value;
  const say = (text, kind) => {
    status.textContent = text;
    status.dataset.kind = kind || "";
  };

  function row(target = { url: "", label: "", kinds: ["overflow_decision"] }) {
    const n = ++count;
    const all = ALL_KINDS.every((k) => (target.kinds || []).includes(k));
    const node = el(
      "div",
      { class: "notify-row", "data-row": String(n) },
      el("label", {}, "Name", el("input", { type: "text", name: "label", value: target.label || "", placeholder: "Organizer e-mail", maxlength: "100" })),
      el("label", {}, "Apprise URL", el("input", { type: "text", name: "url", value: target.url || "", placeholder: "mailto://user:password@example.org", spellcheck: "false", autocomplete: "off" })),
      el("label", { class: "check" }, el("input", { type: "checkbox", name: "all", checked: all || null }), "camera and section alerts too"),
      el("button", { type: "button", text: "Remove", "aria-label": `Remove channel ${n}`, onclick: () => node.remove() }),
    );
    rows.append(node);
    return node;
  }

  function collect() {
    return [...rows.querySelectorAll(".notify-row")]
      .map((r) => ({
        label: r.querySelector("[name=label]").value.trim(),
        url: r.querySelector("[name=url]").value.trim(),
        kinds: r.querySelector("[name=all]").checked ? ALL_KINDS : ["overflow_decision"],
      }))
      .filter((t) => t.url);
  }

  async function load() {
    const id = eventId();
    if (!id) return;
    const res = await api(`/api/v1/events/${encodeURIComponent(id)}/notify`);
    rows.replaceChildren();
    res.targets.forEach((t) => row(t));
    if (!res.targets.length) row();
    panel.hidden = false;
  }

  document.getElementById("notify-add").addEventListener("click", () => row().querySelector("[name=label]").focus());
  document.getElementById("notify-save").addEventListener("click", async () => {
    try {
      const res = await api(`/api/v1/events/${encodeURIComponent(eventId())}/notify`, { method: "PUT", body: { targets: collect() } });
      say(`Saved: ${res.targets.length} channel${res.targets.length === 1 ? "" : "s"}.`, "ok");
    } catch (err) {
      say(`Not saved: ${err.message}`, "bad");
    }
  });
  document.getElementById("notify-test").addEventListener("click", async () => {
    try {
      const res = await api(`/api/v1/events/${encodeURIComponent(eventId())}/notify/test`, { method: "POST" });
      if (!res.queued) return say("No saved channel to test: add one and save first.", "bad");
      say(`Test message queued for ${res.queued} saved channel${res.queued === 1 ? "" : "s"}…`, "ok");
      const since = Date.now();
      const words = { sent: "sent", failed: "not delivered", retrying: "retrying", queued: "sending" };
      const poll = setInterval(async () => {
        const log = (await api(`/api/v1/alerts/${encodeURIComponent(res.alert_id)}/deliveries`)).filter((d) => res.deliveries.includes(d.id));
        const failed = log.some((d) => d.status === "failed");
        say(`Test: ${log.map((d) => `${d.target} ${words[d.status] || d.status}`).join(" · ")}`, failed ? "bad" : "ok");
        if ((log.length === res.deliveries.length && log.every((d) => d.status === "sent" || d.status === "failed")) || Date.now() - since > 60000)
          clearInterval(poll);
      }, 500);
    } catch (err) {
      say(`Test not sent: ${err.message}`, "bad");
    }
  });

  // the event list is loaded by dashboard.js; wait for it
  const wait = setInterval(() => {
    if (eventId()) {
      clearInterval(wait);
      load().catch((err) => say(`Cannot load the channels: ${err.message}`, "bad"));
    }
  }, 200);
})();
