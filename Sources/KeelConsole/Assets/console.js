// Keel console: small enhancements over pages that work without script. Confirmation before
// destructive forms, copy buttons, live updates over server-sent events, and the schedule preview.
"use strict";

document.addEventListener("submit", (event) => {
  const message = event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) event.preventDefault();
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const text = document.getElementById(button.getAttribute("data-copy")).textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(document.getElementById(button.getAttribute("data-copy")));
    window.getSelection().removeAllRanges();
    window.getSelection().addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
});

// Live parts: on a change event, fetch this page again and swap in its [data-live] sections.
(function live() {
  const parts = document.querySelectorAll("[data-live]");
  if (parts.length === 0 || !window.EventSource) return;
  const job = document.querySelector("[data-job]");
  const source = new EventSource("/console/events" + (job ? "?job=" + encodeURIComponent(job.getAttribute("data-job")) : ""));
  let refreshing = false;
  source.addEventListener("change", async () => {
    if (refreshing) return;
    refreshing = true;
    try {
      const response = await fetch(window.location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.querySelectorAll("[data-live]");
      document.querySelectorAll("[data-live]").forEach((part, index) => {
        if (fresh[index] && !part.contains(document.activeElement)) part.replaceWith(document.importNode(fresh[index], true));
      });
    } finally {
      refreshing = false;
    }
  });
})();

// The schedule form previews the next fire times as the cron expression or time zone changes.
(function schedulePreview() {
  const preview = document.getElementById("schedule-preview");
  const cron = document.getElementById("s-cron");
  const zone = document.getElementById("s-timezone");
  if (!preview || !cron || !zone) return;
  let timer;
  let latest = 0;
  const update = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const asked = ++latest;
      const url = preview.getAttribute("data-preview") + "?cron=" + encodeURIComponent(cron.value) + "&timezone=" + encodeURIComponent(zone.value);
      const response = await fetch(url, { credentials: "same-origin" });
      const html = response.ok ? await response.text() : null;
      // An answer to an older question (a slower request) must not replace a newer one.
      if (html !== null && asked === latest) preview.innerHTML = html;
    }, 250);
  };
  cron.addEventListener("input", update);
  zone.addEventListener("input", update);
})();
