"""The socket's methods: check the parameters, then ask the :class:`Scheduler` (off the event loop
when that may block).

The contract's methods are ``status``, ``jobs``, ``scan {positions, project?}``, ``cancel {job?}``,
``retry {job}``, ``preview`` and ``subscribe``; ``job {job}``, ``jobs.broken`` (the job folders
that cannot be run), the hand-driven ``rig.move``, ``rig.home``, ``rig.light``, ``rig.capture``
and ``rig.turn``, and ``preview``'s ``lens_position`` are this project's additions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from openscan_pi.daemon.protocol import INVALID_PARAMS, RpcError
from openscan_pi.daemon.server import Connection, Handler
from openscan_pi.logs import quote
from openscan_pi.names import job_problem, project_problem
from openscan_pi.plan import MAX_POSITIONS  # most positions one scan may ask for
from openscan_pi.schema import MAX_FOCUS_STACK

#: Most passes one scan may have.
MAX_PASSES = 20

if TYPE_CHECKING:
    from openscan_pi.daemon.scheduler import Scheduler
    from openscan_pi.rig.remote import RemoteRig

log = logging.getLogger(__name__)

#: How long ``cancel`` waits for a running job to reach a safe point before answering.
CANCEL_WAIT_S = 30.0


class Params:
    """Typed access to a request's named parameters; anything wrong is -32602."""

    def __init__(self, params: dict[str, Any], known: tuple[str, ...]) -> None:
        unknown = sorted(set(params) - set(known))
        if unknown:
            allowed = ", ".join(known) or "none"
            raise RpcError(INVALID_PARAMS, f"invalid params: unknown parameter {unknown[0]!r} "
                           f"(this method takes: {allowed})")
        self.params = params

    def _bad(self, name: str, expected: str) -> RpcError:
        return RpcError(INVALID_PARAMS, f"invalid params: {name} must be {expected}, got "
                        f"{self.params.get(name)!r:.60}")

    def integer(self, name: str, low: int, high: int, *, required: bool = True) -> int | None:
        """An integer in [low, high]."""
        value = self.params.get(name)
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._bad(name, f"an integer from {low} to {high}")
        return value

    def number(self, name: str, low: float, high: float) -> float | None:
        """An optional finite number in [low, high]."""
        value = self.params.get(name)
        if value is None:
            return None
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not low <= value <= high):
            raise self._bad(name, f"a number from {low:g} to {high:g}")
        return float(value)

    def name(self, name: str, problem: Callable[[Any], str | None], *, required: bool = False
             ) -> str | None:
        """A project name or job id (``problem`` from :mod:`openscan_pi.names` says what is wrong)."""
        value = self.params.get(name)
        if value is None and not required:
            return None
        why = problem(value)
        if why:
            raise RpcError(INVALID_PARAMS, f"invalid params: {name}: {why}")
        return str(value)

    def text(self, name: str, *, required: bool = False, choices: tuple[str, ...] = (),
             longest: int = 200) -> str | None:
        """A non-empty string of at most ``longest`` characters (one of ``choices`` when
        given)."""
        value = self.params.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value or len(value) > longest or (
                choices and value not in choices):
            raise self._bad(name, f"one of {', '.join(choices)}" if choices else "a string")
        return value


def _capture(rig: RemoteRig, lens_position: float | None) -> dict[str, Any]:
    """One photo, returned in the answer (the daemon may not write where the caller can): the
    worker writes it to a temporary file of the data folder, read here and removed."""
    shot = rig.capture(None, lens_position=lens_position)
    data = b""
    if shot.path is not None:
        try:
            data = shot.path.read_bytes()
        finally:
            shot.path.unlink(missing_ok=True)
    return {"size": shot.size, "crc32": shot.crc32, "rotor": shot.rotor,
            "turntable": shot.turntable, "lens_position": shot.lens_position,
            "jpeg_base64": base64.b64encode(data).decode("ascii") if data else None}


def make_methods(scheduler: Scheduler) -> dict[str, Handler]:
    """The method table the server dispatches on."""

    async def status(params: dict[str, Any], conn: Connection) -> Any:
        Params(params, ())
        return scheduler.status()

    async def jobs(params: dict[str, Any], conn: Connection) -> Any:
        Params(params, ())
        return await asyncio.to_thread(scheduler.list_jobs)  # it looks at the disk

    async def jobs_broken(params: dict[str, Any], conn: Connection) -> Any:
        Params(params, ())
        return await asyncio.to_thread(scheduler.broken_jobs)

    async def job(params: dict[str, Any], conn: Connection) -> Any:
        p = Params(params, ("job",))
        return scheduler.job_public(str(p.name("job", job_problem, required=True)))

    async def subscribe(params: dict[str, Any], conn: Connection) -> Any:
        Params(params, ())
        conn.subscribed = True
        return scheduler.status()

    async def scan(params: dict[str, Any], conn: Connection) -> Any:
        p = Params(params, ("positions", "project", "passes", "focus_stack"))
        positions = p.integer("positions", 1, MAX_POSITIONS)
        passes = p.integer("passes", 1, MAX_PASSES, required=False) or 1
        stack = p.integer("focus_stack", 1, MAX_FOCUS_STACK, required=False)
        if int(positions or 0) * passes > MAX_POSITIONS:
            raise RpcError(INVALID_PARAMS, f"invalid params: positions x passes: at most "
                           f"{MAX_POSITIONS} in all")
        # Said before the checks, quoted: who asked for what is in the log even when refused.
        raw = params.get("project")
        log.info("scan of %s positions%s asked by %s", positions,
                 f" for project {quote(raw)}" if raw is not None else "", conn.peer)
        project = p.name("project", project_problem)
        # The token check waits on the cloud in a thread of its own, shared by the scans asked
        # meanwhile and bounded: the workers below are never held by a cloud that hangs.
        await scheduler.token_check.settle()
        return await asyncio.to_thread(scheduler.scan, int(positions or 0), project, passes,
                                       stack)

    async def upload(params: dict[str, Any], conn: Connection) -> Any:
        p = Params(params, ("path", "project"))
        path = p.text("path", required=True, longest=4096)
        if not str(path).startswith("/") or "\0" in str(path):
            raise RpcError(INVALID_PARAMS, "invalid params: path: an absolute path")
        log.info("upload of %s asked by %s", quote(path), conn.peer)
        project = p.name("project", project_problem)
        return await asyncio.to_thread(scheduler.upload, str(path), project)

    async def cancel(params: dict[str, Any], conn: Connection) -> Any:
        p = Params(params, ("job",))
        raw = params.get("job")
        log.info("cancel of %s asked by %s", "the running job" if raw is None else quote(raw),
                 conn.peer)
        job_id = p.name("job", job_problem)
        target, stopped = scheduler.cancel(job_id)
        if stopped is not None:  # waited for without a thread: any number of cancels at once
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(stopped)), CANCEL_WAIT_S)
        return scheduler.job_public(target)

    def on_job(what: str, default: str, act: Callable[[str | None], Any]) -> Handler:
        """A method taking ``{job?}`` (``default`` when none is given) and doing ``act``."""
        async def handler(params: dict[str, Any], conn: Connection) -> Any:
            p = Params(params, ("job",))
            raw = params.get("job")
            log.info("%s of %s asked by %s", what, default if raw is None else quote(raw),
                     conn.peer)
            return await asyncio.to_thread(act, p.name("job", job_problem))

        return handler

    pause = on_job("pause", "the running scan", scheduler.pause)
    go_on = on_job("continue", "the paused job", scheduler.go_on)

    async def retry(params: dict[str, Any], conn: Connection) -> Any:
        p = Params(params, ("job",))
        log.info("retry of %s asked by %s", quote(params.get("job")), conn.peer)
        job_id = str(p.name("job", job_problem, required=True))
        return await asyncio.to_thread(scheduler.retry, job_id)

    #: The preview being taken, by lens position: a request meanwhile shares its answer (a
    #: preview is what the camera sees now; the web page and a `preview --watch` ask at once).
    previewing: dict[float | None, asyncio.Future[Any]] = {}

    async def on_rig(name: str, conn: Connection, call: Any) -> Any:
        log.info("rig %s asked by %s", name, conn.peer)
        while previewing:  # short and bounded: a command typed while a preview is watched waits
            await asyncio.wait(list(previewing.values()))
        return await asyncio.wrap_future(scheduler.rig_call(name, call))

    def angles(rig: RemoteRig) -> dict[str, float]:
        rotor, turntable = rig.angles()
        return {"rotor": rotor, "turntable": turntable}

    async def rig_move(params: dict[str, Any], conn: Connection) -> Any:
        p = Params(params, ("rotor", "turntable"))
        rotor, turntable = p.number("rotor", -360, 360), p.number("turntable", -1e6, 1e6)
        if rotor is None and turntable is None:
            raise RpcError(INVALID_PARAMS, "invalid params: give rotor and/or turntable (degrees)")

        def move(rig: RemoteRig) -> dict[str, float]:
            rig.move(rotor=rotor, turntable=turntable)
            return angles(rig)

        return await on_rig("move", conn, move)

    async def rig_home(params: dict[str, Any], conn: Connection) -> Any:
        Params(params, ())

        def home(rig: RemoteRig) -> dict[str, Any]:
            return {"message": rig.home(), **angles(rig)}

        return await on_rig("home", conn, home)

    async def rig_light(params: dict[str, Any], conn: Connection) -> Any:
        p = Params(params, ("on", "brightness"))
        on = params.get("on")
        if not isinstance(on, bool):
            raise RpcError(INVALID_PARAMS, "invalid params: on must be true or false")
        brightness = p.number("brightness", 0.0, 1.0)

        def light(rig: RemoteRig) -> dict[str, Any]:
            if on:
                rig.light.on(brightness)
            else:
                rig.light.off()
            return {"on": rig.light.is_on, "brightness": rig.light.brightness}

        return await on_rig("light", conn, light)

    async def rig_capture(params: dict[str, Any], conn: Connection) -> Any:
        p = Params(params, ("lens_position",))
        lens = p.number("lens_position", 0.0, 100.0)
        return await on_rig("capture", conn, lambda rig: _capture(rig, lens))

    async def preview(params: dict[str, Any], conn: Connection) -> Any:
        p = Params(params, ("lens_position",))
        lens = p.number("lens_position", 0.0, 100.0)
        running = previewing.get(lens)
        if running is None:
            log.debug("preview asked by %s", conn.peer)  # twice a second: not for the journal
            running = asyncio.ensure_future(asyncio.wrap_future(scheduler.rig_call(
                "preview", lambda rig: rig.preview(lens_position=lens))))
            previewing[lens] = running
            running.add_done_callback(_forget(previewing, lens))
        return await asyncio.shield(running)  # a caller that leaves does not cancel the others'

    async def rig_turn(params: dict[str, Any], conn: Connection) -> Any:
        p = Params(params, ("axis", "degrees"))
        axis = str(p.text("axis", required=True, choices=("rotor", "turntable")))
        degrees = p.number("degrees", -3600, 3600)
        if degrees is None:
            raise RpcError(INVALID_PARAMS, "invalid params: degrees is required")

        def turn(rig: RemoteRig) -> dict[str, float]:
            rig.turn_by(axis, degrees)
            return angles(rig)

        return await on_rig("turn", conn, turn)

    return {"status": status, "jobs": jobs, "jobs.broken": jobs_broken, "job": job,
            "subscribe": subscribe, "scan": scan, "upload": upload,
            "cancel": cancel, "retry": retry, "pause": pause, "continue": go_on,
            "rig.move": rig_move, "rig.home": rig_home,
            "rig.light": rig_light, "rig.capture": rig_capture, "rig.turn": rig_turn,
            "preview": preview}


def _forget(previewing: dict[float | None, asyncio.Future[Any]], lens: float | None
            ) -> Callable[[asyncio.Future[Any]], None]:
    """Done callback of a preview: no longer shared; its failure counts as seen (every caller
    still waiting has it raised, and callers that left need not)."""

    def forget(done: asyncio.Future[Any]) -> None:
        if previewing.get(lens) is done:
            del previewing[lens]
        if not done.cancelled():
            done.exception()

    return forget
