"""A test double of the ``lgpio`` Python module that fails the way lgpio 0.2 (joan2937/lg) does.

It mirrors ``PY_LGPIO/lgpio_extra.py`` and the C library under it (``lgGpio.c``, ``lgPthTx.c``,
``lgNotify.c``, ``lgUtil.c``), including what a simpler double would hide:

- **The transmit thread** (``lgPthTx``): one thread for the whole process, started by the first
  ``gpiochip_open``. It sleeps to absolute times: every 20 ms while idle, else until the next
  edge. Each pass writes **one** pulse per wave (or PWM edge) and assumes it woke on time, so after
  a late wake (:meth:`FakeLgpio.late_wake`) the overdue pulses come out back to back, ``pass_us``
  apart, until the schedule is caught up. A new train starts at the thread's next wake: 0-20 ms
  after ``tx_wave`` while idle, sooner while another wave or a PWM keeps the thread awake.
- **Waves stop only when freed**: ``gpio_free``, ``group_free`` and ``gpiochip_close`` stop a wave
  (and a PWM) of that GPIO or handle at once; nothing else aborts one. The queue holds
  ``LG_TX_BUF`` = 10 entries and ``tx_room`` counts the one playing; ``TX_QUEUE_FULL`` past that.
- **The kernel's line ownership**: a line held by another handle (gpiozero's factory has one of its
  own) or another program (:meth:`FakeLgpio.hold`) is busy: a claim answers ``GPIO_BUSY``, a wave
  or PWM on it ``GPIO_NOT_AN_OUTPUT`` (lgpio tries to claim it and checks the mode). A claim of a
  line this handle already holds as an output keeps its level; as an input keeps its bias.
  Released lines keep what they were (Raspberry Pi kernels keep an output driven), unless
  ``strict_gpiod`` (upstream kernels, ``dtparam=strict_gpiod``) returns them to inputs.
- **The negative error codes** (``BAD_GPIO_NUMBER``, ``GPIO_NOT_AN_OUTPUT``, ``GPIO_BUSY``,
  ``BAD_HANDLE``, ...) with lgpio's texts; raised as :class:`error` while ``exceptions`` is True,
  returned otherwise.
- **The import**: ``import lgpio`` opens a notification FIFO ``.lgd-nfy<N>`` in ``$LG_WD`` (relative
  to the current folder) or the current folder, **changes the process into that folder**, and
  raises ``FileNotFoundError`` (not ImportError) when the FIFO cannot be made there.
  :func:`install` makes ``import lgpio`` do that in this process (with a :class:`FakeLgpio` as the
  module); ``tests/fakelib/lgpio.py`` does it in a subprocess.

Enough of the API is here for gpiozero's own ``LGPIOFactory`` and ``LGPIOPin`` to run on it
(:func:`install` with ``revision``). Time is simulated: it advances only in :meth:`FakeLgpio.sleep`
(pass it as the step backend's ``sleep``), or follows the wall clock with ``realtime=True`` (for
code that sleeps with ``time.sleep``; the thread then catches up at every call). Every level
written is recorded with its time in µs (:attr:`FakeLgpio.edges`).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fake_lgpio_codes import (  # noqa: F401 - lgpio's names, re-exported for the tests
    _TEXT,
    BAD_GPIO_NUMBER,
    BAD_GPIOCHIP,
    BAD_HANDLE,
    BAD_PATHNAME,
    BAD_PWM_DUTY,
    BAD_PWM_FREQ,
    BAD_PWM_MICROS,
    BAD_TX_TYPE,
    CANNOT_OPEN_CHIP,
    GPIO_BUSY,
    GPIO_NOT_ALLOCATED,
    GPIO_NOT_AN_OUTPUT,
    NOT_PERMITTED,
    OKAY,
    TX_QUEUE_FULL,
    error,
)
from tests.fake_lgpio_tx import (  # noqa: F401 - re-exported for the tests
    IDLE_WAKE_US,
    LG_TX_BUF,
    MIN_TX_DELAY_US,
    TransmitThread,
    _TxRec,
    pulse,
)

#: A line request's owner when another program holds the line.
OTHER_PROGRAM = -1


# gpio_get_mode bits (lgpio.h LG_GPIO_IS_*) and the flags of the claims (LG_SET_*)
_IS_KERNEL, _IS_OUTPUT, _IS_PULL_UP, _IS_PULL_DOWN, _IS_PULL_NONE, _IS_INPUT = 1, 2, 32, 64, 128, 65536
_LG_INPUT, _LG_OUTPUT, _LG_ALERT = 1, 2, 4






@dataclass
class Line:
    """What the kernel knows of one GPIO line: who holds it, how it is set, what it drives."""

    owner: int | None = None  # the handle holding it, OTHER_PROGRAM, or None (free)
    mode: str = "input"  # input, output or alert (an input watched for edges)
    bias: str = "down"  # up, down or none (floating, as an input)
    level: int = 0  # the level driven (an output) or read (an input driven from outside)
    driven_from_outside: bool = False

    @property
    def floating(self) -> bool:
        """An input nobody drives and nothing pulls: it reads whatever it picks up."""
        return self.mode != "output" and self.bias == "none" and not self.driven_from_outside




class _Callback:
    """What ``lgpio.callback`` returns."""

    def __init__(self, fake: FakeLgpio, chip: int, gpio: int, edge: int,
                 func: Callable[[int, int, int, int], None] | None) -> None:
        self.fake, self.chip, self.gpio, self.edge = fake, chip, gpio, edge
        self.count = 0
        self.func = func or self._tally

    def _tally(self, chip: int, gpio: int, level: int, tick: int) -> None:
        self.count += 1

    def tally(self) -> int:
        return self.count

    def cancel(self) -> None:
        with self.fake._lock:
            if self in self.fake._callbacks:
                self.fake._callbacks.remove(self)


@dataclass
class FakeLgpio(TransmitThread):
    """The ``lgpio`` module of one process, with its gpiochips; pass it as ``lgpio_module``."""

    chips: tuple[int, ...] = (0,)
    lines: int = 54  # lines per gpiochip (a Pi 4's gpiochip0 has 58, a Pi 5's RP1 54)
    tx_buf: int = LG_TX_BUF
    pass_us: float = 1.0  # how long one pass of the transmit thread takes
    strict_gpiod: bool = False  # released lines return to inputs (upstream kernels)
    realtime: bool = False  # simulated time follows the wall clock
    exceptions: bool = True
    now_us: float = 0.0
    #: gpio -> [(time µs, level)] for every level change of that line
    edges: dict[int, list[tuple[float, int]]] = field(default_factory=dict)
    #: every tx_wave call accepted: (time µs, gpio, number of pulses, queue entries after it)
    waves: list[tuple[float, int, int, int]] = field(default_factory=list)
    #: time µs at which each new train wrote its first pulse (more than one per move = an underrun)
    train_starts: list[float] = field(default_factory=list)
    log: list[tuple[Any, ...]] = field(default_factory=list)
    open_handles: set[int] = field(default_factory=set)
    max_entries: int = 0
    sleeps: int = 0
    #: set by the import (:meth:`start_notify`): lgpio's working folder and its FIFO
    workdir: str | None = None
    notify_fifo: str | None = None

    TX_PWM = 0
    TX_WAVE = 1
    SET_ACTIVE_LOW = 4
    SET_OPEN_DRAIN = 8
    SET_OPEN_SOURCE = 16
    SET_PULL_UP = 32
    SET_PULL_DOWN = 64
    SET_PULL_NONE = 128
    RISING_EDGE = 1
    FALLING_EDGE = 2
    BOTH_EDGES = 3
    error = error
    pulse = pulse

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._lines: dict[tuple[int, int], Line] = {}
        self._handle_chip: dict[int, int] = {}
        self._recs: list[_TxRec] = []
        self._timers: list[tuple[float, Callable[[], None]]] = []
        self._callbacks: list[_Callback] = []
        self._late: list[tuple[float, float]] = []
        self._next_handle = 1  # 0 is the notification pipe the import opens
        self._thread = False
        self._sched_us = 0.0  # pthTxReq: when the thread's next pass is due
        self._delay_us = 0.0  # pthTxDelayMicros: the length of the sleep it is in
        self._last_pass_us = -1e18
        self._t0 = time.monotonic()

    # -- the import ---------------------------------------------------------------------------------

    def start_notify(self) -> None:
        """What ``import lgpio`` does before anything else: ``lguGetWorkDir`` (``$LG_WD``, relative
        to the current folder, else the current folder; ``chdir`` into it) and ``lgNotifyOpen``
        (a FIFO ``.lgd-nfy<handle>`` there), then Python opens ``.lgd-nfy<status>`` relative to the
        current folder: ``FileNotFoundError`` when the FIFO could not be made."""
        env = os.environ.get("LG_WD")
        try:
            cwd: str | None = os.getcwd()
        except OSError:
            cwd = None
        base = cwd or "/tmp"
        workdir = (env if env.startswith("/") else os.path.join(base, env)) if env else base
        self.workdir = workdir
        with contextlib.suppress(OSError):  # lgpio logs "can't set working directory" and goes on
            os.chdir(workdir)
        handle = 0
        fifo = os.path.join(workdir, f".lgd-nfy{handle}")
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(fifo)
            os.mkfifo(fifo, 0o664)
            self.notify_fifo = fifo
        except OSError:
            handle = BAD_PATHNAME
        fd = os.open(f".lgd-nfy{handle}", os.O_RDONLY | os.O_NONBLOCK)  # FileNotFoundError
        os.close(fd)

    # -- gpiochips and lines ------------------------------------------------------------------------

    def error_text(self, errnum: int) -> str:
        return _TEXT.get(errnum, "unknown error")

    def gpiochip_open(self, gpiochip: int) -> int:
        with self._lock:
            self._sync()
            if gpiochip < 0:
                return self._status(BAD_GPIOCHIP)
            if gpiochip not in self.chips:
                return self._status(CANNOT_OPEN_CHIP)
            handle = self._next_handle | (gpiochip << 16)
            self._next_handle += 1
            self.open_handles.add(handle)
            self._handle_chip[handle] = gpiochip
            self.log.append(("gpiochip_open", gpiochip, handle))
            if not self._thread:  # lgPthTxStart: its first pass runs at once
                self._thread = True
                self._sched_us = self.now_us
                self._delay_us = 0.0
                self._advance(self.now_us)
            return handle

    def gpiochip_close(self, handle: int) -> int:
        with self._lock:
            self._sync()
            if handle not in self.open_handles:
                return self._status(BAD_HANDLE)
            for rec in self._recs:  # lgPthTxStop
                if rec.handle == handle:
                    rec.active = False
            self.open_handles.discard(handle)
            self.log.append(("gpiochip_close", handle))
            chip = self._handle_chip.pop(handle)
            for (c, _), line in self._lines.items():
                if c == chip and line.owner == handle:
                    self._release(line)
        self.sleep(0.1)  # usleep(100000): "long enough for PWM/events to stop"
        return OKAY

    def gpio_claim_output(self, handle: int, gpio: int, level: int = 0, lFlags: int = 0) -> int:  # noqa: N803
        with self._lock:
            self._sync()
            status = self._claim(handle, gpio, "output", lFlags, 1 if level else 0)
            if status == OKAY:
                self.log.append(("gpio_claim_output", handle, gpio, level, lFlags))
            return self._status(status)

    def gpio_claim_input(self, handle: int, gpio: int, lFlags: int = 0) -> int:  # noqa: N803
        with self._lock:
            self._sync()
            status = self._claim(handle, gpio, "input", lFlags, None)
            if status == OKAY:
                self.log.append(("gpio_claim_input", handle, gpio, lFlags))
            return self._status(status)

    def gpio_claim_alert(self, handle: int, gpio: int, eFlags: int, lFlags: int = 0,  # noqa: N803
                         notify_handle: int | None = None) -> int:
        with self._lock:
            self._sync()
            line = self._owned(handle, gpio)
            if isinstance(line, Line) and line.mode == "alert":
                return OKAY
            status = self._claim(handle, gpio, "alert", lFlags, None)
            if status == OKAY:
                self.log.append(("gpio_claim_alert", handle, gpio, eFlags, lFlags))
            return self._status(status)

    def gpio_free(self, handle: int, gpio: int) -> int:
        with self._lock:
            self._sync()
            line = self._owned(handle, gpio)
            if isinstance(line, int):
                return self._status(line)
            if line is None:
                return self._status(GPIO_NOT_ALLOCATED)
            self._stop_tx(handle, gpio)
            self._release(line)
            self.log.append(("gpio_free", handle, gpio))
            return OKAY

    group_free = gpio_free  # every claim here is a singleton: its own group leader

    def gpio_get_mode(self, handle: int, gpio: int) -> int:
        with self._lock:
            self._sync()
            check = self._check(handle, gpio)
            if check:
                return self._status(check)
            line = self._line(handle, gpio)
            mode = {"up": _IS_PULL_UP, "down": _IS_PULL_DOWN, "none": _IS_PULL_NONE}[line.bias]
            mode |= _IS_OUTPUT if line.mode == "output" else _IS_INPUT
            if line.owner is not None:
                mode |= _IS_KERNEL
            if line.owner == handle:
                lg_mode = {"input": _LG_INPUT, "output": _LG_OUTPUT, "alert": _LG_ALERT | _LG_INPUT}
                mode |= lg_mode[line.mode] << 8
            return mode

    def gpio_read(self, handle: int, gpio: int) -> int:
        with self._lock:
            self._sync()
            check = self._check(handle, gpio)
            if check:
                return self._status(check)
            line = self._line(handle, gpio)
            # lgpio claims a line it does not hold as an input first
            if line.owner != handle and self._claim(handle, gpio, "input", 0, None) != OKAY:
                return self._status(GPIO_NOT_ALLOCATED)
            if line.mode == "output" or line.driven_from_outside:
                return line.level
            return 1 if line.bias == "up" else 0

    def gpio_write(self, handle: int, gpio: int, level: int) -> int:
        with self._lock:
            self._sync()
            check = self._check(handle, gpio)
            if check:
                return self._status(check)
            line = self._line(handle, gpio)
            value = 1 if level else 0
            if line.owner == handle and line.mode == "output":
                self._write(gpio, value, line=line)
                return OKAY
            return self._status(self._claim(handle, gpio, "output", 0, value))  # auto claim

    def gpio_set_debounce_micros(self, handle: int, gpio: int, debounce_micros: int) -> int:
        with self._lock:
            return self._status(self._check(handle, gpio))

    def callback(self, handle: int, gpio: int, edge: int = 1,
                 func: Callable[[int, int, int, int], None] | None = None) -> _Callback:
        with self._lock:
            cb = _Callback(self, handle >> 16, gpio, edge, func)
            self._callbacks.append(cb)
            return cb

    def hold(self, gpio: int, *, chip: int = 0) -> None:
        """Another program holds ``gpio`` (e.g. a second daemon, or ``pinctrl``'s owner)."""
        with self._lock:
            line = self._lines.setdefault((chip, gpio), Line(bias=_boot_bias(gpio)))
            line.owner = OTHER_PROGRAM

    def drive_input(self, gpio: int, level: int, *, chip: int = 0) -> None:
        """Something outside (a switch) drives ``gpio``; alerts fire for a watched line."""
        with self._lock:
            self._sync()
            line = self._lines.setdefault((chip, gpio), Line(bias=_boot_bias(gpio)))
            old = self._read_level(line)
            line.driven_from_outside = True
            line.level = 1 if level else 0
            callbacks = [cb for cb in self._callbacks if cb.chip == chip and cb.gpio == gpio]
            changed = old != line.level and line.mode == "alert"
        if changed:
            edge = self.RISING_EDGE if line.level else self.FALLING_EDGE
            for cb in callbacks:
                if cb.edge & edge:
                    cb.func(chip, gpio, line.level, int(self.now_us * 1000))

    def line(self, gpio: int, *, chip: int = 0) -> Line:
        """The kernel's view of ``gpio``."""
        with self._lock:
            self._sync()
            return self._lines.setdefault((chip, gpio), Line(bias=_boot_bias(gpio)))

    @property
    def claims(self) -> dict[tuple[int, int], int]:
        """(handle, gpio) -> level, for every line a handle of this module holds."""
        with self._lock:
            return {(line.owner, gpio): line.level for (_, gpio), line in self._lines.items()
                    if line.owner is not None and line.owner != OTHER_PROGRAM}

    def rising_edges(self, gpio: int) -> list[float]:
        """Times (µs) of the rising edges written on ``gpio``."""
        with self._lock:
            self._sync()  # with realtime, the thread has run up to now
        return [t for t, level in self.edges.get(gpio, []) if level]

    def falling_edges(self, gpio: int) -> list[float]:
        """Times (µs) of the falling edges written on ``gpio`` after its first rise."""
        rising = self.rising_edges(gpio)
        if not rising:
            return []
        return [t for t, level in self.edges.get(gpio, []) if not level and t >= rising[0]]

    # -- internals ----------------------------------------------------------------------------------

    def _status(self, code: int) -> int:
        if code < 0 and self.exceptions:
            raise error(self.error_text(code))
        return code

    def _sync(self) -> None:
        if self.realtime:
            self.now_us = (time.monotonic() - self._t0) * 1e6
        self._advance(self.now_us)

    def _check(self, handle: int, gpio: int) -> int:
        if handle not in self.open_handles:
            return BAD_HANDLE
        if not 0 <= gpio < self.lines:
            return BAD_GPIO_NUMBER
        return OKAY

    def _line(self, handle: int, gpio: int) -> Line:
        return self._lines.setdefault((self._handle_chip[handle], gpio), Line(bias=_boot_bias(gpio)))

    def _owned(self, handle: int, gpio: int) -> Line | int | None:
        check = self._check(handle, gpio)
        if check:
            return check
        line = self._line(handle, gpio)
        return line if line.owner == handle else None

    def _claim(self, handle: int, gpio: int, mode: str, flags: int, level: int | None) -> int:
        """lgpio's xSetAsOutput / xSetAsInput and the kernel's line request."""
        if handle not in self.open_handles:
            return BAD_HANDLE
        if not 0 <= gpio < self.lines:
            return NOT_PERMITTED  # xClaim: gpio beyond the chip's lines
        line = self._line(handle, gpio)
        if line.owner == handle:
            if mode == "output" and line.mode == "output":
                return OKAY  # already an output: the level stays as it is
            if mode == "input" and line.mode in ("input", "alert"):
                return OKAY  # already an input: its bias stays as it is
            self._stop_tx(handle, gpio)  # auto free of a singleton
            line.owner = None
        elif line.owner is not None:
            return GPIO_BUSY
        line.owner = handle
        line.mode = mode
        if flags & self.SET_PULL_UP:
            line.bias = "up"
        elif flags & self.SET_PULL_DOWN:
            line.bias = "down"
        elif flags & self.SET_PULL_NONE:
            line.bias = "none"
        if mode == "output":
            self._write(gpio, level or 0, line=line)
        return OKAY

    def _release(self, line: Line) -> None:
        line.owner = None
        if line.mode == "alert" or (self.strict_gpiod and line.mode == "output"):
            line.mode = "input"

    def _is_output(self, handle: int, gpio: int) -> bool:
        """xWave/xSetAsPwm: claim a singleton as an output (level 0) unless it is one already."""
        line = self._line(handle, gpio)
        if line.owner == handle and line.mode == "output":
            return True
        self._claim(handle, gpio, "output", 0, 0)
        if line.owner == handle and line.mode == "output":
            self.log.append(("auto_claim", handle, gpio))
            return True
        return False

    def _read_level(self, line: Line) -> int:
        if line.mode == "output" or line.driven_from_outside:
            return line.level
        return 1 if line.bias == "up" else 0

    def _write(self, gpio: int, level: int, at: float | None = None, line: Line | None = None) -> None:
        if line is not None:
            line.level = level
        events = self.edges.setdefault(gpio, [])
        if not events or events[-1][1] != level:
            events.append((self.now_us if at is None else at, level))


def _boot_bias(gpio: int) -> str:
    """A BCM283x/BCM2711 line's pull at power-on: up on GPIO 0-8, down above."""
    return "up" if gpio <= 8 else "down"


# -- ``import lgpio`` in this process -----------------------------------------------------------------

#: gpiozero's revision code of a Raspberry Pi 4B (1.4, 4 GB), for :func:`install`.
PI_4B = 0xC03114


def gpiochip_here(monkeypatch: pytest.MonkeyPatch, chip: int = 0) -> None:
    """``/dev/gpiochip<chip>`` exists, as on a Pi (every other path as it is)."""
    exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: p == f"/dev/gpiochip{chip}" or exists(p))



class _Importer(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``import lgpio`` with a :class:`FakeLgpio`, doing what lgpio's import does."""

    def __init__(self, make: Callable[[], FakeLgpio]) -> None:
        self.make = make
        self.imports = 0
        self.made: list[FakeLgpio] = []

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "lgpio":
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        fake = self.make()
        self.made.append(fake)
        return fake

    def exec_module(self, module: Any) -> None:
        self.imports += 1
        module.start_notify()


@dataclass
class Installed:
    """What :func:`install` set up: the importer and the lgpio module a successful import made."""

    importer: _Importer

    @property
    def module(self) -> FakeLgpio:
        """The lgpio module ``import lgpio`` gave (the last one made)."""
        return self.importer.made[-1]

    @property
    def imports(self) -> int:
        return self.importer.imports


def install(monkeypatch: pytest.MonkeyPatch, *, revision: int | None = None,
            make: Callable[[], FakeLgpio] | None = None) -> Iterator[Installed]:
    """Make ``import lgpio`` in this process import a fresh :class:`FakeLgpio` the way lgpio's
    import goes (working folder, ``chdir``, FIFO, ``FileNotFoundError``), with gpiozero's pin
    factory and lgpio modules forgotten so that gpiozero imports it again, and ``LG_WD`` as it was
    afterwards. ``revision`` makes
    gpiozero believe it runs on that Raspberry Pi (e.g. ``0xc03114``, a Pi 4B), so that its default
    pin factory is its real ``LGPIOFactory`` on the double. A generator: use it in a fixture."""
    from gpiozero import Device

    importer = _Importer(make or FakeLgpio)
    for name in ("lgpio", "gpiozero.pins.lgpio"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [importer, *sys.meta_path])
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(Device, "pin_factory", None)
    # whatever sets LG_WD in this process (openscan-pi does, when it is not set) is undone after
    monkeypatch.setenv("LG_WD", os.environ.get("LG_WD", ""))
    if not os.environ["LG_WD"]:
        monkeypatch.delenv("LG_WD")
    if revision is not None:
        import gpiozero.pins.local

        monkeypatch.setattr(gpiozero.pins.local, "get_pi_revision", lambda: revision)
    try:
        yield Installed(importer)
    finally:
        factory = Device.pin_factory
        if factory is not None:
            factory.close()
        Device.pin_factory = None
        sys.modules.pop("lgpio", None)
        sys.modules.pop("gpiozero.pins.lgpio", None)

