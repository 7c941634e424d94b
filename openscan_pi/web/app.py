"""The web page's routes (aiohttp): pages, server-sent events, the actions, job files.

Every action is a call of the daemon's socket method of the same meaning (:data:`ACTIONS`); the
daemon checks it (limits, a busy rig, names) exactly as for any client, and its one-line refusal
is answered as ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from aiohttp import web

from openscan_pi.daemon.protocol import INVALID_PARAMS, REFUSED
from openscan_pi.web import pages
from openscan_pi.web.auth import Auth, json_error
from openscan_pi.web.jobfiles import JobFiles, NotThere, zip_chunks
from openscan_pi.web.link import DaemonCallError, DaemonLink
from openscan_pi.web.preview import Frame, PreviewHub

STATIC = Path(__file__).with_name("static")
#: Where Debian's libjs-three puts three.js (Raspberry Pi OS: `apt install libjs-three`).
THREE_DIR = Path("/usr/share/javascript/three")
#: The three.js files the viewer loads, at the paths their own relative imports expect.
THREE_FILES = ("build/three.module.js", "examples/jsm/controls/OrbitControls.js",
               "examples/jsm/loaders/OBJLoader.js", "examples/jsm/loaders/MTLLoader.js")
#: A comment line on the event stream this often: a closed page is noticed.
KEEPALIVE_S = 15.0
#: The least time between two statuses sent to a page (a scan changes it a dozen times a second;
#: a page shows the latest at most five times a second, and the last one always).
EVENT_GAP_S = 0.2

#: action -> (socket method, the parameters it takes and their types)
ACTIONS: dict[str, tuple[str, dict[str, tuple[type, ...]]]] = {
    "scan": ("scan", {"positions": (int,), "project": (str,), "passes": (int,),
                      "focus_stack": (int,)}),
    "pause": ("pause", {"job": (str,)}),
    "continue": ("continue", {"job": (str,)}),
    "cancel": ("cancel", {"job": (str,)}),
    "retry": ("retry", {"job": (str,)}),
    "light": ("rig.light", {"on": (bool,), "brightness": (int, float)}),
    "move": ("rig.move", {"rotor": (int, float), "turntable": (int, float)}),
}


class Web:
    """The handlers, over one daemon link, one preview hub and the job folders."""

    def __init__(self, link: DaemonLink, files: JobFiles, auth: Auth,
                 three_dir: Path = THREE_DIR) -> None:
        self.link = link
        self.files = files
        self.auth = auth
        self.preview = PreviewHub(link)
        self.three = {f"/three/{name}": three_dir / name for name in THREE_FILES
                      if (three_dir / name).is_file()}
        self.static = {f"/static/{p.name}": p for p in STATIC.iterdir() if p.is_file()}

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(middlewares=[self.auth.middleware], client_max_size=64 * 1024)
        app.add_routes([
            web.get("/", self.index), web.get("/jobs", self.jobs),
            web.get("/jobs/{job}", self.job),
            web.get("/jobs/{job}/photos/{name}", self.photo),
            web.get("/jobs/{job}/thumbs/{name}", self.thumb),
            web.get("/jobs/{job}/model/{name}", self.model_file),
            web.get("/jobs/{job}/photos.zip", self.photos_zip),
            web.get("/jobs/{job}/model.zip", self.model_zip),
            web.get("/events", self.events), web.get("/preview.jpg", self.preview_jpg),
            web.get("/api/status", self.status), web.post("/api/{action}", self.action),
            web.get("/login", self.login_form), web.post("/login", self.login),
            web.post("/logout", self.logout),
            web.get("/static/{name}", self.file), web.get("/three/{path:.+}", self.file),
        ])
        return app

    # -- pages ----------------------------------------------------------------------------------

    @staticmethod
    def _html(text: str) -> web.Response:
        return web.Response(text=text, content_type="text/html",
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy":
                                         "default-src 'self'; img-src 'self' blob: data:; "
                                         "frame-ancestors 'none'"})

    async def index(self, request: web.Request) -> web.Response:
        """The scanner: live status, preview, rig, a new scan."""
        return self._html(pages.scanner(self.link.status, csrf=request["session"].csrf))

    async def jobs(self, request: web.Request) -> web.Response:
        """Every job."""
        try:
            jobs = await self.link.call("jobs")
        except DaemonCallError as exc:
            return json_error(503, exc.message)
        return self._html(pages.jobs_page(jobs, csrf=request["session"].csrf))

    async def job(self, request: web.Request) -> web.Response:
        """One job."""
        job_id = request.match_info["job"]
        try:
            job = await self.link.call("job", {"job": job_id})
            photos = self.files.photos(job_id)
            model = self.files.model_obj(job_id)
        except NotThere:
            photos, model = [], None
        except DaemonCallError as exc:
            return json_error(404 if exc.code in (REFUSED, INVALID_PARAMS) else 503, exc.message)
        return self._html(pages.job_page(job, photos, model, csrf=request["session"].csrf,
                                         three=len(self.three) == len(THREE_FILES)))

    async def login_form(self, request: web.Request) -> web.Response:
        """The password form (straight to the scanner when no password is needed)."""
        if request["session"].authed:
            return web.Response(status=303, headers={"Location": "/"})
        return self._html(pages.login_page(csrf=request["session"].csrf))

    async def login(self, request: web.Request) -> web.Response:
        """Check the password (CSRF checked by the middleware); slowed down when wrong."""
        form = await request.post()
        password = form.get("password")
        session = await self.auth.login(request, password if isinstance(password, str) else "")
        if session is None:
            response = self._html(pages.login_page(csrf=request["session"].csrf, failed=True))
            response.set_status(403)
            return response
        self.auth.logout(request["session"])
        request["session"], request["session_changed"] = session, True
        return web.Response(status=303, headers={"Location": "/"})

    async def logout(self, request: web.Request) -> web.Response:
        """Forget the session."""
        self.auth.logout(request["session"])
        return web.Response(status=303, headers={"Location": "/login"})

    async def file(self, request: web.Request) -> web.StreamResponse:
        """A file of the page itself, or of three.js: only those named at start."""
        path = self.static.get(request.path) or self.three.get(request.path)
        if path is None:
            return json_error(404, "no such file")
        return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    # -- live -----------------------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        """The latest status (what the event stream sends)."""
        return web.json_response({"status": self.link.status})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the daemon's status on every change, at most one each
        :data:`EVENT_GAP_S` (a page gets the latest, not every one), ``null`` while the daemon
        is away."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        seen = -1
        try:
            while True:
                version = await self.link.changed(seen, timeout=KEEPALIVE_S)
                if version == seen:
                    await response.write(b": keep-alive\n\n")
                    continue
                seen = version
                await response.write(self.link.event())
                await asyncio.sleep(EVENT_GAP_S)  # then the latest, if it changed meanwhile
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def preview_jpg(self, request: web.Request) -> web.Response:
        """The next preview after ``?after=N`` (waits for it), or ``{"problem": why}`` when there
        is none (the rig scans, the camera is busy): an answer, not an error, for a page that
        asks again."""
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            return json_error(400, "after: expected a whole number")
        got = await self.preview.next_frame(after)
        if got is None or isinstance(got, str):
            return web.json_response({"problem": got or "no preview yet"},
                                     headers={"Cache-Control": "no-store"})
        frame: Frame = got
        meta = {f"X-Preview-{k.replace('_', '-')}": "" if v is None else str(v)
                for k, v in frame.meta.items()}
        return web.Response(body=frame.jpeg, content_type="image/jpeg",
                            headers={"Cache-Control": "no-store", "X-Preview-Seq": str(frame.seq),
                                     **meta})

    # -- actions --------------------------------------------------------------------------------

    async def action(self, request: web.Request) -> web.Response:
        """``POST /api/<action>`` with a JSON object: the daemon's method of that name."""
        name = request.match_info["action"]
        if name not in ACTIONS:
            return json_error(404, f"no action {name!r}: one of {', '.join(ACTIONS)}")
        method, allowed = ACTIONS[name]
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return json_error(400, "the body is not JSON: send a JSON object")
        if not isinstance(body, dict):
            return json_error(400, "the body is not a JSON object")
        params = {}
        for key, value in body.items():
            if value is None or value == "":
                continue
            if key not in allowed:
                return json_error(400, f"{name}: unknown field {key!r} (known: "
                                       f"{', '.join(allowed)})")
            if isinstance(value, bool) and bool not in allowed[key] or not isinstance(
                    value, allowed[key]) or (isinstance(value, float) and not math.isfinite(value)):
                return json_error(400, f"{name}: {key} has the wrong type")
            params[key] = value
        try:
            result = await self.link.call(method, params or None, timeout=120)
        except DaemonCallError as exc:
            status = {REFUSED: 409, INVALID_PARAMS: 400}.get(exc.code, 503)
            return json_error(status, exc.message)
        return web.json_response({"result": result})

    # -- job files ------------------------------------------------------------------------------

    def _job_file(self, request: web.Request, sub: str) -> Path:
        return self.files.file(request.match_info["job"], sub, request.match_info["name"])

    async def photo(self, request: web.Request) -> web.StreamResponse:
        """A photo, whole."""
        try:
            return web.FileResponse(self._job_file(request, "images"))
        except NotThere:
            return json_error(404, "no such photo")

    async def model_file(self, request: web.Request) -> web.StreamResponse:
        """A file of the model (OBJ, MTL, texture)."""
        try:
            return web.FileResponse(self._job_file(request, "model"))
        except NotThere:
            return json_error(404, "no such model file")

    async def thumb(self, request: web.Request) -> web.StreamResponse:
        """A photo's thumbnail (made on first view)."""
        loop = asyncio.get_running_loop()
        try:
            path = await loop.run_in_executor(None, self.files.thumbnail,
                                              request.match_info["job"], request.match_info["name"])
        except NotThere:
            return json_error(404, "no such photo")
        except OSError as exc:
            return json_error(500, f"cannot make the thumbnail: {exc}")
        return web.FileResponse(path, headers={"Cache-Control": "max-age=86400"})

    async def photos_zip(self, request: web.Request) -> web.StreamResponse:
        """The photos as a zip, streamed."""
        return await self._zip(request, "images", "photos")

    async def model_zip(self, request: web.Request) -> web.StreamResponse:
        """The model as a zip, streamed."""
        return await self._zip(request, "model", "model")

    async def _zip(self, request: web.Request, sub: str, what: str) -> web.StreamResponse:
        job_id = request.match_info["job"]
        try:
            archive = self.files.zip_of(job_id, sub)
        except NotThere:
            return json_error(404, f"job {job_id} has no {what}")
        response = web.StreamResponse(headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="{job_id}-{what}.zip"'})
        response.content_length = archive.size
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        chunks = zip_chunks(archive)
        try:
            while chunk := await loop.run_in_executor(None, next, chunks, b""):
                await response.write(chunk)
        finally:
            archive.close()
        await response.write_eof()
        return response


def make_app(socket_path: Path, data_dir: Path, password: str | None) -> tuple[web.Application,
                                                                                  DaemonLink]:
    """The application and its daemon link (whose ``follow()`` the caller runs)."""
    link = DaemonLink(socket_path)
    handlers = Web(link, JobFiles(data_dir), Auth(password))
    return handlers.app(), link
