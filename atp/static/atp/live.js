/* ATP console: refresh a page's numbers in place every few seconds (no reload, no library).
 *
 * The page marks its live parts:
 *   <... id="atp-live" data-url="JSON endpoint" data-interval="ms" data-rows="tasks|workers">
 *   [data-live="key"]       text replaced by json.text[key]
 *   [data-live-html="key"]  HTML replaced by json.html[key] (rendered by the server, escaped)
 *   with data-rows, each change-list row's cells .field-NAME are replaced by
 *   json.rows[row id][NAME]; the row id is the text of its first column's link.
 * A button #atp-live-toggle pauses and resumes; the choice is remembered (localStorage).
 */
(function () {
  "use strict";
  var root = document.getElementById("atp-live");
  if (!root || !window.fetch) { return; }
  var interval = parseInt(root.getAttribute("data-interval"), 10) || 3000;
  var rowsMode = root.getAttribute("data-rows");
  var toggle = document.getElementById("atp-live-toggle");
  var key = "atp-live-paused";
  var paused = window.localStorage && localStorage.getItem(key) === "1";

  function rowIds() {
    var found = {};
    document.querySelectorAll("#result_list tbody tr").forEach(function (tr) {
      var cell = tr.querySelector("th a, td a");
      if (cell) { found[cell.textContent.trim()] = tr; }
    });
    return found;
  }

  function apply(data) {
    Object.keys(data.text || {}).forEach(function (name) {
      document.querySelectorAll('[data-live="' + name + '"]').forEach(function (el) {
        el.textContent = data.text[name];
      });
    });
    Object.keys(data.html || {}).forEach(function (name) {
      document.querySelectorAll('[data-live-html="' + name + '"]').forEach(function (el) {
        el.innerHTML = data.html[name];
      });
    });
    if (data.rows) {
      var rows = rowIds();
      Object.keys(data.rows).forEach(function (id) {
        var tr = rows[id];
        if (!tr) { return; }
        Object.keys(data.rows[id]).forEach(function (name) {
          var cell = tr.querySelector(".field-" + name);
          if (cell) { cell.innerHTML = data.rows[id][name]; }
        });
      });
    }
    root.setAttribute("data-refreshed", String(Date.now()));
  }

  function poll() {
    if (paused || document.hidden) { return; }
    var url = root.getAttribute("data-url");
    if (rowsMode) {
      var ids = Object.keys(rowIds());
      if (!ids.length) { return; }
      url += (url.indexOf("?") < 0 ? "?" : "&") + "ids=" + encodeURIComponent(ids.join(","));
    }
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) { if (data) { apply(data); } })
      .catch(function () { /* a missed poll is retried at the next tick */ });
  }

  function label() {
    if (toggle) { toggle.textContent = paused ? "Resume live updates" : "Pause live updates"; }
  }

  if (toggle) {
    toggle.addEventListener("click", function () {
      paused = !paused;
      if (window.localStorage) { localStorage.setItem(key, paused ? "1" : "0"); }
      label();
      poll();
    });
  }
  label();
  window.setInterval(poll, interval);
})();
