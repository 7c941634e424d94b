#!/usr/bin/env python3
"""Write a small sample image set: PNG views of a textured sphere turning on its axis.

Standard library only, so it runs on a fresh machine before anything is installed:

    python3 tools/make_sample_set.py /tmp/sample-set --count 24
"""

from __future__ import annotations

import argparse
import math
import struct
import zlib
from pathlib import Path


def _png(width: int, height: int, rows: list[bytes]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + row for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


def render(angle_deg: float, width: int = 256, height: int = 192) -> bytes:
    """A checkered, lit sphere seen after turning it by ``angle_deg`` about its vertical axis."""
    turn = math.radians(angle_deg)
    radius = min(width, height) * 0.42
    cx, cy = width / 2, height / 2
    rows = []
    for y in range(height):
        row = bytearray()
        for x in range(width):
            dx, dy = (x - cx) / radius, (cy - y) / radius
            d2 = dx * dx + dy * dy
            if d2 > 1.0:
                row += bytes((40 + y // 8, 40 + y // 8, 48 + y // 6))  # backdrop gradient
                continue
            dz = math.sqrt(1.0 - d2)
            lon = math.atan2(dx, dz) + turn
            lat = math.asin(dy)
            check = (int(lon / (math.pi / 8)) + int((lat + 2) / (math.pi / 8))) % 2
            light = 0.25 + 0.75 * max(0.0, 0.5 * dx + 0.5 * dy + 0.7 * dz)
            base = (220, 120, 40) if check else (40, 140, 200)
            row += bytes(min(255, int(c * light)) for c in base)
        rows.append(bytes(row))
    return _png(width, height, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where to write the images (created)")
    parser.add_argument("--count", type=int, default=24, help="number of images (default 24)")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    for i in range(args.count):
        (args.folder / f"view_{i:03d}.png").write_bytes(render(360.0 * i / args.count))
    print(f"{args.count} images in {args.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
