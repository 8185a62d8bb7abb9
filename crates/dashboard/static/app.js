// rbk dashboard: the little the server-rendered pages need live. No
// framework, no build step; embedded in the binary (src/pages.rs).
"use strict";

(function () {
  // Builds: the rows refresh themselves (server-rendered fragment).
  const rows = document.getElementById("build-rows");
  if (rows) {
    const refresh = async () => {
      try {
        const r = await fetch(rows.dataset.rows + location.search, { credentials: "same-origin" });
        if (r.ok && !r.redirected) rows.innerHTML = await r.text();
        else if (r.redirected) { location.href = "/login"; return; }
      } catch (e) { /* the next round retries */ }
      setTimeout(refresh, 1500);
    };
    setTimeout(refresh, 1500);
    const status = document.getElementById("status");
    if (status) status.addEventListener("change", () => status.form.submit());
  }

  // Forms that ask first (prune).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => { if (!confirm(form.dataset.confirm)) e.preventDefault(); });
  }

  const data = document.getElementById("build-data");
  if (data) buildPage(JSON.parse(data.textContent));
})();

// ANSI SGR colours as classes; every other escape sequence is dropped.
// Text goes in through text nodes only, never as HTML.
function ansiInto(parent, text) {
  if (text.indexOf("\x1b") < 0) { parent.appendChild(document.createTextNode(text)); return; }
  const re = /\x1b\[([0-9;?]*)([A-Za-z])/g;
  let style = { fg: null, bg: null, bold: false };
  let last = 0, m;
  const emit = (s) => {
    if (!s) return;
    if (!style.fg && !style.bg && !style.bold) { parent.appendChild(document.createTextNode(s)); return; }
    const span = document.createElement("span");
    span.className = [style.fg && "fg-" + style.fg, style.bg && "bg-" + style.bg, style.bold && "bold"].filter(Boolean).join(" ");
    span.textContent = s;
    parent.appendChild(span);
  };
  while ((m = re.exec(text)) !== null) {
    emit(text.slice(last, m.index));
    last = re.lastIndex;
    if (m[2] !== "m") continue;
    for (const c of (m[1] || "0").split(";").map(Number)) {
      if (c === 0) style = { fg: null, bg: null, bold: false };
      else if (c === 1) style.bold = true;
      else if (c === 22) style.bold = false;
      else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) style.fg = c;
      else if (c === 39) style.fg = null;
      else if ((c >= 40 && c <= 47) || (c >= 100 && c <= 107)) style.bg = c;
      else if (c === 49) style.bg = null;
    }
  }
  emit(text.slice(last));
}

function fmtMs(ms) {
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.floor(ms / 60000) + " min " + String(Math.floor(ms % 60000 / 1000)).padStart(2, "0") + " s";
}

function fmtBytes(n) {
  if (n < 1024) return n + " B";
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return v.toFixed(1) + " " + units[u];
}

function buildPage(initial) {
  const stats = window.rbkLog = { lines: 0, ended: false, firstLogMs: null, fullLogMs: null };
  const timeline = document.getElementById("timeline");
  const log = document.getElementById("log");
  const search = document.getElementById("log-search");
  const count = document.getElementById("log-count");
  const stepLabel = document.getElementById("log-step");
  const errorBox = document.getElementById("error-box");
  const lines = [];            // [step, stream, text]
  const stepIndex = new Map(); // step id -> 1-based position
  let build = initial, selected = null, needle = "", openedError = false, followTail = true;

  const shows = (l) => (selected === null || l[0] === selected) && (!needle || l[2].toLowerCase().includes(needle));
  const lineInto = (frag, l) => {
    const row = document.createElement("span");
    row.className = "line" + (l[1] === "stderr" ? " stderr" : "");
    if (selected === null) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "#" + (stepIndex.get(l[0]) || "?") + " ";
      row.appendChild(tag);
    }
    ansiInto(row, l[2]);
    row.appendChild(document.createTextNode("\n"));
    frag.appendChild(row);
  };
  // Lines go into block chunks the browser skips laying out while they
  // are off screen (content-visibility), so a 10 MB log stays responsive.
  const CHUNK = 1000;
  let shownCount = 0, scrollPending = false;
  const shown = () => { count.textContent = shownCount + " of " + lines.length + " lines"; };
  const scrollSoon = () => {
    if (!followTail || scrollPending) return;
    scrollPending = true;
    requestAnimationFrame(() => { scrollPending = false; log.scrollTop = log.scrollHeight; });
  };
  const chunksOf = (batch) => {
    const out = [];
    let chunk = null, n = 0;
    for (const l of batch) {
      if (!shows(l)) continue;
      if (!chunk || n === CHUNK) { chunk = document.createElement("div"); chunk.className = "chunk"; out.push(chunk); n = 0; }
      lineInto(chunk, l);
      n++;
      shownCount++;
    }
    return out;
  };
  const redrawLog = () => {
    shownCount = 0;
    log.replaceChildren(...chunksOf(lines));
    shown();
    scrollSoon();
  };
  const appendLog = (batch) => {
    for (const l of batch) lines.push(l);
    log.append(...chunksOf(batch));
    stats.lines = lines.length;
    shown();
    scrollSoon();
  };
  log.addEventListener("scroll", () => { followTail = log.scrollTop + log.clientHeight >= log.scrollHeight - 4; });

  const select = (stepId) => {
    selected = stepId;
    const s = build.steps.find((x) => x.id === stepId);
    stepLabel.textContent = s ? "of step #" + stepIndex.get(stepId) + " " + s.name : "";
    for (const b of timeline.querySelectorAll("button.step")) b.setAttribute("aria-pressed", String(b.dataset.step === stepId));
    followTail = true;
    redrawLog();
  };
  document.getElementById("log-all").addEventListener("click", () => select(null));
  let pending = null;
  search.addEventListener("input", () => {
    clearTimeout(pending);
    pending = setTimeout(() => { needle = search.value.toLowerCase(); redrawLog(); }, 150);
  });

  const drawSteps = () => {
    const now = Date.now();
    const start = build.created_ms;
    let end = build.state === "running" ? now : Math.max(build.finished_ms, start + 1);
    for (const s of build.steps) end = Math.max(end, s.finished_ms, s.started_ms);
    const span = Math.max(end - start, 1);
    const pct = (t) => (Math.max(0, t - start) / span * 100).toFixed(3) + "%";
    const width = (a, b) => (Math.max(0, b - a) / span * 100).toFixed(3) + "%";
    const items = build.steps.map((s, i) => {
      stepIndex.set(s.id, i + 1);
      const li = document.createElement("li");
      li.className = "step-row state-" + s.state;
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "step";
      btn.dataset.step = s.id;
      btn.setAttribute("aria-pressed", String(selected === s.id));
      btn.textContent = "#" + (i + 1) + " " + s.name;
      btn.addEventListener("click", () => select(s.id));
      const bar = document.createElement("div");
      bar.className = "bar";
      const seg = (cls, a, b, label) => {
        const d = document.createElement("span");
        d.className = "seg " + cls;
        d.style.left = pct(a);
        d.style.width = width(a, b);
        d.title = label;
        bar.appendChild(d);
      };
      const parts = [];
      if (s.cached) {
        seg("cached", s.started_ms || start, (s.started_ms || start) + span / 200, "cache hit");
        parts.push("cache hit");
      } else if (s.started_ms) {
        if (s.ready_ms && s.started_ms > s.ready_ms) { seg("wait", s.ready_ms, s.started_ms, "waited " + fmtMs(s.started_ms - s.ready_ms)); parts.push("waited " + fmtMs(s.started_ms - s.ready_ms)); }
        const stop = s.finished_ms || now;
        const p = s.phases;
        const inlineCommit = s.commit_follows ? 0 : p.commit_ms;
        const measured = p.restore_ms + p.run_ms + p.upload_ms + inlineCommit;
        if (s.finished_ms && measured > 0) {
          // The worker's phases, laid end to end from the step's start on
          // this coordinator's clock (what is left is reporting and dispatch).
          let t = s.started_ms;
          const phase = (cls, ms, label) => {
            if (ms <= 0) return;
            const end = Math.min(t + ms, stop);
            seg(cls, t, end, label + " " + fmtMs(ms));
            parts.push(label + " " + fmtMs(ms));
            t = end;
          };
          phase("restore", p.restore_ms, p.cache_restore_ms ? "restore (cache mounts " + fmtMs(p.cache_restore_ms) + ")" : "restore");
          phase(s.state === "failed" ? "failed" : "run", p.run_ms, "run");
          phase("upload", p.upload_ms, "upload");
          phase("commit", inlineCommit, "commit");
          if (stop > t) seg("other", t, stop, "reporting and dispatch " + fmtMs(stop - t));
        } else {
          seg(s.state === "failed" ? "failed" : "run", s.started_ms, stop, "ran " + fmtMs(stop - s.started_ms));
          parts.push((s.finished_ms ? "ran " : "running for ") + fmtMs(stop - s.started_ms));
          if (s.worker_ms) parts.push("worker measured " + fmtMs(s.worker_ms));
        }
        if (s.commit_follows && s.finished_ms) {
          // The cache mounts are captured after the step, while the next
          // steps run; the build ends once the commit lands.
          const end = Math.max(s.commit_done_ms || now, s.finished_ms);
          const what = (s.commit_done_ms ? "commit after the step " : "committing for ") + fmtMs(end - s.finished_ms) +
            (p.commit_ms ? " (capture " + fmtMs(p.commit_ms) + ")" : "");
          seg("commit late", s.finished_ms, end, what);
          parts.push(what);
        }
        const stored = p.layer_bytes + p.cache_bytes_uploaded;
        if (stored) parts.push("stored " + fmtBytes(stored));
      } else {
        parts.push(s.state);
      }
      if (s.bytes_restored) parts.push("restored " + fmtBytes(s.bytes_restored));
      if (s.worker) parts.push("on " + s.worker);
      if (s.cache_mounts.length) parts.push("cache " + s.cache_mounts.join(", "));
      const info = document.createElement("span");
      info.className = "info";
      info.textContent = parts.join(" · ");
      li.append(btn, bar, info);
      return li;
    });
    timeline.replaceChildren(...items);
    const badge = document.getElementById("build-state");
    badge.textContent = build.state;
    badge.className = "badge " + build.state;
    const done = build.steps.filter((s) => s.state === "done").length, cached = build.steps.filter((s) => s.cached).length;
    document.getElementById("build-summary").textContent =
      build.steps.length + " steps: " + done + " run, " + cached + " cached · " + fmtMs(end - start);
  };

  const openError = () => {
    const failed = build.steps.find((s) => s.state === "failed");
    if (!failed || openedError) return;
    openedError = true;
    errorBox.hidden = false;
    const where = failed.file ? failed.file + ":" + failed.line : "";
    errorBox.replaceChildren();
    const h = document.createElement("strong");
    h.textContent = "Step #" + stepIndex.get(failed.id) + " failed" + (where ? " at " + where : "");
    const code = document.createElement("code");
    code.className = "source";
    code.textContent = failed.name;
    const msg = document.createElement("p");
    msg.textContent = failed.message || build.message;
    errorBox.append(h, document.createElement("br"), code, msg);
    select(failed.id);
    location.hash = "step-" + failed.id;
  };

  const onSteps = (b) => { build = b; drawSteps(); if (b.state === "failed") openError(); };
  onSteps(build);
  const tick = setInterval(() => { if (build.state === "running") drawSteps(); else clearInterval(tick); }, 1000);

  const es = new EventSource("/builds/" + encodeURIComponent(build.id) + "/events");
  es.addEventListener("steps", (e) => onSteps(JSON.parse(e.data)));
  es.addEventListener("log", (e) => {
    appendLog(JSON.parse(e.data));
    if (stats.firstLogMs === null) requestAnimationFrame(() => { stats.firstLogMs = performance.now(); });
  });
  es.addEventListener("end", () => {
    es.close();
    requestAnimationFrame(() => {
      stats.fullLogMs = performance.now();
      stats.ended = true;
      document.body.dataset.logComplete = "true";
      if (build.state === "failed") { followTail = true; log.scrollTop = log.scrollHeight; }
    });
  });
}
