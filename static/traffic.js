// The live traffic chart: datagrams received per second by the servers and listeners on
// the page, and stream datagrams lost per second, sampled from the cards' exact counters
// once a second (uPlot, installed from npm). No inline script: the CSP allows none.
(() => {
  "use strict";
  const POINTS = 60;

  function sum(selector) {
    let total = 0;
    for (const element of document.querySelectorAll(selector)) {
      total += Number(element.textContent) || 0;
    }
    return total;
  }

  function lost() {
    let total = 0;
    for (const row of document.querySelectorAll("[data-stream-lost]")) total += Number(row.dataset.streamLost) || 0;
    return total;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const box = document.getElementById("rate-chart");
    if (!box || !window.uPlot) return;
    const data = [[], [], []];
    const chart = new window.uPlot({
      width: Math.max(280, box.clientWidth - 8), height: 180,
      series: [{ label: "seconds", value: (u, v) => (v == null ? "–" : `${v.toFixed(1)} s`) }, { label: "received/s", stroke: "#0b5cad", width: 2 },
               { label: "lost/s", stroke: "#a4161a", width: 2, dash: [6, 3] }],
      // x: seconds since the page opened, not clock times (":41.800" told nobody anything)
      scales: { x: { time: false } },
      axes: [{ label: "seconds since the page opened", values: (u, ticks) => ticks.map((t) => `${+t.toFixed(1)} s`) },
             { size: 60 }],
    }, data, box);
    const opened = Date.now() / 1000;
    let last = null;
    setInterval(() => {
      const now = { t: Date.now() / 1000, received: sum(".kind-server [data-counter=received], .kind-listener [data-counter=received]"), lost: lost() };
      if (last) {
        const dt = now.t - last.t;
        data[0].push(now.t - opened);
        data[1].push(Math.max(0, (now.received - last.received) / dt));
        data[2].push(Math.max(0, (now.lost - last.lost) / dt));
        for (const series of data) if (series.length > POINTS) series.shift();
        chart.setData(data);
        box.dataset.points = String(data[0].length);
      }
      last = now;
    }, 1000);
    window.addEventListener("resize", () => chart.setSize({ width: Math.max(280, box.clientWidth - 8), height: 180 }));
  });
})();
