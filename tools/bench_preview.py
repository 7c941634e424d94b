#!/usr/bin/env python3
"""Benchmark a preview of the Pi camera's frame against the photo the same frame becomes.

What the rig worker does with one 12 MP frame (``--size``, default 4056x3040) for a preview:
the focus figure over the centre third of the whole-resolution Y plane, each plane scaled down
to 640 wide with a box filter and one small JPEG (``openscan_pi.rig.preview.preview_of_planes``);
against the baseline, what it does with the same frame for a photo (``encode_jpeg_yuv420`` with
our EXIF, simplejpeg when it has ``encode_jpeg_yuv_planes``, else Pillow). Each in a fresh child
process that holds the frame already: the wall time of one (best of ``--repeat``) and how far it
raises the peak RSS, as ratios against the photo in the same run. The frame's capture itself
(the same for both) is not timed.

Usage:  python3 tools/bench_preview.py [--size 4056x3040] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench_jpeg import SYNTHETIC_FRAME  # the same frame as the photo's benchmark

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from openscan_pi.rig.camera import exif_bytes
from openscan_pi.rig.picam import encode_jpeg_yuv420, yuv420_planes, yuv_planes_encoder
from openscan_pi.rig.preview import preview_of_planes

width, height, repeat, which = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
""" + SYNTHETIC_FRAME + r"""encoder, name = yuv_planes_encoder()
exif = exif_bytes(orientation=1, rotor=10.0, turntable=20.0, index=1, lens_position=None,
                  make="bench", model="bench")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
best = float("inf")
for _ in range(repeat):
    y, u, v = yuv420_planes(frame, width, height)
    began = time.perf_counter()
    if which == "preview":
        data = preview_of_planes(y, u, v, exposure_us=10000, gain=1.0, lens_position=None).jpeg
    else:
        data = encode_jpeg_yuv420(y, u, v, quality=90, exif=exif, planes_encoder=encoder)
    best = min(best, time.perf_counter() - began)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": best, "extra_kb": peak - before, "bytes": len(data),
                  "encoder": name}))
"""


def run(which: str, width: int, height: int, repeat: int) -> dict[str, float]:
    """One child process: ``which`` (``preview`` or ``photo``) on a frame it holds."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(width), str(height),
                          str(repeat), which], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4056x3040", help="frame size, WIDTHxHEIGHT")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each, best taken")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    photo = run("photo", width, height, args.repeat)
    preview = run("preview", width, height, args.repeat)
    print(f"{width}x{height} frame, best of {args.repeat}; the photo encoded by "
          f"{photo['encoder'].split(' ')[0]}\n")
    print("| | time (s) | × photo | memory added (MB) | × photo | JPEG (kB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, result in (("photo (baseline)", photo), ("preview", preview)):
        print(f"| {label} | {result['seconds']:.3f} | {result['seconds'] / photo['seconds']:.2f} "
              f"| {result['extra_kb'] / 1024:.0f} | "
              f"{result['extra_kb'] / max(1, photo['extra_kb']):.1f} | {result['bytes'] / 1000:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
