"""What the daemon's socket refuses: rotor moves past its limits (every rig method), and project
names or job ids that are not plain names. Over the real socket of a real daemon process."""

from __future__ import annotations

from pathlib import Path

import pytest

from openscan_pi.daemon.client import DaemonError
from openscan_pi.daemon.protocol import INVALID_PARAMS, REFUSED
from tests.daemon.conftest import DaemonProcess

LIMITS = "its limits are -40° to 80° (rig.rotor.min_angle / rig.rotor.max_angle)"


def where(daemon: DaemonProcess) -> tuple[float, float]:
    rig = daemon.call("status")["rig"]
    return rig["rotor"], rig["turntable"]


def test_no_rig_method_takes_the_rotor_past_its_limits(daemon: DaemonProcess) -> None:
    daemon.call("rig.move", {"rotor": 20, "turntable": 30})
    start = where(daemon)
    for method, params, extra in [
        ("rig.turn", {"axis": "rotor", "degrees": 3600}, "calibrate the rotor within its range"),
        ("rig.turn", {"axis": "rotor", "degrees": -600}, "calibrate the rotor within its range"),
        ("rig.turn", {"axis": "rotor", "degrees": 61}, "`openscan-pi calibrate rotor --degrees 90`"),
        ("rig.move", {"rotor": 85}, "the rotor cannot go to 85°"),
        ("rig.move", {"rotor": -41, "turntable": 90}, "the rotor cannot go to -41°"),
    ]:
        with pytest.raises(DaemonError) as err:
            daemon.call(method, params)
        assert err.value.code == REFUSED, (method, params)
        assert LIMITS in str(err.value) and extra in str(err.value), str(err.value)
        assert where(daemon) == start, f"{method} {params} moved the rig"
    daemon.call("rig.turn", {"axis": "rotor", "degrees": 60})  # up to 80°: the limit itself
    daemon.call("rig.turn", {"axis": "turntable", "degrees": -3600})  # ten turns: free
    rotor, turntable = where(daemon)
    assert rotor == pytest.approx(80, abs=0.05) and turntable == pytest.approx(30, abs=0.2)
    assert "Traceback" not in daemon.log_text()


BAD_NAMES = ["../../x", "..", ".", ".hidden", "/etc/passwd", "a/b", "x\0y", "a" * 300, "my vase",
             "vasé.zip", ""]


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_names_and_job_ids_that_are_not_names_are_invalid_params(daemon: DaemonProcess) -> None:
    before = tree(daemon.root)
    with daemon.client() as c:
        for name in BAD_NAMES:
            for method, params in [("scan", {"positions": 1, "project": name}), ("job", {"job": name}),
                                   ("cancel", {"job": name}), ("retry", {"job": name})]:
                with pytest.raises(DaemonError) as err:
                    c.call(method, params)
                assert err.value.code == INVALID_PARAMS, (method, name, str(err.value))
                rule = ("a name is 1-120 characters of A-Z a-z 0-9 _ . -" if method == "scan"
                        else "a job id looks like 20261202-070104-969")
                assert rule in str(err.value) and "\n" not in str(err.value)
        assert c.call("jobs") == []
        with pytest.raises(DaemonError) as err:  # a name, but no such job: refused, not invalid
            c.call("retry", {"job": "20261202-070104-969"})
        assert err.value.code == REFUSED and "no job 20261202-070104-969" in str(err.value)
    assert tree(daemon.root) == before, "nothing created anywhere"
    assert "Traceback" not in daemon.log_text()

