"""The transmit thread of the lgpio double (``lgPthTx.c``): waves and PWM, and simulated time.

One thread for the whole process, started by the first ``gpiochip_open``. It sleeps to absolute
times: every 20 ms while idle, else until the next edge. Each pass writes **one** pulse per wave
(or PWM edge) and assumes it woke on time, so after a late wake the overdue pulses come out back
to back. :class:`TransmitThread` is a part of :class:`tests.fake_lgpio.FakeLgpio` (its lines,
lock and clock are there); see that module's docstring for the whole double.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.fake_lgpio_codes import (
    BAD_PWM_DUTY,
    BAD_PWM_FREQ,
    BAD_PWM_MICROS,
    BAD_TX_TYPE,
    GPIO_NOT_AN_OUTPUT,
    OKAY,
    TX_QUEUE_FULL,
)

#: Wave and PWM queue entries per GPIO (LG_TX_BUF in lgPthTx.h).
LG_TX_BUF = 10
#: The transmit thread's longest sleep ("run at least fifty times a second").
IDLE_WAKE_US = 20_000
#: lgMinTxDelay: the shortest PWM period, µs.
MIN_TX_DELAY_US = 10


class pulse:  # noqa: N801 - lgpio's name
    """A class to store pulse information (as lgpio's)."""

    def __init__(self, group_bits: int, group_mask: int, pulse_delay: int) -> None:
        self.group_bits = group_bits
        self.group_mask = group_mask
        self.pulse_delay = pulse_delay


@dataclass
class _TxRec:
    """lgTxRec_t: a wave or PWM on one GPIO of one handle."""

    kind: int
    handle: int
    gpio: int
    entries: list[Any]  # wave: [[(bits, mask, delay µs)]]; PWM: [[on µs, off µs, cycles]]
    next_rel: float  # next_micros: µs after the thread's current scheduled wake
    pos: int = 0
    active: bool = True
    started: bool = False
    next_level: int = 1


class TransmitThread:
    """Waves, PWM and the passage of simulated time; mixed into :class:`~tests.fake_lgpio.FakeLgpio`."""

    # Provided by FakeLgpio.
    _lock: Any
    _recs: list[_TxRec]
    now_us: float

    # -- waves and PWM ------------------------------------------------------------------------------

    def tx_wave(self, handle: int, gpio: int, pulses: list[pulse]) -> int:
        if not len(pulses):
            return 0
        # lgpio packs each pulse as "QQQ": non-integers and negative delays fail right here
        packed = [struct.unpack("QQQ", struct.pack("QQQ", p.group_bits, p.group_mask, p.pulse_delay))
                  for p in pulses]
        with self._lock:
            self._sync()
            check = self._check(handle, gpio)
            if check:
                return self._status(check)
            if not self._is_output(handle, gpio):
                return self._status(GPIO_NOT_AN_OUTPUT)
            rec = self._rec(handle, gpio, self.TX_WAVE)
            if rec is not None and rec.active:
                if len(rec.entries) >= self.tx_buf:
                    return self._status(TX_QUEUE_FULL)
                rec.entries.append(packed)
            else:
                rec = _TxRec(self.TX_WAVE, handle, gpio, [packed], next_rel=self._delay_us)
                self._recs.insert(0, rec)
            self.max_entries = max(self.max_entries, len(rec.entries))
            self.waves.append((self.now_us, gpio, len(packed), len(rec.entries)))
            return self.tx_buf - len(rec.entries)

    def tx_pwm(self, handle: int, gpio: int, pwm_frequency: float, pwm_duty_cycle: float,
               pulse_offset: int = 0, pulse_cycles: int = 0) -> int:
        with self._lock:
            self._sync()
            if pwm_frequency == 0:
                on = off = 0
            else:
                if not 0.1 <= pwm_frequency <= 1e4:
                    return self._status(BAD_PWM_FREQ)
                if not 0 <= pwm_duty_cycle <= 100:
                    return self._status(BAD_PWM_DUTY)
                micros = int(1e6 / pwm_frequency + 0.5)
                on = int(pwm_duty_cycle / 100 * micros + 0.5)
                off = micros - on
            check = self._check(handle, gpio)
            if check:
                return self._status(check)
            if not self._is_output(handle, gpio):
                return self._status(GPIO_NOT_AN_OUTPUT)
            rec = self._rec(handle, gpio, self.TX_PWM)
            cycles = pulse_cycles or -1
            if rec is not None and rec.active:
                if not (on or off):
                    rec.active = False
                    return OKAY
                if on + off <= MIN_TX_DELAY_US:
                    return self._status(BAD_PWM_MICROS)
                if len(rec.entries) > 1 and rec.entries[-1][2] == -1:
                    rec.entries.pop()
                if len(rec.entries) >= self.tx_buf:
                    return self._status(TX_QUEUE_FULL)
                rec.entries.append([on, off, cycles])
                return self.tx_buf - len(rec.entries)
            if on + off <= MIN_TX_DELAY_US:
                return self._status(BAD_PWM_MICROS)
            self._recs.insert(0, _TxRec(self.TX_PWM, handle, gpio, [[on, off, cycles]],
                                        next_rel=self._delay_us + pulse_offset, next_level=1 if on else 0))
            return self.tx_buf - 1

    def tx_room(self, handle: int, gpio: int, kind: int) -> int:
        with self._lock:
            rec = self._tx_lookup(handle, gpio, kind)
            if isinstance(rec, int):
                return rec
            return self.tx_buf - len(rec.entries) if rec is not None and rec.active else self.tx_buf

    def tx_busy(self, handle: int, gpio: int, kind: int) -> int:
        with self._lock:
            rec = self._tx_lookup(handle, gpio, kind)
            if isinstance(rec, int):
                return rec
            return 1 if rec is not None and rec.active else 0

    # -- the test's side ----------------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass (the transmit thread runs, timers fire); with
        ``realtime``, sleep for real."""
        if self.realtime:
            time.sleep(seconds)
            with self._lock:
                self._sync()
            return
        with self._lock:
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

    def late_wake(self, at_us: float, by_us: float) -> None:
        """The transmit thread's first wake due at or after ``at_us`` happens ``by_us`` late (the
        scheduler ran something else, the SD card stalled the CPU, ...)."""
        with self._lock:
            self._late.append((at_us, by_us))
            self._late.sort()

    def _stop_tx(self, handle: int, gpio: int) -> None:
        for rec in self._recs:
            if rec.handle == handle and rec.gpio == gpio:
                rec.active = False

    def _rec(self, handle: int, gpio: int, kind: int) -> _TxRec | None:
        """lgGpioGetTxRec: the first record of this GPIO and kind (the newest)."""
        return next((r for r in self._recs if r.handle == handle and r.gpio == gpio and r.kind == kind),
                    None)

    def _tx_lookup(self, handle: int, gpio: int, kind: int) -> _TxRec | None | int:
        if kind not in (self.TX_PWM, self.TX_WAVE):
            return self._status(BAD_TX_TYPE)
        self._sync()
        check = self._check(handle, gpio)
        if check:
            return self._status(check)
        return self._rec(handle, gpio, kind)

    def _next_pass(self) -> tuple[float, int | None]:
        """When the next pass really runs (a late wake, or the previous pass still running)."""
        late = next((i for i, (at, _) in enumerate(self._late) if at <= self._sched_us), None)
        wake = self._sched_us + (self._late[late][1] if late is not None else 0.0)
        return max(wake, self._last_pass_us + self.pass_us), late

    def _advance(self, until_us: float) -> None:
        """Run the transmit thread of lgPthTx.c up to ``until_us``."""
        if not self._thread:
            return
        while True:
            if not self._recs and not self._late and self._sched_us + IDLE_WAKE_US <= until_us:
                # idle: skip the 20 ms wakes that have nothing to do
                skip = int((until_us - self._sched_us) // IDLE_WAKE_US)
                self._sched_us += skip * IDLE_WAKE_US
                self._last_pass_us = self._sched_us - IDLE_WAKE_US
                self._delay_us = IDLE_WAKE_US
            actual, late = self._next_pass()
            if actual > until_us:
                return
            if late is not None:
                self._late.pop(late)
            self._pass(actual)

    def _pass(self, actual: float) -> None:
        """One pass of lgPthTx's loop, run at ``actual`` µs (its schedule says ``_sched_us``)."""
        for rec in self._recs:
            rec.next_rel -= self._delay_us
        delay = float(IDLE_WAKE_US)
        for rec in list(self._recs):
            if not rec.active:
                self._recs.remove(rec)  # delete inactive record
                continue
            if rec.next_rel <= 0:
                if rec.kind == self.TX_WAVE:
                    self._wave_step(rec, actual)
                else:
                    self._pwm_step(rec, actual)
            delay = min(delay, rec.next_rel)
        self._delay_us = delay
        self._sched_us += delay
        self._last_pass_us = actual

    def _wave_step(self, rec: _TxRec, actual: float) -> None:
        if rec.pos >= len(rec.entries[0]) and len(rec.entries) > 1:
            rec.entries.pop(0)
            rec.pos = 0
        if rec.pos < len(rec.entries[0]):
            bits, mask, delay = rec.entries[0][rec.pos]
            if mask & 1:
                self._write(rec.gpio, bits & 1, actual, self._lines.get((self._handle_chip.get(
                    rec.handle, 0), rec.gpio)))
            if not rec.started:
                rec.started = True
                self.train_starts.append(actual)
            rec.next_rel += delay
            rec.pos += 1
        else:
            rec.active = False

    def _pwm_step(self, rec: _TxRec, actual: float) -> None:
        line = self._lines.get((self._handle_chip.get(rec.handle, 0), rec.gpio))
        if rec.next_level or rec.entries[0][0] == 0:  # start of a cycle
            if rec.entries[0][2] <= 0 and len(rec.entries) > 1:  # done, or endless and replaced
                rec.entries.pop(0)
            on, off, cycles = rec.entries[0]
            if cycles == 0:
                self._write(rec.gpio, 0, actual, line)
                rec.active = False
            elif on:
                self._write(rec.gpio, 1, actual, line)
                rec.next_rel += on
                if off:
                    rec.next_level = 0
            else:
                self._write(rec.gpio, 0, actual, line)
                rec.next_rel += off
                rec.next_level = 1
            rec.entries[0][2] = max(cycles - 1, -1)
        else:
            self._write(rec.gpio, 0, actual, line)
            rec.next_rel += rec.entries[0][1]
            rec.next_level = 1
