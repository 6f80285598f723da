// workflow-dlq console: the few live parts of otherwise server-rendered pages.
// Loaded from the binary (Content-Security-Policy: script-src 'self'); no inline handlers.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  // Select-all on the entries list, and the count on the "selected entries" button.
  var all = document.getElementById("select-all");
  var boxes = function () {
    return Array.prototype.slice.call(document.querySelectorAll('input[name="dlqIds"]'));
  };
  var showSelected = function () {
    var out = document.getElementById("selected-count");
    if (out) out.textContent = String(boxes().filter(function (b) { return b.checked; }).length);
  };
  if (all) {
    all.addEventListener("change", function () {
      boxes().forEach(function (b) { b.checked = all.checked; });
      showSelected();
    });
  }
  boxes().forEach(function (b) { b.addEventListener("change", showSelected); });
  showSelected();

  // The live count of entries matching the list's filter.
  var count = document.querySelector("[data-count-url]");
  if (count) {
    setInterval(function () {
      fetch(count.getAttribute("data-count-url"), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) { if (j && typeof j.count === "number") count.textContent = String(j.count); })
        .catch(function () {});
    }, 5000);
  }

  // A job's live progress; the cancel button goes once the job is over.
  var job = document.querySelector("[data-progress-url]");
  if (job) {
    var timer = setInterval(function () {
      fetch(job.getAttribute("data-progress-url"), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (!j) return;
          job.querySelectorAll("[data-field]").forEach(function (el) {
            var v = j[el.getAttribute("data-field")];
            if (v !== undefined) el.textContent = String(v);
          });
          var bar = document.getElementById("job-progress");
          if (bar && typeof j.matched === "number") {
            bar.max = Math.max(1, j.matched);
            bar.value = (j.succeeded || 0) + (j.failed || 0) + (j.skipped || 0);
          }
          if (j.state === "done" || j.state === "canceled") {
            clearInterval(timer);
            var cancel = document.getElementById("cancel-form");
            if (cancel) cancel.remove();
          }
        })
        .catch(function () {});
    }, 1000);
  }
});
