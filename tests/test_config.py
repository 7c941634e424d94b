"""Configuration: lookup order, merging, validation messages, exit status 78 from the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from openscan_pi.config import load_config
from openscan_pi.errors import EX_CONFIG, ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_annotated_file_and_the_repo_copy_is_the_same() -> None:
    shipped = (ROOT / "openscan_pi" / "data" / "openscan-pi.yaml").read_text()
    assert (ROOT / "config" / "openscan-pi.yaml").read_text() == shipped
    cfg = load_config(env={})
    defaults = yaml.safe_load(shipped)
    assert cfg.cloud.url == defaults["cloud"]["url"] == "http://openscanfeedback.dnsuser.de:1334"
    assert (cfg.cloud.user, cfg.cloud.password) == ("openscan", "free")
    assert cfg.cloud.max_part_bytes == 200_000_000
    assert cfg.daemon.socket == "/run/openscan-pi/openscan-pi.sock"
    assert cfg.daemon.data_dir == "/var/lib/openscan-pi"
    assert cfg.rig.model == "classic"
    assert cfg.camera.resolution == tuple(defaults["camera"]["resolution"])


def test_a_file_only_needs_the_keys_it_changes(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "cloud:\n  poll_interval_s: 2\nrig:\n  model: mini\n"), env={})
    assert cfg.cloud.poll_interval_s == 2.0
    assert cfg.rig.model == "mini"
    assert cfg.cloud.max_part_bytes == 200_000_000  # untouched default
    assert cfg.source == str(tmp_path / "config.yaml")


def test_lookup_order_explicit_then_env(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("rig: {model: mini}\n")
    b.write_text("rig: {model: midi}\n")
    assert load_config(env={"OPENSCAN_PI_CONFIG": str(b)}).rig.model == "midi"
    assert load_config(a, env={"OPENSCAN_PI_CONFIG": str(b)}).rig.model == "mini"


def test_token_from_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "cloud: {token: from-file}\n")
    assert load_config(path, env={}).cloud.token == "from-file"
    assert load_config(path, env={"OPENSCAN_PI_TOKEN": "from-env"}).cloud.token == "from-env"


@pytest.mark.parametrize(("text", "message"), [
    ("cloud:\n  max_part_bytes: lots\n",
     "config: cloud.max_part_bytes: expected an integer, got 'lots'"),
    ("cloud:\n  max_part_bytes: 300000000\n",
     "config: cloud.max_part_bytes: 300000000 is out of range (4096-200000000)"),
    ("cloud:\n  poll_interval_s: 0\n", "config: cloud.poll_interval_s: 0.0 must be greater than 0"),
    ("cloud:\n  retries: true\n", "config: cloud.retries: expected an integer, got True"),
    ("cloud:\n  url: ftp://example.org\n",
     "config: cloud.url: 'ftp://example.org' is not an http(s) URL or 'local'"),
    ("cloud:\n  tokn: abc\n", "config: cloud.tokn: unknown key (known here: "),
    ("clouds: {}\n", "config: clouds: unknown key (known here: camera, cloud, daemon, jobs, plan, rig, web)"),
    ("cloud: 5\n", "config: cloud: expected a mapping, got 5"),
    ("rig:\n  model: classik\n",
     "config: rig.model: expected one of classic, mini, mini-v2, midi, simulated, got 'classik'"),
    ("camera:\n  resolution: [4056]\n", "config: camera.resolution: expected [width, height]"),
    ("camera:\n  resolution: [4056, x]\n",
     "config: camera.resolution[1]: expected an integer, got 'x'"),
    ("daemon:\n  data_dir: relative/path\n",
     "config: daemon.data_dir: 'relative/path' must be an absolute path"),
    ("daemon:\n  socket_group: no-such-group-x\n",
     "config: daemon.socket_group: group 'no-such-group-x' does not exist (create it: "),
    ("daemon:\n  max_transfers: 0\n", "config: daemon.max_transfers: 0 is out of range (1-8)"),
    ("jobs:\n  resume_scan: maybe\n",
     "config: jobs.resume_scan: expected one of resume, fail, got 'maybe'"),
    ("- just\n- a list\n", "expected a mapping of sections"),
    ("cloud: [unclosed\n", "line 2, column 1"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert message in str(info.value)
    assert str(info.value).startswith("config: ")
    assert "\n" not in str(info.value)
    assert info.value.exit_code == EX_CONFIG == 78


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml", env={})


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}).rig.model == "classic"


def test_config_objects_are_frozen() -> None:
    cfg = load_config(env={})
    with pytest.raises(AttributeError):
        cfg.cloud.url = "x"  # type: ignore[misc]


def test_data_dir_falls_back_for_a_user_who_cannot_write_the_default(tmp_path: Path,
                                                                       monkeypatch) -> None:
    cfg = load_config(write(tmp_path, f"daemon: {{data_dir: {tmp_path}/data}}\n"), env={})
    assert cfg.data_dir == tmp_path / "data"
    if os.geteuid() == 0:
        pytest.skip("root can write the default data_dir")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert load_config(env={}).data_dir == tmp_path / "xdg" / "openscan-pi"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSCAN_PI_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "openscan_pi", *args], capture_output=True,
                          text=True, env=full_env, timeout=60)


def test_cli_broken_config_is_one_line_and_exit_78(tmp_path: Path) -> None:
    path = write(tmp_path, "cloud:\n  max_part_bytes: lots\n")
    proc = run_cli("--config", str(path), "token")
    assert proc.returncode == 78
    assert proc.stderr == ("openscan-pi: config: cloud.max_part_bytes: expected an integer, "
                           "got 'lots'\n")
    assert proc.stdout == ""


def test_cli_missing_config_file_exit_78(tmp_path: Path) -> None:
    proc = run_cli("--config", str(tmp_path / "nope.yaml"), "token")
    assert proc.returncode == 78
    assert "nope.yaml: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_debug_shows_the_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "cloud:\n  max_part_bytes: lots\n")
    proc = run_cli("--debug", "--config", str(path), "token")
    assert proc.returncode == 78
    assert "Traceback" in proc.stderr


def test_cli_env_config_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, "rig:\n  model: nope\n")
    proc = run_cli("token", env={"OPENSCAN_PI_CONFIG": str(path)})
    assert proc.returncode == 78
    assert "rig.model" in proc.stderr


def test_help_teaches() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for word in ("upload", "token", "download", "--config", "OPENSCAN_PI_TOKEN"):
        assert word in proc.stdout
    proc = run_cli("upload", "--help")
    assert proc.returncode == 0
    assert "continues where it stopped" in proc.stdout


@pytest.mark.parametrize(("text", "message"), [
    ("rig:\n  rotor:\n    step_pin: 41\n", "config: rig.rotor.step_pin: 41 is not a GPIO number (0-27)"),
    ("rig:\n  turntable:\n    step_pin: 6\n",
     "config: rig.turntable.step_pin: GPIO 6 is already rig.rotor.step_pin (only the two enable_pin "
     "keys may share a pin)"),
    ("rig:\n  light:\n    pins: [17, 5]\n", "config: rig.light.pins[1]: GPIO 5 is already rig.rotor.dir_pin"),
    ("rig:\n  rotor:\n    min_angle: 50\n    max_angle: 40\n",
     "config: rig.rotor.min_angle: 50.0 must be below max_angle (40.0)"),
    ("rig:\n  rotor:\n    max_angle: null\n", "config: rig.rotor: set both min_angle and max_angle"),
    ("rig:\n  rotor:\n    max_speed: 0\n", "config: rig.rotor.max_speed: 0.0 is out of range"),
    ("rig:\n  endstop:\n    direction: 2\n", "config: rig.endstop.direction: 2 must be -1 or 1"),
    ("plan:\n  rotor_max: 85\n",
     "config: plan.rotor_max: 85.0 is outside the rotor's limits (rig.rotor.min_angle -40.0 .. "
     "max_angle 80.0)"),
    ("plan:\n  rotor_min: 50\n  rotor_max: 20\n", "config: plan.rotor_min: 50.0 must be below"),
    ("camera:\n  focus:\n    stack_range: [1]\n", "config: camera.focus.stack_range: expected a list of two"),
    ("camera:\n  backend: webcam\n", "config: camera.backend: expected one of auto, picamera2"),
])
def test_rig_and_camera_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert message in str(info.value)


def test_profiles_and_overrides(tmp_path: Path) -> None:
    mini = load_config(write(tmp_path, "rig:\n  model: mini\n  rotor:\n    steps_per_rev: 48000\n"),
                       env={})
    assert mini.rig.rotor.steps_per_rev == 48000  # the override
    assert mini.rig.turntable.steps_per_rev == 3200  # the profile
    assert (mini.rig.rotor.step_pin, mini.rig.rotor.enable_pin) == (6, None)
    v2 = load_config(write(tmp_path, "rig:\n  model: mini-v2\n"), env={})
    # Blackshield: the drivers share one enable pin, which the pin check allows
    assert v2.rig.rotor.enable_pin == v2.rig.turntable.enable_pin == 22
    assert v2.rig.endstop.pin == 17 and v2.rig.turntable.steps_per_rev == 800
    midi = load_config(write(tmp_path, "rig:\n  model: midi\n"), env={})
    assert midi.rig.rotor.steps_per_rev == 61440


# -- input that must get one line naming the key, never a traceback ------------------------------

#: Billion laughs: nine levels of nine aliases of the level below (9**9 items if expanded).
LAUGHS = [f"&{a} [{', '.join([f'*{p}' if p else 'x'] * 9)}]"
          for a, p in zip("abcdefghi", ["", *"abcdefgh"], strict=True)]
BOMB = "".join(f"{laugh[1]}: {laugh}\n" for laugh in LAUGHS)


@pytest.mark.parametrize(("text", "message"), [
    ("cloud:\n  max_part_bytes: " + "9" * 5000 + "\n",
     "config: cloud.max_part_bytes: a number of 5000 digits is far too large"),
    ("cloud:\n  max_part_bytes: -" + "9" * 30 + "\n",
     "config: cloud.max_part_bytes: a number of 30 digits is far too large"),
    ("cloud:\n  poll_interval_s: " + "9" * 400 + "\n",
     "config: cloud.poll_interval_s: a number of 400 digits is far too large"),
    ("rig:\n  light:\n    pins: [17, " + "1" * 4400 + "]\n",
     "config: rig.light.pins[1]: a number of 4400 digits is far too large"),
    ("cloud:\n  poll_interval_s: 1.0e+400\n",
     "config: cloud.poll_interval_s: expected a finite number, got inf"),
    ("cloud:\n  poll_interval_s: 1e400\n", "config: cloud.poll_interval_s: expected a number, got "
     "'1e400' (YAML reads that as text: write e.g. 1.0e+3 or 1000)"),
    ("cloud:\n  max_offline_s: .inf\n", "config: cloud.max_offline_s: expected a finite number, got inf"),
    ("cloud:\n  poll_interval_s: .nan\n",
     "config: cloud.poll_interval_s: expected a finite number, got nan"),
    ("cloud: " + "[" * 5000 + "]" * 5000 + "\n",
     "cloud[0][0][0]…: nested more than 32 levels deep"),
    ("rig: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", "rig.a.a.a…: nested more than 32 levels deep"),
    ("cloud:\n  retries: 1\n  retries: 2\n",
     "line 3, column 3: cloud.retries is given twice (also on line 2): keep one"),
    ("rig:\n  light:\n    pins: [" + ", ".join(LAUGHS) + "]\n",
     "config: rig.light.pins[0]: expected an integer, got a list"),
    ("cloud:\n  token: [" + ", ".join(LAUGHS) + "]\n", "config: cloud.token: expected a string, got a list"),
    (BOMB, "config: a: unknown key"),
    ('daemon:\n  data_dir: "/tmp/a\\0b"\n', "config: daemon.data_dir: contains a NUL byte"),
    ('daemon:\n  socket: "/run/x\\0.sock"\n', "config: daemon.socket: contains a NUL byte"),
    ('cloud:\n  token: "abc\\0"\n', "config: cloud.token: contains a NUL byte"),
    ("daemon:\n  socket: /tmp/" + "s" * 120 + "\n",
     f"config: daemon.socket: '/tmp/{'s' * 120}' is 125 bytes long; a Unix socket path may have at "
     "most 107: choose a shorter one"),
    ('cloud:\n  url: "http://example.org\\n/x"\n',
     "config: cloud.url: 'http://example.org\\n/x' holds spaces or control characters: give the URL "
     "alone, e.g. http://openscanfeedback.dnsuser.de:1334"),
    ('cloud:\n  url: "http://exa mple.org"\n', "holds spaces or control characters"),
    ('cloud:\n  url: " http://example.org"\n', "holds spaces or control characters"),
    ('cloud:\n  url: "http://example.org/\\x01"\n', "holds spaces or control characters"),
    ('cloud:\n  url: "http://example.org/\\x7f"\n', "holds spaces or control characters"),
    ("cloud:\n  url: example.org\n", "config: cloud.url: 'example.org' is not an http(s) URL or 'local'"),
    ("cloud:\n  url: file:///etc/passwd\n", "'file:///etc/passwd' is not an http(s) URL or 'local'"),
    ("cloud:\n  url: 'http://'\n", "'http://' is not an http(s) URL or 'local'"),
    ("cloud:\n  url: 'http://[::1'\n", "config: cloud.url: 'http://[::1' is not a URL (Invalid IPv6 URL)"),
    ("cloud:\n  url: 'http://example.org:99999'\n", "config: cloud.url: 'http://example.org:99999' is not "
     "a URL (Port out of range 0-65535)"),
    ("cloud:\n  token: !!binary aGVsbG8=\n", "config: cloud.token: expected a string, got b'hello'"),
    ("cloud:\n\tretries: 3\n", "line 2, column 1: found character '\\t' that cannot start any token"),
    ("cloud:\n  1: 2\n", "config: cloud.1: unknown key"),
    ("cloud: !!python/object/apply:os.system [echo hi]\n", "could not determine a constructor"),
    ("rig:\n  model: " + "x" * 100_000 + "\n", "config: rig.model: expected one of classic, mini, "
     "mini-v2, midi, simulated, got 'xxxxxxxx"),
])
def test_odd_input_is_one_short_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    text_of = str(info.value)
    assert message in text_of
    assert "\n" not in text_of and len(text_of) < 400
    assert info.value.exit_code == EX_CONFIG


def test_a_file_that_is_not_utf8_or_not_a_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"cloud:\n  token: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == (f"config: {path}: not UTF-8 text (byte 0xff at position 16): save "
                               "it as UTF-8")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env={})
    assert str(info.value) == f"config: {tmp_path}: is a folder: give --config a YAML file"
    path.write_bytes(b"\xef\xbb\xbfcloud:\n  retries: 3\n")  # a byte-order mark is fine
    assert load_config(path, env={}).cloud.retries == 3


CLI_CASES = {
    "huge-integer": "cloud:\n  max_part_bytes: " + "9" * 5000 + "\n",
    "deep": "daemon: {socket: /tmp/x.sock}\ncloud: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "nul": 'daemon:\n  data_dir: "/tmp/a\\0b"\n',
    "long-socket": "daemon:\n  socket: /tmp/" + "s" * 120 + "\n",
    "url-newline": 'cloud:\n  url: "http://example.org\\n/x"\n',
    "duplicate": "cloud:\n  retries: 1\n  retries: 2\n",
}


@pytest.mark.parametrize("command", [["plan", "--positions", "1"], ["status"], ["daemon"]])
@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_odd_config_is_one_line_and_exit_78(tmp_path: Path, case: str, command: list[str]) -> None:
    """``status`` reads the socket's key without the whole load: it must not crash on these
    either (libyaml's composer, which it used, segfaults on 100 000 brackets)."""
    path = write(tmp_path, CLI_CASES[case])
    proc = run_cli("--config", str(path), *command)
    assert proc.returncode == 78, proc.stderr[-2000:]
    assert proc.stderr.startswith("openscan-pi: config: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""
