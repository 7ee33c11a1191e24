// The stage's small behaviours (issue 14). No inline script: the CSP allows none.
(() => {
  "use strict";
  // The skip link focuses its control itself (a fragment only moves the reading point), so
  // Tab, Enter reaches "Start server" from the top of the page.
  document.addEventListener("click", (event) => {
    const link = event.target.closest && event.target.closest("a[data-focus]");
    if (!link) return;
    const target = document.querySelector(link.dataset.focus);
    if (!target) return;
    event.preventDefault();
    target.focus();
    target.scrollIntoView({ block: "nearest" });
  });
})();
