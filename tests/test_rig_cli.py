"""The rig commands as a user runs them (subprocesses), on the simulated rig."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from .conftest import run_cli


@pytest.fixture
def sim_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "daemon": {"data_dir": str(tmp_path / "data")},
        "rig": {"model": "simulated", "sim_time_scale": 0.001},
        "camera": {"resolution": [320, 240]},
    }))
    return path


def cli_json(*args: str) -> object:
    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_plan_json_is_the_contract(sim_config: Path) -> None:
    positions = cli_json("--config", str(sim_config), "plan", "--positions", "100")
    assert isinstance(positions, list) and len(positions) == 100
    assert all(set(p) == {"rotor", "turntable"} for p in positions)
    assert all(-30 <= p["rotor"] <= 70 and 0 <= p["turntable"] < 360 for p in positions)


def test_plan_for_people_shows_the_time_saved(sim_config: Path) -> None:
    proc = run_cli("--config", str(sim_config), "plan", "--positions", "50")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("50 positions, rotor -30..70°, turntable over 360° (simulated)")
    assert len(lines) == 2 + 50 + 1
    assert "estimated motion time:" in lines[-1] and "this order saves" in lines[-1]


def test_plan_turntable_only(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("plan: {turntable_only: true, rotor_fixed: 20}\n")
    positions = cli_json("--config", str(cfg), "plan", "--positions", "12")
    assert {p["rotor"] for p in positions} == {20.0}
    assert sorted(p["turntable"] for p in positions) == pytest.approx([i * 30.0 for i in range(12)])


def test_plan_refuses_nonsense(sim_config: Path) -> None:
    proc = run_cli("--config", str(sim_config), "plan", "--positions", "0")
    assert proc.returncode == 1
    assert proc.stderr == "openscan-pi: --positions must be at least 1\n"


def test_calibrate_computes_and_writes_steps_per_rev(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rig:\n  model: mini\n")
    result = cli_json("--config", str(cfg), "calibrate", "turntable", "--degrees", "360",
                      "--measured", "352.5")
    assert result["steps_per_rev"] == pytest.approx(3200 * 360 / 352.5, abs=0.01)
    assert result["written"] is None
    assert cfg.read_text() == "rig:\n  model: mini\n"  # not written without --write
    result = cli_json("--config", str(cfg), "calibrate", "turntable", "--degrees", "360",
                      "--measured", "352.5", "--write")
    assert result["written"] == str(cfg)
    saved = yaml.safe_load(cfg.read_text())
    assert saved["rig"] == {"model": "mini", "turntable": {"steps_per_rev": result["steps_per_rev"]}}
    assert (tmp_path / "c.yaml.bak").read_text() == "rig:\n  model: mini\n"
    shown = cli_json("--config", str(cfg), "calibrate", "turntable", "--degrees", "90",
                     "--measured", "90")
    assert shown["previous"] == result["steps_per_rev"]  # the new value is in force


def test_move_home_light_capture_on_the_simulated_rig(sim_config: Path, tmp_path: Path) -> None:
    moved = cli_json("--config", str(sim_config), "move", "--rotor", "30", "--turntable", "90")
    assert moved["rotor"] == pytest.approx(30, abs=0.05)
    assert moved["turntable"] == pytest.approx(90, abs=0.2)
    # the next run starts where this one left the rig
    again = cli_json("--config", str(sim_config), "move", "--turntable", "-10")
    assert again["rotor"] == pytest.approx(30, abs=0.05)
    assert again["turntable"] == pytest.approx(350, abs=0.2)
    homed = cli_json("--config", str(sim_config), "home")
    assert homed["rotor"] == pytest.approx(-40 + 5, abs=0.05)  # endstop angle, then the backoff
    assert "endstop" in homed["message"]
    assert cli_json("--config", str(sim_config), "light", "on", "--brightness", "0.5") == {
        "on": True, "brightness": 0.5}
    shot = cli_json("--config", str(sim_config), "capture", str(tmp_path / "a.jpg"))
    assert shot["path"] == str(tmp_path / "a.jpg")
    with Image.open(tmp_path / "a.jpg") as image:
        assert image.size == (320, 240)
        description = json.loads(image.getexif()[0x010E])
    assert description["rotor"] == pytest.approx(homed["rotor"], abs=0.05)


def test_move_beyond_the_rotor_limit_is_refused(sim_config: Path) -> None:
    proc = run_cli("--config", str(sim_config), "move", "--rotor", "85")
    assert proc.returncode == 1
    assert "85" in proc.stderr and "rig.rotor.max_angle" in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.skipif(Path("/proc/device-tree/model").exists(), reason="this machine has GPIO")
def test_real_rig_without_gpio_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"daemon: {{data_dir: {tmp_path / 'data'}}}\n")
    proc = run_cli("--config", str(cfg), "move", "--rotor", "10")
    assert proc.returncode == 1
    assert proc.stderr == ("openscan-pi: no GPIO here: gpiozero found no pin factory (on a Raspberry "
                           "Pi: apt install python3-lgpio; elsewhere: --simulate or rig.model: "
                           "simulated)\n")


def saved_position(sim_config: Path) -> object:
    state = sim_config.parent / "data" / "rig-state.json"
    return json.loads(state.read_text())["rotor_steps"] if state.exists() else None


@pytest.mark.parametrize("degrees", ["600", "-600", "81", "3600"])
def test_calibrating_the_rotor_past_its_limits_is_refused(sim_config: Path, degrees: str) -> None:
    before = saved_position(sim_config)
    proc = run_cli("--config", str(sim_config), "calibrate", "rotor", "--degrees", degrees)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "its limits are -40° to 80° (rig.rotor.min_angle / rig.rotor.max_angle)" in proc.stderr
    assert "calibrate the rotor within its range: `openscan-pi move --rotor" in proc.stderr
    assert saved_position(sim_config) in (before, 0)  # not a step taken
    assert cli_json("--config", str(sim_config), "move", "--turntable", "0")["rotor"] == 0


def test_calibrating_the_rotor_by_default_stays_within_its_range(sim_config: Path) -> None:
    """The default --degrees (60) fits every profile from its start angle (0°)."""
    turned = cli_json("--config", str(sim_config), "calibrate", "rotor")
    assert turned["degrees"] == 60
    assert cli_json("--config", str(sim_config), "move", "--turntable", "0")["rotor"] == pytest.approx(
        60, abs=0.05)


def test_calibrating_the_turntable_turns_it_freely(sim_config: Path) -> None:
    turned = cli_json("--config", str(sim_config), "calibrate", "turntable", "--degrees", "3600")
    assert turned == {"axis": "turntable", "degrees": 3600, "steps_per_rev": 3200}
    assert cli_json("--config", str(sim_config), "move", "--rotor", "0")["turntable"] == pytest.approx(
        0, abs=0.2)
