// Calibration view: request a snapshot, edit section polygons and seat counts, send the layout to the edge.
"use strict";

(() => {
  const { api, el } = Turnout;
  const session = Turnout.requireLogin();
  if (!session) return;
  Turnout.setupHeader();

  const NS = "http://www.w3.org/2000/svg";
  const state = {
    venue: null,
    camera: null,
    width: 0,
    height: 0,
    coordinates: "pixels",
    anchor: null,
    exclude: [],
    sections: [], // {id, seats, polygon: [[x,y] px], extra: {...other fields, e.g. seat_map}}
    selected: 0,
    vertex: 0,
  };

  const $ = (id) => document.getElementById(id);
  const status = (id, text, cls) => {
    $(id).textContent = text;
    $(id).className = cls || "";
  };

  // ------------------------------------------------------------------------------------- cameras
  async function loadCameras() {
    const select = $("camera-select");
    try {
      const cams = await api("/api/v1/calibration/cameras");
      select.replaceChildren(
        ...cams.map((c) =>
          el("option", { value: `${c.venue}/${c.camera}`, text: `${c.camera} (${c.venue}, ${c.state || "unknown"})` }),
        ),
      );
      const want = new URLSearchParams(location.search).get("camera");
      if (want) select.value = cams.find((c) => c.camera === want) ? `${cams.find((c) => c.camera === want).venue}/${want}` : select.value;
      if (!cams.length) status("snap-status", "No edge camera known yet.");
    } catch (err) {
      status("snap-status", `Cannot list cameras: ${err.message}`, "error");
    }
  }

  // ------------------------------------------------------------------------------------ snapshot
  async function takeSnapshot() {
    const value = $("camera-select").value;
    if (!value) return;
    const [venue, camera] = value.split("/");
    status("snap-status", "Waiting for the edge…");
    $("snapshot-btn").disabled = true;
    try {
      const snap = await api(`/api/v1/calibration/${encodeURIComponent(venue)}/${encodeURIComponent(camera)}/snapshot`, {
        method: "POST",
        body: { draw: false },
      });
      Object.assign(state, { venue, camera, width: snap.width, height: snap.height });
      const layout = snap.layout || { coordinates: "pixels", sections: [], exclude: [] };
      const sx = layout.coordinates === "normalized" ? snap.width : 1;
      const sy = layout.coordinates === "normalized" ? snap.height : 1;
      state.coordinates = layout.coordinates || "pixels";
      state.anchor = layout.anchor || null;
      state.exclude = layout.exclude || [];
      state.sections = (layout.sections || []).map((s) => {
        const { id, seats, polygon, ...extra } = s;
        return { id, seats, polygon: polygon.map(([x, y]) => [x * sx, y * sy]), extra };
      });
      state.selected = 0;
      state.vertex = 0;
      const img = $("snapshot");
      img.src = `data:image/jpeg;base64,${snap.jpeg_b64}`;
      img.alt = `Snapshot of camera ${camera} taken ${new Date(snap.ts).toLocaleTimeString()}`;
      $("stage").hidden = false;
      $("save-btn").disabled = false;
      status("snap-status", `Snapshot ${snap.width}×${snap.height} received.`, "ok");
      draw();
    } catch (err) {
      status("snap-status", `Snapshot failed: ${err.message}`, "error");
    } finally {
      $("snapshot-btn").disabled = false;
    }
  }

  // --------------------------------------------------------------------------------------- drawing
  function svg(tag, attrs) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }

  function draw() {
    const overlay = $("overlay");
    overlay.setAttribute("viewBox", `0 0 ${state.width} ${state.height}`);
    overlay.setAttribute("preserveAspectRatio", "none");
    const nodes = [];
    const r = Math.max(5, Math.round(Math.min(state.width, state.height) / 70));
    state.sections.forEach((s, i) => {
      const pts = s.polygon.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
      const poly = svg("polygon", { points: pts, class: i === state.selected ? "selected" : "", "data-section": s.id });
      poly.addEventListener("pointerdown", () => select(i, state.vertex));
      nodes.push(poly);
      for (const seat of (s.extra && s.extra.seat_map) || []) {
        const sc = ([x, y]) => (state.coordinates === "normalized" ? [x * state.width, y * state.height] : [x, y]);
        if (seat.point) {
          const [x, y] = sc(seat.point);
          nodes.push(svg("circle", { cx: x, cy: y, r: Math.max(2, r / 2), class: "seat" }));
        } else if (seat.polygon) {
          nodes.push(svg("polygon", { points: seat.polygon.map(sc).map(([x, y]) => `${x},${y}`).join(" "), class: "seat" }));
        }
      }
      const [lx, ly] = s.polygon[0];
      const label = svg("text", { x: lx + 4, y: ly + 16 });
      label.textContent = `${s.id} (${s.seats})`;
      nodes.push(label);
    });
    const sel = state.sections[state.selected];
    if (sel) {
      sel.polygon.forEach(([x, y], j) => {
        const h = svg("circle", {
          cx: x,
          cy: y,
          r,
          class: "handle",
          tabindex: "0",
          role: "button",
          "data-vertex": j,
          "aria-label": `Section ${sel.id} corner ${j + 1} at ${Math.round(x)}, ${Math.round(y)}`,
        });
        h.addEventListener("pointerdown", (e) => startDrag(e, j));
        h.addEventListener("keydown", (e) => nudge(e, j));
        h.addEventListener("focus", () => (state.vertex = j));
        nodes.push(h);
      });
    }
    overlay.replaceChildren(...nodes);
    renderList();
  }

  function toImage(e) {
    const box = $("overlay").getBoundingClientRect();
    const x = ((e.clientX - box.left) / box.width) * state.width;
    const y = ((e.clientY - box.top) / box.height) * state.height;
    return [Math.max(0, Math.min(state.width, x)), Math.max(0, Math.min(state.height, y))];
  }

  function startDrag(e, j) {
    e.preventDefault();
    e.stopPropagation();
    state.vertex = j;
    const target = e.target;
    target.setPointerCapture(e.pointerId);
    const move = (ev) => {
      state.sections[state.selected].polygon[j] = toImage(ev);
      const [x, y] = state.sections[state.selected].polygon[j];
      target.setAttribute("cx", x);
      target.setAttribute("cy", y);
      const poly = $("overlay").querySelector(`polygon[data-section="${CSS.escape(state.sections[state.selected].id)}"]`);
      poly.setAttribute("points", state.sections[state.selected].polygon.map(([a, b]) => `${a},${b}`).join(" "));
    };
    const up = () => {
      target.removeEventListener("pointermove", move);
      target.removeEventListener("pointerup", up);
      draw();
      focusVertex(j);
    };
    target.addEventListener("pointermove", move);
    target.addEventListener("pointerup", up);
  }

  function nudge(e, j) {
    const step = e.shiftKey ? 10 : 1;
    const d = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] }[e.key];
    if (!d) return;
    e.preventDefault();
    const p = state.sections[state.selected].polygon[j];
    p[0] = Math.max(0, Math.min(state.width, p[0] + d[0]));
    p[1] = Math.max(0, Math.min(state.height, p[1] + d[1]));
    draw();
    focusVertex(j);
  }

  function focusVertex(j) {
    const h = $("overlay").querySelector(`circle[data-vertex="${j}"]`);
    if (h) h.focus();
  }

  function select(i, vertex = 0) {
    state.selected = i;
    state.vertex = Math.min(vertex, (state.sections[i] ? state.sections[i].polygon.length : 1) - 1);
    draw();
  }

  // ----------------------------------------------------------------------------------------- list
  function renderList() {
    const items = state.sections.map((s, i) =>
      el(
        "li",
        { class: i === state.selected ? "selected" : "", "data-section": s.id },
        el(
          "div",
          { class: "row" },
          el("button", { type: "button", "aria-pressed": i === state.selected ? "true" : "false", text: `Edit ${s.id}`, onclick: () => select(i) }),
          el("button", { type: "button", "aria-label": `Delete section ${s.id}`, text: "Delete", onclick: () => removeSection(i) }),
        ),
        el("label", { for: `sid-${i}`, text: "Section id" }),
        el("input", { id: `sid-${i}`, value: s.id, onchange: (e) => ((s.id = e.target.value.trim()), draw()) }),
        el("label", { for: `seats-${i}`, text: "Seats" }),
        el("input", { id: `seats-${i}`, type: "number", min: "0", value: String(s.seats), onchange: (e) => ((s.seats = Number(e.target.value)), draw()) }),
      ),
    );
    $("section-list").replaceChildren(...items);
  }

  function addSection() {
    const w = state.width, h = state.height;
    let n = state.sections.length + 1;
    while (state.sections.some((s) => s.id === `section-${n}`)) n++;
    state.sections.push({
      id: `section-${n}`,
      seats: 10,
      polygon: [[w * 0.35, h * 0.35], [w * 0.65, h * 0.35], [w * 0.65, h * 0.65], [w * 0.35, h * 0.65]],
      extra: {},
    });
    select(state.sections.length - 1);
  }

  function removeSection(i) {
    state.sections.splice(i, 1);
    select(Math.max(0, Math.min(i, state.sections.length - 1)));
  }

  function addPoint() {
    const s = state.sections[state.selected];
    if (!s) return;
    const j = state.vertex;
    const a = s.polygon[j], b = s.polygon[(j + 1) % s.polygon.length];
    s.polygon.splice(j + 1, 0, [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2]);
    state.vertex = j + 1;
    draw();
    focusVertex(j + 1);
  }

  function removePoint() {
    const s = state.sections[state.selected];
    if (!s || s.polygon.length <= 3) {
      status("save-status", "A section needs at least 3 corners.", "error");
      return;
    }
    s.polygon.splice(state.vertex, 1);
    state.vertex = Math.max(0, state.vertex - 1);
    draw();
  }

  // ------------------------------------------------------------------------------------------ save
  async function save() {
    const sx = state.coordinates === "normalized" ? state.width : 1;
    const sy = state.coordinates === "normalized" ? state.height : 1;
    const round = (v) => (state.coordinates === "normalized" ? Math.round(v * 10000) / 10000 : Math.round(v * 10) / 10);
    const body = {
      coordinates: state.coordinates,
      anchor: state.anchor,
      exclude: state.exclude,
      sections: state.sections.map((s) => ({
        ...s.extra,
        id: s.id,
        seats: s.seats,
        polygon: s.polygon.map(([x, y]) => [round(x / sx), round(y / sy)]),
      })),
    };
    status("save-status", "Sending to the edge…");
    $("save-errors").replaceChildren();
    $("save-btn").disabled = true;
    try {
      const res = await api(`/api/v1/calibration/${encodeURIComponent(state.venue)}/${encodeURIComponent(state.camera)}/layout`, {
        method: "PUT",
        body,
      });
      if (res.ok) {
        status("save-status", "Layout applied by the edge.", "ok");
      } else {
        status("save-status", "The edge refused the layout:", "error");
        $("save-errors").replaceChildren(...(res.errors || []).map((t) => el("li", { text: t })));
      }
    } catch (err) {
      status("save-status", `Sending failed: ${err.message}`, "error");
    } finally {
      $("save-btn").disabled = false;
    }
  }

  $("snapshot-btn").addEventListener("click", takeSnapshot);
  $("add-section").addEventListener("click", addSection);
  $("add-point").addEventListener("click", addPoint);
  $("remove-point").addEventListener("click", removePoint);
  $("save-btn").addEventListener("click", save);
  window.TurnoutCalibration = { state };
  loadCameras();
})();
