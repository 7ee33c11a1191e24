// UDP Lab page behaviour that htmx does not cover. No inline script anywhere: the page's
// Content-Security-Policy allows scripts from this origin only.
(() => {
  "use strict";

  // Keep the event log bounded: each message's rows are one <tbody> (a batch) under the
  // header, newest first; past data-keep rows, the older batches go, all in one range, and
  // the oldest kept batch loses its last rows (a busy flush brings 50 rows: 50 deleteRow calls
  // were 50 DOM mutations a flush).
  function trimLog(log) {
    let left = Number(log.dataset.keep || 200);
    for (const batch of log.tBodies) {
      if (batch.rows.length < left) { left -= batch.rows.length; continue; }
      const range = document.createRange();
      if (left > 0 && batch.rows.length > left) range.setStartBefore(batch.rows[left]);
      else range.setStartAfter(batch);
      range.setEndAfter(log.lastElementChild);
      if (!range.collapsed) range.deleteContents();
      return;
    }
  }

  function setStatus(text, live) {
    const status = document.getElementById("conn-status");
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("live", live);
  }

  // Presentation mode: large type and high contrast for a projector; remembered per browser.
  function setPresenting(on) {
    document.body.classList.toggle("present", on);
    document.documentElement.classList.toggle("present", on);  // rem sizes follow the root
    const toggle = document.getElementById("present-toggle");
    if (toggle) toggle.setAttribute("aria-pressed", String(on));
    try { localStorage.setItem("udplab-present", on ? "1" : "0"); } catch (e) { /* private mode */ }
  }

  function click(selector) {
    const element = document.querySelector(selector);
    if (element) element.click();
    return Boolean(element);
  }

  // The newest match: cards are appended, so the last one is the worker just started.
  function clickNewest(selector) {
    const all = document.querySelectorAll(selector);
    if (all.length) all[all.length - 1].click();
    return all.length > 0;
  }

  // Keyboard shortcuts, for a teacher at a projector: P presentation, N next recipe step,
  // S pause or resume the newest running server, C clear ended workers and the log.
  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target && (target.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName))) return;
    const key = event.key.toLowerCase();
    // The read-only viewer may only change how the page looks.
    if (document.body.classList.contains("viewer") && key !== "p") return;
    if (key === "p") setPresenting(!document.body.classList.contains("present"));
    else if (key === "n") click("#recipe-next");
    else if (key === "s") clickNewest(".card.kind-server button.pause:enabled, .card.kind-server button.resume:enabled");
    else if (key === "c") {
      click("#clear-ended");
      const log = document.getElementById("log-rows");
      if (log) Array.from(log.tBodies).forEach((batch) => batch.remove());
    } else return;
    event.preventDefault();
  }

  // The machine picker (with --nats): a form's host list offers the picked machine's
  // addresses; the pickers offer every machine the Machines panel lists (redrawn live).
  function pickHosts(select) {
    const list = select.value ? "hosts-" + select.value : "hosts";
    select.form.querySelectorAll('input[list="hosts"], input[list^="hosts-"]')
      .forEach((input) => input.setAttribute("list", list));
  }

  function syncPickers() {
    const rows = document.querySelectorAll("#machines tr[data-machine]:not([data-local])");
    document.querySelectorAll("select[data-machine-pick]").forEach((select) => {
      const have = new Set(Array.from(select.options, (o) => o.value));
      rows.forEach((row) => {
        if (have.has(row.dataset.machine)) return;
        const option = document.createElement("option");
        option.value = option.textContent = row.dataset.machine;
        select.append(option);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.addEventListener("change", (event) => {
      if (event.target.matches("select[data-machine-pick]")) pickHosts(event.target);
    });
    const machines = document.getElementById("machines-panel");
    if (machines) new MutationObserver(syncPickers).observe(machines, { childList: true, subtree: true });
    let presenting = new URLSearchParams(location.search).has("present");
    try { presenting = presenting || localStorage.getItem("udplab-present") === "1"; } catch (e) { /* ignore */ }
    setPresenting(presenting);
    const toggle = document.getElementById("present-toggle");
    if (toggle) toggle.addEventListener("click", () => setPresenting(!document.body.classList.contains("present")));
    document.addEventListener("keydown", onKey);
    const log = document.getElementById("log-rows");
    if (log) {
      new MutationObserver(() => trimLog(log)).observe(log, { childList: true });
    }
    // A closed socket means the live parts are stale until htmx reconnects; the server
    // sends a full snapshot on every connect, which sets the status back to "live".
    document.body.addEventListener("htmx:ws:close", () => setStatus("disconnected, reconnecting…", false));
    document.body.addEventListener("htmx:ws:error", () => setStatus("connection error, retrying…", false));
  });
})();
