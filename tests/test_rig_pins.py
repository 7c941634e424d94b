"""The rig's pins on the real gpiozero installed here: the pin factory it chooses (also when told to
use its mock one), and, on the lgpio double, its real ``LGPIOFactory`` as on a Raspberry Pi."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from openscan_pi.config import Config, load_config
from openscan_pi.doctor import OK, WARN, check_pins
from openscan_pi.rig.errors import RigError
from openscan_pi.rig.lgpio_import import import_lgpio
from openscan_pi.rig.rig import Rig, _pin_factory
from tests.fake_lgpio import PI_4B, FakeLgpio, Installed, gpiochip_here, install


def rig_config(tmp_path: Path, model: str = "mini-v2", **rig: Any) -> Config:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"daemon": {"data_dir": str(tmp_path / "data")},
                                    "rig": {"model": model, "idle_disable_s": 0, **rig}}))
    return load_config(path, env={})


@pytest.fixture
def mock_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Installed]:
    """``GPIOZERO_PIN_FACTORY=mock`` on a machine where lgpio (the double) would work."""
    lgpio_import = install(monkeypatch)
    installed = next(lgpio_import)
    gpiochip_here(monkeypatch)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    yield installed
    next(lgpio_import, None)


@pytest.fixture
def pi(monkeypatch: pytest.MonkeyPatch) -> Iterator[Installed]:
    """A Raspberry Pi 4B as gpiozero sees it: its default pin factory is LGPIOFactory, on the
    lgpio double (following the wall clock, as the rig sleeps for real)."""
    gpiochip_here(monkeypatch)
    yield from install(monkeypatch, revision=PI_4B, make=lambda: FakeLgpio(realtime=True))


def opened_gpiochips(installed: Installed) -> list[Any]:
    return [entry for fake in installed.importer.made for entry in fake.log if entry[0] == "gpiochip_open"]


def test_the_rig_takes_the_factory_gpiozero_chose(mock_env: Installed, tmp_path: Path) -> None:
    """``Device.ensure_pin_factory()`` returns None: the factory is ``Device.pin_factory``. Told to
    use its mock pins, the rig must not drive real GPIO through lgpio behind gpiozero's back."""
    assert isinstance(_pin_factory(), MockFactory)
    with Rig(rig_config(tmp_path), camera=False) as rig:
        assert rig.pin_factory is Device.pin_factory
        rig.move(turntable=5)
    assert opened_gpiochips(mock_env) == [], "no gpiochip opened: the STEP pulses went to mock pins"


def test_doctor_names_the_factory_the_rig_would_use(mock_env: Installed, tmp_path: Path) -> None:
    check = check_pins(rig_config(tmp_path))
    assert check.status == WARN and check.detail.startswith("gpiozero uses its MockFactory")
    assert check.fix == "unset GPIOZERO_PIN_FACTORY"


def test_on_a_pi_the_rig_runs_on_gpiozeros_lgpio_factory(pi: Installed, tmp_path: Path) -> None:
    check = check_pins(rig_config(tmp_path))
    assert (check.status, check.detail) == (OK, "LGPIOFactory on a Raspberry Pi 4B, lgpio importable")
    cfg = rig_config(tmp_path)
    with Rig(cfg, camera=False) as rig:
        assert type(rig.pin_factory).__name__ == "LGPIOFactory"
        rig.move(rotor=1, turntable=10)
        lgpio = pi.module
        assert {gpio for _, gpio, _, _ in lgpio.waves} == {cfg.rig.rotor.step_pin, cfg.rig.turntable.step_pin}
        steps = round(10 * cfg.rig.turntable.steps_per_rev / 360)
        assert len(lgpio.rising_edges(cfg.rig.turntable.step_pin)) == steps


def levels(lgpio: FakeLgpio, gpio: int) -> list[int]:
    return [level for _, level in lgpio.edges.get(gpio, [])]


def test_the_drivers_stay_disabled_when_the_rig_closes(pi: Installed, tmp_path: Path) -> None:
    """Blackshield: EN (GPIO 22, active low, both drivers) must never float. gpiozero's
    LGPIOPin.close() re-claims a pin as an input with no pull, and the drivers' own pull-down
    then enables them: after every `move` the motors would stay energised, heating up. The EN
    line (and every other output the rig drives) is left driven at its idle level, also once the
    process ends (gpiozero's factory closed, the lines released: Raspberry Pi kernels keep a
    released output driven)."""
    cfg = rig_config(tmp_path)
    en = cfg.rig.rotor.enable_pin
    assert en is not None and en == cfg.rig.turntable.enable_pin
    with Rig(cfg, camera=False) as rig:
        lgpio = pi.module
        assert levels(lgpio, en) == [1], "claimed disabled: no enable glitch at start"
        rig.move(turntable=10)
        assert levels(lgpio, en) == [1, 0, 1], "enabled for the move, disabled after it"
        rig.light.on()
    idle = {en: 1, cfg.rig.trigger.pin: 0, **{pin: 0 for pin in cfg.rig.light.pins}}
    for gpio, level in idle.items():
        line = lgpio.line(gpio)
        assert (line.mode, line.level) == ("output", level), f"GPIO {gpio} left {line}"
    for gpio in (cfg.rig.rotor.dir_pin, cfg.rig.turntable.dir_pin):
        assert lgpio.line(gpio).mode == "output" and not lgpio.line(gpio).floating
    with Rig(cfg, camera=False) as rig:  # opened again (a reload): still no glitch
        rig.move(turntable=0)
    assert levels(lgpio, en) == [1, 0, 1, 0, 1]
    Device.pin_factory.close()  # the process ends: gpiozero's atexit
    assert lgpio.open_handles == set()
    for gpio, level in idle.items():
        assert (lgpio.line(gpio).mode, lgpio.line(gpio).level) == ("output", level)


def test_an_output_another_program_holds_is_one_line(pi: Installed, tmp_path: Path) -> None:
    import_lgpio()
    pi.module.hold(22)  # e.g. a second daemon, or a script, has the drivers' EN line
    busy = r"^lgpio gpio_claim_output on GPIO 22 \(gpiochip0\) failed: 'GPIO busy'"
    with pytest.raises(RigError, match=busy):
        Rig(rig_config(tmp_path), camera=False)
    assert len(pi.module.open_handles) == 1, "only gpiozero's factory: the rig closed what it opened"


def test_a_step_pin_gpiozero_holds_falls_back_to_python_timing(pi: Installed, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A pin gpiozero has opened stays claimed by its factory until the process ends (closing a
    device only makes it an input). So after a rig with ``rig.step_backend: python`` (STEP through
    gpiozero), lgpio cannot claim STEP in this process: ``auto`` says so and times the pulses in
    Python; ``lgpio`` is refused in one line."""
    with Rig(rig_config(tmp_path, step_backend="python"), camera=False) as rig:
        rig.move(turntable=5)
    with caplog.at_level(logging.WARNING), Rig(rig_config(tmp_path, step_backend="auto"),
                                               camera=False) as rig:
        rig.move(turntable=0)
    assert "lgpio step backend unavailable" in caplog.text and "GPIO busy" in caplog.text
    with pytest.raises(RigError, match=r"gpio_claim_output on GPIO 27 .*'GPIO busy'"):
        Rig(rig_config(tmp_path, step_backend="lgpio"), camera=False)
