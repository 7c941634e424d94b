// The page's live parts: the status from the server-sent events, the actions (each a POST with
// the session's CSRF token), the preview as successive JPEGs while the page shows it.
"use strict";
const csrf = document.querySelector('meta[name="csrf"]').content;
const $ = (id) => document.getElementById(id);

function say(text, isError) {
  const m = $("message");
  m.textContent = text || "";
  m.className = isError ? "error" : "";
}

async function act(action, body) {
  let answer;
  try {
    const r = await fetch("/api/" + action, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    answer = await r.json();
  } catch (e) {
    answer = { error: "the scanner did not answer: " + e };
  }
  if (answer.error) say(answer.error, true);
  else say(action + ": done");
  return answer;
}

function setText(id, text) { const el = $(id); if (el && el.textContent !== text) el.textContent = text; }

function duration(s) {
  if (s == null) return "";
  s = Math.round(s);
  return "ETA " + (s >= 60 ? Math.floor(s / 60) + " min " : "") + (s % 60) + " s";
}

let current = null;  // the status last received
let rigFree = null;  // resolves the preview's wait for the rig (see below)

function render(st) {
  current = st;
  if (rigFree && st && !(st.rig && st.rig.job)) { rigFree(); rigFree = null; }
  setText("conn", st ? "" : "the daemon is not running");
  if (!st || !$("state")) return;
  const job = st.job || {}, rig = st.rig || {};
  setText("state", st.state);
  const link = $("job");
  link.textContent = job.id || "none";
  link.href = job.id ? "/jobs/" + encodeURIComponent(job.id) : "/jobs";
  setText("job-state", job.state || "");
  const total = Math.max(1, job.positions || 1), done = job.captured || 0;
  const bar = $("progress");
  bar.max = total; bar.value = done;
  setText("count", done + "/" + (job.id ? total : 0));
  setText("step", job.step || "");
  setText("eta", duration(job.eta_s));
  setText("pass", (job.pass || 1) + " of " + (job.passes || 1));
  setText("cloud", job.cloud_status || "");
  const angle = (v) => (v == null ? "?" : Number(v).toFixed(1));
  setText("rig", "rotor " + angle(rig.rotor) + "°, turntable " + angle(rig.turntable) + "°");
  setText("light", rig.light ? "on" : "off");
  setText("queued", (st.queued || []).join(", ") || "none");
}

function follow() {
  const events = new EventSource("/events");
  events.onmessage = (e) => render(JSON.parse(e.data));
  events.onerror = () => setText("conn", "reconnecting…");
  events.onopen = () => setText("conn", "");
}

document.addEventListener("click", (e) => {
  const b = e.target.closest("button[data-action], button[data-light]");
  if (!b) return;
  e.preventDefault();
  if (b.dataset.light) return act("light", { on: b.dataset.light === "on" });
  // the job of the button (a job's page), else the one the status shows
  const job = b.dataset.job || (current && current.job && current.job.id);
  act(b.dataset.action, job ? { job } : {});
});

function number(v) { return v === "" ? undefined : Number(v); }

const scanForm = $("scan");
if (scanForm) scanForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(scanForm);
  const r = await act("scan", {
    positions: number(f.get("positions")), passes: number(f.get("passes")),
    focus_stack: number(f.get("focus_stack")), project: f.get("project") || undefined,
  });
  if (r.result) say("job " + r.result.id + " queued");
});

const moveForm = $("move");
if (moveForm) moveForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const f = new FormData(moveForm);
  act("move", { rotor: number(f.get("rotor")), turntable: number(f.get("turntable")) });
});

// The preview: one request at a time, each answered by the next frame (or why there is none).
const img = $("preview");
if (img) {
  let seq = 0, url = null;
  const next = async () => {
    if (document.hidden) return setTimeout(next, 1000);
    try {
      const r = await fetch("/preview.jpg?after=" + seq, { credentials: "same-origin" });
      if ((r.headers.get("Content-Type") || "").startsWith("image/")) {
        seq = Number(r.headers.get("X-Preview-Seq"));
        const old = url;
        url = URL.createObjectURL(await r.blob());
        img.src = url;
        img.dataset.seq = String(seq);
        if (old) URL.revokeObjectURL(old);
        const focus = Number(r.headers.get("X-Preview-focus"));
        setText("focus", "focus " + focus.toFixed(1));
        setText("preview-note", "");
        return next();
      }
      const why = await r.json().catch(() => ({}));
      setText("preview-note", why.problem || why.error || "no preview");
    } catch (e) {
      setText("preview-note", "no preview: " + e);
    }
    // No frame (the rig scans, the daemon is away): ask again once the status says the rig is
    // free, or in 10 s at the latest, not every second.
    await new Promise((ok) => { rigFree = ok; setTimeout(ok, current && current.rig && current.rig.job ? 10000 : 1000); });
    next();
  };
  next();
}

follow();
