// The seating map drawn from the venue's chart (issue 12): every seat at its place on the plan, coloured
// occupied / empty / unseen from GET /api/v1/venues/{venue}/chart/state. Without a chart the dashboard keeps
// its section tiles (this module then hides itself).
"use strict";

const TurnoutSeatChart = (() => {
  const { api, fmt, canvasContext } = Turnout;
  // occupied, empty (a live camera sees it free), unseen (no live camera sees it): distinct in lightness too
  const COLORS = { o: "#ff7b5c", e: "#4fb3d9", u: "#3a4452" };
  const REFRESH_MS = 2000;
  let venue = null;
  let geo = null;
  let state = { states: "", occupied: 0, empty: 0, unseen: 0, cameras: [] };
  let view = null; // {scale, ox, oy, r, w, h}
  let lastFetch = 0;
  let fetching = false;

  const canvas = () => document.getElementById("chartmap");

  // d: the dashboard's normalised snapshot (venue under d.event.venue) or the raw one (d.venue_id)
  async function onSnapshot(d) {
    const id = d && ((d.event && d.event.venue) || d.venue_id);
    if (!id) return;
    if (venue !== id) {
      venue = id;
      geo = null;
      await load();
    }
    if (geo && !fetching && Date.now() - lastFetch > REFRESH_MS) await refreshState();
  }

  async function load() {
    try {
      geo = await api(`/api/v1/venues/${encodeURIComponent(venue)}/chart/seats`);
    } catch (_err) {
      geo = null; // no chart for this venue: the tiles stay
    }
    show(Boolean(geo && geo.x.length));
    if (geo) {
      draw();
      await refreshState();
    }
  }

  function show(on) {
    const panel = document.getElementById("map-panel");
    panel.classList.toggle("has-chart", on);
    for (const id of ["seatmap", "tile-legend"]) document.getElementById(id).hidden = on;
    for (const id of ["chartmap", "chart-legend"]) document.getElementById(id).hidden = !on;
  }

  async function refreshState() {
    fetching = true;
    try {
      state = await api(`/api/v1/venues/${encodeURIComponent(venue)}/chart/state`);
      lastFetch = Date.now();
      draw();
    } catch (err) {
      console.info("seat states not available:", err.message);
    } finally {
      fetching = false;
    }
  }

  // a typical distance between neighbouring seats of one row (chart units), for the dot size
  function spacing() {
    const d = [];
    for (let i = 1; i < geo.x.length && d.length < 2000; i++)
      if (geo.section[i] === geo.section[i - 1] && geo.row[i] === geo.row[i - 1])
        d.push(Math.hypot(geo.x[i] - geo.x[i - 1], geo.y[i] - geo.y[i - 1]));
    d.sort((a, b) => a - b);
    const [x0, y0, x1, y1] = geo.bounds;
    return d.length ? d[d.length >> 1] : Math.sqrt(((x1 - x0 || 1) * (y1 - y0 || 1)) / geo.x.length);
  }

  function layout(c) {
    const [x0, y0, x1, y1] = geo.bounds;
    const gap = spacing();
    const bw = x1 - x0 + 2 * gap;
    const bh = y1 - y0 + 2 * gap;
    const w = c.parentElement.clientWidth;
    const h = Math.max(160, Math.min(window.innerHeight * 0.7, 620, (w * bh) / bw));
    const scale = Math.min(w / bw, h / bh);
    return {
      w,
      h,
      scale,
      ox: (w - (x1 - x0) * scale) / 2 - x0 * scale,
      oy: (h - (y1 - y0) * scale) / 2 - y0 * scale,
      r: Math.max(0.8, Math.min(9, 0.42 * gap * scale)),
    };
  }

  function draw() {
    const c = canvas();
    if (!geo || !c || c.hidden) return;
    view = layout(c);
    const g = canvasContext(c, view.w, view.h);
    const px = (x) => view.ox + x * view.scale;
    const py = (y) => view.oy + y * view.scale;
    g.strokeStyle = "#6e7681";
    g.lineWidth = 1;
    for (const poly of Object.values(geo.polygons || {})) {
      g.beginPath();
      poly.forEach(([x, y], i) => (i ? g.lineTo(px(x), py(y)) : g.moveTo(px(x), py(y))));
      g.closePath();
      g.stroke();
    }
    const states = state.states.length === geo.x.length ? state.states : "";
    for (const key of ["u", "e", "o"]) {
      g.fillStyle = COLORS[key];
      g.beginPath();
      for (let i = 0; i < geo.x.length; i++) {
        if ((states[i] || "u") !== key) continue;
        g.moveTo(px(geo.x[i]) + view.r, py(geo.y[i]));
        g.arc(px(geo.x[i]), py(geo.y[i]), view.r, 0, 2 * Math.PI);
      }
      g.fill();
    }
    labels(g, px, py);
    const n = geo.x.length;
    c.setAttribute(
      "aria-label",
      `Seating chart of ${fmt(n)} seats: ${fmt(state.occupied)} occupied, ${fmt(state.empty)} empty, ` +
        `${fmt(state.unseen)} not seen by a live camera`,
    );
    document.getElementById("chart-occupied").textContent = fmt(state.occupied);
    document.getElementById("chart-empty").textContent = fmt(state.empty);
    document.getElementById("chart-unseen").textContent = fmt(state.unseen);
  }

  // section names at the middle of their seats, outlined so that they read on any seat colour
  function labels(g, px, py) {
    const sums = geo.sections.map(() => [0, 0, 0]);
    for (let i = 0; i < geo.x.length; i++) {
      const s = sums[geo.section[i]];
      s[0] += geo.x[i];
      s[1] += geo.y[i];
      s[2] += 1;
    }
    g.font = "600 12px system-ui, sans-serif";
    g.textAlign = "center";
    g.textBaseline = "middle";
    g.lineWidth = 3;
    g.strokeStyle = "#0d1117";
    g.fillStyle = "#ffffff";
    geo.sections.forEach((name, k) => {
      const [sx, sy, n] = sums[k];
      if (!n) return;
      g.strokeText(name, px(sx / n), py(sy / n));
      g.fillText(name, px(sx / n), py(sy / n));
    });
  }

  // the seat under the pointer, as a tooltip: "Section 101, row C, seat 5: occupied"
  function hover(ev) {
    if (!geo || !view) return;
    const rect = canvas().getBoundingClientRect();
    const x = (ev.clientX - rect.left - view.ox) / view.scale;
    const y = (ev.clientY - rect.top - view.oy) / view.scale;
    let best = -1;
    let bestD = ((view.r + 2) / view.scale) ** 2;
    for (let i = 0; i < geo.x.length; i++) {
      const d = (geo.x[i] - x) ** 2 + (geo.y[i] - y) ** 2;
      if (d < bestD) [best, bestD] = [i, d];
    }
    const words = { o: "occupied", e: "empty", u: "not seen by a live camera" };
    canvas().title =
      best < 0
        ? ""
        : `Section ${geo.sections[geo.section[best]]}, row ${geo.row[best]}, seat ${geo.seat[best]}: ` +
          words[state.states[best] || "u"];
  }

  // where seat i is drawn (CSS pixels inside the canvas), for the browser tests
  function seatAt(i) {
    return view && geo ? [view.ox + geo.x[i] * view.scale, view.oy + geo.y[i] * view.scale] : null;
  }

  window.addEventListener("resize", () => draw());
  canvas()?.addEventListener("mousemove", hover);

  return { onSnapshot, seatAt, state: () => state, loaded: () => Boolean(geo), colors: COLORS };
})();
window.TurnoutSeatChart = TurnoutSeatChart; // dashboard.js and the browser tests find it here
