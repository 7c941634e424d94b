#!/usr/bin/env python3
"""Benchmark focus-stack fusion: quality against the simulated stack's ground truth, seconds and
peak RSS per stack, ours against the plain per-pixel max-Laplacian method in the same run.

A stack of ``--count`` frames at ``--size`` (default 12 MP x 5) is captured by the simulated
camera (depth of field and focus breathing, ``camera.focus.stack_range`` 3-6 dioptres); its
ground truth is the reference frame's view with everything in focus. Each method runs in a fresh
child process whose peak RSS is its own ``VmHWM`` (read by the child at its end: ``ru_maxrss``
would keep the peak of this process, which holds the ground truth, across the exec), against a
child that only imports numpy, OpenCV and Pillow:

- ours: ``openscan_pi.fusion.fuse_stack`` (alignment by ECC included);
- per-pixel: every frame decoded and warped whole by the alignment ours found (alignment not
  counted), each pixel taken from the frame with the largest |Laplacian| of its blurred
  grayscale (the method of OpenScan3 and most focus-stacking scripts), written as a JPEG of the
  same quality.

Sharpness is the mean gradient energy; PSNR is against the ground truth; both inside a 5 %
border (the edges of warped frames are made up). Rounds alternate the three children.

Usage:  python3 tools/bench_fusion.py [--size 4056x3040] [--count 5] [--rounds 3] [--quality 90]
                                     [--python INTERPRETER]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IMPORTS = "import numpy, cv2, PIL.Image, PIL.JpegImagePlugin"
#: Appended to each child: its peak RSS (kB) as the last line.
PEAK = "\nprint([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"

OURS = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from openscan_pi.fusion import fuse_stack
out, quality, frames = Path(sys.argv[2]), int(sys.argv[3]), [Path(p) for p in sys.argv[4:]]
result = fuse_stack(frames, out, exif_from=frames[len(frames) // 2], quality=quality)
print(json.dumps({"seconds": result.seconds, "align": result.align_seconds,
                  "blend": result.blend_seconds,
                  "matrices": [f.warp.matrix for f in result.frames]}))
"""

PER_PIXEL = r"""
import json, sys, time
from pathlib import Path
import cv2, numpy as np
from PIL import Image
sys.path.insert(0, sys.argv[1])
from openscan_pi.fusion.blend import fuse_max_laplacian
out, quality, matrices = Path(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
began = time.perf_counter()
frames = []
for path, matrix in zip(sys.argv[5:], matrices):
    frame = cv2.imread(path)
    height, width = frame.shape[:2]
    frame = cv2.warpAffine(frame, np.array(matrix, dtype=np.float64), (width, height),
                           flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE)
    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
fused = fuse_max_laplacian(cv2, frames)
Image.fromarray(fused).save(out, format="JPEG", quality=quality)
print(json.dumps({"seconds": time.perf_counter() - began}))
"""


PYTHON = [sys.executable]


def run(code: str, *args: str) -> tuple[float, float, dict[str, Any]]:
    """(wall s, peak RSS MB, the JSON the child printed) of a fresh Python running ``code``."""
    began = time.perf_counter()
    done = subprocess.run([*PYTHON, "-c", code + PEAK, *args], capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{code.strip().splitlines()[0][:60]} failed: {done.stderr[-2000:]}")
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-2]) if len(lines) > 1 else {}
    return wall, int(lines[-1]) / 1024, result


def make_stack(folder: Path, width: int, height: int, count: int,
               quality: int) -> tuple[list[Path], Any]:
    """The frames (captured by the simulated camera) and the ground truth (RGB array)."""
    from openscan_pi.config import load_config
    from openscan_pi.sim.camera import capture_stack
    from openscan_pi.sim.depth import render_sharp

    base = load_config(None, env={}).camera
    cfg = dataclasses.replace(base, resolution=(width, height), jpeg_quality=quality,
                              focus=dataclasses.replace(base.focus, stack=count))
    frames, lens = capture_stack(cfg, folder, rotor=20.0, turntable=30.0, index=0)
    return frames, render_sharp(width, height, 20.0, 30.0, lens[len(lens) // 2])


def read_rgb(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def best_single(frames: list[Path], matrices: list[Any], truth: Any) -> tuple[float, float]:
    """(sharpness, PSNR) of the sharpest single frame, warped onto the reference as ours is."""
    import cv2
    import numpy as np

    from openscan_pi.sim.depth import psnr, sharpness

    best = (0.0, 0.0)
    for path, matrix in zip(frames, matrices, strict=True):
        frame = cv2.imread(str(path))
        height, width = frame.shape[:2]
        frame = cv2.warpAffine(frame, np.array(matrix, dtype=np.float64), (width, height),
                               flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        best = max(best, (sharpness(rgb), psnr(rgb, truth)))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="4056x3040")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter of the measured children (e.g. a venv over apt's "
                             "python3-opencv, as a Pi runs it)")
    args = parser.parse_args()
    PYTHON[0] = args.python
    width, height = (int(v) for v in args.size.lower().split("x"))
    from openscan_pi.sim.depth import psnr, sharpness

    with tempfile.TemporaryDirectory(prefix="bench-fusion-", dir=ROOT / "build"
                                     if (ROOT / "build").is_dir() else None) as tmp:
        folder = Path(tmp)
        began = time.perf_counter()
        frames, truth = make_stack(folder, width, height, args.count, args.quality)
        print(f"stack: {args.count} x {width}x{height} simulated frames, quality {args.quality} "
              f"(rendered in {time.perf_counter() - began:.0f} s)\n")
        rows: dict[str, list[tuple[float, float, dict[str, Any]]]] = {
            "baseline": [], "ours": [], "per-pixel": []}
        paths = [str(p) for p in frames]
        for _ in range(args.rounds):
            rows["baseline"].append(run(IMPORTS))
            rows["ours"].append(run(OURS, str(ROOT), str(folder / "ours.jpg"), str(args.quality),
                                    *paths))
            matrices = rows["ours"][-1][2]["matrices"]
            rows["per-pixel"].append(run(PER_PIXEL, str(ROOT), str(folder / "pixel.jpg"),
                                         str(args.quality), json.dumps(matrices), *paths))
        truth_sharp = sharpness(truth)
        ours, pixel = read_rgb(folder / "ours.jpg"), read_rgb(folder / "pixel.jpg")
        single_sharp, single_psnr = best_single(frames, matrices, truth)
    base_rss = statistics.median(r[1] for r in rows["baseline"])

    def med(key: str, index: int) -> float:
        return statistics.median(r[index] for r in rows[key])

    def secs(key: str) -> float:
        return statistics.median(r[2]["seconds"] for r in rows[key])

    version = subprocess.run([args.python, "-c", "import cv2, numpy; print(cv2.__version__, "
                              "numpy.__version__)"], capture_output=True, text=True).stdout.split()
    print(f"{args.rounds} rounds, medians; peak RSS (VmHWM) of a fresh {args.python} with OpenCV "
          f"{version[0]}, numpy {version[1]}; baseline = {IMPORTS}\n")
    print("| method | sharpness (of the truth's) | PSNR vs truth | s per stack | peak RSS | "
          "above the imports |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| ground truth (all in focus) | {truth_sharp:.1f} (100 %) | - | - | - | - |")
    print(f"| best single frame | {single_sharp:.1f} ({single_sharp / truth_sharp:.0%}) | "
          f"{single_psnr:.2f} dB | - | - | - |")
    for key, label in (("ours", "ours (fuse_stack)"), ("per-pixel", "per-pixel max-Laplacian")):
        image = ours if key == "ours" else pixel
        value = sharpness(image)
        print(f"| {label} | {value:.1f} ({value / truth_sharp:.0%}) | {psnr(image, truth):.2f} dB"
              f" | {secs(key):.2f} | {med(key, 1):.1f} MB | {med(key, 1) - base_rss:.1f} MB |")
    print(f"| baseline: {IMPORTS} | - | - | - | {base_rss:.1f} MB | - |")
    align = statistics.median(r[2]["align"] for r in rows["ours"])
    blend = statistics.median(r[2]["blend"] for r in rows["ours"])
    print(f"\nours: {align:.2f} s aligning (ECC, and each frame decoded, warped and written to its"
          f" work file), {blend:.2f} s blending and writing the JPEG")
    print(f"ratios ours / per-pixel: time {secs('ours') / secs('per-pixel'):.2f} x, peak RSS "
          f"{med('ours', 1) / med('per-pixel', 1):.2f} x, PSNR "
          f"{psnr(ours, truth) - psnr(pixel, truth):+.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
