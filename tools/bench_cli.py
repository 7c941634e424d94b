"""How long ``openscan-pi status`` takes against ``python -c pass``, installed as pip installs it.

A throwaway venv of ``--python`` (default: this interpreter) without site-packages, holding a
copy of this checkout's ``openscan_pi`` compiled to bytecode and the console script pip writes
(so that nothing else, such as a ``.pth`` file of the machine or a missing ``.pyc``, is measured;
PyYAML and the other libraries are reached through a path entry). One simulated daemon
(``tools/daemon_harness.py``) listens on a socket its config file sets. Measured in alternating
rounds, each against ``python -c pass`` of the same venv:

- ``--config CFG status`` with the daemon answering (the config sets ``daemon.socket``);
- ``status`` with no config file and no daemon on the default socket (exit status 3);
- ``--config CFG status`` with the daemon stopped (exit status 3: the whole config is then
  loaded, so that a broken one is reported instead).

Usage::

    python3 tools/bench_cli.py [--python /usr/bin/python3] [--runs 30] [--source CHECKOUT] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from daemon_harness import Daemon, cli_env, log, tree_state  # noqa: E402

#: The console script pip writes for ``openscan-pi = openscan_pi.cli:main``.
SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from openscan_pi.cli import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def make_venv(folder: Path, python: str, source: Path) -> tuple[str, str]:
    """The venv's interpreter and its ``openscan-pi``."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(folder)], check=True)
    exe = str(folder / "bin" / "python")
    site = subprocess.run([exe, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    shutil.copytree(source / "openscan_pi", Path(site) / "openscan_pi",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([exe, "-m", "compileall", "-q", str(Path(site) / "openscan_pi")], check=True)
    libs = subprocess.run([python, "-c", "import os, yaml; print(os.path.dirname(os.path.dirname("
                                         "yaml.__file__)))"], capture_output=True, text=True)
    if libs.returncode == 0:  # the libraries the full config load needs, as a path entry only
        (Path(site) / "libraries.pth").write_text(libs.stdout.strip() + "\n")
    script = folder / "bin" / "openscan-pi"
    script.write_text(SCRIPT.format(python=exe))
    script.chmod(0o755)
    return exe, str(script)


def timed(cmd: list[str], env: dict[str, str], expect: int) -> float:
    began = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    took = time.perf_counter() - began
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(cmd)}: exit status {done.returncode}, not {expect}: "
                         f"{done.stderr.decode()[-500:]}")
    return took


def measure(cases: dict[str, tuple[list[str], int]], base: list[str], env: dict[str, str],
            runs: int) -> dict[str, dict[str, float]]:
    """Alternating rounds: each case, then ``python -c pass``; medians and ratios."""
    for cmd, expect in cases.values():
        timed(cmd, env, expect)  # warm the page cache
    times: dict[str, list[float]] = {name: [] for name in cases}
    pairs: dict[str, list[float]] = {name: [] for name in cases}
    bases: list[float] = []
    for i in range(runs):
        for name, (cmd, expect) in (cases.items() if i % 2 else reversed(cases.items())):
            ours, baseline = timed(cmd, env, expect), timed(base, env, 0)
            times[name].append(ours)
            bases.append(baseline)
            pairs[name].append(ours / baseline)
    base_ms = statistics.median(bases) * 1e3
    return {name: {"ms": statistics.median(t) * 1e3, "base_ms": base_ms,
                   "ratio": statistics.median(t) * 1e3 / base_ms,
                   "pair_ratio": statistics.median(pairs[name])} for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the venv")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="the checkout whose openscan_pi is measured (default: this one; e.g. a "
                             "`git worktree` of an older commit to compare)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="osbc", dir="/tmp"))
    state = tree_state() if args.source == ROOT else str(args.source)
    try:
        exe, script = make_venv(root / "venv", args.python, args.source)
        env = cli_env()
        env.pop("PYTHONPATH", None)  # the venv's copy, nothing from the developer's shell
        env["XDG_RUNTIME_DIR"] = str(root / "xdg")  # no daemon on the default socket
        (root / "xdg").mkdir()
        (root / "d").mkdir()
        daemon = Daemon(root / "d", resolution=(640, 480), time_scale=0.02, processing_s=1.0)
        log(f"daemon answered after {daemon.start():.2f} s")
        try:
            cfg = str(daemon.config)
            up = measure({"--config CFG status, daemon answering": ([script, "--config", cfg, "status"], 0),
                          "status, no config file, no daemon": ([script, "status"], 3)},
                         [exe, "-c", "pass"], env, args.runs)
        finally:
            daemon.stop()
        down = measure({"--config CFG status, daemon stopped": ([script, "--config", cfg, "status"], 3)},
                       [exe, "-c", "pass"], env, args.runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results = {**up, **down}
    if args.json:
        print(json.dumps({"tree": state, "python": args.python, "runs": args.runs,
                          "results": results}, indent=2))
        return 0
    print(f"{state}; a venv of {args.python}, {args.runs} alternating runs each\n")
    print("| command | wall (median) | `python -c pass` | ratio of medians (median of pair ratios) |")
    print("| --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['ms']:.1f} ms | {r['base_ms']:.1f} ms | {r['ratio']:.2f} × "
              f"({r['pair_ratio']:.2f} ×) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
