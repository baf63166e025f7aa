// mailplug admin page: progressive enhancement only; every page works without it.
// No inline script anywhere (CSP script-src 'self').
"use strict";
(function () {
  function meta(name) {
    var m = document.querySelector('meta[name="' + name + '"]');
    return m ? m.getAttribute("content") : "";
  }
  window.mailplugAdmin = { csrf: meta("csrf-token"), base: meta("admin-base") };

  // The overview refreshes itself every 5 seconds (the refresh link does the same by hand).
  var live = document.getElementById("overview-live");
  if (live) {
    setInterval(function () {
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (text) {
          if (!text) return;
          var doc = new DOMParser().parseFromString(text, "text/html");
          var fresh = doc.getElementById("overview-live");
          var asOf = doc.getElementById("as-of");
          if (fresh) live.replaceChildren.apply(live, Array.prototype.slice.call(fresh.childNodes));
          if (asOf) document.getElementById("as-of").textContent = asOf.textContent;
        })
        .catch(function () {});
    }, 5000);
  }

  // The mail-server form: presets, discovery, the password row for Basic only, and the
  // findings of the settings as the admin types (the same check as `mailplug presets --config`).
  var form = document.getElementById("server-form");
  if (!form) return;
  var base = window.mailplugAdmin.base, csrf = window.mailplugAdmin.csrf;
  function el(id) { return document.getElementById(id); }
  function post(path, body) {
    return fetch(base + path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body)
    }).then(function (r) { return r.ok ? r.json() : null; });
  }
  var presets = [];
  var nojs = el("findings-nojs");
  if (nojs) nojs.hidden = true;

  function authChanged() {
    var oauth = el("auth").value === "oauth2";
    el("password-row").hidden = oauth;
    el("password").required = false;
    el("oauth-row").hidden = !oauth;
  }
  function protocolChanged() {
    el("address-row").hidden = el("protocol").value === "smtp";
  }
  function fill(server, auth, username) {
    if (!server) return;
    el("host").value = server.host;
    el("port").value = server.port;
    el("tls").checked = !!server.tls;
    if (auth) el("auth").value = auth;
    if (username !== undefined && username !== null && username !== "") el("username").value = username;
    authChanged();
  }
  function presetById(id) {
    for (var i = 0; i < presets.length; i++) if (presets[i].id === id) return presets[i];
    return null;
  }
  function usernameFor(p) {
    var addr = el("address").value || el("discover-email").value || "";
    if (!addr) return "";
    return p.username === "local-part" ? addr.split("@")[0] : addr;
  }
  function applyPreset() {
    var p = presetById(el("preset").value);
    var notes = el("preset-notes");
    notes.replaceChildren();
    notes.hidden = true;
    if (!p) return;
    var proto = el("protocol").value;
    var server = p[proto] || p.imap || p.pop3;
    if (!p[proto]) el("protocol").value = p.imap ? "imap" : (p.pop3 ? "pop3" : "smtp");
    fill(server, p.auth, usernameFor(p));
    var lang = document.documentElement.lang === "de" ? p.notes_de : p.notes_en;
    (lang || []).forEach(function (n) { var li = document.createElement("li"); li.textContent = n; notes.appendChild(li); });
    notes.hidden = !(lang && lang.length);
    protocolChanged();
    scheduleFindings();
  }

  var timer = null, seq = 0;
  function scheduleFindings() {
    if (timer) clearTimeout(timer);
    timer = setTimeout(runFindings, 250);
  }
  function runFindings() {
    var mine = ++seq;
    var body = {
      protocol: el("protocol").value, host: el("host").value, port: el("port").value,
      tls: el("tls").checked, auth: el("auth").value, username: el("username").value,
      password: el("auth").value === "oauth2" ? "" : el("password").value,
      id: form.getAttribute("data-id") || "", smtp: form.getAttribute("data-smtp") === "1"
    };
    if (!body.host) return;
    post("/api/findings", body).then(function (r) {
      if (!r || mine !== seq) return;
      var ul = el("findings");
      ul.replaceChildren();
      r.findings.forEach(function (f) {
        var li = document.createElement("li");
        li.setAttribute("data-code", f.code);
        li.setAttribute("data-severity", f.severity);
        li.textContent = ul.getAttribute("data-" + f.severity) + " (" + f.code + "): " + f.text;
        ul.appendChild(li);
      });
      if (!r.findings.length) {
        var none = document.createElement("li");
        none.setAttribute("data-code", "none");
        none.setAttribute("data-severity", "none");
        none.textContent = ul.getAttribute("data-none");
        ul.appendChild(none);
      }
    }).catch(function () {});
  }

  fetch(base + "/api/presets", { credentials: "same-origin" })
    .then(function (r) { return r.ok ? r.json() : { presets: [] }; })
    .then(function (r) { presets = r.presets || []; })
    .catch(function () {});
  el("preset").addEventListener("change", applyPreset);
  el("protocol").addEventListener("change", function () {
    protocolChanged();
    if (el("preset").value) applyPreset(); else scheduleFindings();
  });
  el("auth").addEventListener("change", function () { authChanged(); scheduleFindings(); });
  ["host", "port", "username", "password"].forEach(function (id) { el(id).addEventListener("input", scheduleFindings); });
  el("tls").addEventListener("change", scheduleFindings);
  el("discover").addEventListener("click", function () {
    var out = el("discover-result");
    var email = el("discover-email").value;
    post("/api/discover", { email: email }).then(function (r) {
      if (!r) return;
      out.textContent = r.message || "";
      if (!r.found) return;
      var proto = el("protocol").value;
      var pick = null;
      r.candidates.forEach(function (c) { if (!pick && c.protocol === proto) pick = c; });
      if (!pick) pick = r.candidates[0];
      el("protocol").value = pick.protocol;
      if (pick.protocol !== "smtp" && !el("address").value) el("address").value = email;
      if (r.preset && presetById(r.preset)) el("preset").value = r.preset;
      fill(pick, r.auth, pick.username);
      protocolChanged();
      scheduleFindings();
    }).catch(function () {});
  });
  authChanged();
  protocolChanged();
  var errors = el("form-errors");
  if (errors) errors.focus();
})();
