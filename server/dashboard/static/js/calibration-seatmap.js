// Calibration view, seats from the venue's chart (issue 12): pick 4 or more point pairs - a seat on the plan,
// then the same place on the snapshot - and let the server project every chart seat into this camera and send
// them to the edge as its layout (PUT /api/v1/calibration/{venue}/{camera}/seatmap).
"use strict";

(() => {
  const { api, el, canvasContext } = Turnout;
  const NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let geo = null; // the chart (GET /venues/{venue}/chart/seats)
  let venue = null;
  let pending = null; // plan point waiting for its image point: {x, y, label}
  const pairs = []; // {plan: [x, y], image: [u, v], label}
  let view = null;

  function say(text, cls) {
    $("pairs-status").textContent = text;
    $("pairs-status").className = cls || "";
  }

  // a new snapshot arrived (calibration.js shows it): load that venue's chart, if it has one
  new MutationObserver(() => onSnapshot()).observe($("stage"), { attributes: true, attributeFilter: ["hidden"] });
  $("snapshot").addEventListener("load", () => onSnapshot());

  async function onSnapshot() {
    if ($("stage").hidden) return;
    const value = $("camera-select").value;
    if (!value) return;
    const v = value.split("/")[0];
    if (v !== venue) {
      venue = v;
      pairs.length = 0;
      pending = null;
      try {
        geo = await api(`/api/v1/venues/${encodeURIComponent(venue)}/chart/seats`);
      } catch (_err) {
        geo = null;
      }
    }
    $("pairs-panel").hidden = !geo;
    if (geo) drawAll();
  }

  // ------------------------------------------------------------------------------------- the plan
  function layout(c) {
    const [x0, y0, x1, y1] = geo.bounds;
    const pad = 0.04 * Math.max(x1 - x0, y1 - y0, 1);
    const w = c.parentElement.clientWidth;
    const bw = x1 - x0 + 2 * pad;
    const bh = y1 - y0 + 2 * pad;
    const h = Math.max(140, Math.min(420, (w * bh) / bw));
    const scale = Math.min(w / bw, h / bh);
    return { w, h, scale, ox: (w - (x1 - x0) * scale) / 2 - x0 * scale, oy: (h - (y1 - y0) * scale) / 2 - y0 * scale };
  }

  function drawPlan() {
    const c = $("plan");
    view = layout(c);
    const g = canvasContext(c, view.w, view.h);
    const r = Math.max(1, Math.min(4, view.scale * 0.35));
    g.fillStyle = "#4fb3d9";
    g.beginPath();
    for (let i = 0; i < geo.x.length; i++) {
      const x = view.ox + geo.x[i] * view.scale;
      const y = view.oy + geo.y[i] * view.scale;
      g.moveTo(x + r, y);
      g.arc(x, y, r, 0, 2 * Math.PI);
    }
    g.fill();
    const marks = pairs.map((p, k) => [p.plan, String(k + 1)]);
    if (pending) marks.push([[pending.x, pending.y], "?"]);
    g.font = "700 13px system-ui, sans-serif";
    g.textAlign = "center";
    g.textBaseline = "middle";
    for (const [[x, y], text] of marks) {
      const px = view.ox + x * view.scale;
      const py = view.oy + y * view.scale;
      g.fillStyle = "#ffd33d";
      g.beginPath();
      g.arc(px, py, 9, 0, 2 * Math.PI);
      g.fill();
      g.fillStyle = "#000";
      g.fillText(text, px, py);
    }
  }

  function pickSeat(ev) {
    const rect = $("plan").getBoundingClientRect();
    const x = (ev.clientX - rect.left - view.ox) / view.scale;
    const y = (ev.clientY - rect.top - view.oy) / view.scale;
    let best = -1;
    let bestD = Infinity;
    for (let i = 0; i < geo.x.length; i++) {
      const d = (geo.x[i] - x) ** 2 + (geo.y[i] - y) ** 2;
      if (d < bestD) [best, bestD] = [i, d];
    }
    if (best < 0) return;
    const label = `${geo.sections[geo.section[best]]} ${geo.row[best]}-${geo.seat[best]}`;
    pending = { x: geo.x[best], y: geo.y[best], label };
    say(`Seat ${label} chosen: now click the same seat on the snapshot.`);
    drawAll();
  }

  // ---------------------------------------------------------------------------------- the snapshot
  function pickImage(ev) {
    if (!pending) return; // not picking: calibration.js edits the sections as usual
    ev.preventDefault();
    ev.stopPropagation();
    const img = $("snapshot");
    const rect = img.getBoundingClientRect();
    const u = ((ev.clientX - rect.left) / rect.width) * img.naturalWidth;
    const v = ((ev.clientY - rect.top) / rect.height) * img.naturalHeight;
    pairs.push({ plan: [pending.x, pending.y], image: [Math.round(u * 10) / 10, Math.round(v * 10) / 10], label: pending.label });
    pending = null;
    say(pairs.length < 4 ? `${pairs.length} pair(s): ${4 - pairs.length} more needed.` : `${pairs.length} pairs: ready.`);
    drawAll();
  }

  function drawMarks() {
    const img = $("snapshot");
    const svg = $("pair-overlay");
    svg.setAttribute("viewBox", `0 0 ${img.naturalWidth || 1} ${img.naturalHeight || 1}`);
    const r = Math.max(6, Math.round((img.naturalWidth || 640) / 90));
    const nodes = [];
    pairs.forEach((p, k) => {
      const [u, v] = p.image;
      const c = document.createElementNS(NS, "circle");
      Object.entries({ cx: u, cy: v, r, class: "pair" }).forEach(([a, b]) => c.setAttribute(a, b));
      const t = document.createElementNS(NS, "text");
      Object.entries({ x: u, y: v, "text-anchor": "middle", "dominant-baseline": "central", class: "pair" }).forEach(
        ([a, b]) => t.setAttribute(a, b),
      );
      t.textContent = String(k + 1);
      nodes.push(c, t);
    });
    svg.replaceChildren(...nodes);
  }

  function drawList() {
    $("pair-list").replaceChildren(
      ...pairs.map((p, k) =>
        el(
          "li",
          {},
          `${k + 1}. seat ${p.label} → (${Math.round(p.image[0])}, ${Math.round(p.image[1])}) `,
          el("button", {
            type: "button",
            text: "Remove",
            "aria-label": `Remove pair ${k + 1}`,
            onclick: () => {
              pairs.splice(k, 1);
              drawAll();
            },
          }),
        ),
      ),
    );
    $("pairs-send").disabled = pairs.length < 4;
  }

  function drawAll() {
    if (!geo) return;
    drawPlan();
    drawMarks();
    drawList();
  }

  async function send() {
    const [v, camera] = $("camera-select").value.split("/");
    const img = $("snapshot");
    $("pairs-send").disabled = true;
    say("Projecting the chart and waiting for the edge…");
    try {
      const res = await api(`/api/v1/calibration/${encodeURIComponent(v)}/${encodeURIComponent(camera)}/seatmap`, {
        method: "PUT",
        body: { frame: [img.naturalWidth, img.naturalHeight], pairs: pairs.map(({ plan, image }) => ({ plan, image })) },
      });
      const why = Object.entries(res.unseen_by_reason || {})
        .map(([k, n]) => `${n} ${k.replace("_", " ")}`)
        .join(", ");
      if (res.ok) {
        say(`Applied by the edge: ${res.seen} seats seen${why ? `, unseen: ${why}` : ""}.` +
          (res.warnings.length ? ` ${res.warnings.join(" ")}` : ""), "ok");
        $("snapshot-btn").click(); // show the new seats over a fresh image
      } else {
        say(`Refused by the edge: ${res.errors.join("; ")}`, "error");
      }
    } catch (err) {
      say(`Not sent: ${err.message}`, "error");
    } finally {
      $("pairs-send").disabled = pairs.length < 4;
    }
  }

  $("plan").addEventListener("click", pickSeat);
  $("stage").addEventListener("pointerdown", pickImage, true);
  $("pairs-clear").addEventListener("click", () => {
    pairs.length = 0;
    pending = null;
    say("");
    drawAll();
  });
  $("pairs-send").addEventListener("click", send);
  window.addEventListener("resize", () => drawAll());
  window.TurnoutPairs = { pairs: () => pairs.map((p) => ({ ...p })), pending: () => pending, view: () => view };
})();
