#!/usr/bin/env python3
"""Benchmark the photo encoder: simplejpeg's ``encode_jpeg_yuv_planes`` against the Pillow fallback.

A scanner with simplejpeg older than 1.8.0 (no ``encode_jpeg_yuv_planes``) encodes every photo with
Pillow instead, which first scales both chroma planes up to full size. This measures what that
costs for one frame of ``--size`` (default 4056x3040, a 12 MP HQ / Camera Module 3 still): the wall
time of one encode (best of ``--repeat``) and how far the encodes raise the peak RSS of a process that
holds the frame already, each encoder in a fresh child process, as ratios against simplejpeg in
the same run.

The frame is a picamera2-like YUV420 array (a smooth pattern with noise, so the JPEG is of a
realistic size), encoded through the adapter's own ``encode_jpeg_yuv420`` with our EXIF block.

Usage:  python3 tools/bench_jpeg.py [--size 4056x3040] [--repeat 5]
Needs numpy, Pillow and simplejpeg >= 1.8.0 (without it only the Pillow row is printed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The child's synthetic 4:2:0 frame of ``width`` x ``height`` (gradients and noise, as
#: photos compress), in ``frame``; shared with bench_preview.py.
SYNTHETIC_FRAME = r"""
rng = np.random.default_rng(1)
frame = np.empty((height * 3 // 2, width), np.uint8)  # filled in blocks: no frame-sized temporaries
cols = np.arange(width, dtype=np.uint16)
for top in range(0, height, 64):
    rows = np.arange(top, min(top + 64, height), dtype=np.uint16)[:, None]
    block = ((rows + cols) // 28).astype(np.uint8)
    block += rng.integers(0, 24, block.shape, dtype=np.uint8)
    frame[top:top + len(rows)] = block
frame[height:] = 128  # U and V rows (half the stride each): grey
"""

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from openscan_pi.rig.camera import exif_bytes
from openscan_pi.rig.picam import encode_jpeg_yuv420, yuv420_planes, yuv_planes_encoder

width, height, repeat, which = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
""" + SYNTHETIC_FRAME + r"""encoder = yuv_planes_encoder()[0] if which == "simplejpeg" else None
if which == "simplejpeg" and encoder is None:
    sys.exit(3)
exif = exif_bytes(orientation=1, rotor=10.0, turntable=20.0, index=1, lens_position=None,
                  make="bench", model="bench")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
best = float("inf")
for _ in range(repeat):
    y, u, v = yuv420_planes(frame, width, height)
    began = time.perf_counter()
    data = encode_jpeg_yuv420(y, u, v, quality=90, exif=exif, planes_encoder=encoder)
    best = min(best, time.perf_counter() - began)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": best, "extra_kb": peak - before, "bytes": len(data)}))
"""


def run(which: str, width: int, height: int, repeat: int) -> dict[str, float] | None:
    """One child process encoding with ``which``; None when that encoder is not installed."""
    # Without an encoder given the adapter looks simplejpeg up: the Pillow child hides it, as on a
    # scanner whose simplejpeg lacks encode_jpeg_yuv_planes.
    code = CHILD if which == "simplejpeg" else "import sys; sys.modules['simplejpeg'] = None\n" + CHILD
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT), str(width), str(height),
                           str(repeat), which], capture_output=True, text=True, check=False)
    if proc.returncode == 3:
        return None
    if proc.returncode != 0:
        raise SystemExit(f"{which}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4056x3040", help="frame size WxH")
    parser.add_argument("--repeat", type=int, default=5, help="encodes per encoder (the best counts)")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.lower().split("x"))
    results = {name: run(name, width, height, max(1, args.repeat)) for name in ("simplejpeg", "Pillow")}
    base = results["simplejpeg"]
    print(f"One {width}x{height} YUV420 frame to JPEG (quality 90, our EXIF), Python "
          f"{sys.version.split()[0]}; memory the encode adds to a process that holds the frame:\n")
    print("| encoder | encode (s) | × simplejpeg | memory added (MB) | × simplejpeg | JPEG (MB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        if r is None:
            print(f"| {name} | not installed (simplejpeg >= 1.8.0 needed) | | | | |")
            continue
        ratio_t = f"{r['seconds'] / base['seconds']:.2f}" if base else "—"
        ratio_m = f"{r['extra_kb'] / max(base['extra_kb'], 1):.1f}" if base else "—"
        print(f"| {name} | {r['seconds']:.3f} | {ratio_t} | {r['extra_kb'] / 1024:.0f} | {ratio_m} | "
              f"{r['bytes'] / 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
