// The admin page's live parts: "Test connection" on the mailbox page (the check's steps as
// server-sent events into ol#check-steps) and the queue page's preview (div#preview redrawn as
// the form changes). Every text is set with textContent; the preview's HTML is the server's
// template, escaped there. POSTs carry the session's CSRF token in X-CSRF-Token.
(function () {
  "use strict";

  function meta(name) {
    var m = document.querySelector('meta[name="' + name + '"]');
    return m ? m.getAttribute("content") : "";
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  // ---- Test connection ----
  function setupCheck() {
    var button = document.getElementById("test-connection");
    var list = document.getElementById("check-steps");
    var result = document.getElementById("check-result");
    if (!button || !list) return;
    var words = { running: list.dataset.running, ok: list.dataset.ok, failed: list.dataset.failed };

    // One line per step; `current` is the line of the step in progress (maybe not named yet).
    function fill(li, ev) {
      li.textContent = "";
      li.dataset.step = ev.step || "";
      li.dataset.status = ev.status;
      li.appendChild(el("span", "step-name", ev.label || ev.step));
      li.appendChild(el("span", "step-status", words[ev.status] || ev.status));
      if (ev.ms !== undefined && ev.status !== "running") li.appendChild(el("span", "step-ms", ev.ms + " ms"));
      if (ev.detail) li.appendChild(el("span", "step-detail", ev.detail));
      if (ev.status === "failed") {
        if (ev.error) li.appendChild(el("p", "step-error", ev.error));
        if (ev.cause) {
          var c = el("p", "step-cause");
          c.appendChild(el("strong", null, ev.cause_label + " "));
          c.appendChild(document.createTextNode(ev.cause));
          li.appendChild(c);
        }
        if (ev.action) {
          var a = el("p", "step-action");
          a.appendChild(el("strong", null, ev.action_label + " "));
          a.appendChild(document.createTextNode(ev.action));
          li.appendChild(a);
        }
      }
    }

    button.addEventListener("click", function () {
      button.disabled = true;
      list.textContent = "";
      if (result) result.textContent = "";
      var current = null;
      function waiting() {
        current = el("li");
        fill(current, { step: "", status: "running", label: list.dataset.waiting });
        list.appendChild(current);
      }
      function finish(text) {
        if (current && current.dataset.status === "running") list.removeChild(current);
        current = null;
        if (result) result.textContent = text || "";
        button.disabled = false;
      }
      fetch(button.dataset.start, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": meta("csrf-token") },
      })
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (start) {
          var source = new EventSource(start.stream);
          source.addEventListener("step", function (m) {
            var ev = JSON.parse(m.data);
            if (!current) {
              current = el("li");
              list.appendChild(current);
            }
            fill(current, ev);
            if (ev.status !== "running") {
              current = null;
              if (ev.status === "ok") waiting();
            }
          });
          source.addEventListener("done", function (m) {
            source.close();
            var ev = JSON.parse(m.data);
            finish(ev.summary + (ev.error ? " " + ev.error : ""));
            if (result) result.dataset.passed = ev.passed ? "true" : "false";
          });
          source.onerror = function () {
            source.close();
            finish(list.dataset.failed);
          };
        })
        .catch(function (e) {
          finish(String(e));
        });
    });
  }

  // ---- Queue preview ----
  function setupPreview() {
    var form = document.getElementById("queue-form");
    var preview = document.getElementById("preview");
    if (!form || !preview || !window.URLSearchParams) return;
    var timer = null;
    var seq = 0;
    function refresh() {
      var mine = ++seq;
      var body = new URLSearchParams(new FormData(form));
      body.delete("csrf");
      fetch(form.dataset.preview, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": meta("csrf-token"), "Content-Type": "application/x-www-form-urlencoded" },
        body: body.toString(),
      })
        .then(function (r) {
          return r.json();
        })
        .then(function (j) {
          if (mine !== seq) return; // a later change is on its way
          if (j.html !== undefined) {
            preview.innerHTML = j.html; // the server's template, every value escaped there
          } else if (j.errors) {
            preview.textContent = "";
            j.errors.forEach(function (e) {
              preview.appendChild(el("p", "error", e));
            });
          }
          preview.dataset.updated = String(mine);
        });
    }
    function soon() {
      if (timer) clearTimeout(timer);
      timer = setTimeout(refresh, 250);
    }
    form.addEventListener("change", soon);
    form.addEventListener("input", soon);
  }

  function start() {
    setupCheck();
    setupPreview();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
