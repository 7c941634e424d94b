"""The lookups ``status`` makes without pathlib give what pathlib gives."""

from __future__ import annotations

import random
from pathlib import Path, PurePosixPath

import pytest

from openscan_pi import locate, paths


def test_pure_spells_paths_as_pathlib_does() -> None:
    rng = random.Random(20261203)
    parts = ["", "/", "//", "///", ".", "..", "a", "b.sock", "~", " x"]
    for _ in range(5000):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 6)))
        assert locate.pure(text) == str(PurePosixPath(text)), text


def test_exists_is_pathlib_s(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for probe in (tmp_path, tmp_path / "file", tmp_path / "missing", tmp_path / "file" / "below",
                  Path("/nonexistent/x")):
        assert locate.exists(str(probe)) == probe.exists(), probe


@pytest.mark.parametrize("configured", [
    locate.DEFAULT_SOCKET, "/tmp//d.sock", "/tmp/./x/", "~/d.sock", "/run/a/../b.sock"])
@pytest.mark.parametrize("runtime", [None, "/run/user/1000/", "relative"])
def test_socket_paths_are_the_old_ones(monkeypatch: pytest.MonkeyPatch, configured: str,
                                       runtime: str | None) -> None:
    """What paths.socket_path computed with pathlib before it asked locate."""
    if runtime is None:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    path = Path(configured).expanduser()
    if configured == locate.DEFAULT_SOCKET and runtime and not paths.writable(path.parent):
        path = Path(runtime) / "openscan-pi" / "openscan-pi.sock"
    assert locate.socket_path(configured) == str(path) == str(paths.socket_path(configured))
    assert [str(p) for p in paths.socket_candidates(configured)] == locate.socket_candidates(configured)


def test_the_config_file_lookup_order(tmp_path: Path) -> None:
    system = tmp_path / "etc.yaml"
    env = {"OPENSCAN_PI_CONFIG": str(tmp_path / "env.yaml")}
    assert locate.config_file("a//b.yaml", env, system=str(system)) == "a/b.yaml"
    assert locate.config_file(None, env, system=str(system)) == str(tmp_path / "env.yaml")
    assert locate.config_file(None, {}, system=str(system)) is None
    system.write_text("")
    assert locate.config_file(None, {}, system=str(system)) == str(system)
    assert paths.find_config_file("a//b.yaml", {}) == Path("a//b.yaml")
