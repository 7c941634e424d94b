"""The lgpio step backend against a test double of lgpio (tests/fake_lgpio.py), and make_backend."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from openscan_pi.rig.backends import LgpioStepBackend, PythonStepBackend, StepBackend, make_backend
from openscan_pi.rig.errors import MoveCancelled, RigError
from openscan_pi.rig.motion import move_time, step_deadlines
from openscan_pi.rig.stepper import Axis
from openscan_pi.schema import AxisConfig
from tests.fake_lgpio import IDLE_WAKE_US, LG_TX_BUF, FakeLgpio, gpiochip_here, install

STEP = 27


@pytest.fixture
def fake() -> FakeLgpio:
    return FakeLgpio()


@pytest.fixture
def backend(fake: FakeLgpio) -> Iterator[LgpioStepBackend]:
    b = LgpioStepBackend(STEP, lgpio_module=fake, sleep=fake.sleep)
    yield b
    b.close()


def test_the_train_encodes_the_profile(fake: FakeLgpio, backend: LgpioStepBackend) -> None:
    deadlines = step_deadlines(20_000, 5000, 20_000)
    assert isinstance(backend, StepBackend)
    assert backend.run(deadlines, cancel=threading.Event()) == 20_000
    rising = np.array(fake.rising_edges(STEP))
    assert len(rising) == 20_000 and len(fake.falling_edges(STEP)) == 20_000
    assert len(fake.train_starts) == 1, "one train: the queue never ran dry"
    start = fake.train_starts[0]
    assert 0 < start - fake.waves[0][0] <= IDLE_WAKE_US, "it starts at lgpio's thread's next wake"
    # every edge within the 0.5 µs rounding of its own deadline: no accumulated error
    error_us = (rising - start) - deadlines * 1e6
    assert np.max(np.abs(error_us)) <= 0.5 + 1e-6
    assert rising[-1] - start == round(move_time(20_000, 5000, 20_000) * 1e6)
    # each pulse is high for pulse_us
    assert np.all(np.array(fake.falling_edges(STEP)) - rising == backend.pulse_us)
    # lgpio timed the whole move: 4.25 s of simulated time for a handful of Python wake-ups
    assert fake.sleeps < 4.25 / backend.poll_s + 10


def test_chunks_respect_tx_room_and_the_lead(fake: FakeLgpio, backend: LgpioStepBackend) -> None:
    backend.run(step_deadlines(20_000, 5000, 20_000), cancel=threading.Event())
    assert backend.max_ahead == 5 and fake.max_entries <= backend.max_ahead <= LG_TX_BUF
    steps = [n // 2 for _, _, n, _ in fake.waves]  # 2 pulses per step (+1 lead-in pulse in the first)
    assert sum(steps) == 20_000
    # cruise chunks hold chunk_s of motion: 0.05 s at 5000 steps/s
    assert max(steps) == 250 and len(fake.waves) == pytest.approx(4.25 / 0.05, abs=3)


def test_a_small_queue_is_never_overfilled() -> None:
    fake = FakeLgpio(tx_buf=2)
    b = LgpioStepBackend(STEP, lgpio_module=fake, sleep=fake.sleep, lead_s=1.0)
    assert b.run(step_deadlines(3000, 5000, 20_000), cancel=threading.Event()) == 3000
    assert fake.max_entries == 2 and len(fake.train_starts) == 1
    b.close()


@pytest.mark.parametrize("phase_us", [0, 7_000, 19_990])
def test_lgpio_start_latency_shifts_the_train_but_not_its_shape(phase_us: int) -> None:
    """lgpio's thread wakes every 20 ms while idle: a train starts 0-20 ms after it is queued,
    depending on where in that period the call falls; its shape does not change."""
    fake = FakeLgpio()  # the thread starts with the first gpiochip_open, at 0
    b = LgpioStepBackend(STEP, lgpio_module=fake, sleep=fake.sleep)
    fake.sleep(phase_us / 1e6)
    deadlines = step_deadlines(5000, 5000, 20_000)
    assert b.run(deadlines, cancel=threading.Event()) == 5000
    rising = np.array(fake.rising_edges(STEP))
    assert fake.train_starts == [IDLE_WAKE_US] and fake.waves[0][0] == phase_us
    assert np.max(np.abs(rising - IDLE_WAKE_US - deadlines * 1e6)) <= 0.5 + 1e-6
    b.close()


def test_a_late_wake_bunches_the_overdue_steps_and_the_train_catches_up(fake: FakeLgpio,
                                                                        backend: LgpioStepBackend) -> None:
    """lgpio's thread writes one pulse per pass and sleeps to absolute times: after a wake 3 ms late
    the overdue pulses come out back to back. Every step is still counted, and the steps after the
    hiccup are on their own deadlines again (no drift)."""
    deadlines = step_deadlines(10_000, 5000, 20_000)
    fake.late_wake(1.0e6, 3000)  # one second in, the thread wakes 3 ms late
    assert backend.run(deadlines, cancel=threading.Event()) == 10_000
    rising = np.array(fake.rising_edges(STEP))
    assert len(rising) == 10_000
    error_us = rising - fake.train_starts[0] - deadlines * 1e6
    late = error_us > 1
    assert 10 <= late.sum() <= 20, "the steps due during the 3 ms (5000 steps/s) came late"
    gaps = np.diff(rising)[late[1:]]
    assert gaps.min() <= 2 * fake.pass_us, "bunched: one pass apart"
    first_late = int(np.argmax(late))
    assert np.all(np.abs(error_us[first_late + int(late.sum()):]) <= 0.5 + 1e-6), "back on schedule"


def test_a_python_stall_longer_than_the_lead_is_an_underrun() -> None:
    """Why the lead exists: if Python polls later than lead_s - chunk_s, the queue runs dry."""
    fake = FakeLgpio()
    b = LgpioStepBackend(STEP, lgpio_module=fake, sleep=fake.sleep, poll_s=0.5)
    assert b.run(step_deadlines(10_000, 5000, 20_000), cancel=threading.Event()) == 10_000
    assert len(fake.train_starts) > 1, "the fake detects the gap"
    b.close()


def test_cancel_stops_queueing_with_a_known_count(fake: FakeLgpio, backend: LgpioStepBackend) -> None:
    cancel = threading.Event()
    fake.at(1.0e6, cancel.set)  # one second into a 4.25 s move
    sent = backend.run(step_deadlines(20_000, 5000, 20_000), cancel=cancel)
    rising = fake.rising_edges(STEP)
    assert sent == len(rising) == sum(n // 2 for _, _, n, _ in fake.waves)
    assert 0 < sent < 20_000
    # the motor stops within the documented bound: the queued lead, one step per chunk, one poll
    bound_us = (backend.lead_s + backend.poll_s) * 1e6 + backend.max_ahead * 1e6 / 5000
    assert 0 < rising[-1] - 1.0e6 <= bound_us
    handle = next(iter(fake.open_handles))
    assert not fake.tx_busy(handle, STEP, fake.TX_WAVE), "run() returned after the last queued step"


def test_cancel_before_the_start_sends_nothing(fake: FakeLgpio, backend: LgpioStepBackend) -> None:
    cancel = threading.Event()
    cancel.set()
    assert backend.run(step_deadlines(100, 5000, 20_000), cancel=cancel) == 0
    assert fake.waves == [] and backend.run([], cancel=threading.Event()) == 0


def test_axis_position_after_a_cancel_matches_the_emitted_train(fake: FakeLgpio) -> None:
    cfg = AxisConfig(step_pin=STEP, dir_pin=23, enable_pin=None, steps_per_rev=36000, max_speed=5000,
                     acceleration=20000, min_angle=-40, max_angle=80, start_angle=0, invert=False)
    factory = MockFactory()
    axis = Axis("rotor", cfg, pin_factory=factory, enable=None, wrap=False,
                backend=LgpioStepBackend(STEP, lgpio_module=fake, sleep=fake.sleep))
    try:
        cancel = threading.Event()
        fake.at(0.3e6, cancel.set)
        with pytest.raises(MoveCancelled, match="of 3000 steps"):
            axis.move_to(-30, cancel=cancel)  # 0.85 s uncancelled
        emitted = len(fake.rising_edges(STEP))
        assert 0 < emitted < 3000 and axis.steps == -emitted
        assert [s.state for s in factory.pin(23).states] == [False], "DIR low: backwards"
        axis.move_to(0)
        assert axis.steps == 0 and len(fake.rising_edges(STEP)) == 2 * emitted
        assert [s.state for s in factory.pin(23).states] == [False, True]
    finally:
        axis.close()
        factory.reset()


def test_time_scale_and_minimum_spacing(backend: LgpioStepBackend) -> None:
    assert backend.encode([0.001, 0.002], time_scale=0.5) == [500, 1000]
    # instant simulation: the edges are still pulse_us high and pulse_us low
    assert backend.encode([0.0, 0.0, 0.0], time_scale=0) == [0, 10, 20]
    chunks = backend.chunks([0, 10, 20])
    assert [(steps, len(pulses)) for steps, pulses in chunks] == [(3, 7)]
    assert [p.pulse_delay for p in chunks[0][1]] == [0, 5, 5, 5, 5, 5, 0]


def test_the_step_gpio_is_claimed_and_freed(fake: FakeLgpio) -> None:
    b = LgpioStepBackend(STEP, lgpio_module=fake, sleep=fake.sleep)
    handle = next(iter(fake.open_handles))
    assert fake.claims == {(handle, STEP): 0}
    assert fake.log[:2] == [("gpiochip_open", 0, handle), ("gpio_claim_output", handle, STEP, 0, 0)]
    with pytest.raises(RigError, match="GPIO busy"):  # nobody else can drive STEP meanwhile
        LgpioStepBackend(STEP, lgpio_module=fake)
    assert fake.open_handles == {handle}, "the failed backend closed its own handle"
    b.run(step_deadlines(10, 5000, 20_000), cancel=threading.Event())
    assert not any(entry[0] == "auto_claim" for entry in fake.log)
    b.close()
    b.close()
    assert fake.claims == {} and fake.open_handles == set()
    assert fake.log[-2:] == [("gpio_free", handle, STEP), ("gpiochip_close", handle)]
    with pytest.raises(RigError, match="closed"):
        b.run([0.1], cancel=threading.Event())


def test_lgpio_errors_become_rig_errors(fake: FakeLgpio) -> None:
    with pytest.raises(RigError, match=r"gpiochip_open .*\(gpiochip4\)"):
        LgpioStepBackend(STEP, chip=4, lgpio_module=fake)
    fake.exceptions = False  # lgpio.exceptions = False: negative status codes come back instead
    with pytest.raises(RigError, match="can not open gpiochip"):
        LgpioStepBackend(STEP, chip=4, lgpio_module=fake)


def test_make_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    factory = MockFactory()
    try:
        python = make_backend("python", 27, pin_factory=factory)
        assert isinstance(python, PythonStepBackend)
        python.close()
        auto = make_backend("auto", 27, pin_factory=factory)  # simulated pins: never real GPIO
        assert isinstance(auto, PythonStepBackend)
        auto.close()
        with pytest.raises(ValueError, match="unknown step backend"):
            make_backend("pigpio", 27, pin_factory=factory)
    finally:
        factory.reset()
    lgpio_import = install(monkeypatch)  # lgpio importable (the double), /dev/gpiochip0 there
    installed = next(lgpio_import)
    gpiochip_here(monkeypatch)
    chosen = make_backend("auto", 27, pin_factory=None)
    assert isinstance(chosen, LgpioStepBackend) and installed.module.claims
    chosen.close()
    next(lgpio_import, None)
    monkeypatch.setitem(sys.modules, "lgpio", None)  # not installed
    with pytest.raises(RigError, match="lgpio module is not installed"):
        make_backend("lgpio", 27, pin_factory=None)


def test_python_backend_timing_on_mock_pins() -> None:
    """A short real-time run: the rising edges land near their deadlines, none early."""
    factory = MockFactory()
    b = PythonStepBackend(27, pin_factory=factory)
    try:
        pin = factory.pin(27)
        deadlines = step_deadlines(100, 5000, 20_000)  # 0.14 s
        pin.clear_states()
        assert b.run(deadlines, cancel=threading.Event()) == 100
        t, rising = 0.0, []
        for s in pin.states:
            t += s.timestamp
            if s.state:
                rising.append(t)
        late = np.array(rising) - deadlines
        assert len(rising) == 100 and np.all(late >= -1e-5)
        assert math.isclose(rising[-1], deadlines[-1], abs_tol=0.02)
    finally:
        b.close()
        factory.reset()
