"""The rig worker's messages: each type survives its JSON line, and errors keep their class and
text across the boundary."""

from __future__ import annotations

import pytest

from openscan_pi.errors import DiskError, UserError
from openscan_pi.rig import messages as m
from openscan_pi.rig.camera import CameraStalled
from openscan_pi.rig.errors import RigError


@pytest.mark.parametrize("message", [
    m.Call(id=3, op="move", args={"rotor": 10.5, "turntable": None}, cancelled=True),
    m.Cancel(),
    m.Hello(pid=42, info={"has_autofocus": True}, rig={"rotor": 0.0, "light": False}),
    m.Beat(rig={"rotor": 1.25, "turntable": 90.0}),
    m.Reply(id=3, result={"size": 1}, rig={"rotor": 10.5}),
    m.Reply(id=4, error={"kind": "RigError", "text": "no"}),
])
def test_each_message_is_one_line_and_reads_back_equal(message: m.Message) -> None:
    line = m.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert m.decode(line) == message


@pytest.mark.parametrize("line", [b"not json\n", b'{"type": "nope"}\n', b'{"type": "call"}\n',
                                  b"[1, 2]\n"])
def test_a_line_of_another_protocol_is_refused(line: bytes) -> None:
    with pytest.raises(m.ProtocolError, match="not a rig message"):
        m.decode(line)


@pytest.mark.parametrize("exc", [RigError("rotor: 95° is beyond max_angle 90"),
                                 CameraStalled("no frame within 10 s"),
                                 DiskError("the disk is full"), UserError("plain")])
def test_errors_a_user_can_act_on_keep_their_class_and_text(exc: Exception) -> None:
    with pytest.raises(type(exc)) as raised:
        m.raise_error(m.error_of(exc))
    assert type(raised.value) is type(exc) and str(raised.value) == str(exc)


def test_any_other_error_arrives_as_a_remote_error_naming_its_class() -> None:
    with pytest.raises(m.RemoteError, match=r"^ZeroDivisionError: division by zero$"):
        m.raise_error(m.error_of(ZeroDivisionError("division by zero")))
