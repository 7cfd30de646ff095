// Sign-in: POST /api/v1/auth/login, keep the token (localStorage + cookie), go back where the user came from.
"use strict";

(() => {
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    const username = form.username.value.trim();
    const password = form.password.value;
    if (!username || !password) {
      error.textContent = "Enter your user name and password.";
      return;
    }
    try {
      const res = await Turnout.api("/api/v1/auth/login", {
        method: "POST",
        body: { username, name: username, password },
      });
      const token = res.token || res.access_token;
      if (!token) throw new Error("the server sent no token");
      Turnout.saveSession({ token, user: res.user || res.name || username, role: res.role || "viewer" });
      const next = new URLSearchParams(location.search).get("next");
      // same-site paths only: "//host" and "/\host" (browsers read a backslash as "/") would leave the site
      const local = next && next.startsWith("/") && !next.startsWith("//") && !next.includes("\\");
      location.replace(local ? next : "/");
    } catch (err) {
      error.textContent = `Sign-in failed: ${err.message}`;
      form.password.select();
    }
  });
})();
