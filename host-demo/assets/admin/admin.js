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
})();
