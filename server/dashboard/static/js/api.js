// Shared by the dashboard pages: the login token, API calls and small formatting helpers.
"use strict";

const Turnout = (() => {
  const KEY = "turnout.session";

  function session() {
    try {
      return JSON.parse(localStorage.getItem(KEY) || "null");
    } catch {
      return null;
    }
  }

  function saveSession(s) {
    localStorage.setItem(KEY, JSON.stringify(s));
    // The cookie lets EventSource (which cannot send headers) and plain links authenticate too.
    document.cookie = `turnout_token=${encodeURIComponent(s.token)}; path=/; SameSite=Strict`;
  }

  function clearSession() {
    localStorage.removeItem(KEY);
    document.cookie = "turnout_token=; path=/; max-age=0; SameSite=Strict";
  }

  function requireLogin() {
    const s = session();
    if (!s || !s.token) {
      const next = encodeURIComponent(location.pathname + location.search);
      location.replace(`/login?next=${next}`);
      return null;
    }
    return s;
  }

  async function api(path, options = {}) {
    const s = session();
    const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    if (s && s.token) headers.Authorization = `Bearer ${s.token}`;
    if (options.body && typeof options.body !== "string") {
      headers["Content-Type"] = "application/json";
      options = Object.assign({}, options, { body: JSON.stringify(options.body) });
    }
    const res = await fetch(path, Object.assign({}, options, { headers }));
    if (res.status === 401 && !path.endsWith("/auth/login")) {
      clearSession();
      requireLogin();
      throw new Error("signed out");
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = text;
    }
    if (!res.ok) {
      const detail = data && data.detail ? data.detail : text || res.statusText;
      throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return data;
  }

  const nf = new Intl.NumberFormat("en-US");
  const fmt = (n) => (n === null || n === undefined || Number.isNaN(n) ? "–" : nf.format(Math.round(n)));
  const pct = (x) => (x === null || x === undefined || Number.isNaN(x) ? "–" : `${(100 * x).toFixed(1)} %`);

  function ago(iso, now) {
    if (!iso) return "never";
    const s = Math.max(0, ((now || Date.now()) - Date.parse(iso)) / 1000);
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    return `${(s / 3600).toFixed(1)} h ago`;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function setupHeader() {
    const s = session();
    const user = document.getElementById("user");
    if (user && s) user.textContent = `${s.user || ""} (${s.role || "?"})`;
    const out = document.getElementById("logout");
    if (out)
      out.addEventListener("click", async () => {
        // revoke the token server-side (also clears the HttpOnly cookie), then forget it here
        try {
          await api("/api/v1/auth/logout", { method: "POST" });
        } catch (_err) {
          /* already invalid: nothing to revoke */
        }
        clearSession();
        location.assign("/login");
      });
  }

  // A canvas drawn at w x h CSS pixels, sharp on high-density screens: its 2-D context, cleared, in CSS pixels.
  function canvasContext(c, w, h) {
    const dpr = window.devicePixelRatio || 1;
    c.style.width = `${w}px`;
    c.style.height = `${h}px`;
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    return g;
  }

  return { session, saveSession, clearSession, requireLogin, api, fmt, pct, ago, el, setupHeader, canvasContext };
})();
