"""The ring light on gpiozero's MockFactory: whole pin histories, PWM levels, the idle timer."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from openscan_pi.config import load_config
from openscan_pi.rig.errors import RigError
from openscan_pi.rig.light import PWM_FREQUENCY, RingLight

BASE = load_config(None, env={}).rig.light


def light_cfg(**changes: Any) -> Any:
    changes.setdefault("pins", (17, 27))
    changes.setdefault("idle_off_s", None)
    return dataclasses.replace(BASE, **changes)


def states(factory: MockFactory, pin: int) -> list[Any]:
    return [s.state for s in factory.pin(pin).states]


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    yield MockFactory()


@pytest.fixture
def pwm_factory() -> Iterator[MockFactory]:
    yield MockFactory(pin_class=MockPWMPin)


def test_on_off_both_channels(factory: MockFactory) -> None:
    light = RingLight(light_cfg(pwm=False, active_high=True), pin_factory=factory)
    assert not light.is_on
    light.on()
    assert light.is_on and light.brightness == 1.0
    light.off()
    light.on(0.2)  # no PWM: any brightness above 0 is full on
    assert light.brightness == 1.0
    light.close()
    for pin in (17, 27):
        assert states(factory, pin) == [False, True, False, True, False]


def test_active_low(factory: MockFactory) -> None:
    light = RingLight(light_cfg(pwm=False, active_high=False), pin_factory=factory)
    light.on()
    light.off()
    light.close()
    # idle is high; on pulls the pins low
    for pin in (17, 27):
        assert states(factory, pin) == [False, True, False, True]


def test_pwm_brightness(pwm_factory: MockFactory) -> None:
    light = RingLight(light_cfg(pwm=True, brightness=0.6, active_high=True), pin_factory=pwm_factory)
    light.on()
    light.on(0.25)
    light.on(0)  # zero is off
    assert not light.is_on
    light.on(1.0)
    light.off()
    for pin in (17, 27):
        assert states(pwm_factory, pin) == [False, 0.6, 0.25, 0, 1.0, 0]
        assert pwm_factory.pin(pin).frequency == PWM_FREQUENCY
    light.close()
    assert pwm_factory.pin(17).frequency is None


def test_pwm_active_low_inverts_the_duty_cycle(pwm_factory: MockFactory) -> None:
    light = RingLight(light_cfg(pwm=True, brightness=0.3, active_high=False), pin_factory=pwm_factory)
    light.on()
    light.off()
    # idle is a 100 % duty cycle (pin high); 30 % brightness is a 70 % duty cycle
    assert [round(s, 6) for s in states(pwm_factory, 17)] == [0, 1.0, 0.7, 1.0]
    light.close()  # gpiozero stops PWM and releases the pin


def test_brightness_out_of_range(pwm_factory: MockFactory) -> None:
    with RingLight(light_cfg(pwm=True), pin_factory=pwm_factory) as light:
        with pytest.raises(RigError, match="out of range"):
            light.on(1.5)
        assert not light.is_on


def test_idle_timer_switches_off(factory: MockFactory) -> None:
    light = RingLight(light_cfg(pwm=False, idle_off_s=0.05), pin_factory=factory)
    start = time.monotonic()
    light.on()
    assert light.wait_off(timeout=5)
    assert time.monotonic() - start >= 0.05
    assert not light.is_on
    assert states(factory, 17) == [False, True, False]
    light.close()


def test_touch_rearms_the_timer(factory: MockFactory) -> None:
    """Touching the light more often than idle_off_s keeps it on; once touching stops it goes off."""
    light = RingLight(light_cfg(pwm=False, idle_off_s=0.25), pin_factory=factory)
    went_off = threading.Event()
    watcher = threading.Thread(target=lambda: light.wait_off(timeout=10) and went_off.set())
    light.on()
    watcher.start()
    last_touch = time.monotonic()
    touch_until = last_touch + 0.5  # twice the idle time
    while time.monotonic() < touch_until:
        assert not went_off.wait(0.03), "switched off although touched every 30 ms"
        last_touch = time.monotonic()  # before the touch: its timer starts after this
        light.touch()
    assert went_off.wait(5)
    assert time.monotonic() - last_touch >= 0.25
    watcher.join()
    assert states(factory, 17) == [False, True, False]
    light.close()


def test_off_cancels_the_timer_and_no_stale_timer_fires(factory: MockFactory) -> None:
    light = RingLight(light_cfg(pwm=False, idle_off_s=0.2), pin_factory=factory)
    light.on()
    time.sleep(0.1)  # not synchronisation: the first timer has to be half-way through
    light.off()
    # a new period: the first timer (due 0.1 s from now) must not cut it short; the time is
    # taken before the touch, since the new timer starts inside on()
    turned_on = time.monotonic()
    light.on()
    assert light.wait_off(timeout=5)
    assert time.monotonic() - turned_on >= 0.2
    assert states(factory, 17) == [False, True, False, True, False]
    light.close()


def test_no_idle_timer_when_none(factory: MockFactory) -> None:
    light = RingLight(light_cfg(pwm=False, idle_off_s=None), pin_factory=factory)
    light.on()
    assert light._timer is None
    assert not light.wait_off(timeout=0.05)  # stays on
    light.close()
    assert light.wait_off(timeout=0)


def test_close_switches_off_releases_pins_and_refuses_more(factory: MockFactory) -> None:
    light = RingLight(light_cfg(pwm=False, idle_off_s=30), pin_factory=factory)
    light.on()
    light.close()
    light.close()
    assert not light.is_on and light._timer is None
    assert states(factory, 17) == [False, True, False]
    with pytest.raises(RigError, match="closed"):
        light.on()
    # the pins are free again
    again = RingLight(light_cfg(pwm=False), pin_factory=factory)
    again.close()
