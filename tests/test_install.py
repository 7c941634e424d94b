"""tools/install.sh: lint, and its plan as ``--dry-run`` prints it (no root needed, nothing changed).

The dry run prints every command an install would run as a ``+`` line (shell-quoted) and every
file it would write with its content; the real run prints the same lines as it runs them.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from openscan_pi.config import load_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "install.sh"
APT_PACKAGES = ["python3-picamera2", "python3-lgpio", "python3-gpiozero", "python3-systemd",
                "python3-yaml", "python3-requests", "python3-venv", "python3-numpy", "python3-pil",
                "python3-tqdm"]
NOBODY = 65534


def clean_env() -> dict[str, str]:
    """No SUDO_USER (the dry run would plan to add that user to group openscan)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
            "HOME": os.environ.get("HOME", "/")}


def run(*args: str, as_nobody: bool = False, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [str(SCRIPT), *args]
    if as_nobody:
        cmd = as_unprivileged(cmd)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=clean_env(),
                          input=stdin, cwd="/")


def as_unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` run as an ordinary user: itself when we are not root, else under setpriv."""
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is not installed: cannot test as an ordinary user")
    probe = subprocess.run([setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                            "test", "-r", str(SCRIPT)], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"uid {NOBODY} cannot read {SCRIPT}")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]


def commands(stdout: str) -> list[list[str]]:
    """The ``+`` lines, split like a shell would."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def find(cmds: list[list[str]], *prefix: str) -> list[list[str]]:
    return [c for c in cmds if c[:len(prefix)] == list(prefix)]


def index_of(cmds: list[list[str]], *prefix: str) -> int:
    for i, c in enumerate(cmds):
        if c[:len(prefix)] == list(prefix):
            return i
    raise AssertionError(f"no {' '.join(prefix)} in the plan")


def written(stdout: str, path: str) -> str | None:
    """The content the plan writes to ``path`` (its ``    | `` lines), or None."""
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"+ write {path} "):
            body = []
            for following in lines[i + 1:]:
                if not following.startswith("    |"):
                    break
                body.append(following[6:])
            return "\n".join(body) + "\n"
    return None


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def group_members(name: str) -> list[str] | None:
    try:
        return list(grp.getgrnam(name).gr_mem)
    except KeyError:
        return None


@pytest.fixture(scope="module")
def plan() -> subprocess.CompletedProcess[str]:
    return run("--dry-run")


# -- lint -------------------------------------------------------------------------------------------

def test_script_is_executable_bash() -> None:
    assert os.access(SCRIPT, os.X_OK)
    first = SCRIPT.read_text("utf-8").splitlines()[:30]
    assert first[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in first or "set -euo pipefail" in SCRIPT.read_text("utf-8")
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean() -> None:
    done = subprocess.run(["shellcheck", "--shell=bash", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


# -- the install plan -------------------------------------------------------------------------------

def test_dry_run_plans_the_whole_install(plan: subprocess.CompletedProcess[str]) -> None:
    assert plan.returncode == 0, plan.stderr
    cmds = commands(plan.stdout)

    apt = find(cmds, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install")
    assert len(apt) == 1
    assert "-y" in apt[0]
    assert set(APT_PACKAGES) <= set(apt[0])
    assert find(cmds, "apt-get", "update")

    if user_exists("openscan"):
        assert "user openscan exists" in plan.stdout
    else:
        useradd = find(cmds, "useradd")
        assert len(useradd) == 1
        u = useradd[0]
        assert u[-1] == "openscan" and "--system" in u
        assert u[u.index("--home-dir") + 1] == "/var/lib/openscan-pi"
        assert u[u.index("--shell") + 1] in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
    for group in ("gpio", "video"):
        members = group_members(group)
        if members is not None and "openscan" in members:
            assert f"user openscan is in group {group}" in plan.stdout
        else:
            assert ["usermod", "--append", "--groups", group, "openscan"] in cmds

    venv = "/opt/openscan-pi/venv"
    if Path(venv, "bin", "python").exists():
        assert f"venv {venv} exists" in plan.stdout
    else:
        made = [c for c in cmds if c[1:3] == ["-m", "venv"]]
        assert len(made) == 1 and "--system-site-packages" in made[0] and made[0][-1] == venv
        assert made[0][0] == "/usr/bin/python3"
    # This checkout, copied (the build must leave nothing in it), then pip-installed from the copy.
    tar = find(cmds, "tar", "-C", str(ROOT))
    assert len(tar) == 1 and "--exclude=./.git" in tar[0]
    pip = find(cmds, "env", "PIP_DISABLE_PIP_VERSION_CHECK=1", f"{venv}/bin/pip", "install")
    assert len(pip) == 1 and pip[0][-1] == "/opt/openscan-pi/src"
    assert ["ln", "-sfn", f"{venv}/bin/openscan-pi", "/usr/local/bin/openscan-pi"] in cmds

    units = find(cmds, "install", "-m", "0644")
    assert len(units) == 1
    assert units[0][-3:] == [str(ROOT / "systemd" / "openscan-pi.service"),
                             str(ROOT / "systemd" / "openscan-pi.socket"), "/etc/systemd/system/"]
    assert ["systemctl", "daemon-reload"] in cmds
    assert ["systemctl", "enable", "--now", "openscan-pi.service"] in cmds
    # The socket unit is installed but enabled only with --socket.
    assert not [c for c in cmds if c[:2] == ["systemctl", "enable"] and "openscan-pi.socket" in c]

    # In this order: packages, user, venv, units.
    order = [index_of(cmds, "env", "DEBIAN_FRONTEND=noninteractive"),
             index_of(cmds, "usermod"),
             index_of(cmds, "env", "PIP_DISABLE_PIP_VERSION_CHECK=1"),
             index_of(cmds, "install", "-m", "0644"),
             index_of(cmds, "systemctl", "daemon-reload"),
             index_of(cmds, "systemctl", "enable")]
    assert order == sorted(order)

    for hint in ("systemctl status openscan-pi", "journalctl -u openscan-pi -f", "openscan-pi status",
                 "openscan-pi doctor"):
        assert hint in plan.stdout


def test_dry_run_is_the_same_plan_every_time(plan: subprocess.CompletedProcess[str]) -> None:
    again = run("--dry-run")
    assert again.returncode == 0
    assert again.stdout == plan.stdout


def test_dry_run_changes_nothing() -> None:
    watched = [Path("/opt/openscan-pi"), Path("/etc/systemd/system/openscan-pi.service"),
               Path("/usr/local/bin/openscan-pi"), Path("/etc/openscan-pi/token.env")]
    before = {p: p.exists() for p in watched}
    done = run("--dry-run", "--socket", "--token", "abc123", "--model", "mini")
    assert done.returncode == 0, done.stderr
    assert {p: p.exists() for p in watched} == before


def test_new_config_is_valid_and_readable_by_the_daemon_only(tmp_path: Path) -> None:
    done = run("--dry-run", "--model", "mini-v2")
    assert done.returncode == 0, done.stderr
    config = "/etc/openscan-pi/config.yaml"
    text = written(done.stdout, config)
    if Path(config).exists():
        assert text is None and f"keeping {config}" in done.stdout
        pytest.skip(f"{config} exists on this machine: the plan keeps it")
    assert text is not None
    assert f"+ write {config} (mode 0640, owner root:openscan):" in done.stdout
    sample = tmp_path / "config.yaml"
    sample.write_text(text, "utf-8")
    cfg = load_config(sample, env={})
    assert cfg.rig.model == "mini-v2"

    default = written(run("--dry-run").stdout, config)
    assert default is not None
    sample.write_text(default, "utf-8")
    assert load_config(sample, env={}).rig.model == "classic"


def test_token_goes_to_a_root_only_file_and_is_never_printed() -> None:
    token = "s3cret-Token_42"
    done = run("--dry-run", "--token", token)
    assert done.returncode == 0, done.stderr
    assert token not in done.stdout + done.stderr
    assert "+ write /etc/openscan-pi/token.env (mode 0600, owner root:root):" in done.stdout
    assert written(done.stdout, "/etc/openscan-pi/token.env") == "OPENSCAN_PI_TOKEN=<hidden>\n"
    # The same from standard input (kept out of the process list and the shell history).
    piped = run("--dry-run", "--token", "-", stdin=token + "\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == done.stdout


def test_token_is_checked() -> None:
    done = run("--dry-run", "--token", "two words")
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "--token" in done.stderr
    assert "+ " not in done.stdout


def test_socket_option_enables_the_socket_before_the_service() -> None:
    done = run("--dry-run", "--socket")
    assert done.returncode == 0, done.stderr
    cmds = commands(done.stdout)
    sock = cmds.index(["systemctl", "enable", "--now", "openscan-pi.socket"])
    assert sock < cmds.index(["systemctl", "enable", "--now", "openscan-pi.service"])


def test_unknown_model_is_refused() -> None:
    done = run("--dry-run", "--model", "maxi")
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "maxi" in done.stderr


# -- uninstall ----------------------------------------------------------------------------------------

def test_uninstall_plan_keeps_data_and_config() -> None:
    done = run("--uninstall", "--dry-run")
    assert done.returncode == 0, done.stderr
    cmds = commands(done.stdout)
    assert ["systemctl", "disable", "--now", "openscan-pi.socket", "openscan-pi.service"] in cmds
    assert ["rm", "-f", "/etc/systemd/system/openscan-pi.service",
            "/etc/systemd/system/openscan-pi.socket"] in cmds
    assert ["rm", "-rf", "/opt/openscan-pi"] in cmds
    assert cmds.index(["systemctl", "disable", "--now", "openscan-pi.socket", "openscan-pi.service"]) \
        < cmds.index(["rm", "-rf", "/opt/openscan-pi"])
    if user_exists("openscan"):
        assert ["userdel", "openscan"] in cmds
    else:
        assert "no user openscan" in done.stdout
    for c in cmds:
        for kept in ("/var/lib/openscan-pi", "/etc/openscan-pi"):
            assert not any(arg == kept or arg.startswith(kept + "/") for arg in c), c
    assert "/var/lib/openscan-pi" in done.stdout and "/etc/openscan-pi" in done.stdout
    assert run("--uninstall", "--dry-run").stdout == done.stdout


# -- the command line ---------------------------------------------------------------------------------

def test_help() -> None:
    done = run("--help")
    assert done.returncode == 0
    for option in ("--dry-run", "--uninstall", "--socket", "--token", "--model"):
        assert option in done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize("args", [["--bogus"], ["--dry-run", "extra"], ["--token"]])
def test_bad_arguments_fail_with_one_line(args: list[str]) -> None:
    done = run(*args)
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("install.sh: ")


def test_refuses_without_root() -> None:
    done = run("--socket", as_nobody=True)
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "root" in lines[0], done.stderr


def test_dry_run_needs_no_root() -> None:
    done = run("--dry-run", as_nobody=True)
    assert done.returncode == 0, done.stderr
    assert ["systemctl", "enable", "--now", "openscan-pi.service"] in commands(done.stdout)

