// The live dashboard: one snapshot over the API, then server-sent events from /api/v1/stream.
"use strict";

(() => {
  const { api, fmt, pct, ago, el } = Turnout;
  const session = Turnout.requireLogin();
  if (!session) return;
  Turnout.setupHeader();
  const canOperate = ["operator", "admin"].includes(session.role);

  const RAMP = ["#2b3a4a", "#2f6f9f", "#4fb3d9", "#9be07a", "#ffd84d", "#ff7b5c"];
  const DECISIONS = {
    cancel_overflow: "Cancel the overflow event",
    overflow_needed: "Overflow event needed",
    undecided: "Overflow: not decided yet",
  };

  let eventId = null;
  let source = null;
  let latest = null;
  let chart = null;
  const series = { t: [], att: [], low: [], fc: [], high: [], cap: [], thr: [] };

  // ------------------------------------------------------------------------------------ snapshot
  // Accepts the server's live snapshot and tolerates older/newer field names.
  function normalize(s) {
    const live = s.live || s.figures || s;
    const ev = s.event || {};
    const fc = live.forecast || s.forecast || {};
    const dec = s.decision || live.decision || {};
    const overflow = ev.overflow || {};
    const capacity = live.capacity ?? ev.capacity ?? null;
    return {
      event: {
        id: ev.id ?? s.event_id ?? eventId,
        name: ev.name ?? "",
        venue: ev.venue_id ?? ev.venue ?? s.venue_id ?? "",
        start: ev.start ?? ev.starts_at ?? null,
        threshold: overflow.threshold ?? ev.overflow_threshold ?? dec.threshold ?? null,
        deadline: overflow.deadline ?? ev.overflow_deadline ?? null,
      },
      now: s.now ?? s.ts ?? null,
      attendance: live.attendance ?? 0,
      people: live.people ?? null,
      capacity,
      registrations: live.registrations ?? null,
      plausible: live.registrations_plausible ?? null,
      suspectShare: live.registrations_suspect_share ?? null,
      fill: live.fill_ratio ?? (capacity ? (live.attendance ?? 0) / capacity : null),
      showUp: live.show_up_ratio ?? null,
      rate: live.arrival_rate_per_min ?? live.arrival_rate ?? null,
      forecast: {
        value: fc.value ?? fc.mid ?? fc.final ?? null,
        low: fc.low ?? fc.lower ?? null,
        high: fc.high ?? fc.upper ?? null,
      },
      decision: {
        state: dec.state ?? null,
        frozen: !!dec.frozen,
        message: dec.message ?? dec.reason ?? "",
        decidedAt: dec.decided_at ?? dec.since ?? null,
        figures: dec.figures || {},
        overrideBy: dec.override_by ?? null,
      },
      sections: (s.sections || []).map((x) => ({
        id: x.id ?? x.section_id,
        name: x.name ?? x.id ?? x.section_id,
        seats: x.seats ?? 0,
        occupied: x.occupied ?? 0,
        people: x.people ?? null,
        camera: x.camera ?? x.camera_id ?? null,
        stale: !!x.stale,
        simulated: String(x.id ?? x.section_id ?? "").startsWith("sim-") || !!x.simulated,
      })),
      cameras: (s.cameras || []).map((c) => ({
        id: c.id ?? c.camera_id,
        state: c.state ?? "unknown",
        lastSeen: c.last_seen ?? c.last_update ?? null,
        sections: c.sections ?? (s.sections || []).filter((x) => (x.cameras || [x.camera]).includes(c.id ?? c.camera_id)).map((x) => x.id),
        simulated: String(c.id ?? c.camera_id ?? "").startsWith("sim-") || !!c.simulated,
      })),
      alerts: (s.alerts || []).map((a) => ({
        id: a.id,
        kind: a.kind,
        state: a.state,
        severity: a.severity ?? "info",
        ts: a.ts ?? a.updated_at ?? a.created_at ?? null,
        message: a.message ?? "",
        acked: !!(a.acknowledged ?? a.acknowledged_at ?? a.acked),
        ackedBy: a.acknowledged_by ?? null,
      })),
    };
  }

  // -------------------------------------------------------------------------------------- render
  function setText(id, text) {
    const node = document.getElementById(id);
    if (node && node.textContent !== text) node.textContent = text;
  }

  function render(raw) {
    const d = normalize(raw);
    latest = d;
    if (d.event.name) {
      setText("title", d.event.name);
      document.title = `Turnout · ${d.event.name}`;
    }
    setText("subtitle", d.event.venue ? `venue ${d.event.venue}` : "live attendance");
    if (d.now) setText("clock", `event time ${new Date(d.now).toLocaleTimeString()}`);

    setText("attendance", fmt(d.attendance));
    setText("attendance-detail", d.people !== null ? `${fmt(d.people)} people seen` : "");
    setText("capacity", fmt(d.capacity));
    setText("fill", d.fill !== null ? `${pct(d.fill)} full` : "");
    setText("registrations", fmt(d.registrations));
    let reg = d.showUp !== null ? `${pct(d.showUp)} showed up` : "";
    if (d.suspectShare) reg += ` · ${pct(d.suspectShare)} look fake (${fmt(d.plausible)} plausible)`;
    setText("showup", reg);
    setText("forecast", fmt(d.forecast.value));
    setText(
      "forecast-band",
      d.forecast.low !== null ? `likely ${fmt(d.forecast.low)} – ${fmt(d.forecast.high)}` : "not enough data yet",
    );
    setText("rate", d.rate !== null ? fmt(d.rate) : "–");

    renderDecision(d);
    renderGauge(d);
    renderChart(d);
    renderSections(d);
    renderCameras(d);
    renderAlerts(d);
  }

  function renderDecision(d) {
    const box = document.getElementById("decision");
    box.dataset.state = d.decision.state || "none";
    let head = DECISIONS[d.decision.state] || "Overflow decision: waiting for data";
    setText("decision-state", head);
    let why = d.decision.message;
    const f = d.decision.figures;
    const thr = d.event.threshold ?? 1;
    if (!why && d.decision.state && d.decision.state !== "undecided" && f.forecast !== undefined) {
      const verb = d.decision.state === "cancel_overflow" ? "stays below" : "exceeds";
      why =
        `Decided ${f.minutes_to_start} min before the start with ${fmt(f.attendance)} in: forecast ` +
        `${fmt(f.forecast)} (likely ${fmt(f.forecast_low)}–${fmt(f.forecast_high)}) ${verb} ` +
        `${fmt(f.target)} (${Math.round((f.threshold ?? thr) * 100)} % of the ${fmt(f.capacity)} seats).` +
        (d.decision.overrideBy ? ` Set by ${d.decision.overrideBy}.` : "");
    } else if (!why && d.forecast.value !== null && d.capacity) {
      why =
        `Forecast at start ${fmt(d.forecast.value)} (likely ${fmt(d.forecast.low)}–${fmt(d.forecast.high)}) ` +
        `against ${fmt(d.capacity * thr)} needed (${Math.round(thr * 100)} % of capacity ${fmt(d.capacity)}).`;
    }
    setText("decision-why", why || "");
    const frozen = d.decision.frozen ? "final (deadline passed)" : d.event.deadline ? `decision deadline ${new Date(d.event.deadline).toLocaleTimeString()}` : "";
    setText("decision-frozen", frozen);
  }

  function arc(f) {
    const a = Math.PI * (1 - Math.max(0, Math.min(1, f)));
    return [100 + 80 * Math.cos(a), 100 - 80 * Math.sin(a)];
  }
  function arcPath(f0, f1) {
    if (f1 <= f0) return "";
    const [x0, y0] = arc(f0);
    const [x1, y1] = arc(f1);
    return `M${x0.toFixed(1)} ${y0.toFixed(1)} A80 80 0 0 1 ${x1.toFixed(1)} ${y1.toFixed(1)}`;
  }
  function renderGauge(d) {
    const cap = d.capacity || 0;
    const f = cap ? d.attendance / cap : 0;
    document.getElementById("gauge-fill").setAttribute("d", arcPath(0, Math.min(1, f)));
    const lo = cap && d.forecast.low !== null ? d.forecast.low / cap : 0;
    const hi = cap && d.forecast.high !== null ? d.forecast.high / cap : 0;
    document.getElementById("gauge-band").setAttribute("d", arcPath(Math.min(1, lo), Math.min(1, hi)));
    const thr = d.event.threshold;
    const line = document.getElementById("gauge-threshold");
    if (thr) {
      const a = Math.PI * (1 - thr);
      line.setAttribute("x1", (100 + 68 * Math.cos(a)).toFixed(1));
      line.setAttribute("y1", (100 - 68 * Math.sin(a)).toFixed(1));
      line.setAttribute("x2", (100 + 92 * Math.cos(a)).toFixed(1));
      line.setAttribute("y2", (100 - 92 * Math.sin(a)).toFixed(1));
    }
    setText("gauge-pct", cap ? `${Math.round(f * 100)} %` : "–");
    document.getElementById("gauge-title").textContent =
      `Attendance ${fmt(d.attendance)} of capacity ${fmt(cap)} (${Math.round(f * 100)} %)`;
  }

  // ---------------------------------------------------------------------------------------- chart
  function pushPoint(tsSec, att, low, fc, high, cap, thr) {
    const n = series.t.length;
    if (n && tsSec <= series.t[n - 1]) {
      if (tsSec === series.t[n - 1]) {
        series.att[n - 1] = att;
        series.low[n - 1] = low;
        series.fc[n - 1] = fc;
        series.high[n - 1] = high;
      }
      return;
    }
    series.t.push(tsSec);
    series.att.push(att);
    series.low.push(low);
    series.fc.push(fc);
    series.high.push(high);
    series.cap.push(cap);
    series.thr.push(thr);
    if (series.t.length > 5000) for (const k of Object.keys(series)) series[k].shift();
  }

  function makeChart() {
    const box = document.getElementById("chart");
    const width = Math.max(300, box.clientWidth);
    const opts = {
      width,
      height: Math.max(260, Math.round(width * 0.38)),
      tzDate: (ts) => new Date(ts * 1000),
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, yMax(max)] } },
      axes: [
        { stroke: "#a8b3bf", grid: { stroke: "#30363d" }, ticks: { stroke: "#30363d" } },
        { stroke: "#a8b3bf", grid: { stroke: "#30363d" }, ticks: { stroke: "#30363d" }, size: 70,
          values: (u, vals) => vals.map((v) => Turnout.fmt(v)) },
      ],
      series: [
        { label: "time" },
        { label: "Attendance", stroke: "#3fb950", width: 3, value: (u, v) => Turnout.fmt(v) },
        { label: "Forecast low", stroke: "#58a6ff", dash: [4, 4], width: 1, value: (u, v) => Turnout.fmt(v) },
        { label: "Forecast", stroke: "#58a6ff", width: 2, value: (u, v) => Turnout.fmt(v) },
        { label: "Forecast high", stroke: "#58a6ff", dash: [4, 4], width: 1, value: (u, v) => Turnout.fmt(v) },
        { label: "Capacity", stroke: "#f85149", width: 2, value: (u, v) => Turnout.fmt(v) },
        { label: "Threshold", stroke: "#ffd33d", dash: [8, 6], width: 1.5, value: (u, v) => Turnout.fmt(v) },
      ],
      bands: [{ series: [4, 2], fill: "rgba(88,166,255,0.18)" }],
      legend: { live: false },
    };
    chart = new uPlot(opts, data(), box);
    new ResizeObserver(() => {
      const w = Math.max(300, box.clientWidth);
      if (Math.abs(w - chart.width) > 4) chart.setSize({ width: w, height: Math.max(260, Math.round(w * 0.38)) });
    }).observe(box);
  }

  const data = () => [series.t, series.att, series.low, series.fc, series.high, series.cap, series.thr];

  // Capacity (plus a margin) bounds the chart, so an early, wide forecast band cannot flatten it.
  function yMax(max) {
    const cap = latest && latest.capacity ? latest.capacity * 1.15 : 0;
    const att = Math.max(0, ...series.att.filter((v) => v !== null));
    return Math.max(10, cap ? Math.max(cap, att * 1.05) : max * 1.05);
  }

  function renderChart(d) {
    if (!d.now) return;
    const thr = d.event.threshold && d.capacity ? d.capacity * d.event.threshold : null;
    pushPoint(Date.parse(d.now) / 1000, d.attendance, d.forecast.low, d.forecast.value, d.forecast.high, d.capacity, thr);
    series.cap.fill(d.capacity);
    series.thr.fill(thr);
    if (typeof uPlot === "undefined") return;
    if (!chart) makeChart();
    else chart.setData(data());
  }

  async function loadHistory() {
    try {
      const rows = await api(`/api/v1/events/${encodeURIComponent(eventId)}/history`);
      const items = Array.isArray(rows) ? rows : rows.samples || rows.items || [];
      for (const r of items) {
        pushPoint(Date.parse(r.ts) / 1000, r.attendance, r.forecast_low ?? null, r.forecast ?? null, r.forecast_high ?? null, null, null);
      }
    } catch (err) {
      console.info("no history yet:", err.message);
    }
  }

  // ------------------------------------------------------------------------------- map, tables
  function textOn(bg) {
    const c = bg.match(/\w\w/g).map((h) => parseInt(h, 16) / 255).map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
    const lum = 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    return lum > 0.18 ? "#000000" : "#ffffff";
  }

  function renderSections(d) {
    const map = document.getElementById("seatmap");
    const items = d.sections.slice().sort((a, b) => a.simulated - b.simulated || a.id.localeCompare(b.id));
    const nodes = items.map((s) => {
      const ratio = s.seats ? s.occupied / s.seats : 0;
      const bg = RAMP[Math.min(RAMP.length - 1, Math.floor(ratio * RAMP.length))];
      const tile = el(
        "div",
        {
          class: `seat-tile${s.people !== null && s.people > s.seats ? " over" : ""}${s.stale ? " stale" : ""}`,
          role: "listitem",
          title: `${s.name}: ${s.occupied} of ${s.seats} seats occupied${s.simulated ? " (simulated)" : ""}`,
          style: `background:${bg};color:${textOn(bg)}`,
          "data-section": s.id,
        },
        el("span", { class: "sid", text: s.id.replace(/^sim-/, "") }),
        el("span", { class: "occ", text: `${fmt(s.occupied)} / ${fmt(s.seats)}` }),
        s.simulated ? el("span", { class: "badge", text: "SIM" }) : null,
      );
      return tile;
    });
    map.replaceChildren(...nodes);
  }

  function renderCameras(d) {
    const body = document.getElementById("cameras");
    const rows = d.cameras
      .slice()
      .sort((a, b) => a.simulated - b.simulated || a.id.localeCompare(b.id))
      .map((c) =>
        el(
          "tr",
          { "data-camera": c.id },
          el("td", {}, c.id, c.simulated ? " " : null, c.simulated ? el("span", { class: "badge", text: "SIM" }) : null),
          el("td", { class: `state-${c.state}`, text: c.state }),
          el("td", { class: "num", text: ago(c.lastSeen, d.now ? Date.parse(d.now) : Date.now()) }),
          el("td", { text: (c.sections || []).join(", ") }),
        ),
      );
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "4", class: "empty", text: "No camera has reported yet." })));
    body.replaceChildren(...rows);
  }

  function renderAlerts(d) {
    const list = document.getElementById("alerts");
    const focusedId = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.ack : null;
    const items = d.alerts
      .slice()
      .sort((a, b) => a.acked - b.acked || String(b.ts).localeCompare(String(a.ts)))
      .map((a) =>
        el(
          "li",
          { "data-severity": a.severity, "data-alert": a.id, class: a.acked ? "acked" : "" },
          el("span", { class: "meta", text: `${a.kind} · ${a.state} · ${a.ts ? new Date(a.ts).toLocaleTimeString() : ""}` }),
          el("span", { class: "msg", text: a.message }),
          el(
            "span",
            { class: "actions" },
            a.acked
              ? el("span", { class: "ok", text: `acknowledged${a.ackedBy ? ` by ${a.ackedBy}` : ""}` })
              : canOperate
                ? el("button", { type: "button", "data-ack": a.id, "aria-label": `Acknowledge: ${a.message}`, text: "Acknowledge", onclick: () => acknowledge(a.id) })
                : null,
          ),
        ),
      );
    if (!items.length) items.push(el("li", { class: "empty", text: "No alerts." }));
    list.replaceChildren(...items);
    if (focusedId) {
      const again = list.querySelector(`[data-ack="${CSS.escape(focusedId)}"]`);
      if (again) again.focus();
    }
  }

  async function acknowledge(id) {
    try {
      await api(`/api/v1/alerts/${encodeURIComponent(id)}/ack`, { method: "POST" });
      if (latest) {
        refresh();
      }
    } catch (err) {
      alert(`Could not acknowledge: ${err.message}`);
    }
  }

  // ---------------------------------------------------------------------------------- plumbing
  async function refresh() {
    const snap = await api(`/api/v1/events/${encodeURIComponent(eventId)}/live`);
    render(snap);
  }

  function connect() {
    if (source) source.close();
    const conn = document.getElementById("conn");
    conn.dataset.state = "connecting";
    conn.textContent = "connecting";
    source = new EventSource(`/api/v1/stream?event=${encodeURIComponent(eventId)}`);
    source.addEventListener("snapshot", (e) => {
      conn.dataset.state = "live";
      conn.textContent = "live";
      render(JSON.parse(e.data));
    });
    source.onerror = () => {
      conn.dataset.state = "connecting";
      conn.textContent = "reconnecting";
    };
  }

  async function start() {
    const params = new URLSearchParams(location.search);
    let events = [];
    try {
      const res = await api("/api/v1/events");
      events = Array.isArray(res) ? res : res.items || [];
    } catch (err) {
      setText("decision-why", `Cannot load events: ${err.message}`);
    }
    const select = document.getElementById("event-select");
    select.replaceChildren(...events.map((e) => el("option", { value: e.id, text: e.name || e.id })));
    eventId = params.get("event") || (events[0] && events[0].id);
    if (!eventId) {
      setText("decision-state", "No event yet");
      setText("decision-why", "Load a venue and an event (see docs/server.md), then reload this page.");
      return;
    }
    select.value = eventId;
    select.addEventListener("change", () => {
      location.search = `?event=${encodeURIComponent(select.value)}`;
    });
    await loadHistory();
    try {
      await refresh();
    } catch (err) {
      setText("decision-why", `Cannot load live figures: ${err.message}`);
    }
    connect();
    setInterval(() => latest && renderCameras(latest), 5000);
  }

  window.TurnoutDashboard = { normalize, render };
  start();
})();
