// UDP Lab page behaviour that htmx does not cover. No inline script anywhere: the page's
// Content-Security-Policy allows scripts from this origin only.
(() => {
  "use strict";

  // Keep the event log bounded: drop the oldest rows beyond data-keep.
  function trimLog(rows) {
    const keep = Number(rows.dataset.keep || 200);
    while (rows.rows.length > keep) rows.deleteRow(rows.rows.length - 1);
  }

  function setStatus(text, live) {
    const status = document.getElementById("conn-status");
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("live", live);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const rows = document.getElementById("log-rows");
    if (rows) {
      new MutationObserver(() => trimLog(rows)).observe(rows, { childList: true });
    }
    // A closed socket means the live parts are stale until htmx reconnects; the server
    // sends a full snapshot on every connect, which sets the status back to "live".
    document.body.addEventListener("htmx:ws:close", () => setStatus("disconnected, reconnecting…", false));
    document.body.addEventListener("htmx:ws:error", () => setStatus("connection error, retrying…", false));
  });
})();
