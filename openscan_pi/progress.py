"""Show transfer events to a person: tqdm bars on a terminal, plain lines otherwise, nothing for --json.

Events come from :class:`openscan_pi.cloud.transfer.Transfer` as ``emit(event, **fields)``:
``stage`` (text), ``warning`` (text), ``upload`` (part, parts, part_done, part_size, done, total),
``part`` (part, parts), ``status`` (project, status), ``download`` (done, total), ``crc`` (done, total),
``scan`` (done, total: positions captured).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm


class ProgressPrinter:
    """Renders events on ``stream`` (stderr by default).

    ``mode`` is ``"tty"`` (bars), ``"plain"`` (a line per stage and every 10 % or 30 s of a
    transfer) or ``"quiet"`` (nothing).
    """

    def __init__(self, mode: str, stream: IO[str] | None = None) -> None:
        self.mode = mode
        self.stream = stream or sys.stderr
        self._bars: dict[str, tqdm] = {}
        self._part: int | None = None
        self._last_line = (-1, 0.0)

    @classmethod
    def for_stream(cls, json_output: bool, stream: IO[str] | None = None) -> ProgressPrinter:
        """Bars when ``stream`` is a terminal, plain lines when it is not, nothing for JSON."""
        stream = stream or sys.stderr
        if json_output:
            return cls("quiet", stream)
        return cls("tty" if stream.isatty() else "plain", stream)

    def __call__(self, event: str, **f: Any) -> None:
        if self.mode == "quiet":
            return
        handler = getattr(self, f"_on_{event}", None)
        if handler:
            handler(**f)

    def close(self) -> None:
        """Close the bars (call before printing the result)."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    # -- events ---------------------------------------------------------------------------------

    def _line(self, text: str) -> None:
        if self._bars:
            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _on_stage(self, text: str) -> None:
        for key, bar in list(self._bars.items()):  # a finished transfer's bar ends before the news
            if bar.total and bar.n >= bar.total:
                self._bars.pop(key).close()
        self._line(text)

    def _on_warning(self, text: str) -> None:
        self._line(f"warning: {text}")

    def _on_status(self, project: str, status: str) -> None:
        self._line(f"cloud: {project}: {status}")

    def _bar(self, key: str, total: int | None, desc: str, position: int) -> tqdm:
        bar = self._bars.get(key)
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1000,
                       file=self.stream, position=position, leave=position == 0,
                       dynamic_ncols=True, mininterval=0.2)
            self._bars[key] = bar
        return bar

    def _advance(self, key: str, total: int | None, done: int, desc: str, position: int = 0) -> None:
        bar = self._bar(key, total, desc, position)
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    def _plain(self, what: str, done: int, total: int | None) -> None:
        if not total:
            return
        tenth = done * 10 // total
        now = time.monotonic()
        last_tenth, last_time = self._last_line
        if tenth != last_tenth or now - last_time >= 30:
            self._last_line = (tenth, now)
            self._line(f"{what}: {done / 1e6:,.1f} of {total / 1e6:,.1f} MB ({done * 100 // total} %)")

    def _on_crc(self, done: int, total: int) -> None:
        if self.mode == "tty":
            self._advance("crc", total, done, "reading photos")
            if done >= total:
                self._bars.pop("crc").close()
        else:
            self._plain("reading photos", done, total)

    def _on_upload(self, part: int, parts: int, part_done: int, part_size: int, done: int,
                   total: int) -> None:
        if self.mode != "tty":
            self._plain("uploading", done, total)
            return
        self._advance("all", total, done, "upload", 0)
        if self._part != part:
            old = self._bars.pop("part", None)
            if old:
                old.close()
            self._part = part
        self._advance("part", part_size, part_done, f"part {part + 1}/{parts}", 1)

    def _on_part(self, part: int, parts: int, **_: Any) -> None:
        if self.mode != "tty":
            self._line(f"part {part + 1}/{parts} confirmed")
            return
        bar = self._bars.pop("part", None)
        if bar:
            bar.close()
        self._part = None
        if part + 1 == parts and "all" in self._bars:
            self._bars.pop("all").close()

    def _on_scan(self, done: int, total: int) -> None:
        if self.mode != "tty":
            self._plain_count("scanning", done, total)
            return
        bar = self._bars.get("scan")
        if bar is None:
            bar = tqdm(total=total, desc="scan", unit="pos", file=self.stream, position=0,
                       leave=True, dynamic_ncols=True, mininterval=0.2)
            self._bars["scan"] = bar
        bar.update(done - bar.n)
        if done >= total:
            self._bars.pop("scan").close()

    def _plain_count(self, what: str, done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth != self._last_line[0] or done == total:
            self._last_line = (tenth, time.monotonic())
            self._line(f"{what}: {done}/{total} positions")

    def _on_download(self, done: int, total: int | None) -> None:
        if self.mode == "tty":
            self._advance("download", total, done, "model")
        else:
            self._plain("downloading the model", done, total)
