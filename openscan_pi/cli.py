"""The ``openscan-pi`` command line: parse, load the config, call the library, print.

Every failure ends as one line on stderr naming the cause and the fix, with a non-zero exit
status (78 for a broken config); ``--debug`` adds the traceback. ``--json`` prints only JSON on
stdout.
"""

from __future__ import annotations

import os
import select
import sys

from openscan_pi import __version__
from openscan_pi.errors import EX_INTERRUPTED, EX_PIPE, UserError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (`status` starts quickly)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

EPILOG = """\
configuration: --config FILE, else $OPENSCAN_PI_CONFIG, else /etc/openscan-pi/config.yaml,
else the built-in defaults (see config/openscan-pi.yaml). $OPENSCAN_PI_TOKEN overrides
cloud.token.

examples:
  openscan-pi scan --positions 100 --simulate
  openscan-pi daemon --simulate            (then, in another terminal:)
  openscan-pi scan --positions 60 --wait
  openscan-pi status --watch
  openscan-pi plan --positions 100
  openscan-pi move --rotor 30 --turntable 90
  openscan-pi capture /tmp/test.jpg --simulate
  openscan-pi preview --watch
  openscan-pi upload ~/scans/vase --wait --out ~/models/vase
  openscan-pi token
  openscan-pi download vase-1700000000000.zip --out ~/models/vase
"""


def _add_common(p: argparse.ArgumentParser, *, simulate: bool = True) -> None:
    p.add_argument("--json", action="store_true",
                   help="print only JSON on stdout (for scripts); no progress output")
    if simulate:
        p.add_argument("--simulate", action="store_true",
                       help="use the simulated rig and the bundled local cloud (cloud.url: local)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``openscan-pi`` (global options come before the command)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="openscan-pi",
        description="Scanner daemon and tools for the OpenScan Classic and Mini: capture, upload "
                    "to the OpenScan Cloud, and fetch the 3D model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE", help="read this config file (YAML)")
    parser.add_argument("--debug", action="store_true",
                        help="log everything to stderr and show tracebacks")
    parser.add_argument("--version", action="version", version=f"openscan-pi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = sub.add_parser(
        "upload", help="upload a folder of photos or a zip to the OpenScan Cloud",
        description="Upload an image set (a folder of .jpg/.jpeg/.png/.tif/.tiff/.dng, searched "
                    "recursively, or a zip of them) to the OpenScan Cloud and start processing. "
                    "The set is streamed as a zip made on the fly: nothing is copied to disk. "
                    "The upload is a job (`status`, `jobs`, `cancel`, `retry` cover it), handed "
                    "to the daemon when one listens, else run here. Interrupted? Run the same "
                    "command again: it continues where it stopped and never creates a second "
                    "project.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  openscan-pi upload ~/scans/vase\n"
               "  openscan-pi upload vase.zip --project vase-v2 --wait --out ~/models/vase\n")
    up.add_argument("path", metavar="PATH", help="folder of images, or a zip of images")
    up.add_argument("--project", metavar="NAME",
                    help="cloud project name ([A-Za-z0-9_.-]; default: <set name>-<epoch ms>.zip)")
    up.add_argument("--wait", action="store_true",
                    help="poll until the model is ready, then download it into --out")
    up.add_argument("--out", metavar="DIR",
                    help="folder for the model with --wait (default: ./<project name>); must "
                         "not exist or be empty")
    _add_common(up)
    up.set_defaults(handler="cloud.upload")

    tok = sub.add_parser("token", help="show the token's credit and limits",
                         description="Ask the cloud for the configured token's credit and limits "
                                     "(getTokenInfo).")
    _add_common(tok)
    tok.set_defaults(handler="cloud.token")

    dl = sub.add_parser(
        "download", help="wait for a started cloud project and fetch its model",
        description="Poll a started project until its model is ready, then download and extract "
                    "it safely into --out (never half there).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  openscan-pi download vase-1700000000000.zip --out ~/models/vase\n")
    dl.add_argument("project", metavar="PROJECT", help="the cloud project name")
    dl.add_argument("--out", metavar="DIR",
                    help="folder for the model (default: ./<project name>); must not exist or "
                         "be empty")
    _add_common(dl)
    dl.set_defaults(handler="cloud.download")
    _add_job_commands(sub)
    _add_rig_commands(sub)

    dr = sub.add_parser(
        "doctor", help="check the setup: config, GPIO, camera, groups, daemon, disk, cloud, clock",
        description="Check what a scan needs, one line each with the fix for what is wrong: "
                    "config, pins, camera, groups, socket, data_dir, cloud, token, clock. Nothing "
                    "moves and no photo is taken. Exit status 0 when no check failed (warnings "
                    "allowed), 1 otherwise.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  openscan-pi doctor\n"
               "  openscan-pi doctor --json | jq '.checks[] | select(.status != \"ok\")'\n")
    _add_common(dr)
    dr.set_defaults(handler="doctor.doctor")
    return parser


def _add_job_commands(sub: argparse._SubParsersAction) -> None:
    """``scan``, ``jobs``, ``retry``, ``pause``, ``continue``, ``cancel``, ``status``,
    ``daemon``."""
    import argparse

    sc = sub.add_parser(
        "scan", help="a whole scan: capture, upload, process, download the model",
        description="Capture N positions (see `plan`), upload the set to the OpenScan Cloud, wait "
                    "for the model and download it into the job's folder under daemon.data_dir. "
                    "With a daemon listening the job is handed to it (--wait follows it); with "
                    "none it runs in this process. Every image and step is on disk before it is "
                    "reported: after Ctrl-C, a crash or a power cut, `openscan-pi retry JOB` "
                    "continues where it stopped (the daemon does that by itself).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  openscan-pi scan --positions 100 --simulate\n"
               "  openscan-pi scan --positions 60 --project vase.zip\n")
    sc.add_argument("--positions", type=int, required=True, metavar="N",
                    help="number of camera positions (per pass)")
    sc.add_argument("--passes", type=int, default=1, metavar="K",
                    help="passes into one image set and one cloud project (default 1): after "
                         "each pass but the last the job waits (`waiting`, light off, motors "
                         "released) for you to turn the object over and run `openscan-pi "
                         "continue`; each pass is planned from where the rig is")
    sc.add_argument("--focus-stack", type=int, metavar="K",
                    help="photos at each position, the lens moved evenly over "
                         "camera.focus.stack_range between them, fused into one sharp photo on "
                         "the device (1 = no stack; default camera.focus.stack). Needs a camera "
                         "with a focus motor (Camera Module 3) and OpenCV; for small objects "
                         "that one focus cannot cover")
    sc.add_argument("--project", metavar="NAME", help="cloud project name (default: "
                    "openscan-<epoch ms>.zip)")
    sc.add_argument("--wait", action="store_true",
                    help="with the daemon: follow the job to its end (exit 0 only when done); "
                         "a scan in this process always does")
    _add_common(sc)
    sc.set_defaults(handler="jobs.scan")

    jb = sub.add_parser("jobs", help="list the jobs and their states",
                        description="Every job under daemon.data_dir/jobs with its state, then "
                                    "the job folders that cannot be run (with the fix).")
    jb.add_argument("--broken", action="store_true",
                    help="list only the job folders that cannot be run (--json: their "
                         "{id, path, problem, fix})")
    _add_common(jb, simulate=False)
    jb.set_defaults(handler="jobs.jobs")

    rt = sub.add_parser("retry", help="continue a failed or interrupted job",
                        description="Continue a job from its last durable step: scanning at the "
                                    "first missing position, uploading from its journal, ...")
    rt.add_argument("job", metavar="JOB", help="the job id (see `openscan-pi jobs`)")
    rt.add_argument("--wait", action="store_true",
                    help="with the daemon: follow the job to its end (exit 0 only when done)")
    _add_common(rt)
    rt.set_defaults(handler="jobs.retry")

    pa = sub.add_parser(
        "pause", help="pause a scan before its next position (the running one by default)",
        description="Pause a scan: the move and photo under way finish, the light goes off, and "
                    "the job waits, `paused`, with the motors released after "
                    "rig.idle_disable_s. Durable: a restarted daemon keeps it paused. "
                    "`openscan-pi continue` goes on from the next position; `cancel` works too. "
                    "Needs the daemon (a scan run in a terminal stops with Ctrl-C; `retry` goes "
                    "on).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  openscan-pi pause\n  openscan-pi continue\n")
    pa.add_argument("job", metavar="JOB", nargs="?", help="the job id (see `openscan-pi jobs`)")
    _add_common(pa, simulate=False)
    pa.set_defaults(handler="jobs.pause")

    co = sub.add_parser(
        "continue", help="go on with a paused scan (the last one paused by default)",
        description="A paused scan goes on from its next position (in the daemon when it "
                    "listens, else in this process).")
    co.add_argument("job", metavar="JOB", nargs="?", help="the job id (see `openscan-pi jobs`)")
    co.add_argument("--wait", action="store_true",
                    help="with the daemon: follow the job to its end (exit 0 only when done)")
    _add_common(co)
    co.set_defaults(handler="jobs.go_on")

    cn = sub.add_parser("cancel", help="cancel a job (the running one by default)",
                        description="Cancel a job in any state; the running one when no JOB is "
                                    "given. A running scan stops within one motor step, an "
                                    "upload at once; the images stay on disk.")
    cn.add_argument("job", metavar="JOB", nargs="?", help="the job id (see `openscan-pi jobs`)")
    _add_common(cn, simulate=False)
    cn.set_defaults(handler="daemon.cancel", light=True)

    st = sub.add_parser(
        "status", help="what the daemon is doing: state, job, progress, model",
        description="The daemon's state and its current or last job: progress with ETA, the "
                    "cloud's status, the model's folder. Exit status 3 when no daemon runs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  openscan-pi status\n  openscan-pi status --watch\n"
               "  openscan-pi status --json | jq .job.state\n")
    st.add_argument("--watch", action="store_true",
                    help="follow every change until Ctrl-C (with --json: one object per line)")
    _add_common(st, simulate=False)
    st.set_defaults(handler="daemon.status", light=True)

    dm = sub.add_parser(
        "daemon", help="run the service in the foreground (what systemd starts)",
        description="Run the daemon: it owns the rig, runs the jobs (continuing unfinished ones "
                    "first) and answers on daemon.socket (JSON-RPC 2.0 lines; see the README). "
                    "Logs go to stderr. Stop it with Ctrl-C or SIGTERM: jobs continue at the "
                    "next start.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  openscan-pi daemon --simulate\n")
    dm.add_argument("--simulate", action="store_true",
                    help="use the simulated rig and the bundled local cloud (cloud.url: local)")
    dm.set_defaults(handler="daemon.daemon")


def _add_rig_commands(sub: argparse._SubParsersAction) -> None:
    """``plan``, ``move``, ``home``, ``light``, ``capture``, ``preview``, ``calibrate``."""
    import argparse

    raw = argparse.RawDescriptionHelpFormatter
    pl = sub.add_parser(
        "plan", help="show the camera positions a scan of N would visit",
        description="The camera positions a scan of N positions would visit, in capture order: "
                    "a Fibonacci lattice over the rotor band plan.rotor_min..plan.rotor_max "
                    "(even coverage), ordered to need the least motor time. Rotor 0 = camera "
                    "level with the object, +90 = above.",
        formatter_class=raw,
        epilog="examples:\n  openscan-pi plan --positions 100\n"
               "  openscan-pi plan --positions 40 --json | jq '.[0]'\n")
    pl.add_argument("--positions", type=int, required=True, metavar="N",
                    help="number of camera positions")
    _add_common(pl)
    pl.set_defaults(handler="rig.plan")

    mv = sub.add_parser(
        "move", help="turn the rotor and/or the turntable to an angle",
        description="Move the rotor (elevation, degrees: 0 = level, +90 = above) and/or the "
                    "turntable (degrees; it takes the shortest way round). Both move at once.",
        formatter_class=raw, epilog="example:\n  openscan-pi move --rotor 30 --turntable 90\n")
    mv.add_argument("--rotor", type=float, metavar="DEG", help="rotor elevation in degrees")
    mv.add_argument("--turntable", type=float, metavar="DEG", help="turntable angle in degrees")
    _add_common(mv)
    mv.set_defaults(handler="rig.move")

    hm = sub.add_parser(
        "home", help="find the rotor's endstop and set its angle",
        description="Move the rotor toward its endstop until it triggers, set the angle "
                    "rig.endstop.angle, and back off. Without an endstop the rotor's start "
                    "angle comes from rig.rotor.start_angle; nothing moves.")
    _add_common(hm)
    hm.set_defaults(handler="rig.home")

    li = sub.add_parser("light", help="switch the ring light on or off",
                        description="Switch both ring-light channels on (at --brightness where "
                                    "the light is PWM-dimmed) or off.")
    li.add_argument("state", choices=("on", "off"))
    li.add_argument("--brightness", type=float, metavar="0..1",
                    help="brightness for PWM lights (default rig.light.brightness)")
    _add_common(li)
    li.set_defaults(handler="rig.light")

    cp = sub.add_parser(
        "capture", help="take one photo at the current position",
        description="Take one photo with the configured camera (settings from camera.*) at the "
                    "rig's current position and save it as a JPEG with EXIF (rig angles).",
        formatter_class=raw, epilog="example:\n  openscan-pi capture /tmp/test.jpg\n")
    cp.add_argument("file", metavar="FILE", help="where to save the JPEG")
    cp.add_argument("--lens-position", type=float, metavar="DIOPTRES",
                    help="manual focus for this photo (default: camera.focus)")
    _add_common(cp)
    cp.set_defaults(handler="rig.capture")

    pv = sub.add_parser(
        "preview", help="see what the camera sees now: a small JPEG, the focus and the exposure",
        description=(
            "Save what the camera sees now as a small JPEG (at most 640 pixels wide) in --out,\n"
            "and print on one line the focus figure and the exposure in use.\n\n"
            "The focus figure is the variance of the Laplacian over the centre third of the\n"
            "frame: the more fine detail is sharp there, the higher it is. It compares frames\n"
            "of the same scene and light only: place the object, then turn the focus ring (or\n"
            "try --lens-position values) until the figure is at its highest.\n\n"
            "--watch refreshes the file and the line about twice a second until Ctrl-C; open\n"
            "the file in a viewer that reloads it. Goes through the daemon when it runs (it\n"
            "owns the camera), and is refused while it scans."),
        formatter_class=raw,
        epilog="examples:\n  openscan-pi preview\n"
               "  openscan-pi preview --watch --out /tmp/preview.jpg\n"
               "  openscan-pi preview --lens-position 4.5\n"
               "  openscan-pi preview --json | jq .focus\n")
    pv.add_argument("--out", metavar="FILE",
                    help="where to save the JPEG (default: preview.jpg in this folder); always "
                         "replaced whole, never seen half written")
    pv.add_argument("--watch", action="store_true",
                    help="refresh about twice a second until Ctrl-C (with --json: one object "
                         "per refresh)")
    pv.add_argument("--lens-position", type=float, metavar="DIOPTRES",
                    help="move the lens there first (cameras with a focus motor; 0 is infinity, "
                         "higher is nearer). Default: camera.focus.lens_position in manual mode, "
                         "else the lens stays where it is (no autofocus cycle)")
    _add_common(pv)
    pv.set_defaults(handler="preview.preview")

    cal = sub.add_parser(
        "calibrate", help="measure an axis's steps per revolution",
        description="Step 1: `openscan-pi calibrate AXIS` turns the axis by --degrees using the "
                    "configured steps_per_rev (mark its start first). Step 2: measure how far it "
                    "really turned and run `openscan-pi calibrate AXIS --degrees D --measured M "
                    "--write`: steps_per_rev becomes old × D / M and is written to the config "
                    "file in use (or /etc/openscan-pi/config.yaml; a .bak copy is kept).",
        formatter_class=raw,
        epilog="example:\n  openscan-pi calibrate turntable --degrees 360\n"
               "  openscan-pi calibrate turntable --degrees 360 --measured 352.5 --write\n")
    cal.add_argument("axis", choices=("rotor", "turntable"))
    cal.add_argument("--degrees", type=float, metavar="D",
                     help="how far to turn (default: 360 for the turntable, 60 for the rotor, "
                          "which must stay within rig.rotor.min_angle..max_angle)")
    cal.add_argument("--measured", type=float, metavar="M",
                     help="how far it really turned, in degrees (computes the new value)")
    cal.add_argument("--write", action="store_true",
                     help="save the new steps_per_rev into the config file")
    _add_common(cal)
    cal.set_defaults(handler="rig.calibrate")


def _reader_gone() -> bool:
    """After a BrokenPipeError: True when it was stdout's (or stderr's) reader that went away
    (``openscan-pi status | head -1``); stdout then points at /dev/null, so that nothing more
    fails on the way out."""
    import contextlib

    poller = select.poll()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            poller.register(stream.fileno(), 0)
    if not any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0)):
        return False
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return True


STATUS_OPTIONS = ("--json", "--watch")


def quick_status_args(argv: Sequence[str]) -> argparse.Namespace | None:
    """``[--config FILE] status [--json] [--watch]`` read as :func:`build_parser` reads it, without
    importing argparse (``status`` is typed over SSH all day), or None for any other command line
    (then argparse reads it, with its help and its errors)."""
    words = list(argv)
    config = None
    if words[:1] == ["--config"] and len(words) > 1 and not words[1].startswith("-"):
        config, words = words[1], words[2:]
    elif words[:1] and words[0].startswith("--config="):
        config, words = words[0].partition("=")[2], words[1:]
    if words[:1] != ["status"] or len(set(words[1:])) != len(words) - 1 or not set(
            words[1:]) <= set(STATUS_OPTIONS):
        return None
    from types import SimpleNamespace

    return SimpleNamespace(  # type: ignore[return-value]  # the attributes argparse would set
        config=config, debug=False, command="status", json="--json" in words,
        watch="--watch" in words, handler="daemon.status", light=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``openscan-pi``; returns the exit status."""
    args = quick_status_args(sys.argv[1:] if argv is None else argv)
    if args is None:
        args = build_parser().parse_args(argv)
    light = getattr(args, "light", False)  # status, cancel: load the config only when needed
    if args.debug or not light:
        from openscan_pi.logs import setup_logging

        setup_logging(debug=args.debug)
    try:
        cfg = None
        if not light:
            from openscan_pi.config import SIMULATE_OVERRIDES, load_config

            simulate = getattr(args, "simulate", False)
            cfg = load_config(args.config, overrides=SIMULATE_OVERRIDES if simulate else None)
            setup_logging(debug=args.debug, secrets=(cfg.cloud.token, cfg.cloud.password))
        module, _, name = args.handler.partition(".")
        if module != "cloud" and not light:  # may open the rig: lgpio's FIFO goes to a folder
            # of this user
            from openscan_pi.rig.lgpio_import import ensure_workdir

            ensure_workdir()
        # __import__ with a fromlist gives the submodule itself (importlib costs `status` 0.5 ms)
        handler = getattr(__import__(f"openscan_pi.commands.{module}", fromlist=[name]), name)
        status = int(handler(args, cfg) or 0)
        sys.stdout.flush()  # a reader that has gone shows here, not in the interpreter's last flush
        return status
    except BrokenPipeError:
        if not _reader_gone():
            raise
        return EX_PIPE
    except UserError as exc:
        if args.debug:
            import logging

            logging.getLogger("openscan_pi").exception("failed")
        print(f"openscan-pi: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("openscan-pi: interrupted; run the same command again to continue", file=sys.stderr)
        return EX_INTERRUPTED
