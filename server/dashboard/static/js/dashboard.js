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

  const REVERSES = {
    cancel_overflow: "cancel the overflow event",
    overflow_needed: "hold the overflow event",
  };
  const ALERT_KINDS = {
    overflow_decision: "Overflow decision",
    section_over_capacity: "Section over capacity",
    camera_stale: "Camera not updating",
    camera_offline: "Camera offline",
  };
  const BAND_CLIP = 1.3; // the forecast band is drawn up to 1.3 x capacity: an early, wide band cannot flatten the chart

  let eventId = null;
  let source = null;
  let latest = null;
  let lastRaw = null;
  let chart = null;
  let chartQueue = false; // the chart was built with the "queue outside" series
  let chartState = null;
  const series = { t: [], att: [], low: [], fc: [], high: [], queue: [] };

  // One time format everywhere: 24-hour clock in the venue's time zone (the event's `timezone`), stated once in
  // the header.
  let zone = null;
  let hm = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  const clock = (iso) => (iso ? hm.format(new Date(iso)) : "–");
  function useZone(tz) {
    if (!tz || tz === zone) return;
    try {
      hm = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: tz });
      zone = tz;
    } catch (_err) {
      /* unknown to this browser: keep the browser's zone */
    }
  }
  function zoneName(iso) {
    const parts = new Intl.DateTimeFormat("en-US", { timeZone: zone || undefined, timeZoneName: "short" }).formatToParts(new Date(iso));
    const abbr = (parts.find((p) => p.type === "timeZoneName") || {}).value;
    const place = zone ? zone.split("/").pop().replace(/_/g, " ") : "local time";
    return zone === "UTC" ? "UTC" : abbr && abbr !== place ? `${place} time (${abbr})` : `${place} time`;
  }
  const num = (v) => (v === null || v === undefined || Number.isNaN(v) ? null : v);
  const cap1 = (s) => (s ? s.charAt(0).toUpperCase() + s.slice(1) : s);

  function duration(minutes) {
    const m = Math.round(Math.abs(minutes));
    if (m < 60) return `${m} min`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
  }

  // "12 %"; never "0 %" or "100 %" for a probability that is not exactly that
  function chanceText(p) {
    if (p === null || p === undefined || Number.isNaN(p)) return null;
    const r = Math.round(p * 100);
    if (r === 0 && p > 0) return "< 1 %";
    if (r === 100 && p < 1) return "> 99 %";
    return `${r} %`;
  }

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
        doorsOpen: ev.doors_open ?? null,
        start: ev.start ?? ev.starts_at ?? null,
        threshold: overflow.threshold ?? ev.overflow_threshold ?? dec.threshold ?? null,
        deadline: overflow.deadline ?? ev.overflow_deadline ?? null,
        overflowName: overflow.name ?? null,
        timezone: ev.timezone ?? null,
      },
      now: s.now ?? s.ts ?? null,
      attendance: live.attendance ?? 0,
      people: live.people ?? null,
      queue: live.queue ?? 0,
      coverage: live.coverage ?? null,
      capacity,
      registrations: live.registrations ?? null,
      plausible: live.registrations_plausible ?? null,
      suspectShare: live.registrations_suspect_share ?? null,
      fill: live.fill_ratio ?? (capacity ? (live.attendance ?? 0) / capacity : null),
      showUp: live.show_up_ratio ?? null,
      rate: live.arrival_rate_per_min ?? live.arrival_rate ?? null,
      forecast: {
        value: fc.p50 ?? fc.value ?? fc.mid ?? fc.final ?? null,
        low: fc.p05 ?? fc.low ?? fc.lower ?? null,
        high: fc.p95 ?? fc.high ?? fc.upper ?? null,
        target: fc.target ?? null,
        p: fc.p_reach_target ?? null,
        reasons: Array.isArray(fc.reasons) ? fc.reasons : [],
        method: fc.method ?? null,
      },
      decision: {
        state: dec.state ?? null,
        frozen: !!dec.frozen,
        message: dec.message ?? "",
        since: dec.since ?? dec.decided_at ?? null,
        figures: dec.figures || {},
        overrideBy: dec.override_by ?? null,
        reversedFrom: dec.reversed_from ?? null,
        provisionalUntil: dec.provisional_until ?? null,
        p: dec.p_reach_target ?? null,
      },
      sections: (s.sections || []).map((x) => ({
        id: x.id ?? x.section_id,
        name: x.name ?? x.id ?? x.section_id,
        kind: x.kind ?? "seats",
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
        deliveries: (a.deliveries || []).map((x) => ({
          target: x.target,
          status: x.status,
          attempts: x.attempts ?? 0,
          error: x.error ?? null,
          at: x.delivered_at ?? x.updated_at ?? null,
        })),
      })),
    };
  }

  // the attendance the overflow decision is about: capacity x threshold
  function targetOf(d) {
    const f = d.decision.figures;
    if (num(f.target) !== null) return f.target;
    if (num(d.forecast.target) !== null) return d.forecast.target;
    return d.capacity && d.event.threshold ? d.capacity * d.event.threshold : null;
  }
  // the attendance counted when the event started (the last point of the series at or before the start)
  function attendanceAtStart(d) {
    const startSec = Date.parse(d.event.start) / 1000;
    for (let i = series.t.length - 1; i >= 0; i--) if (series.t[i] <= startSec) return series.att[i];
    return null;
  }
  const started = (d) => !!(d.now && d.event.start && Date.parse(d.now) >= Date.parse(d.event.start));

  // -------------------------------------------------------------------------------------- render
  function setText(id, text) {
    const node = document.getElementById(id);
    if (node && node.textContent !== text) node.textContent = text;
  }
  function setHidden(id, hidden) {
    const node = document.getElementById(id);
    if (node && node.hidden !== hidden) node.hidden = hidden;
  }

  function render(raw) {
    lastRaw = raw;
    const d = normalize(raw);
    useZone(d.event.timezone);
    latest = d;
    const after = started(d);
    if (d.event.name) {
      setText("title", d.event.name);
      document.title = `Turnout · ${d.event.name}`;
    }
    setText("subtitle", d.event.venue ? `venue ${d.event.venue}` : "live attendance");
    if (d.now) setText("clock", `${clock(d.now)} · all times ${zoneName(d.now)}, 24-hour`);

    setText("attendance", fmt(d.attendance));
    let seen = d.people !== null ? `${fmt(d.people)} people seen` : "";
    if (d.queue > 0) seen += `${seen ? " · " : ""}${fmt(d.queue)} queueing outside`;
    setText("attendance-detail", seen);
    setText("capacity", fmt(d.capacity));
    setText("fill", d.fill !== null ? `${pct(d.fill)} full` : "");
    setText("registrations", fmt(d.registrations));
    let reg = d.showUp !== null ? `${pct(d.showUp)} showed up` : "";
    if (d.suspectShare) reg += ` · ${pct(d.suspectShare)} look fake (${fmt(d.plausible)} plausible)`;
    setText("showup", reg);
    if (after) {
      // after the start: what came, no forecast range and no arrival rate
      const atStart = attendanceAtStart(d);
      const final = atStart ?? d.attendance;
      setText("forecast-label", "Final attendance");
      setText("forecast", fmt(final));
      setText(
        "forecast-band",
        `at ${clock(d.event.start)}` + (d.capacity && atStart !== null ? ` · ${Math.round((100 * atStart) / d.capacity)} % of the seats` : ""),
      );
      // the show-up ratio of the final crowd, not of whoever is still in now
      if (d.registrations) setText("showup", `show-up ${pct(final / d.registrations)} (${fmt(final)} of ${fmt(d.registrations)} came)`);
    } else {
      setText("forecast-label", "Forecast at start");
      setText("forecast", fmt(d.forecast.value));
      setText(
        "forecast-band",
        d.forecast.low !== null ? `likely ${fmt(d.forecast.low)} – ${fmt(d.forecast.high)}` : "not enough data yet",
      );
    }
    setHidden("fig-rate", after);
    setText("rate", !after && d.rate !== null ? fmt(d.rate) : "–");

    renderDecision(d, after);
    renderGauge(d, after);
    renderChart(d, after);
    renderSections(d);
    if (window.TurnoutSeatChart) TurnoutSeatChart.onSnapshot(d); // the seat-level chart, when the venue has one
    renderCameras(d);
    renderAlerts(d);
  }

  function renderDecision(d, after) {
    const dec = d.decision;
    const f = dec.figures;
    const box = document.getElementById("decision");
    box.dataset.state = dec.state || "none";
    setText("decision-state", DECISIONS[dec.state] || "Overflow decision: waiting for data");

    const target = targetOf(d);
    const p = num(dec.p) ?? num(d.forecast.p) ?? num(f.p_reach_target);
    box.dataset.p = p === null ? "" : String(p);
    let chance = "";
    if (target !== null && after)
      chance = `Target ${fmt(target)} ${(attendanceAtStart(d) ?? d.attendance) >= target ? "reached" : "not reached"}`;
    else if (target !== null) chance = `Chance of reaching ${fmt(target)}: ${chanceText(p) ?? "not known yet"}`;
    setText("decision-chance", chance);

    let status = "";
    let kind = "none";
    if (dec.frozen && dec.overrideBy) [status, kind] = [`final · set by ${dec.overrideBy}`, "override"];
    else if (dec.frozen && (!dec.state || dec.state === "undecided"))
      [status, kind] = ["deadline passed: the organizer must decide", "final"];
    else if (dec.frozen) [status, kind] = ["final", "final"];
    else if (dec.provisionalUntil && dec.state && dec.state !== "undecided")
      [status, kind] = [`provisional until ${clock(dec.provisionalUntil)}`, "provisional"];
    else if (dec.provisionalUntil) [status, kind] = [`decision due by ${clock(dec.provisionalUntil)}`, "due"];
    setText("decision-status", status);
    document.getElementById("decision-status").dataset.kind = kind;

    // why no new decision may be taken now (cameras down, registrations only): prominent
    const hold = !dec.frozen && f.reason ? `${cap1(f.reason)}.` : "";
    setText("decision-hold", hold);
    setHidden("decision-hold", !hold);
    const rev = dec.reversedFrom ? `This reverses the earlier decision to ${REVERSES[dec.reversedFrom] || dec.reversedFrom.replace(/_/g, " ")}.` : "";
    setText("decision-reversal", rev);
    setHidden("decision-reversal", !rev);

    let why = dec.message;
    const thr = d.event.threshold;
    const targetWords = target !== null && d.capacity && thr ? `${fmt(target)} (${Math.round(thr * 100)} % of the ${fmt(d.capacity)} seats)` : fmt(target);
    if (!why && after) {
      const atStart = attendanceAtStart(d) ?? d.attendance;
      why = `The event started at ${clock(d.event.start)} with ${fmt(atStart)} people in` +
        (d.capacity ? ` (${Math.round((100 * atStart) / d.capacity)} % of the ${fmt(d.capacity)} seats).` : ".");
    } else if (!why && d.forecast.value !== null) {
      why = `${fmt(d.attendance)} people in now. Forecast at the start: ${fmt(d.forecast.value)}` +
        (d.forecast.low !== null ? ` (likely ${fmt(d.forecast.low)} – ${fmt(d.forecast.high)})` : "") +
        (target !== null ? `, against a target of ${targetWords}.` : ".");
    } else if (!why) {
      why = "No forecast yet: waiting for the first counts.";
    }
    if (dec.state && dec.state !== "undecided" && dec.since) why = `Decided at ${clock(dec.since)}. ${why}`;
    setText("decision-why", why);

    const reasons = d.forecast.reasons.length ? d.forecast.reasons : String(f.reasons || "").split("; ").filter(Boolean);
    const list = document.getElementById("decision-reasons");
    const key = JSON.stringify(reasons);
    if (list.dataset.key !== key) {
      list.dataset.key = key;
      list.replaceChildren(...reasons.map((r) => el("li", { text: cap1(r) })));
    }

    const times = [];
    if (d.event.doorsOpen) times.push(`Doors ${clock(d.event.doorsOpen)}`);
    if (d.event.deadline) times.push(`decision deadline ${clock(d.event.deadline)}`);
    if (d.event.start) {
      let start = `start ${clock(d.event.start)}`;
      if (d.now) {
        const mins = (Date.parse(d.event.start) - Date.parse(d.now)) / 60000;
        start += mins > 0 ? ` (in ${duration(mins)})` : ` (started ${duration(mins)} ago)`;
      }
      times.push(start);
    }
    setText("decision-times", times.join(" · "));
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
  function renderGauge(d, after) {
    const cap = d.capacity || 0;
    const f = cap ? d.attendance / cap : 0;
    document.getElementById("gauge-fill").setAttribute("d", arcPath(0, Math.min(1, f)));
    const lo = !after && cap && d.forecast.low !== null ? d.forecast.low / cap : 0;
    const hi = !after && cap && d.forecast.high !== null ? d.forecast.high / cap : 0;
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
    // after the start there is no forecast band: the caption says what is drawn
    setText("gauge-caption", after ? "green: attendance · yellow: threshold" : "band: forecast · yellow: threshold");
    setText("gauge-pct", cap ? `${Math.round(f * 100)} %` : "–");
    document.getElementById("gauge-title").textContent =
      `Attendance ${fmt(d.attendance)} of capacity ${fmt(cap)} (${Math.round(f * 100)} %)`;
  }

  // ---------------------------------------------------------------------------------------- chart
  function pushPoint(tsSec, att, low, fc, high, queue) {
    const n = series.t.length;
    if (n && tsSec <= series.t[n - 1]) {
      if (tsSec === series.t[n - 1]) {
        series.att[n - 1] = att;
        series.low[n - 1] = low;
        series.fc[n - 1] = fc;
        series.high[n - 1] = high;
        series.queue[n - 1] = queue;
      }
      return;
    }
    series.t.push(tsSec);
    series.att.push(att);
    series.low.push(low);
    series.fc.push(fc);
    series.high.push(high);
    series.queue.push(queue);
    if (series.t.length > 5000) for (const k of Object.keys(series)) series[k].shift();
  }

  // The three moments of the evening, as vertical lines on the chart.
  function markers(d) {
    const out = [];
    if (d.event.doorsOpen) out.push({ key: "doors", label: "doors", t: Date.parse(d.event.doorsOpen) / 1000 });
    if (d.event.deadline) out.push({ key: "deadline", label: "deadline", t: Date.parse(d.event.deadline) / 1000 });
    if (d.event.start) out.push({ key: "start", label: "start", t: Date.parse(d.event.start) / 1000 });
    return out;
  }

  // What uPlot gets: the measured series plus, at doors open and a little after the start, frame points
  // (attendance etc. null) so that the x axis spans the evening and the capacity/target lines its width.
  function chartData() {
    const d = latest;
    const cap = d && d.capacity ? d.capacity : null;
    const clip = cap ? cap * BAND_CLIP : Infinity;
    const target = d ? targetOf(d) : null;
    const c = (v) => (v === null || v === undefined ? null : Math.min(v, clip));
    const marks = d ? markers(d) : [];
    const t = series.t.slice();
    const cols = { att: series.att.slice(), low: series.low.map(c), fc: series.fc.map(c), high: series.high.map(c), queue: series.queue.map((q) => q || null) };
    const times = marks.map((m) => m.t).concat(t);
    if (times.length) {
      const lo = Math.min(...times);
      const hiRaw = Math.max(...times);
      const hi = hiRaw + Math.max(300, 0.04 * (hiRaw - lo));
      const frame = (at, front) => {
        const op = front ? "unshift" : "push";
        t[op](at);
        for (const k of Object.keys(cols)) cols[k][op](null);
      };
      if (!t.length || lo < t[0]) frame(lo, true);
      if (hi > t[t.length - 1]) frame(hi, false);
    }
    const n = t.length;
    const data = [t, cols.att, cols.low, cols.fc, cols.high];
    if (chartQueue) data.push(cols.queue);
    data.push(new Array(n).fill(cap), new Array(n).fill(target));
    let bandPoints = 0;
    let bandMax = null;
    for (let i = 0; i < n; i++)
      if (cols.low[i] !== null && cols.high[i] !== null) {
        bandPoints++;
        bandMax = Math.max(bandMax ?? 0, cols.high[i]);
      }
    chartState = { marks, cap, clip: cap ? clip : null, target, bandPoints, bandMax };
    return data;
  }

  function seriesOpts() {
    const v = (u, x) => Turnout.fmt(x);
    const out = [
      { label: "time", value: (u, x) => (x === null ? "–" : hm.format(new Date(x * 1000))) },
      { label: "Attendance", stroke: "#3fb950", width: 3, value: v },
      // the band's lower edge: one legend entry ("likely range") stands for both edges
      { label: "Forecast low (5 %)", stroke: "rgba(88,166,255,0.7)", width: 1, value: v, class: "legend-hidden" },
      { label: "Forecast (median)", stroke: "#58a6ff", width: 2, dash: [6, 4], value: v },
      { label: "Likely range (5–95 %)", stroke: "rgba(88,166,255,0.7)", width: 1, value: v },
    ];
    if (chartQueue) out.push({ label: "Queue outside", stroke: "#d2a8ff", width: 2, value: v });
    out.push(
      { label: "Capacity", stroke: "#f85149", width: 1.5, value: v },
      { label: "Target", stroke: "#ffd33d", dash: [10, 6], width: 2, value: v },
    );
    for (const x of out.slice(1)) x.points = { show: false };
    return out;
  }

  function drawMarkers(u) {
    const marks = chartState ? chartState.marks : [];
    if (!marks.length) return;
    const ctx = u.ctx;
    const r = uPlot.pxRatio || 1;
    const { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.font = `${Math.round(12 * r)}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    ctx.textAlign = "left"; // uPlot leaves its axis alignment on the context
    const rows = [];
    for (const m of marks) {
      const x = Math.round(u.valToPos(m.t, "x", true));
      if (x < left - 1 || x > left + width + 1) continue;
      ctx.strokeStyle = m.key === "deadline" ? "#ffd33d" : "#c9d1d9";
      ctx.lineWidth = (m.key === "deadline" ? 2 : 1.5) * r;
      ctx.setLineDash([5 * r, 4 * r]);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
      const text = `${m.label} ${hm.format(new Date(m.t * 1000))}`;
      const w = ctx.measureText(text).width + 8 * r;
      // the label sits right of its line, or left when that would leave the plot; a second row if it would overlap
      let x0 = x + 4 * r;
      if (x0 + w > left + width) x0 = x - 4 * r - w;
      let row = 0;
      while (rows[row] !== undefined && rows[row] > x0) row++;
      rows[row] = x0 + w;
      const y0 = top + 4 * r + row * 18 * r;
      ctx.fillStyle = "rgba(13,17,23,0.85)";
      ctx.fillRect(x0, y0 - 2 * r, w, 17 * r);
      ctx.fillStyle = m.key === "deadline" ? "#ffd33d" : "#e6edf3";
      ctx.fillText(text, x0 + 4 * r, y0);
    }
    ctx.restore();
  }

  function yRange(u, min, max) {
    const s = chartState || {};
    let top = s.cap ? s.cap * 1.05 : 0;
    // the data uPlot has is already clipped (band at 1.3 x capacity), so max cannot run away
    top = Math.max(top, (max || 0) * 1.05, 10);
    return [0, top];
  }

  function chartSize(box) {
    const w = Math.max(240, box.clientWidth);
    return { width: w, height: Math.max(240, Math.min(460, Math.round(w * 0.42))) };
  }

  function makeChart() {
    const box = document.getElementById("chart");
    const grid = { stroke: "#30363d" };
    const opts = Object.assign(chartSize(box), {
      tzDate: (ts) => new Date(ts * 1000),
      scales: { x: { time: true }, y: { range: yRange } },
      axes: [
        { stroke: "#a8b3bf", grid, ticks: grid, values: (u, vals) => vals.map((x) => hm.format(new Date(x * 1000))) },
        { stroke: "#a8b3bf", grid, ticks: grid, size: 64, values: (u, vals) => vals.map((x) => Turnout.fmt(x)) },
      ],
      series: seriesOpts(),
      bands: [{ series: [4, 2], fill: "rgba(88,166,255,0.22)" }],
      legend: { live: false },
      hooks: { draw: [drawMarkers] },
    });
    chart = new uPlot(opts, chartData(), box);
    publishChartState();
    if (!makeChart.observed) {
      makeChart.observed = true;
      new ResizeObserver(() => {
        const size = chartSize(box);
        if (chart && Math.abs(size.width - chart.width) > 4) chart.setSize(size);
      }).observe(box);
    }
  }

  function publishChartState() {
    const box = document.getElementById("chart");
    const s = chartState;
    if (!s || !chart) return;
    box.dataset.series = chart.series.map((x) => x.label).join("|");
    box.dataset.markers = JSON.stringify(s.marks.map((m) => ({ key: m.key, t: m.t })));
    box.dataset.bandPoints = String(s.bandPoints);
    box.dataset.bandMax = s.bandMax === null ? "" : String(s.bandMax);
    box.dataset.clip = s.clip === null ? "" : String(s.clip);
    box.dataset.target = s.target === null ? "" : String(s.target);
    box.dataset.yMax = String(chart.scales.y.max);
    box.dataset.xMin = String(chart.scales.x.min);
    box.dataset.xMax = String(chart.scales.x.max);
  }

  function renderChart(d, after) {
    if (!d.now) return;
    const fcOk = !after && d.forecast.value !== null;
    pushPoint(Date.parse(d.now) / 1000, d.attendance, fcOk ? d.forecast.low : null, fcOk ? d.forecast.value : null, fcOk ? d.forecast.high : null, d.queue || 0);
    if (typeof uPlot === "undefined") return;
    const wantQueue = series.queue.some((q) => q > 0);
    if (chart && wantQueue !== chartQueue) {
      chart.destroy();
      chart = null;
    }
    chartQueue = wantQueue;
    if (!chart) makeChart();
    else {
      chart.setData(chartData());
      publishChartState();
    }
  }

  async function loadHistory() {
    try {
      const rows = await api(`/api/v1/events/${encodeURIComponent(eventId)}/history`);
      const items = Array.isArray(rows) ? rows : rows.samples || rows.items || [];
      for (const r of items) {
        pushPoint(Date.parse(r.ts) / 1000, r.attendance, r.forecast_low ?? null, r.forecast ?? null, r.forecast_high ?? null, r.queue ?? 0);
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
    const outside = (x) => (x.kind === "queue" ? 1 : 0);
    const items = d.sections.slice().sort((a, b) => outside(a) - outside(b) || a.simulated - b.simulated || a.id.localeCompare(b.id));
    const nodes = items.map((s) => {
      const ratio = s.seats ? s.occupied / s.seats : 0;
      const bg = RAMP[Math.min(RAMP.length - 1, Math.floor(ratio * RAMP.length))];
      if (s.kind === "queue")
        // people about to come in, counted outside: not seats, never "over capacity"
        return el(
          "div",
          { class: `seat-tile outside${s.stale ? " stale" : ""}`, role: "listitem", "data-section": s.id,
            title: `${s.name}: ${fmt(s.people ?? 0)} people queueing outside` },
          el("span", { class: "sid", text: s.id.replace(/^sim-/, "") }),
          el("span", { class: "occ", text: `${fmt(s.people ?? 0)} queueing` }),
        );
      const tile = el(
        "div",
        {
          class: `seat-tile${s.seats && s.people !== null && s.people > s.seats ? " over" : ""}${s.stale ? " stale" : ""}`,
          role: "listitem",
          title: `${s.name}: ${s.occupied} of ${s.seats} ${s.kind === "standing" ? "places" : "seats"} occupied${s.simulated ? " (simulated)" : ""}`,
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
          el("span", { class: "meta", text: `${ALERT_KINDS[a.kind] || a.kind}${a.state === "cleared" ? " · cleared" : ""}${a.ts ? ` · ${clock(a.ts)}` : ""}` }),
          el("span", { class: "msg", text: a.message }),
          deliveryLog(a),
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

  // the alert's notifications to organizers: one line per channel, in words
  const DELIVERY = { sent: "✓", failed: "✗", retrying: "↻", queued: "…" };
  function deliveryText(x) {
    const tries = x.attempts === 1 ? "1 try" : `${x.attempts} tries`;
    if (x.status === "sent") return `${x.target}: sent ${clock(x.at)}`;
    if (x.status === "failed") return `${x.target}: not delivered after ${tries}`;
    if (x.status === "retrying") return `${x.target}: retrying (${tries} so far)`;
    return `${x.target}: sending`;
  }
  function deliveryLog(a) {
    if (!a.deliveries.length) return null;
    return el(
      "ul",
      { class: "deliveries", "aria-label": "Sent to organizers" },
      ...a.deliveries.map((x) =>
        el(
          "li",
          { "data-status": x.status, title: x.error || "" },
          el("span", { "aria-hidden": "true", text: `${DELIVERY[x.status] || ""} ` }),
          deliveryText(x),
        ),
      ),
    );
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

  // "live" while snapshots arrive (the server sends one at least every 2 s); a dropped connection that the
  // browser re-opens at once does not flash "reconnecting", a silent or broken stream shows it after 5 s.
  let lastSnapshotAt = 0;
  function connState(state, text) {
    const conn = document.getElementById("conn");
    if (conn.dataset.state !== state) conn.dataset.state = state;
    if (conn.textContent !== text) conn.textContent = text;
  }

  function connect() {
    if (source) source.close();
    connState("connecting", "connecting");
    source = new EventSource(`/api/v1/stream?event=${encodeURIComponent(eventId)}`);
    source.addEventListener("snapshot", (e) => {
      lastSnapshotAt = Date.now();
      connState("live", "live");
      render(JSON.parse(e.data));
    });
    setInterval(() => {
      if (lastSnapshotAt && Date.now() - lastSnapshotAt > 5000) connState("connecting", "reconnecting");
    }, 1000);
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
    setReportLinks(eventId);
    const chosen = events.find((e) => e.id === eventId);
    if (chosen) useZone(chosen.timezone);
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

  // the report downloads: plain links (the sign-in cookie authenticates them)
  function setReportLinks(id) {
    for (const fmt of ["pdf", "html", "csv"]) {
      const a = document.getElementById(`report-${fmt}`);
      if (a) {
        a.href = `/api/v1/events/${encodeURIComponent(id)}/report?format=${fmt}`;
        a.setAttribute("download", `report-${id}.${fmt}`);
      }
    }
  }

  // for the browser tests: the snapshot last rendered and what the chart was given
  window.TurnoutDashboard = {
    normalize,
    render,
    lastSnapshot: () => lastRaw,
    chart: () => (chart ? { series: chart.series.map((x) => x.label), data: chart.data, state: chartState } : null),
  };
  start();
})();
