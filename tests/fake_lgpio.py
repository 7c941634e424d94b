"""A test double of the ``lgpio`` Python module: the part the step backend uses.

It mirrors lgpio 0.2 (joan2937/lg, ``PY_LGPIO/lgpio_extra.py`` and the C library it wraps):

- the same function names and argument order: ``gpiochip_open(gpiochip)``, ``gpiochip_close(handle)``,
  ``gpio_claim_output(handle, gpio, level=0, lFlags=0)``, ``gpio_free(handle, gpio)``,
  ``tx_wave(handle, gpio, pulses)``, ``tx_room(handle, gpio, kind)``, ``tx_busy(handle, gpio, kind)``,
  ``error_text(errnum)``, the ``pulse(group_bits, group_mask, pulse_delay)`` class, ``TX_PWM``/``TX_WAVE``,
  ``error`` and the ``exceptions`` switch (True: a negative status raises ``error``; False: it is
  returned);
- the same return codes: a handle ``| gpiochip << 16``, ``tx_wave`` returns the wave-queue entries left,
  ``tx_room`` the free entries (``LG_TX_BUF`` = 10 when idle), ``TX_QUEUE_FULL`` (-96) when full,
  ``GPIO_BUSY`` (-79), ``GPIO_NOT_ALLOCATED`` (-80), ``BAD_HANDLE`` (-5), ``CANNOT_OPEN_CHIP`` (-78);
- the transmit thread of ``lgPthTx.c``: each pulse writes its levels and waits ``pulse_delay`` µs; a
  finished wave entry is replaced by the next queued one at the same instant; when the queue runs dry
  the wave stops (``tx_busy`` 0) and the next ``tx_wave`` starts a new train.

Time is simulated: it only advances in :meth:`FakeLgpio.sleep` (pass it as the backend's ``sleep``),
and the train is recorded with its microsecond times (:attr:`FakeLgpio.edges`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OKAY = 0
BAD_HANDLE = -5
BAD_TX_TYPE = -10
CANNOT_OPEN_CHIP = -78
GPIO_BUSY = -79
GPIO_NOT_ALLOCATED = -80
TX_QUEUE_FULL = -96
LG_TX_BUF = 10

_TEXT = {BAD_HANDLE: "unknown handle", BAD_TX_TYPE: "bad tx type", CANNOT_OPEN_CHIP: "can not open gpiochip",
         GPIO_BUSY: "GPIO busy", GPIO_NOT_ALLOCATED: "GPIO not allocated", TX_QUEUE_FULL: "tx queue full"}


class error(Exception):  # noqa: N801 - lgpio's name
    """lgpio module exception."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return repr(self.value)


class pulse:  # noqa: N801 - lgpio's name
    """A class to store pulse information (as lgpio's)."""

    def __init__(self, group_bits: int, group_mask: int, pulse_delay: int) -> None:
        self.group_bits = group_bits
        self.group_mask = group_mask
        self.pulse_delay = pulse_delay


@dataclass
class _Wave:
    """lgTxRec_t of a wave: the queued entries, the position in the first one, when the next pulse is due."""

    entries: list[list[tuple[int, int, int]]]
    next_us: float
    pos: int = 0
    active: bool = True


@dataclass
class FakeLgpio:
    """One simulated gpiochip process state; pass it as ``lgpio_module``."""

    chips: tuple[int, ...] = (0,)
    tx_buf: int = LG_TX_BUF  # wave queue entries per GPIO (LG_TX_BUF in lgPthTx.h)
    start_latency_us: float = 0.0  # real lgpio: up to 20 ms until its thread next wakes
    exceptions: bool = True
    now_us: float = 0.0
    #: gpio -> [(time µs, level)] for every level change written by a wave
    edges: dict[int, list[tuple[float, int]]] = field(default_factory=dict)
    #: every tx_wave call: (time µs, gpio, number of pulses, queue entries after it)
    waves: list[tuple[float, int, int, int]] = field(default_factory=list)
    #: time µs at which each new train started (more than one per move = an underrun)
    train_starts: list[float] = field(default_factory=list)
    #: (handle, gpio) -> level claimed; history of claim/free calls
    claims: dict[tuple[int, int], int] = field(default_factory=dict)
    log: list[tuple[Any, ...]] = field(default_factory=list)
    open_handles: set[int] = field(default_factory=set)
    max_entries: int = 0
    sleeps: int = 0

    TX_PWM = 0
    TX_WAVE = 1
    error = error
    pulse = pulse

    def __post_init__(self) -> None:
        self._waves: dict[tuple[int, int], _Wave] = {}
        self._levels: dict[int, int] = {}
        self._timers: list[tuple[float, Callable[[], None]]] = []
        self._next_handle = 0

    # -- lgpio API --------------------------------------------------------------------------------

    def error_text(self, errnum: int) -> str:
        return _TEXT.get(errnum, f"unknown error ({errnum})")

    def gpiochip_open(self, gpiochip: int) -> int:
        if gpiochip not in self.chips:
            return self._status(CANNOT_OPEN_CHIP)
        handle = self._next_handle | (gpiochip << 16)
        self._next_handle += 1
        self.open_handles.add(handle)
        self.log.append(("gpiochip_open", gpiochip, handle))
        return handle

    def gpiochip_close(self, handle: int) -> int:
        if handle not in self.open_handles:
            return self._status(BAD_HANDLE)
        self.open_handles.discard(handle)
        for key in [k for k in self.claims if k[0] == handle]:
            del self.claims[key]
        for key in [k for k in self._waves if k[0] == handle]:
            self._waves[key].active = False  # lgPthTxStop
        self.log.append(("gpiochip_close", handle))
        return OKAY

    def gpio_claim_output(self, handle: int, gpio: int, level: int = 0, lFlags: int = 0) -> int:  # noqa: N803
        if handle not in self.open_handles:
            return self._status(BAD_HANDLE)
        if any(g == gpio and h != handle for h, g in self.claims):
            return self._status(GPIO_BUSY)
        self.claims[(handle, gpio)] = 1 if level else 0
        self._write(gpio, 1 if level else 0)
        self.log.append(("gpio_claim_output", handle, gpio, level, lFlags))
        return OKAY

    def gpio_free(self, handle: int, gpio: int) -> int:
        if handle not in self.open_handles:
            return self._status(BAD_HANDLE)
        if (handle, gpio) not in self.claims:
            return self._status(GPIO_NOT_ALLOCATED)
        del self.claims[(handle, gpio)]
        self.log.append(("gpio_free", handle, gpio))
        return OKAY

    def tx_wave(self, handle: int, gpio: int, pulses: list[pulse]) -> int:
        if not len(pulses):
            return 0
        # lgpio packs each pulse as "QQQ": non-integers and negative delays fail right here
        packed = [struct.unpack("QQQ", struct.pack("QQQ", p.group_bits, p.group_mask, p.pulse_delay))
                  for p in pulses]
        if handle not in self.open_handles:
            return self._status(BAD_HANDLE)
        if any(g == gpio and h != handle for h, g in self.claims):
            return self._status(GPIO_BUSY)
        if (handle, gpio) not in self.claims:  # lgpio claims a free singleton as an output
            self.claims[(handle, gpio)] = 0
            self.log.append(("auto_claim", handle, gpio))
        self._advance(self.now_us)
        wave = self._waves.get((handle, gpio))
        if wave is not None and wave.active:
            if len(wave.entries) >= self.tx_buf:
                return self._status(TX_QUEUE_FULL)
            wave.entries.append(packed)
        else:
            wave = _Wave(entries=[packed], next_us=self.now_us + self.start_latency_us)
            self._waves[(handle, gpio)] = wave
            self.train_starts.append(wave.next_us)
        self.max_entries = max(self.max_entries, len(wave.entries))
        self.waves.append((self.now_us, gpio, len(packed), len(wave.entries)))
        return self.tx_buf - len(wave.entries)

    def tx_room(self, handle: int, gpio: int, kind: int) -> int:
        wave = self._wave(handle, gpio, kind)
        if isinstance(wave, int):
            return wave
        return self.tx_buf - len(wave.entries) if wave is not None and wave.active else self.tx_buf

    def tx_busy(self, handle: int, gpio: int, kind: int) -> int:
        wave = self._wave(handle, gpio, kind)
        if isinstance(wave, int):
            return wave
        return 1 if wave is not None and wave.active else 0

    # -- simulation -------------------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass (the transmit thread runs, timers fire)."""
        self.sleeps += 1
        target = self.now_us + seconds * 1e6
        while self._timers and self._timers[0][0] <= target:
            when, fn = self._timers.pop(0)
            self._advance(max(when, self.now_us))
            self.now_us = max(when, self.now_us)
            fn()
        self._advance(target)
        self.now_us = target

    def at(self, time_us: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` when simulated time reaches ``time_us`` (inside :meth:`sleep`)."""
        self._timers.append((time_us, fn))
        self._timers.sort(key=lambda t: t[0])

    def rising_edges(self, gpio: int) -> list[float]:
        """Times (µs) of the rising edges written on ``gpio``."""
        return [t for t, level in self.edges.get(gpio, []) if level]

    def falling_edges(self, gpio: int) -> list[float]:
        return [t for t, level in self.edges.get(gpio, []) if not level][1:]  # [0]: the claim

    # -- internals --------------------------------------------------------------------------------

    def _status(self, code: int) -> int:
        if code < 0 and self.exceptions:
            raise error(self.error_text(code))
        return code

    def _wave(self, handle: int, gpio: int, kind: int) -> _Wave | None | int:
        if kind not in (self.TX_PWM, self.TX_WAVE):
            return self._status(BAD_TX_TYPE)
        if handle not in self.open_handles:
            return self._status(BAD_HANDLE)
        self._advance(self.now_us)
        return self._waves.get((handle, gpio)) if kind == self.TX_WAVE else None

    def _write(self, gpio: int, level: int, at: float | None = None) -> None:
        if self._levels.get(gpio) != level:
            self._levels[gpio] = level
            self.edges.setdefault(gpio, []).append((self.now_us if at is None else at, level))

    def _advance(self, until_us: float) -> None:
        """Run the transmit thread of lgPthTx.c up to ``until_us``."""
        for (_handle, gpio), wave in self._waves.items():
            while wave.active and wave.next_us <= until_us:
                if wave.pos >= len(wave.entries[0]):
                    if len(wave.entries) > 1:
                        wave.entries.pop(0)
                        wave.pos = 0
                    else:
                        wave.active = False
                        break
                bits, mask, delay = wave.entries[0][wave.pos]
                if mask & 1:
                    self._write(gpio, bits & 1, wave.next_us)
                wave.next_us += delay
                wave.pos += 1
