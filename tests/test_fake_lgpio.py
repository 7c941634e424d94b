"""The lgpio double fails the way lgpio 0.2 does (joan2937/lg: lgGpio.c, lgPthTx.c, lgNotify.c):
what the step backend and gpiozero meet on a Pi, and what a simpler double would hide."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_lgpio import (
    IDLE_WAKE_US,
    LG_TX_BUF,
    OTHER_PROGRAM,
    FakeLgpio,
    Installed,
    error,
    install,
    pulse,
)

GPIO = 27


def square(n: int, period_us: int = 1000) -> list[pulse]:
    """``n`` pulses: high half a period, low half a period."""
    half = period_us // 2
    return [p for _ in range(n) for p in (pulse(1, 1, half), pulse(0, 1, half))]


@pytest.fixture
def lg() -> FakeLgpio:
    return FakeLgpio()


def test_freeing_stops_a_wave_at_once_and_nothing_else_does(lg: FakeLgpio) -> None:
    h = lg.gpiochip_open(0)
    lg.gpio_claim_output(h, GPIO)
    lg.tx_wave(h, GPIO, square(100))
    lg.sleep(0.03)
    lg.gpio_write(h, GPIO, 0)  # writing the line does not stop the wave
    assert lg.tx_wave(h, GPIO, []) == 0  # nor does an empty wave
    lg.sleep(0.01)
    assert lg.tx_busy(h, GPIO, lg.TX_WAVE) == 1
    before = len(lg.edges[GPIO])
    lg.gpio_free(h, GPIO)
    lg.sleep(0.2)
    assert len(lg.edges[GPIO]) == before, "no edge after gpio_free"
    assert lg.tx_busy(h, GPIO, lg.TX_WAVE) == 0
    # gpiochip_close stops the waves of its handle the same way
    lg.gpio_claim_output(h, GPIO)
    lg.tx_wave(h, GPIO, square(100))
    lg.sleep(0.03)
    before = len(lg.edges[GPIO])
    lg.gpiochip_close(h)
    lg.sleep(0.2)
    assert len(lg.edges[GPIO]) == before


def test_the_queue_holds_ten_and_counts_the_one_playing(lg: FakeLgpio) -> None:
    h = lg.gpiochip_open(0)
    assert lg.tx_room(h, GPIO, lg.TX_WAVE) == LG_TX_BUF
    assert lg.tx_wave(h, GPIO, square(50)) == LG_TX_BUF - 1
    lg.sleep(0.025)  # it is playing now
    assert lg.tx_room(h, GPIO, lg.TX_WAVE) == LG_TX_BUF - 1, "the playing entry still counts"
    for left in range(LG_TX_BUF - 2, -1, -1):
        assert lg.tx_wave(h, GPIO, square(5)) == left
    with pytest.raises(error, match="TX queue full"):
        lg.tx_wave(h, GPIO, square(5))


def test_a_new_train_starts_at_the_threads_next_wake(lg: FakeLgpio) -> None:
    h = lg.gpiochip_open(0)  # the thread's first pass, at 0; then every 20 ms while idle
    lg.sleep(0.005)
    lg.tx_wave(h, GPIO, square(2))
    lg.sleep(0.05)
    assert lg.train_starts == [IDLE_WAKE_US], "15 ms after the call"
    # a PWM keeps the thread awake: the next train starts within one PWM edge
    lg.tx_pwm(h, 17, 1000, 50)
    lg.sleep(0.0371)
    queued = lg.now_us
    lg.tx_wave(h, GPIO, square(2))
    lg.sleep(0.01)
    assert 0 < lg.train_starts[-1] - queued <= 500


def test_a_late_wake_sends_the_overdue_pulses_back_to_back(lg: FakeLgpio) -> None:
    h = lg.gpiochip_open(0)
    lg.tx_wave(h, GPIO, square(50))
    lg.late_wake(IDLE_WAKE_US + 10_000, 4000)
    lg.sleep(0.2)
    rising = lg.rising_edges(GPIO)
    assert len(rising) == 50
    start = rising[0]
    late = [t - (start + 1000 * i) for i, t in enumerate(rising) if t - (start + 1000 * i) > 0]
    assert len(late) == 5 and late[0] == pytest.approx(4000, abs=2)
    assert all(later < earlier for earlier, later in zip(late, late[1:], strict=False)), "catching up"
    assert rising[-1] == start + 49_000, "on schedule again"


def test_lines_held_elsewhere_are_busy(lg: FakeLgpio) -> None:
    gpiozero_handle = lg.gpiochip_open(0)  # gpiozero's LGPIOFactory has a handle of its own
    ours = lg.gpiochip_open(0)
    lg.gpio_claim_input(gpiozero_handle, GPIO, lg.SET_PULL_NONE)
    with pytest.raises(error, match="GPIO busy"):
        lg.gpio_claim_output(ours, GPIO)
    with pytest.raises(error, match="GPIO not set as an output"):  # lgpio tries to claim it
        lg.tx_wave(ours, GPIO, square(1))
    lg.hold(22)
    assert lg.line(22).owner == OTHER_PROGRAM
    lg.exceptions = False
    assert lg.gpio_claim_output(ours, 22, 1) == -79  # GPIO_BUSY


def test_negative_error_codes(lg: FakeLgpio) -> None:
    h = lg.gpiochip_open(0)
    with pytest.raises(error, match="bad GPIO number"):
        lg.tx_wave(h, 60, square(1))
    with pytest.raises(error, match="GPIO operation not permitted"):
        lg.gpio_claim_output(h, 60)
    with pytest.raises(error, match="unknown handle"):
        lg.gpio_write(h + 100, GPIO, 1)
    with pytest.raises(error, match="can not open gpiochip"):
        lg.gpiochip_open(4)
    lg.exceptions = False  # lgpio.exceptions = False: the codes come back instead
    assert (lg.tx_room(h, 60, lg.TX_WAVE), lg.gpio_free(h, GPIO), lg.tx_busy(h, GPIO, 7)) == (-73, -80, -10)


def test_released_lines_keep_what_they_were_unless_strict(lg: FakeLgpio) -> None:
    h = lg.gpiochip_open(0)
    lg.gpio_claim_output(h, 22, 1)
    lg.gpio_claim_input(h, 23, lg.SET_PULL_NONE)
    lg.gpiochip_close(h)
    assert (lg.line(22).mode, lg.line(22).level, lg.line(22).owner) == ("output", 1, None)
    assert lg.line(23).floating
    strict = FakeLgpio(strict_gpiod=True)
    h = strict.gpiochip_open(0)
    strict.gpio_claim_output(h, 22, 1)
    strict.gpiochip_close(h)
    assert strict.line(22).mode == "input"


# -- the import -------------------------------------------------------------------------------------


@pytest.fixture
def lgpio_import(monkeypatch: pytest.MonkeyPatch) -> Iterator[Installed]:
    yield from install(monkeypatch)


def test_import_makes_its_fifo_in_lg_wd_and_moves_there(tmp_path: Path, lgpio_import: Installed,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    work, here = tmp_path / "lgwd", tmp_path / "here"
    work.mkdir()
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("LG_WD", str(work))
    import lgpio  # type: ignore[import-not-found]

    assert lgpio is lgpio_import.module
    assert stat.S_ISFIFO((work / ".lgd-nfy0").stat().st_mode)
    assert os.getcwd() == str(work), "lgpio changes the process' working folder"


def test_import_fails_with_file_not_found_where_it_cannot_write(lgpio_import: Installed,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LG_WD", raising=False)
    monkeypatch.chdir("/proc")  # nobody, root included, can make a FIFO here
    with pytest.raises(FileNotFoundError, match="lgd-nfy-3"):
        import lgpio  # type: ignore[import-not-found]  # noqa: F401
    assert "lgpio" not in sys.modules and not issubclass(FileNotFoundError, ImportError)
