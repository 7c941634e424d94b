"""lgpio's error numbers and texts, and its exception, for the lgpio double (:mod:`tests.fake_lgpio`)."""

from __future__ import annotations

# lgpio_extra.py's error numbers (the ones the double can give)
OKAY = 0
BAD_PATHNAME = -3
BAD_HANDLE = -5
NOT_PERMITTED = -7
BAD_TX_TYPE = -10
BAD_GPIO_NUMBER = -73
CANNOT_OPEN_CHIP = -78
GPIO_BUSY = -79
GPIO_NOT_ALLOCATED = -80
BAD_PWM_MICROS = -86
BAD_GPIOCHIP = -89
TX_QUEUE_FULL = -96
BAD_PWM_FREQ = -102
BAD_PWM_DUTY = -103
GPIO_NOT_AN_OUTPUT = -104

_TEXT = {BAD_PATHNAME: "can not open pathname", BAD_HANDLE: "unknown handle",
         NOT_PERMITTED: "GPIO operation not permitted", BAD_TX_TYPE: "bad tx type for GPIO and group",
         BAD_GPIO_NUMBER: "bad GPIO number", CANNOT_OPEN_CHIP: "can not open gpiochip",
         GPIO_BUSY: "GPIO busy", GPIO_NOT_ALLOCATED: "GPIO not allocated", BAD_PWM_MICROS: "bad PWM micros",
         BAD_GPIOCHIP: "bad gpiochip", TX_QUEUE_FULL: "TX queue full", BAD_PWM_FREQ: "bad PWM frequency",
         BAD_PWM_DUTY: "bad PWM dutycycle", GPIO_NOT_AN_OUTPUT: "GPIO not set as an output"}


class error(Exception):  # noqa: N801 - lgpio's name
    """lgpio module exception."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return repr(self.value)
