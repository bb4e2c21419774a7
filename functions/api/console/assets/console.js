// The console's only script: pages work without it. It refreshes the live
// parts of a page ([data-poll]), shows a segment's audience size as it is
// chosen ([data-count-into]) and asks before a destructive form ([data-confirm]).
"use strict";

const FRAGMENT = { "x-console-fragment": "1" };

async function fetchFragment(url) {
  try {
    const response = await fetch(url, { headers: FRAGMENT, credentials: "same-origin" });
    if (!response.ok) {
      return null;
    }
    return await response.text();
  } catch (_) {
    // Offline for a moment: the next tick tries again.
    return null;
  }
}

function poll(element) {
  const url = element.dataset.poll;
  const every = Number(element.dataset.every) || 2000;
  const tick = async () => {
    const html = await fetchFragment(url);
    if (html !== null) {
      element.innerHTML = html;
    }
    if (element.querySelector("[data-done]")) {
      element.dataset.finished = "true";
      if ("reloadWhenDone" in element.dataset) {
        window.location.reload();
      }
      return;
    }
    window.setTimeout(tick, every);
  };
  window.setTimeout(tick, every);
}

function audienceCount(select) {
  const target = document.getElementById(select.dataset.countInto);
  if (!target) {
    return;
  }
  const show = async () => {
    if (!select.value) {
      target.textContent = "The audience size shows once you choose a segment.";
      return;
    }
    target.textContent = "Counting…";
    const html = await fetchFragment(`/console/segments/${encodeURIComponent(select.value)}/count`);
    target.innerHTML = html === null ? "Could not count the audience just now." : html;
  };
  select.addEventListener("change", show);
  if (select.value) {
    show();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-poll]").forEach(poll);
  document.querySelectorAll("select[data-count-into]").forEach(audienceCount);
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  });
});
