"""The page's HTML, rendered on the server (plain strings, every value escaped); the live parts
are filled in by ``static/app.js`` from the server-sent events."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

FINISHED = ("done", "failed", "cancelled")


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def layout(title: str, body: str, *, csrf: str, scripts: str = "") -> str:
    """A whole page around ``body``."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf" content="{_e(csrf)}">
<title>{_e(title)} · OpenScan</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/style.css">
</head><body>
<header><strong>OpenScan</strong>
<nav><a href="/">Scanner</a> <a href="/jobs">Jobs</a></nav>
<span id="conn" class="muted"></span></header>
<main>
<p id="message" role="status"></p>
{body}
</main>
<script src="/static/app.js"></script>
{scripts}
</body></html>
"""


def progress(job: dict[str, Any] | None) -> tuple[int, int]:
    """(done, total) of a job's capture."""
    if not job:
        return 0, 1
    return int(job.get("captured") or 0), max(1, int(job.get("positions") or 1))


def _job_href(job: dict[str, Any]) -> str:
    return "/jobs/" + quote(job["id"]) if job else "/jobs"


def scanner(status: dict[str, Any] | None, *, csrf: str) -> str:
    """The main page: live status, preview, the rig by hand, a scan."""
    status = status or {}
    job = status.get("job") or {}
    rig = status.get("rig") or {}
    done, total = progress(job)
    body = f"""
<section class="status">
<h1>Scanner <span id="state" class="badge">{_e(status.get("state", "…"))}</span></h1>
<dl>
<dt>Job</dt><dd><a id="job" href="{_job_href(job)}">{_e(job.get("id", "none"))}</a>
  <span id="job-state" class="badge">{_e(job.get("state", ""))}</span></dd>
<dt>Progress</dt><dd><progress id="progress" max="{total}" value="{done}"></progress>
  <span id="count">{done}/{total if job else 0}</span> <span id="step">{_e(job.get("step", ""))}</span>
  <span id="eta"></span></dd>
<dt>Pass</dt><dd id="pass">{_e(job.get("pass", 1))} of {_e(job.get("passes", 1))}</dd>
<dt>Cloud</dt><dd id="cloud">{_e(job.get("cloud_status", ""))}</dd>
<dt>Rig</dt><dd id="rig">rotor {_e(rig.get("rotor", "?"))}°, turntable {_e(rig.get("turntable", "?"))}°</dd>
<dt>Light</dt><dd id="light">{"on" if rig.get("light") else "off"}</dd>
<dt>Queued</dt><dd id="queued">{_e(", ".join(status.get("queued") or []) or "none")}</dd>
</dl>
<p class="buttons">
<button data-action="pause">Pause</button>
<button data-action="continue">Continue</button>
<button data-action="cancel">Cancel</button>
<button data-action="retry">Retry</button>
</p>
</section>
<section class="preview">
<h2>Preview</h2>
<img id="preview" alt="the camera's view" width="640" height="480">
<p><span id="focus" class="muted">focus —</span> <span id="preview-note" class="muted"></span></p>
<p class="buttons"><button data-light="on">Light on</button>
<button data-light="off">Light off</button></p>
<form id="move">Rotor <input name="rotor" type="number" step="any" size="6">°
Turntable <input name="turntable" type="number" step="any" size="6">°
<button>Move</button></form>
</section>
<section class="scan">
<h2>Start a scan</h2>
<form id="scan">
<label>Positions <input name="positions" type="number" min="1" max="10000" value="60" required></label>
<label>Passes <input name="passes" type="number" min="1" max="20" value="1"></label>
<label>Focus stack <input name="focus_stack" type="number" min="1" max="32"
 placeholder="(config)"></label>
<label>Project <input name="project" placeholder="(automatic)"></label>
<button>Start</button>
</form>
<p class="muted">Passes: after each pass but the last the scan waits for you to turn the object
over and press Continue. Focus stack: photos at each position, the lens moved between them,
fused into one sharp photo (1 = none; empty = camera.focus.stack of the config).</p>
</section>
"""
    return layout("Scanner", body, csrf=csrf)


def jobs_page(jobs: list[dict[str, Any]], *, csrf: str) -> str:
    """Every job, newest first."""
    rows = "".join(
        f"<tr><td><a href=\"/jobs/{quote(j['id'])}\">{_e(j['id'])}</a></td>"
        f"<td><span class=\"badge\">{_e(j.get('state'))}</span></td>"
        f"<td>{_e(j.get('captured'))}/{_e(j.get('positions'))}</td>"
        f"<td>{_e(j.get('project'))}</td><td>{_e(j.get('step'))}</td></tr>"
        for j in reversed(jobs))
    body = f"""<h1>Jobs</h1>
<table id="jobs"><thead><tr><th>Job</th><th>State</th><th>Photos</th><th>Project</th><th>Step</th>
</tr></thead><tbody>{rows or '<tr><td colspan="5">no jobs yet</td></tr>'}</tbody></table>"""
    return layout("Jobs", body, csrf=csrf)


def job_page(job: dict[str, Any], photos: list[str], model_obj: str | None, *, csrf: str,
             three: bool) -> str:
    """One job: its state, downloads, the model turning, the photos."""
    jid = quote(job["id"])
    thumbs = "".join(
        f'<a href="/jobs/{jid}/photos/{quote(p)}"><img loading="lazy" alt="{_e(p)}" '
        f'src="/jobs/{jid}/thumbs/{quote(p)}"></a>' for p in photos)
    downloads = []
    if photos:
        downloads.append(f'<a id="photos-zip" href="/jobs/{jid}/photos.zip" download>photos (zip, '
                         f'{len(photos)})</a>')
    if model_obj:
        downloads.append(f'<a id="model-zip" href="/jobs/{jid}/model.zip" download>model (zip)</a>')
    if model_obj and three:
        viewer = (f'<canvas id="viewer" width="640" height="480" '
                  f'data-obj="/jobs/{jid}/model/{quote(model_obj)}"></canvas>')
        scripts = '<script type="module" src="/static/viewer.js"></script>'
    elif model_obj:
        viewer = ('<p class="muted">The 3D view needs three.js: '
                  '<code>sudo apt install libjs-three</code>.</p>')
        scripts = ""
    else:
        viewer, scripts = '<p class="muted">No model yet.</p>', ""
    buttons = "" if job.get("state") in FINISHED and job.get("state") != "failed" else (
        f'<p class="buttons"><button data-action="cancel" data-job="{_e(job["id"])}">Cancel</button> '
        f'<button data-action="retry" data-job="{_e(job["id"])}">Retry</button> '
        f'<button data-action="continue" data-job="{_e(job["id"])}">Continue</button></p>')
    extra = ""
    if job.get("passes"):
        extra += f"<dt>Pass</dt><dd>{_e(job.get('pass'))} of {_e(job['passes'])}</dd>\n"
    if job.get("focus_stack"):
        extra += (f"<dt>Focus stack</dt><dd>{_e(job['focus_stack'])} photos a position, "
                  "fused into one</dd>\n")
    body = f"""<h1>Job {_e(job['id'])} <span class="badge">{_e(job.get('state'))}</span></h1>
<dl><dt>Project</dt><dd>{_e(job.get('project'))}</dd>
<dt>Positions</dt><dd>{_e(job.get('captured'))}/{_e(job.get('positions'))}</dd>
{extra}<dt>Step</dt><dd>{_e(job.get('step'))}</dd>
<dt>Cloud</dt><dd>{_e(job.get('cloud_status'))}</dd>
<dt>Error</dt><dd>{_e(job.get('error') or '—')}</dd></dl>
{buttons}
<p class="downloads">{' · '.join(downloads) or 'nothing to download yet'}</p>
<section><h2>Model</h2>{viewer}</section>
<section><h2>Photos</h2><div class="thumbs">{thumbs or 'none yet'}</div></section>"""
    return layout(f"Job {job['id']}", body, csrf=csrf, scripts=scripts)


def login_page(*, csrf: str, failed: bool = False) -> str:
    """The password form."""
    note = '<p class="error">Wrong password.</p>' if failed else ""
    body = f"""<h1>Sign in</h1>{note}
<form method="post" action="/login"><input type="hidden" name="csrf" value="{_e(csrf)}">
<label>Password <input name="password" type="password" autofocus required></label>
<button>Sign in</button></form>"""
    return layout("Sign in", body, csrf=csrf)
