"""Focus stacks fused on the device: sharper than every frame, near the ground truth, aligned,
written whole with the reference's EXIF, or refused in one line naming the frame."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest
from PIL import Image

from openscan_pi.fusion import FusionError, blend, fuse_stack, remove_leftovers
from openscan_pi.rig.camera import TAG_IMAGE_DESCRIPTION
from openscan_pi.sim.depth import lens_view, psnr, sharpness
from tests.fusion_stack import Stack, aligned_frames, jpeg_round_trip, make_stack, read_rgb

pytestmark = pytest.mark.skipif(find_spec("cv2") is None, reason=(
    "OpenCV is not installed (pip install opencv-python-headless, or apt's python3-opencv)"))

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return make_stack(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="module")
def fused(stack: Stack, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    out = tmp_path_factory.mktemp("fused") / "IMG_0007.jpg"
    return fuse_stack(stack.frames, out, exif_from=stack.frames[stack.reference],
                      quality=stack.quality)


def test_fused_is_sharper_than_every_frame_and_near_the_truth(stack: Stack, fused) -> None:  # noqa: ANN001
    import cv2

    truth = stack.truth()
    image = read_rgb(fused.path)
    frames = aligned_frames(stack, [a.warp.matrix for a in fused.frames])
    best_frame = max(sharpness(frame) for frame in frames)
    assert sharpness(image) > 1.05 * best_frame
    assert sharpness(image) >= 0.95 * sharpness(truth)
    # The plain per-pixel method on the same aligned frames, written at the same quality.
    plain = jpeg_round_trip(blend.fuse_max_laplacian(cv2, frames), stack.quality)
    assert psnr(image, truth) > psnr(plain, truth)
    assert psnr(image, truth) > 30


def test_alignment_finds_the_lens_breathing(stack: Stack, fused) -> None:  # noqa: ANN001
    assert fused.reference == 2 and fused.skipped == []
    assert (fused.width, fused.height) == (stack.width, stack.height)
    ref_scale = lens_view(stack.width, stack.height, stack.lens[fused.reference])[0]
    for lens, alignment in zip(stack.lens, fused.frames, strict=True):
        expected = lens_view(stack.width, stack.height, lens)[0] / ref_scale
        assert alignment.scale == pytest.approx(expected, abs=5e-4)
        assert alignment.warp.correlation > 0.95
    assert fused.frames[0].shift != (0.0, 0.0)  # the axis is off-centre: scale and shift
    record = json.loads(json.dumps(fused.record()))
    assert record["reference"] == 2 and record["size"] == fused.size
    assert [f["problem"] for f in record["frames"]] == [None] * 5


def test_fused_jpeg_carries_the_reference_exif_and_its_size_and_crc(stack: Stack, fused) -> None:  # noqa: ANN001
    import zlib

    data = fused.path.read_bytes()
    assert (fused.size, fused.crc32) == (len(data), zlib.crc32(data))
    with Image.open(fused.path) as image, Image.open(stack.frames[2]) as reference:
        assert image.format == "JPEG" and image.size == (stack.width, stack.height)
        record = json.loads(image.getexif()[TAG_IMAGE_DESCRIPTION])
        assert record == json.loads(reference.getexif()[TAG_IMAGE_DESCRIPTION])
    assert record["index"] == 7 and record["lens_position"] == stack.lens[2]
    assert not [p for p in fused.path.parent.iterdir() if p.name.startswith(".")]


def test_strips_give_the_same_image_as_one_piece(stack: Stack, fused, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    reach = blend.margin(stack.height)
    monkeypatch.setattr(blend, "STRIP_PIXELS", stack.width * (stack.height + 4 * reach))
    whole = fuse_stack(stack.frames, tmp_path / "whole.jpg", exif_from=stack.frames[2],
                       quality=stack.quality)
    assert blend.strip_rows(stack.width, stack.height) >= stack.height
    monkeypatch.setattr(blend, "STRIP_PIXELS", stack.width * (2 * reach + 16))
    thin = fuse_stack(stack.frames, tmp_path / "thin.jpg", exif_from=stack.frames[2],
                      quality=stack.quality)
    assert blend.strip_rows(stack.width, stack.height) == 16
    assert whole.path.read_bytes() == thin.path.read_bytes() == fused.path.read_bytes()


def test_a_single_frame_is_its_own_fusion(stack: Stack, tmp_path: Path) -> None:
    result = fuse_stack(stack.frames[2:3], tmp_path / "one.jpg", quality=95)
    assert result.reference == 0 and len(result.frames) == 1
    assert psnr(read_rgb(result.path), read_rgb(stack.frames[2])) > 40


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated", "not_jpeg", "size"])
def test_a_broken_frame_is_named_in_one_line(stack: Stack, tmp_path: Path, damage: str) -> None:
    frames = [tmp_path / p.name for p in stack.frames]
    for src, dst in zip(stack.frames, frames, strict=True):
        shutil.copyfile(src, dst)
    bad = frames[3]
    if damage == "missing":
        bad.unlink()
        expected = "cannot be read (No such file or directory)"
    elif damage == "garbage":
        bad.write_bytes(b"\xff\xd8" + os.urandom(5000) + b"\xff\xd9")
        expected = "is not a readable JPEG"
    elif damage == "truncated":
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
        expected = "is truncated"
    elif damage == "not_jpeg":
        Image.open(stack.frames[3]).save(bad, format="PNG")
        expected = "is not a JPEG"
    else:
        Image.open(stack.frames[3]).resize((640, 480)).save(bad, format="JPEG")
        expected = "is 640x480"
    out = tmp_path / "out" / "IMG_0007.jpg"
    with pytest.raises(FusionError) as caught:
        fuse_stack(frames, out)
    message = str(caught.value)
    assert "\n" not in message and str(bad) in message and expected in message
    assert "capture the position again" in message
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_a_frame_of_another_view_is_left_out_or_refused(stack: Stack, tmp_path: Path) -> None:
    other = make_stack(tmp_path / "other", rotor=-25.0, turntable=200.0)
    frames = list(stack.frames)
    frames[1] = other.frames[1]
    result = fuse_stack(frames, tmp_path / "fused.jpg")
    assert [a.path for a in result.skipped] == [frames[1]]
    assert result.skipped[0].problem  # why, e.g. "it does not match the reference (...)"
    assert result.path.exists()
    with pytest.raises(FusionError, match=r"frame .*IMG_0007_1\.jpg cannot be aligned to .*"
                                          r"IMG_0007_2\.jpg: .*capture the position again"):
        fuse_stack(frames, tmp_path / "strict.jpg", strict=True)
    assert not (tmp_path / "strict.jpg").exists()
    frames[0] = frames[3] = other.frames[3]
    with pytest.raises(FusionError, match="3 of the 5 frames .* cannot be aligned"):
        fuse_stack(frames, tmp_path / "most.jpg")


def test_kill_9_while_writing_leaves_the_old_file_or_the_new_one(stack: Stack,
                                                                  tmp_path: Path) -> None:
    """A fusing process killed at the moment its temp file is there: the output is the whole
    previous one (never half a JPEG), and what is left over is cleared by remove_leftovers."""
    out = tmp_path / "fused" / "IMG_0007.jpg"
    first = fuse_stack(stack.frames, out, exif_from=stack.frames[2])
    whole = out.read_bytes()
    code = ("import sys; from pathlib import Path; from openscan_pi.fusion import fuse_stack\n"
            "frames = [Path(p) for p in sys.argv[2:]]\n"
            "while True:\n"
            "    fuse_stack(frames, Path(sys.argv[1]), exif_from=frames[2])\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed_mid_write = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", code, str(out), *map(str, stack.frames)],
                                env=env)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                names = os.listdir(out.parent)
                if any(name.endswith(".tmp") for name in names):
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_mid_write += 1
                    break
            else:
                pytest.fail(f"the fusing process never wrote a temp file (exit {proc.poll()})")
        finally:
            proc.kill()
            proc.wait()
        assert out.read_bytes() == whole  # deterministic: the new file is the old one's bytes
        leftovers = remove_leftovers(out.parent)
        assert all(p.name.startswith(".IMG_0007.jpg.") for p in leftovers)
        assert sorted(p.name for p in out.parent.iterdir()) == ["IMG_0007.jpg"]
    assert killed_mid_write == 3 and first.size == len(whole)


def _peak_kb(code: str, *args: str) -> int:
    """The VmHWM (kB) of a fresh Python running ``code`` (which prints nothing else)."""
    script = code + "\nprint([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300, check=True)
    return int(done.stdout.split()[-1])


def test_memory_does_not_grow_with_the_stack(tmp_path: Path) -> None:
    """A 9-frame stack fuses in about the memory of a 3-frame one (frames are read a strip at a
    time), within a generous bound (tools/bench_fusion.py measures 12 MP x 5)."""
    width, height = 1000, 750
    small = make_stack(tmp_path / "3", width=width, height=height, count=3)
    deep = make_stack(tmp_path / "9", width=width, height=height, count=9)
    imports = "import numpy, cv2, PIL.Image, PIL.JpegImagePlugin"
    fuse = ("import sys; from pathlib import Path; from openscan_pi.fusion import fuse_stack\n"
            "fuse_stack([Path(p) for p in sys.argv[2:]], Path(sys.argv[1]))")
    base = _peak_kb(imports)
    three = _peak_kb(fuse, str(tmp_path / "3.jpg"), *map(str, small.frames)) - base
    nine = _peak_kb(fuse, str(tmp_path / "9.jpg"), *map(str, deep.frames)) - base
    frame_kb = width * height * 3 // 1024  # one decoded frame
    assert nine - three < frame_kb, (three, nine)
    assert nine < 120 * 1024, (three, nine)


def test_without_opencv_one_line_names_the_install(stack: Stack, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['cv2'] = None\n"
            "from pathlib import Path; from openscan_pi.fusion import fuse_stack, FusionError\n"
            "try:\n"
            "    fuse_stack([Path(p) for p in sys.argv[2:]], Path(sys.argv[1]))\n"
            "except FusionError as exc:\n"
            "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.jpg"),
                           *map(str, stack.frames)], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    line = done.stdout.strip()
    assert "\n" not in line and "OpenCV" in line
    assert "`pip install opencv-python-headless`" in line  # this is no Raspberry Pi
    assert not (tmp_path / "f.jpg").exists()
