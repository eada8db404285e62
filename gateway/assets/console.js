// The hookwarden console's only script. Every page works without it; it adds picking a span
// by dragging across the chart, the gap view's refresh every few seconds, and (on a replay's
// page) live progress. No inline script anywhere: the Content-Security-Policy forbids it.
"use strict";

(function () {
  // Drag across the chart's columns to select a span; a plain click follows the column's link.
  function chartSelection(svg) {
    var base = svg.getAttribute("data-base");
    var start = null, end = null, dragging = false, moved = false;
    function column(target) { return target && target.closest ? target.closest("a.col") : null; }
    function mark() {
      svg.querySelectorAll("a.col").forEach(function (c) {
        var s = Number(c.getAttribute("data-start"));
        var hit = c.querySelector("rect.hit");
        if (hit) hit.classList.toggle("dragging", dragging && s >= Math.min(start, end) && s <= Math.max(start, end));
      });
    }
    svg.addEventListener("pointerdown", function (e) {
      var c = column(e.target);
      if (!c || e.button !== 0) return;
      start = end = Number(c.getAttribute("data-start"));
      dragging = true; moved = false;
      e.preventDefault();
    });
    svg.addEventListener("pointermove", function (e) {
      if (!dragging) return;
      var c = column(document.elementFromPoint(e.clientX, e.clientY));
      if (c) {
        var s = Number(c.getAttribute("data-start"));
        if (s !== end) { end = s; moved = true; mark(); }
      }
    });
    document.addEventListener("pointerup", function (e) {
      if (!dragging) return;
      dragging = false;
      if (!moved) { mark(); return; }
      e.preventDefault();
      var cols = Array.prototype.slice.call(svg.querySelectorAll("a.col"));
      var lo = Math.min(start, end), hi = Math.max(start, end);
      var last = cols.filter(function (c) { return Number(c.getAttribute("data-start")) === hi; })[0];
      var to = last ? Number(last.getAttribute("data-end")) : hi;
      window.location.assign(base + "&from=" + encodeURIComponent(new Date(lo).toISOString()) +
        "&to=" + encodeURIComponent(new Date(to).toISOString()));
    });
    // A drag ends in a click on the last column: that click must not also follow its link.
    svg.addEventListener("click", function (e) { if (moved) { e.preventDefault(); moved = false; } });
  }

  // Replace a section with the same section of a fresh copy of the page, unless the user is in it.
  function refresh(section) {
    var seconds = Number(section.getAttribute("data-refresh")) || 15;
    setInterval(function () {
      if (document.hidden || section.contains(document.activeElement)) return;
      fetch(window.location.href, { credentials: "same-origin", headers: { "accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(section.id);
          if (fresh && !section.contains(document.activeElement)) {
            section.replaceChildren.apply(section, Array.prototype.slice.call(fresh.childNodes));
            init(section);
          }
        })
        .catch(function () { /* the next round tries again */ });
    }, seconds * 1000);
  }

  // A replay's page: its counts, rate and the window's confirmed count, pushed by the server.
  function progress(section) {
    var url = section.getAttribute("data-progress");
    if (!url || !window.EventSource) return;
    var source = new EventSource(url);
    function show(state) {
      if (!state || state.error) return;
      var counts = state.counts || {};
      Object.keys(counts).forEach(function (k) {
        var cell = document.getElementById("count-" + k);
        if (cell) cell.textContent = counts[k];
      });
      var bar = document.getElementById("bar");
      if (bar) {
        bar.max = counts.eligible || 0;
        bar.value = (counts.sent || 0) + (counts.skipped_receipt || 0) + (counts.skipped_probe || 0) +
          (counts.skipped_purged || 0) + (counts.skipped_other || 0);
      }
      // Paused: who paused it, and the button that resumes it (pause while it runs).
      var paused = document.getElementById("paused");
      if (paused) {
        paused.hidden = !state.paused;
        if (state.paused) {
          paused.textContent = "Paused by " + state.paused.by + " at " + state.paused.at +
            ": nothing is sent until it is resumed; it keeps its place and its lease.";
        }
      }
      var pauseForm = document.getElementById("pause-form");
      var resumeForm = document.getElementById("resume-form");
      if (pauseForm && resumeForm && !pauseForm.contains(document.activeElement) && !resumeForm.contains(document.activeElement)) {
        pauseForm.hidden = state.state !== "running";
        resumeForm.hidden = state.state !== "paused";
      }
      var stateEl = document.getElementById("state");
      if (stateEl) { stateEl.textContent = state.state; stateEl.className = "state-" + state.state; }
      var rate = document.getElementById("current-rate");
      if (rate) rate.textContent = state.current_rate;
      var slowed = document.getElementById("slowed");
      if (slowed) slowed.hidden = !(state.current_rate < state.rate);
      var confirmed = document.getElementById("confirmed");
      if (confirmed && state.confirmed_in_scope !== null && state.confirmed_in_scope !== undefined) {
        confirmed.textContent = state.confirmed_in_scope;
      }
    }
    source.addEventListener("progress", function (e) { show(JSON.parse(e.data)); });
    source.addEventListener("end", function (e) {
      show(JSON.parse(e.data));
      source.close();
      var note = document.getElementById("live-note");
      if (note) note.textContent = "Finished.";
      ["cancel", "pause-form", "resume-form"].forEach(function (id) {
        var el = document.getElementById(id);
        if (el) el.remove();
      });
    });
  }

  function init(root) {
    root.querySelectorAll("svg#chart").forEach(chartSelection);
  }

  document.addEventListener("DOMContentLoaded", function () {
    init(document);
    document.querySelectorAll("[data-refresh]").forEach(refresh);
    document.querySelectorAll("[data-progress]").forEach(progress);
  });
})();
